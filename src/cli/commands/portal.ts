/**
 * `berth portal serve`: the ALTO-guided content portal — uploads stored in several lockers,
 * downloads redirected to the locker nearest the user by ALTO cost.
 */
import { resolve } from 'node:path'
import type { Command } from 'commander'
import { type Part, stopOnSignal, startParts } from '../daemon.ts'
import { action, collect, printJson, printLines, type JsonOption, UsageError } from '../output.ts'

interface ServeOptions extends JsonOption { config: string, listen?: string, alto?: string, copies?: string, logLevel: string, overlayListen?: string, bootstrap?: string[] }

const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent']

export function registerPortal (program: Command): void {
  const portal = program.command('portal').description('the content portal: publish files into lockers, send each downloader to the nearest one (ALTO)')

  portal.command('serve')
    .description('run the portal (upload page at /, download URLs /d/OID, JSON API /v1/objects)')
    .requiredOption('--config <file>', 'portal JSON: {"alto": URL, "replicas": N, "lockers": [{"name", "url", "locker", "ownerKeyFile"}…]}')
    .option('--listen <addr>', 'HTTP address, HOST:PORT (port 0: any free port); overrides the config (default 127.0.0.1:4680)')
    .option('--alto <url>', 'the ALTO server; overrides the config')
    .option('--copies <n>', 'copies of each object (replicas); overrides the config (default 2)')
    .option('--overlay-listen <multiaddr>', 'run an overlay node in this process, listening here (e.g. /ip4/127.0.0.1/tcp/0): the portal registers as service "portal", publishes object-available, heeds locker-status events')
    .option('--bootstrap <multiaddr>', 'an overlay node to join through, with /p2p/<peer id> (repeatable; implies an overlay node)', collect)
    .option('--log-level <level>', 'structured logs (JSON lines, pino) on stderr: debug, info, warn, error or silent', 'info')
    .option('--json', 'print {url, alto, replicas, lockers} as one JSON line once listening')
    .action(action(async (options: ServeOptions) => {
      if (!LOG_LEVELS.includes(options.logLevel)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`)
      const signals = stopOnSignal(options.json === true)
      const { loadPortalConfig } = await import('../../overlay/portal/config.ts')
      const { createPortal } = await import('../../overlay/portal/server.ts')
      const { pino } = await import('pino')
      const config = await loadPortalConfig(resolve(options.config))
      if (options.alto !== undefined) config.alto = options.alto
      if (options.copies !== undefined) {
        const n = Number(options.copies)
        if (!Number.isInteger(n) || n < 1) throw new UsageError('--copies must be a positive integer')
        config.replicas = n
      }
      const logger = pino({ level: options.logLevel, base: { service: 'berth-portal' } }, pino.destination(2))
      const { overlayNodeFrom } = await import('../agent-config.ts')
      const { overlayConfig } = await import('./agent.ts')
      // A bad multiaddr is ERR_INVALID_CONFIG here, before anything listens.
      const node = await overlayNodeFrom(overlayConfig(options, undefined))
      const server = await createPortal({ ...config, ...(options.listen !== undefined ? { listen: options.listen } : {}), logger, ...(node !== undefined ? { overlay: node } : {}) })
      // The overlay node first (the portal registers on it at start), stopped after the portal.
      const parts: Part[] = [
        ...(node !== undefined ? [{ name: 'overlay node', start: async () => await node.start(), stop: async () => await node.stop() }] : []),
        { name: 'portal', start: async () => await server.start(), stop: async () => await server.stop() }
      ]
      await startParts(parts)
      const replicas = Math.min(config.replicas ?? 2, config.lockers.length)
      const lockers = config.lockers.map(l => l.name ?? `${l.locker}@${new URL(l.url).host}`)
      const overlay = node !== undefined ? { peerId: node.peerId, multiaddrs: node.multiaddrs, peers: node.peers().length } : undefined
      if (options.json === true) printJson({ url: server.url, upload: `${server.url}/`, alto: config.alto, replicas, lockers, ...(overlay !== undefined ? { overlay } : {}) })
      else {
        printLines(
          'berth portal running',
          `  upload     ${server.url}/`,
          `  alto       ${config.alto}`,
          `  lockers    ${lockers.join(', ')} (${replicas} copies of each object)`,
          ...(overlay !== undefined ? [`  overlay    ${overlay.peerId} (${overlay.peers} peers)`, ...overlay.multiaddrs.map(m => `             ${m}`)] : [])
        )
      }
      await signals.serve(parts)
    }))
}
