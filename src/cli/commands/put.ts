import { stat } from 'node:fs/promises'
import type { Command } from 'commander'
import { parseChunkerSpec } from '../../core/chunker/index.ts'
import { formatHint } from '../../core/hints.ts'
import { AgentClient, type PutInput } from '../../sdk/agent-client.ts'
import { localPutInput } from '../../apps/cp.ts'
import { UsageError, action, agentUrl, printJson, printLines, progressBar, type JsonOption } from '../output.ts'

interface PutOptions extends JsonOption { agent?: string, chunker?: string }

export const CHUNKER_HELP = 'cdc | cdc:MIN:AVG:MAX | fixed | fixed:SIZE (sizes in bytes, or with k/m)'

export function registerPut (program: Command): void {
  program.command('put')
    .description('store a file (or stdin) with the agent; prints its OID, then the hints to fetch it by')
    .argument('<file>', 'the file, or - for stdin')
    .option('--agent <url>', 'the agent\'s local API (default $BERTH_AGENT or http://127.0.0.1:4650)')
    .option('--chunker <spec>', CHUNKER_HELP)
    .option('--json', 'print {oid, size, chunks, hints} as JSON')
    .action(action(async (file: string, options: PutOptions) => {
      // Checked here so a typo fails before any byte moves.
      if (options.chunker !== undefined) parseChunkerSpec(options.chunker)
      const url = agentUrl(options.agent)
      const client = new AgentClient(url)
      let bar = progressBar('put', undefined, { json: true })
      try {
        let input: PutInput
        if (file === '-') {
          bar = progressBar('put', undefined, options)
          const stdin = process.stdin
          input = { stream: (async function * () { let n = 0; for await (const b of stdin as AsyncIterable<Buffer>) { n += b.byteLength; bar.update(n); yield b } })() }
        } else {
          const info = await stat(file)
          if (!info.isFile()) throw new UsageError(`${file} is not a regular file`)
          bar = progressBar('put', info.size, options)
          // With a bar to draw, the bytes go through this process so they can be counted; the
          // agent's chunker, not the copy, bounds the speed. Otherwise the agent reads the file.
          input = localPutInput(file, url, bar.active ? n => bar.update(n) : undefined)
        }
        const result = await client.put(input, { chunker: options.chunker })
        bar.stop()
        if (options.json === true) printJson({ oid: result.oid, size: result.size, chunks: result.chunks, hints: result.hints })
        else printLines(result.oid, ...result.hints.map(formatHint))
      } finally {
        bar.stop()
        await client.close()
      }
    }))
}
