/**
 * The locker server on a real socket with a disk store: lockers created with the admin key,
 * objects put and read with tokens, curl as an outside client (issue 3's first acceptance
 * point), quota under 100 concurrent writers, DELETE and TTL freeing space, and a restart that
 * keeps references and usage consistent.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLockerServer, type LockerServer } from '../../src/locker/server.ts'
import { generateSigningKey, issueAccessToken, issueAdminToken, issueResourceToken, type SigningKey, type TokenOp } from '../../src/core/tokens.ts'
import { cidOf as oidOf } from '../store/compliance.ts'
import { ensurePackages } from '../interop/_apt.ts'

const curlMissing = ensurePackages(['/usr/bin/curl'], ['curl'])
const execFileP = promisify(execFile)

describe('locker server', async () => {
  let dir: string
  let server: LockerServer
  let admin: SigningKey
  let owner: SigningKey
  const QUOTA = 8 * 1024 * 1024

  async function createLocker (name: string, key: SigningKey, quota = QUOTA): Promise<Response> {
    return await fetch(`${server.url}/v1/lockers`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await issueAdminToken(admin)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name, key: key.publicJwk, quota })
    })
  }
  async function token (ops: TokenOp[], locker = 'alice', key = owner): Promise<string> {
    return await issueAccessToken(key, { locker, ops, objects: 'all', ttlSeconds: 600 })
  }
  async function put (bytes: Buffer<ArrayBuffer>, t: string, o: { oid?: string, headers?: Record<string, string>, locker?: string } = {}): Promise<Response> {
    const oid = o.oid ?? oidOf(bytes)
    return await fetch(`${server.url}/v1/lockers/${o.locker ?? 'alice'}/objects/${oid}`, { method: 'PUT', headers: { authorization: `Bearer ${t}`, ...o.headers }, body: new Blob([bytes]) })
  }

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-locker-'))
    admin = await generateSigningKey()
    owner = await generateSigningKey()
    server = await createLockerServer({ listen: '127.0.0.1:0', dir: join(dir, 'data'), adminKey: admin.publicJwk })
    await server.start()
    assert.equal((await createLocker('alice', owner)).status, 201)
  })
  after(async () => {
    await server.stop()
    await rm(dir, { recursive: true, force: true })
  })

  it('creating a locker needs the admin key; names are unique', async () => {
    const stranger = await generateSigningKey()
    const forged = await fetch(`${server.url}/v1/lockers`, { method: 'POST', headers: { authorization: `Bearer ${await issueAdminToken(stranger)}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'mallory', key: stranger.publicJwk }) })
    assert.equal(forged.status, 401)
    assert.equal(((await forged.json()) as { error: { code: string } }).error.code, 'ERR_TOKEN_INVALID')
    const again = await createLocker('alice', owner)
    assert.equal(again.status, 409)
    const bad = await fetch(`${server.url}/v1/lockers`, { method: 'POST', headers: { authorization: `Bearer ${await issueAdminToken(admin)}`, 'content-type': 'application/json' }, body: JSON.stringify({ name: 'Bad Name!', key: owner.publicJwk }) })
    assert.equal(bad.status, 400)
  })

  it('stores an object verified against its OID, and refuses bytes that are not it', async () => {
    const bytes = randomBytes(300 * 1024)
    const t = await token(['write', 'read'])
    const ok = await put(bytes, t)
    assert.equal(ok.status, 201)
    assert.deepEqual(await ok.json(), { oid: oidOf(bytes), size: bytes.byteLength, locker: 'alice', expiresAt: null })
    const other = randomBytes(1000)
    const lie = await put(other, t, { oid: oidOf(randomBytes(10)) })
    assert.equal(lie.status, 409)
    assert.equal(((await lie.json()) as { error: { code: string } }).error.code, 'ERR_HASH_MISMATCH')
    assert.equal(await server.store.stat(oidOf(other)), undefined, 'nothing stored under the computed name either')
  })

  it('curl with a token downloads the object and a Range of it; without or with a bad token, 401/403 with a JSON error', { skip: curlMissing }, async () => {
    const bytes = randomBytes(2 * 1024 * 1024 + 123)
    const oid = oidOf(bytes)
    assert.equal((await put(bytes, await token(['write']))).status, 201)
    const url = `${server.url}/v1/lockers/alice/objects/${oid}`
    // Asynchronous: the server answering curl runs in this process.
    const curl = async (...args: string[]): Promise<{ status: number, body: Buffer }> => {
      const { stdout } = await execFileP('curl', ['-s', '-w', '\n%{http_code}', ...args, url], { encoding: 'buffer', maxBuffer: 64 * 1024 * 1024 })
      const nl = stdout.lastIndexOf(10)
      return { status: Number(stdout.subarray(nl + 1).toString()), body: stdout.subarray(0, nl) }
    }
    const read = await token(['read'])
    const whole = await curl('-H', `Authorization: Bearer ${read}`)
    assert.equal(whole.status, 200)
    assert.ok(whole.body.equals(bytes))
    const part = await curl('-H', `Authorization: Bearer ${read}`, '-r', '1000-1999')
    assert.equal(part.status, 206)
    assert.ok(part.body.equals(bytes.subarray(1000, 2000)))
    const none = await curl()
    assert.equal(none.status, 401)
    assert.equal(JSON.parse(none.body.toString()).error.code, 'ERR_TOKEN_MISSING')
    const garbage = await curl('-H', 'Authorization: Bearer not.a.token')
    assert.equal(garbage.status, 401)
    assert.equal(JSON.parse(garbage.body.toString()).error.code, 'ERR_TOKEN_INVALID')
    const writeOnly = await curl('-H', `Authorization: Bearer ${await token(['write'])}`)
    assert.equal(writeOnly.status, 403)
    assert.equal(JSON.parse(writeOnly.body.toString()).error.code, 'ERR_TOKEN_SCOPE')
    const stranger = await generateSigningKey()
    const forged = await curl('-H', `Authorization: Bearer ${await token(['read'], 'alice', stranger)}`)
    assert.equal(forged.status, 401)
  })

  it('HEAD, ETag and If-None-Match', async () => {
    const bytes = randomBytes(5000)
    const oid = oidOf(bytes)
    const t = await token(['write', 'read'])
    await put(bytes, t)
    const url = `${server.url}/v1/lockers/alice/objects/${oid}`
    const head = await fetch(url, { method: 'HEAD', headers: { authorization: `Bearer ${t}` } })
    assert.equal(head.status, 200)
    assert.equal(head.headers.get('etag'), `"${oid}"`)
    assert.equal(head.headers.get('content-length'), '5000')
    const cached = await fetch(url, { headers: { authorization: `Bearer ${t}`, 'if-none-match': `"${oid}"` } })
    assert.equal(cached.status, 304)
    const missing = await fetch(`${server.url}/v1/lockers/alice/objects/${oidOf(randomBytes(8))}`, { headers: { authorization: `Bearer ${t}` } })
    assert.equal(missing.status, 404)
  })

  it('a resource token caps an upload at sizeMax', async () => {
    const t = await token(['write'])
    const r = await issueResourceToken(owner, t, { sizeMax: 1000, ttlSeconds: 600 })
    const res = await put(randomBytes(5000), t, { headers: { 'berth-resource': r } })
    assert.equal(res.status, 413)
    const fits = await put(randomBytes(900), t, { headers: { 'berth-resource': r } })
    assert.equal(fits.status, 201)
    const unlinked = await issueResourceToken(owner, await token(['write']), { ttlSeconds: 600 })
    assert.equal((await put(randomBytes(10), t, { headers: { 'berth-resource': unlinked } })).status, 403)
  })

  it('100 concurrent writers never take a locker past its quota; DELETE frees the space', async () => {
    const key = await generateSigningKey()
    const quota = 1024 * 1024
    assert.equal((await createLocker('quota', key, quota)).status, 201)
    const t = await token(['write', 'delete', 'status'], 'quota', key)
    const objects = Array.from({ length: 100 }, () => randomBytes(64 * 1024))
    // Half announce their length (refused up front), half stream without one (refused as they go).
    const results = await Promise.all(objects.map(async (bytes, i) => {
      const body = i % 2 === 0 ? new Blob([bytes]) : new Blob([bytes]).stream()
      const res = await fetch(`${server.url}/v1/lockers/quota/objects/${oidOf(bytes)}`, { method: 'PUT', headers: { authorization: `Bearer ${t}` }, body, duplex: 'half' } as RequestInit).catch(() => undefined)
      if (res !== undefined) await res.arrayBuffer().catch(() => {})
      return res?.status
    }))
    const stored = results.filter(s => s === 201).length
    assert.ok(stored >= 1 && stored <= 16, `${stored} stored`)
    assert.ok(results.every(s => s === 201 || s === 413 || s === undefined), results.join(','))
    const status = await (await fetch(`${server.url}/v1/lockers/quota/status`, { headers: { authorization: `Bearer ${t}` } })).json() as { used: number, objects: number, quota: number, reserved: number }
    assert.ok(status.used <= quota, `used ${status.used} > quota ${quota}`)
    assert.equal(status.used, stored * 64 * 1024)
    assert.equal(status.objects, stored)
    assert.equal(status.reserved, 0)
    const first = objects.find((_b, i) => results[i] === 201)!
    const del = await fetch(`${server.url}/v1/lockers/quota/objects/${oidOf(first)}`, { method: 'DELETE', headers: { authorization: `Bearer ${t}` } })
    assert.equal(del.status, 204)
    const after = await (await fetch(`${server.url}/v1/lockers/quota/status`, { headers: { authorization: `Bearer ${t}` } })).json() as { used: number }
    assert.equal(after.used, status.used - 64 * 1024)
    assert.equal(await server.store.stat(oidOf(first)), undefined, 'no locker holds it: its bytes are gone')
  })

  it('bytes are held once for every locker that holds them; they go when the last one lets go', async () => {
    const bob = await generateSigningKey()
    assert.equal((await createLocker('bob', bob)).status, 201)
    const bytes = randomBytes(100 * 1024)
    const oid = oidOf(bytes)
    const ta = await token(['write', 'delete'])
    const tb = await token(['write', 'delete', 'read'], 'bob', bob)
    assert.equal((await put(bytes, ta)).status, 201)
    assert.equal((await put(bytes, tb, { locker: 'bob' })).status, 201)
    assert.equal(server.db.holders(oid), 2)
    assert.equal((await fetch(`${server.url}/v1/lockers/alice/objects/${oid}`, { method: 'DELETE', headers: { authorization: `Bearer ${ta}` } })).status, 204)
    assert.ok(await server.store.stat(oid), 'bob still holds it')
    const got = await fetch(`${server.url}/v1/lockers/bob/objects/${oid}`, { headers: { authorization: `Bearer ${tb}` } })
    assert.ok(Buffer.from(await got.arrayBuffer()).equals(bytes))
    assert.equal((await fetch(`${server.url}/v1/lockers/bob/objects/${oid}`, { method: 'DELETE', headers: { authorization: `Bearer ${tb}` } })).status, 204)
    assert.equal(await server.store.stat(oid), undefined)
  })

  it('Berth-TTL: an expired object is not served, and the sweep frees it', async () => {
    const bytes = randomBytes(20000)
    const oid = oidOf(bytes)
    const t = await token(['write', 'read'])
    for (const bad of ['0', '-5', 'soon', '999999999999']) assert.equal((await put(bytes, t, { headers: { 'berth-ttl': bad } })).status, 400, `Berth-TTL: ${bad}`)
    assert.equal((await put(bytes, t, { headers: { 'berth-ttl': '1' } })).status, 201)
    assert.equal((await fetch(`${server.url}/v1/lockers/alice/objects/${oid}`, { headers: { authorization: `Bearer ${t}` } })).status, 200)
    await new Promise(resolve => setTimeout(resolve, 1100))
    assert.equal((await fetch(`${server.url}/v1/lockers/alice/objects/${oid}`, { headers: { authorization: `Bearer ${t}` } })).status, 404)
    assert.ok(await server.sweep() >= 1)
    assert.equal(await server.store.stat(oid), undefined)
  })

  it('revoked tokens are refused from then on', async () => {
    const manage = await token(['manage'])
    const t = await issueAccessToken(owner, { locker: 'alice', ops: ['status'], objects: 'all', ttlSeconds: 600, jti: 'to-be-revoked' })
    assert.equal((await fetch(`${server.url}/v1/lockers/alice/status`, { headers: { authorization: `Bearer ${t}` } })).status, 200)
    const r = await fetch(`${server.url}/v1/lockers/alice/revocations`, { method: 'POST', headers: { authorization: `Bearer ${manage}`, 'content-type': 'application/json' }, body: JSON.stringify({ jti: 'to-be-revoked' }) })
    assert.equal(r.status, 204)
    const after = await fetch(`${server.url}/v1/lockers/alice/status`, { headers: { authorization: `Bearer ${t}` } })
    assert.equal(after.status, 401)
    assert.equal(((await after.json()) as { error: { code: string } }).error.code, 'ERR_TOKEN_REVOKED')
  })

  it('after a restart, references, usage and revocations are as they were, and objects still verify', async () => {
    const t = await token(['status', 'read'])
    const before = await (await fetch(`${server.url}/v1/lockers/alice/status`, { headers: { authorization: `Bearer ${t}` } })).json() as { used: number, objects: number, list: Array<{ oid: string }> }
    await server.stop()
    server = await createLockerServer({ listen: '127.0.0.1:0', dir: join(dir, 'data'), adminKey: admin.publicJwk })
    await server.start()
    const after = await (await fetch(`${server.url}/v1/lockers/alice/status`, { headers: { authorization: `Bearer ${t}` } })).json() as { used: number, objects: number }
    assert.equal(after.used, before.used)
    assert.equal(after.objects, before.objects)
    for (const o of before.list) {
      const res = await fetch(`${server.url}/v1/lockers/alice/objects/${o.oid}`, { headers: { authorization: `Bearer ${t}` } })
      assert.equal(oidOf(new Uint8Array(await res.arrayBuffer())), o.oid)
    }
    const revoked = await issueAccessToken(owner, { locker: 'alice', ops: ['status'], objects: 'all', ttlSeconds: 600, jti: 'to-be-revoked' })
    assert.equal((await fetch(`${server.url}/v1/lockers/alice/status`, { headers: { authorization: `Bearer ${revoked}` } })).status, 401)
  })
})
