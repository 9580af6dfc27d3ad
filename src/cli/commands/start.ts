import { mkdir } from 'node:fs/promises'
import { userInfo } from 'node:os'
import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { formatHint } from '../../core/hints.ts'
import { DEFAULT_AGENT_URL } from '../../sdk/agent-client.ts'
import { type Part, stopOnSignal, startParts } from '../daemon.ts'
import { action, collect, printJson, printLines, type JsonOption } from '../output.ts'
import { overlayConfig } from './agent.ts'

interface StartOptions extends JsonOption { dir: string, listen: string, peerListen: string, lockerListen: string, overlayListen?: string, bootstrap?: string[] }

export function registerStart (program: Command): void {
  program.command('start')
    .description('run an all-in-one node on this host: an agent with embedded storage under DIR')
    .option('--dir <dir>', 'where the node keeps its data', './.berth')
    .option('--listen <addr>', 'agent local API address, HOST:PORT', '127.0.0.1:4650')
    .option('--peer-listen <addr>', 'agent peer API address, HOST:PORT', '127.0.0.1:4651')
    .option('--locker-listen <addr>', 'locker server API address, HOST:PORT', '127.0.0.1:4660')
    .option('--overlay-listen <multiaddr>', 'run an overlay node in the node, listening here: the agent asks it for hints and announces what it stores')
    .option('--bootstrap <multiaddr>', 'an overlay node to join through, with /p2p/<peer id> (repeatable; implies an overlay node)', collect)
    .option('--json', 'print {dir, agent: {url, peerUrl, hint}, locker: {url, name, ownerKey, adminKey}, overlay?: {peerId, multiaddrs}} as one JSON line once listening')
    .action(action(async (options: StartOptions) => {
      const dir = resolve(options.dir)
      // Each part of the node keeps its data in its own subdirectory of DIR.
      await mkdir(join(dir, 'agent'), { recursive: true })
      await mkdir(join(dir, 'locker'), { recursive: true })
      const signals = stopOnSignal(options.json === true)
      const { agentOptionsFrom, overlayNodeFrom } = await import('../agent-config.ts')
      const agentOptions = await agentOptionsFrom({ listen: options.listen, peerListen: options.peerListen, store: join(dir, 'agent') })
      const node = await overlayNodeFrom(overlayConfig(options, undefined))
      const { createAgent } = await import('../../agent/agent.ts')
      const agent = await createAgent({ ...agentOptions, ...(node !== undefined ? { overlay: node } : {}) })
      // A locker server beside the agent, with a locker for the local user: its keys live in
      // DIR/locker (made on first start, mode 0600).
      const { loadSigningKey, parseLockerName, publicKeyFrom } = await import('../../core/tokens.ts')
      const adminKey = join(dir, 'locker', 'admin.jwk')
      const admin = await loadSigningKey(adminKey, { create: true })
      const { createLockerServer } = await import('../../locker/server.ts')
      // Only warnings and errors on the terminal the node was started from; `berth locker serve` logs every request.
      // One host, one user: its distributes may reach the other parts on loopback.
      const { lockerLogger } = await import('./locker.ts')
      const lockers = await createLockerServer({ listen: options.lockerListen, dir: join(dir, 'locker'), adminKey: admin.publicJwk, logger: await lockerLogger('warn'), allowPrivatePlaces: true })
      const name = defaultLockerName()
      const ownerKey = join(dir, 'locker', `${name}.jwk`)
      const owner = await loadSigningKey(ownerKey, { create: true })
      if (lockers.db.locker(parseLockerName(name)) === undefined) {
        lockers.db.createLocker({ name, weight: 1, quota: 10 * 2 ** 30, floor: 0, key: await publicKeyFrom(owner.publicJwk) })
      }
      // The node's parts, started in this order and stopped in reverse (portal and ALTO join
      // this list when configured, each with its subdirectory of DIR and its lines below).
      const parts: Part[] = [
        ...(node !== undefined ? [{ name: 'overlay node', start: async () => await node.start(), stop: async () => await node.stop() }] : []),
        { name: 'agent', start: async () => await agent.start(), stop: async () => await agent.stop() },
        { name: 'locker server', start: async () => await lockers.start(), stop: async () => await lockers.stop() }
      ]
      await startParts(parts)
      const hint = formatHint(agent.selfHint)
      if (options.json === true) {
        printJson({ dir, agent: { url: agent.url, peerUrl: agent.peerUrl, hint }, locker: { url: lockers.url, name, ownerKey, adminKey }, ...(node !== undefined ? { overlay: { peerId: node.peerId, multiaddrs: node.multiaddrs } } : {}) })
      } else {
        const agentFlag = agent.url === DEFAULT_AGENT_URL ? '' : ` --agent ${agent.url}`
        printLines(
          `berth node running, data in ${dir}`,
          `  agent      ${agent.url}`,
          `  peer hint  ${hint}`,
          `  lockers    ${lockers.url} (your locker: ${name}, owner key ${ownerKey})`,
          ...(node !== undefined ? [`  overlay    ${node.multiaddrs.join(' ')}`] : []),
          'try:',
          `  berth put FILE${agentFlag}`,
          `  berth get OID --hint ${hint}${agentFlag} -o COPY`,
          `  berth token issue --locker ${name} --key ${ownerKey} --ops read,write   (then curl -H "Authorization: Bearer TOKEN" -T FILE ${lockers.url}/v1/lockers/${name}/objects/OID)`
        )
      }
      await signals.serve(parts)
    }))
}

/** The local user's locker name: the login name, lower-cased, other characters as "-". */
function defaultLockerName (): string {
  let user = 'user'
  try { user = userInfo().username } catch {}
  const name = user.toLowerCase().replace(/[^a-z0-9._-]/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 63)
  return name === '' ? 'user' : name
}
