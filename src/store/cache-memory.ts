/**
 * Memory for the read cache's chunks: buffers in size classes, reused rather than allocated per
 * chunk, and counted (a buffer goes back for reuse only once nothing uses it).
 *
 * Why reuse: a fresh buffer per chunk costs more than the copy into it — first-touch page faults
 * on new memory, then garbage collection of the dropped buffers (measured, 64 KiB chunks through
 * a 256 MiB working set: 0.43 CPU-s per GiB copied into fresh buffers, 0.22 into reused ones,
 * before any collection; in the locker server the fresh buffers' copy and the collections were
 * its largest costs after the socket writes). A reused buffer's pages are already the
 * process's. Why classes: chunks vary in size (cdc: 16–256 KiB), and a buffer freed
 * by one chunk must fit the next; sizes are rounded up to a quarter of their power of two
 * (4 classes per doubling, at most 25 % unused, ~12 % on average), and that rounded size is what
 * the cache counts against its bound.
 */

/** The smallest class: below it, rounding would leave most of a buffer unused anyway. */
const MIN_CLASS = 4096

/** The buffer size a chunk of `length` bytes takes. */
export function sizeClass (length: number): number {
  if (length <= MIN_CLASS) return MIN_CLASS
  const granule = 2 ** Math.max(0, Math.floor(Math.log2(length)) - 2)
  return Math.ceil(length / granule) * granule
}

/**
 * A chunk's bytes in the cache's memory, counted: the cache holds one reference while it keeps
 * the chunk, and every reader one until it lets go. At zero the buffer is reused.
 */
export class HeldChunk {
  /** references; starts at 0, the creator hands them out */
  refs = 0

  constructor (
    readonly bytes: Uint8Array,
    /** the memory it takes (its buffer's size class) */
    readonly size: number,
    private readonly memory: ChunkMemory,
    private readonly buffer: ArrayBuffer
  ) {}

  retain (): void { this.refs++ }

  release (): void {
    // A release too many would hand memory still in use to the next chunk: fail loudly.
    if (this.refs <= 0) throw new Error('HeldChunk released more often than retained')
    if (--this.refs === 0) this.memory.reuse(this.buffer)
  }

  /** For a chunk nobody took a reference to (not kept, nobody waiting). */
  discardIfUnused (): void {
    if (this.refs === 0) this.memory.reuse(this.buffer)
  }
}

export class ChunkMemory {
  private readonly spare = new Map<number, ArrayBuffer[]>()
  private spareBytes = 0

  /** `maxSpareBytes`: buffers kept for reuse beyond that are left to the garbage collector. */
  constructor (private readonly maxSpareBytes: number) {}

  /**
   * A copy of `bytes` in a buffer of the cache's, with no references yet. The copy starts at the
   * same offset modulo 8 as the source: V8 copies out of shared memory (the disk store's read
   * blocks) word by word only when source and target are equally aligned, byte by byte otherwise
   * (measured: 0.41 vs 0.10 s per GiB; Pack.write in disk.ts meets the same).
   */
  copy (bytes: Uint8Array): HeldChunk {
    const lead = bytes.byteOffset & 7
    const size = sizeClass(bytes.byteLength + lead)
    let buffer = this.spare.get(size)?.pop()
    if (buffer !== undefined) this.spareBytes -= size
    else buffer = new ArrayBuffer(size)
    const view = new Uint8Array(buffer, lead, bytes.byteLength)
    view.set(bytes)
    return new HeldChunk(view, size, this, buffer)
  }

  /** bytes of buffers waiting to be reused */
  get spared (): number { return this.spareBytes }

  reuse (buffer: ArrayBuffer): void {
    if (this.spareBytes + buffer.byteLength > this.maxSpareBytes) return
    let list = this.spare.get(buffer.byteLength)
    if (list === undefined) this.spare.set(buffer.byteLength, list = [])
    list.push(buffer)
    this.spareBytes += buffer.byteLength
  }
}
