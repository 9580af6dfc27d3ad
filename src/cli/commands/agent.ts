import { resolve } from 'node:path'
import type { Command } from 'commander'
import { formatHint } from '../../core/hints.ts'
import type { AgentConfig } from '../agent-config.ts'
import { type Part, stopOnSignal, startParts } from '../daemon.ts'
import { action, collect, printJson, printLines, type JsonOption } from '../output.ts'
import { CHUNKER_HELP } from './put.ts'

interface AgentCliOptions extends JsonOption {
  listen?: string
  peerListen?: string
  advertise?: string
  store?: string
  config?: string
  allowPath?: string[]
  chunker?: string
  overlayListen?: string
  bootstrap?: string[]
}

export function registerAgent (program: Command): void {
  program.command('agent')
    .description('run a transfer agent: local API for applications, peer API for other agents')
    .option('--listen <addr>', 'local API address, HOST:PORT (port 0: any free port)', '127.0.0.1:4650')
    .option('--peer-listen <addr>', 'peer API address, HOST:PORT', '127.0.0.1:4651')
    .option('--advertise <host:port>', 'the peer address other agents should use (default: the bound one)')
    .option('--store <dir>', 'keep objects on disk in DIR (default: in memory, gone when the agent stops)')
    .option('--config <file>', 'JSON file with the same settings (listen, peerListen, advertise, store, allowPath, chunker, overlay: {listen, bootstrap}) and the plugin pipeline (plugins)')
    .option('--allow-path <dir>', 'a directory `put` by path may read from (repeatable; default cwd, home, tmp)', collect)
    .option('--chunker <spec>', `default chunker: ${CHUNKER_HELP}`)
    .option('--overlay-listen <multiaddr>', 'run an overlay node in this process, listening here (e.g. /ip4/127.0.0.1/tcp/0): gets with no hint ask it, puts are announced on it')
    .option('--bootstrap <multiaddr>', 'an overlay node to join through, with /p2p/<peer id> (repeatable; implies an overlay node)', collect)
    .option('--json', 'print {url, peerUrl, hint, store, overlay?: {peerId, multiaddrs}} as one JSON line once listening')
    .action(action(async (options: AgentCliOptions, command: Command) => {
      // Loaded only here: zod is most of the CLI's code, and no other command needs it.
      const { readAgentConfig, agentOptionsFrom, overlayNodeFrom } = await import('../agent-config.ts')
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
        allowPath: options.allowPath ?? file.allowPath,
        plugins: file.plugins,
        overlay: overlayConfig(options, file.overlay)
      }
      const signals = stopOnSignal(options.json === true)
      const agentOptions = await agentOptionsFrom(config)
      // Loaded here, not at the top: the agent (fastify, the store) costs every other command's startup.
      const { createAgent } = await import('../../agent/agent.ts')
      const node = await overlayNodeFrom(config.overlay)
      const agent = await createAgent({ ...agentOptions, ...(node !== undefined ? { overlay: node } : {}) })
      // The overlay node first (the agent's first get may need it), stopped after the agent.
      const parts: Part[] = [
        ...(node !== undefined ? [{ name: 'overlay node', start: async () => await node.start(), stop: async () => await node.stop() }] : []),
        { name: 'agent', start: async () => await agent.start(), stop: async () => await agent.stop() }
      ]
      await startParts(parts)
      const store = config.store !== undefined ? resolve(config.store) : 'memory'
      const overlay = node !== undefined ? { peerId: node.peerId, multiaddrs: node.multiaddrs, peers: node.peers().length } : undefined
      if (options.json === true) printJson({ url: agent.url, peerUrl: agent.peerUrl, hint: formatHint(agent.selfHint), store, ...(overlay !== undefined ? { overlay } : {}) })
      else {
        printLines(
          'berth agent running',
          `  local API  ${agent.url}`,
          `  peer hint  ${formatHint(agent.selfHint)}`,
          `  store      ${store === 'memory' ? 'memory (objects are lost when the agent stops; --store DIR keeps them)' : store}`,
          ...(overlay !== undefined ? [`  overlay    ${overlay.peerId} (${overlay.peers} peers)`, ...overlay.multiaddrs.map(m => `             ${m}`)] : [])
        )
      }
      await signals.serve(parts)
    }))
}

/** Flags win over the file's `overlay`; either flag alone turns the overlay node on. */
export function overlayConfig (o: { overlayListen?: string, bootstrap?: string[] }, file: AgentConfig['overlay']): AgentConfig['overlay'] {
  if (o.overlayListen === undefined && o.bootstrap === undefined) return file
  return {
    listen: o.overlayListen ?? file?.listen ?? '/ip4/127.0.0.1/tcp/0',
    bootstrap: o.bootstrap ?? file?.bootstrap ?? []
  }
}
