/**
 * The agent announces what it stores on the overlay (replica pointer + object-available event),
 * and uses recent object-available events as hints ahead of the DHT.
 */
import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import { createOverlayNode, TOPICS, type OverlayEvent, type OverlayNode } from '../../src/overlay/registry.ts'
import { RecentObjects, type AgentOverlay } from '../../src/agent/overlay.ts'
import type { Agent } from '../../src/agent/agent.ts'
import { startAgent, pseudoRandom, oidOf, readAll } from '../agent/_helpers.ts'

const cleanups: Array<() => Promise<void>> = []
after(async () => { for (const c of cleanups.reverse()) await c() })

async function until (what: string, cond: () => Promise<boolean> | boolean, timeoutMs = 5000): Promise<number> {
  const t0 = Date.now()
  while (!await cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
  return Date.now() - t0
}

async function overlayStatus (c: AgentClient): Promise<Record<string, number>> {
  return (await c.status() as unknown as { overlay: Record<string, number> }).overlay
}

test('a put and a completed get are announced as replicas and published as object-available', async (t) => {
  const nodes: OverlayNode[] = []
  for (let i = 0; i < 3; i++) {
    const n = await createOverlayNode({ bootstrap: nodes.map(x => x.multiaddrs[0]) })
    await n.start()
    nodes.push(n)
    cleanups.push(async () => await n.stop())
  }
  const [na, nb, watcher] = nodes
  const events: Array<{ event: OverlayEvent, at: number }> = []
  watcher.subscribe(TOPICS.objectAvailable, (event) => { events.push({ event, at: Date.now() }) })
  await until('gossipsub mesh', () => na.subscribers(TOPICS.objectAvailable).length > 0 || na.peers().length > 0)
  await new Promise(resolve => setTimeout(resolve, 1500)) // a gossipsub heartbeat, so the subscription has spread

  const a: Agent = await startAgent({ overlay: na })
  cleanups.push(async () => await a.stop())
  const b: Agent = await startAgent({ overlay: nb })
  cleanups.push(async () => await b.stop())
  const ca = new AgentClient(a.url); const cb = new AgentClient(b.url)
  cleanups.push(async () => { await ca.close(); await cb.close() })

  const data = pseudoRandom(2 * 1024 * 1024 + 5, 11)
  const t0 = Date.now()
  const put = await ca.put({ bytes: data })
  assert.equal(put.oid, oidOf(data))

  const eventMs = await until('object-available event', () => events.some(e => e.event.oid === put.oid), 1000)
  t.diagnostic(`object-available event from the put reached a subscriber on a third node in ${events.find(e => e.event.oid === put.oid)!.at - t0} ms after the put was sent (${eventMs} ms after it answered)`)
  const ev = events.find(e => e.event.oid === put.oid)!.event
  assert.equal(ev.type, 'object-available')
  assert.equal(ev.size, data.length)
  assert.deepEqual(ev.hints, [a.selfHint.uri])

  const announceMs = await until('announce', async () => (await overlayStatus(ca)).announced >= 1)
  t.diagnostic(`announce of the put done ${announceMs} ms after the put answered`)
  assert.deepEqual(await watcher.findReplicas(put.oid), [a.selfHint.uri])

  // B: a get with no hint. B's node saw the event too, so the hint comes from its recent objects.
  const got = await cb.get(put.oid)
  assert.ok((await readAll(got.stream)).equals(data))
  const sb = await overlayStatus(cb)
  assert.equal(sb.recentHits, 1)
  assert.equal(sb.dhtLookups, 0)
  // …and B now announces itself as a replica too, once the get has committed
  await until('B announce', async () => (await overlayStatus(cb)).announced >= 1)
  assert.deepEqual((await watcher.findReplicas(put.oid)).sort(), [a.selfHint.uri, b.selfHint.uri].sort())
  assert.ok(events.some(e => e.event.oid === put.oid && (e.event.hints as string[]).includes(b.selfHint.uri)), 'B published object-available too')
})

test('a failing overlay never fails the put; failures are counted', async () => {
  const fake: AgentOverlay = {
    findReplicas: async () => [],
    announceReplica: async () => { throw new Error('dht down') },
    publish: () => { throw new Error('sync failure') }
  }
  const agent = await startAgent({ overlay: fake })
  const c = new AgentClient(agent.url)
  try {
    const put = await c.put({ bytes: Buffer.from('hello overlay') })
    assert.equal(put.oid, oidOf(Buffer.from('hello overlay')))
    await until('failures counted', async () => { const s = await overlayStatus(c); return s.announceFailures === 1 && s.publishFailures === 1 })
  } finally { await c.close(); await agent.stop() }
})

test('recent object-available events are hints for a hint-less get, ahead of the DHT', async () => {
  let handler: ((event: Record<string, unknown>, from: string) => void) | undefined
  let lookups = 0
  const fake: AgentOverlay = {
    // a DHT that knows nothing and is slow about it
    findReplicas: async () => { lookups++; await new Promise(resolve => setTimeout(resolve, 300)); return [] },
    subscribe: (topic, h) => { assert.equal(topic, TOPICS.objectAvailable); handler = h; return () => { handler = undefined } }
  }
  const source = await startAgent()
  const agent = await startAgent({ overlay: fake })
  const cs = new AgentClient(source.url); const c = new AgentClient(agent.url)
  try {
    const data = pseudoRandom(300_000, 3)
    const put = await cs.put({ bytes: data })
    // before the event: the DHT is asked and knows nothing
    await assert.rejects(c.get(put.oid), (err: { code?: string }) => err.code === 'ERR_NOT_FOUND')
    assert.equal(lookups, 1)
    // junk events are ignored; file: hints dropped
    handler!({ oid: 'not-an-oid', hints: [source.selfHint.uri] }, 'x')
    handler!({ oid: put.oid, hints: 'nope' }, 'x')
    handler!({ oid: oidOf(Buffer.from('other')), hints: ['file:///etc/'] }, 'x')
    handler!({ type: 'object-available', oid: put.oid, size: data.length, hints: [source.selfHint.uri] }, 'peer')
    const t0 = Date.now()
    const got = await c.get(put.oid)
    assert.ok((await readAll(got.stream)).equals(data))
    assert.ok(Date.now() - t0 < 300, 'did not wait for the slow DHT')
    assert.equal(lookups, 1, 'the DHT was not asked')
    const s = (await c.status() as unknown as { overlay: Record<string, number> }).overlay
    assert.equal(s.recentHits, 1)
    assert.equal(s.recentObjects, 1)
  } finally { await cs.close(); await c.close(); await agent.stop(); await source.stop() }
  assert.equal(handler, undefined, 'unsubscribed on stop')
})

test('hints from a recent event that fail (that agent is gone): forgotten, and the DHT is asked', async () => {
  let handler: ((event: Record<string, unknown>, from: string) => void) | undefined
  const source = await startAgent()
  let lookups = 0
  const fake: AgentOverlay = {
    findReplicas: async () => { lookups++; return [source.selfHint.uri] },
    subscribe: (_topic, h) => { handler = h; return () => {} }
  }
  const agent = await startAgent({ overlay: fake })
  const cs = new AgentClient(source.url); const c = new AgentClient(agent.url)
  try {
    const data = pseudoRandom(200_000, 4)
    const put = await cs.put({ bytes: data })
    // an agent that announced it and has stopped since
    const gone = await startAgent()
    const goneHint = gone.selfHint.uri
    await gone.stop()
    handler!({ type: 'object-available', oid: put.oid, size: data.length, hints: [goneHint] }, 'peer')
    const got = await c.get(put.oid)
    assert.ok((await readAll(got.stream)).equals(data))
    const s = await overlayStatus(c)
    assert.deepEqual([s.recentHits, s.recentStale, s.dhtLookups, s.recentObjects], [1, 1, 1, 0])
    assert.equal(lookups, 1)
  } finally { await cs.close(); await c.close(); await agent.stop(); await source.stop() }
})

test('RecentObjects: bounded, oldest out first, entries expire', () => {
  let now = 1000
  const r = new RecentObjects(2, 100, () => now)
  const h = (n: number) => ({ uri: `berth://127.0.0.1:${n}`, priority: 0, weight: 1 })
  r.add('a', [h(1)]); r.add('b', [h(2)])
  r.add('a', [h(3)]) // refresh: a is now the newest, with both hints
  assert.deepEqual(r.get('a').map(x => x.uri), ['berth://127.0.0.1:3', 'berth://127.0.0.1:1'])
  r.add('c', [h(4)])
  assert.equal(r.size, 2)
  assert.deepEqual(r.get('b'), [], 'b, the oldest, went out')
  now += 100
  assert.deepEqual(r.get('a'), [], 'expired')
  r.add('d', [])
  assert.deepEqual(r.get('d'), [], 'no hints, no entry')
})
