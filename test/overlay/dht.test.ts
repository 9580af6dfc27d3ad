import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { createOverlayNode, TOPICS, type OverlayNode, type OverlayEvent } from '../../src/overlay/registry.ts'

const nodes: OverlayNode[] = []
const stopped = new Set<OverlayNode>()
after(async () => { await Promise.all(nodes.filter(n => !stopped.has(n)).map(async n => await n.stop())) })

async function waitFor (cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(r => setTimeout(r, 20))
  }
}

const OID = 'sha256-' + 'ab'.repeat(32)

test('five overlay nodes on loopback: DHT registry and events', async (t) => {
  const first = await createOverlayNode({ listen: '/ip4/127.0.0.1/tcp/0' })
  await first.start()
  nodes.push(first)
  for (let i = 1; i < 5; i++) {
    const n = await createOverlayNode({ listen: '/ip4/127.0.0.1/tcp/0', bootstrap: first.multiaddrs })
    nodes.push(n)
  }
  const t0 = Date.now()
  await Promise.all(nodes.slice(1).map(async n => await n.start()))
  await waitFor(() => nodes.every(n => n.peers().length >= 1), 5000, 'every node connected')
  t.diagnostic(`five nodes up and connected in ${Date.now() - t0} ms`)
  await waitFor(() => nodes.every(n => n.routingTableSize() >= 1), 10000, 'every DHT routing table to have a peer')
  t.diagnostic(`every DHT routing table non-empty after ${Date.now() - t0} ms (sizes ${nodes.map(n => n.routingTableSize()).join(',')})`)

  await t.test('a replica announced on one node is found from another', async () => {
    const announcer = nodes[1]
    const finder = nodes[4]
    const ta = Date.now()
    const stored = await announcer.announceReplica(OID, 'http://127.0.0.1:4671/')
    const announceMs = Date.now() - ta
    const tf = Date.now()
    const hints = await finder.findReplicas(OID, { timeoutMs: 2000 })
    const findMs = Date.now() - tf
    t.diagnostic(`announce ${announceMs} ms (record on ${stored} peers); find from another node ${findMs} ms; announce→found ${Date.now() - ta} ms`)
    assert.deepEqual(hints, ['http://127.0.0.1:4671/'])
  })

  await t.test('a second replica of the same OID is merged, not overwritten', async () => {
    await nodes[2].announceReplica(OID, 'http://127.0.0.1:4672/')
    const hints = await nodes[3].findReplicas(OID, { timeoutMs: 2000 })
    assert.deepEqual(hints.sort(), ['http://127.0.0.1:4671/', 'http://127.0.0.1:4672/'])
  })

  await t.test('replicas announced at the same moment from three nodes are all kept', async () => {
    for (let r = 0; r < 3; r++) {
      const oid = `sha256-concurrent-${r}`
      await Promise.all([1, 2, 3].map(async i => await nodes[i].announceReplica(oid, `http://127.0.0.${i}:4671/`)))
      for (const finder of [nodes[4], nodes[0], nodes[4]]) {
        assert.deepEqual((await finder.findReplicas(oid, { timeoutMs: 2000 })).sort(), ['http://127.0.0.1:4671/', 'http://127.0.0.2:4671/', 'http://127.0.0.3:4671/'])
      }
    }
  })

  await t.test('service descriptors: put and find, the newest wins', async () => {
    await nodes[1].putService('alto', ['http://127.0.0.1:4670/'])
    assert.deepEqual(await nodes[3].findService('alto', { timeoutMs: 2000 }), ['http://127.0.0.1:4670/'])
    await nodes[2].putService('alto', ['http://127.0.0.1:5670/'])
    assert.deepEqual(await nodes[4].findService('alto', { timeoutMs: 2000 }), ['http://127.0.0.1:5670/'])
    assert.deepEqual(await nodes[4].findService('no-such-service', { timeoutMs: 2000 }), [])
  })

  await t.test('an unknown OID finds nothing', async () => {
    assert.deepEqual(await nodes[3].findReplicas('sha256-' + 'cd'.repeat(32), { timeoutMs: 2000 }), [])
  })

  await t.test('an object-available event reaches a subscriber on another node', async () => {
    const got: Array<{ event: OverlayEvent, at: number }> = []
    const unsubscribe = nodes[4].subscribe(TOPICS.objectAvailable, (event) => { got.push({ event, at: Date.now() }) })
    // gossipsub learns of the subscription through the mesh first
    await waitFor(() => nodes[1].subscribers(TOPICS.objectAvailable).length > 0 || nodes[0].subscribers(TOPICS.objectAvailable).length > 0, 5000, 'subscription to propagate')
    // the publisher may only be connected to the bootstrap node, which relays
    await waitFor(() => nodes[0].subscribers(TOPICS.objectAvailable).includes(nodes[4].peerId), 5000, 'subscription at the relay')
    const tp = Date.now()
    await nodes[1].publish(TOPICS.objectAvailable, { type: 'object-available', oid: OID, hints: ['http://127.0.0.1:4671/'] })
    await waitFor(() => got.length > 0, 1000, 'the event')
    t.diagnostic(`object-available event: publish→received ${got[0].at - tp} ms`)
    assert.equal(got[0].event.oid, OID)
    assert.equal(got[0].event.from, nodes[1].peerId)
    unsubscribe()
  })

  await t.test('with two of the five stopped, the replica is still found', async () => {
    // stop the bootstrap node and one of the two announcers; the record is on every node (k=20 > 5)
    for (const n of [nodes[0], nodes[2]]) { await n.stop(); stopped.add(n) }
    const tf = Date.now()
    const hints = await nodes[4].findReplicas(OID, { timeoutMs: 2000 })
    t.diagnostic(`find with two of five stopped: ${Date.now() - tf} ms`)
    assert.deepEqual(hints.sort(), ['http://127.0.0.1:4671/', 'http://127.0.0.1:4672/'])
    // a node that joins now (through a survivor) holds no copy of its own: it must find it remotely
    const late = await createOverlayNode({ bootstrap: nodes[3].multiaddrs })
    nodes.push(late)
    await late.start()
    await waitFor(() => late.routingTableSize() >= 1, 10000, 'the late node to have a routing table')
    const tl = Date.now()
    const lateHints = await late.findReplicas(OID, { timeoutMs: 2000 })
    t.diagnostic(`find from a node that joined after the two stopped: ${Date.now() - tl} ms`)
    assert.deepEqual(lateHints.sort(), ['http://127.0.0.1:4671/', 'http://127.0.0.1:4672/'])
  })
})
