/**
 * SAILOR's resource model on a real locker server: bandwidth shared by weight between users,
 * a floor kept under contention, bwMax caps, admission control (503 + Retry-After when a floor
 * cannot be promised), connection slots per grant (429) and per user, storage promised no
 * further than the server has. The bandwidth figures are checked loosely here — the 5% targets
 * are measured by `npm run bench` (bench/fairness.ts); these only prove the mechanism works.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { request } from 'undici'
import { measureShares } from '../../bench/lib/shares.ts'
import { issueAdminToken, generateSigningKey } from '../../src/core/tokens.ts'
import { oidOf, pseudoRandom } from '../agent/_helpers.ts'
import { startLockerServers, type TestLocker, type TestServer } from './_lockers.ts'

const MiB = 1024 * 1024
const C = 24e6

describe('locker resource model', async () => {
  let env: Awaited<ReturnType<typeof startLockerServers>>
  let s: TestServer
  const data = pseudoRandom(40 * MiB, 21)
  const oid = oidOf(data)
  const objectUrl = (l: TestLocker): string => `${s.server.url}/v1/lockers/${l.name}/objects/${oid}`
  async function lockerWith (name: string, o: { weight?: number, floor?: number } = {}): Promise<TestLocker> {
    const l = await s.locker(name, o)
    await l.client.put(name, oid, data, { token: await l.token() })
    return l
  }
  async function auth (l: TestLocker, resource?: Parameters<TestLocker['grant']>[1]): Promise<Record<string, string>> {
    if (resource === undefined) return { authorization: `Bearer ${await l.token(['read'])}` }
    const g = await l.grant(['read'], resource)
    return { authorization: `Bearer ${g.token}`, 'berth-resource': g.resource }
  }
  /** A GET left unread: it holds its slot and flow until the body is destroyed. */
  async function holdOpen (l: TestLocker, headers: Record<string, string>): Promise<() => void> {
    const res = await request(objectUrl(l), { headers })
    assert.equal(res.statusCode, 200)
    return () => { res.body.destroy() }
  }

  before(async () => {
    env = await startLockerServers(1, { capacity: { egress: C, connections: 10, storage: 100 * 2 ** 30 } })
    s = env.servers[0]
  })
  after(async () => { await env.stop() })

  it('three users with weights 1:2:3 share the egress about 1:2:3; one alone gets about all of it', async () => {
    const users = [await lockerWith('w1', { weight: 1 }), await lockerWith('w2', { weight: 2 }), await lockerWith('w3', { weight: 3 })]
    const r = await measureShares(await Promise.all(users.map(async u => ({ url: objectUrl(u), headers: await auth(u) }))))
    const expected = [1 / 6, 2 / 6, 3 / 6]
    r.shares.forEach((share, i) => assert.ok(Math.abs(share - expected[i]) < 0.25 * expected[i], `shares ${r.shares.map(x => x.toFixed(3)).join(' ')}`))
    assert.ok(r.total > 0.8 * C && r.total < 1.1 * C, `total ${r.total}`)
    const alone = await measureShares([{ url: objectUrl(users[0]), headers: await auth(users[0]) }])
    assert.ok(alone.total > 0.85 * C && alone.total < 1.1 * C, `alone ${alone.total}`)
  })

  it('a floor holds under contention, and bwMax caps a grant', async () => {
    const floored = await lockerWith('floored', { weight: 1, floor: 0.4 * C })
    const heavy = await lockerWith('heavy', { weight: 10 })
    const r = await measureShares([{ url: objectUrl(floored), headers: await auth(floored) }, { url: objectUrl(heavy), headers: await auth(heavy) }])
    assert.ok(r.shares[0] > 0.33, `the floored user got ${r.shares[0].toFixed(3)} of the egress`)
    const capped = await measureShares([{ url: objectUrl(heavy), headers: await auth(heavy, { bwMax: C / 4 }) }])
    assert.ok(capped.total < 1.1 * C / 4 && capped.total > 0.8 * C / 4, `capped at ${C / 4}: ${capped.total}`)
  })

  it('admission control: a floor that cannot be promised gets 503 + Retry-After; it is admitted once the other ends', async () => {
    const a = await lockerWith('adm-a')
    const b = await lockerWith('adm-b')
    const release = await holdOpen(a, await auth(a, { bwMin: 0.7 * C }))
    try {
      const refused = await request(objectUrl(b), { headers: await auth(b, { bwMin: 0.5 * C }) })
      assert.equal(refused.statusCode, 503)
      assert.equal(refused.headers['retry-after'], '1')
      assert.equal(((await refused.body.json()) as { error: { code: string } }).error.code, 'ERR_OVERLOADED')
      // Without a floor it still gets a share.
      const plain = await request(objectUrl(b), { headers: await auth(b) })
      assert.equal(plain.statusCode, 200)
      plain.body.destroy()
    } finally { release() }
    let ok = false
    for (let i = 0; i < 100 && !ok; i++) {
      const res = await request(objectUrl(b), { headers: await auth(b, { bwMin: 0.5 * C }) })
      ok = res.statusCode === 200
      res.body.destroy()
      if (!ok) await new Promise(resolve => setTimeout(resolve, 20))
    }
    assert.ok(ok, 'admitted once the first floor was released')
  })

  it('connection slots: a grant past its connSlots gets 429; a user past its share of a full server 503, others still get in', async () => {
    const x = await lockerWith('slots-x')
    const y = await lockerWith('slots-y')
    const g = await auth(x, { connSlots: 1 })
    const releases: Array<() => void> = []
    try {
      releases.push(await holdOpen(x, g))
      const second = await request(objectUrl(x), { headers: g })
      assert.equal(second.statusCode, 429)
      assert.equal(second.headers['retry-after'], '1')
      await second.body.dump()
      // The server has 10 slots; x takes 9 (it is alone, so its share is all of them).
      for (let i = 1; i < 9; i++) releases.push(await holdOpen(x, await auth(x)))
      const tenth = await request(objectUrl(x), { headers: await auth(x) })
      assert.equal(tenth.statusCode, 503, 'past 90% of the slots, x (with its share) is refused')
      await tenth.body.dump()
      releases.push(await holdOpen(y, await auth(y)))
    } finally { for (const r of releases) r() }
  })

  it('storage: lockers are not promised more than the server has', async () => {
    const key = await generateSigningKey()
    const res = await fetch(`${s.server.url}/v1/lockers`, {
      method: 'POST',
      headers: { authorization: `Bearer ${await issueAdminToken(env.servers[0].admin)}`, 'content-type': 'application/json' },
      body: JSON.stringify({ name: 'too-big', key: key.publicJwk, quota: 200 * 2 ** 30 })
    })
    assert.equal(res.status, 413)
    assert.equal(((await res.json()) as { error: { code: string } }).error.code, 'ERR_QUOTA')
  })

  it('status shows the current bandwidth share per application', async () => {
    const l = await lockerWith('status-bw')
    await l.client.setAppWeight('status-bw', 'video', 3, { token: await l.token() })
    const release = await holdOpen(l, await auth(l, { app: 'video' }))
    try {
      const st = await l.client.status('status-bw', { token: await l.token() })
      assert.equal(st.slots, 1)
      assert.deepEqual(st.apps, [{ app: 'video', weight: 3 }])
      assert.equal(st.bandwidth.egress?.apps.find(a => a.app === 'video')?.weight, 3)
      assert.equal(st.bandwidth.egress?.flows, 1)
    } finally { release() }
  })
})
