import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import Database from 'better-sqlite3'
import { randomBytes } from 'node:crypto'
import { mkdtemp, open, readdir, rm, stat, unlink } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pageOffsetOf, sharedBlocks } from '../../src/core/blocks.ts'
import { openDiskStore, openStore, type DiskStoreOptions } from '../../src/store/index.ts'
import type { ChunkStore } from '../../src/store/types.ts'
import {
  assertSameBytes, chunkBytes, cidOf, collect, drainUntilFailure, makeObject, rejectsWithCode, storeCompliance, writeObject, type TestObject
} from './compliance.ts'

async function temporaryDirectory (): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-disk-store-'))
  return { dir, cleanup: async () => await rm(dir, { recursive: true, force: true }) }
}

storeCompliance('DiskStore', async () => {
  const { dir, cleanup } = await temporaryDirectory()
  return { store: await openDiskStore({ dir }), cleanup }
})

storeCompliance('DiskStore (small packs, no fsync)', async () => {
  const { dir, cleanup } = await temporaryDirectory()
  return { store: await openDiskStore({ dir, fsync: false, packSize: 256 * 1024 }), cleanup }
})

// The buffered path, for filesystems that refuse O_DIRECT (tmpfs, some overlays).
storeCompliance('DiskStore (buffered I/O)', async () => {
  const { dir, cleanup } = await temporaryDirectory()
  return { store: await openDiskStore({ dir, direct: false }), cleanup }
})

/** Runs `body` with a fresh store directory, closing and removing everything afterwards. */
function withDirectory (title: string, body: (dir: string) => Promise<void>): void {
  it(title, async () => {
    const { dir, cleanup } = await temporaryDirectory()
    try { await body(dir) } finally { await cleanup() }
  })
}

async function packFiles (dir: string): Promise<Array<{ name: string, size: number }>> {
  const names = (await readdir(join(dir, 'packs'))).filter(n => n.endsWith('.pack')).sort()
  return await Promise.all(names.map(async name => ({ name, size: (await stat(join(dir, 'packs', name))).size })))
}

/** Where a chunk's bytes lie: found by searching the pack files for them. */
async function locate (dir: string, bytes: Uint8Array): Promise<{ path: string, position: number }> {
  for (const { name } of await packFiles(dir)) {
    const path = join(dir, 'packs', name)
    const handle = await open(path, 'r')
    try {
      const content = await handle.readFile()
      const position = content.indexOf(Buffer.from(bytes))
      if (position >= 0) return { path, position }
    } finally { await handle.close() }
  }
  throw new Error('chunk bytes not found in any pack')
}

async function flipByte (path: string, position: number): Promise<void> {
  const handle = await open(path, 'r+')
  try {
    const one = Buffer.alloc(1)
    await handle.read(one, 0, 1, position)
    one[0] ^= 0xff
    await handle.write(one, 0, 1, position)
  } finally { await handle.close() }
}

async function assertObjectReadsBack (store: ChunkStore, object: TestObject): Promise<void> {
  assert.deepEqual(await collect(store.manifest(object.oid)), object.descriptors)
  const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
  assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
}

/** Reads the index directly (the store must be closed: it holds the database exclusively). */
function inspectIndex (dir: string): { version: number, columns: string[] } {
  const db = new Database(join(dir, 'index.sqlite'), { readonly: true })
  try {
    const version = db.pragma('user_version', { simple: true }) as number
    const columns = (db.pragma('table_info(chunks)') as Array<{ name: string }>).map(c => c.name)
    return { version, columns }
  } finally { db.close() }
}

describe('DiskStore on disk', () => {
  withDirectory('everything persists across close and reopen', async (dir) => {
    const options: DiskStoreOptions = { dir }
    let store = await openDiskStore(options)
    const object = makeObject(3 * 1024 * 1024 + 11, [64 * 1024, 200_000])
    const loose = randomBytes(12_345)
    await writeObject(store, object)
    await store.put(cidOf(loose), loose)
    const info = await store.stat(object.oid)
    const usage = await store.usage()
    await store.close()

    store = await openDiskStore(options)
    try {
      assert.deepEqual(await store.stat(object.oid), info)
      assert.deepEqual(await store.usage(), usage)
      assert.deepEqual(await collect(store.manifest(object.oid)), object.descriptors)
      assert.deepEqual(await collect(store.objects()), [info])
      const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
      assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
      assertSameBytes(await store.get(cidOf(loose)), loose)
      // appends go on after a reopen, into the same pack
      const more = makeObject(100_000, [30_000])
      await writeObject(store, more)
      assert.equal((await packFiles(dir)).length, 1)
      assert.equal((await store.usage()).objects, 2)
    } finally { await store.close() }
  })

  withDirectory('runs lying in a pooled block keep their page offset in the pack, read back, and leave zeros around them', async (dir) => {
    const store = await openDiskStore({ dir })
    const block = sharedBlocks(4 * 1024 * 1024).acquire()
    try {
      // The run starts at an odd place in the block; the block's bytes before it are a marker.
      const at = 1234
      const object = makeObject(700_000, [64 * 1024, 100_000])
      block.bytes.fill(0xab, 0, at)
      block.bytes.set(object.bytes, at)
      block.bytes.fill(0xcd, at + object.bytes.byteLength, at + object.bytes.byteLength + 8192)
      const writer = store.openWriter()
      await writer.putBlock(block.bytes, object.slices.map(s => ({ ...s, start: s.start + at })))
      await writer.commit(object.oid, object.descriptors)
      await assertObjectReadsBack(store, object)
      const { path, position } = await locate(dir, object.bytes)
      const offset = pageOffsetOf(block.bytes.subarray(at))
      if (offset === undefined) {
        // No direct I/O where this runs (e.g. tmpfs): blocks are not aligned, bytes are copied.
        assert.equal(position % 8, at % 8)
        return
      }
      assert.equal(position % 4096, offset, 'the run keeps its page offset')
      // Around the run on its first and last pages the pack holds zeros, not what the block held
      // there (the marker before it, whatever follows it).
      const end = position + object.bytes.byteLength
      const around = Buffer.alloc(offset + (4096 - end % 4096) % 4096)
      const handle = await open(path, 'r')
      try {
        await handle.read(around, 0, offset, position - offset)
        await handle.read(around, offset, around.byteLength - offset, end)
      } finally { await handle.close() }
      assert.ok(around.every(b => b === 0), 'the padding around the run is zeros')
    } finally {
      block.release()
      await store.close()
    }
  })

  withDirectory('a corrupted chunk is refused with ERR_HASH_MISMATCH, dropped, and repairable', async (dir) => {
    const store = await openDiskStore({ dir })
    try {
      const object = makeObject(640 * 1024, [64 * 1024])
      await writeObject(store, object)
      const victim = 3
      const { path, position } = await locate(dir, chunkBytes(object, victim))
      await flipByte(path, position + 100)
      const cid = object.descriptors[victim].cid

      await rejectsWithCode(store.get(cid), 'ERR_HASH_MISMATCH')
      assert.equal(await store.has(cid), false)
      await rejectsWithCode(store.get(cid), 'ERR_NOT_FOUND')
      // the object stays listed: its manifest is intact and the chunk can be fetched again
      assert.ok(await store.stat(object.oid))
      assert.equal((await store.usage()).chunks, object.descriptors.length - 1)

      await store.put(cid, chunkBytes(object, victim))
      const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
      assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
      // the repaired chunk kept its reference: releasing the object frees everything
      await store.release(object.oid)
      await store.gc()
      assert.deepEqual(await store.usage(), { objects: 0, chunks: 0, bytes: 0 })
    } finally { await store.close() }
  })

  withDirectory('getMany yields the chunks before a corrupted one, then ERR_HASH_MISMATCH', async (dir) => {
    const store = await openDiskStore({ dir })
    try {
      const object = makeObject(20 * 64 * 1024, [64 * 1024])
      await writeObject(store, object)
      const { path, position } = await locate(dir, chunkBytes(object, 12))
      await flipByte(path, position)
      const cids = object.descriptors.map(d => d.cid)
      const { items, error } = await drainUntilFailure(store.getMany(cids))
      assert.deepEqual(items.map(i => i.cid), cids.slice(0, 12))
      assert.equal(error?.code, 'ERR_HASH_MISMATCH')
      assert.equal(await store.has(cids[12]), false)
      assert.equal(await store.has(cids[13]), true)
    } finally { await store.close() }
  })

  withDirectory('gc deletes dead packs and compacts sparse ones; the data stays readable', async (dir) => {
    const packSize = 1024 * 1024
    const store = await openDiskStore({ dir, packSize })
    try {
      const objects = Array.from({ length: 8 }, () => makeObject(packSize, [64 * 1024]))
      for (const object of objects) await writeObject(store, object)
      const before = await packFiles(dir)
      assert.ok(before.length >= 8, `expected a pack per object, got ${before.length}`)
      // free all of objects 0-1 (whole packs) and three quarters of objects 2-5 (sparse packs)
      for (const object of objects.slice(0, 6)) await store.release(object.oid)
      const survivors = objects.slice(2, 6).map(object => makeObject(packSize / 4, [64 * 1024], object.bytes.subarray(0, packSize / 4)))
      for (const survivor of survivors) await store.putManifest(survivor.oid, survivor.descriptors)

      const result = await store.gc()
      assert.equal(result.chunks, 2 * 16 + 4 * 12)
      assert.equal(result.bytes, (2 + 4 * 0.75) * packSize)
      const after = await packFiles(dir)
      const total = (files: Array<{ size: number }>) => files.reduce((sum, f) => sum + f.size, 0)
      assert.ok(total(after) <= total(before) - 4 * packSize, `packs should shrink: ${total(before)} → ${total(after)}`)
      for (const gone of before.slice(0, 6)) assert.ok(!after.some(f => f.name === gone.name), `${gone.name} should be gone`)

      for (const object of [...survivors, ...objects.slice(6)]) {
        const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
        assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
      }
      assert.equal((await store.usage()).bytes, (4 * 0.25 + 2) * packSize)
      assert.deepEqual(await store.gc(), { chunks: 0, bytes: 0 })
    } finally { await store.close() }
    // and the compacted layout survives a reopen
    const reopened = await openDiskStore({ dir, packSize })
    try {
      for await (const info of reopened.objects()) {
        const cids = (await collect(reopened.manifest(info.oid))).map(d => d.cid)
        assert.equal((await collect(reopened.getMany(cids))).length, cids.length)
      }
    } finally { await reopened.close() }
  })

  withDirectory('gc leaves alone the packs an open writer wrote into, even after they rolled over', async (dir) => {
    const store = await openDiskStore({ dir, packSize: 256 * 1024 })
    try {
      const object = makeObject(2 * 1024 * 1024, [64 * 1024])
      const writer = store.openWriter()
      for (const slice of object.slices) await writer.putBlock(object.bytes, [slice])
      const packsBefore = (await packFiles(dir)).length
      assert.ok(packsBefore >= 8)
      assert.deepEqual(await store.gc(), { chunks: 0, bytes: 0 })
      assert.equal((await packFiles(dir)).length, packsBefore)
      await writer.commit(object.oid, object.descriptors)
      const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
      assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
    } finally { await store.close() }
  })

  withDirectory('compaction under a running getMany: reads finish, later chunks are found in their new place', async (dir) => {
    const store = await openDiskStore({ dir, packSize: 1024 * 1024 })
    try {
      // one chunk of the kept object, then two of a dropped one, over and over: packs end up a third live
      const kept = makeObject(2 * 1024 * 1024, [32 * 1024])
      const dropped = makeObject(4 * 1024 * 1024, [32 * 1024])
      const keptWriter = store.openWriter()
      const droppedWriter = store.openWriter()
      for (let i = 0; i < kept.slices.length; i++) {
        await keptWriter.putBlock(kept.bytes, [kept.slices[i]])
        await droppedWriter.putBlock(dropped.bytes, dropped.slices.slice(2 * i, 2 * i + 2))
      }
      await keptWriter.commit(kept.oid, kept.descriptors)
      await droppedWriter.commit(dropped.oid, dropped.descriptors)
      await store.release(dropped.oid)
      const sizeBefore = (await packFiles(dir)).reduce((sum, f) => sum + f.size, 0)

      const reading = store.getMany(kept.descriptors.map(d => d.cid))[Symbol.asyncIterator]()
      const chunks: Uint8Array[] = [(await reading.next()).value.bytes]
      await store.gc()
      for (let step = await reading.next(); step.done !== true; step = await reading.next()) chunks.push(step.value.bytes)
      assertSameBytes(Buffer.concat(chunks), kept.bytes)

      const sizeAfter = (await packFiles(dir)).reduce((sum, f) => sum + f.size, 0)
      assert.ok(sizeAfter < sizeBefore / 2, `packs should shrink: ${sizeBefore} → ${sizeAfter}`)
      const again = await collect(store.getMany(kept.descriptors.map(d => d.cid)))
      assertSameBytes(Buffer.concat(again.map(g => g.bytes)), kept.bytes)
    } finally { await store.close() }
  })

  for (const fsync of [true, false]) {
    withDirectory(`chunks of writers that never committed are gone after a reopen; loose chunks and objects stay (fsync ${String(fsync)})`, async (dir) => {
      const options: DiskStoreOptions = { dir, fsync }
      let store = await openDiskStore(options)
      const object = makeObject(500_000, [64 * 1024])
      const loose = randomBytes(7777)
      const unfinished = makeObject(300_000, [50_000])
      const aborted = makeObject(200_000, [40_000])
      try {
        await writeObject(store, object)
        await store.put(cidOf(loose), loose)
        const open = store.openWriter()
        await open.putBlock(unfinished.bytes, unfinished.slices)
        const abandoned = store.openWriter()
        await abandoned.putBlock(aborted.bytes, aborted.slices)
        await abandoned.abort()
        // before the reopen, the written chunks are all there
        for (const { cid } of [...unfinished.descriptors, ...aborted.descriptors]) assert.equal(await store.has(cid), true)
        // `open` is neither committed nor aborted when the store closes
      } finally { await store.close() }

      store = await openDiskStore(options)
      try {
        for (const { cid } of [...unfinished.descriptors, ...aborted.descriptors]) {
          assert.equal(await store.has(cid), false, `chunk ${cid} of an uncommitted writer survived the reopen`)
          await rejectsWithCode(store.get(cid), 'ERR_NOT_FOUND')
        }
        assertSameBytes(await store.get(cidOf(loose)), loose)
        await assertObjectReadsBack(store, object)
        assert.deepEqual(await store.usage(), { objects: 1, chunks: object.descriptors.length + 1, bytes: 500_000 + 7777 })
        // The dropped chunks can be written again, and their objects committed.
        await writeObject(store, unfinished)
        await assertObjectReadsBack(store, unfinished)
        // gc finds nothing of the writers' left: only the loose chunk is unreferenced
        assert.deepEqual(await store.gc(), { chunks: 1, bytes: 7777 })
        await assertObjectReadsBack(store, object)
      } finally { await store.close() }
    })
  }

  for (const old of [1, 2]) {
    withDirectory(`opening a schema-${old} index adds the missing columns, keeps loose chunks and objects, and goes on working`, async (dir) => {
      const object = makeObject(400_000, [64 * 1024, 30_000])
      const loose = randomBytes(4321)
      let store = await openDiskStore({ dir })
      try {
        await writeObject(store, object)
        await store.put(cidOf(loose), loose)
      } finally { await store.close() }
      assert.equal(inspectIndex(dir).version, 3)

      // Turn the index back into the old schema: schema 1 had neither seq nor loose, schema 2 no loose.
      const db = new Database(join(dir, 'index.sqlite'))
      try {
        db.exec('ALTER TABLE chunks DROP COLUMN loose')
        if (old === 1) db.exec('ALTER TABLE chunks DROP COLUMN seq')
        db.pragma(`user_version = ${old}`)
      } finally { db.close() }
      const oldColumns = ['digest', 'pack', 'position', 'length', 'refs', ...(old === 2 ? ['seq'] : [])]
      assert.deepEqual(inspectIndex(dir), { version: old, columns: oldColumns })

      store = await openDiskStore({ dir })
      const second = makeObject(150_000, [50_000])
      try {
        assert.equal((await store.stat(object.oid))?.size, 400_000)
        await assertObjectReadsBack(store, object)
        assert.equal(await store.has(cidOf(loose)), true, `a schema-${old} loose chunk was dropped as a writer orphan`)
        assertSameBytes(await store.get(cidOf(loose)), loose)
        await writeObject(store, second)
        await assertObjectReadsBack(store, second)
        assert.equal((await store.usage()).objects, 2)
      } finally { await store.close() }
      assert.deepEqual(inspectIndex(dir), { version: 3, columns: ['digest', 'pack', 'position', 'length', 'refs', 'seq', 'loose'] })

      // Reopened as schema 3 it stays so; the loose chunk survives that reopen too; release and gc empty it.
      store = await openDiskStore({ dir })
      try {
        await assertObjectReadsBack(store, object)
        assert.equal(await store.has(cidOf(loose)), true)
        assert.equal(await store.release(object.oid), true)
        assert.equal(await store.release(second.oid), true)
        await store.gc()
        assert.deepEqual(await store.usage(), { objects: 0, chunks: 0, bytes: 0 })
        assert.equal(await store.has(cidOf(loose)), false)
      } finally { await store.close() }
      assert.equal(inspectIndex(dir).version, 3)
    })
  }

  withDirectory('a loose put of a chunk a writer holds, or a writer relying on a loose chunk, keeps it loose across a reopen', async (dir) => {
    const options: DiskStoreOptions = { dir }
    const first = randomBytes(9000)
    const second = randomBytes(9001)
    let store = await openDiskStore(options)
    try {
      // put after a writer wrote the same chunk (the put finds it present and writes nothing)
      const w1 = store.openWriter()
      await w1.putChunk(cidOf(first), first)
      await store.put(cidOf(first), first)
      await w1.abort()
      // a writer finds a loose chunk and relies on it (stamping it), then aborts
      await store.put(cidOf(second), second)
      const w2 = store.openWriter()
      await w2.putChunk(cidOf(second), second)
      await w2.abort()
    } finally { await store.close() }

    store = await openDiskStore(options)
    try {
      assertSameBytes(await store.get(cidOf(first)), first)
      assertSameBytes(await store.get(cidOf(second)), second)
      assert.deepEqual(await store.gc(), { chunks: 2, bytes: 18_001 })
    } finally { await store.close() }
  })

  withDirectory('an index written by a newer schema is refused', async (dir) => {
    const store = await openDiskStore({ dir })
    await store.close()
    const db = new Database(join(dir, 'index.sqlite'))
    try { db.pragma('user_version = 4') } finally { db.close() }
    await rejectsWithCode(openDiskStore({ dir }), 'ERR_STORE')
    assert.equal(inspectIndex(dir).version, 4)
  })

  withDirectory('chunks an open writer wrote are visible to has and get, and reused by other writers', async (dir) => {
    const store = await openDiskStore({ dir })
    try {
      const object = makeObject(256 * 1024, [64 * 1024])
      const writer = store.openWriter()
      await writer.putBlock(object.bytes, object.slices)
      for (const [i, { cid }] of object.descriptors.entries()) {
        assert.equal(await store.has(cid), true, `chunk ${i} not visible before commit`)
        assertSameBytes(await store.get(cid), chunkBytes(object, i))
      }
      assert.equal(await store.stat(object.oid), undefined, 'the object itself is not visible before commit')
      assert.deepEqual(await store.usage(), { objects: 0, chunks: 4, bytes: 256 * 1024 })
      const packBytes = async (): Promise<number> => (await packFiles(dir)).reduce((sum, f) => sum + f.size, 0)
      const before = await packBytes()
      // Another writer finds them present and writes nothing.
      const other = store.openWriter()
      await other.putBlock(object.bytes, object.slices)
      assert.equal(await packBytes(), before)
      await other.commit(object.oid, object.descriptors)
      await writer.abort()
      await store.gc()
      await assertObjectReadsBack(store, object)
    } finally { await store.close() }
  })

  withDirectory('a second store on the same directory is refused while the first is open', async (dir) => {
    const store = await openDiskStore({ dir })
    try {
      await rejectsWithCode(openDiskStore({ dir }), 'ERR_STORE')
    } finally { await store.close() }
    const again = await openDiskStore({ dir })
    await again.close()
  })

  withDirectory('chunks in a pack file that vanished count as absent', async (dir) => {
    let store = await openDiskStore({ dir })
    const object = makeObject(200_000, [50_000])
    await writeObject(store, object)
    await store.close()
    for (const { name } of await packFiles(dir)) await unlink(join(dir, 'packs', name))
    store = await openDiskStore({ dir })
    try {
      assert.equal(await store.has(object.descriptors[0].cid), false)
      await rejectsWithCode(store.get(object.descriptors[0].cid), 'ERR_NOT_FOUND')
      await writeObject(store, object) // fetched again: repaired
      assert.equal((await collect(store.getMany(object.descriptors.map(d => d.cid)))).length, 4)
    } finally { await store.close() }
  })

  it('openStore opens a disk store and wants a directory', async () => {
    await rejectsWithCode(openStore({ kind: 'disk' }), 'ERR_INVALID_CONFIG')
    const { dir, cleanup } = await temporaryDirectory()
    try {
      const store = await openStore({ kind: 'disk', dir })
      await store.close()
    } finally { await cleanup() }
  })
})
