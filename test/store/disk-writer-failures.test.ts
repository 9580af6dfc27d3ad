/**
 * DiskWriter.putBlock when part of the call fails, and commit after an unrelated pack's flush
 * failed (review findings: these failed against 955d0c0, before the fixes).
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { openDiskStore } from '../../src/store/index.ts'
import type { BlockSlice, ChunkStore, ObjectWriter } from '../../src/store/types.ts'
import { assertSameBytes, cidOf, makeObject, objectOf, rejectsWithCode, writeObject } from './compliance.ts'

function withDirectory (title: string, body: (dir: string) => Promise<void>): void {
  it(title, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-disk-failures-'))
    try { await body(dir) } finally { await rm(dir, { recursive: true, force: true }) }
  })
}

/** Chunks `a` and `b` in one buffer, not adjacent: two runs, so two writes. */
function twoRuns (aLength: number, bLength: number): { a: Uint8Array, buffer: Buffer, slices: BlockSlice[] } {
  const a = randomBytes(aLength)
  const b = randomBytes(bLength)
  const buffer = Buffer.alloc(200_000)
  buffer.set(a, 0)
  buffer.set(b, 100_000)
  return { a, buffer, slices: [{ cid: cidOf(a), start: 0, length: a.byteLength }, { cid: cidOf(b), start: 100_000, length: b.byteLength }] }
}

/**
 * The failed call has returned, so the caller may reuse its buffer (as put.ts does with a pooled
 * block); then another writer needs `a`, finds it in the index, relies on it and commits: the
 * committed chunk must hold `a`, not what the buffer held after the reuse.
 */
async function reuseThenRelyOn (store: ChunkStore, first: ObjectWriter, buffer: Buffer, a: Uint8Array): Promise<void> {
  buffer.fill(0)
  await first.abort()
  const object = objectOf([a])
  const second = store.openWriter()
  await second.putChunk(cidOf(a), a)
  await second.commit(object.oid, object.descriptors)
  assertSameBytes(await store.get(cidOf(a)), a, 'the committed object\'s chunk holds the bytes written after the caller reused its buffer')
}

describe('DiskWriter when part of a putBlock fails', () => {
  withDirectory('a putBlock refused for a malformed cid leaves its good chunks writable by later writers', async (dir) => {
    const store = await openDiskStore({ dir })
    try {
      const good = randomBytes(10_000)
      const block = Buffer.concat([good, randomBytes(100)])
      const first = store.openWriter()
      await rejectsWithCode(first.putBlock(block, [
        { cid: cidOf(good), start: 0, length: good.byteLength },
        { cid: 'not-a-cid', start: good.byteLength, length: 100 }
      ]), 'ERR_INVALID_CID')
      await first.abort()

      // `good` joined a run that never started: its `pending` entry (indexed: undefined) stays
      // for the life of the store, so every later writer skips writing it and waits for nothing.
      const object = objectOf([good])
      const second = store.openWriter()
      await second.putChunk(cidOf(good), good)
      await second.commit(object.oid, object.descriptors)
      assertSameBytes(await store.get(cidOf(good)), good)
    } finally { await store.close() }
  })

  withDirectory('after putBlock rejects, no write of that call still reads the caller\'s buffer (a malformed cid in the call)', async (dir) => {
    const store = await openDiskStore({ dir })
    try {
      const { a, buffer, slices } = twoRuns(50_000, 20_000)
      const first = store.openWriter()
      await rejectsWithCode(first.putBlock(buffer, [...slices, { cid: 'not-a-cid', start: 150_000, length: 10 }]), 'ERR_INVALID_CID')
      await reuseThenRelyOn(store, first, buffer, a)
    } finally { await store.close() }
  })

  withDirectory('after putBlock rejects, no write of that call still reads the caller\'s buffer (one run\'s write fails)', async (dir) => {
    // Small packs: each 60 kB run needs a pack of its own.
    const store = await openDiskStore({ dir, packSize: 64 * 1024 })
    try {
      await writeObject(store, makeObject(10_000, [10_000])) // pack 1
      // Stands in for a write error (ENOSPC, EIO, EMFILE): creating pack 3 will fail with EEXIST.
      await writeFile(join(dir, 'packs', '000003.pack'), '')
      const { a, buffer, slices } = twoRuns(60_000, 60_000)
      const first = store.openWriter()
      // a → new pack 2 (open, then a directory fsync, then the copy); b → pack 3, whose open fails at once.
      await rejectsWithCode(first.putBlock(buffer, slices), 'ERR_STORE')
      await reuseThenRelyOn(store, first, buffer, a)
    } finally { await store.close() }
  })
})

describe('DiskWriter.commit after another pack\'s flush failed', () => {
  withDirectory('a durable commit whose chunks all lie in other packs is not refused', async (dir) => {
    const store = await openDiskStore({ dir })
    try {
      const old = makeObject(100_000, [50_000])
      await writeObject(store, old)
      // Stands in for a failed fdatasync of pack 1 (EIO), e.g. its background flush-behind:
      // the pack keeps the failure for good, and reserve() moves on to a new pack.
      const packs = (store as unknown as { packs: Map<number, { failure?: unknown }> }).packs
      packs.get(1)!.failure = new Error('injected: fdatasync failed')

      const fresh = makeObject(100_000, [50_000])
      await writeObject(store, fresh) // written to pack 2; commit flushes every pack, pack 1 throws
      assert.ok(await store.stat(fresh.oid))
      // a loose put of a present chunk flushes every pack too
      await store.put(fresh.descriptors[0].cid, fresh.bytes.subarray(0, 50_000))
    } finally { await store.close() }
  })
})
