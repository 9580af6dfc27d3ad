/**
 * A read cache of verified chunks in front of any ChunkStore — ZFS's ARC model: verify what comes
 * from the device, trust what is held verified in memory.
 *
 * A chunk read through the cache comes from the store below (which hashes it against its cid, as
 * it does for every read) once; a copy is then kept, and later reads of that cid — by any
 * reader — are served from memory without reading or hashing again. Memory is trusted like the
 * rest of the process's heap: a copy the cache holds was verified when it was read, and nothing
 * writes to it while it is held (corruption on disk is still found, on the next read that misses).
 *
 * - Readers coalesce: a chunk being read for one reader is not read again for another that asks
 *   meanwhile; it waits for the same read. Readers of the same object at about the same time
 *   cost one disk read and one hash per chunk between them. A read, once started, runs to its
 *   end whoever waits for it (it is at most a few MiB), so a reader that goes away or is slow
 *   (a bandwidth-capped client) never stalls another.
 * - Bounded by bytes (`bytes`, default DEFAULT_CACHE_BYTES), counted as the memory the chunks
 *   take (cache-memory.ts; spare buffers kept for reuse add up to an eighth). Which chunks stay is
 *   decided by cache-policy.ts: W-TinyLFU, told which chunks readers will come to — borrowMany
 *   announces its whole list of cids — see there why.
 * - Loans (borrowMany) are the cached bytes themselves, counted: a chunk evicted while lent keeps
 *   its memory until the last loan is released, so a loan stays valid until its `release`
 *   whatever happens to the cache meanwhile. Bytes lent after eviction, and chunks read for a
 *   reader but not kept, are outside the bound until released.
 * - Membership follows the store: the cache serves a chunk only while the store holds it. Writes
 *   pass through; a chunk is cached when it is read, not when it is written. `release` does not
 *   remove chunks (gc does), and after every gc the cached chunks the store no longer has are
 *   dropped, so `get` of a collected chunk fails with ERR_NOT_FOUND as it would without the cache
 *   (serving it would hand out correct bytes — they are named by their hash — but of a chunk the
 *   store says it has not got). Reads that were in flight during a gc are served but not kept.
 * - `has`, `usage`, objects and manifests are the store's own answers.
 */
import { AbortedError, ClosedError, InvalidConfigError, StoreError, throwIfAborted } from '../core/errors.ts'
import { ChunkMemory, type HeldChunk } from './cache-memory.ts'
import { CachePolicy } from './cache-policy.ts'
import { copiesOfBorrowed, parseName } from './common.ts'
import type {
  BorrowedChunk, ChunkStore, Descriptor, GcResult, ManifestInput, ObjectInfo, ObjectWriter, ReadOptions, StoreUsage, WriterOptions
} from './types.ts'

/**
 * Default capacity: 256 MiB. What the cache must hold is the spread between readers of the same
 * object (clients one behind the other: each chunk is read once while their spread fits) plus the
 * objects many clients want. Readers at about the same time need little of it (they join the
 * reads in flight; the locker bench's 4 clients spread over a few MiB); 256 MiB lets them drift
 * apart by ~170 ms of the 1.5 GB/s disk, or 2 s at a client's 1 Gb/s, before they cost extra
 * reads. A locker server's host has GiBs; the disk store's pooled read buffers may hold as much
 * again (64 spare 4 MiB blocks). Not the page cache's "all free memory": an agent embeds the same
 * store and stays within its RSS budget with a smaller cache or none.
 */
export const DEFAULT_CACHE_BYTES = 256 * 1024 * 1024

export interface CacheOptions {
  /** bytes of chunk data held at most; default DEFAULT_CACHE_BYTES. 0: nothing is kept, concurrent reads still coalesce */
  bytes?: number
}

export interface CacheStats {
  /** the configured bound, bytes */
  capacity: number
  /** bytes the chunks held now take (their buffers) */
  bytes: number
  /** chunks held now */
  chunks: number
  /** chunks served from memory */
  hits: number
  /** chunks served by a read another reader had started (coalesced) */
  joined: number
  /** chunks read from the store */
  misses: number
  /** bytes read from the store */
  readBytes: number
  /** chunks dropped to make room */
  evictions: number
  /** bytes of buffers waiting to be reused */
  spare: number
}

/**
 * Chunks read from the store together: one call below, so the store coalesces adjacent chunks
 * into one read and one hash message (the disk store's read batch is 4 MiB).
 */
const GROUP_BYTES = 4 * 1024 * 1024
const MAX_GROUP_CHUNKS = 1024
/** borrowMany keeps this many groups' worth of chunks looked up (and read) ahead of its consumer. */
const AHEAD_GROUPS = 3
/** What the group size assumes before any chunk was seen (the cdc chunker's average). */
const INITIAL_CHUNK_BYTES = 64 * 1024
/**
 * Buffers kept for reuse when no chunk holds them: an eighth of the capacity, and enough for the
 * reads in flight when the cache keeps nothing (a few readers' groups ahead).
 */
const SPARE_SHARE = 1 / 8
const MIN_SPARE_BYTES = 16 * 1024 * 1024

function ignore (): void {}

/**
 * A chunk being read from the store. Once read, `held` is set (before `done` resolves) with one
 * reference for each of the `waiters` then: every slot waiting for it takes one.
 */
interface Reading {
  done: Promise<void>
  held: HeldChunk | undefined
  waiters: number
  resolve: (held: HeldChunk) => void
  reject: (err: unknown) => void
}

/** The read that was to bring this chunk failed earlier, at another chunk: ask again. */
const RETRY = Symbol('retry')

interface ToRead { cid: string, key: string, digest: Uint8Array }

/**
 * A chunk a reader will have: `held` (a hit, one reference taken for this reader) or `reading`
 * (counted among its waiters), or `error` for a name that does not parse.
 */
interface Slot { cid: string, key: string, digest: Uint8Array, held?: HeldChunk, reading?: Reading, error?: unknown }

function newReading (): Reading {
  let resolve!: () => void
  let reject!: (err: unknown) => void
  const done = new Promise<void>((res, rej) => { resolve = res; reject = rej })
  // Nobody may be waiting when it fails (the readers that asked went away): not unhandled.
  done.catch(ignore)
  const reading: Reading = {
    done,
    held: undefined,
    waiters: 0,
    resolve: held => {
      for (let i = 0; i < reading.waiters; i++) held.retain()
      reading.held = held
      resolve()
    },
    reject
  }
  return reading
}

/** Errors that concern one chunk only: the chunks after it in the same read may be fine. */
function isChunkError (err: unknown): boolean {
  const code = (err as { code?: string })?.code
  return code === 'ERR_NOT_FOUND' || code === 'ERR_HASH_MISMATCH'
}

async function untilDone (reading: Reading, signal: AbortSignal | undefined): Promise<void> {
  if (signal === undefined) return await reading.done
  throwIfAborted(signal)
  let onAbort = ignore
  const aborted = new Promise<never>((resolve, reject) => {
    onAbort = () => reject(new AbortedError('operation aborted', { cause: signal.reason }))
    signal.addEventListener('abort', onAbort, { once: true })
  })
  try {
    await Promise.race([reading.done, aborted])
  } finally {
    signal.removeEventListener('abort', onAbort)
  }
}

/** The reference a slot holds (or will be given), let go of: the reader no longer wants the chunk. */
function abandon (slot: Slot): void {
  if (slot.held !== undefined) slot.held.release()
  else if (slot.reading?.held !== undefined) slot.reading.held.release()
  else if (slot.reading !== undefined) slot.reading.waiters--
  slot.held = slot.reading = undefined
}

export class CachedStore implements ChunkStore {
  private readonly policy: CachePolicy<HeldChunk>
  private readonly memory: ChunkMemory
  /** chunks borrowMany's readers will ask for and have not looked up yet, by key: how many times */
  private readonly wanted = new Map<string, number>()
  /** chunks being read from the store, by key: later askers wait for these */
  private readonly reading = new Map<string, Reading>()
  /** stops the reads in flight when the cache closes */
  private readonly closing = new AbortController()
  private closed = false
  /** changes when a gc starts and ends: a read that began in another epoch is served, not kept */
  private epoch = 0
  /** running average of the chunk sizes read, for sizing groups */
  private averageChunk = INITIAL_CHUNK_BYTES
  private hits = 0
  private joined = 0
  private misses = 0
  private readBytes = 0

  constructor (readonly inner: ChunkStore, options: CacheOptions = {}) {
    const bytes = options.bytes ?? DEFAULT_CACHE_BYTES
    if (!Number.isSafeInteger(bytes) || bytes < 0) throw new InvalidConfigError(`cache bytes must be a non-negative integer, got ${String(bytes)}`)
    this.memory = new ChunkMemory(Math.max(MIN_SPARE_BYTES, Math.floor(bytes * SPARE_SHARE)))
    this.policy = new CachePolicy<HeldChunk>(bytes, {
      // The cache's own reference goes when the policy lets a chunk go; loans may outlive it.
      dropped: held => held.release(),
      wanted: key => this.wanted.has(key)
    })
  }

  stats (): CacheStats {
    return {
      capacity: this.policy.capacity,
      bytes: this.policy.bytes,
      chunks: this.policy.size,
      hits: this.hits,
      joined: this.joined,
      misses: this.misses,
      readBytes: this.readBytes,
      evictions: this.policy.evictions,
      spare: this.memory.spared
    }
  }

  /** Whether a chunk's bytes are held in memory now (a read of it would not reach the store). */
  holds (cid: string): boolean {
    return this.policy.has(parseName(cid).key)
  }

  async has (cid: string): Promise<boolean> {
    return await this.inner.has(cid)
  }

  async get (cid: string, o: ReadOptions = {}): Promise<Uint8Array> {
    this.ensureOpen()
    throwIfAborted(o.signal)
    const slot: Slot = { cid, ...parseName(cid) }
    const misses: ToRead[] = []
    this.lookUp(slot, misses)
    if (misses.length > 0) this.read(misses)
    const held = await this.take(slot, o.signal)
    try {
      // The caller owns what get returns (and may write to it): never the cached bytes themselves.
      return new Uint8Array(held.bytes)
    } finally {
      held.release()
    }
  }

  getMany (cids: readonly string[], o: ReadOptions = {}): AsyncIterable<{ cid: string, bytes: Uint8Array }> {
    return copiesOfBorrowed(this.borrowMany(cids, o))
  }

  async * borrowMany (cids: readonly string[], o: ReadOptions = {}): AsyncIterable<BorrowedChunk> {
    this.ensureOpen()
    // The whole list is announced to the policy at once (see cache-policy.ts: chunks a reader
    // will ask for outrank the rest), until each is looked up; a bad name fails the iteration
    // where it stands, after the chunks before it.
    const names: Slot[] = []
    let bad: Slot | undefined
    for (const cid of cids) {
      try {
        names.push({ cid, ...parseName(cid) })
      } catch (err) {
        bad = { cid, key: '', digest: new Uint8Array(0), error: err }
        break
      }
    }
    for (const { key } of names) this.want(key)
    const ahead: Slot[] = []
    let next = 0
    // Looks chunks up a group's worth at a time, and starts reading the ones nobody holds or reads,
    // together. Every read is started before this returns: nobody may wait for one that is not.
    const plan = (): void => {
      const group = this.groupChunks()
      const misses: ToRead[] = []
      while (next < names.length && ahead.length < AHEAD_GROUPS * group) {
        const slot = names[next++]
        // From here the slot holds the chunk (or will be handed it): the cache need not keep it for this reader.
        this.unwant(slot.key)
        this.lookUp(slot, misses, true)
        ahead.push(slot)
        if (misses.length >= group) this.read(misses.splice(0))
      }
      if (misses.length > 0) this.read(misses)
      if (next === names.length && bad !== undefined) {
        ahead.push(bad)
        bad = undefined
      }
    }
    try {
      while (true) {
        throwIfAborted(o.signal)
        if (ahead.length <= (AHEAD_GROUPS - 1) * this.groupChunks()) plan()
        const slot = ahead.shift()
        if (slot === undefined) return
        const held = await this.take(slot, o.signal)
        let released = false
        const release = (): void => {
          if (released) return
          released = true
          held.release()
        }
        try {
          throwIfAborted(o.signal)
        } catch (err) {
          release()
          throw err
        }
        yield { cid: slot.cid, bytes: held.bytes, release }
      }
    } finally {
      // Stopped early (or failed): the chunks looked up ahead, and the rest, are not wanted any more.
      for (const slot of ahead) abandon(slot)
      for (; next < names.length; next++) this.unwant(names[next].key)
    }
  }

  async put (cid: string, bytes: Uint8Array, o?: ReadOptions): Promise<void> {
    await this.inner.put(cid, bytes, o)
  }

  openWriter (o?: WriterOptions): ObjectWriter {
    return this.inner.openWriter(o)
  }

  async putManifest (oid: string, manifest: ManifestInput): Promise<ObjectInfo> {
    return await this.inner.putManifest(oid, manifest)
  }

  async stat (oid: string): Promise<ObjectInfo | undefined> {
    return await this.inner.stat(oid)
  }

  manifest (oid: string, o?: ReadOptions): AsyncIterable<Descriptor> {
    return this.inner.manifest(oid, o)
  }

  objects (o?: ReadOptions): AsyncIterable<ObjectInfo> {
    return this.inner.objects(o)
  }

  async release (oid: string): Promise<boolean> {
    return await this.inner.release(oid)
  }

  async gc (o?: ReadOptions): Promise<GcResult> {
    this.ensureOpen()
    this.epoch++
    try {
      return await this.inner.gc(o)
    } finally {
      await this.dropCollected()
      this.epoch++
    }
  }

  async usage (): Promise<StoreUsage> {
    return await this.inner.usage()
  }

  async close (): Promise<void> {
    if (!this.closed) {
      this.closed = true
      this.closing.abort()
      this.policy.clear()
    }
    await this.inner.close()
  }

  /**
   * Fills in where a slot's bytes come from: memory (a hit), a read in flight (joined), or a new
   * read, which the caller starts with `read(misses)`; until then the slot is already the read's,
   * so a later ask (even in the same plan) joins it.
   */
  private lookUp (slot: Slot, misses: ToRead[], foreseen = false): void {
    const cached = this.policy.request(slot.key, slot.digest, foreseen)
    if (cached !== undefined) {
      this.hits++
      cached.retain()
      slot.held = cached
      return
    }
    let reading = this.reading.get(slot.key)
    if (reading !== undefined) {
      this.joined++
    } else {
      this.misses++
      reading = newReading()
      this.reading.set(slot.key, reading)
      misses.push(slot)
    }
    reading.waiters++
    slot.reading = reading
  }

  /**
   * A slot's chunk, with the slot's reference handed to the caller; asks again when the read
   * meant to bring it broke off before it. A reader that stops waiting lets its reference go.
   */
  private async take (slot: Slot, signal: AbortSignal | undefined): Promise<HeldChunk> {
    while (true) {
      if (slot.error !== undefined) throw slot.error
      const held = slot.held ?? slot.reading!.held
      if (held !== undefined) {
        slot.held = slot.reading = undefined
        return held
      }
      try {
        await untilDone(slot.reading!, signal)
      } catch (err) {
        if (err !== RETRY) {
          abandon(slot)
          throw err
        }
        this.ensureOpen()
        const misses: ToRead[] = []
        slot.reading = undefined
        this.lookUp(slot, misses)
        if (misses.length > 0) this.read(misses)
      }
    }
  }

  /**
   * Reads chunks from the store (which verifies them) with one call, keeps what the policy admits,
   * and hands each to whoever waits for it. Runs to the end on its own: its waiters may be many
   * readers, and none of them paces it. A chunk that fails fails its waiters; the ones after it
   * were not read, and their waiters ask again.
   */
  private read (chunks: ToRead[]): void {
    const epoch = this.epoch
    const readings = chunks.map(({ key }) => this.reading.get(key)!)
    void (async () => {
      let i = 0
      try {
        for await (const chunk of this.inner.borrowMany(chunks.map(({ cid }) => cid), { signal: this.closing.signal })) {
          let held: HeldChunk
          try {
            held = this.memory.copy(chunk.bytes)
          } finally {
            chunk.release()
          }
          const { key, digest } = chunks[i]
          const reading = readings[i++]
          this.readBytes += held.bytes.byteLength
          this.averageChunk += (held.bytes.byteLength - this.averageChunk) / 16
          this.settle(key, reading)
          // The waiters' references first: a chunk the policy takes and drops at once (not
          // admitted to main) must not reach zero before they have theirs.
          reading.resolve(held)
          if (epoch === this.epoch && !this.closed) {
            held.retain()
            if (!this.policy.add(key, digest, held, held.size)) held.release()
          } else {
            held.discardIfUnused()
          }
          if (i === chunks.length) break
        }
        if (i < chunks.length) throw new StoreError(`the store yielded ${i} of ${chunks.length} chunks asked for`)
      } catch (err) {
        const failure = this.closed ? new ClosedError('store is closed') : err
        if (i < chunks.length) {
          this.settle(chunks[i].key, readings[i])
          readings[i].reject(failure)
          i++
        }
        const rest = isChunkError(err) && !this.closed ? RETRY : failure
        for (; i < chunks.length; i++) {
          this.settle(chunks[i].key, readings[i])
          readings[i].reject(rest)
        }
      }
    })()
  }

  private want (key: string): void {
    this.wanted.set(key, (this.wanted.get(key) ?? 0) + 1)
  }

  private unwant (key: string): void {
    const count = this.wanted.get(key)
    if (count === undefined) return
    if (count <= 1) this.wanted.delete(key)
    else this.wanted.set(key, count - 1)
  }

  /** The chunk is no longer being read by this reading (a later read may have replaced it). */
  private settle (key: string, reading: Reading): void {
    if (this.reading.get(key) === reading) this.reading.delete(key)
  }

  /** Chunks per read: about GROUP_BYTES of them, by the sizes seen so far. */
  private groupChunks (): number {
    return Math.max(1, Math.min(MAX_GROUP_CHUNKS, Math.round(GROUP_BYTES / Math.max(1, this.averageChunk))))
  }

  /** After a gc: forgets the cached chunks the store no longer has. */
  private async dropCollected (): Promise<void> {
    for (const key of this.policy.keys()) {
      let present = false
      try {
        present = await this.inner.has(key)
      } catch {}
      if (!present) this.policy.delete(key)
    }
  }

  private ensureOpen (): void {
    if (this.closed) throw new ClosedError('store is closed')
  }
}

/** A ChunkStore that serves verified chunks from memory once they have been read (see the top of this file). */
export function cachedStore (store: ChunkStore, options: CacheOptions = {}): CachedStore {
  return new CachedStore(store, options)
}
