/**
 * Direct pack writes straight from pooled blocks (Pack.write): the lead and tail padding come
 * from the block, so runs of concurrent writers must still never share a page on disk, and a
 * block may be refilled as soon as putBlock has returned.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sharedBlocks } from '../../src/core/blocks.ts'
import { openDiskStore } from '../../src/store/index.ts'
import type { BlockSlice } from '../../src/store/types.ts'
import { assertSameBytes, cidOf, collect, objectOf } from './compliance.ts'

function withDirectory (title: string, body: (dir: string) => Promise<void>): void {
  it(title, async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-disk-direct-'))
    try { await body(dir) } finally { await rm(dir, { recursive: true, force: true }) }
  })
}

const BLOCK = 4 * 1024 * 1024

describe('direct writes from pooled blocks', () => {
  withDirectory('concurrent writers whose runs start at arbitrary page offsets never overwrite each other\'s bytes', async (dir) => {
    const store = await openDiskStore({ dir })
    const blocks = Array.from({ length: 4 }, () => sharedBlocks(BLOCK).acquire())
    try {
      // Each writer lays its chunks in its own block with gaps, so every chunk is a run of its own
      // with its own page offset; the bytes in the gaps are junk that must never reach a chunk.
      const objects = blocks.map((block, w) => {
        block.bytes.fill(0xa0 + w)
        const chunks: Uint8Array[] = []
        const slices: BlockSlice[] = []
        let at = 17 * (w + 1)
        for (let i = 0; i < 24; i++) {
          const chunk = randomBytes(1000 + ((w * 7919 + i * 104_729) % 60_000))
          block.bytes.set(chunk, at)
          chunks.push(chunk)
          slices.push({ cid: cidOf(chunk), start: at, length: chunk.byteLength })
          at += chunk.byteLength + 1 + ((i * 2731) % 5000)
        }
        return { object: objectOf(chunks), slices }
      })
      const writers = objects.map(() => store.openWriter())
      // All runs of all writers in flight at once, one chunk per call.
      await Promise.all(objects.map(async ({ slices }, w) => {
        await Promise.all(slices.map(async slice => await writers[w].putBlock(blocks[w].bytes, [slice])))
      }))
      await Promise.all(objects.map(async ({ object }, w) => await writers[w].commit(object.oid, object.descriptors)))
      for (const { object } of objects) {
        const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
        assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
      }
    } finally {
      for (const block of blocks) block.release()
      await store.close()
    }
    // and after a reopen (nothing came from a cache)
    const reopened = await openDiskStore({ dir })
    try {
      let objects = 0
      for await (const info of reopened.objects()) {
        objects++
        const cids = (await collect(reopened.manifest(info.oid))).map(d => d.cid)
        assert.equal((await collect(reopened.getMany(cids))).length, cids.length)
      }
      assert.equal(objects, 4)
    } finally { await reopened.close() }
  })

  withDirectory('a pooled block refilled as soon as putBlock returned leaves the written chunks intact, for this writer and the next', async (dir) => {
    const store = await openDiskStore({ dir })
    const pool = sharedBlocks(BLOCK)
    try {
      const chunks = Array.from({ length: 8 }, (_, i) => randomBytes(30_000 + i * 1111))
      const object = objectOf(chunks)
      let block = pool.acquire()
      const at = 3001
      block.bytes.set(object.bytes, at)
      const writer = store.openWriter()
      await writer.putBlock(block.bytes, object.slices.map(s => ({ ...s, start: s.start + at })))
      // Back to the pool and straight out again (the same memory, most likely), overwritten.
      block.release()
      block = pool.acquire()
      block.bytes.fill(0x5a)
      try {
        // The rows may still wait for their batch; reads and other writers rely on the bytes now.
        for (const [i, chunk] of chunks.entries()) assertSameBytes(await store.get(cidOf(chunk)), chunk, `chunk ${i}`)
        const other = store.openWriter()
        await other.putBlock(object.bytes, object.slices)
        await other.commit(object.oid, object.descriptors)
        await writer.commit(object.oid, object.descriptors)
        const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
        assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
      } finally { block.release() }
    } finally { await store.close() }
  })
})
