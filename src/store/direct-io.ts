/**
 * Direct I/O for pack files: chunk bytes go between our own buffers and the disk without the
 * page cache.
 *
 * Why: on these VMs the kernel's page cache is the most expensive part of the data path. Every
 * page it allocates for a write is first-touched guest memory (free memory is handed back to the
 * host within seconds), so a buffered pwrite of 1 GiB into a fresh pack cost ~2 CPU-seconds in
 * `copy_folio_from_iter_atomic` — more than hashing the same bytes — and the fsync at commit then
 * writes it all again. O_DIRECT writes from a reused buffer run at the disk's speed (1.5 GB/s
 * here, ~0.1 CPU-s per GiB), and the commit's fdatasync has nothing left to flush but metadata.
 * Reads go direct too: bytes written direct are not in the page cache, and a buffered read would
 * pay the same fresh-page cost to fill it.
 *
 * O_DIRECT wants the file offset, the length and the memory address aligned to the device's
 * block size. Offsets and lengths are aligned by the store (runs start on ALIGN boundaries and
 * are written padded to ALIGN). JavaScript cannot see a buffer's address, so each buffer's
 * aligned offset is found by trying small direct reads at increasing offsets: the first that the
 * kernel accepts is aligned (a misaligned one fails with EINVAL).
 *
 * Where O_DIRECT is refused (tmpfs before Linux 6.6, some overlay and network filesystems), the
 * same code runs buffered: alignment is then merely harmless.
 */
import { closeSync, constants as fsConstants, openSync, readSync, unlinkSync, writeFileSync } from 'node:fs'
import { join } from 'node:path'
import { SharedBlockPool, type SharedBlock } from '../core/hash-pool.ts'

/** File offsets and lengths of direct I/O are multiples of this (the largest common device block). */
export const ALIGN = 4096
const O_DIRECT: number = (fsConstants as { O_DIRECT?: number }).O_DIRECT ?? 0

export function alignDown (n: number): number { return n - (n % ALIGN) }
export function alignUp (n: number): number { return n % ALIGN === 0 ? n : n + ALIGN - (n % ALIGN) }

/**
 * Direct writes go through staging buffers this big: a 4 MiB run is written as two. Small, as
 * every write in flight holds one (measured: 8 MiB stages cost ~25 MB of RSS during a put, and
 * 2 MiB writes are as fast on this disk).
 */
export const STAGE_SIZE = 2 * 1024 * 1024

export class DirectIo {
  /** aligned shared buffers of `blockSize` bytes, for pack reads (hashed in place) */
  readonly blocks: SharedBlockPool
  /** aligned buffers of STAGE_SIZE bytes that direct writes copy through */
  readonly stages: SharedBlockPool

  private constructor (
    /** O_DIRECT when the filesystem takes it, else 0 */
    readonly flag: number,
    /** an open O_DIRECT descriptor used only to find buffers' alignment; -1 when buffered */
    private readonly probe: number,
    readonly blockSize: number
  ) {
    this.blocks = new SharedBlockPool(blockSize, 16, buffer => this.aligned(buffer, blockSize), ALIGN)
    this.stages = new SharedBlockPool(STAGE_SIZE, 16, buffer => this.aligned(buffer, STAGE_SIZE), ALIGN)
  }

  /**
   * Decides once per store directory whether direct I/O works there. `direct: false` forces the
   * buffered path (tests use it to cover both).
   */
  static open (dir: string, blockSize: number, direct = true): DirectIo {
    if (!direct || O_DIRECT === 0) return new DirectIo(0, -1, blockSize)
    const path = join(dir, `.direct-probe-${process.pid}`)
    try {
      writeFileSync(path, new Uint8Array(2 * ALIGN))
      const fd = openSync(path, fsConstants.O_RDONLY | O_DIRECT)
      return new DirectIo(O_DIRECT, fd, blockSize)
    } catch {
      return new DirectIo(0, -1, blockSize)
    } finally {
      // The open descriptor keeps the probe file readable; its name is not needed.
      try { unlinkSync(path) } catch {}
    }
  }

  get direct (): boolean { return this.flag !== 0 }

  /**
   * How many bytes before `bytes` a direct write of them should start copying from, so that the
   * copy runs word-aligned (see Pack.write): the view's offset modulo 8 (V8's backing stores are
   * at least 8-aligned, so those bytes exist). 0 when buffered.
   */
  leadOf (bytes: Uint8Array): number {
    return this.direct ? bytes.byteOffset & 7 : 0
  }

  /** A view of `length` bytes of a fresh buffer that direct I/O accepts. */
  aligned (buffer: SharedArrayBuffer, length: number): Uint8Array {
    const all = new Uint8Array(buffer)
    if (this.probe < 0) return all.subarray(0, length)
    for (let at = 0; at + length <= all.byteLength; at += 16) {
      try {
        readSync(this.probe, all, at, ALIGN, 0)
        return all.subarray(at, at + length)
      } catch (err) {
        if ((err as { code?: string }).code !== 'EINVAL') throw err
      }
    }
    throw new Error(`no aligned offset in a ${all.byteLength}-byte buffer`)
  }

  /** A buffer for one I/O of up to `length` bytes: a pooled block, or a one-off for oversized ones. */
  acquire (length: number): SharedBlock {
    if (length <= this.blockSize) return this.blocks.acquire()
    // Only chunks larger than a read batch come here (rare): not pooled, so not kept.
    const bytes = this.aligned(new SharedArrayBuffer(length + ALIGN), length)
    return { bytes, retain () {}, release () {} }
  }

  close (): void {
    if (this.probe >= 0) closeSync(this.probe)
  }
}
