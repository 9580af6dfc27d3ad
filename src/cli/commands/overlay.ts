/**
 * `berth overlay`: an overlay node — joins the DHT registry (replica pointers, service
 * descriptors) and the event topics over libp2p, through the --bootstrap nodes.
 */
import type { Command } from 'commander'
import { type Part, stopOnSignal, startParts } from '../daemon.ts'
import { action, collect, printJson, printLines, type JsonOption } from '../output.ts'

interface OverlayOptions extends JsonOption { listen: string, bootstrap?: string[] }

export function registerOverlay (program: Command): void {
  program.command('overlay')
    .description('run an overlay node: the DHT registry of replicas and services, and the event topics (libp2p)')
    .option('--listen <multiaddr>', 'libp2p address to listen on (tcp/0: any free port)', '/ip4/127.0.0.1/tcp/0')
    .option('--bootstrap <multiaddr>', 'a node to join through, with /p2p/<peer id> (repeatable)', collect, [])
    .option('--json', 'print {peerId, multiaddrs} as one JSON line once joined')
    .action(action(async (options: OverlayOptions) => {
      const signals = stopOnSignal(options.json === true)
      const { createOverlayNode, TOPICS } = await import('../../overlay/registry.ts')
      const node = await createOverlayNode({ listen: options.listen, bootstrap: options.bootstrap })
      // Subscribed to every event topic, so that it relays events between nodes it connects
      // (gossipsub forwards only within a topic's mesh); the events themselves are not used here.
      for (const topic of Object.values(TOPICS)) node.subscribe(topic, () => {})
      const parts: Part[] = [{ name: 'overlay node', start: async () => await node.start(), stop: async () => await node.stop() }]
      await startParts(parts)
      if (options.json === true) printJson({ peerId: node.peerId, multiaddrs: node.multiaddrs, peers: node.peers().length })
      else {
        printLines(
          'berth overlay node running',
          `  peer id    ${node.peerId}`,
          ...node.multiaddrs.map(m => `  listening  ${m}`),
          `  peers      ${node.peers().length}`
        )
      }
      await signals.serve(parts)
    }))
}
