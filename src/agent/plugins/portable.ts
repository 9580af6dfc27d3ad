/**
 * Portable storage (DOT §5.2, `file:///path` hints): a directory on a disk that travels — a USB
 * stick, a removable drive, a directory another tool copies about — as a source of objects, and
 * optionally as a destination the agent copies every new object to.
 *
 * Layout on the disk (no index: every file is found by its name):
 *
 *     <dir>/<oid>.manifest        the object's manifest, exactly the NDJSON an agent's peer API
 *                                 serves at GET /v1/objects/{oid}/manifest (core/wire.ts): a head
 *                                 line {"oid","size","chunks"}, then one {"cid","offset","length"}
 *                                 line per chunk, in offset order
 *     <dir>/chunks/<xy>/<cid>     one file per distinct chunk, holding exactly its bytes, named by
 *                                 its cid; <xy> = the cid's two characters before the last one
 *                                 (IPFS flatfs's "next-to-last/2"): 1024 directories, so no one
 *                                 directory grows huge (FAT32, still common on USB sticks, holds
 *                                 only about 10,000 long names in a directory)
 *     .<name>.<random>.tmp        a file being written, in the directory of its final name; it is
 *                                 renamed into place once complete, so a reader never sees a
 *                                 partial chunk or manifest (readers look for exact names only)
 *
 * Chunks are shared by every object on the disk (a chunk already there is not written again).
 * A manifest is written last: its presence says every chunk of the object is on the disk.
 *
 * Sender (`export: true`): `objectAdded` queues a copy of each new object from the store to the
 * disk; copies run one object at a time, a batch of chunks at a time (never a whole object in
 * memory), in the background; `close` aborts them, `idle` waits for them.
 *
 * Receiver: `manifest` reads `<dir>/<oid>.manifest` (it never waits: absent → SourceError);
 * `chunks` reads each wanted chunk whose file is there (a file of the wrong length counts as
 * missing; the core verifies the bytes against the cid). With `patient` (the multipath plugin
 * asks opportunistic sources so), chunks not there yet are waited for until the signal aborts:
 * the directories are watched (fs.watch; the nearest existing parent while the directory does not
 * exist yet — a disk not yet mounted, a directory about to be renamed into place) and polled every
 * `pollMs` as well, since fs.watch can fail or miss events and a mount raises none.
 * A configured `dir` is also a standing hint: searched for every get, even without a file:// hint.
 */
import { randomBytes } from 'node:crypto'
import { type FSWatcher, watch as fsWatch } from 'node:fs'
import { type FileHandle, mkdir, open, readdir, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import type { Descriptor } from '../../core/chunker/types.ts'
import type { Hint } from '../../core/hints.ts'
import { AbortedError, type BerthError, InvalidConfigError, InvalidHintError, NotFoundError, SourceError, StoreError, throwIfAborted, toBerthError } from '../../core/errors.ts'
import { parseCid, parseOid } from '../../core/naming.ts'
import { encodeDescriptor, encodeManifestHead } from '../../core/wire.ts'
import type { ChunkStore } from '../../store/types.ts'
import { type AddedObject, type ChunkResult, manifestFromBody, type ManifestStream, type PluginCallOptions, type TransferPlugin } from '../plugin.ts'

export interface PortablePluginOptions {
  /**
   * A portable directory (a disk's mount point or a directory on it). With `export`, new objects
   * are copied here; on the receiving side it is searched for every get, even without a
   * file:// hint (a standing hint).
   */
  dir?: string
  /** copy every object put on this agent to `dir`; default false */
  export?: boolean
  /** patient reads: re-check interval, the fallback when watching fails or misses; default 1000 ms */
  pollMs?: number
  /** patient reads: watch the directories (fs.watch) besides polling; default true */
  watch?: boolean
  /** flush each exported file to the disk before it is renamed into place; default true */
  fsync?: boolean
  /** told of an export that failed (the object is not on the disk); default: a process warning */
  onExportError?: (err: BerthError, oid: string) => void
}

/** The hint that points at a portable directory. */
export function portableHint (dir: string, priority = 0, weight = 1): Hint {
  return { uri: pathToFileURL(resolve(dir)).href, priority, weight }
}

export const CHUNKS_DIR = 'chunks'

/** The shard directory of a chunk: the cid's next-to-last two characters (1024 of them). */
export function shardOf (cid: string): string {
  return cid.slice(-3, -1)
}

/** Where a chunk's file lies in a portable directory. */
export function chunkPath (dir: string, cid: string): string {
  return join(dir, CHUNKS_DIR, shardOf(cid), cid)
}

/** Where an object's manifest lies in a portable directory. */
export function manifestPath (dir: string, oid: string): string {
  return join(dir, `${oid}.manifest`)
}

function tempName (name: string): string {
  return `.${name}.${randomBytes(6).toString('hex')}.tmp`
}

function dirOf (hint: Hint): string {
  try {
    return fileURLToPath(new URL(hint.uri))
  } catch (err) {
    throw new InvalidHintError(`${hint.uri} is not a local directory`, { cause: err })
  }
}

/** A chunk's descriptor and its file name (the canonical cid: never a path of someone's choosing). */
interface Wanted { d: Descriptor, name: string }

/** Chunk files opened ahead of the one being read, and reads outstanding at once. */
const OPEN_AHEAD = 16
const READS_IN_FLIGHT = 4
/** A full re-check opens this many files directly; more, and it lists the shard directories. */
const DIRECT_LOOKUPS = 64
/** Export: chunks copied per batch (at most this many bytes borrowed from the store at once). */
const EXPORT_BATCH_CHUNKS = 256
const EXPORT_BATCH_BYTES = 4 * 1024 * 1024
const WRITES_IN_FLIGHT = 4

/** An open chunk file whose length is the descriptor's, or undefined (absent, wrong length, unreadable). */
async function openChunk (dir: string, w: Wanted): Promise<FileHandle | undefined> {
  let fh: FileHandle
  try {
    fh = await open(chunkPath(dir, w.name), 'r')
  } catch {
    return undefined
  }
  try {
    const s = await fh.stat()
    if (s.isFile() && s.size === w.d.length) return fh
  } catch {}
  await fh.close().catch(() => {})
  return undefined
}

async function readFully (fh: FileHandle, bytes: Uint8Array): Promise<boolean> {
  let filled = 0
  while (filled < bytes.byteLength) {
    const { bytesRead } = await fh.read(bytes, filled, bytes.byteLength - filled, filled)
    if (bytesRead === 0) return false
    filled += bytesRead
  }
  return true
}

/**
 * Reads the chunks of `list` that are on the disk, in list order (memory is taken from `alloc` in
 * that order too, so chunks land back to back in the core's arena); the others come back with
 * `bytes: undefined`. Files are opened a little ahead and a few reads overlap.
 */
async function * readChunks (dir: string, list: readonly Wanted[], alloc: (n: number) => Uint8Array, signal: AbortSignal): AsyncGenerator<ChunkResult & { name: string }> {
  const opening: Array<Promise<FileHandle | undefined>> = []
  const reading: Array<Promise<ChunkResult & { name: string }>> = []
  let nextOpen = 0
  let next = 0
  try {
    while (next < list.length) {
      while (nextOpen < list.length && nextOpen - next < OPEN_AHEAD) opening.push(openChunk(dir, list[nextOpen++]))
      throwIfAborted(signal)
      const fh = await opening.shift()!
      const { d, name } = list[next++]
      if (fh === undefined) {
        reading.push(Promise.resolve({ descriptor: d, bytes: undefined, name }))
      } else {
        const bytes = alloc(d.length)
        // A file cut short since it was measured (being replaced) counts as missing.
        reading.push(readFully(fh, bytes).then(ok => ({ descriptor: d, bytes: ok ? bytes : undefined, name }), () => ({ descriptor: d, bytes: undefined, name }))
          .finally(async () => await fh.close().catch(() => {})))
      }
      while (reading.length >= READS_IN_FLIGHT) yield await reading.shift()!
    }
    while (reading.length > 0) yield await reading.shift()!
  } finally {
    // Stopped early (abort, or the consumer left): files still being opened or read are closed.
    for (const p of opening) void p.then(async fh => await fh?.close().catch(() => {}))
    await Promise.allSettled(reading)
  }
}

/** Of the chunks in `missing`, those whose file names are on the disk now (lengths checked when read). */
async function present (dir: string, missing: ReadonlyMap<string, Wanted>): Promise<Wanted[]> {
  if (missing.size <= DIRECT_LOOKUPS) return [...missing.values()]
  const chunks = join(dir, CHUNKS_DIR)
  let shards: Set<string>
  try {
    shards = new Set(await readdir(chunks))
  } catch {
    return []
  }
  const byShard = new Map<string, Wanted[]>()
  for (const w of missing.values()) {
    const shard = shardOf(w.name)
    if (!shards.has(shard)) continue
    let list = byShard.get(shard)
    if (list === undefined) byShard.set(shard, list = [])
    list.push(w)
  }
  const found: Wanted[] = []
  const queue = [...byShard]
  await Promise.all(Array.from({ length: Math.min(16, queue.length) }, async () => {
    for (let item = queue.pop(); item !== undefined; item = queue.pop()) {
      const [shard, list] = item
      let names: Set<string>
      try { names = new Set(await readdir(join(chunks, shard))) } catch { continue }
      for (const w of list) if (names.has(w.name)) found.push(w)
    }
  }))
  return found.sort((a, b) => a.d.offset - b.d.offset)
}

/** What woke a patient read: chunk names seen appearing, or a reason to re-check everything. */
class Wake {
  readonly names = new Set<string>()
  full = false
  private resolve: (() => void) | undefined

  notify (name?: string): void {
    if (name === undefined) this.full = true
    else this.names.add(name)
    this.resolve?.()
  }

  /** Until something was noticed, `ms` pass (then a full re-check is due) or the signal aborts. */
  async wait (ms: number, signal: AbortSignal): Promise<void> {
    if (this.full || this.names.size > 0 || signal.aborted) return
    await new Promise<void>(resolve => {
      const done = (): void => {
        clearTimeout(timer)
        signal.removeEventListener('abort', done)
        this.resolve = undefined
        resolve()
      }
      const timer = setTimeout(() => { this.full = true; done() }, Math.max(0, ms))
      signal.addEventListener('abort', done, { once: true })
      this.resolve = done
    })
  }
}

interface WatchSpec {
  /** 'shard': a chunk directory, events name chunk files; 'above': anything here may mean more is there */
  kind: 'shard' | 'above'
  /** 'above': only events about this entry matter (the next directory on the way down) */
  child?: string
}

/**
 * The watchers of one patient read: each shard directory holding wanted chunks, or — where such a
 * directory does not exist yet — the nearest existing directory above it.
 */
class ChunkWatch {
  private readonly watchers = new Map<string, { watcher: FSWatcher, spec: WatchSpec }>()
  /** device and inode of `<dir>/chunks` when the shard watchers were set: another one means start over */
  private chunksId: string | undefined
  private closed = false

  constructor (private readonly dir: string, private readonly wake: Wake) {}

  get size (): number { return this.watchers.size }

  /**
   * Watches what matters for these missing chunks now; called before each full re-check. A
   * directory made while the watchers were being set up is seen by looking again once they are.
   */
  async update (missing: ReadonlyMap<string, Wanted>): Promise<void> {
    for (let round = 0; round < 8 && !this.closed; round++) {
      const want = await this.wanted(missing)
      const same = want.size === this.watchers.size && [...want].every(([path, spec]) => {
        const w = this.watchers.get(path)
        return w !== undefined && w.spec.kind === spec.kind && w.spec.child === spec.child
      })
      if (same) return
      for (const [path, w] of this.watchers) {
        const spec = want.get(path)
        if (spec === undefined || spec.kind !== w.spec.kind || spec.child !== w.spec.child) this.drop(path)
      }
      for (const [path, spec] of want) if (!this.watchers.has(path)) this.open(path, spec)
    }
  }

  private async wanted (missing: ReadonlyMap<string, Wanted>): Promise<Map<string, WatchSpec>> {
    const want = new Map<string, WatchSpec>()
    const chunks = join(this.dir, CHUNKS_DIR)
    const st = await stat(chunks).catch(() => undefined)
    if (st?.isDirectory() === true) {
      // The same path may now be another directory (a disk swapped, a directory renamed over it).
      const id = `${st.dev}:${st.ino}`
      if (id !== this.chunksId) { this.closeAll(); this.chunksId = id }
      const shards = new Set(await readdir(chunks).catch(() => [] as string[]))
      let above = false
      for (const w of missing.values()) {
        const shard = shardOf(w.name)
        if (shards.has(shard)) want.set(join(chunks, shard), { kind: 'shard' })
        else above = true
      }
      if (above) want.set(chunks, { kind: 'above' })
    } else {
      this.chunksId = undefined
      let child = CHUNKS_DIR
      let at = this.dir
      for (;;) {
        const s = await stat(at).catch(() => undefined)
        if (s?.isDirectory() === true) { want.set(at, { kind: 'above', child }); break }
        const up = dirname(at)
        if (up === at) break
        child = basename(at)
        at = up
      }
    }
    return want
  }

  private open (path: string, spec: WatchSpec): void {
    let watcher: FSWatcher
    try {
      watcher = fsWatch(path, (_event, filename) => this.event(spec, filename ?? undefined))
    } catch {
      return // out of watches, or gone already: the poll covers it
    }
    watcher.on('error', () => {
      if (this.watchers.get(path)?.watcher === watcher) this.drop(path)
      else watcher.close()
      this.wake.notify()
    })
    this.watchers.set(path, { watcher, spec })
  }

  private event (spec: WatchSpec, filename: string | undefined): void {
    if (this.closed) return
    if (spec.kind === 'shard') this.wake.notify(filename)
    else if (filename === undefined || spec.child === undefined || filename === spec.child) this.wake.notify()
  }

  private drop (path: string): void {
    this.watchers.get(path)?.watcher.close()
    this.watchers.delete(path)
  }

  private closeAll (): void {
    for (const path of [...this.watchers.keys()]) this.drop(path)
  }

  close (): void {
    this.closed = true
    this.closeAll()
  }
}

async function fsyncPath (path: string): Promise<void> {
  // Directories too (their entries): not every file system allows it, which is no reason to fail.
  let fh: FileHandle | undefined
  try {
    fh = await open(path, 'r')
    await fh.sync()
  } catch {} finally {
    await fh?.close().catch(() => {})
  }
}

async function mkdirOnce (path: string): Promise<void> {
  // Not recursive: the portable directory itself must exist (a disk not mounted is not created on
  // the root file system by mistake).
  try {
    await mkdir(path)
  } catch (err) {
    if ((err as { code?: string }).code !== 'EEXIST') throw err
  }
}

async function lengthOf (path: string): Promise<number | undefined> {
  try {
    const s = await stat(path)
    return s.isFile() ? s.size : undefined
  } catch {
    return undefined
  }
}

export class PortablePlugin implements TransferPlugin {
  readonly name = 'portable'
  readonly schemes = ['file:'] as const
  readonly opportunistic = true
  readonly standingHints: readonly Hint[]
  private readonly dir: string | undefined
  private readonly exporting: boolean
  private readonly pollMs: number
  private readonly closing = new AbortController()
  /** the export queue: one object at a time */
  private queue: Promise<void> = Promise.resolve()
  private watchCount = 0

  constructor (private readonly options: PortablePluginOptions = {}) {
    this.dir = options.dir !== undefined ? resolve(options.dir) : undefined
    this.exporting = options.export === true
    if (this.exporting && this.dir === undefined) throw new InvalidConfigError('the portable plugin needs a directory (dir) to export to')
    this.pollMs = options.pollMs ?? 1000
    if (!(this.pollMs > 0)) throw new InvalidConfigError('pollMs must be a positive number of milliseconds')
    this.standingHints = this.dir !== undefined ? [portableHint(this.dir)] : []
  }

  /** Directories watched now by patient reads (for tests and status). */
  get watching (): number { return this.watchCount }

  // ---- sender ----

  objectAdded (object: AddedObject, store: ChunkStore): Hint[] {
    if (!this.exporting || this.closing.signal.aborted) return []
    const signal = this.closing.signal
    this.queue = this.queue.then(async () => {
      if (signal.aborted) return
      try {
        await this.exportObject(object, store, signal)
      } catch (err) {
        if (signal.aborted) return
        const e = toBerthError(err)
        if (this.options.onExportError !== undefined) this.options.onExportError(e, object.oid)
        else process.emitWarning(`portable: copying ${object.oid} to ${this.dir!} failed: ${e.message}`, { code: 'BERTH_PORTABLE_EXPORT' })
      }
    }).catch(() => {}) // a throwing onExportError must not stop later copies (or crash the agent)
    // The disk's path on a receiver is not known here: no hint.
    return []
  }

  /** Resolves once every object added so far was copied (or its copy failed or was stopped). */
  async idle (): Promise<void> {
    await this.queue
  }

  private async exportObject (object: AddedObject, store: ChunkStore, signal: AbortSignal): Promise<void> {
    const dir = this.dir!
    const oid = parseOid(object.oid)
    const final = manifestPath(dir, oid)
    if (await lengthOf(final) !== undefined) return // already on the disk
    const st = await stat(dir).catch(() => undefined)
    if (st?.isDirectory() !== true) throw new NotFoundError(`the portable directory ${dir} is not there (disk not mounted?)`)
    await mkdirOnce(join(dir, CHUNKS_DIR))
    const fsync = this.options.fsync !== false
    const shards = new Set<string>()
    const temp = join(dir, tempName(`${oid}.manifest`))
    const fh = await open(temp, 'wx')
    let renamed = false
    try {
      let text = encodeManifestHead({ oid, size: object.size, chunks: object.chunks })
      let position = 0
      const flush = async (): Promise<void> => {
        const bytes = Buffer.from(text)
        for (let at = 0; at < bytes.length;) {
          throwIfAborted(signal)
          const { bytesWritten } = await fh.write(bytes, at, bytes.length - at, position)
          at += bytesWritten
          position += bytesWritten
        }
        text = ''
      }
      let batch: Descriptor[] = []
      let batchBytes = 0
      let count = 0
      let size = 0
      for await (const d of store.manifest(oid, { signal })) {
        count++
        size += d.length
        text += encodeDescriptor(d)
        if (text.length >= 64 * 1024) await flush()
        batch.push(d)
        batchBytes += d.length
        if (batch.length >= EXPORT_BATCH_CHUNKS || batchBytes >= EXPORT_BATCH_BYTES) {
          await this.copyChunks(dir, batch, store, shards, signal)
          batch = []
          batchBytes = 0
        }
      }
      if (batch.length > 0) await this.copyChunks(dir, batch, store, shards, signal)
      if (count !== object.chunks || size !== object.size) throw new StoreError(`the store's manifest of ${oid} has ${count} chunks and ${size} bytes, not ${object.chunks} and ${object.size}`)
      await flush()
      if (fsync) {
        // The chunks' directory entries are durable before the manifest that vouches for them.
        for (const shard of shards) await fsyncPath(join(dir, CHUNKS_DIR, shard))
        await fh.sync()
      }
      await fh.close()
      throwIfAborted(signal)
      await rename(temp, final)
      renamed = true
      if (fsync) await fsyncPath(dir)
    } finally {
      if (!renamed) {
        await fh.close().catch(() => {})
        await rm(temp, { force: true }).catch(() => {})
      }
    }
  }

  /** Copies the chunks of a batch the disk lacks, each through a temporary file. */
  private async copyChunks (dir: string, batch: readonly Descriptor[], store: ChunkStore, shards: Set<string>, signal: AbortSignal): Promise<void> {
    throwIfAborted(signal)
    const distinct = new Map<string, Descriptor>()
    for (const d of batch) if (!distinct.has(d.cid)) distinct.set(d.cid, d)
    const lengths = await Promise.all([...distinct.values()].map(async d => await lengthOf(chunkPath(dir, d.cid))))
    const needed = [...distinct.values()].filter((d, i) => lengths[i] !== d.length)
    if (needed.length === 0) return
    const newShards = [...new Set(needed.map(d => shardOf(d.cid)))].filter(shard => !shards.has(shard))
    await Promise.all(newShards.map(async shard => await mkdirOnce(join(dir, CHUNKS_DIR, shard))))
    for (const shard of newShards) shards.add(shard)
    const fsync = this.options.fsync !== false
    const writing = new Set<Promise<void>>()
    try {
      for await (const chunk of store.borrowMany(needed.map(d => d.cid), { signal })) {
        const write = writeChunk(dir, chunk.cid, chunk.bytes, fsync, signal).finally(() => { chunk.release(); writing.delete(write) })
        write.catch(() => {}) // awaited below; this only keeps a failure between awaits from counting as unhandled
        writing.add(write)
        if (writing.size >= WRITES_IN_FLIGHT) await Promise.race(writing)
      }
      await Promise.all(writing)
    } finally {
      // No write may still use borrowed bytes once this returns.
      await Promise.allSettled(writing)
    }
  }

  // ---- receiver ----

  async manifest (oid: string, hint: Hint, o: PluginCallOptions): Promise<ManifestStream> {
    throwIfAborted(o.signal)
    const dir = dirOf(hint)
    const path = manifestPath(dir, parseOid(oid))
    // Never patient: the core asks its sources for the manifest one after the other.
    let fh: FileHandle
    try {
      fh = await open(path, 'r')
    } catch (err) {
      throw new SourceError(`no manifest of ${oid} in ${dir}`, { cause: err })
    }
    const stream = fh.createReadStream()
    const onAbort = (): void => { stream.destroy() }
    o.signal.addEventListener('abort', onAbort, { once: true })
    const cleanup = (): void => {
      o.signal.removeEventListener('abort', onAbort)
      stream.destroy()
    }
    let m: ManifestStream
    try {
      m = await manifestFromBody(stream, oid)
    } catch (err) {
      cleanup()
      throw err
    }
    const inner = m.descriptors
    return {
      size: m.size,
      chunks: m.chunks,
      descriptors: (async function * () {
        try { yield * inner } finally { cleanup() }
      })()
    }
  }

  async * chunks (wanted: readonly Descriptor[], hint: Hint, o: PluginCallOptions): AsyncIterable<ChunkResult> {
    const dir = dirOf(hint)
    const alloc = o.alloc ?? ((n: number) => new Uint8Array(n))
    // Each chunk once (at its first place), under its canonical name.
    const list = new Map<string, Wanted>()
    for (const d of wanted) {
      const name = parseCid(d.cid)
      if (!list.has(name)) list.set(name, { d, name })
    }
    if (o.patient !== true) {
      for await (const { descriptor, bytes } of readChunks(dir, [...list.values()], alloc, o.signal)) yield { descriptor, bytes }
      return
    }
    yield * this.patiently(dir, list, alloc, o.signal)
  }

  /** Yields chunks as they turn up on the disk, until all did or the signal aborts (then quietly). */
  private async * patiently (dir: string, missing: Map<string, Wanted>, alloc: (n: number) => Uint8Array, outer: AbortSignal): AsyncGenerator<ChunkResult> {
    const signal = AbortSignal.any([outer, this.closing.signal])
    const wake = new Wake()
    const watch = this.options.watch !== false ? new ChunkWatch(dir, wake) : undefined
    let watched = 0
    const counted = (): void => { const n = watch?.size ?? 0; this.watchCount += n - watched; watched = n }
    try {
      // What is there already comes first, before any watcher is set up (the usual case: all of it).
      for await (const { descriptor, bytes, name } of readChunks(dir, await present(dir, missing), alloc, signal)) {
        if (bytes === undefined) continue
        missing.delete(name)
        yield { descriptor, bytes }
      }
      let lastFull = Date.now()
      // Watching starts with a full look (watchers first: a chunk that turns up meanwhile is seen by one or the other).
      let full = watch !== undefined
      while (missing.size > 0 && !signal.aborted) {
        if (!full) {
          await wake.wait(lastFull + this.pollMs - Date.now(), signal)
          if (signal.aborted) break
          full = wake.full
        }
        let candidates: Wanted[]
        if (full) {
          full = false
          wake.full = false
          wake.names.clear()
          lastFull = Date.now()
          await watch?.update(missing)
          counted()
          candidates = await present(dir, missing)
        } else {
          // Only the chunks seen appearing are looked at.
          candidates = []
          for (const name of wake.names) { const w = missing.get(name); if (w !== undefined) candidates.push(w) }
          wake.names.clear()
        }
        for await (const { descriptor, bytes, name } of readChunks(dir, candidates, alloc, signal)) {
          if (bytes === undefined) continue
          missing.delete(name)
          yield { descriptor, bytes }
        }
      }
    } catch (err) {
      if (!signal.aborted) throw err
    } finally {
      watch?.close()
      counted()
    }
  }

  async close (): Promise<void> {
    // Stops the copies and every patient read still waiting.
    this.closing.abort(new AbortedError('portable plugin closed'))
    await this.queue
  }
}

async function writeChunk (dir: string, cid: string, bytes: Uint8Array, fsync: boolean, signal: AbortSignal): Promise<void> {
  const final = chunkPath(dir, cid)
  const temp = join(dirname(final), tempName(cid))
  const fh = await open(temp, 'wx')
  let closed = false
  try {
    await fh.writeFile(bytes, { signal })
    if (fsync) await fh.sync()
    closed = true
    await fh.close()
    await rename(temp, final)
  } catch (err) {
    if (!closed) await fh.close().catch(() => {})
    await rm(temp, { force: true }).catch(() => {})
    throw err
  }
}
