/**
 * Direct I/O for pack files: chunk bytes go between our own buffers and the disk without the
 * page cache.
 *
 * Why: on these VMs the kernel's page cache is the most expensive part of the data path. Every
 * page it allocates for a write is first-touched guest memory (free memory is handed back to the
 * host within seconds), so a buffered pwrite of 1 GiB into a fresh pack cost ~2 CPU-seconds in
 * `copy_folio_from_iter_atomic` — more than hashing the same bytes — and the fsync at commit then
 * writes it all again. O_DIRECT writes run at the disk's speed (1.5 GB/s here, ~0.1 CPU-s per
 * GiB), and the commit's fdatasync has nothing left to flush but metadata. Reads go direct too:
 * bytes written direct are not in the page cache, and a buffered read would pay the same
 * fresh-page cost to fill it.
 *
 * O_DIRECT wants the file offset, the length and the memory address aligned to the device's
 * block size. Offsets and lengths are aligned by the store (runs start ALIGN-aligned plus a lead,
 * and are written padded to ALIGN). JavaScript cannot see a buffer's address, so a buffer's
 * aligned offset is found by trying small direct reads at increasing offsets: the first that the
 * kernel accepts is aligned as the device wants (a misaligned one fails with EINVAL). The first
 * store that can do this lends a probe to core/blocks.ts (its descriptor stays open for the
 * process's life), so every pooled block is handed out aligned, and bytes that already lie in
 * one (a fetched batch, a chunked block) are written without a copy. Devices differ (512 B or
 * 4 KiB), so a store whose device refuses a block's alignment copes: a direct write from it that
 * fails with EINVAL goes through a staging buffer instead (and the block is not tried again), and
 * buffers the store takes for itself are checked with its own probe first.
 *
 * Where O_DIRECT is refused (tmpfs before Linux 6.6, some overlay and network filesystems), the
 * same code runs buffered: alignment is then merely harmless.
 */
import { closeSync, constants as fsConstants, openSync, readSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { ALIGN, type SharedBlock, type SharedBlockPool, pageOffsetOf, setAligner, sharedBlocks } from '../core/blocks.ts'

export { ALIGN }
const O_DIRECT: number = (fsConstants as { O_DIRECT?: number }).O_DIRECT ?? 0

export function alignDown (n: number): number { return n - (n % ALIGN) }
export function alignUp (n: number): number { return n % ALIGN === 0 ? n : n + ALIGN - (n % ALIGN) }

/**
 * Bytes that do not lie in a pooled block (a loose put's buffer, an upload's) are written
 * through staging blocks this big. Small, as every such write in flight holds one.
 */
export const STAGE_SIZE = 2 * 1024 * 1024

/**
 * Pooled read buffers smaller than a store's block, by size class: a read takes the smallest that
 * holds it. One 4 MiB block per read whatever its size made every small read (a 64 KiB get, a
 * 1 MiB object) take a 4 MiB buffer, and under 2,000 concurrent 1 MiB GETs most were fresh ones
 * past the pool's spares (locker server peak RSS 1.16–1.5 GB; 1.08 GB with buffers sized to the
 * read, measured; a read cache in front, cache.ts, is what removes the reads themselves).
 * Classes are powers of two plus the alignment slack a span can add at both ends (an aligned
 * read of n bytes at any offset spans less than n + 2 × ALIGN), so a 1 MiB object's read fits the
 * 1 MiB class. Each class is a process-wide pool (core/blocks.ts keeps up to 64 spares each).
 */
const READ_CLASSES = [64, 128, 256, 512, 1024, 2048].map(kib => kib * 1024 + 2 * ALIGN)

function readPoolFor (length: number, blocks: SharedBlockPool): SharedBlock {
  for (const size of READ_CLASSES) {
    if (length <= size && size < blocks.blockSize) return sharedBlocks(size).acquire()
  }
  return blocks.acquire()
}

/** An O_DIRECT descriptor kept for the process's lifetime, used only to probe alignment. */
let probe = -1

/**
 * The offset of the first byte of `buffer` at which direct reads through `fd` are accepted;
 * undefined if none. Overwrites what it tries: only for buffers nobody else uses.
 */
function alignedOffset (fd: number, buffer: ArrayBufferLike, from = 0): number | undefined {
  const all = new Uint8Array(buffer)
  for (let at = from; at < from + ALIGN && at + ALIGN <= all.byteLength; at += 16) {
    try {
      readSync(fd, all, at, ALIGN, 0)
      return at
    } catch (err) {
      if (!isInvalid(err)) throw err
    }
  }
  return undefined
}

function isInvalid (err: unknown): boolean {
  return (err as { code?: string })?.code === 'EINVAL'
}

export class DirectIo {
  /** aligned blocks of `blockSize` bytes, for pack reads (hashed in place) */
  readonly blocks: SharedBlockPool
  /** aligned blocks of STAGE_SIZE bytes that other bytes are copied through for direct writes */
  readonly stages: SharedBlockPool

  /** pooled buffers whose alignment this store's device refuses (another device's probe made them) */
  private readonly refused = new WeakSet<ArrayBufferLike>()
  /** pooled buffers this store's own probe has accepted */
  private readonly checked = new WeakSet<ArrayBufferLike>()

  private constructor (
    /** O_DIRECT when the filesystem takes it, else 0 */
    readonly flag: number,
    readonly blockSize: number,
    /** this store's O_DIRECT probe descriptor; -1 when buffered */
    private readonly own: number
  ) {
    this.blocks = sharedBlocks(blockSize)
    this.stages = sharedBlocks(STAGE_SIZE)
  }

  /**
   * Decides once per store directory whether direct I/O works there. `direct: false` forces the
   * buffered path (tests use it to cover both).
   */
  static open (dir: string, blockSize: number, direct = true): DirectIo {
    if (!direct || O_DIRECT === 0) return new DirectIo(0, blockSize, -1)
    const path = join(dir, `.direct-probe-${process.pid}`)
    try {
      writeFileSync(path, new Uint8Array(2 * ALIGN))
      const own = openSync(path, fsConstants.O_RDONLY | O_DIRECT)
      if (probe < 0) {
        probe = openSync(path, fsConstants.O_RDONLY | O_DIRECT)
        setAligner(buffer => alignedOffset(probe, buffer))
      }
      return new DirectIo(O_DIRECT, blockSize, own)
    } catch {
      return new DirectIo(0, blockSize, -1)
    } finally {
      // The open descriptors keep the probe file readable; its name is not needed.
      try { unlinkSync(path) } catch {}
    }
  }

  get direct (): boolean { return this.flag !== 0 }

  /**
   * Where a run of `bytes` should start relative to an aligned file position (see
   * Pack.reserve/write): bytes in an aligned block keep their page offset, so the write can go
   * straight from the block; others copy through staging buffers, and start at their offset
   * modulo 8 so that the copy runs word by word (V8's backing stores are at least 8-aligned).
   * 0 when buffered.
   */
  leadOf (bytes: Uint8Array): number {
    if (!this.direct) return 0
    return this.blockOffsetOf(bytes) ?? bytes.byteOffset & 7
  }

  /** The offset of `bytes` from the aligned address before it, for pooled blocks this device may take. */
  blockOffsetOf (bytes: Uint8Array): number | undefined {
    return this.refused.has(bytes.buffer) ? undefined : pageOffsetOf(bytes)
  }

  /** A direct write from this buffer failed with EINVAL: the device wants other alignment. */
  refuse (buffer: ArrayBufferLike, err: unknown): boolean {
    if (!isInvalid(err)) return false
    this.refused.add(buffer)
    return true
  }

  /** A staging buffer this store's device takes. */
  stage (): SharedBlock {
    return this.suitable(this.stages.acquire(), STAGE_SIZE)
  }

  /** A view of `length` bytes of a fresh buffer that direct I/O accepts. */
  aligned (length: number): Uint8Array {
    const buffer = new SharedArrayBuffer(length + ALIGN)
    if (!this.direct) return new Uint8Array(buffer, 0, length)
    const at = alignedOffset(this.own, buffer)
    if (at === undefined) throw new Error(`no aligned offset in a ${buffer.byteLength}-byte buffer`)
    return new Uint8Array(buffer, at, length)
  }

  /**
   * A buffer for one I/O of up to `length` bytes: a pooled block of the smallest read class that
   * holds it, or a one-off for oversized ones.
   */
  acquire (length: number): SharedBlock {
    // Only chunks larger than a read batch need a one-off (rare): not pooled, so not kept.
    if (length > this.blockSize) return { bytes: this.aligned(length), retain () {}, release () {} }
    return this.suitable(readPoolFor(length, this.blocks), length)
  }

  /**
   * The block if this store's device takes it as it is aligned (checked once per buffer with the
   * store's own probe: safe, as nobody else uses a block just acquired), else a one-off.
   */
  private suitable (block: SharedBlock, length: number): SharedBlock {
    if (!this.direct) return block
    const buffer = block.bytes.buffer
    if (!this.refused.has(buffer) && pageOffsetOf(block.bytes) === 0) {
      if (this.checked.has(buffer)) return block
      if (alignedOffset(this.own, buffer, block.bytes.byteOffset) === block.bytes.byteOffset) {
        this.checked.add(buffer)
        return block
      }
      this.refused.add(buffer)
    }
    block.release()
    return { bytes: this.aligned(length), retain () {}, release () {} }
  }

  close (): void {
    if (this.own >= 0) closeSync(this.own)
  }
}
