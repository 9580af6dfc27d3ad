/**
 * Shared memory blocks: where bulk bytes live on their way through an agent (a put's chunking
 * pipeline, a get's fetch arenas, a store's reads), reused, never dropped.
 *
 * Reused because V8 does not reclaim a SharedArrayBuffer until a full collection, which a small
 * JS heap rarely triggers, so allocating one per block grows memory without bound (measured:
 * 1,024 dropped 4 MiB blocks → 4.1 GB RSS). One pool per block size for the whole process, so
 * the blocks a put used serve the gets and reads that follow: an agent's memory is the most it
 * ever had in flight at once, not the sum over each part (4 GiB put, then served: sender peak
 * 195 → 170 MB, measured).
 *
 * Aligned when the process can tell: direct I/O (store/direct-io.ts) wants buffers at addresses
 * aligned as the device says (512 B or 4 KiB), which JavaScript cannot see; once a store has
 * found a way to probe that, it registers it here (`setAligner`), and every block is handed out
 * as a view starting at an address the probing device accepts. So a block filled by the network
 * or the chunker goes to disk as it is, without a staging copy (store/disk.ts Pack.write).
 */

/** Alignment direct I/O wants for addresses, offsets and lengths (the largest common device block). */
export const ALIGN = 4096

/**
 * A block is handed out with one reference; every party that still reads it (a worker, the
 * store, a reader) retains it and releases when done; at zero it returns to its pool.
 */
export interface SharedBlock {
  readonly bytes: Uint8Array
  retain (): void
  release (): void
}

/** Finds the offset in `buffer` of its first byte direct I/O accepts as a start (< ALIGN), or undefined. */
type Aligner = (buffer: SharedArrayBuffer) => number | undefined
let aligner: Aligner | undefined
/** the aligned offset found for each pooled buffer */
const alignedAt = new WeakMap<ArrayBufferLike, number>()

/** Registers how to find aligned offsets (the first registration wins; it must stay usable). */
export function setAligner (find: Aligner): void {
  aligner ??= find
}

/**
 * Where `bytes` lies relative to the aligned addresses of its block (its offset from the view's
 * start, modulo ALIGN), when its buffer is a pooled block whose alignment is known; undefined
 * otherwise. A run placed at the same offset within an ALIGN-aligned file position can be written
 * directly from the block.
 */
export function pageOffsetOf (bytes: Uint8Array): number | undefined {
  const base = alignedAt.get(bytes.buffer)
  if (base === undefined || bytes.byteOffset < base) return undefined
  return (bytes.byteOffset - base) % ALIGN
}

export class SharedBlockPool {
  private readonly free: SharedArrayBuffer[] = []

  constructor (readonly blockSize: number, private readonly maxFree = 32) {}

  acquire (): SharedBlock {
    // Room for an aligned start (the aligned offset is below ALIGN).
    const buffer = this.free.pop() ?? new SharedArrayBuffer(this.blockSize + ALIGN)
    const bytes = this.view(buffer)
    let refs = 1
    return {
      bytes,
      retain: () => { refs++ },
      release: () => {
        // A release too many would hand memory still in use to the next taker: fail loudly.
        if (refs <= 0) throw new Error('SharedBlock released more often than retained')
        if (--refs === 0 && this.free.length < this.maxFree) this.free.push(buffer)
      }
    }
  }

  /** Aligned when possible; a buffer made before an aligner was known is probed when next used. */
  private view (buffer: SharedArrayBuffer): Uint8Array {
    let base = alignedAt.get(buffer)
    if (base === undefined && aligner !== undefined) {
      base = aligner(buffer)
      if (base !== undefined) alignedAt.set(buffer, base)
    }
    return new Uint8Array(buffer, base ?? 0, this.blockSize)
  }
}

const pools = new Map<number, SharedBlockPool>()

/**
 * The process's pool of blocks of `size` bytes. Up to 64 spare blocks are kept: a get keeps
 * one per batch in flight and its window's worth behind the cursor.
 */
export function sharedBlocks (size: number): SharedBlockPool {
  let pool = pools.get(size)
  if (pool === undefined) pools.set(size, pool = new SharedBlockPool(size, 64))
  return pool
}
