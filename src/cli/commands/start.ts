import { mkdir } from 'node:fs/promises'
import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { formatHint } from '../../core/hints.ts'
import { DEFAULT_AGENT_URL } from '../../sdk/agent-client.ts'
import { type Part, stopOnSignal, startParts } from '../daemon.ts'
import { action, printJson, printLines, type JsonOption } from '../output.ts'

interface StartOptions extends JsonOption { dir: string, listen: string, peerListen: string }

export function registerStart (program: Command): void {
  program.command('start')
    .description('run an all-in-one node on this host: an agent with embedded storage under DIR')
    .option('--dir <dir>', 'where the node keeps its data', './.berth')
    .option('--listen <addr>', 'agent local API address, HOST:PORT', '127.0.0.1:4650')
    .option('--peer-listen <addr>', 'agent peer API address, HOST:PORT', '127.0.0.1:4651')
    .option('--json', 'print {dir, agent: {url, peerUrl, hint}} as one JSON line once listening')
    .action(action(async (options: StartOptions) => {
      const dir = resolve(options.dir)
      // Each part of the node keeps its data in its own subdirectory of DIR.
      await mkdir(join(dir, 'agent'), { recursive: true })
      const signals = stopOnSignal(options.json === true)
      const { agentOptionsFrom } = await import('../agent-config.ts')
      const agentOptions = await agentOptionsFrom({ listen: options.listen, peerListen: options.peerListen, store: join(dir, 'agent') })
      const { createAgent } = await import('../../agent/agent.ts')
      const agent = await createAgent(agentOptions)
      // The node's parts, started in this order and stopped in reverse. The locker server (and
      // portal/ALTO when configured) join this list, each with its subdirectory of DIR and its
      // lines in the report below.
      const parts: Part[] = [
        { name: 'agent', start: async () => await agent.start(), stop: async () => await agent.stop() }
      ]
      await startParts(parts)
      const hint = formatHint(agent.selfHint)
      if (options.json === true) {
        printJson({ dir, agent: { url: agent.url, peerUrl: agent.peerUrl, hint } })
      } else {
        const agentFlag = agent.url === DEFAULT_AGENT_URL ? '' : ` --agent ${agent.url}`
        printLines(
          `berth node running, data in ${dir}`,
          `  agent      ${agent.url}`,
          `  peer hint  ${hint}`,
          'try:',
          `  berth put FILE${agentFlag}`,
          `  berth get OID --hint ${hint}${agentFlag} -o COPY`
        )
      }
      await signals.serve(parts)
    }))
}
