/**
 * kill -9 of a locker server (`berth locker serve`, its own process, a disk store) in the middle
 * of an upload, of a distribute from an HTTP origin, and of a relay to a second locker server,
 * at several points (early, middle, near the end); then a restart on the same store directory.
 * After each restart: the interrupted object is listed by no locker and answers 404 (GET, HEAD,
 * dedup challenge); every listed object reads back bytes that hash to its OID; each locker's
 * `used` is the sum of its listed objects' sizes with nothing `reserved`; objects committed
 * before the kill are all still there; and the interrupted operation then succeeds. At the end
 * each server is stopped cleanly and its store opened offline: the store holds exactly the
 * objects some locker references (no orphan), each verifies chunk by chunk, and gc leaves the
 * chunks the manifests name, no more. Last, a relay whose destination dies mid-way and whose
 * source then breaks off must keep serving (no crash from the abandoned fetch) and list nothing.
 *
 * The kill points are made exact by holding the sender (the test's upload body, or the origin's
 * gate) at a byte offset and waiting until the server reports it has taken every byte sent.
 */
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomInt } from 'node:crypto'
import { readdir, stat } from 'node:fs/promises'
import { join } from 'node:path'
import { cidFromDigest } from '../../src/core/naming.ts'
import { answerChallenge } from '../../src/core/proof.ts'
import { LockerDb } from '../../src/locker/db.ts'
import { openStore } from '../../src/store/index.ts'
import type { SigningKey } from '../../src/core/tokens.ts'
import type { TransferStatus } from '../../src/sdk/locker-client.ts'
import { tempDir } from '../agent/_helpers.ts'
import { startOrigin, type Origin } from './_lockers.ts'
import {
  adminKeyFile, createLocker, type FullStatus, generate, generated, generatedRange, killAllStarted, type LockerProcess, oidOfGenerated,
  type ProcLocker, startLockerProcess
} from './_locker-process.ts'

const MiB = 1024 * 1024

after(() => { killAllStarted() })

// ── helpers ─────────────────────────────────────────────────────────────────────────────────

async function until (cond: () => Promise<boolean> | boolean, what: string, ms = 20_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!await cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 10))
  }
}

async function statusOf (p: LockerProcess, l: ProcLocker): Promise<FullStatus> {
  return await p.client.status(l.name, { token: await l.token(['status']) }) as FullStatus
}

/** The OID of what the locker serves for `oid` (read whole), and its length. */
async function readBack (p: LockerProcess, l: ProcLocker, oid: string): Promise<{ oid: string, size: number }> {
  const { stream } = await p.client.get(l.name, oid, { token: await l.token(['read']) })
  const h = createHash('sha256')
  let size = 0
  for await (const b of stream) { h.update(b as Buffer); size += (b as Buffer).length }
  return { oid: cidFromDigest(h.digest()), size }
}

/** A small object stored in a locker, remembered as "must survive every kill". */
interface Kept { locker: ProcLocker, oid: string, size: number }

async function putSmall (p: LockerProcess, l: ProcLocker, seed: string, size: number): Promise<Kept> {
  const bytes = await generated(size, seed)
  const oid = cidFromDigest(createHash('sha256').update(bytes).digest())
  const stored = await p.client.put(l.name, oid, bytes, { token: await l.token(['write']) })
  assert.equal(stored.size, size)
  return { locker: l, oid, size }
}

/**
 * What must hold after a restart: per locker, nothing reserved or in flight, `used` = the sum of
 * the listed sizes, every listed object verifies; `kept` objects are listed; `gone` objects are
 * listed by none of `lockers` and answer 404 to GET, HEAD and (when no locker here holds them) a
 * dedup challenge.
 */
async function checkServer (p: LockerProcess, lockers: ProcLocker[], o: { kept: Kept[], gone: string[], when: string, heldElsewhere?: boolean }): Promise<Map<string, FullStatus>> {
  const out = new Map<string, FullStatus>()
  for (const l of lockers) {
    const s = await statusOf(p, l)
    out.set(l.name, s)
    const at = `${o.when}, locker ${l.name}`
    assert.equal(s.reserved, 0, `${at}: bytes reserved after a restart`)
    assert.deepEqual(s.transfers, [], `${at}: transfers in flight after a restart`)
    assert.deepEqual(s.distributes ?? [], [], `${at}: distributes running after a restart`)
    assert.equal(s.objects, s.list.length, `${at}: object count vs list`)
    assert.equal(s.used, s.list.reduce((sum, x) => sum + x.size, 0), `${at}: used is not the sum of the listed sizes`)
    const listed = new Set(s.list.map(x => x.oid))
    for (const k of o.kept) if (k.locker.name === l.name) assert.ok(listed.has(k.oid), `${at}: committed object ${k.oid} is gone`)
    for (const g of o.gone) {
      assert.ok(!listed.has(g), `${at}: the interrupted object ${g} is listed`)
      assert.equal(await p.client.head(l.name, g, { token: await l.token(['read']) }), undefined, `${at}: HEAD of the interrupted object`)
      await assert.rejects(p.client.get(l.name, g, { token: await l.token(['read']) }), (e: { status?: number }) => e.status === 404, `${at}: GET of the interrupted object`)
      // (unless another locker here holds the object: then a challenge is the dedup path)
      if (o.heldElsewhere !== true) assert.equal(await p.client.challenge(l.name, g, { token: await l.token(['write']) }), undefined, `${at}: the server offers to link the interrupted object`)
    }
    for (const x of s.list) {
      const got = await readBack(p, l, x.oid)
      assert.equal(got.oid, x.oid, `${at}: ${x.oid} reads back as ${got.oid}`)
      assert.equal(got.size, x.size, `${at}: ${x.oid} reads back ${got.size} of ${x.size} bytes`)
    }
  }
  return out
}

/**
 * The store of a cleanly stopped server, opened offline: its objects are exactly those some
 * locker references, each verifies chunk by chunk and as a whole, and after gc the chunks held
 * are those the manifests name. Returns the bytes the pack files take on disk (for the log).
 */
async function checkStoreOffline (dir: string): Promise<{ objects: number, bytes: number, packBytes: number }> {
  const db = new LockerDb(join(dir, 'lockers.sqlite'))
  const held = db.heldOids()
  db.close()
  const store = await openStore({ kind: 'disk', dir: join(dir, 'store') })
  try {
    const listed = new Set<string>()
    const distinct = new Map<string, number>()
    for await (const info of store.objects()) {
      listed.add(info.oid)
      const cids: string[] = []
      let size = 0
      for await (const d of store.manifest(info.oid)) { cids.push(d.cid); distinct.set(d.cid, d.length); size += d.length }
      assert.equal(size, info.size, `manifest of ${info.oid} covers ${size} of ${info.size} bytes`)
      const h = createHash('sha256')
      let i = 0
      for await (const c of store.getMany(cids)) { assert.equal(c.cid, cids[i++]); h.update(c.bytes) }
      assert.equal(cidFromDigest(h.digest()), info.oid, `stored object ${info.oid} does not hash to its OID`)
    }
    assert.deepEqual([...listed].sort(), [...held].sort(), 'the store holds exactly the objects the lockers reference')
    await store.gc()
    const usage = await store.usage()
    assert.equal(usage.objects, listed.size)
    assert.equal(usage.chunks, distinct.size, 'chunks left after gc are not those the manifests name')
    assert.equal(usage.bytes, [...distinct.values()].reduce((a, b) => a + b, 0))
    let packBytes = 0
    for (const f of await readdir(join(dir, 'store', 'packs'))) packBytes += (await stat(join(dir, 'store', 'packs', f))).size
    return { objects: usage.objects, bytes: usage.bytes, packBytes }
  } finally { await store.close() }
}

/** A server process on a store directory, restartable on the same address. */
interface Node { dir: string, adminPath: string, admin: SigningKey, p: LockerProcess }

async function startNode (dir: string): Promise<Node> {
  const { path, key } = await adminKeyFile(dir)
  const p = await startLockerProcess({ store: join(dir, 'data'), adminKey: path })
  return { dir: join(dir, 'data'), adminPath: path, admin: key, p }
}

/** A relay and a destination server, each in its own directory, and an origin serving `size` generated bytes. */
async function relayPair (size: number, label: string): Promise<{ A: Node, B: Node, data: Buffer, oid: string, origin: Awaited<ReturnType<typeof startOrigin>>, cleanup: () => Promise<void> }> {
  const tmpA = await tempDir('berth-locker-crash-a-')
  const tmpB = await tempDir('berth-locker-crash-b-')
  const data = await generated(size, label)
  const oid = cidFromDigest(createHash('sha256').update(data).digest())
  const origin = await startOrigin(data)
  const nodes: Node[] = []
  const cleanup = async (): Promise<void> => {
    for (const x of nodes) await x.p.kill9()
    await origin.close()
    await tmpA.cleanup()
    await tmpB.cleanup()
  }
  try {
    nodes.push(await startNode(tmpA.dir))
    nodes.push(await startNode(tmpB.dir))
  } catch (err) { await cleanup(); throw err }
  return { A: nodes[0], B: nodes[1], data, oid, origin, cleanup }
}

async function restart (n: Node): Promise<void> {
  await n.p.kill9()
  n.p = await startLockerProcess({ store: n.dir, adminKey: n.adminPath, listen: n.p.listen })
}

/** Two lockers with complete objects: one each of their own, one shared (the second by a local link). */
async function preload (n: Node, names: [string, string], quotaA?: number): Promise<{ a: ProcLocker, b: ProcLocker, kept: Kept[] }> {
  const a = await createLocker(n.p.client, n.admin, names[0], quotaA)
  const b = await createLocker(n.p.client, n.admin, names[1])
  const kept = [
    await putSmall(n.p, a, `${names[0]}-own`, 3 * MiB + 12345),
    await putSmall(n.p, a, `${names[0]}-shared`, 2 * MiB + 777),
    await putSmall(n.p, b, `${names[1]}-own`, MiB + 5)
  ]
  const shared = kept[1]
  // b comes to hold the shared object by a link from a (no bytes move).
  const t = await n.p.client.distribute(b.name, { oid: shared.oid, src: { uri: `locker://${n.p.listen}/${a.name}`, token: await a.token(['read']) } }, { token: await b.token() })
  const done = await n.p.client.waitTransfer(b.name, t.id, { token: await b.token(), intervalMs: 20 })
  assert.equal(done.state, 'done', JSON.stringify(done.error))
  assert.equal(done.how, 'link')
  kept.push({ locker: b, oid: shared.oid, size: shared.size })
  return { a, b, kept }
}

function runningTransfer (s: FullStatus, id: string): TransferStatus | undefined {
  return s.distributes?.find(t => t.id === id)
}

/** Holds an origin at `at` bytes (rounded to its pieces) until `open` is called. */
function hold (origin: Origin, at: number): () => void {
  let open!: () => void
  origin.gateAt = at
  origin.gate = new Promise<void>(resolve => { open = resolve })
  return () => { origin.gate = undefined; origin.gateAt = Infinity; open() }
}

const log = (s: string): void => { process.stderr.write(`# ${s}\n`) }

// ── tests ───────────────────────────────────────────────────────────────────────────────────

describe('locker server crash safety (kill -9, restart on the same store)', { timeout: 120_000 }, () => {
  it('kill -9 mid-upload (early, middle with a second upload of the same object, last MiB, racing the commit)', async () => {
    const t0 = Date.now()
    const tmp = await tempDir('berth-locker-crash-')
    const BIG = 96 * MiB
    const seed = 'big-upload'
    const oid = await oidOfGenerated(BIG, seed)
    const nodes: Node[] = []
    try {
      const n = await startNode(tmp.dir)
      nodes.push(n)
      // alpha's quota leaves room for the big object once: a reservation or a reference that
      // outlived the crash would make the final upload fail with 413.
      const own = 3 * MiB + 12345 + 2 * MiB + 777
      const { a, b, kept } = await preload(n, ['alpha', 'beta'], own + BIG + MiB)
      const lockers = [a, b]
      await checkServer(n.p, lockers, { kept, gone: [oid], when: 'before any kill' })

      for (const point of [0.1, 0.5, 'last MiB', 'commit race'] as const) {
        const holdAt = point === 'commit race' ? BIG : point === 'last MiB' ? BIG - MiB : Math.floor(point * BIG / MiB) * MiB
        let release!: () => void
        const released = new Promise<void>(resolve => { release = resolve })
        let killed = false
        let sentAll = false
        async function * body (): AsyncGenerator<Uint8Array> {
          let at = 0
          for await (const block of generate(BIG, seed)) {
            if (at + block.length > holdAt) { await released; return }
            at += block.length
            yield block
          }
          sentAll = true
        }
        let putDone = false
        const uploads = [n.p.client.put(a.name, oid, body(), { token: await a.token(['write']), size: BIG }).then(() => { putDone = true })]
        if (point === 0.5) {
          // A second upload of the same object, into the other locker, beside the first.
          async function * second (): AsyncGenerator<Uint8Array> {
            let at = 0
            for await (const block of generate(BIG, seed)) {
              if (at + block.length > holdAt / 2) { await released; return }
              at += block.length
              yield block
            }
          }
          uploads.push(n.p.client.put(b.name, oid, second(), { token: await b.token(['write']), size: BIG }).then(() => {}))
        }
        const settled = Promise.allSettled(uploads)
        let doneBeforeKill = false
        if (point === 'commit race') {
          await until(() => sentAll || killed, 'the whole body to be handed to the socket')
          await new Promise(resolve => setTimeout(resolve, randomInt(0, 150)))
          doneBeforeKill = putDone
        } else {
          // The server has taken every byte sent (all of them through its metering).
          await until(async () => {
            const s = await statusOf(n.p, a)
            return s.transfers.find(t => t.op === 'put' && t.oid === oid)?.bytes === holdAt
          }, `the server to take ${holdAt} bytes of the upload`)
          if (point === 0.5) {
            await until(async () => {
              const s = await statusOf(n.p, b)
              return s.transfers.find(t => t.op === 'put' && t.oid === oid)?.bytes === holdAt / 2
            }, 'the server to take the second upload\'s bytes')
          }
        }
        killed = true
        await n.p.kill9()
        release()
        const results = await settled
        if (point !== 'commit race') for (const r of results) assert.equal(r.status, 'rejected', `${point}: an upload cut by the kill reported success`)
        await restart(n)
        const when = `after the kill at ${point}`
        if (point === 'commit race') {
          // Either way is right, except losing an upload that was answered 201.
          const listed = (await statusOf(n.p, a)).list.some(x => x.oid === oid)
          log(`commit race: upload answered before the kill: ${doneBeforeKill}; listed after restart: ${listed}`)
          if (doneBeforeKill) assert.ok(listed, 'an upload answered 201 before the kill is gone')
          await checkServer(n.p, lockers, { kept, gone: listed ? [] : [oid], when })
          await checkServer(n.p, [b], { kept: [], gone: [oid], when, heldElsewhere: listed })
        } else {
          await checkServer(n.p, lockers, { kept, gone: [oid], when })
        }
      }

      // The interrupted upload, done again, succeeds within the quota and reads back.
      const again = await n.p.client.put(a.name, oid, generate(BIG, seed), { token: await a.token(['write']), size: BIG })
      assert.equal(again.size, BIG)
      kept.push({ locker: a, oid, size: BIG })
      const s = await checkServer(n.p, lockers, { kept, gone: [], when: 'after the upload was done again' })
      assert.equal(s.get(a.name)!.used, own + BIG)
      // And the other locker links it by proving it has the bytes (the dedup path sees one whole object).
      const linked = await n.p.client.put(b.name, oid, generate(BIG, seed), {
        token: await b.token(['write']),
        size: BIG,
        prove: async c => await answerChallenge(c, (start, end) => (async function * () { yield generatedRange(seed, start, end) })())
      })
      assert.equal(linked.linked, true)
      kept.push({ locker: b, oid, size: BIG })
      await checkServer(n.p, lockers, { kept, gone: [], when: 'after the link' })
      assert.equal(await n.p.stop(), 0, n.p.stderr())
      const offline = await checkStoreOffline(n.dir)
      log(`upload: store after gc: ${offline.objects} objects, ${offline.bytes} bytes; pack files ${offline.packBytes} bytes; ${Date.now() - t0} ms`)
    } finally {
      for (const x of nodes) await x.p.kill9()
      await tmp.cleanup()
    }
  })

  it('kill -9 mid-distribute from an HTTP origin (early, middle with a joiner, near the end)', async () => {
    const t0 = Date.now()
    const tmp = await tempDir('berth-locker-crash-')
    const SIZE = 64 * MiB
    const data = await generated(SIZE, 'distribute')
    const oid = cidFromDigest(createHash('sha256').update(data).digest())
    const origin = await startOrigin(data)
    const nodes: Node[] = []
    try {
      const n = await startNode(tmp.dir)
      nodes.push(n)
      const { a, b, kept } = await preload(n, ['gamma', 'delta'])
      const lockers = [a, b]
      for (const point of [0.1, 0.5, 0.95]) {
        const at = Math.floor(point * SIZE / MiB) * MiB
        const open = hold(origin, at)
        const t = await n.p.client.distribute(a.name, { oid, src: origin.url }, { token: await a.token() })
        // The same object from the same source for the other locker: it joins the first fetch.
        const joiner = point === 0.5 ? await n.p.client.distribute(b.name, { oid, src: origin.url }, { token: await b.token() }) : undefined
        await until(async () => {
          const s = await statusOf(n.p, a)
          const r = runningTransfer(s, t.id)
          return r?.bytesIn === at
        }, `the server to take ${at} bytes from the origin`)
        if (joiner !== undefined) assert.equal(runningTransfer(await statusOf(n.p, b), joiner.id)?.how, 'joined')
        await n.p.kill9()
        open()
        await restart(n)
        await checkServer(n.p, lockers, { kept, gone: [oid], when: `after the kill at ${point}` })
        await assert.rejects(n.p.client.transfer(a.name, t.id, { token: await a.token() }), (e: { status?: number }) => e.status === 404)
      }
      // Done again with the origin free: it completes; the other locker then links it after the
      // origin proves it has the same bytes.
      const requestsBefore = origin.requests
      const t = await n.p.client.distribute(a.name, { oid, src: origin.url }, { token: await a.token() })
      const done = await n.p.client.waitTransfer(a.name, t.id, { token: await a.token(), intervalMs: 50 })
      assert.equal(done.state, 'done', JSON.stringify(done.error))
      assert.equal(done.bytesIn, SIZE)
      assert.equal(origin.requests - requestsBefore, 1, 'the object was fetched once')
      kept.push({ locker: a, oid, size: SIZE })
      const t2 = await n.p.client.distribute(b.name, { oid, src: origin.url }, { token: await b.token() })
      const done2 = await n.p.client.waitTransfer(b.name, t2.id, { token: await b.token(), intervalMs: 20 })
      assert.equal(done2.state, 'done', JSON.stringify(done2.error))
      assert.equal(done2.how, 'challenge')
      kept.push({ locker: b, oid, size: SIZE })
      await checkServer(n.p, lockers, { kept, gone: [], when: 'after the distribute was done again' })
      assert.equal(await n.p.stop(), 0, n.p.stderr())
      const offline = await checkStoreOffline(n.dir)
      log(`distribute: store after gc: ${offline.objects} objects, ${offline.bytes} bytes; pack files ${offline.packBytes} bytes; ${Date.now() - t0} ms`)
    } finally {
      for (const x of nodes) await x.p.kill9()
      await origin.close()
      await tmp.cleanup()
    }
  })

  it('kill -9 mid-relay (origin → locker server → second locker server): the relay alone, then both', async () => {
    const t0 = Date.now()
    const SIZE = 48 * MiB
    const { A, B, oid, origin, cleanup } = await relayPair(SIZE, 'relay')
    try {
      const pa = await preload(A, ['relay', 'other'])
      const pb = await preload(B, ['dest', 'dest2'])
      const dest = pb.a
      for (const [point, both] of [[0.5, false], [0.9, true], [0.15, false]] as const) {
        const at = Math.floor(point * SIZE / MiB) * MiB
        const open = hold(origin, at)
        const t = await A.p.client.distribute(pa.a.name, {
          oid, src: origin.url, dst: { uri: `locker://${B.p.listen}/${dest.name}`, token: await dest.token(['write']) }
        }, { token: await pa.a.token() })
        await until(async () => {
          const r = runningTransfer(await statusOf(A.p, pa.a), t.id)
          return r?.bytesIn === at
        }, `the relay to take ${at} bytes from the origin`)
        // The destination has most of it (the relay hands on what it has stored).
        let atDst = 0
        await until(async () => {
          atDst = (await statusOf(B.p, dest)).transfers.find(x => x.op === 'put' && x.oid === oid)?.bytes ?? 0
          return atDst >= at - 4 * MiB
        }, 'the destination to receive the relayed bytes')
        if (both) await Promise.all([A.p.kill9(), B.p.kill9()])
        else await A.p.kill9()
        open()
        const when = `after the kill at ${point} (${both ? 'both servers' : 'relay only'}; destination had ${atDst} bytes)`
        if (!both) {
          // The destination stays up: it drops the broken upload and its reservation.
          await until(async () => {
            const s = await statusOf(B.p, dest)
            return s.transfers.length === 0 && s.reserved === 0
          }, 'the destination to drop the broken upload')
          await checkServer(B.p, [pb.a, pb.b], { kept: pb.kept, gone: [oid], when: `${when}, destination (not restarted)` })
        } else {
          await restart(B)
          await checkServer(B.p, [pb.a, pb.b], { kept: pb.kept, gone: [oid], when: `${when}, destination` })
        }
        await restart(A)
        await checkServer(A.p, [pa.a, pa.b], { kept: pa.kept, gone: [oid], when: `${when}, relay` })
      }
      // The relay done again completes at both ends.
      const t = await A.p.client.distribute(pa.a.name, {
        oid, src: origin.url, dst: { uri: `locker://${B.p.listen}/${dest.name}`, token: await dest.token(['write']) }
      }, { token: await pa.a.token() })
      const done = await A.p.client.waitTransfer(pa.a.name, t.id, { token: await pa.a.token(), intervalMs: 50 })
      assert.equal(done.state, 'done', JSON.stringify(done.error))
      assert.equal(done.delivered, 'sent')
      pa.kept.push({ locker: pa.a, oid, size: SIZE })
      pb.kept.push({ locker: dest, oid, size: SIZE })
      await checkServer(A.p, [pa.a, pa.b], { kept: pa.kept, gone: [], when: 'relay, after the relay was done again' })
      await checkServer(B.p, [pb.a, pb.b], { kept: pb.kept, gone: [], when: 'destination, after the relay was done again' })
      assert.equal(await A.p.stop(), 0, A.p.stderr())
      assert.equal(await B.p.stop(), 0, B.p.stderr())
      const offA = await checkStoreOffline(A.dir)
      const offB = await checkStoreOffline(B.dir)
      log(`relay: relay store ${offA.bytes} bytes (packs ${offA.packBytes}); destination store ${offB.bytes} bytes (packs ${offB.packBytes}); ${Date.now() - t0} ms`)
    } finally {
      await cleanup()
    }
  })

  it('a relay whose destination is killed mid-way, then whose source breaks, keeps serving and lists nothing partial', async () => {
    const t0 = Date.now()
    const SIZE = 24 * MiB
    const { A, B, oid, origin, cleanup } = await relayPair(SIZE, 'relay-dst-dies')
    try {
      const pa = await preload(A, ['relay', 'other'])
      const dest = await createLocker(B.p.client, B.admin, 'dest')
      const at = 12 * MiB
      const open = hold(origin, at)
      const t = await A.p.client.distribute(pa.a.name, {
        oid, src: origin.url, dst: { uri: `locker://${B.p.listen}/${dest.name}`, token: await dest.token(['write']) }
      }, { token: await pa.a.token() })
      await until(async () => (await statusOf(B.p, dest)).transfers.some(x => x.op === 'put' && x.oid === oid && x.bytes > 0), 'the destination to receive bytes')
      await B.p.kill9()
      const failed = await A.p.client.waitTransfer(pa.a.name, t.id, { token: await pa.a.token(), intervalMs: 20 })
      assert.equal(failed.state, 'failed', 'the delivery to a dead destination failed')
      // The fetch from the origin is still under way; now the origin breaks off too.
      await origin.close()
      open()
      await new Promise(resolve => setTimeout(resolve, 500))
      assert.equal(A.p.child.exitCode, null, `the relay server exited: ${A.p.stderr().slice(-2000)}`)
      assert.equal(A.p.child.signalCode, null, `the relay server died: ${A.p.stderr().slice(-2000)}`)
      await until(async () => (await statusOf(A.p, pa.a)).reserved === 0, 'the relay to drop the broken fetch')
      await checkServer(A.p, [pa.a, pa.b], { kept: pa.kept, gone: [oid], when: 'relay, destination and source gone (not restarted)' })
      await restart(A)
      await checkServer(A.p, [pa.a, pa.b], { kept: pa.kept, gone: [oid], when: 'relay, destination and source gone, after a restart' })
      log(`relay with its destination killed: ${Date.now() - t0} ms`)
    } finally {
      await cleanup()
    }
  })
})
