/**
 * Objects read while they arrive, SAILOR's distribute (relay, cascade, delivery) and distribution
 * dedup (links for lockers here, challenges for remote sources and uploaders), on real locker
 * servers over loopback with disk stores. Each test holds the source at a point and checks who
 * got what by then, so none of them depends on timing.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { Readable } from 'node:stream'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import { fileProver } from '../../src/sdk/locker-client.ts'
import { oidOf, pseudoRandom, readAll, startAgent, tempDir } from '../agent/_helpers.ts'
import { startLockerServers, startOrigin, type TestServer } from './_lockers.ts'

const MiB = 1024 * 1024

/** Resolves once `cond` holds (polled); rejects after `ms` with `what`, so a broken pipeline fails instead of hanging. */
async function until (cond: () => boolean, what: string, ms = 30_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
}

async function withTimeout<T> (p: Promise<T>, what: string, ms = 30_000): Promise<T> {
  let timer: NodeJS.Timeout | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => { timer = setTimeout(() => reject(new Error(`timed out waiting for ${what}`)), ms) })])
  } finally { clearTimeout(timer) }
}

async function metric (url: string, name: string): Promise<number> {
  const text = await (await fetch(`${url}/metrics`)).text()
  return text.split('\n').filter(l => l.startsWith(name)).reduce((sum, l) => sum + Number(l.split(' ').pop()), 0)
}

describe('locker: reads while arriving, distribute and dedup', async () => {
  let env: Awaited<ReturnType<typeof startLockerServers>>
  let s: TestServer[]
  before(async () => { env = await startLockerServers(3); s = env.servers })
  after(async () => { await env.stop() })

  it('a GET started when the PUT is 10% done gets its first bytes before the PUT ends', async () => {
    const alice = await s[0].locker('alice')
    const token = await alice.token()
    const size = 64 * MiB
    const data = pseudoRandom(size, 7)
    const oid = oidOf(data)
    let sent = 0
    let release!: () => void
    const held = new Promise<void>(resolve => { release = resolve })
    async function * body (): AsyncGenerator<Uint8Array> {
      for (let at = 0; at < size; at += MiB) {
        // The upload stops just past 10% until the reader has its first bytes.
        if (at >= size / 10) await held
        sent += MiB
        yield data.subarray(at, at + MiB)
      }
    }
    const putting = alice.client.put('alice', oid, body(), { token, size })
    await until(() => sent >= size / 10, 'the upload to reach 10%')
    const got = await withTimeout(alice.client.get('alice', oid, { token }), 'the GET to answer')
    assert.equal(got.size, size)
    const it = got.stream[Symbol.asyncIterator]()
    const first = await withTimeout(it.next(), 'the first bytes') as IteratorResult<Buffer>
    assert.ok(first.done !== true && first.value.length > 0)
    assert.ok(sent < size, `the first bytes came while the upload was at ${sent} of ${size}`)
    release()
    const parts: Buffer[] = [first.value]
    for (let r = await it.next(); r.done !== true; r = await it.next()) parts.push(r.value as Buffer)
    assert.ok(Buffer.concat(parts).equals(data), 'the reader got the whole object, in order')
    assert.equal((await putting).size, size)
  })

  it('a reader of an upload that turns out wrong sees its response broken off, and nothing is stored', async () => {
    const lock = await s[0].locker('wrongbytes')
    const token = await lock.token()
    const data = pseudoRandom(24 * MiB, 8)
    const claimed = oidOf(pseudoRandom(1024, 9))
    let release!: () => void
    const held = new Promise<void>(resolve => { release = resolve })
    let sent = 0
    async function * body (): AsyncGenerator<Uint8Array> {
      for (let at = 0; at < data.length; at += MiB) { if (at >= 12 * MiB) await held; sent += MiB; yield data.subarray(at, at + MiB) }
    }
    const putting = lock.client.put('wrongbytes', claimed, body(), { token, size: data.length }).then(() => 'stored', (err: { code?: string }) => err.code)
    await until(() => sent >= 12 * MiB, 'the upload to reach 12 MiB')
    const got = await withTimeout(lock.client.get('wrongbytes', claimed, { token }), 'the GET to answer')
    release()
    await assert.rejects(readAll(got.stream), 'the reader must not see a complete object')
    assert.equal(await putting, 'ERR_HASH_MISMATCH')
    assert.equal(await lock.client.head('wrongbytes', claimed, { token }), undefined)
  })

  it('a relay through 3 cascaded lockers delivers its first byte at the end before the source has sent half', async () => {
    const size = 32 * MiB
    const data = pseudoRandom(size, 11)
    const oid = oidOf(data)
    const origin = await startOrigin(data)
    let open!: () => void
    origin.gateAt = size / 2
    origin.gate = new Promise<void>(resolve => { open = resolve })
    try {
      const l1 = await s[0].locker('relay1')
      const l2 = await s[1].locker('relay2')
      const l3 = await s[2].locker('relay3')
      const t1 = await l1.client.distribute('relay1', { oid, src: origin.url }, { token: await l1.token() })
      const t2 = await l2.client.distribute('relay2', { oid, src: { uri: l1.uri, token: await l1.token(['read']) } }, { token: await l2.token() })
      const t3 = await l3.client.distribute('relay3', { oid, src: { uri: l2.uri, token: await l2.token(['read']) } }, { token: await l3.token() })
      const token3 = await l3.token(['read'])
      const got = await withTimeout(l3.client.get('relay3', oid, { token: token3 }), 'the end of the chain to answer')
      const it = got.stream[Symbol.asyncIterator]()
      const first = await withTimeout(it.next(), 'the first byte at the end of the chain') as IteratorResult<Buffer>
      assert.ok(first.done !== true)
      assert.ok(origin.sent <= size / 2, `the source had sent ${origin.sent} of ${size} bytes`)
      open()
      const parts: Buffer[] = [first.value]
      for (let r = await it.next(); r.done !== true; r = await it.next()) parts.push(r.value as Buffer)
      assert.ok(Buffer.concat(parts).equals(data))
      for (const [l, t] of [[l1, t1], [l2, t2], [l3, t3]] as const) {
        const done = await l.client.waitTransfer(l.name, t.id, { token: await l.token() })
        assert.equal(done.state, 'done', JSON.stringify(done.error))
        assert.equal(done.how, 'fetch')
        assert.equal(done.bytesIn, size)
      }
      assert.equal(origin.sent, size, 'the source sent the object once')
    } finally {
      open?.()
      await origin.close()
    }
  })

  it('10 distributes of one object to 10 destinations read the source once', async () => {
    const size = 8 * MiB
    const data = pseudoRandom(size, 12)
    const oid = oidOf(data)
    const origin = await startOrigin(data)
    try {
      const relay = await s[0].locker('fanout')
      const token = await relay.token()
      const dsts = await Promise.all(Array.from({ length: 10 }, async (_, i) => await s[1 + (i % 2)].locker(`fan-dst-${i}`)))
      const started = await Promise.all(dsts.map(async d => await relay.client.distribute('fanout', { oid, src: origin.url, dst: { uri: d.uri, token: await d.token(['write']) } }, { token })))
      const ended = await Promise.all(started.map(async t => await relay.client.waitTransfer('fanout', t.id, { token })))
      for (const t of ended) assert.equal(t.state, 'done', JSON.stringify(t.error))
      assert.equal(ended.filter(t => t.how === 'fetch').length, 1, 'one distribute fetched; the others joined it')
      assert.equal(origin.requests, 1)
      assert.equal(origin.sent, size, 'the source sent the object once')
      for (const d of dsts) {
        const got = await d.client.get(d.name, oid, { token: await d.token(['read']) })
        assert.ok((await readAll(got.stream)).equals(data))
      }
    } finally {
      await origin.close()
    }
  })

  it('putting an object another locker here holds moves no object bytes: the uploader proves it has them', async () => {
    const data = pseudoRandom(3 * MiB + 17, 13)
    const oid = oidOf(data)
    const a = await s[0].locker('dedup-a')
    const b = await s[0].locker('dedup-b')
    await a.client.put('dedup-a', oid, data, { token: await a.token() })
    const dir = await tempDir()
    try {
      const file = join(dir.dir, 'object')
      await writeFile(file, data)
      const before = await metric(s[0].server.url, 'berth_locker_bytes_in_total')
      let read = 0
      const body = new Readable({ read () { read++; this.push(data); this.push(null) } })
      const stored = await b.client.put('dedup-b', oid, body, { token: await b.token(), size: data.length, prove: fileProver(file) })
      assert.equal(stored.linked, true)
      assert.equal(read, 0, 'the body was never read')
      assert.equal(await metric(s[0].server.url, 'berth_locker_bytes_in_total'), before, 'no object bytes came in')
      const got = await b.client.get('dedup-b', oid, { token: await b.token() })
      assert.ok((await readAll(got.stream)).equals(data))
      const status = await b.client.status('dedup-b', { token: await b.token() })
      assert.equal(status.used, data.length, "the link counts against b's quota")
    } finally { await dir.cleanup() }
  })

  it('1,000 challenge attempts by a client that lacks the bytes link nothing', async () => {
    const data = pseudoRandom(MiB, 14)
    const oid = oidOf(data)
    const a = await s[0].locker('secret-a')
    await a.client.put('secret-a', oid, data, { token: await a.token() })
    const mallory = await s[0].locker('mallory')
    const token = await mallory.token()
    const url = `${s[0].server.url}/v1/lockers/mallory/objects/${oid}`
    const statuses = new Map<string, number>()
    const tally = (k: string): void => { statuses.set(k, (statuses.get(k) ?? 0) + 1) }
    // Guessing answers: random, all-zero bytes of the right size, a replayed challenge, another
    // object's challenge; each try gets a fresh challenge (a wrong answer burns it).
    const other = pseudoRandom(4096, 15)
    const otherOid = oidOf(other)
    await mallory.client.put('mallory', otherOid, other, { token })
    for (let i = 0; i < 1000; i++) {
      const c = await mallory.client.challenge('mallory', oid, { token })
      assert.ok(c !== undefined)
      let answer: string
      let id = c.id
      const kind = i % 4
      if (kind === 0) answer = randomBytes(32).toString('hex')
      else if (kind === 1) answer = await fileProver('/dev/zero')(c).catch(() => randomBytes(32).toString('hex'))
      else if (kind === 2) { answer = randomBytes(32).toString('hex'); await fetch(url, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'berth-proof': `${id}:${answer}` } }) }
      else { const oc = (await mallory.client.challenge('mallory', otherOid, { token }))!; id = oc.id; answer = randomBytes(32).toString('hex') }
      const res = await fetch(url, { method: 'PUT', headers: { authorization: `Bearer ${token}`, 'berth-proof': `${id}:${answer}` } })
      const body = await res.json() as { error?: { code: string }, linked?: boolean }
      tally(`${res.status} ${body.error?.code ?? 'linked'}`)
    }
    assert.deepEqual([...statuses], [['403 ERR_PROOF', 1000]])
    assert.equal(await mallory.client.head('mallory', oid, { token }), undefined, 'mallory holds nothing')
    const status = await mallory.client.status('mallory', { token })
    assert.equal(status.objects, 1)
  })

  it('distribute from a locker here that the requester may read links it; without read access it fails and links nothing', async () => {
    const data = pseudoRandom(2 * MiB, 16)
    const oid = oidOf(data)
    const src = await s[1].locker('local-src')
    const dst = await s[1].locker('local-dst')
    await src.client.put('local-src', oid, data, { token: await src.token() })
    const before = await metric(s[1].server.url, 'berth_locker_bytes_in_total')
    const denied = await dst.client.distribute('local-dst', { oid, src: { uri: src.uri, token: await src.token(['status']) } }, { token: await dst.token() })
    const deniedEnd = await dst.client.waitTransfer('local-dst', denied.id, { token: await dst.token() })
    assert.equal(deniedEnd.state, 'failed')
    assert.equal(deniedEnd.error?.code, 'ERR_TOKEN_SCOPE')
    assert.equal(await dst.client.head('local-dst', oid, { token: await dst.token() }), undefined)
    const t = await dst.client.distribute('local-dst', { oid, src: { uri: src.uri, token: await src.token(['read']) } }, { token: await dst.token() })
    const end = await dst.client.waitTransfer('local-dst', t.id, { token: await dst.token() })
    assert.equal(end.state, 'done', JSON.stringify(end.error))
    assert.equal(end.how, 'link')
    assert.equal(end.bytesIn, 0)
    assert.equal(await metric(s[1].server.url, 'berth_locker_bytes_in_total'), before)
    assert.ok((await readAll((await dst.client.get('local-dst', oid, { token: await dst.token() })).stream)).equals(data))
  })

  it('a remote source that proves it holds the bytes is linked; one serving other bytes is fetched from and fails verification', async () => {
    const data = pseudoRandom(5 * MiB, 17)
    const oid = oidOf(data)
    const here = await s[2].locker('have-it')
    await here.client.put('have-it', oid, data, { token: await here.token() })
    const remote = await s[0].locker('remote-src')
    await remote.client.put('remote-src', oid, data, { token: await remote.token() })
    const want = await s[2].locker('want-it')
    const wtoken = await want.token()
    // A remote locker: challenged through its proof endpoint.
    const t1 = await want.client.distribute('want-it', { oid, src: { uri: remote.uri, token: await remote.token(['read']) } }, { token: wtoken })
    const e1 = await want.client.waitTransfer('want-it', t1.id, { token: wtoken })
    assert.equal(e1.state, 'done', JSON.stringify(e1.error))
    assert.equal(e1.how, 'challenge')
    assert.equal(e1.bytesIn, 0)
    // An HTTP mirror with the right bytes: random ranges compared.
    const good = await startOrigin(data)
    const liar = Buffer.from(data)
    liar.fill(0, 4096)
    const bad = await startOrigin(liar)
    try {
      const w2 = await s[2].locker('want-2')
      const t2 = await w2.client.distribute('want-2', { oid, src: good.url }, { token: await w2.token() })
      const e2 = await w2.client.waitTransfer('want-2', t2.id, { token: await w2.token() })
      assert.equal(e2.how, 'challenge')
      assert.ok(good.sent < 128 * 1024, `a proof moved ${good.sent} bytes`)
      const w3 = await s[2].locker('want-3')
      const t3 = await w3.client.distribute('want-3', { oid, src: bad.url }, { token: await w3.token() })
      const e3 = await w3.client.waitTransfer('want-3', t3.id, { token: await w3.token() })
      assert.equal(e3.how, 'fetch', 'no proof: the bytes were fetched')
      assert.equal(e3.state, 'failed')
      assert.equal(e3.error?.code, 'ERR_HASH_MISMATCH')
      assert.equal(await w3.client.head('want-3', oid, { token: await w3.token() }), undefined)
    } finally {
      await good.close()
      await bad.close()
    }
  })

  it('distribute takes an object from an agent (berth:// hint) and pushes it to another locker', async () => {
    const agent = await startAgent()
    try {
      const data = pseudoRandom(6 * MiB, 18)
      const put = await new AgentClient(agent.url).put({ bytes: data })
      const relay = await s[0].locker('from-agent')
      const dst = await s[1].locker('agent-dst')
      const t = await relay.client.distribute('from-agent', { oid: put.oid, src: agent.selfHint.uri, dst: { uri: dst.uri, token: await dst.token(['write']) } }, { token: await relay.token() })
      const end = await relay.client.waitTransfer('from-agent', t.id, { token: await relay.token() })
      assert.equal(end.state, 'done', JSON.stringify(end.error))
      assert.equal(end.delivered, 'sent')
      assert.equal(end.bytesOut, data.length)
      assert.ok((await readAll((await dst.client.get('agent-dst', put.oid, { token: await dst.token() })).stream)).equals(data))
    } finally { await agent.stop() }
  })

  it('a distribute naming another source cannot ride on an arrival: it is proved over the whole object, and a liar gets nothing', async () => {
    const size = 16 * MiB
    const data = pseudoRandom(size, 19)
    const oid = oidOf(data)
    const origin = await startOrigin(data)
    let open!: () => void
    origin.gateAt = size / 2
    origin.gate = new Promise<void>(resolve => { open = resolve })
    // The liar knows the first half (say, a public header) and nothing after it.
    const lie = Buffer.concat([data.subarray(0, size / 2), Buffer.alloc(size / 2)])
    const liar = await startOrigin(lie)
    try {
      const honest = await s[1].locker('arrival-honest')
      const thief = await s[1].locker('arrival-thief')
      await honest.client.distribute('arrival-honest', { oid, src: origin.url }, { token: await honest.token() })
      const t = await thief.client.distribute('arrival-thief', { oid, src: liar.url }, { token: await thief.token() })
      // While the object arrives the thief's locker has nothing to read.
      const res = await fetch(`${s[1].server.url}/v1/lockers/arrival-thief/objects/${oid}`, { headers: { authorization: `Bearer ${await thief.token()}` } })
      assert.equal(res.status, 404)
      await res.arrayBuffer()
      open()
      const end = await thief.client.waitTransfer('arrival-thief', t.id, { token: await thief.token() })
      assert.equal(end.state, 'failed')
      assert.notEqual(end.how, 'challenge')
      assert.equal(await thief.client.head('arrival-thief', oid, { token: await thief.token() }), undefined)
    } finally {
      open?.()
      await origin.close()
      await liar.close()
    }
  })

  it('a server not told otherwise will not fetch from internal addresses', async () => {
    const guarded = await startLockerServers(1, { allowPrivatePlaces: false })
    try {
      const l = await guarded.servers[0].locker('guarded')
      const res = await fetch(`${guarded.servers[0].server.url}/v1/lockers/guarded/distribute`, {
        method: 'POST',
        headers: { authorization: `Bearer ${await l.token()}`, 'content-type': 'application/json' },
        body: JSON.stringify({ oid: oidOf(Buffer.from('x')), src: 'http://127.0.0.1:4650/v1/objects/x' })
      })
      assert.equal(res.status, 403)
      assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'ERR_PLACE_NOT_ALLOWED')
    } finally { await guarded.stop() }
  })

  it('bad distributes get clear errors', async () => {
    const l = await s[0].locker('bad-dist')
    const token = await l.token()
    const post = async (body: unknown): Promise<{ status: number, code: string }> => {
      const res = await fetch(`${s[0].server.url}/v1/lockers/bad-dist/distribute`, { method: 'POST', headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, body: JSON.stringify(body) })
      return { status: res.status, code: ((await res.json()) as { error: { code: string } }).error.code }
    }
    const oid = oidOf(Buffer.from('x'))
    assert.deepEqual(await post({ oid }), { status: 400, code: 'ERR_BAD_REQUEST' })
    assert.deepEqual(await post({ oid: 'nope', src: 'http://127.0.0.1:1/x' }), { status: 400, code: 'ERR_INVALID_OID' })
    assert.deepEqual(await post({ oid, src: 'ftp://x/y' }), { status: 400, code: 'ERR_UNSUPPORTED_SCHEME' })
    assert.deepEqual(await post({ oid, dst: 'http://127.0.0.1:1/x' }), { status: 400, code: 'ERR_BAD_REQUEST' })
    assert.deepEqual(await post({ oid, dst: { uri: 'locker://127.0.0.1:1/x', token: 't' } }), { status: 404, code: 'ERR_NOT_FOUND' })
    assert.deepEqual(await post({ oid, src: 'http://127.0.0.1:1/x', extra: 1 }), { status: 400, code: 'ERR_BAD_REQUEST' })
    const unreachable = await l.client.distribute('bad-dist', { oid, src: 'http://127.0.0.1:1/x' }, { token })
    const end = await l.client.waitTransfer('bad-dist', unreachable.id, { token })
    assert.equal(end.state, 'failed')
    assert.equal(end.error?.code, 'ERR_SOURCE')
    const unknown = await fetch(`${s[0].server.url}/v1/lockers/bad-dist/transfers/nope`, { headers: { authorization: `Bearer ${token}` } })
    assert.equal(unknown.status, 404)
  })
})

