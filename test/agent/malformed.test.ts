/**
 * Bad input gets a clear error and loses nothing: each malformed request is answered 4xx with an
 * error code, and the agent goes on serving (checked after every case).
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { connect } from 'node:net'
import { request } from 'undici'
import type { Agent } from '../../src/agent/agent.ts'
import { startAgent, pseudoRandom, oidOf, tempDir } from './_helpers.ts'

interface Case { name: string, method?: string, path: string, headers?: Record<string, string>, body?: string | Buffer, status?: number, code: string, peer?: boolean }

/** Sends raw bytes and returns the status line's code and the body. */
async function raw (port: number, text: string | Buffer, endAfter = true): Promise<{ status: number, body: string }> {
  return await new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    let data = ''
    socket.on('data', d => { data += d.toString() })
    socket.on('error', reject)
    socket.on('close', () => {
      const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(data)?.[1] ?? 0)
      resolve({ status, body: data.slice(data.indexOf('\r\n\r\n') + 4) })
    })
    socket.write(text)
    if (endAfter) socket.end()
  })
}

describe('malformed input', () => {
  let agent: Agent
  let dirs: { dir: string, cleanup: () => Promise<void> }
  let goodOid: string
  const good = pseudoRandom(300_000, 3)

  before(async () => {
    dirs = await tempDir()
    agent = await startAgent({ storeDir: dirs.dir + '/store', allowedRoots: [dirs.dir] })
    const res = await request(`${agent.url}/v1/objects`, { method: 'POST', body: good })
    goodOid = (await res.body.json() as { oid: string }).oid
    assert.equal(goodOid, oidOf(good))
  })
  after(async () => { await agent.stop(); await dirs.cleanup() })

  async function stillServing (): Promise<void> {
    const res = await request(`${agent.url}/v1/objects/${goodOid}`)
    assert.equal(res.statusCode, 200)
    assert.ok(Buffer.from(await res.body.arrayBuffer()).equals(good))
  }

  const oid = 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku' // sha256 of "foo"? any valid CID
  const cases: Case[] = [
    { name: 'OID that is not a CID', path: '/v1/objects/not-a-cid', code: 'ERR_INVALID_OID' },
    { name: 'CIDv0', path: '/v1/objects/QmYwAPJzv5CZsnA625s3Xf2nemtYgPpHdWEz79ojWnPbdG', code: 'ERR_INVALID_OID' },
    { name: 'dag-pb CIDv1', path: '/v1/objects/bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi', code: 'ERR_INVALID_OID' },
    { name: 'truncated CID', path: '/v1/objects/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenx', code: 'ERR_INVALID_OID' },
    { name: 'bad base32 character', path: '/v1/objects/bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyk1', code: 'ERR_INVALID_OID' },
    { name: 'overlong OID', path: '/v1/objects/b' + 'a'.repeat(500), code: 'ERR_INVALID_OID' },
    { name: 'ni with the wrong algorithm', path: '/v1/objects/' + encodeURIComponent('ni:///md5;AAAAAAAAAAAAAAAAAAAAAA'), code: 'ERR_INVALID_OID' },
    { name: 'ni with a short digest', path: '/v1/objects/' + encodeURIComponent('ni:///sha-256;abc'), code: 'ERR_INVALID_OID' },
    { name: 'DELETE of a bad OID', method: 'DELETE', path: '/v1/objects/zzz', code: 'ERR_INVALID_OID' },
    { name: 'unknown object, no hint', path: `/v1/objects/${oid}`, status: 404, code: 'ERR_NOT_FOUND' },
    { name: 'DELETE of an unknown object', method: 'DELETE', path: `/v1/objects/${oid}`, status: 404, code: 'ERR_NOT_FOUND' },
    { name: 'hint with an unknown scheme', path: `/v1/objects/${oid}?hint=gopher://x:70`, code: 'ERR_INVALID_HINT' },
    { name: 'hint that is not a URI', path: `/v1/objects/${oid}?hint=nonsense`, code: 'ERR_INVALID_HINT' },
    { name: 'berth hint without a port', path: `/v1/objects/${oid}?hint=berth://host`, code: 'ERR_INVALID_HINT' },
    { name: 'hint with a negative priority', path: `/v1/objects/${oid}?hint=${encodeURIComponent('berth://h:1;priority=-1')}`, code: 'ERR_INVALID_HINT' },
    { name: 'hint with an unknown parameter', path: `/v1/objects/${oid}?hint=${encodeURIComponent('berth://h:1;color=red')}`, code: 'ERR_INVALID_HINT' },
    { name: 'hint with credentials', path: `/v1/objects/${oid}?hint=${encodeURIComponent('berth://u:p@h:1')}`, code: 'ERR_INVALID_HINT' },
    { name: 'too many hints', path: `/v1/objects/${oid}?` + Array.from({ length: 70 }, (_, i) => `hint=berth://h${i}:1`).join('&'), code: 'ERR_BAD_REQUEST' },
    { name: 'bad order', path: `/v1/objects/${oid}?order=sideways`, code: 'ERR_BAD_REQUEST' },
    { name: 'Range with bad syntax', path: '/v1/objects/GOOD', headers: { range: 'bytes=abc' }, status: 416, code: 'ERR_INVALID_RANGE' },
    { name: 'Range past the end', path: '/v1/objects/GOOD', headers: { range: 'bytes=999999999-' }, status: 416, code: 'ERR_INVALID_RANGE' },
    { name: 'Range end before start', path: '/v1/objects/GOOD', headers: { range: 'bytes=500-100' }, status: 416, code: 'ERR_INVALID_RANGE' },
    { name: 'several ranges', path: '/v1/objects/GOOD', headers: { range: 'bytes=0-1,5-9' }, status: 416, code: 'ERR_INVALID_RANGE' },
    { name: 'Range in another unit', path: '/v1/objects/GOOD', headers: { range: 'items=0-1' }, status: 416, code: 'ERR_INVALID_RANGE' },
    { name: 'empty suffix range', path: '/v1/objects/GOOD', headers: { range: 'bytes=-0' }, status: 416, code: 'ERR_INVALID_RANGE' },
    { name: 'relative ?path=', method: 'POST', path: '/v1/objects?path=etc/passwd', code: 'ERR_BAD_REQUEST' },
    { name: '?path= outside allowed roots', method: 'POST', path: '/v1/objects?path=/etc/passwd', status: 403, code: 'ERR_PATH_NOT_ALLOWED' },
    { name: '?path= escaping with ..', method: 'POST', path: '/v1/objects?path=DIR/../../../etc/passwd', status: 403, code: 'ERR_PATH_NOT_ALLOWED' },
    { name: '?path= that does not exist', method: 'POST', path: '/v1/objects?path=DIR/missing-file', status: 404, code: 'ERR_NOT_FOUND' },
    { name: '?path= naming a directory', method: 'POST', path: '/v1/objects?path=DIR', code: 'ERR_BAD_REQUEST' },
    { name: 'unknown chunker', method: 'POST', path: '/v1/objects?chunker=rabin', body: 'x', code: 'ERR_INVALID_CONFIG' },
    { name: 'chunker with bad sizes', method: 'POST', path: '/v1/objects?chunker=cdc:64k:16k:1k', body: 'x', code: 'ERR_INVALID_CONFIG' },
    { name: 'fixed chunker too small', method: 'POST', path: '/v1/objects?chunker=fixed:1', body: 'x', code: 'ERR_INVALID_CONFIG' },
    { name: 'status with a bad limit', path: '/v1/objects?limit=-4', code: 'ERR_BAD_REQUEST' },
    { name: 'unknown route', path: '/v2/whatever', status: 404, code: 'ERR_NOT_FOUND' },
    { name: 'peer: chunks body not JSON', peer: true, method: 'POST', path: '/v1/chunks', headers: { 'content-type': 'application/json' }, body: '{not json', code: 'ERR_BAD_REQUEST' },
    { name: 'peer: chunks without cids', peer: true, method: 'POST', path: '/v1/chunks', headers: { 'content-type': 'application/json' }, body: '{"x":1}', code: 'ERR_BAD_REQUEST' },
    { name: 'peer: empty cid list', peer: true, method: 'POST', path: '/v1/chunks', headers: { 'content-type': 'application/json' }, body: '{"cids":[]}', code: 'ERR_BAD_REQUEST' },
    { name: 'peer: a bad cid', peer: true, method: 'POST', path: '/v1/chunks', headers: { 'content-type': 'application/json' }, body: '{"cids":["nope"]}', code: 'ERR_INVALID_CID' },
    { name: 'peer: cid of the wrong type', peer: true, method: 'POST', path: '/v1/chunks', headers: { 'content-type': 'application/json' }, body: '{"cids":[42]}', code: 'ERR_BAD_REQUEST' },
    { name: 'peer: too many cids', peer: true, method: 'POST', path: '/v1/chunks', headers: { 'content-type': 'application/json' }, body: JSON.stringify({ cids: Array(2000).fill(oid) }), code: 'ERR_BAD_REQUEST' },
    { name: 'peer: oversized body', peer: true, method: 'POST', path: '/v1/chunks', headers: { 'content-type': 'application/json' }, body: '{"cids":["' + 'a'.repeat(400_000) + '"]}', status: 413, code: 'ERR_TOO_LARGE' },
    { name: 'peer: manifest of a bad OID', peer: true, path: '/v1/objects/xyz/manifest', code: 'ERR_INVALID_OID' },
    { name: 'peer: manifest of an unknown object', peer: true, path: `/v1/objects/${oid}/manifest`, status: 404, code: 'ERR_NOT_FOUND' }
  ]

  for (const c of cases) {
    it(`${c.name} → ${c.status ?? 400} ${c.code}`, async () => {
      const base = c.peer === true ? agent.peerUrl : agent.url
      const path = c.path.replace('GOOD', goodOid).replaceAll('DIR', dirs.dir)
      const res = await request(base + path, { method: (c.method ?? 'GET') as 'GET', headers: c.headers, body: c.body })
      const text = await res.body.text()
      assert.equal(res.statusCode, c.status ?? 400, text)
      assert.equal(JSON.parse(text).error.code, c.code, text)
      await stillServing()
    })
  }

  it('a header block over the limit → 431 ERR_HEADER_TOO_LARGE', async () => {
    const port = Number(new URL(agent.url).port)
    const r = await raw(port, `GET /v1/objects/${goodOid} HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(20_000)}\r\n\r\n`)
    assert.equal(r.status, 431)
    assert.equal(JSON.parse(r.body).error.code, 'ERR_HEADER_TOO_LARGE')
    await stillServing()
  })

  it('garbage instead of HTTP → 400 ERR_BAD_REQUEST', async () => {
    const port = Number(new URL(agent.url).port)
    const r = await raw(port, '\x16\x03\x01 definitely not http\r\n\r\n')
    assert.equal(r.status, 400)
    assert.equal(JSON.parse(r.body).error.code, 'ERR_BAD_REQUEST')
    await stillServing()
  })

  it('a truncated upload stores nothing', async () => {
    const port = Number(new URL(agent.url).port)
    const before = (await (await request(`${agent.url}/v1/objects`)).body.json() as { objects: unknown[] }).objects.length
    // Promise 1 MB, send 100 KB, hang up.
    await raw(port, Buffer.concat([Buffer.from('POST /v1/objects HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n'), pseudoRandom(100_000, 4)]))
    await new Promise(resolve => setTimeout(resolve, 200))
    const after = (await (await request(`${agent.url}/v1/objects`)).body.json() as { objects: unknown[] }).objects.length
    assert.equal(after, before)
    await stillServing()
  })
})
