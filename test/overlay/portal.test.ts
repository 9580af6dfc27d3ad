/**
 * The ALTO-guided portal, three regions on loopback: three real locker servers, each listening
 * on an address of its region's block (east 127.1.0.1, west 127.2.0.1, south 127.3.0.1; links
 * east–west 10, west–south 5, so east–south 15), the ALTO server over that topology, and the
 * portal. Users are undici agents bound to an address of their region: each is redirected to its
 * own region's locker and downloads the right bytes with the token in the redirect; with that
 * locker down, or answering 503 (admission control refusing), to the next cheapest one.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { spawn } from 'node:child_process'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Agent, request } from 'undici'
import type { AltoServer } from '../../src/overlay/alto/server.ts'
import { createPortal, type Portal } from '../../src/overlay/portal/server.ts'
import type { LockerServer } from '../../src/locker/server.ts'
import { issueAccessToken, type SigningKey } from '../../src/core/tokens.ts'
import { digestHex } from '../../src/core/naming.ts'
import { LockerClient } from '../../src/sdk/locker-client.ts'
import { BERTH_BIN, firstJsonLine, runBerth, stopper } from '../interop/_berth-cli.ts'
import { REGIONS, type Region, startRegions } from './_regions.ts'

const MiB = 1024 * 1024

interface World {
  dir: string
  alto: AltoServer
  servers: Record<Region, LockerServer>
  keys: Record<Region, SigningKey>
  portal: Portal
  users: Record<Region, Agent>
  stop: () => Promise<void>
}

/** Lockers named after their region (test/overlay/_regions.ts); `overloaded` makes one refuse GETs with 503. */
async function world (o: { replicas?: number, overloaded?: Region } = {}): Promise<World> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-portal-test-'))
  const regions = await startRegions(dir, { overloaded: o.overloaded })
  const { alto, servers, keys } = regions
  const portal = await createPortal({
    listen: '127.0.0.1:0',
    alto: alto.url,
    replicas: o.replicas ?? 3,
    probeTimeoutMs: 1000,
    lockers: regions.lockers()
  })
  await portal.start()
  const users = {} as Record<Region, Agent>
  // NB: undici takes localAddress as an Agent option; inside `connect: {}` it is ignored.
  for (const region of Object.keys(REGIONS) as Region[]) users[region] = new Agent({ localAddress: `${REGIONS[region]}.0.77` })
  return {
    dir,
    alto,
    servers,
    keys,
    portal,
    users,
    async stop () {
      await portal.stop()
      for (const u of Object.values(users)) await u.close()
      await regions.stop()
      await rm(dir, { recursive: true, force: true })
    }
  }
}

async function upload (portal: Portal, bytes: Buffer, name?: string): Promise<any> {
  const res = await request(`${portal.url}/v1/objects${name !== undefined ? `?name=${encodeURIComponent(name)}` : ''}`, { method: 'POST', body: bytes, headers: { 'content-type': 'application/octet-stream' } })
  const body = await res.body.json() as any
  assert.equal(res.statusCode, 201, JSON.stringify(body))
  return body
}

/** `/d/<oid>` as `region`'s user: the redirect, then the bytes it leads to (same user agent). */
async function download (w: World, region: Region, oid: string): Promise<{ location: URL, locker: string, bytes: Buffer }> {
  const res = await request(`${w.portal.url}/d/${oid}`, { dispatcher: w.users[region] })
  const text = await res.body.text()
  assert.equal(res.statusCode, 302, text)
  assert.equal(res.headers['cache-control'], 'no-store')
  const location = new URL(res.headers.location as string)
  const got = await request(location, { dispatcher: w.users[region] })
  assert.equal(got.statusCode, 200)
  return { location, locker: res.headers['berth-locker'] as string, bytes: Buffer.from(await got.body.arrayBuffer()) }
}

function sha256 (b: Buffer): string { return createHash('sha256').update(b).digest('hex') }

describe('portal: three regions on loopback', () => {
  let w: World
  const data = randomBytes(3 * MiB + 12345)
  let published: any

  before(async () => { w = await world() })
  after(async () => { await w?.stop() })

  it('replication policy: the locker cheapest on average first, then the one bringing most regions closer', async () => {
    // From east/west/south: east locker 0+10+15, west 10+0+5, south 15+5+0 → west first; then
    // east (east's users 10 → 0) beats south (south's users 5 → 0).
    assert.deepEqual(await w.portal.placement(), ['west', 'east', 'south'])
  })

  it('upload: 201 with the OID, the download URL and three replicas', async () => {
    published = await upload(w.portal, data, 'clip.bin')
    assert.equal(digestHex(published.oid), sha256(data))
    assert.equal(published.size, data.length)
    assert.equal(published.name, 'clip.bin')
    assert.equal(published.url, `${w.portal.url}/d/${published.oid}`)
    // Uploaded once, to the first locker of the policy; the others pulled it from there (distribute).
    assert.deepEqual(published.replicas.map((r: any) => [r.name, r.via]), [['west', 'put'], ['east', 'distribute'], ['south', 'distribute']])
    // Every locker really holds it.
    for (const region of Object.keys(REGIONS) as Region[]) {
      const t = await issueAccessToken(w.keys[region], { locker: 'pub', ops: ['read'], objects: 'all', ttlSeconds: 60 })
      assert.deepEqual(await new LockerClient(w.servers[region].url).head('pub', published.oid, { token: t }), { size: data.length })
    }
    const info = await (await request(`${w.portal.url}/v1/objects/${published.oid}`)).body.json() as any
    assert.equal(info.size, data.length)
  })

  for (const region of Object.keys(REGIONS) as Region[]) {
    it(`a user in ${region} is redirected to ${region}'s locker and downloads the right bytes`, async () => {
      const d = await download(w, region, published.oid)
      assert.equal(d.locker, region)
      assert.equal(d.location.hostname, `${REGIONS[region]}.0.1`)
      assert.equal(d.location.origin, w.servers[region].url)
      assert.equal(d.location.pathname, `/v1/lockers/pub/objects/${published.oid}`)
      assert.ok(d.location.searchParams.get('token'))
      assert.equal(sha256(d.bytes), digestHex(published.oid))
    })
  }

  it('the JSON variant: /v1/objects/{oid}/where', async () => {
    const res = await request(`${w.portal.url}/v1/objects/${published.oid}/where`, { dispatcher: w.users.south })
    const body = await res.body.json() as any
    assert.equal(res.statusCode, 200)
    assert.equal(body.name, 'south')
    assert.equal(body.locker, 'pub')
    assert.equal(body.cost, 0)
    assert.equal(new URL(body.url).origin, w.servers.south.url)
    // The token also works as a Bearer header.
    const got = await new LockerClient(w.servers.south.url).head('pub', published.oid, { token: body.token })
    assert.deepEqual(got, { size: data.length })
  })

  it('the redirect token reads that one object only, and is no write token', async () => {
    const d = await request(`${w.portal.url}/v1/objects/${published.oid}/where`, { dispatcher: w.users.east })
    const { token, url } = await d.body.json() as any
    const put = await request(url, { method: 'PUT', body: 'x' })
    await put.body.dump()
    assert.equal(put.statusCode, 401, 'a query token is for reads only')
    const other = randomBytes(1000)
    const otherOid = (await upload(w.portal, other)).oid
    const res = await request(`${w.servers.east.url}/v1/lockers/pub/objects/${otherOid}?token=${encodeURIComponent(token)}`)
    await res.body.dump()
    assert.equal(res.statusCode, 403)
  })

  it('an object no locker holds: 404', async () => {
    const oid = (await upload(w.portal, randomBytes(10))).oid
    // Made up: the same digest machinery with other bytes, never uploaded.
    const absent = oid.slice(0, -4) + (oid.endsWith('aaaa') ? 'bbbb' : 'aaaa')
    const res = await request(`${w.portal.url}/d/${absent}`, { dispatcher: w.users.west })
    const body = await res.body.json() as any
    assert.equal(res.statusCode, 404, JSON.stringify(body))
  })

  it('bad OID: 400', async () => {
    const res = await request(`${w.portal.url}/d/not-an-oid`)
    await res.body.dump()
    assert.equal(res.statusCode, 400)
  })

  it('east\'s locker down: east\'s user goes to the next cheapest (west, 10, not south, 15); the others are unmoved', async () => {
    await w.servers.east.stop()
    const d = await download(w, 'east', published.oid)
    assert.equal(d.locker, 'west')
    assert.equal(d.location.origin, w.servers.west.url)
    assert.equal(sha256(d.bytes), digestHex(published.oid))
    assert.equal((await download(w, 'south', published.oid)).locker, 'south')
    assert.equal((await download(w, 'west', published.oid)).locker, 'west')
    const where = await (await request(`${w.portal.url}/v1/objects/${published.oid}/where`, { dispatcher: w.users.east })).body.json() as any
    assert.equal(where.skipped[0].name, 'east')
  })

  it('an upload with east\'s locker down: stored in the others, east reported skipped', async () => {
    const p = await upload(w.portal, randomBytes(100_000))
    assert.deepEqual(p.replicas.map((r: any) => r.name), ['west', 'south'])
    assert.deepEqual(p.skipped.map((s: any) => s.name), ['east'])
    assert.equal((await download(w, 'east', p.oid)).locker, 'west')
  })

  it('west\'s locker down too: east\'s user goes to south; south\'s user stays', async () => {
    await w.servers.west.stop()
    assert.equal((await download(w, 'east', published.oid)).locker, 'south')
    assert.equal((await download(w, 'south', published.oid)).locker, 'south')
  })

  it('every locker down: 503', async () => {
    await w.servers.south.stop()
    const res = await request(`${w.portal.url}/d/${published.oid}`, { dispatcher: w.users.west })
    const body = await res.body.json() as any
    assert.equal(res.statusCode, 503)
    assert.equal(body.error.code, 'ERR_NO_LOCKER')
    const up = await request(`${w.portal.url}/v1/objects`, { method: 'POST', body: 'abc' })
    const answer = await up.body.json() as any
    assert.equal(up.statusCode, 503)
    assert.equal(answer.error.code, 'ERR_NO_LOCKER')
  })
})

describe('portal: a locker answering 503', () => {
  let w: World
  before(async () => { w = await world({ overloaded: 'west' }) })
  after(async () => { await w?.stop() })

  it('is skipped: west\'s user goes to south (5), the others to their own', async () => {
    const data = randomBytes(MiB / 2)
    // west is first in the policy: it takes the upload, but cannot send (admission refuses its
    // egress), so the other copies are uploaded from the portal's spool instead of distributed.
    const p = await upload(w.portal, data)
    assert.deepEqual(p.replicas.map((r: any) => [r.name, r.via]), [['west', 'put'], ['east', 'put'], ['south', 'put']])
    const probe = await request(`${w.portal.url}/v1/objects/${p.oid}/where`, { dispatcher: w.users.west })
    const where = await probe.body.json() as any
    assert.equal(where.name, 'south')
    assert.deepEqual(where.skipped.map((s: any) => s.name), ['west'])
    assert.match(where.skipped[0].reason, /503/)
    const d = await download(w, 'west', p.oid)
    assert.equal(d.locker, 'south')
    assert.equal(sha256(d.bytes), digestHex(p.oid))
    assert.equal((await download(w, 'east', p.oid)).locker, 'east')
    assert.equal((await download(w, 'south', p.oid)).locker, 'south')
  })
})

describe('portal: pages and input', () => {
  let w: World
  before(async () => { w = await world({ replicas: 2 }) })
  after(async () => { await w?.stop() })

  it('GET / is the upload page; /d/{oid}?page=1 the download page', async () => {
    const res = await request(`${w.portal.url}/`)
    const html = await res.body.text()
    assert.equal(res.statusCode, 200)
    assert.match(res.headers['content-type'] as string, /^text\/html/)
    assert.match(html, /<input type="file"/)
    assert.match(html, /fetch\('\/v1\/objects\?name='/)
    const p = await upload(w.portal, Buffer.from('hello <world>'), '<b>x</b>.txt')
    assert.equal(p.replicas.length, 2)
    const page = await request(p.page)
    const text = await page.body.text()
    assert.equal(page.statusCode, 200)
    assert.match(text, new RegExp(`href="${w.portal.url}/d/${p.oid}"`))
    assert.ok(text.includes('&lt;b&gt;x&lt;/b&gt;.txt') && !text.includes('<b>x</b>'), 'the name is escaped')
  })

  it('an empty upload is an object too', async () => {
    const p = await upload(w.portal, Buffer.alloc(0))
    assert.equal(p.size, 0)
    const d = await download(w, 'south', p.oid)
    assert.equal(d.bytes.length, 0)
  })
})

describe('berth portal serve', () => {
  let w: World
  before(async () => { w = await world({ replicas: 1 }) })
  after(async () => { await w?.stop() })

  it('runs from a config file (key files relative to it; --alto and --copies override it): upload, then each region redirected to its own copy\'s nearest locker', async () => {
    const config = join(w.dir, 'portal.json')
    for (const region of Object.keys(REGIONS) as Region[]) await writeFile(join(w.dir, `${region}.jwk`), JSON.stringify(w.keys[region].privateJwk))
    await writeFile(config, JSON.stringify({
      alto: 'http://127.0.0.1:1',
      replicas: 3,
      lockers: (Object.keys(REGIONS) as Region[]).map(region => ({ name: region, url: w.servers[region].url, locker: 'pub', ownerKeyFile: `${region}.jwk` }))
    }))
    const child = spawn(process.execPath, [BERTH_BIN, 'portal', 'serve', '--json', '--listen', '127.0.0.1:0', '--config', config, '--alto', w.alto.url, '--copies', '2', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
    const stop = stopper(child)
    try {
      const info = await firstJsonLine(child, () => stderr) as any
      assert.equal(info.replicas, 2)
      assert.deepEqual(info.lockers, ['east', 'west', 'south'])
      const res = await request(`${info.url}/v1/objects?name=a.txt`, { method: 'POST', body: 'from the CLI' })
      const p = await res.body.json() as any
      assert.equal(res.statusCode, 201, JSON.stringify(p))
      // Two copies: west (cheapest on average), then east (brings east's users from 10 to 0).
      assert.deepEqual(p.replicas.map((r: any) => r.name), ['west', 'east'])
      for (const [region, expected] of [['east', 'east'], ['west', 'west'], ['south', 'west']] as const) {
        const r = await request(`${info.url}/d/${p.oid}`, { dispatcher: w.users[region] })
        await r.body.dump()
        assert.equal(r.statusCode, 302)
        assert.equal(r.headers['berth-locker'], expected, `${region}'s user`)
      }
    } finally {
      assert.equal(await stop(), 0, stderr)
    }
  })

  it('a bad config: one-line reason, non-zero exit', async () => {
    const config = join(w.dir, 'bad.json')
    await writeFile(config, JSON.stringify({ alto: 'http://127.0.0.1:1', lockers: [] }))
    const r = await runBerth(['portal', 'serve', '--config', config, '--listen', '127.0.0.1:0'], { timeoutMs: 20_000 })
    assert.notEqual(r.code, 0)
    assert.match(r.stderr, /^berth: ERR_INVALID_CONFIG: .*lockers/m)
  })
})
