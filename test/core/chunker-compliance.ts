/**
 * The chunker compliance suite: what every chunker must do, whatever its cut rule. Run against
 * each implementation by chunker.test.ts. Also home of the seeded generator the committed
 * vectors (test/fixtures/chunker-vectors.json, made by scripts/make-chunker-vectors.ts) use,
 * so both sides produce the very same bytes.
 */
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import { sha256 as multiformatsSha256 } from 'multiformats/hashes/sha2'
import { createChunker, type Chunk, type ChunkerSpec, parseChunkerSpec } from '../../src/core/chunker/index.ts'
import { HashPool } from '../../src/core/hash-pool.ts'

/**
 * xorshift32 (Marsaglia), emitted little-endian byte by byte so the stream is the same on every
 * platform. Not for cryptography: only a reproducible, incompressible-looking input.
 */
export function pseudoRandomBytes (seed: number, length: number): Uint8Array {
  const out = new Uint8Array(length)
  let x = (seed >>> 0) || 0x9e3779b9
  let i = 0
  for (; i + 4 <= length; i += 4) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    out[i] = x; out[i + 1] = x >>> 8; out[i + 2] = x >>> 16; out[i + 3] = x >>> 24
  }
  if (i < length) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5
    for (let k = 0; i < length; i++, k++) out[i] = x >>> (8 * k)
  }
  return out
}

/** The CID computed by multiformats alone, so a bug in Berth's naming cannot hide itself. */
export async function independentCid (bytes: Uint8Array): Promise<string> {
  return CID.createV1(raw.code, await multiformatsSha256.digest(bytes)).toString()
}

/** Serves `bytes` as an async iterable of pieces whose sizes `sizes` chooses. */
export async function * pieces (bytes: Uint8Array, sizes: (index: number) => number): AsyncIterable<Uint8Array> {
  let at = 0
  for (let i = 0; at < bytes.length; i++) {
    const n = Math.max(1, Math.min(sizes(i), bytes.length - at))
    // A copy, as a socket would hand over: the chunker must not keep references to our buffer.
    yield bytes.slice(at, at + n)
    at += n
  }
}

export interface ChunkedResult { chunks: Chunk[], oid: string, size: number }

/** Runs the block pipeline (not the per-chunk wrapper) and copies every chunk out of its block. */
export async function chunkAll (spec: ChunkerSpec, source: AsyncIterable<Uint8Array>, pool?: HashPool, signal?: AbortSignal): Promise<ChunkedResult> {
  const pipeline = createChunker(spec).pipeline(source, { pool, signal })
  const chunks: Chunk[] = []
  for await (const block of pipeline) {
    for (const c of block.chunks) chunks.push({ cid: c.cid, offset: c.offset, length: c.length, bytes: block.bytes.slice(c.start, c.start + c.length) })
    block.release()
  }
  return { chunks, oid: pipeline.oid!, size: pipeline.size }
}

export interface VectorCase { input: string, spec: string, chunks: Array<[number, number, string]>, oid: string }
export interface VectorFile { generator: string, inputs: Record<string, { seed: number, size: number }>, cases: VectorCase[] }

export interface ComplianceOptions {
  /** what the suite is called in the report */
  name: string
  /** several configurations of the same chunker (e.g. defaults and small sizes) */
  specs: string[]
  /** the committed vectors, filtered to this chunker's specs */
  vectors: VectorFile
  /** the per-chunk length rule, checked on every chunk but the last */
  checkLengths: (spec: ChunkerSpec, lengths: number[]) => void
}

const eachSplit: Array<[string, (bytes: number) => (i: number) => number]> = [
  ['one piece', (n) => () => Math.max(1, n)],
  ['1-byte pieces', () => () => 1],
  ['7-byte pieces', () => () => 7],
  ['random pieces', () => { let s = 12345; return () => { s = (Math.imul(s, 1103515245) + 12345) >>> 0; return 1 + (s >>> 8) % 200_000 } }],
  ['pieces larger than a block', () => () => 9 * 1024 * 1024 + 3]
]

export function chunkerCompliance (o: ComplianceOptions): void {
  describe(`chunker compliance: ${o.name}`, () => {
    const pool = new HashPool({ threads: 2 })
    after(async () => { await pool.close() })

    for (const text of o.specs) {
      const spec = parseChunkerSpec(text)
      describe(text, () => {
        // Small chunk sizes give many chunks from little data; 1-byte pieces are slow, so they
        // get a smaller input than the other splits.
        const big = pseudoRandomBytes(0xC0FFEE, 1_300_000)
        const small = big.subarray(0, 70_000)

        it('cuts the same chunks however the input is split into pieces', async () => {
          for (const input of [small, big]) {
            const reference = await chunkAll(spec, pieces(input, () => input.length), pool)
            for (const [label, sizes] of eachSplit) {
              if (label === '1-byte pieces' && input === big) continue
              const got = await chunkAll(spec, pieces(input, sizes(input.length)), pool)
              assert.deepEqual(got.chunks.map(c => [c.offset, c.length, c.cid]), reference.chunks.map(c => [c.offset, c.length, c.cid]), `${label}, ${input.length} bytes`)
              assert.equal(got.oid, reference.oid, label)
            }
          }
        })

        it('tiles the input: contiguous offsets, lengths summing to the size, bytes equal', async () => {
          const { chunks, size } = await chunkAll(spec, pieces(big, () => 65_537), pool)
          assert.equal(size, big.length)
          let offset = 0
          for (const c of chunks) {
            assert.equal(c.offset, offset)
            assert.equal(c.length, c.bytes.length)
            assert.ok(c.length > 0)
            assert.deepEqual(c.bytes, big.subarray(offset, offset + c.length))
            offset += c.length
          }
          assert.equal(offset, big.length)
        })

        it('names each chunk by the CID of its sha2-256 and the object by the CID of all bytes', async () => {
          const { chunks, oid } = await chunkAll(spec, pieces(big, () => 100_000), pool)
          for (const c of chunks) assert.equal(c.cid, await independentCid(c.bytes))
          assert.equal(oid, await independentCid(big))
        })

        it('gives zero chunks and the empty OID for empty input (also for empty pieces)', async () => {
          const emptyOid = await independentCid(new Uint8Array(0))
          const none = await chunkAll(spec, pieces(new Uint8Array(0), () => 1), pool)
          assert.deepEqual(none.chunks, [])
          assert.equal(none.oid, emptyOid)
          assert.equal(none.size, 0)
          async function * emptyPieces (): AsyncIterable<Uint8Array> { yield new Uint8Array(0); yield new Uint8Array(0) }
          const alsoNone = await chunkAll(spec, emptyPieces(), pool)
          assert.deepEqual(alsoNone.chunks, [])
          assert.equal(alsoNone.oid, emptyOid)
        })

        it('keeps chunk lengths within the configured bounds', async () => {
          for (const length of [1, 63, 1000, 300 * 1024, 1_300_000]) {
            const { chunks } = await chunkAll(spec, pieces(big.subarray(0, length), () => 50_000), pool)
            o.checkLengths(spec, chunks.map(c => c.length))
          }
        })

        it('matches the committed vectors', async () => {
          const cases = o.vectors.cases.filter(v => v.spec === text)
          assert.ok(cases.length > 0, `no vectors for ${text}: run scripts/make-chunker-vectors.ts`)
          for (const v of cases) {
            const { seed, size } = o.vectors.inputs[v.input]
            const input = pseudoRandomBytes(seed, size)
            const { chunks, oid } = await chunkAll(spec, pieces(input, () => 1 << 20), pool)
            assert.deepEqual(chunks.map(c => [c.offset, c.length, c.cid]), v.chunks, `${v.input} (${size} bytes)`)
            assert.equal(oid, v.oid, `${v.input} OID`)
          }
        })

        it('stops with ERR_ABORTED when the signal fires mid-stream', async () => {
          const controller = new AbortController()
          let pulled = 0
          async function * endless (): AsyncIterable<Uint8Array> {
            for (;;) { pulled++; if (pulled === 20) controller.abort(); yield big.subarray(0, 512 * 1024) }
          }
          await assert.rejects(chunkAll(spec, endless(), pool, controller.signal), { code: 'ERR_ABORTED' })
          assert.ok(pulled < 30, 'reading stopped soon after the abort')
        })

        it('refuses to start on an already aborted signal', async () => {
          const controller = new AbortController()
          controller.abort()
          await assert.rejects(chunkAll(spec, pieces(small, () => 1000), pool, controller.signal), { code: 'ERR_ABORTED' })
        })

        it('yields the same chunks through the per-chunk wrapper', async () => {
          const viaBlocks = await chunkAll(spec, pieces(big, () => 100_000), pool)
          const viaChunks: Array<[number, number, string]> = []
          for await (const c of createChunker(spec).chunk(pieces(big, () => 100_000), { pool })) {
            assert.equal(c.bytes.length, c.length)
            viaChunks.push([c.offset, c.length, c.cid])
          }
          assert.deepEqual(viaChunks, viaBlocks.chunks.map(c => [c.offset, c.length, c.cid]))
        })
      })
    }
  })
}
