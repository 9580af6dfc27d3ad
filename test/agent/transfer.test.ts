import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import type { Agent } from '../../src/agent/agent.ts'
import { startAgent, pseudoRandom, oidOf, readAll, tempDir } from './_helpers.ts'
import { startEvilPeer } from './_evil-peer.ts'

describe('agent to agent transfer', () => {
  let a: Agent, b: Agent, c: Agent
  let ca: AgentClient, cb: AgentClient, cc: AgentClient
  const dirs: Array<{ cleanup: () => Promise<void> }> = []
  const data = pseudoRandom(9 * 1024 * 1024 + 12345, 7)

  before(async () => {
    const da = await tempDir(); const db = await tempDir()
    dirs.push(da, db)
    a = await startAgent({ storeDir: da.dir })
    b = await startAgent({ storeDir: db.dir })
    c = await startAgent()
    ca = new AgentClient(a.url); cb = new AgentClient(b.url); cc = new AgentClient(c.url)
  })
  after(async () => {
    for (const x of [ca, cb, cc]) await x.close()
    for (const x of [a, b, c]) await x.stop()
    for (const d of dirs) await d.cleanup()
  })

  it('put returns the OID of the bytes and a hint to this agent', async () => {
    const put = await ca.put({ bytes: data })
    assert.equal(put.oid, oidOf(data))
    assert.equal(put.size, data.length)
    assert.deepEqual(put.hints, [a.selfHint])
  })

  it('putting the same bytes again stores no new chunk', async () => {
    const before = await a.store.usage()
    const again = await ca.put({ bytes: data })
    assert.equal(again.oid, oidOf(data))
    assert.deepEqual(await a.store.usage(), before)
  })

  it('gets the object from another agent by its hint, byte for byte', async () => {
    const oid = oidOf(data)
    const { stream, size } = await cb.get(oid, { hints: [a.selfHint] })
    assert.equal(size, data.length)
    assert.ok((await readAll(stream)).equals(data))
    // now stored at b: served again without hints
    const again = await cb.get(oid)
    assert.ok((await readAll(again.stream)).equals(data))
  })

  it('serves a Range of a remote object and of a stored one', async () => {
    const oid = oidOf(data)
    const remote = await cc.get(oid, { hints: [a.selfHint], range: { start: 1000, end: 2_000_000 } })
    assert.ok((await readAll(remote.stream)).equals(data.subarray(1000, 2_000_001)))
    const local = await ca.get(oid, { range: { start: data.length - 10 } })
    assert.ok((await readAll(local.stream)).equals(data.subarray(data.length - 10)))
  })

  it('order=any delivers every verified chunk once, with offsets that rebuild the object', async () => {
    const other = pseudoRandom(3 * 1024 * 1024, 99)
    const { oid } = await ca.put({ bytes: other })
    const rebuilt = Buffer.alloc(other.length)
    let total = 0
    for await (const { offset, bytes } of cc.getAnyOrder(oid, { hints: [a.selfHint] })) {
      Buffer.from(bytes).copy(rebuilt, offset)
      total += bytes.byteLength
    }
    assert.equal(total, other.length)
    assert.ok(rebuilt.equals(other))
  })

  it('never fetches a chunk it already has: a second object sharing chunks moves only the new ones', async () => {
    const base = pseudoRandom(4 * 1024 * 1024, 5)
    const edited = Buffer.concat([base.subarray(0, 2_000_000), Buffer.from('a small edit in the middle'), base.subarray(2_000_000)])
    const p1 = await ca.put({ bytes: base })
    const p2 = await ca.put({ bytes: edited })
    await readAll((await cb.get(p1.oid, { hints: p1.hints })).stream)
    const before = await counter(b, 'berth_agent_bytes_received_total')
    assert.ok((await readAll((await cb.get(p2.oid, { hints: p2.hints })).stream)).equals(edited))
    const moved = (await counter(b, 'berth_agent_bytes_received_total')) - before
    assert.ok(moved < edited.length / 4, `moved ${moved} bytes of ${edited.length}`)
  })

  it('drops a source that sends bad bytes and completes from the next hint; rejections show in metrics', async () => {
    const obj = pseudoRandom(2 * 1024 * 1024, 11)
    const { oid } = await ca.put({ bytes: obj })
    const evil = await startEvilPeer(a.peerUrl, n => n % 3 === 1)
    try {
      const fresh = await startAgent()
      const client = new AgentClient(fresh.url)
      try {
        const got = await client.get(oid, { hints: [`${evil.hint};priority=0`, `${a.selfHint.uri};priority=1`] })
        assert.ok((await readAll(got.stream)).equals(obj))
        assert.ok(evil.corrupted > 0)
        assert.ok(await counter(fresh, 'berth_agent_chunks_rejected_total') > 0)
      } finally { await client.close(); await fresh.stop() }
    } finally { await evil.close() }
  })

  it('with only a bad source the get fails with ERR_HASH_MISMATCH and stores nothing', async () => {
    const obj = pseudoRandom(1024 * 1024, 12)
    const { oid } = await ca.put({ bytes: obj })
    const evil = await startEvilPeer(a.peerUrl, () => true)
    const fresh = await startAgent()
    const client = new AgentClient(fresh.url)
    try {
      await assert.rejects(async () => await readAll((await client.get(oid, { hints: [evil.hint] })).stream))
      const res = await request(`${fresh.url}/v1/objects/${oid}?hint=${encodeURIComponent(evil.hint)}`)
      const text = await res.body.text()
      assert.equal(res.statusCode, 409, text)
      assert.equal(JSON.parse(text).error.code, 'ERR_HASH_MISMATCH')
      assert.equal((await client.list()).objects.length, 0)
    } finally { await client.close(); await fresh.stop(); await evil.close() }
  })

  it('done (DELETE) releases the object', async () => {
    const obj = pseudoRandom(100_000, 13)
    const { oid } = await cc.put({ bytes: obj })
    await cc.done(oid)
    await assert.rejects(cc.get(oid), (e: { code?: string }) => e.code === 'ERR_NOT_FOUND')
  })

  it('puts an empty object and gets it back', async () => {
    const { oid } = await ca.put({ bytes: new Uint8Array(0) })
    assert.equal(oid, oidOf(new Uint8Array(0)))
    const got = await cb.get(oid, { hints: [a.selfHint] })
    assert.equal((await readAll(got.stream)).length, 0)
  })
})

async function counter (agent: Agent, name: string): Promise<number> {
  const m = await agent.metrics.registry.getSingleMetric(name)?.get()
  return (m?.values ?? []).reduce((s, v) => s + v.value, 0)
}
