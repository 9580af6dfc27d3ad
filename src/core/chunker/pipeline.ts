/**
 * The chunking pipeline: bytes in (any split), verified-by-construction chunks out, in blocks.
 * The main thread only copies input into shared blocks and finds cut points; chunk digests and
 * the whole-object digest run on the hash pool's workers, reading the same shared memory.
 * A few blocks are in flight so reading, cutting and hashing overlap. Memory stays bounded:
 * about (depth + 2) blocks, whatever the object's size.
 */
import { type HashPool, sharedHashPool } from '../hash-pool.ts'
import { cidFromDigest } from '../naming.ts'
import { throwIfAborted } from '../errors.ts'
import type { Cutter, Descriptor } from './types.ts'

export interface BlockChunk extends Descriptor {
  /** where the chunk starts inside the block's bytes */
  start: number
  digest: Uint8Array
}

export interface ChunkedBlock {
  /** shared memory; chunk i is bytes[chunks[i].start, chunks[i].start + chunks[i].length) */
  bytes: Uint8Array
  chunks: BlockChunk[]
}

export interface PipelineOptions {
  pool?: HashPool
  signal?: AbortSignal
  /** bytes per block; default 4 MiB (at least twice the cutter's largest chunk) */
  blockSize?: number
  /** blocks being hashed while the consumer works; default 3 */
  depth?: number
}

export const DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024

/**
 * Chunks a byte stream. Iterate it for the blocks; when iteration has ended, `oid` and `size`
 * describe the whole object (its digest computed on a worker while the chunks were cut).
 */
export class ChunkingPipeline implements AsyncIterable<ChunkedBlock> {
  oid: string | undefined
  size = 0
  private readonly pool: HashPool
  private readonly blockSize: number
  private readonly depth: number

  constructor (
    private readonly source: AsyncIterable<Uint8Array>,
    private readonly cutter: Cutter,
    private readonly options: PipelineOptions = {}
  ) {
    this.pool = options.pool ?? sharedHashPool()
    this.blockSize = Math.max(options.blockSize ?? DEFAULT_BLOCK_SIZE, 2 * cutter.maxSize)
    this.depth = options.depth ?? 3
  }

  async * [Symbol.asyncIterator] (): AsyncIterator<ChunkedBlock> {
    const { signal } = this.options
    const hasher = this.pool.stream()
    const inFlight: Array<Promise<ChunkedBlock>> = []
    let block = new Uint8Array(new SharedArrayBuffer(this.blockSize))
    let filled = 0
    let blockOffset = 0 // object offset of block[0]
    let finished = false

    // Cuts what can be cut in the current block, sends it for hashing, and carries the uncut
    // tail into a fresh block (the tail is below the cutter's max, so it always fits).
    const seal = (final: boolean): void => {
      const ends: number[] = []
      let start = 0
      while (start < filled) {
        const len = this.cutter.next(block, start, filled, final)
        if (len === 0) break
        start += len
        ends.push(start)
      }
      if (start > 0) {
        const data = block.subarray(0, start)
        hasher.update(data)
        const base = blockOffset
        inFlight.push(this.pool.digestSlices(data, ends).then(digests => {
          const chunks: BlockChunk[] = []
          let s = 0
          for (let i = 0; i < ends.length; i++) {
            chunks.push({ cid: cidFromDigest(digests[i]), digest: digests[i], offset: base + s, length: ends[i] - s, start: s })
            s = ends[i]
          }
          return { bytes: data, chunks }
        }))
      }
      const next = new Uint8Array(new SharedArrayBuffer(this.blockSize))
      next.set(block.subarray(start, filled))
      block = next
      filled -= start
      blockOffset += start
    }

    try {
      for await (const piece of this.source) {
        throwIfAborted(signal)
        const bytes = piece instanceof Uint8Array ? piece : new Uint8Array(piece as ArrayBuffer)
        let at = 0
        while (at < bytes.byteLength) {
          const n = Math.min(bytes.byteLength - at, this.blockSize - filled)
          block.set(bytes.subarray(at, at + n), filled)
          filled += n
          at += n
          this.size += n
          if (filled === this.blockSize) {
            seal(false)
            while (inFlight.length > this.depth) yield await inFlight.shift()!
          }
        }
      }
      seal(true)
      while (inFlight.length > 0) yield await inFlight.shift()!
      this.oid = cidFromDigest(await hasher.digest())
      finished = true
    } finally {
      if (!finished) {
        hasher.drop()
        // Settle what is still hashing so no rejection goes unhandled.
        await Promise.allSettled(inFlight)
      }
    }
  }
}
