import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, open, readdir, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { cachedStore, createMemoryStore, openDiskStore } from '../../src/store/index.ts'
import type { BorrowedChunk, ChunkStore, ReadOptions } from '../../src/store/types.ts'
import {
  assertSameBytes, chunkBytes, cidOf, collect, drainUntilFailure, makeObject, rejectsWithCode, storeCompliance, writeObject, type TestObject
} from './compliance.ts'

async function temporaryDirectory (): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-cache-store-'))
  return { dir, cleanup: async () => await rm(dir, { recursive: true, force: true }) }
}

storeCompliance('CachedStore over MemoryStore', async () => ({ store: cachedStore(createMemoryStore()), cleanup: async () => {} }))

storeCompliance('CachedStore over DiskStore', async () => {
  const { dir, cleanup } = await temporaryDirectory()
  return { store: cachedStore(await openDiskStore({ dir })), cleanup }
})

// A cache much smaller than what the suite reads: chunks are evicted all the time.
storeCompliance('CachedStore (256 KiB) over DiskStore', async () => {
  const { dir, cleanup } = await temporaryDirectory()
  return { store: cachedStore(await openDiskStore({ dir, fsync: false }), { bytes: 256 * 1024 }), cleanup }
})

storeCompliance('CachedStore (keeps nothing) over MemoryStore', async () => ({ store: cachedStore(createMemoryStore(), { bytes: 0 }), cleanup: async () => {} }))

/** What the store below the cache was asked to read. */
interface Reads { calls: number, chunks: number }

/**
 * The store under the cache, counting the chunks read from it; `delay` ms before each chunk
 * (so that concurrent readers surely overlap).
 */
function counting (store: ChunkStore, delay = 0): { store: ChunkStore, reads: Reads } {
  const reads: Reads = { calls: 0, chunks: 0 }
  const wrapped = Object.create(store) as ChunkStore
  wrapped.get = async (cid: string, o?: ReadOptions) => {
    reads.calls++
    reads.chunks++
    return await store.get(cid, o)
  }
  wrapped.borrowMany = async function * (cids: readonly string[], o?: ReadOptions): AsyncIterable<BorrowedChunk> {
    reads.calls++
    for await (const chunk of store.borrowMany(cids, o)) {
      if (delay > 0) await new Promise(resolve => setTimeout(resolve, delay))
      reads.chunks++
      yield chunk
    }
  }
  wrapped.getMany = async function * () { throw new Error('the cache reads through borrowMany') }
  return { store: wrapped, reads }
}

async function readWhole (store: ChunkStore, object: TestObject): Promise<void> {
  const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
  assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
}

async function packFile (dir: string): Promise<string> {
  const names = (await readdir(join(dir, 'packs'))).filter(n => n.endsWith('.pack'))
  assert.equal(names.length, 1)
  return join(dir, 'packs', names[0])
}

/** Flips a byte of a chunk's bytes in the pack file, found by searching for them. */
async function corrupt (dir: string, bytes: Uint8Array): Promise<void> {
  const handle = await open(await packFile(dir), 'r+')
  try {
    const content = await handle.readFile()
    const position = content.indexOf(Buffer.from(bytes))
    assert.ok(position >= 0, 'chunk bytes not found in the pack')
    const one = Buffer.from([content[position + 10] ^ 0xff])
    await handle.write(one, 0, 1, position + 10)
  } finally { await handle.close() }
}

describe('CachedStore', () => {
  it('serves a chunk read once from memory: the store below is not asked again', async () => {
    const below = counting(createMemoryStore())
    const cache = cachedStore(below.store)
    const object = makeObject(2 * 1024 * 1024 + 99, [64 * 1024, 3000, 100_000])
    await writeObject(cache, object)
    await readWhole(cache, object)
    assert.equal(below.reads.chunks, object.descriptors.length)
    const after = { ...below.reads }

    await readWhole(cache, object)
    for (const [i, d] of object.descriptors.entries()) assertSameBytes(await cache.get(d.cid), chunkBytes(object, i))
    const borrowed = await collect(cache.borrowMany(object.descriptors.map(d => d.cid)))
    borrowed.forEach((chunk, i) => { assertSameBytes(chunk.bytes, chunkBytes(object, i)); chunk.release() })
    assert.deepEqual(below.reads, after)
    const stats = cache.stats()
    assert.equal(stats.misses, object.descriptors.length)
    assert.equal(stats.hits, 3 * object.descriptors.length)
    // counted as the buffers they take: sizes rounded up to a quarter of their power of two
    assert.ok(stats.bytes >= object.bytes.byteLength && stats.bytes <= 1.25 * object.bytes.byteLength, `${stats.bytes} bytes held`)
    await cache.close()
  })

  it('hands out copies from get and getMany: writing to them does not change what is cached', async () => {
    const cache = cachedStore(createMemoryStore())
    const bytes = randomBytes(10_000)
    await cache.put(cidOf(bytes), bytes)
    const first = await cache.get(cidOf(bytes))
    first.fill(0)
    const [many] = await collect(cache.getMany([cidOf(bytes)]))
    many.bytes.fill(1)
    assertSameBytes(await cache.get(cidOf(bytes)), bytes)
    assert.equal(cache.stats().misses, 1)
    await cache.close()
  })

  it('concurrent readers of the same chunks share one read of each (memory store below)', async () => {
    const below = counting(createMemoryStore(), 1)
    const cache = cachedStore(below.store)
    const object = makeObject(6 * 1024 * 1024, [64 * 1024, 100_000, 20_000])
    await writeObject(cache, object)
    await Promise.all([0, 1, 2, 3].map(async () => await readWhole(cache, object)))
    assert.equal(below.reads.chunks, object.descriptors.length)
    const stats = cache.stats()
    assert.equal(stats.misses, object.descriptors.length)
    assert.ok(stats.joined > 0, 'some readers waited for reads started by others')
    assert.equal(stats.misses + stats.joined + stats.hits, 4 * object.descriptors.length)
    await cache.close()
  })

  it('concurrent readers of a disk store: each chunk is read and hashed once, even when the cache keeps nothing', async () => {
    const { dir, cleanup } = await temporaryDirectory()
    try {
      for (const bytes of [64 * 1024 * 1024, 0]) {
        const below = counting(await openDiskStore({ dir }))
        const cache = cachedStore(below.store, { bytes })
        const object = makeObject(16 * 1024 * 1024, [64 * 1024, 30_000, 200_000])
        await writeObject(cache, object)
        // Started together: with nothing kept, only joining reads in flight saves any.
        await Promise.all([0, 1, 2, 3].map(async () => await readWhole(cache, object)))
        assert.equal(below.reads.chunks, object.descriptors.length, `cache of ${bytes} bytes`)
        await cache.close()
      }
    } finally { await cleanup() }
  })

  it('holds at most its bytes, whatever is read through it', async () => {
    const capacity = 1024 * 1024
    const cache = cachedStore(createMemoryStore(), { bytes: capacity })
    const objects = [makeObject(5 * 1024 * 1024, [64 * 1024, 130_000, 7000]), makeObject(3 * 1024 * 1024, [1024 * 1024])]
    for (const object of objects) await writeObject(cache, object)
    let most = 0
    for (let round = 0; round < 3; round++) {
      for (const object of objects) {
        for await (const chunk of cache.borrowMany(object.descriptors.map(d => d.cid))) {
          most = Math.max(most, cache.stats().bytes)
          chunk.release()
        }
      }
    }
    // a chunk as big as the cache is served but not kept
    const huge = randomBytes(capacity + 1)
    await cache.put(cidOf(huge), huge)
    assertSameBytes(await cache.get(cidOf(huge)), huge)
    most = Math.max(most, cache.stats().bytes)
    assert.ok(most <= capacity, `held ${most} bytes, more than ${capacity}`)
    assert.ok(cache.stats().evictions > 0)
    await cache.close()
  })

  it('lent bytes stay as they were after their chunks are evicted', async () => {
    const cache = cachedStore(createMemoryStore(), { bytes: 512 * 1024 })
    const first = makeObject(512 * 1024, [64 * 1024])
    const second = makeObject(4 * 1024 * 1024, [64 * 1024])
    await writeObject(cache, first)
    await writeObject(cache, second)
    const held = await collect(cache.borrowMany(first.descriptors.map(d => d.cid)))
    // Read twice, so it displaces the first object from main as well as from the window.
    await readWhole(cache, second)
    await readWhole(cache, second)
    const stats = cache.stats()
    assert.ok(first.descriptors.every(d => !cache.holds(d.cid)), `the first object was evicted (${JSON.stringify(stats)})`)
    held.forEach((chunk, i) => assertSameBytes(chunk.bytes, chunkBytes(first, i), `loan ${i}`))
    for (const chunk of held) chunk.release()
    await cache.close()
  })

  it('a corrupted chunk on disk is still found on a miss; a copy verified before stays served', async () => {
    const { dir, cleanup } = await temporaryDirectory()
    const cache = cachedStore(await openDiskStore({ dir }))
    try {
      const object = makeObject(10 * 64 * 1024, [64 * 1024])
      await writeObject(cache, object)
      const cids = object.descriptors.map(d => d.cid)
      assertSameBytes(await cache.get(cids[2]), chunkBytes(object, 2))
      await corrupt(dir, chunkBytes(object, 2))
      await corrupt(dir, chunkBytes(object, 5))
      // chunk 2 was verified when it was read, and memory is trusted (the ARC model)
      assertSameBytes(await cache.get(cids[2]), chunkBytes(object, 2))
      const { items, error } = await drainUntilFailure(cache.getMany(cids))
      assert.deepEqual(items.map(i => i.cid), cids.slice(0, 5))
      assert.equal(error?.code, 'ERR_HASH_MISMATCH')
      await rejectsWithCode(cache.get(cids[5]), 'ERR_NOT_FOUND')
      assert.equal(cache.holds(cids[5]), false)
      // the chunks after the bad one are still served, to this reader or another
      assertSameBytes(await cache.get(cids[6]), chunkBytes(object, 6))
    } finally {
      await cache.close()
      await cleanup()
    }
  })

  it('a read that fails at one chunk does not fail other readers of the chunks after it', async () => {
    const below = counting(createMemoryStore(), 2)
    const cache = cachedStore(below.store)
    const object = makeObject(8 * 50_000, [50_000])
    await writeObject(cache, object)
    const cids = object.descriptors.map(d => d.cid)
    const missing = cidOf(randomBytes(100))
    const [broken, whole] = await Promise.all([
      drainUntilFailure(cache.getMany([cids[0], missing, ...cids.slice(1)])),
      collect(cache.getMany(cids.slice(1)))
    ])
    assert.deepEqual(broken.items.map(i => i.cid), [cids[0]])
    assert.equal(broken.error?.code, 'ERR_NOT_FOUND')
    assert.deepEqual(whole.map(w => w.cid), cids.slice(1))
    whole.forEach((w, i) => assertSameBytes(w.bytes, chunkBytes(object, i + 1)))
    await cache.close()
  })

  it('serves no chunk that gc collected from the store', async () => {
    const cache = cachedStore(createMemoryStore())
    const kept = makeObject(200_000, [50_000])
    const dropped = makeObject(200_000, [40_000])
    await writeObject(cache, kept)
    await writeObject(cache, dropped)
    await readWhole(cache, kept)
    await readWhole(cache, dropped)
    await cache.release(dropped.oid)
    // released, not yet collected: still in the store, still served
    assertSameBytes(await cache.get(dropped.descriptors[0].cid), chunkBytes(dropped, 0))
    await cache.gc()
    for (const d of dropped.descriptors) await rejectsWithCode(cache.get(d.cid), 'ERR_NOT_FOUND')
    const misses = cache.stats().misses
    await readWhole(cache, kept)
    assert.equal(cache.stats().misses, misses, 'the chunks still stored stay cached')
    await cache.close()
  })

  it('one pass over an object bigger than the cache leaves a hot object cached', async () => {
    const below = counting(createMemoryStore())
    const cache = cachedStore(below.store, { bytes: 4 * 1024 * 1024 })
    const hot = makeObject(1024 * 1024, [64 * 1024])
    const big = makeObject(16 * 1024 * 1024, [64 * 1024])
    await writeObject(cache, hot)
    await writeObject(cache, big)
    for (let i = 0; i < 4; i++) await readWhole(cache, hot)
    await readWhole(cache, big)
    const before = below.reads.chunks
    await readWhole(cache, hot)
    assert.equal(below.reads.chunks, before, 'the hot object was served from memory')
    await cache.close()
  })

  it('readers one behind the other, further apart than the window: each chunk is read from the store once', async () => {
    const below = counting(createMemoryStore())
    const cache = cachedStore(below.store, { bytes: 16 * 1024 * 1024 })
    const big = makeObject(64 * 1024 * 1024, [64 * 1024])
    await writeObject(cache, big)
    const cids = big.descriptors.map(d => d.cid)
    // Three readers that asked at the same time, and take their chunks 5 MiB apart (a 10 MiB
    // spread: more than the 1.6 MiB window, less than the cache).
    const readers = [0, 1, 2].map(() => cache.borrowMany(cids)[Symbol.asyncIterator]())
    const taken = [0, 0, 0]
    const take = async (r: number): Promise<void> => {
      const { value } = await readers[r].next()
      assertSameBytes(value!.bytes, chunkBytes(big, taken[r]), `reader ${r}, chunk ${taken[r]}`)
      value!.release()
      taken[r]++
    }
    for (let r = 0; r < readers.length; r++) await take(r)
    for (let step = 1; taken[2] < cids.length; step++) {
      for (let r = 0; r < readers.length; r++) if (step > 80 * r && taken[r] < cids.length) await take(r)
    }
    assert.equal(below.reads.chunks, cids.length)
    await cache.close()
  })

  it('readers following each other further apart than the cache holds still hit part of the object', async () => {
    const capacity = 4 * 1024 * 1024
    const below = counting(createMemoryStore())
    const cache = cachedStore(below.store, { bytes: capacity })
    const big = makeObject(16 * 1024 * 1024, [64 * 1024])
    await writeObject(cache, big)
    await readWhole(cache, big)
    const passes = 3
    const before = below.reads.chunks
    for (let i = 0; i < passes; i++) await readWhole(cache, big)
    const hitRate = 1 - (below.reads.chunks - before) / (passes * big.descriptors.length)
    // LRU would hit nothing here; the best possible is capacity / object size (25 %).
    assert.ok(hitRate >= 0.15, `hit rate ${hitRate.toFixed(2)}`)
    await cache.close()
  })

  it('an abandoned iteration leaves its reads to finish for others, and a stopped reader stops waiting', async () => {
    const below = counting(createMemoryStore(), 5)
    const cache = cachedStore(below.store)
    const object = makeObject(64 * 50_000, [50_000])
    await writeObject(cache, object)
    const cids = object.descriptors.map(d => d.cid)
    for await (const chunk of cache.borrowMany(cids)) { chunk.release(); break }
    const controller = new AbortController()
    const waiting = drainUntilFailure(cache.getMany(cids, { signal: controller.signal }))
    setTimeout(() => controller.abort(), 20)
    const { error } = await waiting
    assert.equal(error?.code, 'ERR_ABORTED')
    await readWhole(cache, object)
    assert.equal(below.reads.chunks, cids.length, 'no chunk was read twice')
    await cache.close()
  })

  it('closing fails the readers waiting for reads in flight with ERR_CLOSED', async () => {
    const below = counting(createMemoryStore(), 20)
    const cache = cachedStore(below.store)
    const object = makeObject(20 * 50_000, [50_000])
    await writeObject(cache, object)
    const waiting = drainUntilFailure(cache.getMany(object.descriptors.map(d => d.cid)))
    await new Promise(resolve => setTimeout(resolve, 30))
    await cache.close()
    const { error } = await waiting
    assert.equal(error?.code, 'ERR_CLOSED')
    await rejectsWithCode(cache.get(object.descriptors[0].cid), 'ERR_CLOSED')
  })

  it('refuses a capacity that is not a non-negative integer', () => {
    for (const bytes of [-1, 1.5, Number.NaN]) assert.throws(() => cachedStore(createMemoryStore(), { bytes }), { code: 'ERR_INVALID_CONFIG' })
  })
})
