/**
 * The locker transfer plugin on real locker servers and agents over loopback: a put goes to the
 * owner's locker in the background (its hint first, the agent's after it), and a get follows
 * SAILOR's priority-req — my locker distributes from the peer's and the bytes come from mine;
 * else the peer's locker directly; else (urgent) the peer agent; or (not urgent) the get is held
 * until a locker comes back.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import type { Agent } from '../../src/agent/agent.ts'
import { LockerPlugin, type LockerPluginOptions } from '../../src/agent/plugins/locker.ts'
import type { Descriptor } from '../../src/core/chunker/types.ts'
import type { Hint } from '../../src/core/hints.ts'
import { createLockerServer, type Capacity, type LockerServer } from '../../src/locker/server.ts'
import { generateSigningKey, issueAccessToken, issueAdminToken, type SigningKey, type TokenOp } from '../../src/core/tokens.ts'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import { LockerClient } from '../../src/sdk/locker-client.ts'
import { oidOf, pseudoRandom, readAll, startAgent } from './_helpers.ts'
import { MultipathPlugin } from '../../src/agent/plugins/multipath.ts'
import { PeerPlugin } from '../../src/agent/plugins/peer.ts'

const MiB = 1024 * 1024
/** Short enough that fallbacks and holds show within a test, long enough for loopback. */
const FAST: LockerPluginOptions = { timeoutMs: 3000, holdMs: 300, downMs: 2000 }

/** A locker server on its own directory and port, so that it can be stopped and come back. */
class Place {
  server!: LockerServer
  listen = '127.0.0.1:0'
  readonly admin: Promise<SigningKey> = generateSigningKey()
  constructor (readonly dir: string, readonly capacity?: Partial<Capacity>) {}
  async start (): Promise<void> {
    this.server = await createLockerServer({ listen: this.listen, dir: this.dir, adminKey: (await this.admin).publicJwk, allowPrivatePlaces: true, capacity: this.capacity })
    await this.server.start()
    this.listen = new URL(this.server.url).host
  }

  async stop (): Promise<void> { await this.server.stop() }
  get client (): LockerClient { return new LockerClient(this.server.url) }
  get uri (): string { return `locker://${this.listen}` }
  async metric (name: string): Promise<number> {
    const text = await (await fetch(`${this.server.url}/metrics`)).text()
    return text.split('\n').filter(l => l.startsWith(name)).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0)
  }
}

interface Owner { name: string, place: Place, uri: string, token: (ops?: TokenOp[]) => Promise<string> }

async function lockerOn (place: Place, name: string, o: { floor?: number } = {}): Promise<Owner> {
  const key = await generateSigningKey()
  await place.client.createLocker(await issueAdminToken(await place.admin), { name, key: key.publicJwk, ...o })
  return {
    name,
    place,
    uri: `${place.uri}/${name}`,
    token: async (ops: TokenOp[] = ['read', 'write', 'distribute', 'status']) => await issueAccessToken(key, { locker: name, ops, objects: 'all', ttlSeconds: 600 })
  }
}

/** Verified chunk bytes an agent received, by plugin. */
async function received (agent: Agent): Promise<Record<string, number>> {
  const out: Record<string, number> = {}
  for (const v of (await agent.metrics.bytesReceived.get()).values) out[String(v.labels.plugin)] = (out[String(v.labels.plugin)] ?? 0) + v.value
  return out
}
async function served (agent: Agent, api: string): Promise<number> {
  return (await agent.metrics.bytesServed.get()).values.filter(v => v.labels.api === api).reduce((n, v) => n + v.value, 0)
}

/**
 * Alice (the sender) and Bob (the receiver), each with an agent and a locker on a server of
 * their own; Bob holds a read token for Alice's locker.
 */
interface World {
  alice: Owner
  bob: Owner
  sender: Agent
  receiver: Agent
  senderPlugin: LockerPlugin
  receiverPlugin: LockerPlugin
  /** puts on the sender and waits for its upload to Alice's locker */
  put: (bytes: Buffer) => Promise<{ oid: string, hints: Hint[] }>
  stop: () => Promise<void>
}

async function world (o: { bob?: Partial<Capacity>, bobFloor?: number } = {}): Promise<World> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-locker-plugin-'))
  const a = new Place(join(dir, 'a'))
  const b = new Place(join(dir, 'b'), o.bob)
  await a.start()
  await b.start()
  const alice = await lockerOn(a, 'alice')
  const bob = await lockerOn(b, 'bob', { floor: o.bobFloor })
  const senderPlugin = new LockerPlugin({ ...FAST, mine: { uri: alice.uri, token: await alice.token(['read', 'write']) } })
  const receiverPlugin = new LockerPlugin({ ...FAST, mine: { uri: bob.uri, token: await bob.token() }, credentials: [{ uri: alice.uri, token: await alice.token(['read']) }] })
  const sender = await startAgent({ plugins: [senderPlugin] })
  // The receiver's pipeline as the default one composes it: one multipath plugin whose paths are
  // the locker plugin and the peer plugin, falling back by hint priority (lockers 0, the peer 1).
  const receiver = await startAgent({ plugins: [new MultipathPlugin({ paths: [{ plugin: receiverPlugin }, { plugin: new PeerPlugin() }] })] })
  return {
    alice,
    bob,
    sender,
    receiver,
    senderPlugin,
    receiverPlugin,
    async put (bytes) {
      const r = await new AgentClient(sender.url).put({ bytes })
      await senderPlugin.settled()
      assert.equal(senderPlugin.stats.uploads.failed, 0, JSON.stringify(senderPlugin.stats.uploads.lastError))
      return r
    },
    async stop () {
      await sender.stop()
      await receiver.stop()
      for (const p of [a, b]) await p.stop().catch(() => {})
      await rm(dir, { recursive: true, force: true })
    }
  }
}

async function getVia (agent: Agent, oid: string, hints: Hint[]): Promise<Buffer> {
  return await readAll((await new AgentClient(agent.url).get(oid, { hints })).stream)
}

/** Resolves with 'pending' if `p` has not settled within `ms`. */
async function within<T> (p: Promise<T>, ms: number): Promise<T | 'pending'> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<'pending'>(resolve => { timer = setTimeout(() => resolve('pending'), ms) })])
  } finally { clearTimeout(timer) }
}

/** An object's bytes through the plugin alone: its manifest, then its chunks, placed by offset. */
async function fetchWith (plugin: LockerPlugin, oid: string, hint: Hint, o: { urgent?: boolean, signal: AbortSignal }): Promise<Buffer> {
  const m = await plugin.manifest(oid, hint, o)
  const all: Descriptor[] = []
  for await (const d of m.descriptors) all.push(d)
  const out = Buffer.alloc(m.size)
  for (let i = 0; i < all.length; i += 40) {
    for await (const r of plugin.chunks(all.slice(i, i + 40), hint, { ...o, oid })) {
      assert.ok(r.bytes !== undefined, `chunk ${r.descriptor.cid}`)
      out.set(r.bytes, r.descriptor.offset)
    }
  }
  return out
}

describe('locker plugin: puts to my locker, gets by SAILOR priority-req', () => {
  const data = pseudoRandom(6 * MiB + 4321, 61)

  it('a put uploads to my locker in the background and answers its hint first, the agent after it', async () => {
    const w = await world()
    try {
      const r = await w.put(data)
      assert.deepEqual(r.hints, [{ uri: w.alice.uri, priority: 0, weight: 1 }, { ...w.sender.selfHint, priority: 1 }])
      const held = await w.alice.place.client.head('alice', r.oid, { token: await w.alice.token(['read']) })
      assert.equal(held?.size, data.length)
      assert.equal(w.senderPlugin.stats.uploads.done, 1)
      assert.equal(w.senderPlugin.stats.uploads.linked, 0)
      // Carol, on the same server, puts the same object: the server has the bytes; a proof links them.
      const carol = await lockerOn(w.alice.place, 'carol')
      const second = new LockerPlugin({ mine: { uri: carol.uri, token: await carol.token(['read', 'write']) } })
      const other = await startAgent({ plugins: [second] })
      try {
        const bytesIn = await w.alice.place.metric('berth_locker_bytes_in_total')
        await new AgentClient(other.url).put({ bytes: data })
        await second.settled()
        assert.deepEqual({ done: second.stats.uploads.done, linked: second.stats.uploads.linked, failed: second.stats.uploads.failed }, { done: 1, linked: 1, failed: 0 })
        assert.equal(await w.alice.place.metric('berth_locker_bytes_in_total'), bytesIn, 'no object bytes moved')
        assert.equal((await w.alice.place.client.head('carol', r.oid, { token: await carol.token(['read']) }))?.size, data.length)
      } finally { await other.stop() }
    } finally { await w.stop() }
  })

  /** A get whose bytes all come through lockers — relayed by mine, or from the peer's directly — none from the peer agent. */
  async function fromLockers (w: World, path: 'relayed' | 'direct'): Promise<{ oid: string, hints: Hint[] }> {
    const r = await w.put(data)
    assert.ok((await getVia(w.receiver, r.oid, r.hints)).equals(data))
    assert.deepEqual(await received(w.receiver), { locker: data.length })
    assert.deepEqual(w.receiverPlugin.stats.bytes, path === 'relayed' ? { relayed: data.length, direct: 0 } : { relayed: 0, direct: data.length })
    assert.equal(await served(w.sender, 'peer'), 0, 'nothing from the peer agent')
    return r
  }

  it('all up: my locker distributes from the peer\'s and the bytes come from mine', async () => {
    const w = await world()
    try {
      const r = await fromLockers(w, 'relayed')
      assert.equal(w.receiverPlugin.stats.relays, 1)
      assert.equal((await w.bob.place.client.head('bob', r.oid, { token: await w.bob.token() }))?.size, data.length, 'my locker holds it now')
      assert.equal(await w.bob.place.metric('berth_locker_bytes_in_total'), data.length, 'my locker took it from the peer\'s once')
    } finally { await w.stop() }
  })

  /** With those lockers stopped, a get comes from the peer agent, without waiting out a timeout. */
  async function fromPeerAgent (w: World, r: { oid: string, hints: Hint[] }, down: Owner[]): Promise<void> {
    for (const o of down) await o.place.stop()
    const t0 = Date.now()
    assert.ok((await getVia(w.receiver, r.oid, r.hints)).equals(data))
    assert.ok(Date.now() - t0 < FAST.timeoutMs!, `fell back in ${Date.now() - t0} ms`)
    const by = await received(w.receiver)
    assert.equal(by.locker ?? 0, 0)
    assert.equal(Object.values(by).reduce((a, b) => a + b, 0), data.length)
    assert.ok(await served(w.sender, 'peer') >= data.length, 'the peer agent served the bytes')
  }

  it('the peer\'s locker down: my locker cannot distribute, the peer\'s locker cannot answer, the peer agent serves', async () => {
    const w = await world()
    try {
      await fromPeerAgent(w, await w.put(data), [w.alice])
      assert.equal(w.receiverPlugin.stats.relays, 1, 'my locker was asked first')
    } finally { await w.stop() }
  })

  it('my locker answering 503 (its floor cannot be guaranteed): the bytes come from the peer\'s locker directly', async () => {
    // Bob's subscription promises more bandwidth than his server has: admission refuses every
    // transfer of his locker with 503 + Retry-After.
    const w = await world({ bob: { ingress: 10 * MiB, egress: 10 * MiB }, bobFloor: 20 * MiB })
    try {
      const r = await fromLockers(w, 'direct')
      assert.ok(await w.bob.place.metric('berth_locker_requests_denied_total{code="ERR_OVERLOADED"}') >= 1, 'my locker said 503')
      assert.equal(await w.bob.place.client.head('bob', r.oid, { token: await w.bob.token() }), undefined)
    } finally { await w.stop() }
  })

  it('both lockers down: an urgent get comes from the peer agent at once', async () => {
    const w = await world()
    try {
      await fromPeerAgent(w, await w.put(data), [w.alice, w.bob])
    } finally { await w.stop() }
  })

  it('my locker lost mid-get: the rest comes from the peer\'s locker, and later batches do not wait on mine', async () => {
    const w = await world()
    try {
      const r = await w.put(data)
      const hint = r.hints[0]
      const plugin = w.receiverPlugin
      const signal = AbortSignal.timeout(30_000)
      const m = await plugin.manifest(r.oid, hint, { signal })
      const all: Descriptor[] = []
      for await (const d of m.descriptors) all.push(d)
      const out = Buffer.alloc(m.size)
      const batch = async (ds: Descriptor[]): Promise<void> => {
        for await (const c of plugin.chunks(ds, hint, { signal, oid: r.oid })) out.set(c.bytes!, c.descriptor.offset)
      }
      await batch(all.slice(0, 10))
      assert.ok(plugin.stats.bytes.relayed > 0 && plugin.stats.bytes.direct === 0)
      await w.bob.place.stop()
      const t0 = Date.now()
      for (let i = 10; i < all.length; i += 10) await batch(all.slice(i, i + 10))
      assert.ok(Date.now() - t0 < FAST.timeoutMs!, `the rest took ${Date.now() - t0} ms`)
      assert.ok(out.equals(data))
      assert.equal(plugin.stats.bytes.relayed + plugin.stats.bytes.direct, data.length)
    } finally { await w.stop() }
  })

  it('both lockers down: a non-urgent get is held until a locker comes back, then comes from it', async () => {
    const w = await world()
    try {
      const r = await w.put(data)
      await w.alice.place.stop()
      await w.bob.place.stop()
      const hint = r.hints[0]
      const plugin = w.receiverPlugin
      // Urgent: a SourceError at once, for the core to go on to the next hint.
      await assert.rejects(plugin.manifest(r.oid, hint, { signal: AbortSignal.timeout(2000) }), (err: Error & { code?: string }) => err.code === 'ERR_SOURCE')
      // Not urgent and cancelled while held: it stops.
      const cancel = new AbortController()
      const cancelled = plugin.manifest(r.oid, hint, { urgent: false, signal: cancel.signal })
      cancelled.catch(() => {})
      await new Promise(resolve => setTimeout(resolve, 2 * FAST.holdMs!))
      cancel.abort()
      await assert.rejects(cancelled, (err: Error & { code?: string }) => err.code === 'ERR_ABORTED')
      // Not urgent: held, round after round, while nothing answers.
      const held = fetchWith(plugin, r.oid, hint, { urgent: false, signal: AbortSignal.timeout(30_000) })
      const holds = plugin.stats.holds
      assert.equal(await within(held, 4 * FAST.holdMs!), 'pending')
      assert.ok(plugin.stats.holds >= holds + 2, `held ${plugin.stats.holds - holds} times`)
      // The peer's locker comes back (same port, same data): the held get completes from it.
      await w.alice.place.start()
      const got = await held
      assert.ok(got.equals(data))
      assert.equal(plugin.stats.bytes.direct, data.length)
      assert.equal(await served(w.sender, 'peer'), 0, 'nothing from the peer agent')
    } finally { await w.stop() }
  })

  it('a locker describes an object still arriving once it is whole, and keeps the answer alive meanwhile for a held get; an urgent one moves on', async () => {
    const w = await world()
    try {
      const bytes = pseudoRandom(4 * MiB, 63)
      const oid = oidOf(bytes)
      let release!: () => void
      const gate = new Promise<void>(resolve => { release = resolve })
      let sent = 0
      async function * body (): AsyncGenerator<Uint8Array> {
        for (let at = 0; at < bytes.length; at += MiB) {
          if (at >= bytes.length / 2) await gate
          sent += MiB
          yield bytes.subarray(at, at + MiB)
        }
      }
      const uploading = w.alice.place.client.put('alice', oid, body(), { token: await w.alice.token(['write']), size: bytes.length })
      uploading.catch(() => {})
      // A plugin with only a read token for Alice's locker, that gives up on silence after 1.5 s.
      const reader = new LockerPlugin({ timeoutMs: 1500, credentials: [{ uri: w.alice.uri, token: await w.alice.token(['read']) }] })
      try {
        while (sent < bytes.length / 2) await new Promise(resolve => setTimeout(resolve, 5))
        const hint = { uri: w.alice.uri, priority: 0, weight: 1 }
        const signal = AbortSignal.timeout(30_000)
        // Not urgent: an urgent get gives up on the still-arriving object after timeoutMs (next case).
        const fetching = fetchWith(reader, oid, hint, { signal, urgent: false })
        fetching.catch(() => {})
        assert.equal(await within(fetching, 3000), 'pending', 'no manifest before the object is whole, and no timeout either')
        // An urgent get does not wait on it: after timeoutMs it says so, and the core tries the next hint.
        const t0 = Date.now()
        await assert.rejects(reader.manifest(oid, hint, { signal }), (err: Error & { code?: string }) => err.code === 'ERR_SOURCE')
        assert.ok(Date.now() - t0 < 10_000)
        release()
        await uploading
        assert.ok((await fetching).equals(bytes))
      } finally {
        release()
        await reader.close()
      }
    } finally { await w.stop() }
  })

  it('reads from my locker while it is still bringing the object from the peer\'s', async () => {
    // Alice's server sends at 4 MiB/s: the relay of 16 MiB takes seconds, the first chunks come at once.
    const dir = await mkdtemp(join(tmpdir(), 'berth-locker-plugin-'))
    const a = new Place(join(dir, 'a'), { egress: 4 * MiB })
    const b = new Place(join(dir, 'b'))
    await a.start()
    await b.start()
    try {
      const alice = await lockerOn(a, 'alice')
      const bob = await lockerOn(b, 'bob')
      const big = pseudoRandom(16 * MiB, 62)
      const writer = new LockerPlugin({ mine: { uri: alice.uri, token: await alice.token(['read', 'write']) } })
      const sender = await startAgent({ plugins: [writer] })
      let oid: string
      try {
        oid = (await new AgentClient(sender.url).put({ bytes: big })).oid
        await writer.settled()
      } finally { await sender.stop() }
      const receiver = new LockerPlugin({ ...FAST, mine: { uri: bob.uri, token: await bob.token() }, credentials: [{ uri: alice.uri, token: await alice.token(['read']) }] })
      try {
        const hint = { uri: alice.uri, priority: 0, weight: 1 }
        const signal = AbortSignal.timeout(30_000)
        const m = await receiver.manifest(oid, hint, { signal })
        const first: Descriptor[] = []
        for await (const d of m.descriptors) { if (first.length < 8) first.push(d) }
        for await (const c of receiver.chunks(first, hint, { signal, oid })) assert.ok(big.subarray(c.descriptor.offset, c.descriptor.offset + c.descriptor.length).equals(c.bytes!))
        const status = await b.client.status('bob', { token: await bob.token() })
        assert.equal(status.distributes.length, 1, 'my locker is still bringing the object')
        assert.ok(status.distributes[0].bytesIn < big.length)
        assert.equal(receiver.stats.bytes.relayed, first.reduce((n, d) => n + d.length, 0))
        // The rest, once it has all come.
        assert.ok((await fetchWith(receiver, oid, hint, { signal })).equals(big))
        assert.equal(receiver.stats.bytes.direct, 0)
      } finally { await receiver.close() }
    } finally {
      await a.stop()
      await b.stop()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
