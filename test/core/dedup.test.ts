/**
 * Why cdc is the default: after a small insertion, content-defined boundaries resynchronise and
 * almost every chunk is shared with the original, while fixed boundaries all shift after the
 * insertion point.
 */
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import { createChunker, parseChunkerSpec } from '../../src/core/chunker/index.ts'
import { HashPool } from '../../src/core/hash-pool.ts'
import { pseudoRandomBytes } from './chunker-compliance.ts'

const SIZE = 256 * 1024 * 1024
const INSERTED = 100

/** Streams views of `parts` in 1 MiB pieces: the modified file is never built in memory. */
async function * views (...parts: Uint8Array[]): AsyncIterable<Uint8Array> {
  for (const part of parts) {
    for (let at = 0; at < part.length; at += 1 << 20) yield part.subarray(at, Math.min(at + (1 << 20), part.length))
  }
}

describe('deduplication after a 100-byte insertion in the middle of 256 MiB', () => {
  const pool = new HashPool({ threads: 2 })
  after(async () => { await pool.close() })
  const original = pseudoRandomBytes(0xDEDB, SIZE)
  const inserted = pseudoRandomBytes(0x1234, INSERTED)
  const middle = SIZE / 2 + 12_345

  async function cids (spec: string, source: AsyncIterable<Uint8Array>): Promise<string[]> {
    const out: string[] = []
    const pipeline = createChunker(parseChunkerSpec(spec)).pipeline(source, { pool })
    for await (const block of pipeline) {
      for (const c of block.chunks) out.push(c.cid)
      block.release()
    }
    return out
  }

  async function sharedFraction (spec: string): Promise<{ fraction: number, modified: number }> {
    const before = new Set(await cids(spec, views(original)))
    const modified = await cids(spec, views(original.subarray(0, middle), inserted, original.subarray(middle)))
    const shared = modified.filter(cid => before.has(cid)).length
    return { fraction: shared / modified.length, modified: modified.length }
  }

  it('cdc (default) shares at least 95% of the chunks', async () => {
    const { fraction, modified } = await sharedFraction('cdc')
    assert.ok(modified > 1000, `${modified} chunks`)
    assert.ok(fraction >= 0.95, `only ${(100 * fraction).toFixed(2)}% of ${modified} chunks shared`)
  })

  it('fixed shares little: every chunk after the insertion moved', async () => {
    const { fraction, modified } = await sharedFraction('fixed')
    assert.ok(fraction < 0.6, `${(100 * fraction).toFixed(2)}% of ${modified} chunks shared`)
  })
})
