import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { execFileSync } from 'node:child_process'
import { createWriteStream, existsSync, readdirSync, readFileSync } from 'node:fs'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { ChunkingPipeline, createChunker, parseChunkerSpec, type ChunkedBlock, type Cutter } from '../../src/core/chunker/index.ts'
import { HashPool } from '../../src/core/hash-pool.ts'
import { cidFromDigest } from '../../src/core/naming.ts'
import { independentCid, pieces, pseudoRandomBytes, type VectorFile } from './chunker-compliance.ts'

const vectors = JSON.parse(readFileSync(new URL('../fixtures/chunker-vectors.json', import.meta.url), 'utf8')) as VectorFile
const sha256Cid = (bytes: Uint8Array): string => cidFromDigest(createHash('sha256').update(bytes).digest())
const cutterOf = (spec: string): Cutter => createChunker(parseChunkerSpec(spec)).cutter

interface Drained { chunks: Array<[number, number, string]>, oid: string, size: number, buffers: Set<ArrayBufferLike>, blocks: number }

/** Iterates a pipeline, checking every chunk's bytes against its cid before releasing the block. */
async function drain (pipeline: ChunkingPipeline, release = true): Promise<Drained> {
  const out: Drained = { chunks: [], oid: '', size: 0, buffers: new Set(), blocks: 0 }
  for await (const block of pipeline) {
    out.blocks++
    out.buffers.add(block.bytes.buffer)
    for (const c of block.chunks) {
      assert.equal(sha256Cid(block.bytes.subarray(c.start, c.start + c.length)), c.cid, `chunk at ${c.offset}`)
      out.chunks.push([c.offset, c.length, c.cid])
    }
    if (release) block.release()
  }
  out.oid = pipeline.oid!
  out.size = pipeline.size
  return out
}

/** Open descriptors of this process, where the platform shows them. */
function openFds (): number | undefined {
  return existsSync('/proc/self/fd') ? readdirSync('/proc/self/fd').length : undefined
}

describe('chunking pipeline', () => {
  const pool = new HashPool({ threads: 2 })
  let dir = ''
  before(async () => { dir = await mkdtemp(join(tmpdir(), 'berth-pipeline-')) })
  after(async () => {
    await pool.close()
    await rm(dir, { recursive: true, force: true })
  })

  describe('fromFile', () => {
    it('matches the committed vectors', async () => {
      for (const [name, { seed, size }] of Object.entries(vectors.inputs)) {
        const path = join(dir, `vector-${name}`)
        await writeFile(path, pseudoRandomBytes(seed, size))
        for (const v of vectors.cases.filter(c => c.input === name)) {
          const got = await drain(ChunkingPipeline.fromFile(path, cutterOf(v.spec), { pool }))
          assert.deepEqual(got.chunks, v.chunks, `${name} ${v.spec}`)
          assert.equal(got.oid, v.oid)
          assert.equal(got.size, size)
        }
      }
    })

    it('cuts what the stream path cuts, across many blocks and block sizes', async () => {
      const bytes = pseudoRandomBytes(21, 9_000_000)
      const path = join(dir, 'nine-megabytes')
      await writeFile(path, bytes)
      for (const spec of ['cdc', 'cdc:1k:4k:16k', 'fixed', 'fixed:1000']) {
        const cutter = cutterOf(spec)
        const reference = await drain(new ChunkingPipeline(pieces(bytes, () => 1 << 20), cutter, { pool }))
        assert.equal(reference.oid, sha256Cid(bytes))
        for (const blockSize of [undefined, 2 * cutter.maxSize, 1_000_003]) {
          const fromFile = await drain(ChunkingPipeline.fromFile(path, cutter, { pool, blockSize }))
          assert.deepEqual(fromFile.chunks, reference.chunks, `${spec}, block size ${blockSize ?? 'default'}`)
          assert.equal(fromFile.oid, reference.oid)
          const fromStream = await drain(new ChunkingPipeline(pieces(bytes, () => 77_777), cutter, { pool, blockSize }))
          assert.deepEqual(fromStream.chunks, reference.chunks, `stream, ${spec}, block size ${blockSize ?? 'default'}`)
        }
      }
    })

    it('gives zero chunks and the empty OID for an empty file', async () => {
      const path = join(dir, 'empty')
      await writeFile(path, new Uint8Array(0))
      const got = await drain(ChunkingPipeline.fromFile(path, cutterOf('cdc'), { pool }))
      assert.deepEqual(got.chunks, [])
      assert.equal(got.oid, await independentCid(new Uint8Array(0)))
    })

    it('reads pipes and other files that cannot seek', async (t) => {
      const path = join(dir, 'fifo')
      try { execFileSync('mkfifo', [path]) } catch { t.skip('mkfifo not available'); return }
      const bytes = pseudoRandomBytes(22, 5_000_000)
      const writer = createWriteStream(path)
      const written = new Promise<void>((resolve, reject) => { writer.on('error', reject); writer.end(bytes, resolve) })
      const got = await drain(ChunkingPipeline.fromFile(path, cutterOf('cdc'), { pool }))
      await written
      assert.equal(got.oid, sha256Cid(bytes))
      assert.equal(got.size, bytes.length)
    })

    it('refuses a missing file with ERR_NOT_FOUND', async () => {
      await assert.rejects(drain(ChunkingPipeline.fromFile(join(dir, 'nope'), cutterOf('cdc'), { pool })), { code: 'ERR_NOT_FOUND' })
    })

    it('stops with ERR_ABORTED and closes the file when the signal fires', async () => {
      const path = join(dir, 'abortable')
      await writeFile(path, pseudoRandomBytes(23, 40_000_000))
      const fds = openFds()
      const controller = new AbortController()
      let blocks = 0
      await assert.rejects((async () => {
        for await (const block of ChunkingPipeline.fromFile(path, cutterOf('fixed'), { pool, signal: controller.signal })) {
          block.release()
          if (++blocks === 2) controller.abort()
        }
      })(), { code: 'ERR_ABORTED' })
      assert.ok(blocks < 8, `stopped soon after the abort (${blocks} blocks)`)
      if (fds !== undefined) assert.equal(openFds(), fds)
    })

    it('closes the file when the consumer stops early', async () => {
      const path = join(dir, 'abandoned')
      await writeFile(path, pseudoRandomBytes(24, 30_000_000))
      const fds = openFds()
      const pipeline = ChunkingPipeline.fromFile(path, cutterOf('cdc'), { pool })
      for await (const block of pipeline) { block.release(); break }
      assert.equal(pipeline.oid, undefined)
      if (fds !== undefined) assert.equal(openFds(), fds)
    })
  })

  describe('block recycling', () => {
    const bytes = pseudoRandomBytes(31, 48 * 1024 * 1024 + 12345)

    it('reuses a handful of buffers when the consumer releases blocks', async () => {
      const got = await drain(new ChunkingPipeline(pieces(bytes, () => 1 << 20), cutterOf('cdc'), { pool }))
      assert.equal(got.oid, sha256Cid(bytes))
      assert.ok(got.blocks >= 12)
      assert.ok(got.buffers.size <= 8, `${got.buffers.size} distinct buffers for ${got.blocks} blocks`)
    })

    it('leaves unreleased blocks alone: their bytes stay valid after the pipeline moved on', async () => {
      const held: ChunkedBlock[] = []
      const pipeline = new ChunkingPipeline(pieces(bytes, () => 1 << 20), cutterOf('cdc'), { pool })
      let i = 0
      // Keep every third block, release the others, then check the kept ones at the end.
      for await (const block of pipeline) { if (i++ % 3 === 0) held.push(block); else block.release() }
      assert.equal(pipeline.oid, sha256Cid(bytes))
      for (const block of held) {
        for (const c of block.chunks) {
          assert.equal(sha256Cid(block.bytes.subarray(c.start, c.start + c.length)), c.cid)
          assert.deepEqual(block.bytes.subarray(c.start, c.start + c.length), bytes.subarray(c.offset, c.offset + c.length))
        }
      }
      const distinct = new Set(held.map(b => b.bytes.buffer))
      assert.equal(distinct.size, held.length, 'no held block shares memory with another')
      for (const block of held) block.release()
    })

    it('names objects right when many pipelines share a busy pool and recycle blocks', async () => {
      const inputs = [0, 1, 2, 3, 4, 5, 6, 7].map(k => bytes.subarray(k * 1_000_003, k * 1_000_003 + 20_000_000 + k))
      const paths = await Promise.all(inputs.map(async (input, k) => { const path = join(dir, `busy-${k}`); await writeFile(path, input); return path }))
      const results = await Promise.all(inputs.map(async (input, k) => {
        const cutter = cutterOf(k % 2 === 0 ? 'cdc' : 'fixed:64k')
        const options = { pool, depth: 1 + (k % 3) }
        return await drain(k % 4 < 2 ? new ChunkingPipeline(pieces(input, () => 300_000 + k), cutter, options) : ChunkingPipeline.fromFile(paths[k], cutter, options))
      }))
      results.forEach((r, k) => {
        assert.equal(r.oid, sha256Cid(inputs[k]), `pipeline ${k}`)
        assert.equal(r.size, inputs[k].length)
      })
    })

    it('keeps a retained block out of reuse until every reference is released', async () => {
      const pipeline = new ChunkingPipeline(pieces(bytes, () => 1 << 20), cutterOf('fixed'), { pool })
      let kept: ChunkedBlock | undefined
      const reused: Set<ArrayBufferLike> = new Set()
      for await (const block of pipeline) {
        if (kept === undefined) {
          kept = block
          block.retain()
          block.release() // one reference is left
        } else {
          reused.add(block.bytes.buffer)
          block.release()
        }
      }
      assert.ok(kept !== undefined)
      assert.ok(!reused.has(kept.bytes.buffer), 'a retained block was handed out again')
      for (const c of kept.chunks) assert.deepEqual(kept.bytes.subarray(c.start, c.start + c.length), bytes.subarray(c.offset, c.offset + c.length))
      kept.release()
    })
  })

  it('fails with ERR_CLOSED, and nothing unhandled, when the hash pool closes mid-object', async () => {
    const local = new HashPool({ threads: 2 })
    const bytes = pseudoRandomBytes(61, 40_000_000)
    await assert.rejects((async () => {
      let first = true
      for await (const block of new ChunkingPipeline(pieces(bytes, () => 1 << 20), cutterOf('cdc'), { pool: local })) {
        block.release()
        if (first) { first = false; void local.close() }
      }
    })(), { code: 'ERR_CLOSED' })
  })

  describe('stream sources', () => {
    it('stops the source when the consumer stops early', async () => {
      let returned = false
      let pulled = 0
      const source: AsyncIterable<Uint8Array> = {
        [Symbol.asyncIterator]: () => ({
          next: async () => { pulled++; return { done: false, value: new Uint8Array(1 << 20) } },
          return: async () => { returned = true; return { done: true, value: undefined } }
        })
      }
      for await (const block of new ChunkingPipeline(source, cutterOf('fixed'), { pool })) { block.release(); break }
      assert.ok(returned)
      assert.ok(pulled < 40, `${pulled} pieces pulled`)
    })

    it('passes the source\'s own error through', async () => {
      async function * failing (): AsyncIterable<Uint8Array> { yield new Uint8Array(5_000_000); throw Object.assign(new Error('socket hang up'), { code: 'ECONNRESET' }) }
      await assert.rejects(drain(new ChunkingPipeline(failing(), cutterOf('cdc'), { pool })), { code: 'ECONNRESET' })
    })

    it('accepts ArrayBuffer pieces too', async () => {
      const bytes = pseudoRandomBytes(51, 100_000)
      async function * buffers (): AsyncIterable<Uint8Array> { yield bytes.slice(0, 60_000).buffer as unknown as Uint8Array; yield bytes.slice(60_000) }
      const got = await drain(new ChunkingPipeline(buffers(), cutterOf('fixed:1000'), { pool }))
      assert.equal(got.oid, sha256Cid(bytes))
    })
  })
})
