/**
 * Pack reads take pooled buffers sized to the read (direct-io.ts): a small read must not cost a
 * 4 MiB block, and a full read batch still gets one.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ALIGN, pageOffsetOf } from '../../src/core/blocks.ts'
import { DirectIo } from '../../src/store/direct-io.ts'
import { openDiskStore } from '../../src/store/index.ts'
import { assertSameBytes, chunkBytes, collect, makeObject, writeObject } from './compliance.ts'

const KiB = 1024
const BLOCK = 4 * 1024 * KiB

describe('pack read buffers', () => {
  for (const direct of [true, false]) {
    it(`come in size classes, the smallest that holds the read (${direct ? 'direct' : 'buffered'} I/O)`, async () => {
      const dir = await mkdtemp(join(tmpdir(), 'berth-read-buffers-'))
      const io = DirectIo.open(dir, BLOCK, direct)
      try {
        const sizes: Array<[number, number]> = [
          [1, 64 * KiB + 2 * ALIGN],
          [64 * KiB + 2 * ALIGN, 64 * KiB + 2 * ALIGN],
          [70_000, 64 * KiB + 2 * ALIGN],
          [80_000, 128 * KiB + 2 * ALIGN],
          // a 1 MiB object read whole, with the alignment around it
          [1024 * KiB + 2 * ALIGN, 1024 * KiB + 2 * ALIGN],
          [1024 * KiB + 2 * ALIGN + 1, 2048 * KiB + 2 * ALIGN],
          [3 * 1024 * KiB, BLOCK],
          [BLOCK, BLOCK],
          [BLOCK + 1, BLOCK + 1]
        ]
        for (const [length, expected] of sizes) {
          const block = io.acquire(length)
          try {
            assert.equal(block.bytes.byteLength, expected, `a read of ${length} bytes`)
            if (io.direct && length <= BLOCK) assert.equal(pageOffsetOf(block.bytes), 0, 'aligned for direct I/O')
          } finally {
            block.release()
          }
        }
      } finally {
        io.close()
        await rm(dir, { recursive: true, force: true })
      }
    })
  }

  it('serve small and large reads alike (the store reads through them)', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-read-buffers-'))
    const store = await openDiskStore({ dir })
    try {
      const small = makeObject(1024 * KiB, [64 * KiB, 5000, 100_000])
      const large = makeObject(9 * 1024 * KiB + 3, [64 * KiB, 200_000])
      await writeObject(store, small)
      await writeObject(store, large)
      for (const object of [small, large]) {
        const got = await collect(store.getMany(object.descriptors.map(d => d.cid)))
        assertSameBytes(Buffer.concat(got.map(g => g.bytes)), object.bytes)
        for (const [i, d] of object.descriptors.slice(0, 5).entries()) assertSameBytes(await store.get(d.cid), chunkBytes(object, i))
      }
    } finally {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
