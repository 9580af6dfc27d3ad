/**
 * The chunking pipeline: bytes in (any split), verified-by-construction chunks out, in blocks.
 * The main thread only fills shared blocks and finds cut points; chunk digests and the
 * whole-object digest run on the hash pool's workers, reading the same shared memory.
 * A few blocks are in flight so reading, cutting and hashing overlap.
 *
 * Memory: blocks come from a SharedBlockPool and go back to it when the consumer releases them
 * (see ChunkedBlock). Allocating a fresh 4 MiB SharedArrayBuffer costs ~2 ms here (zeroing and
 * page faults) — over half a second of main-thread time per GiB — and a dropped one is only
 * reclaimed by a full GC; refilling a warm block costs nothing. The pool is process-wide, so
 * small puts reuse blocks too. Memory in use: about (depth + 3) blocks plus what the consumer
 * still holds.
 *
 * Block layout: the first `cutter.maxSize` bytes of every block are head room. The uncut tail
 * of one block (always shorter than maxSize) is copied to the end of the next block's head room,
 * so the next block's fresh input can be read in place at a fixed offset — in fromFile, while
 * the previous block is still being cut.
 */
import { open } from 'node:fs/promises'
import { type SharedBlock, type SharedBlockPool, sharedBlocks } from '../blocks.ts'
import { type HashPool, type StreamHasher, sharedHashPool } from '../hash-pool.ts'
import { cidFromDigest } from '../naming.ts'
import { BerthError, throwIfAborted, toBerthError } from '../errors.ts'
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
  /**
   * Gives the block back for reuse: later input (of this or any other pipeline) will overwrite
   * its memory. The consumer holds one reference when the block is yielded; `retain()` takes
   * another (e.g. for a write that completes later) and each needs its own `release()`. Once
   * the last is released, `bytes`, every chunk view into it and anything else sharing its
   * buffer must not be read again — copy what has to outlive it. No worker reads a block after
   * it was yielded, so releasing may come at any time, also after the pipeline ended.
   * A block never released is not reused (and costs memory until a full GC).
   */
  release: () => void
  retain: () => void
}

export interface PipelineOptions {
  /** default: the process-wide shared pool */
  pool?: HashPool
  signal?: AbortSignal
  /** bytes per block; default 4 MiB (at least twice the cutter's largest chunk) */
  blockSize?: number
  /** blocks being hashed while the consumer works; default 3 */
  depth?: number
}

export const DEFAULT_BLOCK_SIZE = 4 * 1024 * 1024

/** Where input comes from: fills buf[at, limit) with the next bytes; 0 means the input ended. */
type Fill = (buf: Uint8Array, at: number, limit: number) => Promise<number>
interface Source { fill: Fill, close: () => Promise<void>, readAhead: boolean }

/**
 * Chunks a byte stream. Iterate it for the blocks; when iteration has ended, `oid` and `size`
 * describe the whole object (its digest computed on a worker while the chunks were cut).
 */
export class ChunkingPipeline implements AsyncIterable<ChunkedBlock> {
  oid: string | undefined
  size = 0
  private readonly pool: HashPool
  private readonly blocks: SharedBlockPool
  private readonly headRoom: number
  private readonly depth: number
  private openSource: () => Promise<Source>

  constructor (
    source: AsyncIterable<Uint8Array>,
    private readonly cutter: Cutter,
    private readonly options: PipelineOptions = {}
  ) {
    this.pool = options.pool ?? sharedHashPool()
    this.headRoom = cutter.maxSize
    this.blocks = sharedBlocks(Math.max(options.blockSize ?? DEFAULT_BLOCK_SIZE, 2 * cutter.maxSize))
    this.depth = Math.max(1, options.depth ?? 3)
    this.openSource = async () => streamSource(source)
  }

  /**
   * Chunks a file, reading it with positioned reads straight into the shared blocks: no
   * intermediate Buffer, no copy but the kernel's, and the next read is in flight while the
   * current block is cut. Non-seekable files (pipes, devices) are read sequentially.
   * Fails with ERR_NOT_FOUND / ERR_PATH_NOT_ALLOWED when the file cannot be opened.
   */
  static fromFile (path: string, cutter: Cutter, options: PipelineOptions = {}): ChunkingPipeline {
    const pipeline = new ChunkingPipeline(emptySource(), cutter, options)
    pipeline.openSource = async () => await fileSource(path)
    return pipeline
  }

  async * [Symbol.asyncIterator] (): AsyncIterator<ChunkedBlock> {
    const { signal } = this.options
    const { headRoom, cutter, blocks } = this
    const blockSize = blocks.blockSize
    throwIfAborted(signal)
    this.size = 0
    const source = await this.openSource()
    let hasher: StreamHasher | undefined
    // Blocks the pipeline itself owns (being filled, or being read into); handed on or released.
    let filling: SharedBlock | undefined
    let reading: SharedBlock | undefined
    let pendingRead: Promise<number> | undefined
    const inFlight: Array<Promise<ChunkedBlock>> = []
    let finished = false
    let objectOffset = 0 // object offset of the first uncut byte

    // Cuts block[start, end), sends what was cut for hashing, and copies the uncut tail into the
    // head room of `next`. Takes over the pipeline's reference to `block`. Returns where next's
    // data begins.
    const seal = (block: SharedBlock, start: number, end: number, final: boolean, next: SharedBlock | undefined): number => {
      const bytes = block.bytes
      const ends: number[] = []
      let at = start
      while (at < end) {
        const length = cutter.next(bytes, at, end, final)
        if (length === 0) break
        at += length
        ends.push(at - start)
      }
      const tail = end - at
      if (tail > 0) {
        if (next === undefined || tail > headRoom) throw new BerthError('ERR_INTERNAL', `cutter ${cutter.name} left ${tail} bytes uncut (final: ${final})`)
        next.bytes.set(bytes.subarray(at, end), headRoom - tail)
      }
      if (at === start) {
        block.release() // no worker saw it
        return headRoom - tail
      }
      const data = bytes.subarray(start, at)
      const base = objectOffset
      objectOffset += at - start
      // The update's promise is the worker's word that it has read the block: only after it
      // (and the chunk digests) may the block be yielded, and so be released and refilled.
      const read = hasher!.update(data)
      const digested = this.pool.digestSlices(data, ends)
      const ready = (async (): Promise<ChunkedBlock> => {
        const [updated, digests] = await Promise.allSettled([read, digested])
        // On failure the block is dropped, not released: a worker may still be reading it.
        if (updated.status === 'rejected') throw updated.reason
        if (digests.status === 'rejected') throw digests.reason
        const chunks: BlockChunk[] = []
        let s = 0
        for (let i = 0; i < ends.length; i++) {
          const digest = digests.value[i]
          chunks.push({ cid: cidFromDigest(digest), digest, offset: base + s, length: ends[i] - s, start: s })
          s = ends[i]
        }
        return { bytes: data, chunks, release: () => block.release(), retain: () => block.retain() }
      })()
      // A failure is reported when the block's turn comes; until then it must not count as an
      // unhandled rejection (which ends the process).
      ready.catch(() => {})
      inFlight.push(ready)
      return headRoom - tail
    }

    try {
      hasher = this.pool.stream()
      filling = blocks.acquire()
      let start = headRoom
      if (source.readAhead) {
        // One read is always in flight: into `filling` while the previous block is being cut.
        pendingRead = source.fill(filling.bytes, headRoom, blockSize)
        for (;;) {
          const n = await pendingRead
          pendingRead = undefined
          throwIfAborted(signal)
          this.size += n
          if (n === 0) break
          reading = blocks.acquire()
          pendingRead = source.fill(reading.bytes, headRoom, blockSize)
          const block = filling
          filling = undefined
          start = seal(block, start, headRoom + n, false, reading)
          filling = reading
          reading = undefined
          while (inFlight.length > this.depth) yield await inFlight.shift()!
        }
        const block = filling
        filling = undefined
        seal(block, start, headRoom, true, undefined)
      } else {
        let end = headRoom
        for (;;) {
          const fill = source.fill(filling.bytes, end, blockSize)
          pendingRead = fill
          // While the input is slow (an upload arriving at its sender's pace), blocks already
          // hashed go on at once rather than when more input comes: whoever reads an object
          // still arriving (a GET, the next locker of a relay) gets each block without delay.
          while (inFlight.length > 0) {
            const head = inFlight[0]
            const first = await Promise.race([fill.then(() => false, () => false), head.then(() => true, () => true)])
            if (!first) break
            yield await inFlight.shift()!
          }
          const n = await fill
          pendingRead = undefined
          throwIfAborted(signal)
          this.size += n
          end += n
          if (n === 0) break
          if (end === blockSize) {
            const next = blocks.acquire()
            const block = filling
            filling = next
            start = seal(block, start, end, false, next)
            end = headRoom
            while (inFlight.length > this.depth) yield await inFlight.shift()!
          }
        }
        const block = filling
        filling = undefined
        seal(block, start, end, true, undefined)
      }
      while (inFlight.length > 0) yield await inFlight.shift()!
      this.oid = cidFromDigest(await hasher.digest())
      finished = true
    } finally {
      if (!finished) {
        hasher?.drop()
        // Wait for what is still hashing or reading — no rejection left unhandled, no file
        // closed under a read, no block reused under a worker — then take back the blocks
        // the consumer will never see.
        // A stream's pending read waits for its sender, who may be idle for long: not awaited
        // (the block it fills is released when it settles, and closing the source ends it).
        let streamRead: Promise<number> | undefined
        if (!source.readAhead && pendingRead !== undefined) {
          streamRead = pendingRead
          pendingRead = undefined
          const block = filling
          filling = undefined
          streamRead.then(() => block?.release(), () => block?.release())
        }
        const settled = await Promise.allSettled([...inFlight, pendingRead])
        for (const s of settled) if (s.status === 'fulfilled' && typeof s.value === 'object') s.value.release()
        filling?.release()
        reading?.release()
        await source.close().catch(() => {})
      } else {
        await source.close()
      }
    }
  }
}

/** Pieces of an async iterable, copied into the blocks as they come. */
function streamSource (iterable: AsyncIterable<Uint8Array>): Source {
  const iterator = iterable[Symbol.asyncIterator]()
  let piece: Uint8Array | undefined
  let at = 0
  let done = false
  return {
    readAhead: false,
    async fill (buf, offset, limit) {
      while (!done && (piece === undefined || at === piece.byteLength)) {
        const r = await iterator.next()
        if (r.done === true) { done = true; break }
        const value = r.value as Uint8Array | ArrayBuffer
        piece = value instanceof Uint8Array ? value : new Uint8Array(value)
        at = 0
      }
      if (done || piece === undefined) return 0
      const n = Math.min(piece.byteLength - at, limit - offset)
      buf.set(piece.subarray(at, at + n), offset)
      at += n
      return n
    },
    async close () {
      // Stops a source we abandon early (a socket, a file stream) as `for await` would — without
      // waiting: a generator busy awaiting its sender finishes returning only when that sender
      // sends again, which an idle uploader may never do.
      if (!done) {
        done = true
        const r = iterator.return?.()
        if (r !== undefined) r.then(() => {}, () => {})
      }
    }
  }
}

async function * emptySource (): AsyncIterable<Uint8Array> {}

/** Positioned reads into the blocks; fills the whole region unless the file ends. */
async function fileSource (path: string): Promise<Source> {
  let handle
  try {
    handle = await open(path, 'r')
  } catch (err) {
    throw toBerthError(err)
  }
  const file = handle
  let position: number | null = 0
  try {
    if (!(await file.stat()).isFile()) position = null
  } catch (err) {
    await file.close()
    throw toBerthError(err)
  }
  return {
    readAhead: true,
    async fill (buf, offset, limit) {
      let total = 0
      while (offset + total < limit) {
        const { bytesRead } = await file.read(buf, offset + total, limit - offset - total, position)
        if (bytesRead === 0) break
        total += bytesRead
        if (position !== null) position += bytesRead
      }
      return total
    },
    async close () { await file.close() }
  }
}
