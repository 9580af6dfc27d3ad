/**
 * The embedded chunk store: chunk bytes appended to pack files, an index in SQLite.
 *
 *   dir/packs/000001.pack …   chunk bytes, back to back; a pack is appended to until ~packSize
 *   dir/index.sqlite          chunks (digest → pack, position, length, refs), objects, manifests
 *
 * A writer indexes its chunks once their bytes are written: rows with no reference, stamped
 * with the store's clock (`seq`), inserted in batches (see `index`). So a writer keeps no state
 * per chunk until commit (a 4 GiB object has 65,536 chunks), and readers and other writers find
 * the chunks at once (a written chunk still waiting for its batch is answered from `pending`).
 * Crash safety rests on two rules:
 *  - a commit first waits for its chunks' bytes to be written and, for a durable writer, flushed
 *    (fdatasync of the packs they lie in), then records the object and one reference
 *    per distinct chunk in one transaction: an object is listed only when all of its chunks are;
 *  - an unreferenced row a writer made may point at bytes that never reached the disk (power
 *    loss before the flush), so none is trusted across a restart: opening the store deletes them
 *    (loose puts, flushed before they are marked `loose`, stay until gc).
 * Bytes no row points at (a writer that died, deleted rows) are dead space in a pack, reclaimed
 * when gc compacts it.
 *
 * gc deletes unreferenced rows, except those an open writer may rely on: a row's seq is set to
 * the clock whenever a writer indexes it, finds it unreferenced, or its last reference is
 * dropped, and the clock ticks when a writer opens; rows stamped since the oldest open writer
 * started are left alone. No per-chunk pins. The clock restarts with the process (stamps are
 * reset at open, when no writer can be open).
 *
 * SQLite runs in WAL mode with synchronous=FULL when `fsync` is on (each commit is durable once
 * it returns; only the transactions indexing a writer's new chunks skip the sync, see `index`)
 * and NORMAL when it is off (a process crash loses nothing, a power loss may lose the
 * last commits but never makes the index inconsistent). The database is opened in exclusive
 * locking mode: one process owns a store directory, because pack appends are coordinated in
 * memory.
 *
 * A chunk whose bytes no longer hash to its cid keeps its row (and its reference count) with no
 * location: it counts as absent, objects that use it stay listed, and a later put of the right
 * bytes repairs them. A row with no references is simply deleted.
 *
 * getMany reads chunks that lie next to each other with one call (up to 4 MiB) and yields views
 * into that read: holding on to one chunk holds its whole read.
 */
import Database from 'better-sqlite3'
import { constants as fsConstants } from 'node:fs'
import { mkdir, open, readdir, unlink, type FileHandle } from 'node:fs/promises'
import { join } from 'node:path'
import {
  BerthError, ClosedError, HashMismatchError, InvalidConfigError, InvalidOidError,
  NotFoundError, StoreError, throwIfAborted
} from '../core/errors.ts'
import { type HashPool, sharedHashPool } from '../core/hash-pool.ts'
import { type ManifestInput, PackedManifest, packManifest } from '../core/manifest.ts'
import { cidFromDigest } from '../core/naming.ts'
import { checkSlice, copiesOfBorrowed, parseName, sameDigest } from './common.ts'
import type { SharedBlock } from '../core/blocks.ts'
import { ALIGN, alignDown, alignUp, DirectIo, STAGE_SIZE } from './direct-io.ts'
import type { BlockSlice, BorrowedChunk, ChunkStore, Descriptor, GcResult, ObjectInfo, ObjectWriter, ReadOptions, StoreUsage, WriterOptions } from './types.ts'

export const DEFAULT_PACK_SIZE = 1024 * 1024 * 1024

export interface DiskStoreOptions {
  dir: string
  /** hashes reads for verification; default: the process's shared pool */
  pool?: HashPool
  /** flush chunk bytes and index commits to stable storage; default true */
  fsync?: boolean
  /** a pack stops taking appends once it holds this many bytes; default 1 GiB */
  packSize?: number
  /** pack I/O bypasses the page cache where the filesystem allows (see direct-io.ts); default true */
  direct?: boolean
}

/**
 * Bytes read, hashed and yielded as one unit when chunks lie next to each other: with the
 * alignment around it, a full read fills one of the process's 4 MiB blocks (core/blocks.ts);
 * shorter ones take smaller pooled buffers (direct-io.ts).
 */
const READ_BATCH_BYTES = 4 * 1024 * 1024 - 2 * ALIGN
/** Chunks of written runs indexed with one transaction at most, and how long a run may wait for its batch. */
const INDEX_BATCH = 4096
const INDEX_DELAY_MS = 1000
/** Start flushing a pack in the background after this many unflushed bytes, so commit waits little. */
const FLUSH_BEHIND_BYTES = 64 * 1024 * 1024
/** getMany keeps this many batches reading and hashing while the consumer takes the current one. */
const READ_AHEAD = 3
/** A pack with less live data than this share of its size is copied into the current pack. */
const COMPACT_BELOW_LIVE_RATIO = 0.5
/** The largest pooled read buffer holds a read batch plus the alignment around it. */
const IO_BLOCK = READ_BATCH_BYTES + 2 * ALIGN
/** Runs lie up to this far apart (tail padding, then a lead): reads span such gaps. */
const MAX_GAP = 2 * ALIGN
const OBJECTS_PAGE = 512
const SCHEMA_VERSION = 3
const PACK_NAME = /^(\d+)\.pack$/

const SCHEMA = `
  CREATE TABLE IF NOT EXISTS chunks (
    digest BLOB PRIMARY KEY,
    pack INTEGER,               -- NULL: the bytes failed verification; the row keeps its references
    position INTEGER,
    length INTEGER NOT NULL,
    refs INTEGER NOT NULL DEFAULT 0,
    seq INTEGER NOT NULL DEFAULT 0,   -- with refs = 0: the store's clock when a writer last wrote or relied on it (see gc)
    loose INTEGER NOT NULL DEFAULT 0  -- 1: put as a loose chunk, its bytes flushed: kept across a reopen (until gc)
  ) WITHOUT ROWID;
  CREATE INDEX IF NOT EXISTS chunks_unreferenced ON chunks (refs) WHERE refs = 0;
  CREATE TABLE IF NOT EXISTS objects (
    oid BLOB PRIMARY KEY,
    size INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    created INTEGER NOT NULL
  ) WITHOUT ROWID;
  -- a PackedManifest: per descriptor, 32-byte digest then uint32 big-endian length
  CREATE TABLE IF NOT EXISTS manifests (
    oid BLOB PRIMARY KEY,
    entries BLOB NOT NULL
  );
`

function packName (id: number): string {
  return `${String(id).padStart(6, '0')}.pack`
}

function ignore (): void {}

/** Keeps BerthErrors as they are; anything else (fs, SQLite) becomes ERR_STORE with its cause. */
function storeFailure (err: unknown, doing: string): BerthError {
  if (err instanceof BerthError) return err
  return new StoreError(`${doing}: ${(err as Error)?.message ?? String(err)}`, { cause: err })
}

/** An append-only file of chunk bytes. */
class Pack {
  /** bytes handed out so far: where the next append goes */
  end: number
  /** writes in progress whose rows are not in the index yet: gc leaves the pack alone */
  holds = 0
  private readers = 0
  private retired: (() => void) | undefined
  private unflushed = 0
  /** a write completed since the last flush started */
  private dirty = false
  private closed = false
  private syncQueued: Promise<void> | undefined
  private syncRunning: Promise<void> = Promise.resolve()
  private failure: StoreError | undefined

  constructor (readonly id: number, readonly path: string, readonly file: Promise<FileHandle>, end: number, private readonly fsync: boolean, private readonly io: DirectIo) {
    this.end = end
    // Every user awaits the file; this only keeps a failed open from being reported as unhandled.
    file.catch(ignore)
  }

  static async openExisting (dir: string, id: number, fsync: boolean, io: DirectIo): Promise<Pack> {
    const path = join(dir, packName(id))
    const file = await open(path, fsConstants.O_RDWR | io.flag)
    const { size } = await file.stat()
    return new Pack(id, path, Promise.resolve(file), size, fsync, io)
  }

  /** Returns at once, so a position can be handed out synchronously; writes wait for the file. */
  static create (dir: string, id: number, fsync: boolean, io: DirectIo): Pack {
    const path = join(dir, packName(id))
    const file = (async () => {
      const handle = await open(path, fsConstants.O_RDWR | fsConstants.O_CREAT | fsConstants.O_EXCL | io.flag)
      // The new name must survive a power loss before any index row can point into the file.
      if (fsync) await syncDirectory(dir)
      return handle
    })()
    return new Pack(id, path, file, 0, fsync, io)
  }

  /**
   * Where the next run of `length` bytes goes: runs start `lead` bytes after an aligned
   * position, so they can be written direct (see `write` for what the lead is for).
   */
  reserve (length: number, lead: number): number {
    const position = alignUp(this.end) + lead
    this.end = position + length
    return position
  }

  /**
   * Writes a run reserved with `reserve(bytes.byteLength, io.leadOf(bytes))`. Direct, from an
   * aligned pooled block (core/blocks.ts): the run's page offset in memory and in the file are
   * the same, so its whole pages go to disk straight from the block (see writeFromBlock); runs
   * of two pages or less are simply copied. Direct, from other memory: copied through aligned
   * staging buffers, from `lead` bytes before the run so that source and staging are equally
   * word-aligned (V8 copies shared memory word by word only then: 80 vs 390 ms per GiB,
   * measured). Either way the lead and the tail padding are zeros.
   */
  async write (bytes: Uint8Array, position: number, flushBehind = true): Promise<void> {
    const file = await this.file
    const lead = position - alignDown(position)
    const span = alignUp(lead + bytes.byteLength)
    if (!this.io.direct) {
      await writeAll(file, bytes, position)
    } else if (this.io.blockOffsetOf(bytes) === lead && span > 2 * ALIGN && await this.writeFromBlock(file, bytes, position)) {
      // written (but for its first and last page) straight from the block
    } else {
      const from = new Uint8Array(bytes.buffer, bytes.byteOffset - lead, bytes.byteLength + lead)
      for (let done = 0; done < from.byteLength;) {
        const length = Math.min(from.byteLength - done, STAGE_SIZE)
        const stage = this.io.stage()
        try {
          const padded = alignUp(length)
          stage.bytes.set(from.subarray(done, done + length))
          if (done === 0) stage.bytes.fill(0, 0, lead)
          stage.bytes.fill(0, length, padded)
          await writeAll(file, stage.bytes.subarray(0, padded), position - lead + done)
        } finally {
          stage.release()
        }
        done += length
      }
    }
    this.unflushed += bytes.byteLength
    this.dirty = true
    if (this.fsync && flushBehind && this.unflushed >= FLUSH_BEHIND_BYTES) {
      this.unflushed = 0
      // Not awaited: the commit's own sync will wait for it, and a failure sticks to the pack.
      this.sync().catch(ignore)
    }
  }

  /**
   * The pages wholly inside the run go to disk straight from the block; its first and last
   * pages, which it shares with whatever else the block holds there (perhaps bytes of another
   * object that used the block before), are copied into a stage and zero-padded: dead space in a
   * pack holds zeros. One writev. false when this device refuses the block's alignment (EINVAL,
   * nothing written): the caller copies instead.
   */
  private async writeFromBlock (file: FileHandle, bytes: Uint8Array, position: number): Promise<boolean> {
    const end = position + bytes.byteLength
    const wholeFrom = alignUp(position)
    const wholeTo = alignDown(end)
    const stage = this.io.stage()
    try {
      const parts: Uint8Array[] = []
      if (wholeFrom > position) {
        const head = stage.bytes.subarray(0, ALIGN)
        const lead = ALIGN - (wholeFrom - position)
        head.fill(0, 0, lead)
        head.set(bytes.subarray(0, wholeFrom - position), lead)
        parts.push(head)
      }
      parts.push(bytes.subarray(wholeFrom - position, wholeTo - position))
      if (end > wholeTo) {
        const tail = stage.bytes.subarray(ALIGN, 2 * ALIGN)
        tail.set(bytes.subarray(wholeTo - position))
        tail.fill(0, end - wholeTo)
        parts.push(tail)
      }
      await writevAll(file, parts, alignDown(position))
      return true
    } catch (err) {
      if (this.io.refuse(bytes.buffer, err)) return false
      throw err
    } finally {
      stage.release()
    }
  }

  /**
   * Reads `length` bytes at `position` into a pooled aligned buffer; the caller releases it.
   * The read covers the aligned blocks around the range. Bytes past the end of the file read as
   * zeros, so a pack cut short fails verification like any other damage.
   */
  async read (position: number, length: number): Promise<{ block: SharedBlock, view: Uint8Array }> {
    const file = await this.file
    const start = alignDown(position)
    const span = alignUp(position + length) - start
    const block = this.io.acquire(span)
    try {
      const into = block.bytes.subarray(0, span)
      let done = 0
      while (done < span) {
        const { bytesRead } = await file.read(into, done, span - done, start + done)
        if (bytesRead === 0) break
        done += bytesRead
      }
      into.fill(0, done)
      return { block, view: into.subarray(position - start, position - start + length) }
    } catch (err) {
      block.release()
      throw err
    }
  }

  /**
   * Resolves once an fdatasync that started after this call has finished, so it covers every
   * write completed before the call. Callers that arrive while one is queued share it.
   */
  sync (): Promise<void> {
    if (this.syncQueued === undefined) {
      const queued = this.syncRunning.then(async () => {
        this.syncQueued = undefined
        this.dirty = false
        if (this.failure !== undefined) throw this.failure
        try {
          await (await this.file).datasync()
        } catch (err) {
          // After a failed flush the kernel may have dropped the dirty pages: never trust this pack's tail again.
          this.failure = new StoreError(`flushing ${this.path} failed`, { cause: err })
          throw this.failure
        }
      })
      this.syncQueued = queued
      this.syncRunning = queued.catch(ignore)
    }
    return this.syncQueued
  }

  /** Resolves once every write completed before the call is on stable storage. */
  async flushed (): Promise<void> {
    // Retired by gc: its chunks were copied elsewhere and flushed there before it was closed.
    if (this.closed) return
    if (this.dirty || this.syncQueued !== undefined) return await this.sync()
    await this.syncRunning
    if (this.failure !== undefined) throw this.failure
  }

  /** A flush failed: nothing more is appended here (what it holds stays readable and verified). */
  get failed (): boolean {
    return this.failure !== undefined
  }

  /** A read in progress: a retired pack is closed and removed only after the last one. */
  acquire (): void { this.readers++ }

  releaseReader (): void {
    this.readers--
    if (this.readers === 0 && this.retired !== undefined) this.retired()
  }

  /** Closes and deletes the file once no read uses it; resolves when that has happened. */
  async retire (): Promise<void> {
    if (this.readers > 0) await new Promise<void>(resolve => { this.retired = resolve })
    await this.close()
    // A file left behind (unlink failed) holds no live chunk: the next gc after a reopen removes it.
    await unlink(this.path).catch(ignore)
  }

  async close (): Promise<void> {
    this.closed = true
    // FileHandle.close waits for operations still running on the handle.
    const file = await this.file.catch(() => undefined)
    await file?.close()
  }
}

/** Writes every part, back to back from `position`, going on after short writes. */
async function writevAll (file: FileHandle, parts: Uint8Array[], position: number): Promise<void> {
  let rest = parts
  while (rest.length > 0) {
    let { bytesWritten } = await file.writev(rest, position)
    position += bytesWritten
    const next: Uint8Array[] = []
    for (const part of rest) {
      if (bytesWritten >= part.byteLength) { bytesWritten -= part.byteLength; continue }
      next.push(part.subarray(bytesWritten))
      bytesWritten = 0
    }
    rest = next
  }
}

async function writeAll (file: FileHandle, bytes: Uint8Array, position: number): Promise<void> {
  for (let done = 0; done < bytes.byteLength;) {
    const { bytesWritten } = await file.write(bytes, done, bytes.byteLength - done, position + done)
    done += bytesWritten
  }
}

async function syncDirectory (dir: string): Promise<void> {
  const handle = await open(dir, 'r')
  try { await handle.sync() } finally { await handle.close() }
}

/**
 * A run of chunks a writer is writing: `written` once its bytes are (readers may have them then);
 * `indexed` settles once their rows are in the index (or the write failed).
 */
interface RunWrite { indexed: Promise<void> | undefined, written: boolean, pack: Pack | undefined }

/** A chunk of a run, for its index row. */
interface WrittenChunk { key: string, digest: Buffer, position: number, length: number }

/** A written run waiting for its rows (see DiskStore.index). */
interface UnindexedRun { pack: Pack, chunks: WrittenChunk[], resolve: () => void, reject: (err: unknown) => void }

interface ChunkRow { pack: number, position: number, length: number }
interface ObjectRow { oid: Buffer, size: number, chunks: number, created: number }

/** A read span and the digests of its slices; `block` holds the bytes until released. */
interface Verified { block: SharedBlock, view: Uint8Array, digests: Uint8Array[] }

interface ReadItem { cid: string, key: string, digest: Buffer, position: number, length: number }

/** Chunks read with one call, then hashed with one message to the pool. */
type ReadBatch =
  | { kind: 'missing', cid: string }
  | { kind: 'read', pack: Pack, start: number, items: ReadItem[], slices: number[], result: Promise<Verified> }

/**
 * Slice ends (relative to `start`) for hashing a span in one message, and which slice is which
 * item's: the alignment padding between runs becomes slices of its own, hashed and ignored.
 */
function sliceSpan (start: number, items: ReadonlyArray<{ position: number, length: number }>): { ends: number[], slices: number[] } {
  const ends: number[] = []
  const slices: number[] = []
  let cursor = start
  for (const item of items) {
    if (item.position > cursor) ends.push(item.position - start)
    cursor = item.position + item.length
    ends.push(cursor - start)
    slices.push(ends.length - 1)
  }
  return { ends, slices }
}

function prepare (db: Database.Database) {
  return {
    present: db.prepare<[Buffer], number>('SELECT 1 FROM chunks WHERE digest = ? AND pack IS NOT NULL').pluck(),
    refsOf: db.prepare<[Buffer], { refs: number, pack: number }>('SELECT refs, pack FROM chunks WHERE digest = ? AND pack IS NOT NULL'),
    touch: db.prepare<[number, Buffer]>('UPDATE chunks SET seq = ? WHERE digest = ? AND refs = 0'),
    locate: db.prepare<[Buffer], ChunkRow>('SELECT pack, position, length FROM chunks WHERE digest = ? AND pack IS NOT NULL'),
    // A row that lost its bytes takes these (repairing the objects that use it); one with good bytes keeps them.
    indexWritten: db.prepare<[Buffer, number, number, number, number]>(`
      INSERT INTO chunks (digest, pack, position, length, refs, seq) VALUES (?, ?, ?, ?, 0, ?)
      ON CONFLICT (digest) DO UPDATE SET seq = excluded.seq,
        pack = coalesce(pack, excluded.pack),
        position = CASE WHEN pack IS NULL THEN excluded.position ELSE position END`),
    addReference: db.prepare<[Buffer, number]>('UPDATE chunks SET refs = refs + 1 WHERE digest = ? AND pack IS NOT NULL AND length = ?'),
    dropReference: db.prepare<[number, Buffer]>('UPDATE chunks SET refs = refs - 1, seq = ? WHERE digest = ?'),
    insertLoose: db.prepare<[Buffer, number, number, number]>(`
      INSERT INTO chunks (digest, pack, position, length, refs, seq, loose) VALUES (?, ?, ?, ?, 0, 0, 1)
      ON CONFLICT (digest) DO UPDATE SET loose = 1,
        pack = coalesce(pack, excluded.pack),
        position = CASE WHEN pack IS NULL THEN excluded.position ELSE position END`),
    markLoose: db.prepare<[Buffer]>('UPDATE chunks SET loose = 1 WHERE digest = ? AND pack IS NOT NULL'),
    forgetBytes: db.prepare<[Buffer, number, number]>('UPDATE chunks SET pack = NULL, position = NULL WHERE digest = ? AND pack = ? AND position = ?'),
    deleteLost: db.prepare<[Buffer]>('DELETE FROM chunks WHERE digest = ? AND pack IS NULL AND refs = 0'),
    collectable: db.prepare<[number], { chunks: number, bytes: number }>('SELECT count(*) AS chunks, coalesce(sum(CASE WHEN pack IS NULL THEN 0 ELSE length END), 0) AS bytes FROM chunks WHERE refs = 0 AND seq < ?'),
    deleteCollectable: db.prepare<[number]>('DELETE FROM chunks WHERE refs = 0 AND seq < ?'),
    dropWriterOrphans: db.prepare('DELETE FROM chunks WHERE refs = 0 AND loose = 0'),
    // The clock starts again at 0 in every process: stamps from an earlier one mean nothing.
    resetStamps: db.prepare('UPDATE chunks SET seq = 0 WHERE refs = 0 AND seq <> 0'),
    liveBytes: db.prepare<[], { pack: number, live: number }>('SELECT pack, sum(length) AS live FROM chunks WHERE pack IS NOT NULL GROUP BY pack'),
    chunksIn: db.prepare<[number], { digest: Buffer, position: number, length: number }>('SELECT digest, position, length FROM chunks WHERE pack = ? ORDER BY position'),
    countIn: db.prepare<[number], number>('SELECT count(*) FROM chunks WHERE pack = ?').pluck(),
    move: db.prepare<[number, number, Buffer, number, number]>('UPDATE chunks SET pack = ?, position = ? WHERE digest = ? AND pack = ? AND position = ?'),
    forgetMissingPacks: db.prepare<[string]>('UPDATE chunks SET pack = NULL, position = NULL WHERE pack IS NOT NULL AND pack NOT IN (SELECT value FROM json_each(?))'),
    object: db.prepare<[Buffer], ObjectRow>('SELECT oid, size, chunks, created FROM objects WHERE oid = ?'),
    objectsAfter: db.prepare<[Buffer, number], ObjectRow>('SELECT oid, size, chunks, created FROM objects WHERE oid > ? ORDER BY oid LIMIT ?'),
    insertObject: db.prepare<[Buffer, number, number, number]>('INSERT INTO objects (oid, size, chunks, created) VALUES (?, ?, ?, ?)'),
    deleteObject: db.prepare<[Buffer]>('DELETE FROM objects WHERE oid = ?'),
    manifest: db.prepare<[Buffer], Buffer>('SELECT entries FROM manifests WHERE oid = ?').pluck(),
    insertManifest: db.prepare<[Buffer, Buffer]>('INSERT INTO manifests (oid, entries) VALUES (?, ?)'),
    deleteManifest: db.prepare<[Buffer]>('DELETE FROM manifests WHERE oid = ?'),
    countObjects: db.prepare<[], number>('SELECT count(*) FROM objects').pluck(),
    usage: db.prepare<[], { chunks: number, bytes: number }>('SELECT count(*) AS chunks, coalesce(sum(length), 0) AS bytes FROM chunks WHERE pack IS NOT NULL')
  }
}

type Statements = ReturnType<typeof prepare>

function objectInfo (row: ObjectRow): ObjectInfo {
  return { oid: cidFromDigest(row.oid), size: row.size, chunks: row.chunks, createdAt: row.created }
}

export class DiskStore implements ChunkStore {
  /** chunks being written by open writers, not yet indexed; shared so concurrent writers write a chunk once */
  readonly pending = new Map<string, RunWrite>()
  /** ticks when a writer opens; rows a writer touches are stamped with it (see gc) */
  private clock = 0
  /** open writers and the clock when each opened, oldest first */
  private readonly writers = new Map<DiskWriter, number>()
  private readonly statements: Statements
  private current: Pack | undefined
  private nextPackId: number
  private gcQueue: Promise<unknown> = Promise.resolve()
  private closed = false
  private readonly recordTransaction: (oid: Buffer, manifest: PackedManifest, distinct: Uint32Array) => ObjectInfo
  private readonly indexTransaction: (runs: readonly UnindexedRun[]) => void
  private unindexed: UnindexedRun[] = []
  private unindexedChunks = 0
  private indexTimer: NodeJS.Timeout | undefined
  /** writers waiting in commit or abort for their runs' rows */
  private committing = 0
  private readonly releaseTransaction: (oid: Buffer) => boolean
  private readonly collectTransaction: () => GcResult
  private readonly moveTransaction: (from: Pack, moves: ReadonlyArray<{ digest: Buffer, from: number, to: Pack, position: number }>, lost: ReadonlyArray<{ digest: Buffer, position: number }>) => void
  private readonly forgetTransaction: (digest: Buffer, pack: number, position: number) => void

  constructor (
    private readonly db: Database.Database,
    private readonly packDir: string,
    private readonly packs: Map<number, Pack>,
    readonly pool: HashPool,
    readonly fsync: boolean,
    private readonly packSize: number,
    private readonly io: DirectIo
  ) {
    this.statements = prepare(db)
    this.nextPackId = Math.max(0, ...packs.keys()) + 1
    const last = packs.get(this.nextPackId - 1)
    // Appending to the last pack after a restart avoids a small pack per restart.
    if (last !== undefined && last.end < packSize) this.current = last
    const sql = this.statements

    this.recordTransaction = db.transaction((oid, manifest, distinct) => {
      // Already stored: nothing to do (chunks that had lost their bytes were repaired when indexed).
      const existing = sql.object.get(oid)
      if (existing !== undefined) return objectInfo(existing)
      for (const i of distinct) {
        const length = manifest.length(i)
        if (sql.addReference.run(manifest.digest(i), length).changes === 0) throw new StoreError(`chunk ${cidFromDigest(manifest.digest(i))} (${length} bytes) is not in the store`)
      }
      const row: ObjectRow = { oid, size: manifest.size, chunks: manifest.count, created: Date.now() }
      sql.insertObject.run(oid, row.size, row.chunks, row.created)
      sql.insertManifest.run(oid, manifest.entries)
      return objectInfo(row)
    })

    this.indexTransaction = db.transaction((runs) => {
      for (const { pack, chunks } of runs) {
        for (const chunk of chunks) sql.indexWritten.run(chunk.digest, pack.id, chunk.position, chunk.length, this.clock)
      }
    })

    this.releaseTransaction = db.transaction((oid) => {
      const entries = sql.manifest.get(oid)
      if (entries === undefined) return false
      const manifest = PackedManifest.decode(entries)
      for (const i of manifest.distinct()) sql.dropReference.run(this.clock, manifest.digest(i))
      sql.deleteManifest.run(oid)
      sql.deleteObject.run(oid)
      return true
    })

    this.collectTransaction = db.transaction(() => {
      // Rows stamped since the oldest open writer started may be what it relies on.
      let oldest = this.clock + 1
      for (const start of this.writers.values()) { oldest = start; break }
      const result = sql.collectable.get(oldest)!
      sql.deleteCollectable.run(oldest)
      return result
    })

    this.moveTransaction = db.transaction((from, moves, lost) => {
      for (const move of moves) sql.move.run(move.to.id, move.position, move.digest, from.id, move.from)
      for (const { digest, position } of lost) this.forgetBytes(digest, from.id, position)
    })

    this.forgetTransaction = db.transaction((digest, pack, position) => this.forgetBytes(digest, pack, position))
  }

  async has (cid: string): Promise<boolean> {
    const { key, digest } = parseName(cid)
    return this.pending.get(key)?.written === true || this.sql().present.get(digest) !== undefined
  }

  async get (cid: string, o: ReadOptions = {}): Promise<Uint8Array> {
    throwIfAborted(o.signal)
    const { key, digest } = parseName(cid)
    this.indexIfWritten(key)
    const row = this.sql().locate.get(digest)
    if (row === undefined) throw new NotFoundError(`chunk ${key} is not in the store`)
    const pack = this.packs.get(row.pack)!
    pack.acquire()
    const { block, view, digests } = await this.readAndHash(pack, row.position, row.length, [row.length])
    try {
      if (!sameDigest(digests[0], digest)) throw this.corrupted(key, digest, pack, row.position)
      return new Uint8Array(view)
    } finally {
      block.release()
    }
  }

  getMany (cids: readonly string[], o: ReadOptions = {}): AsyncIterable<{ cid: string, bytes: Uint8Array }> {
    return copiesOfBorrowed(this.borrowMany(cids, o))
  }

  async * borrowMany (cids: readonly string[], o: ReadOptions = {}): AsyncIterable<BorrowedChunk> {
    let next = 0
    // A chunk that did not fit the batch being planned starts the next one. Its location is looked
    // up again then: gc may move it in between, and a location is only good until the next await.
    let carried: { cid: string, key: string, digest: Buffer } | undefined
    const lookUp = (): { cid: string, key: string, digest: Buffer, row: ChunkRow | undefined } => {
      let chunk = carried
      carried = undefined
      if (chunk === undefined) {
        const cid = cids[next++]
        chunk = { cid, ...parseName(cid) }
      }
      this.indexIfWritten(chunk.key)
      return { ...chunk, row: this.sql().locate.get(chunk.digest) }
    }
    // Looks up chunks until the next one is not adjacent in the same pack, then starts reading.
    // Adjacent means: next in the pack, or after less than MAX_GAP bytes of padding.
    const plan = (): ReadBatch => {
      const first = lookUp()
      if (first.row === undefined) {
        next = cids.length // the iteration ends at this chunk: nothing after it is needed
        return { kind: 'missing', cid: first.cid }
      }
      const pack = this.packs.get(first.row.pack)!
      const start = first.row.position
      let end = start + first.row.length
      const items = [{ cid: first.cid, key: first.key, digest: first.digest, position: start, length: first.row.length }]
      while (next < cids.length) {
        const candidate = lookUp()
        const row = candidate.row
        if (row === undefined || row.pack !== pack.id || row.position < end || row.position - end >= MAX_GAP || row.position + row.length - start > READ_BATCH_BYTES) {
          carried = { cid: candidate.cid, key: candidate.key, digest: candidate.digest }
          break
        }
        items.push({ cid: candidate.cid, key: candidate.key, digest: candidate.digest, position: row.position, length: row.length })
        end = row.position + row.length
      }
      pack.acquire()
      const { ends, slices } = sliceSpan(start, items)
      return { kind: 'read', pack, start, items, slices, result: this.readAndHash(pack, start, end - start, ends) }
    }

    const inFlight: ReadBatch[] = []
    try {
      while (true) {
        throwIfAborted(o.signal)
        while (inFlight.length < READ_AHEAD && (next < cids.length || carried !== undefined)) inFlight.push(plan())
        const batch = inFlight.shift()
        if (batch === undefined) return
        if (batch.kind === 'missing') throw new NotFoundError(`chunk ${batch.cid} is not in the store`)
        const { block, view, digests } = await batch.result
        // The batch's own reference; each chunk handed out takes one more, dropped by its release.
        try {
          for (let i = 0; i < batch.items.length; i++) {
            const item = batch.items[i]
            if (!sameDigest(digests[batch.slices[i]], item.digest)) throw this.corrupted(item.key, item.digest, batch.pack, item.position)
            const at = item.position - batch.start
            block.retain()
            let released = false
            yield { cid: item.cid, bytes: view.subarray(at, at + item.length), release: () => { if (!released) { released = true; block.release() } } }
          }
        } finally {
          block.release()
        }
      }
    } finally {
      // The consumer may stop early: reads still running must not surface as unhandled rejections,
      // and the buffers they fill go back to the pool.
      for (const batch of inFlight) if (batch.kind === 'read') batch.result.then(r => r.block.release(), ignore)
    }
  }

  async put (cid: string, bytes: Uint8Array, o: ReadOptions = {}): Promise<void> {
    throwIfAborted(o.signal)
    this.ensureOpen()
    const { key, digest } = parseName(cid)
    const [actual] = await this.pool.digestSlices(bytes, [bytes.byteLength])
    if (!sameDigest(actual, digest)) throw new HashMismatchError(`bytes do not hash to ${key}`)
    const present = this.sql().locate.get(digest)
    if (present !== undefined) {
      // Perhaps a writer's, not flushed yet: a loose chunk must outlive a power loss and a reopen.
      try {
        if (this.fsync) await this.packs.get(present.pack)?.flushed()
      } catch (err) {
        throw storeFailure(err, `storing chunk ${key}`)
      }
      this.sql().markLoose.run(digest)
      return
    }
    const { pack, position } = this.reserve(bytes.byteLength, this.io.leadOf(bytes))
    pack.holds++
    try {
      await pack.write(bytes, position)
      if (this.fsync) await pack.sync()
      this.sql().insertLoose.run(digest, pack.id, position, bytes.byteLength)
    } catch (err) {
      throw storeFailure(err, `storing chunk ${key}`)
    } finally {
      pack.holds--
    }
  }

  openWriter (o: WriterOptions = {}): ObjectWriter {
    this.ensureOpen()
    const writer = new DiskWriter(this, o.durable ?? true)
    this.writers.set(writer, ++this.clock)
    return writer
  }

  async putManifest (oid: string, manifest: ManifestInput): Promise<ObjectInfo> {
    return await this.openWriter().commit(oid, manifest)
  }

  async stat (oid: string): Promise<ObjectInfo | undefined> {
    const row = this.sql().object.get(parseName(oid, InvalidOidError).digest)
    return row === undefined ? undefined : objectInfo(row)
  }

  async * manifest (oid: string, o: ReadOptions = {}): AsyncIterable<Descriptor> {
    const entries = this.sql().manifest.get(parseName(oid, InvalidOidError).digest)
    if (entries === undefined) throw new NotFoundError(`object ${oid} is not stored`)
    let n = 0
    for (const descriptor of PackedManifest.decode(entries).descriptors()) {
      if ((n++ & 0x7ff) === 0) throwIfAborted(o.signal)
      yield descriptor
    }
  }

  async * objects (o: ReadOptions = {}): AsyncIterable<ObjectInfo> {
    // Paged: better-sqlite3 forbids other statements while an iterator is open, and the consumer
    // may call the store between items.
    let after: Buffer = Buffer.alloc(0)
    while (true) {
      throwIfAborted(o.signal)
      const rows = this.sql().objectsAfter.all(after, OBJECTS_PAGE)
      for (const row of rows) yield objectInfo(row)
      if (rows.length < OBJECTS_PAGE) return
      after = rows[rows.length - 1].oid
    }
  }

  async release (oid: string): Promise<boolean> {
    const { digest } = parseName(oid, InvalidOidError)
    this.ensureOpen()
    try {
      return this.releaseTransaction(digest)
    } catch (err) {
      throw storeFailure(err, `releasing ${oid}`)
    }
  }

  async gc (o: ReadOptions = {}): Promise<GcResult> {
    this.ensureOpen()
    // One collection at a time: two compactions of the same pack would copy it twice.
    const run = this.gcQueue.then(async () => await this.collect(o))
    this.gcQueue = run.catch(ignore)
    return await run
  }

  async usage (): Promise<StoreUsage> {
    const sql = this.sql()
    const { chunks, bytes } = sql.usage.get()!
    return { objects: sql.countObjects.get()!, chunks, bytes }
  }

  async close (): Promise<void> {
    if (this.closed) return
    // Runs already written get their rows (harmless if nobody commits them: dropped at the next open).
    this.indexNow()
    this.closed = true
    this.db.close()
    await Promise.all([...this.packs.values()].map(async pack => await pack.close()))
    this.io.close()
  }

  // Below: what DiskWriter needs from its store (with `pending` and `fsync`); not part of the
  // ChunkStore contract.

  ensureOpen (): void {
    if (this.closed) throw new ClosedError('store is closed')
  }

  /**
   * The pack holding a stored chunk a writer will rely on, or undefined if the store lacks it;
   * an unreferenced one is stamped with the clock, so gc leaves it to the writer.
   */
  rely (digest: Buffer): Pack | undefined {
    const sql = this.sql()
    const row = sql.refsOf.get(digest)
    if (row === undefined) return undefined
    if (row.refs === 0) sql.touch.run(this.clock, digest)
    return this.packs.get(row.pack)
  }

  /**
   * Rows for a run whose bytes are written: unreferenced, stamped with the clock. Runs are
   * indexed in batches (INDEX_BATCH chunks, or INDEX_DELAY_MS after the first, or at once while
   * a writer waits to commit): every transaction rewrites the B-tree pages its random keys land
   * on, so one per run wrote ~200 MB of log per GiB fetched (0.3 s of the main thread, measured).
   * Resolves once the run's rows are in the index.
   */
  index (pack: Pack, chunks: WrittenChunk[]): Promise<void> {
    this.ensureOpen()
    return new Promise((resolve, reject) => {
      this.unindexed.push({ pack, chunks, resolve, reject })
      this.unindexedChunks += chunks.length
      if (this.unindexedChunks >= INDEX_BATCH || this.committing > 0) this.indexNow()
      // Unref'd: a commit indexes at once, so the timer only bounds how long rows may wait.
      else this.indexTimer ??= setTimeout(() => this.indexNow(), INDEX_DELAY_MS).unref()
    })
  }

  /** Writes the queued rows, in one transaction committed without syncing the log (see below). */
  indexNow (): void {
    clearTimeout(this.indexTimer)
    this.indexTimer = undefined
    const batch = this.unindexed
    if (batch.length === 0) return
    this.unindexed = []
    this.unindexedChunks = 0
    try {
      this.ensureOpen()
      // Rows nobody references yet are dropped at the next open anyway: no need to sync the log
      // for them (the next object commit, synchronous, makes them durable with itself). Not a
      // prepared statement: SQLite applies this pragma when compiling it.
      if (this.fsync) this.db.pragma('synchronous = NORMAL')
      try {
        this.indexTransaction(batch)
      } finally {
        if (this.fsync) this.db.pragma('synchronous = FULL')
      }
    } catch (err) {
      for (const run of batch) run.reject(err)
      return
    }
    for (const run of batch) run.resolve()
  }

  /**
   * A chunk a writer has written is in the store for readers at once, though its row may wait
   * for its batch: a read of one indexes the queue first (rare: has() answers from `pending`).
   */
  private indexIfWritten (key: string): void {
    if (this.pending.get(key)?.written === true) this.indexNow()
  }

  /** While a writer waits for its runs' rows (`wait`), queued runs and runs that finish meanwhile are indexed at once. */
  async urgently<T> (wait: () => Promise<T>): Promise<T> {
    this.committing++
    try {
      this.indexNow()
      return await wait()
    } finally {
      this.committing--
    }
  }


  writerFinished (writer: DiskWriter): void {
    this.writers.delete(writer)
  }

  /** See Pack.write. */
  leadOf (bytes: Uint8Array): number {
    return this.io.leadOf(bytes)
  }

  /** Where `length` bytes will go: handed out synchronously so concurrent writers never overlap. */
  reserve (length: number, lead: number): { pack: Pack, position: number } {
    this.ensureOpen()
    let pack = this.current
    if (pack === undefined || pack.failed || (pack.end > 0 && alignUp(pack.end) + lead + length > this.packSize)) {
      pack = Pack.create(this.packDir, this.nextPackId++, this.fsync, this.io)
      this.packs.set(pack.id, pack)
      this.current = pack
    }
    return { pack, position: pack.reserve(length, lead) }
  }

  /** Makes an object exist, in one transaction; see DiskWriter.commit for what must come before. */
  record (oid: Buffer, manifest: PackedManifest, distinct: Uint32Array): ObjectInfo {
    this.ensureOpen()
    try {
      return this.recordTransaction(oid, manifest, distinct)
    } catch (err) {
      throw storeFailure(err, `recording object ${cidFromDigest(oid)}`)
    }
  }

  private sql (): Statements {
    this.ensureOpen()
    return this.statements
  }

  /**
   * Reads a span of a pack and hashes its slices; `pack` must be acquired. The read lands in a
   * pooled aligned shared buffer (direct I/O), so the workers hash it without a copy; the caller
   * releases the block. Fresh buffers per read would not do: V8 reclaims a dropped
   * SharedArrayBuffer only at a full collection (reading 2 GiB that way grew RSS past 1.2 GB).
   */
  private async readAndHash (pack: Pack, position: number, length: number, ends: readonly number[]): Promise<Verified> {
    let read: { block: SharedBlock, view: Uint8Array } | undefined
    try {
      read = await pack.read(position, length)
      const digests = await this.pool.digestSlices(read.view, ends)
      return { ...read, digests }
    } catch (err) {
      read?.block.release()
      throw storeFailure(err, `reading ${pack.path}`)
    } finally {
      pack.releaseReader()
    }
  }

  /** Drops the location of bytes that failed verification; returns the error to throw. */
  private corrupted (key: string, digest: Buffer, pack: Pack, position: number): HashMismatchError {
    if (!this.closed) this.forgetTransaction(digest, pack.id, position)
    return new HashMismatchError(`chunk ${key} is corrupted in ${pack.path} at ${position}; it was dropped from the store`)
  }

  private forgetBytes (digest: Buffer, pack: number, position: number): void {
    const sql = this.statements
    sql.forgetBytes.run(digest, pack, position)
    sql.deleteLost.run(digest)
  }

  private async collect (o: ReadOptions): Promise<GcResult> {
    throwIfAborted(o.signal)
    this.ensureOpen()
    const result = this.collectTransaction()
    const live = new Map(this.sql().liveBytes.all().map(row => [row.pack, row.live]))
    const dead: Pack[] = []
    const sparse: Pack[] = []
    // Decided without awaiting, while `live` is exact. Only the current pack takes new appends and
    // new holds, so a pack that is neither current nor held now stays as it is from here on.
    for (const pack of this.packs.values()) {
      if (pack === this.current || pack.holds > 0) continue
      const bytes = live.get(pack.id) ?? 0
      if (bytes === 0) dead.push(pack)
      else if (bytes < pack.end * COMPACT_BELOW_LIVE_RATIO) sparse.push(pack)
    }
    for (const pack of dead) await this.retire(pack)
    for (const pack of sparse) {
      throwIfAborted(o.signal)
      await this.compact(pack, o)
    }
    return result
  }

  private async retire (pack: Pack): Promise<void> {
    this.packs.delete(pack.id)
    await pack.retire()
  }

  /**
   * Copies a pack's live chunks (verified on the way) to the current pack, flushes the copies,
   * repoints the rows in one transaction, then deletes the old pack. Runs inside gc, which is
   * serialized, so the packs copied into cannot be collected meanwhile.
   */
  private async compact (pack: Pack, o: ReadOptions): Promise<void> {
    const rows = this.sql().chunksIn.all(pack.id)
    const moves: Array<{ digest: Buffer, from: number, to: Pack, position: number }> = []
    const lost: Array<{ digest: Buffer, position: number }> = []
    const targets = new Set<Pack>()
    try {
      let first = 0
      while (first < rows.length) {
        throwIfAborted(o.signal)
        const start = rows[first].position
        let last = first + 1
        let end = start + rows[first].length
        while (last < rows.length && rows[last].position >= end && rows[last].position - end < MAX_GAP && rows[last].position + rows[last].length - start <= READ_BATCH_BYTES) {
          end = rows[last].position + rows[last].length
          last++
        }
        pack.acquire()
        const { ends, slices } = sliceSpan(start, rows.slice(first, last))
        const { block, view: bytes, digests } = await this.readAndHash(pack, start, end - start, ends)
        try {
          // Good chunks next to each other go out with one write (padding between them included); a bad one ends the run.
          let runFirst = first
          for (let i = first; i <= last; i++) {
            if (i < last && sameDigest(digests[slices[i - first]], rows[i].digest)) continue
            if (i > runFirst) {
              const from = rows[runFirst].position - start
              const to = rows[i - 1].position + rows[i - 1].length - start
              const target = this.reserve(to - from, this.io.leadOf(bytes.subarray(from, to)))
              targets.add(target.pack)
              await target.pack.write(bytes.subarray(from, to), target.position)
              for (let k = runFirst; k < i; k++) {
                moves.push({ digest: rows[k].digest, from: rows[k].position, to: target.pack, position: target.position + rows[k].position - start - from })
              }
            }
            if (i < last) lost.push(rows[i])
            runFirst = i + 1
          }
        } finally {
          block.release()
        }
        first = last
      }
      if (this.fsync) await Promise.all([...targets].map(async target => await target.sync()))
      this.ensureOpen()
      this.moveTransaction(pack, moves, lost)
      // Rows only ever enter a pack while it is current or held, so none can have arrived since.
      if (this.statements.countIn.get(pack.id) === 0) await this.retire(pack)
    } catch (err) {
      throw storeFailure(err, `compacting ${pack.path}`)
    }
  }
}

class DiskWriter implements ObjectWriter {
  /** runs written here, or by other writers, whose rows this writer needs before it commits */
  private readonly waiting = new Set<Promise<void>>()
  /** packs holding the chunks this writer wrote or relies on: a durable commit flushes them */
  private readonly packs = new Set<Pack>()
  private failure: unknown
  private finished = false

  constructor (private readonly store: DiskStore, private readonly durable: boolean) {}

  async putChunk (cid: string, bytes: Uint8Array, o: ReadOptions = {}): Promise<void> {
    await this.putBlock(bytes, [{ cid, start: 0, length: bytes.byteLength }], o)
  }

  async putBlock (bytes: Uint8Array, chunks: readonly BlockSlice[], o: ReadOptions = {}): Promise<void> {
    this.ensureWritable(o)
    const store = this.store
    const own: Array<Promise<void>> = []
    let run: { start: number, end: number, chunks: WrittenChunk[], write: RunWrite } | undefined

    const startRun = (): void => {
      if (run === undefined) return
      const { start, end, chunks: runChunks, write } = run
      const { pack, position } = store.reserve(end - start, store.leadOf(bytes.subarray(start, end)))
      for (const chunk of runChunks) chunk.position += position - start
      write.pack = pack
      this.packs.add(pack)
      pack.holds++
      const written = pack.write(bytes.subarray(start, end), position, this.durable)
      const indexed = written
        .then(async () => {
          write.written = true
          await store.index(pack, runChunks)
        })
        .finally(() => {
          pack.holds--
          // Indexed, or failed: failed bytes must not be offered to other writers either.
          for (const chunk of runChunks) if (store.pending.get(chunk.key) === write) store.pending.delete(chunk.key)
        })
      write.indexed = indexed
      own.push(written)
      this.wait(indexed)
      run = undefined
    }

    // Everything that can refuse the call is checked before the first chunk is published.
    for (const slice of chunks) checkSlice(bytes, slice)
    const names = chunks.map(({ cid }) => parseName(cid))
    // Nothing awaits until every run has started: a chunk is published as pending as soon as it
    // joins a run, so neither this loop nor a concurrent writer writes it twice.
    let failure: unknown
    try {
      for (let i = 0; i < chunks.length; i++) {
        const { start, length } = chunks[i]
        const { key, digest } = names[i]
        const pending = store.pending.get(key)
        if (pending !== undefined) {
          // Being written (by this writer's current run when `indexed` is still unset).
          if (pending.indexed !== undefined) this.wait(pending.indexed)
          if (pending.pack !== undefined) this.packs.add(pending.pack)
          startRun()
          continue
        }
        const holder = store.rely(digest)
        if (holder !== undefined) {
          this.packs.add(holder)
          startRun()
          continue
        }
        if (run === undefined || run.end !== start) {
          startRun()
          run = { start, end: start, chunks: [], write: { indexed: undefined, written: false, pack: undefined } }
        }
        run.chunks.push({ key, digest, position: start, length })
        run.end += length
        store.pending.set(key, run.write)
      }
      startRun()
    } catch (err) {
      // (the index failed under us, the store closed) A run that never started must not stay
      // published as pending: other writers would wait for it forever.
      failure = err
      if (run !== undefined) for (const chunk of run.chunks) if (store.pending.get(chunk.key) === run.write) store.pending.delete(chunk.key)
    }
    // The caller may reuse `bytes` once this returns, so every write that reads them must have
    // ended first — also when one failed, or a late write would copy reused memory to disk under
    // a chunk's name. Rows may come a little later, in a batch; commit waits for those.
    const results = await Promise.allSettled(own)
    for (const r of results) if (r.status === 'rejected') failure ??= r.reason
    if (failure !== undefined) throw storeFailure(failure, 'writing chunks')
  }

  /**
   * Whether the store has a chunk; if it has, the chunk is kept for this writer (safe from gc,
   * flushed before a durable commit) as if written here. For callers that skip fetching the
   * chunks the store holds (a transfer).
   */
  async has (cid: string): Promise<boolean> {
    this.ensureWritable({})
    const { key, digest } = parseName(cid)
    const pending = this.store.pending.get(key)
    if (pending !== undefined) {
      // Written, not yet indexed: its row will carry a stamp no older than this writer.
      if (!pending.written || pending.indexed === undefined) return false
      this.wait(pending.indexed)
      if (pending.pack !== undefined) this.packs.add(pending.pack)
      return true
    }
    const holder = this.store.rely(digest)
    if (holder === undefined) return false
    this.packs.add(holder)
    return true
  }

  /**
   * The writer is finished afterwards, whether the commit succeeded or not: a caller that does
   * not abort after a failed commit leaves nothing behind.
   */
  async commit (oid: string, input: ManifestInput): Promise<ObjectInfo> {
    this.ensureWritable({})
    this.finished = true
    try {
      const { digest } = parseName(oid, InvalidOidError)
      const manifest = packManifest(input)
      const distinct = manifest.distinct()
      await this.store.urgently(async () => await this.settled())
      if (this.failure !== undefined) throw storeFailure(this.failure, `writing the chunks of ${oid}`)
      try {
        // The packs this object's chunks lie in (written here, or found): what must be on disk.
        if (this.store.fsync && this.durable) await Promise.all([...this.packs].map(async pack => await pack.flushed()))
      } catch (err) {
        throw storeFailure(err, `flushing the chunks of ${oid}`)
      }
      return this.store.record(digest, manifest, distinct)
    } finally {
      // After a failure, runs may still be in flight: they end before the writer lets go.
      await this.store.urgently(async () => await this.settled())
      this.store.writerFinished(this)
    }
  }

  async abort (): Promise<void> {
    if (this.finished) return
    this.finished = true
    // Runs still being written keep their pack held until they end, so gc never deletes under them.
    await this.store.urgently(async () => await this.settled())
    this.store.writerFinished(this)
  }

  /** Keeps track of a run this writer needs; forgets it once it settles (a failure is kept for commit). */
  private wait (indexed: Promise<void>): void {
    if (this.waiting.has(indexed)) return
    this.waiting.add(indexed)
    indexed.then(() => this.waiting.delete(indexed), (err: unknown) => {
      this.failure ??= err
      this.waiting.delete(indexed)
    })
  }

  private async settled (): Promise<void> {
    while (this.waiting.size > 0) await Promise.allSettled([...this.waiting])
  }

  private ensureWritable (o: ReadOptions): void {
    this.store.ensureOpen()
    if (this.finished) throw new ClosedError('writer is finished (committed or aborted)')
    throwIfAborted(o.signal)
  }
}

export async function openDiskStore (options: DiskStoreOptions): Promise<DiskStore> {
  const { dir, fsync = true, packSize = DEFAULT_PACK_SIZE } = options
  if (typeof dir !== 'string' || dir.length === 0) throw new InvalidConfigError('disk store needs a directory')
  if (!Number.isSafeInteger(packSize) || packSize < 1) throw new InvalidConfigError(`packSize must be a positive integer, got ${String(packSize)}`)
  const packDir = join(dir, 'packs')
  let db: Database.Database | undefined
  const packs = new Map<number, Pack>()
  let io: DirectIo | undefined
  try {
    await mkdir(packDir, { recursive: true })
    if (fsync) await syncDirectory(dir)
    io = DirectIo.open(packDir, IO_BLOCK, options.direct ?? true)
    db = new Database(join(dir, 'index.sqlite'), { timeout: 0 })
    // Exclusive before WAL: no shared-memory index, and a second process is refused at once.
    db.pragma('locking_mode = EXCLUSIVE')
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${fsync ? 'FULL' : 'NORMAL'}`)
    // The default 2 MiB page cache thrashes once the chunk index outgrows it (random 32-byte keys).
    db.pragma('cache_size = -65536')
    const version = db.pragma('user_version', { simple: true }) as number
    if (version > SCHEMA_VERSION) throw new StoreError(`${dir} was written by a newer Berth (index schema ${version})`)
    db.transaction(() => {
      // Schema 1 had neither seq nor loose: its unreferenced rows are all loose puts. Schema 2 had
      // no loose column: its loose puts are the unreferenced rows with seq 0.
      if (version === 1) db!.exec('ALTER TABLE chunks ADD COLUMN seq INTEGER NOT NULL DEFAULT 0')
      if (version === 1 || version === 2) {
        db!.exec('ALTER TABLE chunks ADD COLUMN loose INTEGER NOT NULL DEFAULT 0')
        db!.exec(`UPDATE chunks SET loose = 1 WHERE refs = 0${version === 2 ? ' AND seq = 0' : ''}`)
      }
      db!.exec(SCHEMA)
      db!.pragma(`user_version = ${SCHEMA_VERSION}`)
      // Rows writers made and no object took: their bytes may not have reached the disk (see top).
      const sql = prepare(db!)
      sql.dropWriterOrphans.run()
      sql.resetStamps.run()
    }).immediate()
    for (const name of await readdir(packDir)) {
      const match = PACK_NAME.exec(name)
      if (match === null) continue
      const id = Number(match[1])
      packs.set(id, await Pack.openExisting(packDir, id, fsync, io))
    }
    // Rows into a pack that is gone (deleted by hand, lost) lose their bytes, as if damaged.
    prepare(db).forgetMissingPacks.run(JSON.stringify([...packs.keys()]))
    return new DiskStore(db, packDir, packs, options.pool ?? sharedHashPool(), fsync, packSize, io)
  } catch (err) {
    db?.close()
    await Promise.all([...packs.values()].map(async pack => await pack.close()))
    io?.close()
    const failure = storeFailure(err, `opening store at ${dir}`)
    if ((err as { code?: string })?.code === 'SQLITE_BUSY') throw new StoreError(`store at ${dir} is in use by another process`, { cause: err })
    throw failure
  }
}
