import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import type { Command } from 'commander'
import { z } from 'zod'
import type { AgentOptions } from '../../agent/agent.ts'
import { parseChunkerSpec } from '../../core/chunker/index.ts'
import { InvalidConfigError, toBerthError } from '../../core/errors.ts'
import { formatHint, parseHint } from '../../core/hints.ts'
import { type Part, stopOnSignal, startParts } from '../daemon.ts'
import { action, collect, printJson, printLines, type JsonOption } from '../output.ts'
import { CHUNKER_HELP } from './put.ts'

/** `--config FILE`: the same settings as the flags, in JSON; flags win over the file. */
export const AgentConfigSchema = z.strictObject({
  listen: z.string().optional(),
  peerListen: z.string().optional(),
  advertise: z.string().optional(),
  store: z.string().optional(),
  allowPath: z.array(z.string()).optional(),
  chunker: z.string().optional()
})
export type AgentConfig = z.infer<typeof AgentConfigSchema>

interface AgentCliOptions extends JsonOption {
  listen?: string
  peerListen?: string
  advertise?: string
  store?: string
  config?: string
  allowPath?: string[]
  chunker?: string
}

export async function readAgentConfig (file: string): Promise<AgentConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new InvalidConfigError(`cannot read config ${file}: ${(err as Error).message}`)
  }
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (err) {
    throw new InvalidConfigError(`config ${file} is not JSON: ${(err as Error).message}`)
  }
  const parsed = AgentConfigSchema.safeParse(data)
  if (!parsed.success) {
    const issues = parsed.error.issues.map(i => `${i.path.length > 0 ? i.path.join('.') : '(top)'}: ${i.message}`).join('; ')
    throw new InvalidConfigError(`config ${file}: ${issues}`)
  }
  // Paths in a config file are relative to the file, not to wherever the agent was started.
  const base = dirname(resolve(file))
  const c = parsed.data
  return {
    ...c,
    ...(c.store !== undefined ? { store: resolve(base, c.store) } : {}),
    ...(c.allowPath !== undefined ? { allowPath: c.allowPath.map(p => resolve(base, p)) } : {})
  }
}

/** Checks every setting before anything listens, so a typo is ERR_INVALID_CONFIG, exit 2. */
export async function agentOptionsFrom (c: AgentConfig): Promise<AgentOptions> {
  const { parseListen } = await import('../../agent/http.ts')
  const options: AgentOptions = { processMetrics: true }
  if (c.listen !== undefined) { parseListen(c.listen); options.listen = c.listen }
  if (c.peerListen !== undefined) { parseListen(c.peerListen); options.peerListen = c.peerListen }
  if (c.advertise !== undefined) {
    try { parseHint(`berth://${c.advertise}`) } catch (err) {
      throw new InvalidConfigError(`bad --advertise ${JSON.stringify(c.advertise)} (HOST:PORT): ${toBerthError(err).message}`)
    }
    options.advertise = c.advertise
  }
  if (c.store !== undefined) options.storeDir = resolve(c.store)
  if (c.allowPath !== undefined && c.allowPath.length > 0) options.allowedRoots = c.allowPath.map(p => resolve(p))
  if (c.chunker !== undefined) options.chunker = parseChunkerSpec(c.chunker)
  return options
}

export function registerAgent (program: Command): void {
  program.command('agent')
    .description('run a transfer agent: local API for applications, peer API for other agents')
    .option('--listen <addr>', 'local API address, HOST:PORT (port 0: any free port)', '127.0.0.1:4650')
    .option('--peer-listen <addr>', 'peer API address, HOST:PORT', '127.0.0.1:4651')
    .option('--advertise <host:port>', 'the peer address other agents should use (default: the bound one)')
    .option('--store <dir>', 'keep objects on disk in DIR (default: in memory, gone when the agent stops)')
    .option('--config <file>', 'JSON file with the same settings: listen, peerListen, advertise, store, allowPath, chunker')
    .option('--allow-path <dir>', 'a directory `put` by path may read from (repeatable; default cwd, home, tmp)', collect)
    .option('--chunker <spec>', `default chunker: ${CHUNKER_HELP}`)
    .option('--json', 'print {url, peerUrl, hint, store} as one JSON line once listening')
    .action(action(async (options: AgentCliOptions, command: Command) => {
      const file = options.config !== undefined ? await readAgentConfig(options.config) : {}
      // Flags given on the command line win; a flag's default only fills what the file leaves open.
      const given = (name: string): boolean => command.getOptionValueSource(name) === 'cli'
      const pick = <K extends 'listen' | 'peerListen' | 'advertise' | 'store' | 'chunker'> (k: K): string | undefined =>
        given(k) ? options[k] : (file[k] ?? options[k])
      const config: AgentConfig = {
        listen: pick('listen'),
        peerListen: pick('peerListen'),
        advertise: pick('advertise'),
        store: pick('store'),
        chunker: pick('chunker'),
        allowPath: options.allowPath ?? file.allowPath
      }
      const signals = stopOnSignal(options.json === true)
      const agentOptions = await agentOptionsFrom(config)
      // Loaded here, not at the top: the agent (fastify, the store) costs every other command's startup.
      const { createAgent } = await import('../../agent/agent.ts')
      const agent = await createAgent(agentOptions)
      const parts: Part[] = [{ name: 'agent', start: async () => await agent.start(), stop: async () => await agent.stop() }]
      await startParts(parts)
      const store = config.store !== undefined ? resolve(config.store) : 'memory'
      if (options.json === true) printJson({ url: agent.url, peerUrl: agent.peerUrl, hint: formatHint(agent.selfHint), store })
      else {
        printLines(
          'berth agent running',
          `  local API  ${agent.url}`,
          `  peer hint  ${formatHint(agent.selfHint)}`,
          `  store      ${store === 'memory' ? 'memory (objects are lost when the agent stops; --store DIR keeps them)' : store}`
        )
      }
      await signals.serve(parts)
    }))
}
