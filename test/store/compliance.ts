/**
 * The store compliance suite: what every ChunkStore must do, whatever keeps the bytes. Run
 * against each implementation by memory.test.ts and disk.test.ts; each case gets a fresh store.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { sha256 } from '../../src/core/hash-pool.ts'
import { PackedManifest } from '../../src/core/manifest.ts'
import { cidFromDigest, digestFromName } from '../../src/core/naming.ts'
import type { BlockSlice, ChunkStore, Descriptor } from '../../src/store/types.ts'

export interface StoreUnderTest {
  store: ChunkStore
  cleanup: () => Promise<void>
}

export interface TestObject {
  bytes: Uint8Array
  oid: string
  descriptors: Descriptor[]
  /** the descriptors as slices of `bytes`, for putBlock */
  slices: BlockSlice[]
}

export function cidOf (bytes: Uint8Array): string {
  return cidFromDigest(sha256(bytes))
}

/** The 32-byte digest a cid names. */
function digestOf (cid: string): Uint8Array {
  return digestFromName(cid)
}

/** An object cut into chunks of the given lengths (cycled until `size` is reached). */
export function makeObject (size: number, lengths: readonly number[] = [64 * 1024], bytes: Uint8Array = randomBytes(size)): TestObject {
  const descriptors: Descriptor[] = []
  const slices: BlockSlice[] = []
  let offset = 0
  for (let i = 0; offset < size; i++) {
    const length = Math.min(lengths[i % lengths.length], size - offset)
    const cid = cidOf(bytes.subarray(offset, offset + length))
    descriptors.push({ cid, offset, length })
    slices.push({ cid, start: offset, length })
    offset += length
  }
  return { bytes, oid: cidOf(bytes), descriptors, slices }
}

/** An object made of the given chunks, in order (they may repeat). */
export function objectOf (chunks: readonly Uint8Array[]): TestObject {
  const bytes = Buffer.concat(chunks)
  return makeObject(bytes.byteLength, chunks.map(c => c.byteLength), bytes)
}

export function chunkBytes (object: TestObject, index: number): Uint8Array {
  const { offset, length } = object.descriptors[index]
  return object.bytes.subarray(offset, offset + length)
}

export async function writeObject (store: ChunkStore, object: TestObject): Promise<void> {
  const writer = store.openWriter()
  await writer.putBlock(object.bytes, object.slices)
  await writer.commit(object.oid, object.descriptors)
}

export async function collect<T> (iterable: AsyncIterable<T>): Promise<T[]> {
  const out: T[] = []
  for await (const item of iterable) out.push(item)
  return out
}

export function assertSameBytes (actual: Uint8Array, expected: Uint8Array, message?: string): void {
  assert.equal(actual.byteLength, expected.byteLength, message)
  assert.ok(Buffer.from(actual.buffer, actual.byteOffset, actual.byteLength).equals(expected), message ?? 'bytes differ')
}

export async function rejectsWithCode (promise: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(promise, (err: { code?: string }) => {
    assert.equal(err.code, code, `expected ${code}, got ${String(err.code)}: ${String(err)}`)
    return true
  })
}

/** Everything the iteration yields before it fails, and the failure. */
export async function drainUntilFailure<T> (iterable: AsyncIterable<T>): Promise<{ items: T[], error: { code?: string } | undefined }> {
  const items: T[] = []
  try {
    for await (const item of iterable) items.push(item)
  } catch (err) {
    return { items, error: err as { code?: string } }
  }
  return { items, error: undefined }
}

async function assertEmpty (store: ChunkStore): Promise<void> {
  assert.deepEqual(await store.usage(), { objects: 0, chunks: 0, bytes: 0 })
}

export function storeCompliance (name: string, makeStore: () => Promise<StoreUnderTest>): void {
  const test = (title: string, body: (store: ChunkStore) => Promise<void>): void => {
    it(title, async () => {
      const { store, cleanup } = await makeStore()
      try {
        await body(store)
      } finally {
        await store.close()
        await cleanup()
      }
    })
  }

  describe(`${name} store compliance`, () => {
    describe('loose chunks', () => {
      test('put then get returns the same bytes, and has says so', async (store) => {
        const chunks = [randomBytes(1), randomBytes(100 * 1024), randomBytes(1024 * 1024 + 7)]
        for (const bytes of chunks) await store.put(cidOf(bytes), bytes)
        for (const bytes of chunks) {
          assert.equal(await store.has(cidOf(bytes)), true)
          assertSameBytes(await store.get(cidOf(bytes)), bytes)
        }
        const usage = await store.usage()
        assert.equal(usage.chunks, 3)
        assert.equal(usage.bytes, 1 + 100 * 1024 + 1024 * 1024 + 7)
      })

      test('the store keeps its own copy: the caller may reuse its buffer', async (store) => {
        const bytes = randomBytes(4096)
        const cid = cidOf(bytes)
        const copy = Buffer.from(bytes)
        await store.put(cid, bytes)
        bytes.fill(0)
        assertSameBytes(await store.get(cid), copy)
      })

      test('put of bytes that do not hash to the cid is refused and stores nothing', async (store) => {
        const bytes = randomBytes(2048)
        const cid = cidOf(randomBytes(2048))
        await rejectsWithCode(store.put(cid, bytes), 'ERR_HASH_MISMATCH')
        assert.equal(await store.has(cid), false)
        await rejectsWithCode(store.get(cid), 'ERR_NOT_FOUND')
        await assertEmpty(store)
      })

      test('putting a chunk twice stores it once', async (store) => {
        const bytes = randomBytes(10_000)
        await store.put(cidOf(bytes), bytes)
        await store.put(cidOf(bytes), bytes)
        assert.deepEqual(await store.usage(), { objects: 0, chunks: 1, bytes: 10_000 })
      })

      test('unknown chunks are absent; malformed cids are refused', async (store) => {
        const cid = cidOf(randomBytes(10))
        assert.equal(await store.has(cid), false)
        await rejectsWithCode(store.get(cid), 'ERR_NOT_FOUND')
        await rejectsWithCode(store.get('not-a-cid'), 'ERR_INVALID_CID')
        await rejectsWithCode(store.has('bafybeigdyrzt5sfp7udm7hu76uh7y26nf3efuylqabf3oclgtqy55fbzdi'), 'ERR_INVALID_CID')
      })

      test('loose chunks are collected by gc', async (store) => {
        const bytes = randomBytes(3000)
        await store.put(cidOf(bytes), bytes)
        assert.deepEqual(await store.gc(), { chunks: 1, bytes: 3000 })
        assert.equal(await store.has(cidOf(bytes)), false)
        await assertEmpty(store)
      })
    })

    describe('getMany', () => {
      test('yields verified chunks in the order asked, across objects, with duplicates', async (store) => {
        // Over 8 MiB of small chunks, one chunk larger than a read batch, and a second object.
        const first = makeObject(10 * 1024 * 1024 + 333, [3000, 70_000, 256 * 1024, 17, 9 * 1024 * 1024])
        const second = makeObject(2 * 1024 * 1024, [100_000])
        await writeObject(store, first)
        await writeObject(store, second)
        const all = [...first.descriptors.map((_, i) => chunkBytes(first, i)), ...second.descriptors.map((_, i) => chunkBytes(second, i))]
        const wanted: Uint8Array[] = [
          ...all.slice(0, first.descriptors.length), // adjacent on disk: coalesced reads
          all[3], all[3], all[0], // repeats, next to each other and far apart
          ...all.slice().reverse(),
          all[first.descriptors.length + 1], all[1], all[first.descriptors.length + 2]
        ]
        const cids = wanted.map(cidOf)
        const got = await collect(store.getMany(cids))
        assert.deepEqual(got.map(g => g.cid), cids)
        got.forEach((g, i) => assertSameBytes(g.bytes, wanted[i], `chunk ${i}`))
      })

      test('borrowMany lends the verified bytes; a held loan is never overwritten by later reads', async (store) => {
        const object = makeObject(20 * 1024 * 1024 + 77, [65_536, 100_000, 3000, 1024 * 1024])
        await writeObject(store, object)
        const cids = object.descriptors.map(d => d.cid)
        // Released at once: buffers go back to the store and are reused by the next reads.
        let i = 0
        for await (const chunk of store.borrowMany(cids)) {
          assert.equal(chunk.cid, cids[i])
          assertSameBytes(chunk.bytes, chunkBytes(object, i), `chunk ${i}`)
          chunk.release()
          chunk.release() // a second release is harmless
          i++
        }
        assert.equal(i, cids.length)
        // All held until the end: every loan must still hold its own chunk's bytes.
        const held = await collect(store.borrowMany(cids))
        held.forEach((chunk, k) => assertSameBytes(chunk.bytes, chunkBytes(object, k), `held chunk ${k}`))
        for (const chunk of held) chunk.release()
        // Stopping early returns what was read ahead; the next reads still verify.
        for await (const chunk of store.borrowMany(cids)) { chunk.release(); break }
        const again = await collect(store.getMany(cids))
        again.forEach((g, k) => assertSameBytes(g.bytes, chunkBytes(object, k), `chunk ${k} after early stop`))
      })

      test('an empty list yields nothing', async (store) => {
        assert.deepEqual(await collect(store.getMany([])), [])
      })

      test('a missing chunk fails the iteration at that chunk, after the ones before it', async (store) => {
        const object = makeObject(300_000, [50_000])
        await writeObject(store, object)
        const cids = object.descriptors.map(d => d.cid)
        const missing = cidOf(randomBytes(10))
        const { items, error } = await drainUntilFailure(store.getMany([...cids.slice(0, 4), missing, ...cids.slice(4)]))
        assert.deepEqual(items.map(i => i.cid), cids.slice(0, 4))
        assert.equal(error?.code, 'ERR_NOT_FOUND')
      })

      test('an aborted signal stops the iteration', async (store) => {
        const object = makeObject(200_000, [50_000])
        await writeObject(store, object)
        const controller = new AbortController()
        controller.abort()
        const { items, error } = await drainUntilFailure(store.getMany(object.descriptors.map(d => d.cid), { signal: controller.signal }))
        assert.equal(items.length, 0)
        assert.equal(error?.code, 'ERR_ABORTED')
      })
    })

    describe('writers and objects', () => {
      test('putBlock then commit makes the object: stat, manifest, objects, chunks', async (store) => {
        const object = makeObject(1024 * 1024 + 5, [64 * 1024, 100_000, 1000])
        const writer = store.openWriter()
        await writer.putBlock(object.bytes, object.slices)
        assert.equal(await store.stat(object.oid), undefined, 'not visible before commit')
        const info = await writer.commit(object.oid, object.descriptors)
        assert.equal(info.oid, object.oid)
        assert.equal(info.size, object.bytes.byteLength)
        assert.equal(info.chunks, object.descriptors.length)
        assert.ok(Math.abs(info.createdAt - Date.now()) < 60_000)
        assert.deepEqual(await store.stat(object.oid), info)
        assert.deepEqual(await collect(store.manifest(object.oid)), object.descriptors)
        assert.deepEqual(await collect(store.objects()), [info])
        for (let i = 0; i < object.descriptors.length; i++) {
          assert.equal(await store.has(object.descriptors[i].cid), true)
          assertSameBytes(await store.get(object.descriptors[i].cid), chunkBytes(object, i))
        }
        assert.deepEqual(await store.usage(), { objects: 1, chunks: object.descriptors.length, bytes: object.bytes.byteLength })
      })

      test('putChunk, several blocks and a reused block buffer all work', async (store) => {
        const object = makeObject(600_000, [40_000])
        const writer = store.openWriter()
        const block = new Uint8Array(new SharedArrayBuffer(200_000))
        for (let i = 0; i < object.descriptors.length; i++) {
          const bytes = chunkBytes(object, i)
          if (i % 3 === 0) {
            await writer.putChunk(object.descriptors[i].cid, Buffer.from(bytes))
          } else {
            // the caller refills the same shared block for every putBlock
            block.set(bytes, 1000)
            await writer.putBlock(block, [{ cid: object.descriptors[i].cid, start: 1000, length: bytes.byteLength }])
            block.fill(0xee)
          }
        }
        await writer.commit(object.oid, object.descriptors)
        const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
        assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
      })

      test('commit with a chunk the store lacks fails and lists nothing', async (store) => {
        const object = makeObject(300_000, [100_000])
        const writer = store.openWriter()
        await writer.putBlock(object.bytes, object.slices.slice(0, 2))
        await rejectsWithCode(writer.commit(object.oid, object.descriptors), 'ERR_STORE')
        assert.equal(await store.stat(object.oid), undefined)
        assert.deepEqual(await collect(store.objects()), [])
        await writer.abort()
        await store.gc()
        await assertEmpty(store)
      })

      test('a descriptor whose length differs from the stored chunk counts as missing', async (store) => {
        const bytes = randomBytes(100)
        await store.put(cidOf(bytes), bytes)
        await rejectsWithCode(store.putManifest(cidOf(bytes.subarray(0, 99)), [{ cid: cidOf(bytes), offset: 0, length: 99 }]), 'ERR_STORE')
        assert.equal((await store.usage()).objects, 0)
      })

      test('a manifest with gaps or a chunk of two lengths is refused', async (store) => {
        const object = makeObject(300_000, [100_000])
        await writeObject(store, object)
        const gap = object.descriptors.map((d, i) => i === 2 ? { ...d, offset: d.offset + 1 } : d)
        await rejectsWithCode(store.putManifest(cidOf(randomBytes(8)), gap), 'ERR_BAD_REQUEST')
        const twoLengths = [object.descriptors[0], { cid: object.descriptors[0].cid, offset: 100_000, length: 99_999 }]
        await rejectsWithCode(store.putManifest(cidOf(randomBytes(8)), twoLengths), 'ERR_BAD_REQUEST')
        assert.equal((await store.usage()).objects, 1)
      })

      test('a slice outside its block is refused before anything is written', async (store) => {
        const object = makeObject(10_000, [5000])
        const writer = store.openWriter()
        const outside = { ...object.slices[1], start: 6000 }
        await rejectsWithCode(writer.putBlock(object.bytes, [object.slices[0], outside]), 'ERR_BAD_REQUEST')
        await writer.abort()
        await store.gc()
        await assertEmpty(store)
      })

      test('a finished writer refuses more chunks', async (store) => {
        const object = makeObject(10_000, [5000])
        const writer = store.openWriter()
        await writer.putBlock(object.bytes, object.slices)
        await writer.commit(object.oid, object.descriptors)
        await rejectsWithCode(writer.putChunk(object.descriptors[0].cid, chunkBytes(object, 0)), 'ERR_CLOSED')
        await rejectsWithCode(writer.commit(object.oid, object.descriptors), 'ERR_CLOSED')
        await writer.abort() // harmless
        const aborted = store.openWriter()
        await aborted.abort()
        await rejectsWithCode(aborted.putBlock(object.bytes, object.slices), 'ERR_CLOSED')
      })

      test('abort leaves the written chunks collectable', async (store) => {
        const object = makeObject(500_000, [64 * 1024])
        const writer = store.openWriter()
        await writer.putBlock(object.bytes, object.slices)
        await writer.abort()
        await store.gc()
        for (const { cid } of object.descriptors) assert.equal(await store.has(cid), false)
        await assertEmpty(store)
      })

      test('an empty object (no chunks) commits, lists and releases', async (store) => {
        const oid = cidOf(new Uint8Array(0))
        const info = await store.openWriter().commit(oid, [])
        assert.deepEqual({ oid: info.oid, size: info.size, chunks: info.chunks }, { oid, size: 0, chunks: 0 })
        assert.deepEqual(await collect(store.manifest(oid)), [])
        assert.equal((await collect(store.objects())).length, 1)
        assert.equal(await store.release(oid), true)
        await assertEmpty(store)
      })

      test('putManifest records an object whose chunks are all present', async (store) => {
        const object = makeObject(200_000, [50_000])
        for (const [i, d] of object.descriptors.entries()) await store.put(d.cid, chunkBytes(object, i))
        const info = await store.putManifest(object.oid, object.descriptors)
        assert.equal(info.size, 200_000)
        await store.gc()
        assert.equal((await store.usage()).chunks, object.descriptors.length, 'referenced now, so not collected')
      })

      test('release drops the object; unknown objects answer false and ERR_NOT_FOUND', async (store) => {
        const object = makeObject(100_000, [30_000])
        await writeObject(store, object)
        assert.equal(await store.release(object.oid), true)
        assert.equal(await store.release(object.oid), false)
        assert.equal(await store.stat(object.oid), undefined)
        await rejectsWithCode(collect(store.manifest(object.oid)), 'ERR_NOT_FOUND')
        assert.deepEqual(await store.gc(), { chunks: object.descriptors.length, bytes: 100_000 })
        await assertEmpty(store)
        await rejectsWithCode(store.stat('nonsense'), 'ERR_INVALID_OID')
      })

      test('commit takes a PackedManifest; the manifest read back equals the descriptors', async (store) => {
        const [a, b, c] = [randomBytes(40_000), randomBytes(1), randomBytes(70_000)]
        const object = objectOf([a, b, a, c, b, a]) // repeats: references are still counted once
        const writer = store.openWriter()
        await writer.putBlock(object.bytes, object.slices)
        const packed = PackedManifest.from(object.descriptors)
        const info = await writer.commit(object.oid, packed)
        assert.deepEqual({ oid: info.oid, size: info.size, chunks: info.chunks }, { oid: object.oid, size: object.bytes.byteLength, chunks: 6 })
        assert.deepEqual(await store.stat(object.oid), info)
        assert.deepEqual(await collect(store.manifest(object.oid)), object.descriptors)
        const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
        assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
        assert.deepEqual(await store.usage(), { objects: 1, chunks: 3, bytes: 110_001 })
        // The store keeps its own copy: the manifest handed in may be appended to afterwards.
        packed.push(randomBytes(32), 123)
        assert.deepEqual(await collect(store.manifest(object.oid)), object.descriptors)
        assert.equal(await store.release(object.oid), true)
        await store.gc()
        await assertEmpty(store)
      })

      test('a PackedManifest built by push commits through putManifest; a bad one is refused', async (store) => {
        const object = makeObject(300_000, [64 * 1024])
        // A packed manifest with room to spare: only its entries count.
        const packed = PackedManifest.empty(1000)
        for (const [i, d] of object.descriptors.entries()) {
          await store.put(d.cid, chunkBytes(object, i))
          packed.push(Buffer.from(digestOf(d.cid)), d.length)
        }
        const info = await store.putManifest(object.oid, packed)
        assert.equal(info.size, 300_000)
        assert.equal(info.chunks, object.descriptors.length)
        assert.deepEqual(await collect(store.manifest(object.oid)), object.descriptors)
        // one chunk with two lengths, and a chunk the store lacks
        const twoLengths = PackedManifest.empty()
        twoLengths.push(digestOf(object.descriptors[0].cid), object.descriptors[0].length)
        twoLengths.push(digestOf(object.descriptors[0].cid), object.descriptors[0].length - 1)
        await rejectsWithCode(store.putManifest(cidOf(randomBytes(8)), twoLengths), 'ERR_BAD_REQUEST')
        const lacking = PackedManifest.empty()
        lacking.push(digestOf(object.descriptors[0].cid), object.descriptors[0].length)
        lacking.push(sha256(randomBytes(10)), 10)
        await rejectsWithCode(store.putManifest(cidOf(randomBytes(8)), lacking), 'ERR_STORE')
        assert.deepEqual(await collect(store.objects()), [info])
      })

      test('objects lists every committed object', async (store) => {
        const objects = Array.from({ length: 30 }, () => makeObject(1000, [300]))
        for (const object of objects) await writeObject(store, object)
        const listed = await collect(store.objects())
        assert.deepEqual(listed.map(o => o.oid).sort(), objects.map(o => o.oid).sort())
      })
    })

    describe('deduplication and references', () => {
      test('committing the same object twice stores no new bytes', async (store) => {
        const object = makeObject(700_000, [64 * 1024])
        await writeObject(store, object)
        const before = await store.usage()
        const writer = store.openWriter()
        await writer.putBlock(object.bytes, object.slices)
        const info = await writer.commit(object.oid, object.descriptors)
        assert.deepEqual(await store.usage(), before)
        assert.deepEqual(await store.stat(object.oid), info)
        // one object, so one release leaves nothing referenced
        assert.equal(await store.release(object.oid), true)
        await store.gc()
        await assertEmpty(store)
      })

      test('chunks shared by two objects stay until both are released', async (store) => {
        const [a, b, c, d] = [randomBytes(10_000), randomBytes(20_000), randomBytes(30_000), randomBytes(40_000)]
        const first = objectOf([a, b, c])
        const second = objectOf([b, c, d])
        await writeObject(store, first)
        await writeObject(store, second)
        assert.deepEqual(await store.usage(), { objects: 2, chunks: 4, bytes: 100_000 })
        await store.release(first.oid)
        assert.deepEqual(await store.gc(), { chunks: 1, bytes: 10_000 })
        assert.equal(await store.has(cidOf(a)), false)
        for (const bytes of [b, c, d]) assertSameBytes(await store.get(cidOf(bytes)), bytes)
        await store.release(second.oid)
        await store.gc()
        await assertEmpty(store)
      })

      test('a chunk repeated inside an object is stored and referenced once', async (store) => {
        const [a, b] = [randomBytes(5000), randomBytes(6000)]
        const object = objectOf([a, b, a, a, b])
        await writeObject(store, object)
        assert.deepEqual(await store.usage(), { objects: 1, chunks: 2, bytes: 11_000 })
        assert.deepEqual(await collect(store.manifest(object.oid)), object.descriptors)
        await store.release(object.oid)
        await store.gc()
        await assertEmpty(store)
      })
    })

    describe('pins and concurrency', () => {
      test('gc never collects the chunks an open writer wrote or found', async (store) => {
        const loose = randomBytes(8000)
        await store.put(cidOf(loose), loose)
        const fresh = randomBytes(9000)
        const object = objectOf([loose, fresh])
        const writer = store.openWriter()
        await writer.putChunk(cidOf(loose), loose) // already present: pinned, not rewritten
        await writer.putChunk(cidOf(fresh), fresh)
        assert.deepEqual(await store.gc(), { chunks: 0, bytes: 0 })
        assert.equal(await store.has(cidOf(loose)), true)
        await writer.commit(object.oid, object.descriptors)
        await store.gc()
        assertSameBytes(await store.get(cidOf(loose)), loose)
        assertSameBytes(await store.get(cidOf(fresh)), fresh)
        assert.deepEqual(await store.usage(), { objects: 1, chunks: 2, bytes: 17_000 })
      })

      test('concurrent writers sharing chunks each commit a whole object', async (store) => {
        const shared = Array.from({ length: 6 }, () => randomBytes(50_000))
        const objects = Array.from({ length: 4 }, (_, w) => objectOf([...shared.slice(w, w + 3), randomBytes(40_000), randomBytes(30_000)]))
        const writers = objects.map(() => store.openWriter())
        // interleave the blocks of all writers
        await Promise.all(objects.map(async (object, w) => {
          for (const slice of object.slices) await writers[w].putBlock(object.bytes, [slice])
        }))
        const infos = await Promise.all(objects.map(async (object, w) => await writers[w].commit(object.oid, object.descriptors)))
        assert.deepEqual(infos.map(i => i.oid), objects.map(o => o.oid))
        for (const object of objects) {
          const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
          assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
        }
        assert.equal((await store.usage()).chunks, 6 + 4 * 2)
        for (const object of objects) await store.release(object.oid)
        await store.gc()
        await assertEmpty(store)
      })

      test('a chunk written by a writer that aborts still serves another writer that needs it', async (store) => {
        const common = randomBytes(70_000)
        const kept = objectOf([common, randomBytes(1000)])
        const dropped = store.openWriter()
        const keeper = store.openWriter()
        await Promise.all([
          dropped.putChunk(cidOf(common), common),
          keeper.putBlock(kept.bytes, kept.slices)
        ])
        await dropped.abort()
        await store.gc()
        await keeper.commit(kept.oid, kept.descriptors)
        assertSameBytes(await store.get(cidOf(common)), common)
      })

      test('writer.has answers for the store and keeps what it found for the writer, through a release and a gc', async (store) => {
        const old = makeObject(200_000, [50_000])
        await writeObject(store, old)
        const found = chunkBytes(old, 2)
        const absent = randomBytes(20_000)
        const writer = store.openWriter()
        assert.equal(await writer.has(cidOf(found)), true)
        assert.equal(await writer.has(cidOf(absent)), false)
        await rejectsWithCode(writer.has('not-a-cid'), 'ERR_INVALID_CID')
        assert.equal(await store.release(old.oid), true)
        await store.gc()
        // The chunk the writer found survives the gc (the disk store may keep more while a writer
        // older than the release is open); the object the writer commits uses it as stored.
        assert.equal(await store.has(cidOf(found)), true, 'the chunk the writer found was collected')
        await writer.putChunk(cidOf(absent), absent)
        const object = objectOf([found, absent])
        await writer.commit(object.oid, object.descriptors)
        const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
        assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
        await rejectsWithCode(writer.has(cidOf(found)), 'ERR_CLOSED')
        assert.equal(await store.release(object.oid), true)
        await store.gc()
        await assertEmpty(store)
      })

      test('a chunk a writer found in an object survives that object\'s release and a gc while the writer is open', async (store) => {
        const old = makeObject(200_000, [50_000])
        await writeObject(store, old)
        const relied = chunkBytes(old, 1)
        const fresh = randomBytes(30_000)
        const object = objectOf([fresh, relied])
        const writer = store.openWriter()
        // Found present (referenced by `old`): nothing is written, the writer relies on it.
        await writer.putBlock(relied, [{ cid: cidOf(relied), start: 0, length: relied.byteLength }])
        await writer.putChunk(cidOf(fresh), fresh)
        assert.equal(await store.release(old.oid), true)
        await store.gc()
        assert.equal(await store.has(cidOf(relied)), true, 'the chunk the writer relies on was collected')
        const info = await writer.commit(object.oid, object.descriptors)
        assert.equal(info.size, 80_000)
        assertSameBytes(await store.get(cidOf(relied)), relied)
        const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
        assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
        assert.equal(await store.release(object.oid), true)
        await store.gc()
        await assertEmpty(store)
      })

      test('a chunk written by a writer that aborts serves a writer opened later that put it again', async (store) => {
        const common = randomBytes(60_000)
        const first = store.openWriter()
        await first.putChunk(cidOf(common), common)
        const object = objectOf([randomBytes(5000), common])
        const second = store.openWriter()
        await second.putBlock(object.bytes, object.slices)
        await first.abort()
        await store.gc()
        assert.equal(await store.has(cidOf(common)), true)
        await second.commit(object.oid, object.descriptors)
        assertSameBytes(await store.get(cidOf(common)), common)
        const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
        assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
        await store.release(object.oid)
        await store.gc()
        await assertEmpty(store)
      })

      test('an aborted writer\'s chunks are collected even while a writer opened after it is open', async (store) => {
        const dropped = randomBytes(25_000)
        const first = store.openWriter()
        await first.putBlock(dropped, [{ cid: cidOf(dropped), start: 0, length: dropped.byteLength }])
        await first.abort()
        const second = store.openWriter()
        const own = randomBytes(11_000)
        await second.putChunk(cidOf(own), own)
        assert.deepEqual(await store.gc(), { chunks: 1, bytes: 25_000 })
        assert.equal(await store.has(cidOf(dropped)), false)
        await rejectsWithCode(store.get(cidOf(dropped)), 'ERR_NOT_FOUND')
        // the open writer's own chunk stays
        assertSameBytes(await store.get(cidOf(own)), own)
        await second.abort()
        await store.gc()
        await assertEmpty(store)
      })

      test('parallel commits of one object leave it referenced once', async (store) => {
        const object = makeObject(300_000, [60_000])
        const writers = [store.openWriter(), store.openWriter(), store.openWriter()]
        await Promise.all(writers.map(async w => await w.putBlock(object.bytes, object.slices)))
        await Promise.all(writers.map(async w => await w.commit(object.oid, object.descriptors)))
        assert.deepEqual(await store.usage(), { objects: 1, chunks: object.descriptors.length, bytes: 300_000 })
        await store.release(object.oid)
        await store.gc()
        await assertEmpty(store)
      })
    })

    describe('closing', () => {
      test('every call after close fails with ERR_CLOSED', async (store) => {
        const object = makeObject(10_000, [5000])
        await writeObject(store, object)
        const writer = store.openWriter()
        await store.close()
        const cid = object.descriptors[0].cid
        await rejectsWithCode(store.has(cid), 'ERR_CLOSED')
        await rejectsWithCode(store.get(cid), 'ERR_CLOSED')
        await rejectsWithCode(collect(store.getMany([cid])), 'ERR_CLOSED')
        await rejectsWithCode(store.put(cid, chunkBytes(object, 0)), 'ERR_CLOSED')
        await rejectsWithCode(store.stat(object.oid), 'ERR_CLOSED')
        await rejectsWithCode(collect(store.manifest(object.oid)), 'ERR_CLOSED')
        await rejectsWithCode(collect(store.objects()), 'ERR_CLOSED')
        await rejectsWithCode(store.release(object.oid), 'ERR_CLOSED')
        await rejectsWithCode(store.gc(), 'ERR_CLOSED')
        await rejectsWithCode(store.usage(), 'ERR_CLOSED')
        await rejectsWithCode(store.putManifest(object.oid, object.descriptors), 'ERR_CLOSED')
        await rejectsWithCode(writer.putChunk(cid, chunkBytes(object, 0)), 'ERR_CLOSED')
        assert.throws(() => store.openWriter(), { code: 'ERR_CLOSED' })
        await store.close() // closing twice is harmless
      })
    })
  })
}
