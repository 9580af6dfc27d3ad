/**
 * The portal on the overlay's gossipsub events (issue 5, scope 4): three real overlay nodes on
 * loopback (the portal's own, a subscriber's, an operator's), three real lockers in three ALTO
 * regions (east 127.1, west 127.2, south 127.3; east–west 10, west–south 5) and the portal.
 *   (a) an upload → another node receives object-available {oid, size, hints: locker:// URIs};
 *   (b) locker-status down for east's locker, published from another node, while that locker is
 *       up → east's user is redirected to west (the event decided, not the probe); up → east again;
 *   (c) findService('portal') on another node returns the portal's URL.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import type { AltoServer } from '../../src/overlay/alto/server.ts'
import { createPortal, type Portal } from '../../src/overlay/portal/server.ts'
import type { LockerServer } from '../../src/locker/server.ts'
import { REGIONS, type Region, type Regions, startRegions } from './_regions.ts'
import { createOverlayNode, TOPICS, type OverlayEvent, type OverlayNode } from '../../src/overlay/registry.ts'

async function waitFor (cond: () => boolean, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 20))
  }
}

describe('portal on overlay events', () => {
  let dir: string
  let alto: AltoServer
  const servers = {} as Record<Region, LockerServer>
  let regions: Regions | undefined
  const users = {} as Record<Region, Agent>
  let portalNode: OverlayNode, subscriber: OverlayNode, operator: OverlayNode
  let portal: Portal
  const available: Array<{ event: OverlayEvent, from: string, receivedAt: number }> = []
  const serviceChanges: OverlayEvent[] = []
  let oid: string

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-portal-events-'))
    regions = await startRegions(dir)
    alto = regions.alto
    Object.assign(servers, regions.servers)
    for (const region of Object.keys(REGIONS) as Region[]) users[region] = new Agent({ localAddress: `${REGIONS[region]}.0.77` })
    portalNode = await createOverlayNode({ listen: '/ip4/127.0.0.1/tcp/0' })
    await portalNode.start()
    subscriber = await createOverlayNode({ listen: '/ip4/127.0.0.1/tcp/0', bootstrap: portalNode.multiaddrs })
    operator = await createOverlayNode({ listen: '/ip4/127.0.0.1/tcp/0', bootstrap: portalNode.multiaddrs })
    subscriber.subscribe(TOPICS.objectAvailable, (event, from) => { available.push({ event, from, receivedAt: Date.now() }) })
    subscriber.subscribe(TOPICS.serviceChange, (event) => { serviceChanges.push(event) })
    await Promise.all([subscriber.start(), operator.start()])
    await waitFor(() => [portalNode, subscriber, operator].every(n => n.routingTableSize() >= 1), 10_000, 'routing tables')
    portal = await createPortal({
      listen: '127.0.0.1:0',
      alto: alto.url,
      replicas: 3,
      probeTimeoutMs: 1000,
      overlay: portalNode,
      lockers: regions.lockers()
    })
    // the portal subscribes to locker-status at start; the mesh needs the subscription gossiped
    await portal.start()
    await waitFor(() => operator.subscribers(TOPICS.lockerStatus).includes(portalNode.peerId), 10_000, 'the operator to see the portal subscribed to locker-status')
    await waitFor(() => portalNode.subscribers(TOPICS.objectAvailable).includes(subscriber.peerId), 10_000, 'the portal to see the subscriber on object-available')
  })

  after(async () => {
    await portal?.stop()
    for (const n of [subscriber, operator, portalNode]) await n?.stop().catch(() => {})
    for (const u of Object.values(users)) await u.close()
    await regions?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it('(a) an upload: another node receives object-available with the locker hints', async (t) => {
    const bytes = randomBytes(256 * 1024)
    const t0 = Date.now()
    const res = await request(`${portal.url}/v1/objects?name=a.bin`, { method: 'POST', body: bytes })
    const body = await res.body.json() as any
    const stored = Date.now()
    assert.equal(res.statusCode, 201, JSON.stringify(body))
    oid = body.oid
    await waitFor(() => available.some(a => a.event.oid === oid), 10_000, 'object-available')
    const a = available.find(a => a.event.oid === oid)!
    t.diagnostic(`object-available received ${a.receivedAt - stored} ms after the upload's 201 (${a.receivedAt - (a.event.at ?? 0)} ms after publication; upload ${stored - t0} ms)`)
    assert.equal(a.event.type, 'object-available')
    assert.equal(a.event.size, bytes.length)
    assert.equal(a.from, portalNode.peerId)
    const expected = (Object.keys(REGIONS) as Region[]).map(r => `locker://${new URL(servers[r].url).host}/pub`).sort()
    assert.deepEqual([...(a.event.hints as string[])].sort(), expected)
  })

  it('(b) locker-status down for east (which is up) → east\'s user goes to west; up → back to east', async (t) => {
    const redirect = async (): Promise<string> => {
      const res = await request(`${portal.url}/d/${oid}`, { dispatcher: users.east })
      await res.body.dump()
      assert.equal(res.statusCode, 302)
      return res.headers['berth-locker'] as string
    }
    assert.equal(await redirect(), 'east')
    // east's locker really is up: a probe would pick it
    const w0 = await portal.where(oid, '127.1.0.77')
    assert.equal(w0.name, 'east')

    const t0 = Date.now()
    await operator.publish(TOPICS.lockerStatus, { type: 'locker-status', locker: 'east', state: 'down' })
    let moved = ''
    const end = Date.now() + 10_000
    while (Date.now() < end) {
      moved = await redirect()
      if (moved !== 'east') break
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    t.diagnostic(`down event acted on within ${Date.now() - t0} ms`)
    assert.equal(moved, 'west')
    const w = await portal.where(oid, '127.1.0.77')
    assert.equal(w.name, 'west')
    assert.equal(w.skipped.length, 1)
    assert.equal(w.skipped[0]!.name, 'east')
    assert.match(w.skipped[0]!.reason, /reported down \(locker-status event/)
    // the other regions are unmoved
    assert.equal((await portal.where(oid, '127.3.0.77')).name, 'south')

    // a locker named by its URL works as well: busy for south
    await operator.publish(TOPICS.lockerStatus, { type: 'locker-status', locker: servers.south.url, state: 'busy' })
    const endS = Date.now() + 10_000
    let south = ''
    while (Date.now() < endS) { south = (await portal.where(oid, '127.3.0.77')).name; if (south !== 'south') break; await new Promise(resolve => setTimeout(resolve, 20)) }
    assert.equal(south, 'west')

    const t1 = Date.now()
    await operator.publish(TOPICS.lockerStatus, { type: 'locker-status', locker: 'east', state: 'up' })
    await operator.publish(TOPICS.lockerStatus, { type: 'locker-status', locker: `locker://${new URL(servers.south.url).host}/pub`, state: 'up' })
    let back = ''
    const end2 = Date.now() + 10_000
    while (Date.now() < end2) {
      back = await redirect()
      if (back === 'east') break
      await new Promise(resolve => setTimeout(resolve, 20))
    }
    t.diagnostic(`up event acted on within ${Date.now() - t1} ms`)
    assert.equal(back, 'east')
    const endS2 = Date.now() + 10_000
    while (Date.now() < endS2) { south = (await portal.where(oid, '127.3.0.77')).name; if (south === 'south') break; await new Promise(resolve => setTimeout(resolve, 20)) }
    assert.equal(south, 'south')
  })

  it('(c) findService(\'portal\') on another node returns the portal URL; service-change was published', async (t) => {
    // the portal registers in the background after start
    let urls: string[] = []
    let t0 = Date.now()
    const end = Date.now() + 10_000
    while (Date.now() < end) {
      t0 = Date.now()
      urls = await operator.findService('portal', { timeoutMs: 3000 })
      if (urls.length > 0) break
      await new Promise(resolve => setTimeout(resolve, 50))
    }
    t.diagnostic(`findService('portal') from another node: ${Date.now() - t0} ms → ${JSON.stringify(urls)}`)
    assert.deepEqual(urls, [portal.url])
    assert.deepEqual((await subscriber.findService('portal')), [portal.url])
    await waitFor(() => serviceChanges.length > 0, 10_000, 'service-change')
    t.diagnostic(`service-change events seen by the subscriber: ${JSON.stringify(serviceChanges.map(e => ({ service: e.service, urls: e.urls })))}`)
    assert.deepEqual(serviceChanges.at(-1)!.urls, [portal.url])
  })
})
