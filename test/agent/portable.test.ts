/**
 * The portable-storage plugin (DOT §5.2) on its own, against a real disk store: the sender's
 * export, the receiver's reads, and its patience (watching, polling, aborting).
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { cp, mkdir, open, readdir, readFile, rename, rm, stat, truncate, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { putObject } from '../../src/agent/put.ts'
import { PortablePlugin, chunkPath, manifestPath, portableHint, shardOf, CHUNKS_DIR } from '../../src/agent/plugins/portable.ts'
import type { ChunkResult } from '../../src/agent/plugin.ts'
import type { Descriptor } from '../../src/core/chunker/types.ts'
import { sharedHashPool } from '../../src/core/hash-pool.ts'
import { encodeDescriptor, encodeManifestHead } from '../../src/core/wire.ts'
import { openStore, type ChunkStore, type ObjectInfo } from '../../src/store/index.ts'
import { pseudoRandom, randomBytes, tempDir } from './_helpers.ts'

const pool = sharedHashPool()

async function put (store: ChunkStore, bytes: Uint8Array): Promise<ObjectInfo> {
  return await putObject({ stream: (async function * () { yield bytes })() }, store, pool)
}

async function manifestOf (store: ChunkStore, oid: string): Promise<Descriptor[]> {
  const out: Descriptor[] = []
  for await (const d of store.manifest(oid)) out.push(d)
  return out
}

async function collect (it: AsyncIterable<ChunkResult>): Promise<ChunkResult[]> {
  const out: ChunkResult[] = []
  for await (const r of it) out.push({ descriptor: r.descriptor, bytes: r.bytes === undefined ? undefined : Buffer.from(r.bytes) })
  return out
}

/** Every file under a directory, relative paths. */
async function walk (dir: string, prefix = ''): Promise<string[]> {
  const out: string[] = []
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const rel = prefix === '' ? e.name : `${prefix}/${e.name}`
    if (e.isDirectory()) out.push(...await walk(join(dir, e.name), rel))
    else out.push(rel)
  }
  return out
}

function distinct (ds: readonly Descriptor[]): Descriptor[] {
  const seen = new Set<string>()
  return ds.filter(d => !seen.has(d.cid) && seen.add(d.cid) !== undefined)
}

function handles (): { watchers: number, timers: number } {
  const info = process.getActiveResourcesInfo()
  return { watchers: info.filter(x => x === 'FSEventWrap').length, timers: info.filter(x => x === 'Timeout').length }
}

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

describe('portable storage plugin', () => {
  let root: { dir: string, cleanup: () => Promise<void> }
  let store: ChunkStore
  let exported: string
  let info: ObjectInfo
  let data: Buffer
  let descriptors: Descriptor[]

  before(async () => {
    root = await tempDir('berth-portable-')
    store = await openStore({ kind: 'disk', dir: join(root.dir, 'store'), pool })
    data = pseudoRandom(3 * 1024 * 1024 + 777, 11)
    info = await put(store, data)
    descriptors = await manifestOf(store, info.oid)
    exported = join(root.dir, 'export')
    await mkdir(exported)
    const sender = new PortablePlugin({ dir: exported, export: true })
    assert.deepEqual(sender.objectAdded({ oid: info.oid, size: info.size, chunks: info.chunks }, store), [])
    await sender.idle()
    await sender.close()
  })
  after(async () => {
    await store.close()
    await root.cleanup()
  })

  describe('sender (export)', () => {
    it('copies every chunk and the manifest, in the peer API\'s NDJSON, and leaves no temporary file', async () => {
      const expected = encodeManifestHead({ oid: info.oid, size: info.size, chunks: info.chunks }) + descriptors.map(encodeDescriptor).join('')
      assert.equal(await readFile(manifestPath(exported, info.oid), 'utf8'), expected)
      for (const d of distinct(descriptors)) {
        const bytes = await readFile(chunkPath(exported, d.cid))
        assert.ok(bytes.equals(await store.get(d.cid)), `chunk ${d.cid}`)
        assert.equal(chunkPath(exported, d.cid), join(exported, CHUNKS_DIR, shardOf(d.cid), d.cid))
      }
      const files = await walk(exported)
      assert.equal(files.length, distinct(descriptors).length + 1)
      assert.ok(files.every(f => !f.endsWith('.tmp')))
    })

    it('writes only the chunks the disk lacks, and an object already there not at all', async () => {
      const dir = join(root.dir, 'export-again')
      await mkdir(dir)
      // A chunk already on the disk is left alone (same name, same length).
      const first = descriptors[0]
      await mkdir(join(dir, CHUNKS_DIR, shardOf(first.cid)), { recursive: true })
      await writeFile(chunkPath(dir, first.cid), await store.get(first.cid))
      const before = await stat(chunkPath(dir, first.cid))
      // A second object sharing most chunks: only its new chunks are written.
      const edited = Buffer.concat([data.subarray(0, 1_000_000), Buffer.from('an edit'), data.subarray(1_000_000)])
      const info2 = await put(store, edited)
      const sender = new PortablePlugin({ dir, export: true, fsync: false })
      sender.objectAdded({ oid: info.oid, size: info.size, chunks: info.chunks }, store)
      sender.objectAdded({ oid: info2.oid, size: info2.size, chunks: info2.chunks }, store)
      await sender.idle()
      const after1 = await stat(chunkPath(dir, first.cid))
      assert.equal(after1.ino, before.ino)
      assert.equal(after1.mtimeMs, before.mtimeMs)
      const both = distinct([...descriptors, ...await manifestOf(store, info2.oid)])
      assert.equal((await readdir(dir)).filter(f => f.endsWith('.manifest')).length, 2)
      assert.equal((await walk(join(dir, CHUNKS_DIR))).length, both.length)
      // Added again: the manifest is there, nothing is rewritten.
      const m = await stat(manifestPath(dir, info.oid))
      sender.objectAdded({ oid: info.oid, size: info.size, chunks: info.chunks }, store)
      await sender.idle()
      assert.equal((await stat(manifestPath(dir, info.oid))).ino, m.ino)
      await sender.close()
    })

    it('a long manifest (many small chunks) is written whole and read back', async () => {
      const dir = join(root.dir, 'export-long')
      await mkdir(dir)
      const bytes = pseudoRandom(512 * 1024 + 5, 13)
      const small = await putObject({ stream: (async function * () { yield bytes })() }, store, pool, { chunker: { kind: 'fixed', size: 512 } })
      const sender = new PortablePlugin({ dir, export: true, fsync: false })
      sender.objectAdded({ oid: small.oid, size: small.size, chunks: small.chunks }, store)
      await sender.idle()
      await sender.close()
      const ds = await manifestOf(store, small.oid)
      const text = await readFile(manifestPath(dir, small.oid), 'utf8')
      assert.ok(text.length > 64 * 1024, 'more than one write')
      assert.equal(text, encodeManifestHead({ oid: small.oid, size: small.size, chunks: small.chunks }) + ds.map(encodeDescriptor).join(''))
      const receiver = new PortablePlugin()
      const m = await receiver.manifest(small.oid, portableHint(dir), { signal: new AbortController().signal })
      const got: Descriptor[] = []
      for await (const d of m.descriptors) got.push(d)
      assert.deepEqual(got, ds)
      const results = await collect(receiver.chunks(ds, portableHint(dir), { signal: new AbortController().signal }))
      assert.ok(Buffer.concat(results.sort((a, b) => a.descriptor.offset - b.descriptor.offset).map(r => r.bytes!)).equals(bytes))
      await store.release(small.oid)
    })

    it('stopped by close mid-copy: no manifest, no temporary file, and nothing more is written', async () => {
      const dir = join(root.dir, 'export-stopped')
      await mkdir(dir)
      const big = await put(store, randomBytes(24 * 1024 * 1024))
      const sender = new PortablePlugin({ dir, export: true })
      sender.objectAdded({ oid: big.oid, size: big.size, chunks: big.chunks }, store)
      // Wait for the first chunks to land, then stop.
      const deadline = Date.now() + 10_000
      while (Date.now() < deadline) {
        const files = await walk(dir).catch(() => [])
        if (files.length >= 3) break
        await sleep(2)
      }
      await sender.close()
      const files = await walk(dir)
      assert.ok(!files.some(f => f.endsWith('.manifest')), 'no manifest')
      assert.ok(!files.some(f => f.endsWith('.tmp')), `no temporary file: ${files.filter(f => f.endsWith('.tmp')).join(' ')}`)
      assert.ok(files.length < big.chunks, `stopped early (${files.length} of ${big.chunks} files)`)
      await sleep(50)
      assert.equal((await walk(dir)).length, files.length)
      // Objects added after close are not copied.
      assert.deepEqual(sender.objectAdded({ oid: big.oid, size: big.size, chunks: big.chunks }, store), [])
      await sender.idle()
      await store.release(big.oid)
    })

    it('a missing export directory fails the copy (reported), and is not created', async () => {
      const dir = join(root.dir, 'not-mounted')
      const errors: Array<{ code: string, oid: string }> = []
      const sender = new PortablePlugin({ dir, export: true, onExportError: (err, oid) => errors.push({ code: err.code, oid }) })
      sender.objectAdded({ oid: info.oid, size: info.size, chunks: info.chunks }, store)
      await sender.idle()
      assert.deepEqual(errors, [{ code: 'ERR_NOT_FOUND', oid: info.oid }])
      await assert.rejects(stat(dir), { code: 'ENOENT' })
      await sender.close()
    })

    it('a configured directory is a standing hint; export needs a directory', () => {
      assert.deepEqual(new PortablePlugin({ dir: exported }).standingHints, [portableHint(exported)])
      assert.deepEqual(new PortablePlugin().standingHints, [])
      assert.throws(() => new PortablePlugin({ export: true }), { code: 'ERR_INVALID_CONFIG' })
    })
  })

  describe('receiver', () => {
    const receiver = new PortablePlugin()
    after(async () => await receiver.close())

    it('reads the manifest back, checked against the OID', async () => {
      const m = await receiver.manifest(info.oid, portableHint(exported), { signal: new AbortController().signal })
      assert.equal(m.size, info.size)
      assert.equal(m.chunks, info.chunks)
      const got: Descriptor[] = []
      for await (const d of m.descriptors) got.push(d)
      assert.deepEqual(got, descriptors)
    })

    it('no manifest on the disk (or no disk): ERR_SOURCE at once, even when patient', async () => {
      const signal = new AbortController().signal
      await assert.rejects(receiver.manifest(info.oid, portableHint(join(root.dir, 'nothing-here')), { signal, patient: true }), { code: 'ERR_SOURCE' })
      const empty = join(root.dir, 'empty')
      await mkdir(empty)
      await assert.rejects(receiver.manifest(info.oid, portableHint(empty), { signal }), { code: 'ERR_SOURCE' })
    })

    it('finds every chunk, into the memory the core hands out, in order', async () => {
      let allocated = 0
      const arena = new Uint8Array(new SharedArrayBuffer(data.length))
      const alloc = (n: number): Uint8Array => { const v = arena.subarray(allocated, allocated + n); allocated += n; return v }
      const wanted = distinct(descriptors)
      const results: ChunkResult[] = []
      for await (const r of receiver.chunks(wanted, portableHint(exported), { signal: new AbortController().signal, alloc })) results.push(r)
      assert.equal(results.length, wanted.length)
      let at = 0
      for (const r of results) {
        assert.ok(r.bytes !== undefined)
        assert.equal(r.bytes.buffer, arena.buffer)
        assert.equal(r.bytes.byteOffset, at)
        at += r.bytes.byteLength
        assert.ok(Buffer.from(r.bytes).equals(data.subarray(r.descriptor.offset, r.descriptor.offset + r.descriptor.length)))
      }
      assert.equal(allocated, wanted.reduce((s, d) => s + d.length, 0))
    })

    it('not patient: says which chunks are missing (absent, wrong length, only a temporary file) and ends', async () => {
      const dir = join(root.dir, 'partial')
      await cp(exported, dir, { recursive: true })
      const wanted = distinct(descriptors)
      const [gone, short, temp] = [wanted[1], wanted[2], wanted[3]]
      await rm(chunkPath(dir, gone.cid))
      await truncate(chunkPath(dir, short.cid), short.length - 1)
      await rename(chunkPath(dir, temp.cid), join(dir, CHUNKS_DIR, shardOf(temp.cid), `.${temp.cid}.abc123.tmp`))
      const stranger = { cid: 'bafkreigh2akiscaildcqabsyg3dfr6chu3fgpregiymsck7e7aqa4s52zy', offset: 0, length: 10 }
      const results = await collect(receiver.chunks([...wanted, stranger], portableHint(dir), { signal: new AbortController().signal }))
      assert.equal(results.length, wanted.length + 1)
      const missing = results.filter(r => r.bytes === undefined).map(r => r.descriptor.cid).sort()
      assert.deepEqual(missing, [gone.cid, short.cid, temp.cid, stranger.cid].sort())
      for (const r of results) {
        if (r.bytes !== undefined) assert.ok(Buffer.from(r.bytes).equals(data.subarray(r.descriptor.offset, r.descriptor.offset + r.descriptor.length)))
      }
      // No directory at all: everything missing, no error.
      const none = await collect(receiver.chunks(wanted.slice(0, 3), portableHint(join(root.dir, 'nowhere')), { signal: new AbortController().signal }))
      assert.deepEqual(none.map(r => r.bytes), [undefined, undefined, undefined])
    })

    async function patientWhileRenamedIn (options: { watch: boolean, pollMs: number }): Promise<number> {
      const plugin = new PortablePlugin(options)
      const parent = join(root.dir, `arrive-${options.watch ? 'watch' : 'poll'}`)
      await mkdir(parent)
      const target = join(parent, 'disk')
      const staging = join(root.dir, `staging-${options.watch ? 'watch' : 'poll'}`)
      await cp(exported, staging, { recursive: true })
      const wanted = distinct(descriptors)
      const controller = new AbortController()
      const started = Date.now()
      let arrived = 0
      const got: ChunkResult[] = []
      const reading = (async () => {
        for await (const r of plugin.chunks(wanted, portableHint(target), { signal: controller.signal, patient: true })) {
          assert.ok(r.bytes !== undefined, 'patient reads never say missing')
          got.push({ descriptor: r.descriptor, bytes: Buffer.from(r.bytes) })
        }
      })()
      await sleep(300)
      assert.equal(got.length, 0)
      if (options.watch) assert.ok(plugin.watching > 0, 'watching the parent')
      arrived = Date.now()
      await rename(staging, target)
      const timer = setTimeout(() => controller.abort(), 10_000)
      await reading
      clearTimeout(timer)
      const took = Date.now() - arrived
      assert.equal(got.length, wanted.length, `all chunks (${got.length} of ${wanted.length}) after ${Date.now() - started} ms`)
      for (const r of got) assert.ok(Buffer.from(r.bytes!).equals(data.subarray(r.descriptor.offset, r.descriptor.offset + r.descriptor.length)))
      assert.equal(plugin.watching, 0)
      await plugin.close()
      return took
    }

    it('patient, watching: the directory renamed into place mid-call is read at once (the poll alone would take a minute)', async () => {
      const took = await patientWhileRenamedIn({ watch: true, pollMs: 60_000 })
      console.log(`# watched: all chunks ${took} ms after the directory appeared`)
      assert.ok(took < 3000, `${took} ms`)
    })

    it('patient, polling only: the directory renamed into place mid-call is read within a poll', async () => {
      const took = await patientWhileRenamedIn({ watch: false, pollMs: 200 })
      console.log(`# polled: all chunks ${took} ms after the directory appeared`)
      assert.ok(took < 3000, `${took} ms`)
    })

    it('patient, watching: chunks are read as an export writes them into the directory', async () => {
      const dir = join(root.dir, 'live')
      await mkdir(dir)
      const plugin = new PortablePlugin({ pollMs: 60_000 })
      const wanted = distinct(descriptors)
      const controller = new AbortController()
      const got: ChunkResult[] = []
      const reading = (async () => {
        for await (const r of plugin.chunks(wanted, portableHint(dir), { signal: controller.signal, patient: true })) got.push({ descriptor: r.descriptor, bytes: Buffer.from(r.bytes!) })
      })()
      await sleep(100)
      const sender = new PortablePlugin({ dir, export: true })
      sender.objectAdded({ oid: info.oid, size: info.size, chunks: info.chunks }, store)
      await sender.idle()
      const timer = setTimeout(() => controller.abort(), 5_000)
      await reading
      clearTimeout(timer)
      assert.equal(got.length, wanted.length)
      for (const r of got) assert.ok(Buffer.from(r.bytes!).equals(data.subarray(r.descriptor.offset, r.descriptor.offset + r.descriptor.length)))
      await sender.close()
      await plugin.close()
    })

    it('patient: a partial chunk under its temporary name is never read; renamed into place, it is', async () => {
      const dir = join(root.dir, 'writing')
      const d = descriptors[0]
      const bytes = data.subarray(d.offset, d.offset + d.length)
      const shard = join(dir, CHUNKS_DIR, shardOf(d.cid))
      await mkdir(shard, { recursive: true })
      const temp = join(shard, `.${d.cid}.feedbeef.tmp`)
      const fh = await open(temp, 'wx')
      await fh.write(bytes.subarray(0, 1000))
      for (const watch of [true, false]) {
        const plugin = new PortablePlugin({ watch, pollMs: 50 })
        const controller = new AbortController()
        setTimeout(() => controller.abort(), 400)
        const got = await collect(plugin.chunks([d], portableHint(dir), { signal: controller.signal, patient: true }))
        assert.deepEqual(got, [], 'nothing while only the temporary file is there')
        await plugin.close()
      }
      await fh.write(bytes.subarray(1000), 0, bytes.length - 1000, 1000)
      await fh.close()
      const plugin = new PortablePlugin({ pollMs: 60_000 })
      const controller = new AbortController()
      const timer = setTimeout(() => controller.abort(), 5_000)
      const reading = collect(plugin.chunks([d], portableHint(dir), { signal: controller.signal, patient: true }))
      await sleep(100)
      await rename(temp, chunkPath(dir, d.cid))
      const got = await reading
      clearTimeout(timer)
      assert.equal(got.length, 1)
      assert.ok(Buffer.from(got[0].bytes!).equals(bytes))
      await plugin.close()
    })

    it('patient: aborting ends the call quietly, and leaves no watcher or timer behind; so does close', async () => {
      await sleep(20) // handles closed by the tests before go away on a later turn of the loop
      const base = handles()
      const plugin = new PortablePlugin({ pollMs: 100 })
      const hint = portableHint(join(root.dir, 'never', 'comes'))
      const controller = new AbortController()
      const reading = collect(plugin.chunks(distinct(descriptors), hint, { signal: controller.signal, patient: true }))
      await sleep(250)
      assert.ok(plugin.watching > 0)
      assert.ok(handles().watchers > base.watchers, 'watching while waiting')
      const abortedAt = Date.now()
      controller.abort()
      assert.deepEqual(await reading, [])
      assert.ok(Date.now() - abortedAt < 200)
      assert.equal(plugin.watching, 0)
      await sleep(20)
      assert.deepEqual(handles(), base)

      // Already aborted: ends at once. Not patient and aborted: ERR_ABORTED.
      assert.deepEqual(await collect(plugin.chunks(descriptors, hint, { signal: AbortSignal.abort(), patient: true })), [])
      await assert.rejects(collect(plugin.chunks(descriptors, portableHint(exported), { signal: AbortSignal.abort() })), { code: 'ERR_ABORTED' })

      // close() stops patient calls still waiting.
      const waiting = collect(plugin.chunks(distinct(descriptors), hint, { signal: new AbortController().signal, patient: true }))
      await sleep(50)
      await plugin.close()
      assert.deepEqual(await waiting, [])
      await sleep(20)
      assert.deepEqual(handles(), base)
    })

    it('patient: chunks already there come at once, the rest as they turn up', async () => {
      const dir = join(root.dir, 'half')
      await cp(exported, dir, { recursive: true })
      const wanted = distinct(descriptors)
      const later = wanted.slice(-5)
      const aside = join(root.dir, 'aside')
      await mkdir(aside)
      for (const d of later) await rename(chunkPath(dir, d.cid), join(aside, d.cid))
      const plugin = new PortablePlugin({ pollMs: 60_000 })
      const controller = new AbortController()
      const timer = setTimeout(() => controller.abort(), 5_000)
      const times: number[] = []
      const started = Date.now()
      const reading = (async () => {
        for await (const r of plugin.chunks(wanted, portableHint(dir), { signal: controller.signal, patient: true })) { assert.ok(r.bytes); times.push(Date.now() - started) }
      })()
      await sleep(200)
      assert.equal(times.length, wanted.length - later.length)
      for (const d of later) await rename(join(aside, d.cid), chunkPath(dir, d.cid))
      await reading
      clearTimeout(timer)
      assert.equal(times.length, wanted.length)
      assert.ok(times.at(-1)! < 3000)
      await plugin.close()
    })
  })
})
