import type { Command } from 'commander'
import { parseChunkerSpec } from '../../core/chunker/index.ts'
import { formatHint } from '../../core/hints.ts'
import { AgentClient } from '../../sdk/agent-client.ts'
import { cp } from '../../apps/cp.ts'
import { action, agentUrl, collect, formatBytes, printJson, printLines, type JsonOption } from '../output.ts'
import { CHUNKER_HELP } from './put.ts'

interface CpCliOptions extends JsonOption {
  agent?: string
  ssh: string
  sshOpt?: string[]
  remoteBerth: string
  remoteAgent?: string
  chunker?: string
}

export function registerCp (program: Command): void {
  program.command('cp')
    .description('copy a file to another host: control over ssh, data agent-to-agent (DOT\'s gcp)')
    .argument('<src>', 'the local file, or - for stdin')
    .argument('<dst>', '[USER@]HOST:PATH on the remote host (PATH ending in / : keep the file name)')
    .option('--agent <url>', 'the local agent (default $BERTH_AGENT or http://127.0.0.1:4650); its peer address must be reachable from HOST')
    .option('--ssh <cmd>', 'ssh program and its arguments, split on spaces (no shell)', 'ssh')
    .option('--ssh-opt <opt>', 'one more ssh argument, e.g. --ssh-opt=-p2222 (repeatable)', collect)
    .option('--remote-berth <cmd>', 'the berth command on HOST, run by its shell as given', 'berth')
    .option('--remote-agent <url>', 'the agent the remote berth uses (its --agent)')
    .option('--chunker <spec>', CHUNKER_HELP)
    .option('--json', 'print {oid, size, chunks, hints, host, path} as JSON')
    .action(action(async (src: string, dst: string, options: CpCliOptions) => {
      if (options.chunker !== undefined) parseChunkerSpec(options.chunker)
      const client = new AgentClient(agentUrl(options.agent))
      try {
        const r = await cp({
          client,
          src,
          dst,
          ssh: options.ssh,
          sshOpts: options.sshOpt,
          remoteBerth: options.remoteBerth,
          remoteAgent: options.remoteAgent,
          chunker: options.chunker,
          onWarning: m => process.stderr.write(`berth: warning: ${m}\n`)
        })
        if (options.json === true) printJson({ ...r, hints: r.hints })
        else printLines(`${r.oid} → ${r.host}:${r.path} (${formatBytes(r.size)}, via ${r.hints.map(formatHint).join(', ')})`)
      } finally {
        await client.close()
      }
    }))
}
