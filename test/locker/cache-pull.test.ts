/**
 * Pull-through caching (issue 5, scope 5): a cache locker fetches what it lacks once — from an
 * upstream locker (verified against the OID) or from a foreign HTTP origin (plain nginx, the
 * locker naming the bytes itself) — and serves every later request from its own store. Bytes
 * moved from the origin are measured at the origin: the origin locker's bytes-out counter, and
 * nginx's access log (status and body bytes per request).
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createServer } from 'node:net'
import { mkdir, readFile, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startNginx, type Nginx } from '../../bench/lib/anchors.ts'
import { createAltoServer, type AltoServer } from '../../src/overlay/alto/server.ts'
import { createLockerServer, type CacheOptions, type LockerServer } from '../../src/locker/server.ts'
import { generateSigningKey, issueAccessToken, issueAdminToken, type SigningKey } from '../../src/core/tokens.ts'
import { LockerClient } from '../../src/sdk/locker-client.ts'
import { oidOf, pseudoRandom, readAll, tempDir } from '../agent/_helpers.ts'
import { ensurePackages } from '../interop/_apt.ts'
import { startLockerServers, type TestLocker, type TestServer } from './_lockers.ts'

const MiB = 1024 * 1024
const nginxMissing = ensurePackages(['/usr/sbin/nginx'], ['nginx-light'])

async function metric (url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  return text.split('\n').filter(l => l.startsWith(name)).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0)
}
const bytesOut = async (s: LockerServer): Promise<number> => await metric(s.url, 'berth_locker_bytes_out_total')

/** A loopback port nothing listens on (an origin that is down). */
async function deadPort (): Promise<number> {
  const srv = createServer()
  await new Promise<void>(resolve => srv.listen(0, '127.0.0.1', resolve))
  const port = (srv.address() as { port: number }).port
  await new Promise(resolve => srv.close(resolve))
  return port
}

/** A locker server whose lockers are caches, with one locker `edge` and a token for it. */
async function startCache (dir: string, cache: CacheOptions, o: { allowPrivatePlaces?: boolean } = {}): Promise<{ server: LockerServer, client: LockerClient, token: string, key: SigningKey }> {
  const admin = await generateSigningKey()
  const server = await createLockerServer({ listen: '127.0.0.1:0', dir, adminKey: admin.publicJwk, allowPrivatePlaces: o.allowPrivatePlaces ?? true, cache })
  await server.start()
  const client = new LockerClient(server.url)
  const key = await generateSigningKey()
  await client.createLocker(await issueAdminToken(admin), { name: 'edge', key: key.publicJwk, quota: 1024 * MiB })
  return { server, client, key, token: await issueAccessToken(key, { locker: 'edge', ops: ['read', 'status'], objects: 'all', ttlSeconds: 600 }) }
}

/** A locker `pub` on `server` holding `objects`, and an upstream endpoint for it (a read token). */
async function publish (server: TestServer, objects: Buffer[]): Promise<{ pub: TestLocker, upstream: { uri: string, token: string } }> {
  const pub = await server.locker('pub')
  const w = await pub.token()
  for (const o of objects) await pub.client.put('pub', oidOf(o), o, { token: w, size: o.length })
  return { pub, upstream: { uri: pub.uri, token: await pub.token(['read']) } }
}

describe('pull-through cache: a locker origin', async () => {
  let env: Awaited<ReturnType<typeof startLockerServers>>
  let s: TestServer[]
  let pub: TestLocker
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let cache: Awaited<ReturnType<typeof startCache>>
  const objects = [pseudoRandom(12 * MiB + 777, 51), pseudoRandom(9 * MiB + 3, 52)]
  const oids = objects.map(oidOf)

  before(async () => {
    tmp = await tempDir('berth-cache-')
    env = await startLockerServers(1)
    s = env.servers
    const published = await publish(s[0], objects)
    pub = published.pub
    // The first upstream is down: the cache skips it.
    cache = await startCache(join(tmp.dir, 'cache'), { upstreams: [{ uri: `locker://127.0.0.1:${await deadPort()}/pub`, token: 'unused' }, published.upstream] })
  })
  after(async () => { await cache.server.stop(); await env.stop(); await tmp.cleanup() })

  it('the first GET moves the object from the origin once; the second moves no bytes from it', async () => {
    const size = objects[0].length
    const t0 = await bytesOut(s[0].server)
    const first = await cache.client.get('edge', oids[0], { token: cache.token })
    assert.equal(first.size, size)
    assert.ok((await readAll(first.stream)).equals(objects[0]), 'first GET: the object, verified')
    const t1 = await bytesOut(s[0].server)
    assert.equal(t1 - t0, size, 'the origin sent the object once')
    const second = await cache.client.get('edge', oids[0], { token: cache.token })
    assert.ok((await readAll(second.stream)).equals(objects[0]), 'second GET: the same bytes')
    const t2 = await bytesOut(s[0].server)
    assert.equal(t2 - t1, 0, 'the second GET moved no bytes from the origin')
    // Held by the cache locker (with its TTL), within its quota.
    const status = await cache.client.status('edge', { token: cache.token })
    assert.equal(status.used, size)
    console.log(`# locker origin: GET 1 moved ${t1 - t0} bytes from the origin, GET 2 moved ${t2 - t1} (object ${size} bytes)`)
  })

  it('two concurrent GETs share one fetch; a later GET is local', async () => {
    const size = objects[1].length
    const t0 = await bytesOut(s[0].server)
    const [a, b] = await Promise.all([0, 1].map(async () => await readAll((await cache.client.get('edge', oids[1], { token: cache.token })).stream)))
    assert.ok(a.equals(objects[1]) && b.equals(objects[1]), 'both requesters got the object')
    const t1 = await bytesOut(s[0].server)
    assert.equal(t1 - t0, size, 'one fetch from the origin for both')
    assert.ok((await readAll((await cache.client.get('edge', oids[1], { token: cache.token })).stream)).equals(objects[1]))
    assert.equal(await bytesOut(s[0].server) - t1, 0, 'the third GET moved no bytes from the origin')
    console.log(`# locker origin, concurrent pair: ${t1 - t0} bytes from the origin for 2 GETs of ${size}`)
  })

  it('an object no upstream holds is 404 (502 while one upstream is down); without a read token the cache fetches nothing', async () => {
    const missing = oidOf(pseudoRandom(1000, 53))
    // One upstream down, the other without it: the down one might hold it, so a source error.
    await assert.rejects(cache.client.get('edge', missing, { token: cache.token }), (e: Error & { code?: string }) => e.code === 'ERR_SOURCE' && /holds no object/.test(e.message))
    const single = await startCache(join(tmp.dir, 'cache-single'), { upstreams: [{ uri: pub.uri, token: await pub.token(['read']) }] })
    try {
      await assert.rejects(single.client.get('edge', missing, { token: single.token }), (e: Error & { code?: string }) => e.code === 'ERR_NOT_FOUND')
    } finally { await single.server.stop() }
    const t0 = await bytesOut(s[0].server)
    const wrong = await issueAccessToken(await generateSigningKey(), { locker: 'edge', ops: ['read'], objects: 'all', ttlSeconds: 60 })
    await assert.rejects(cache.client.get('edge', oids[0], { token: wrong }))
    assert.equal(await bytesOut(s[0].server) - t0, 0)
  })

  it('an origin that is down on the first request: a clear error (502 ERR_SOURCE naming the upstream)', async () => {
    const down = await startCache(join(tmp.dir, 'cache-down'), { upstreams: [{ uri: `locker://127.0.0.1:${await deadPort()}/pub`, token: 'x' }] })
    try {
      await assert.rejects(down.client.get('edge', oids[0], { token: down.token }), (e: Error & { code?: string }) => {
        assert.equal(e.code, 'ERR_SOURCE')
        assert.match(e.message, /no upstream of this cache could give/)
        return true
      })
      assert.equal((await down.client.status('edge', { token: down.token })).used, 0, 'nothing stored')
    } finally { await down.server.stop() }
  })
})

describe('pull-through cache: a foreign origin (plain nginx)', { skip: nginxMissing !== undefined ? `SKIPPED LOUDLY: ${nginxMissing}` : false }, async () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let nginx: Nginx
  let accessLog: string
  let cache: Awaited<ReturnType<typeof startCache>>
  const data = pseudoRandom(10 * MiB + 99, 61)
  const oid = oidOf(data)

  /** nginx's access log: one [status, body bytes] per request. */
  const requests = async (): Promise<Array<[number, number]>> => (await readFile(accessLog, 'utf8').catch(() => '')).split('\n').filter(l => l !== '').map(l => {
    const m = /" (\d{3}) (\d+) "/.exec(l)
    assert.ok(m !== null, `an access log line: ${l}`)
    return [Number(m[1]), Number(m[2])]
  })
  const viaCache = async (url: string, c = cache): Promise<Response> => await fetch(`${c.server.url}/v1/lockers/edge/cache?url=${encodeURIComponent(url)}`, { headers: { authorization: `Bearer ${c.token}` } })

  before(async () => {
    tmp = await tempDir('berth-cache-nginx-')
    await mkdir(join(tmp.dir, 'www'), { recursive: true })
    await writeFile(join(tmp.dir, 'www', 'video.bin'), data)
    accessLog = join(tmp.dir, 'access.log')
    nginx = await startNginx(join(tmp.dir, 'www', 'video.bin'), join(tmp.dir, 'nginx'), { accessLog })
    cache = await startCache(join(tmp.dir, 'cache'), { fresh: 300 })
  })
  after(async () => { await cache.server.stop(); await nginx.stop(); await tmp.cleanup() })

  it('fetched through the cache twice: nginx sends it once; both answers verified, ETag = OID', async () => {
    const first = await viaCache(nginx.url)
    assert.equal(first.status, 200)
    assert.equal(first.headers.get('berth-oid'), oid, 'the locker named the bytes with their OID')
    assert.equal(first.headers.get('etag'), `"${oid}"`)
    assert.ok(Buffer.from(await first.arrayBuffer()).equals(data))
    const afterFirst = await requests()
    assert.deepEqual(afterFirst, [[200, data.length]], 'nginx served the file once')
    const second = await viaCache(nginx.url)
    assert.equal(second.status, 200)
    assert.equal(second.headers.get('berth-oid'), oid)
    const body = Buffer.from(await second.arrayBuffer())
    assert.ok(body.equals(data) && oidOf(body) === oid, 'second answer: the same bytes, hashing to the OID')
    assert.deepEqual(await requests(), afterFirst, 'the second download moved no bytes from nginx (no request at all)')
    // The object is the cache locker's like any other: readable by its OID.
    const got = await cache.client.get('edge', oid, { token: cache.token })
    assert.ok((await readAll(got.stream)).equals(data))
    assert.deepEqual(await requests(), afterFirst)
    console.log(`# nginx origin: ${afterFirst.length} request, ${afterFirst[0][1]} bytes from nginx for 2 downloads through the cache (+1 by OID)`)
  })

  it('a stale copy is revalidated with a conditional GET: nginx answers 304, no bytes', async () => {
    const stale = await startCache(join(tmp.dir, 'cache-stale'), { fresh: 0.001 })
    try {
      const before = (await requests()).length
      assert.ok(Buffer.from(await (await viaCache(nginx.url, stale)).arrayBuffer()).equals(data))
      await new Promise(resolve => setTimeout(resolve, 5))
      const again = await viaCache(nginx.url, stale)
      assert.equal(again.headers.get('berth-oid'), oid)
      assert.ok(Buffer.from(await again.arrayBuffer()).equals(data))
      assert.deepEqual((await requests()).slice(before), [[200, data.length], [304, 0]])
    } finally { await stale.server.stop() }
  })

  it('an origin that is down: a clear error, nothing stored', async () => {
    const res = await viaCache(`http://127.0.0.1:${await deadPort()}/video.bin`)
    assert.equal(res.status, 502)
    const body = await res.json() as { error?: { code?: string, message?: string }, code?: string, message?: string }
    assert.match(JSON.stringify(body), /ERR_SOURCE/)
    assert.equal((await cache.client.status('edge', { token: cache.token })).objects, 1)
  })

  it('private places are refused when the server does not allow them (SSRF guard): nginx is not contacted', async () => {
    const guarded = await startCache(join(tmp.dir, 'cache-guarded'), {}, { allowPrivatePlaces: false })
    try {
      const before = (await requests()).length
      const res = await viaCache(nginx.url, guarded)
      assert.equal(res.status, 403)
      assert.match(await res.text(), /ERR_PLACE_NOT_ALLOWED/)
      assert.equal((await requests()).length, before)
    } finally { await guarded.server.stop() }
  })

  it('a token limited to some objects cannot make the cache fetch a foreign resource', async () => {
    const before = (await requests()).length
    const fresh = await startCache(join(tmp.dir, 'cache-scoped'), {})
    try {
      const limited = await issueAccessToken(fresh.key, { locker: 'edge', ops: ['read'], objects: { oids: [oid] }, ttlSeconds: 60 })
      const res = await viaCache(nginx.url, { ...fresh, token: limited })
      assert.equal(res.status, 403)
      assert.match(await res.text(), /ERR_TOKEN_SCOPE/)
    } finally { await fresh.server.stop() }
    assert.equal((await requests()).length, before)
  })

  it('a URL that names an OID is verified against it', async () => {
    await writeFile(join(tmp.dir, 'www', oid), Buffer.concat([data.subarray(0, 1000), Buffer.from('tampered')]))
    const res = await viaCache(nginx.url.replace(/[^/]+$/, oid))
    assert.equal(res.status, 409)
    assert.match(await res.text(), /ERR_HASH_MISMATCH/)
  })
})

describe('pull-through cache: the nearest upstream by ALTO cost', async () => {
  let west: Awaited<ReturnType<typeof startLockerServers>>, south: Awaited<ReturnType<typeof startLockerServers>>
  let alto: AltoServer
  let tmp: Awaited<ReturnType<typeof tempDir>>, cache: Awaited<ReturnType<typeof startCache>>
  const objects = [pseudoRandom(6 * MiB + 5, 71), pseudoRandom(5 * MiB + 9, 72)]
  const oids = objects.map(oidOf)

  before(async () => {
    tmp = await tempDir('berth-cache-alto-')
    // Three regions on loopback: the cache in east; south is one hop (cost 1), west costs 10.
    alto = await createAltoServer({
      listen: '127.0.0.1:0',
      topology: { pids: { east: ['127.1.0.0/16'], west: ['127.2.0.0/16'], south: ['127.3.0.0/16'] }, links: [{ from: 'east', to: 'west', cost: 10 }, { from: 'east', to: 'south', cost: 1 }, { from: 'west', to: 'south', cost: 10 }] }
    })
    await alto.start()
    west = await startLockerServers(1, { listen: '127.2.0.1:0' })
    south = await startLockerServers(1, { listen: '127.3.0.1:0' })
    const upstreams = []
    for (const env of [west, south]) upstreams.push((await publish(env.servers[0], objects)).upstream)
    // West is listed first: only ALTO puts south ahead.
    cache = await startCache(join(tmp.dir, 'cache'), { upstreams, alto: alto.url, from: '127.1.0.1' })
  })
  // south may have been stopped by the test already: stopping it again must not keep the rest from stopping.
  after(async () => { await cache.server.stop(); await west.stop(); await south.stop().catch(() => {}); await alto.stop(); await tmp.cleanup() })

  it('pulls from the cheapest upstream; with it down, from the next', async () => {
    const w0 = await bytesOut(west.servers[0].server)
    const s0 = await bytesOut(south.servers[0].server)
    assert.ok((await readAll((await cache.client.get('edge', oids[0], { token: cache.token })).stream)).equals(objects[0]))
    assert.equal(await bytesOut(south.servers[0].server) - s0, objects[0].length, 'south (cost 1) sent it')
    assert.equal(await bytesOut(west.servers[0].server) - w0, 0, 'west (cost 10, listed first) sent nothing')
    await south.servers[0].server.stop()
    assert.ok((await readAll((await cache.client.get('edge', oids[1], { token: cache.token })).stream)).equals(objects[1]))
    assert.equal(await bytesOut(west.servers[0].server) - w0, objects[1].length, 'with south down, west sent the next one')
  })
})
