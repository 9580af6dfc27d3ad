/**
 * One `get` of an object from remote sources: DOT's receiver side.
 *
 * Three activities overlap:
 *  - the manifest streams in from the first source that answers; chunks the local store already
 *    has are never fetched (whichever application stored them);
 *  - a scheduler keeps several chunk batches in flight, each to the best source still believed
 *    to hold those chunks; every chunk is verified against its cid on the hash workers before it
 *    is stored or passed on; a source that sends bad bytes is dropped and its chunks re-asked
 *    of the next source;
 *  - a cursor walks the manifest in order, feeding the whole-object hash, and (for ordered
 *    output) handing bytes to the reader. It only runs a window ahead of what was consumed, so
 *    memory is bounded whatever the object's size.
 * The object is committed to the store, and the output completes, only when the assembled bytes
 * hash to the OID. Any failure aborts the output with a coded error and stores no object.
 */
import { randomUUID } from 'node:crypto'
import { setMaxListeners } from 'node:events'
import type { Descriptor } from '../core/chunker/types.ts'
import { type Hint, orderHints } from '../core/hints.ts'
import { type SharedBlock, type SharedBlockPool, sharedBlocks } from '../core/blocks.ts'
import type { HashPool, StreamHasher } from '../core/hash-pool.ts'
import { AbortedError, BerthError, HashMismatchError, NoSourceError, SourceError, toBerthError } from '../core/errors.ts'
import { PackedManifest } from '../core/manifest.ts'
import { digestFromName } from '../core/naming.ts'
import type { ByteRange } from '../core/range.ts'
import type { BlockSlice, ChunkStore, ObjectWriter } from '../store/types.ts'
import { type AnyPlugin, type ChunkResult, isGroup, type ManifestStream, type PluginCallOptions, type PluginRegistry } from './plugin.ts'
import type { AgentMetrics } from './metrics.ts'

export interface TransferOptions {
  signal?: AbortSignal
  /** 'ordered': bytes in object order; 'any': verified chunks as they come, with offsets */
  order?: 'ordered' | 'any'
  range?: ByteRange
  /** bytes fetched ahead of the cursor; default 24 MiB */
  windowBytes?: number
  /** largest batch; default 4 MiB */
  batchBytes?: number
  /** batches in flight; default 4 */
  parallel?: number
  /** SAILOR's urgency, passed to plugins (a non-urgent get may wait for lockers); default true */
  urgent?: boolean
}

export interface TransferDeps {
  store: ChunkStore
  pool: HashPool
  plugins: PluginRegistry
  metrics: AgentMetrics
}

export interface OutputPiece {
  offset: number
  bytes: Uint8Array
  /** call when done with `bytes` (they may live in a pooled arena that is then reused) */
  release?: () => void
}

/**
 * A plugin with the hints it is asked with: one hint for a plain plugin, every hint it serves
 * for a multi-source one (multipath), which then chooses among them itself.
 */
interface Source {
  hints: Hint[]
  plugin: AnyPlugin
  /** for messages */
  uri: string
  failed: boolean
  error?: unknown
}

function manifestOf (s: Source, oid: string, o: PluginCallOptions): Promise<ManifestStream> {
  return isGroup(s.plugin) ? s.plugin.manifest(oid, s.hints, o) : s.plugin.manifest(oid, s.hints[0], o)
}

function chunksOf (s: Source, wanted: readonly Descriptor[], o: PluginCallOptions): AsyncIterable<ChunkResult> {
  return isGroup(s.plugin) ? s.plugin.chunks(wanted, s.hints, o) : s.plugin.chunks(wanted, s.hints[0], o)
}

interface Entry {
  cid: string
  length: number
  /** 'local': in the store before we started; 'ready': fetched, verified, stored */
  status: 'local' | 'wanted' | 'fetching' | 'ready'
  bytes?: Uint8Array
  /** descriptor positions not yet passed by the cursor: the bytes are kept until zero */
  uses: number
  /** sources that said they lack it or failed on it (made when first needed) */
  tried?: Set<Source>
  /** first descriptor that needs it: scheduling follows object order */
  firstOffset: number
  /** manifest positions where it occurs (a chunk may repeat, e.g. runs of zeros) */
  positions: number[]
  /** the pooled arena holding `bytes`, retained until the cursor has hashed them */
  block?: SharedBlock
}

/** A chunk as a plugin delivered it, before verification. */
interface Received { entry: Entry, bytes: Uint8Array, via?: string, reject?: (err: Error) => void }

/** Consecutive bytes of one buffer, hashed with one message; arenas released once the worker read them. */
interface HashRun { buffer: ArrayBufferLike, start: number, end: number, release: SharedBlock[] }

// 24 MiB: enough to keep 4 batches in flight with room to reorder (32 MiB was no faster over
// loopback, measured), small enough that an agent (~100 MB idle: V8, fastify, two hash-worker
// isolates) stays under 200 MB on any object size.
const DEFAULT_WINDOW = 24 * 1024 * 1024
const DEFAULT_BATCH = 4 * 1024 * 1024
const DEFAULT_PARALLEL = 4
const MAX_BATCH_CHUNKS = 1024
/**
 * Manifest descriptors read ahead of the cursor at most: 4096 chunks cover 256 MiB at the default
 * chunker's 64 KiB, far past the fetch window; each costs a descriptor and an entry on the heap.
 */
const MAX_AHEAD = 4096
/** One arena per batch, from the process's pools of shared blocks (see core/blocks.ts). */
const arenas = sharedBlocks(DEFAULT_BATCH)
const smallArenas = sharedBlocks(2 * 1024 * 1024)

/** Resolves waiters when the transfer's state changes. */
class Signal {
  private waiters: Array<() => void> = []
  wait (): Promise<void> { return new Promise(resolve => this.waiters.push(resolve)) }
  wake (): void { const w = this.waiters; this.waiters = []; for (const f of w) f() }
}

export class Transfer {
  readonly id = randomUUID()
  readonly oid: string
  size: number | undefined
  chunkCount = 0
  bytesFetched = 0
  bytesOut = 0
  readonly startedAt = Date.now()

  private readonly sources: Source[]
  /** the whole manifest as it came, packed (~36 B per chunk), for the commit */
  private readonly manifest = PackedManifest.empty()
  /** descriptors from `dropped` on (the cursor's and those ahead of it); older ones are let go */
  private ahead: Descriptor[] = []
  private dropped = 0
  private readonly entries = new Map<string, Entry>()
  private readonly queue: Entry[] = []
  private manifestDone = false
  private cursor = 0
  private cursorOffset = 0
  private inFlight = 0
  private failure: BerthError | undefined
  private readonly changed = new Signal()
  private readonly controller = new AbortController()
  /** what plugins learn during this get (see PluginCallOptions.session) */
  private readonly session = {}
  private readonly writer: ObjectWriter
  private readonly window: number
  private readonly batchBytes: number
  private readonly parallel: number
  private readonly arenas: SharedBlockPool
  /** bytes fetched but not yet consumed by the output (order=any) */
  private readonly anyQueue: OutputPiece[] = []
  private anyQueued = 0
  private readonly emitted = new Set<number>()
  private cleanup: (() => void) | undefined

  constructor (oid: string, hints: readonly Hint[], private readonly deps: TransferDeps, private readonly options: TransferOptions = {}) {
    this.oid = oid
    // Every batch in flight listens on the transfer's signal (12 at once for multipath).
    setMaxListeners(0, this.controller.signal)
    this.window = options.windowBytes ?? DEFAULT_WINDOW
    // Sources in hint order; a multi-source plugin is one source holding all its hints, placed
    // where its best hint falls.
    this.sources = []
    const groups = new Map<AnyPlugin, Source>()
    for (const hint of orderHints([...hints, ...deps.plugins.standingHints()])) {
      if (!deps.plugins.has(hint)) continue
      const plugin = deps.plugins.for(hint)
      if (!isGroup(plugin)) { this.sources.push({ hints: [hint], plugin, uri: hint.uri, failed: false }); continue }
      const group = groups.get(plugin)
      if (group !== undefined) { if (!group.hints.some(h => h.uri === hint.uri)) group.hints.push(hint); continue }
      const source: Source = { hints: [hint], plugin, uri: hint.uri, failed: false }
      groups.set(plugin, source)
      this.sources.push(source)
    }
    for (const g of groups.values()) if (g.hints.length > 1) g.uri = `${g.plugin.name}(${g.hints.map(h => h.uri).join(' ')})`
    // A multi-source plugin spreading over several paths asks for more, smaller batches.
    let batching: { batchBytes: number, parallel: number } | undefined
    for (const g of groups.values()) if (isGroup(g.plugin)) batching ??= g.plugin.batching?.(g.hints)
    this.batchBytes = options.batchBytes ?? batching?.batchBytes ?? DEFAULT_BATCH
    this.parallel = options.parallel ?? batching?.parallel ?? DEFAULT_PARALLEL
    // Arenas from the pool of the smallest block that holds a batch twice (room for borrowed copies).
    this.arenas = this.batchBytes * 2 <= smallArenas.blockSize ? smallArenas : arenas
    // A fetched object can be fetched again: stored without fsync (verified on every read).
    this.writer = deps.store.openWriter({ durable: false })
    if (options.signal !== undefined) {
      const onAbort = (): void => this.fail(new AbortedError('transfer aborted', { cause: options.signal?.reason }))
      if (options.signal.aborted) onAbort()
      else {
        options.signal.addEventListener('abort', onAbort, { once: true })
        this.cleanup = () => options.signal?.removeEventListener('abort', onAbort)
      }
    }
  }

  private fail (err: unknown): void {
    if (this.failure !== undefined) return
    this.failure = toBerthError(err)
    this.controller.abort(this.failure)
    this.changed.wake()
  }

  private check (): void {
    if (this.failure !== undefined) throw this.failure
  }

  /**
   * Stops a transfer whose output will never be read (e.g. the request failed after start):
   * aborts its fetches, forgets its chunks, gives its arenas back.
   */
  async cancel (reason: unknown = new AbortedError('transfer cancelled')): Promise<void> {
    this.fail(reason)
    for (const p of this.anyQueue.splice(0)) p.release?.()
    for (const e of this.entries.values()) { e.block?.release(); e.block = undefined; e.bytes = undefined }
    this.cleanup?.()
    await this.writer.abort().catch(() => {})
  }

  /** Limits the output to a byte range (before output starts). */
  clipTo (range: ByteRange): void {
    this.options.range = range
  }

  /** Fetches the manifest head from the first source that answers; size is known after this. */
  async start (): Promise<{ size: number }> {
    if (this.sources.length === 0) throw new NoSourceError(`no usable hint for ${this.oid}`)
    const errors: unknown[] = []
    for (const source of this.sources) {
      this.check()
      try {
        const m = await manifestOf(source, this.oid, { signal: this.controller.signal, urgent: this.options.urgent, session: this.session, oid: this.oid })
        this.size = m.size
        this.chunkCount = m.chunks
        void this.readManifest(m.descriptors, source)
        return { size: m.size }
      } catch (err) {
        if (this.failure !== undefined) throw this.failure
        source.failed = true
        source.error = err
        errors.push(err)
      }
    }
    const err = new NoSourceError(`no source could give the manifest of ${this.oid}`, errors)
    this.fail(err)
    throw err
  }

  private async readManifest (descriptors: AsyncIterable<Descriptor>, source: Source): Promise<void> {
    try {
      for await (const d of descriptors) {
        // Bounded read-ahead: per-chunk state is made only this far beyond the cursor.
        while (this.manifest.count - this.cursor >= MAX_AHEAD) { this.check(); await this.changed.wait() }
        // Plugins parse their wire format; the tiling of the object is checked here for all of them.
        if (d.offset !== this.manifest.size) throw new SourceError(`manifest descriptor at offset ${d.offset} where ${this.manifest.size} was due`)
        try {
          this.manifest.push(digestFromName(d.cid), d.length)
        } catch (err) {
          // The source's manifest is at fault, not the request.
          throw new SourceError(`manifest descriptor ${this.manifest.count}: ${toBerthError(err).message}`)
        }
        this.ahead.push(d)
        let e = this.entries.get(d.cid)
        if (e === undefined) {
          e = { cid: d.cid, length: d.length, status: 'wanted', uses: 0, firstOffset: d.offset, positions: [] }
          this.entries.set(d.cid, e)
          // Asked of the writer: a chunk found here is kept for this transfer until it commits.
          if (await this.writer.has(d.cid)) e.status = 'local'
          else this.queue.push(e)
        }
        // One cid, one length: a manifest that says otherwise is lying about its bytes.
        if (e.length !== d.length) throw new SourceError(`manifest gives chunk ${d.cid} two lengths (${e.length} and ${d.length})`)
        e.uses++
        e.positions.push(this.manifest.count - 1)
        this.schedule()
        this.changed.wake()
      }
      this.manifestDone = true
      this.changed.wake()
    } catch (err) {
      // A manifest that breaks off or is malformed condemns its source; the chunks it already
      // listed are still verified by their cids, but the object cannot be completed from it.
      source.failed = true
      source.error = err
      this.fail(err instanceof BerthError ? err : new SourceError(`manifest from ${source.uri} failed: ${toBerthError(err).message}`))
    }
  }

  /** The first source, in hint order, not known to lack this chunk. */
  private sourceFor (e: Entry): Source | undefined {
    for (const s of this.sources) if (!s.failed && e.tried?.has(s) !== true) return s
    return undefined
  }

  private schedule (): void {
    if (this.failure !== undefined) return
    while (this.inFlight < this.parallel && this.queue.length > 0) {
      const limit = this.cursorOffset + this.window
      if (this.queue[0].firstOffset >= limit || this.anyQueued > this.window) return
      const source = this.sourceFor(this.queue[0])
      if (source === undefined) {
        const e = this.queue[0]
        const errors = this.sources.map(s => s.error ?? new SourceError(`${s.uri} does not have chunk ${e.cid}`))
        this.fail(new NoSourceError(`no source could give chunk ${e.cid} of ${this.oid}`, errors))
        return
      }
      const batch: Entry[] = []
      const skipped: Entry[] = []
      let bytes = 0
      let scanned = 0
      for (; scanned < this.queue.length && batch.length < MAX_BATCH_CHUNKS; scanned++) {
        const e = this.queue[scanned]
        if (e.firstOffset >= limit || (batch.length > 0 && bytes + e.length > this.batchBytes)) break
        if (this.sourceFor(e) !== source) { skipped.push(e); continue }
        e.status = 'fetching'
        batch.push(e)
        bytes += e.length
      }
      // One splice per batch: removing entries one by one from the front of a long queue is quadratic.
      this.queue.splice(0, scanned, ...skipped)
      this.inFlight++
      void this.fetch(source, batch, bytes).finally(() => {
        this.inFlight--
        this.schedule()
        this.changed.wake()
      })
    }
  }

  private requeue (entries: Entry[]): void {
    for (const e of entries) e.status = 'wanted'
    this.queue.push(...entries)
    this.queue.sort((a, b) => a.firstOffset - b.firstOffset)
  }

  private async fetch (source: Source, batch: Entry[], bytes: number): Promise<void> {
    // One shared arena per batch: the plugin lands chunk bytes here, the workers hash them in
    // place, the store writes them with one call. Entries keep it until the cursor passes them.
    const arena = bytes <= this.arenas.blockSize ? this.arenas.acquire() : undefined
    let used = 0
    const alloc = (n: number): Uint8Array => {
      if (arena === undefined || used + n > arena.bytes.byteLength) return new Uint8Array(n)
      const v = arena.bytes.subarray(used, used + n)
      used += n
      return v
    }
    const received: Received[] = []
    const pending = new Set(batch)
    const { metrics } = this.deps
    try {
      const wanted = batch.map(e => ({ cid: e.cid, offset: e.firstOffset, length: e.length }))
      for await (const r of chunksOf(source, wanted, { signal: this.controller.signal, alloc, urgent: this.options.urgent, session: this.session, oid: this.oid })) {
        const entry = this.entries.get(r.descriptor.cid)
        if (entry === undefined || !pending.has(entry)) continue
        pending.delete(entry)
        if (r.bytes === undefined) { (entry.tried ??= new Set()).add(source); this.requeue([entry]); continue }
        if (r.bytes.byteLength !== entry.length) {
          metrics.chunksRejected.inc({ plugin: r.via ?? source.plugin.name })
          const err = new HashMismatchError(`${source.uri} sent ${r.bytes.byteLength} bytes for a ${entry.length}-byte chunk`)
          if (r.reject === undefined) throw err
          // A multi-source plugin drops only the path that sent it; the chunk is asked again.
          r.reject(err)
          this.requeue([entry])
          continue
        }
        received.push({ entry, bytes: r.bytes, via: r.via, reject: r.reject })
      }
      if (pending.size > 0) {
        for (const e of pending) (e.tried ??= new Set()).add(source)
        this.requeue([...pending])
        pending.clear()
      }
      await this.verifyAndStore(source, received, arena)
    } catch (err) {
      if (this.failure !== undefined) return
      // The source failed (network, protocol or integrity): drop it, re-ask its chunks elsewhere.
      source.failed = true
      source.error = err
      for (const r of received) if (r.entry.status === 'fetching') pending.add(r.entry)
      this.requeue([...pending])
    } finally {
      arena?.release()
    }
  }

  private async verifyAndStore (source: Source, received: Received[], arena: SharedBlock | undefined): Promise<void> {
    if (received.length === 0) return
    const { pool, metrics } = this.deps
    // In the arena and back to back (the usual case): hash in place, store with one write.
    const first = received[0].bytes
    let contiguous = first.buffer instanceof SharedArrayBuffer
    let end = first.byteOffset
    const ends: number[] = []
    for (const r of received) {
      if (r.bytes.buffer !== first.buffer || r.bytes.byteOffset !== end) { contiguous = false; break }
      end += r.bytes.byteLength
      ends.push(end - first.byteOffset)
    }
    const block = contiguous ? new Uint8Array(first.buffer, first.byteOffset, end - first.byteOffset) : undefined
    const digests = block !== undefined ? await pool.digestSlices(block, ends) : await pool.digestMany(received.map(r => r.bytes))
    const good: typeof received = []
    const bad: Received[] = []
    for (let i = 0; i < received.length; i++) {
      const expected = digestFromName(received[i].entry.cid)
      if (Buffer.compare(digests[i], expected) === 0) good.push(received[i])
      else bad.push(received[i])
    }
    for (const r of good) metrics.chunksVerified.inc({ plugin: r.via ?? source.plugin.name })
    try {
      if (block !== undefined && bad.length === 0) {
        const slices: BlockSlice[] = received.map(r => ({ cid: r.entry.cid, start: r.bytes.byteOffset - first.byteOffset, length: r.bytes.byteLength }))
        await this.writer.putBlock(block, slices, { signal: this.controller.signal })
      } else {
        for (const r of good) await this.writer.putChunk(r.entry.cid, r.bytes, { signal: this.controller.signal })
      }
    } catch (err) {
      // The store failed (disk full, closed): no other source would do better.
      this.fail(err)
      return
    }
    // A transfer that failed while this batch was hashed or written has already given back
    // every arena its entries held: taking new holds now would leak them.
    if (this.failure !== undefined) return
    for (const r of good) {
      r.entry.status = 'ready'
      r.entry.bytes = r.bytes
      if (arena !== undefined && r.bytes.buffer === arena.bytes.buffer) { arena.retain(); r.entry.block = arena }
      this.bytesFetched += r.bytes.byteLength
      metrics.bytesReceived.inc({ plugin: r.via ?? source.plugin.name }, r.bytes.byteLength)
      if (this.options.order === 'any') this.emitAny(r.entry)
    }
    this.changed.wake()
    if (bad.length > 0) {
      for (const r of bad) metrics.chunksRejected.inc({ plugin: r.via ?? source.plugin.name })
      const err = new HashMismatchError(`${source.uri} sent ${bad.length} chunk(s) whose bytes do not match their cid`)
      if (bad.every(r => r.reject !== undefined)) {
        // A multi-source plugin drops the paths that lied, not itself; the chunks are asked again.
        for (const r of bad) r.reject!(err)
        this.requeue(bad.map(r => r.entry))
        return
      }
      for (const r of bad) r.entry.status = 'fetching'
      throw err
    }
  }

  /** order=any: a verified chunk goes out at once, at every offset where it occurs (so far). */
  private emitAny (e: Entry): void {
    for (const i of e.positions) {
      if (i < this.cursor || this.emitted.has(i)) continue
      this.emitted.add(i)
      this.pushAny(this.descriptorAt(i).offset, e.bytes!, e.block)
    }
  }

  private pushAny (offset: number, bytes: Uint8Array, block: SharedBlock | undefined): void {
    if (this.failure !== undefined) return
    const piece = clip({ offset, bytes }, this.options.range)
    if (piece === undefined) return
    holdFor(piece, block)
    this.anyQueue.push(piece)
    this.anyQueued += piece.bytes.byteLength
    this.changed.wake()
  }

  /** Descriptor number `i` of the manifest; only those from the cursor on are kept. */
  private descriptorAt (i: number): Descriptor {
    return this.ahead[i - this.dropped]
  }

  /** Waits until the descriptor at the cursor has its bytes, and returns them. */
  private async nextInOrder (): Promise<{ d: Descriptor, bytes: Uint8Array } | undefined> {
    for (;;) {
      this.check()
      if (this.cursor < this.manifest.count) {
        const d = this.descriptorAt(this.cursor)
        const e = this.entries.get(d.cid)!
        let bytes: Uint8Array | undefined
        if (e.status === 'local') bytes = await this.deps.store.get(d.cid, { signal: this.controller.signal })
        else if (e.status === 'ready') bytes = e.bytes!
        if (bytes !== undefined) {
          // The output's length must be what the head promised, whatever the manifest claims.
          if (bytes.byteLength !== d.length) throw new HashMismatchError(`chunk ${d.cid} is ${bytes.byteLength} bytes where the manifest says ${d.length}`)
          return { d, bytes }
        }
      } else if (this.manifestDone) {
        return undefined
      }
      await this.changed.wait()
    }
  }

  private advance (d: Descriptor, run: HashRun | undefined): void {
    const e = this.entries.get(d.cid)!
    if (--e.uses === 0) {
      e.bytes = undefined
      if (e.block !== undefined) { run?.release.push(e.block); e.block = undefined }
      // State behind the cursor is dropped, so memory follows the window, not the object size.
      // (Should the manifest name this chunk again later, it is simply fetched again.)
      if (e.status === 'ready' || e.status === 'local') this.entries.delete(d.cid)
    }
    this.cursor++
    this.cursorOffset = d.offset + d.length
    // Descriptors behind the cursor go in steps: one splice per 4096 keeps it linear.
    if (this.cursor - this.dropped >= 4096) {
      this.ahead.splice(0, this.cursor - this.dropped)
      this.dropped = this.cursor
    }
    this.schedule()
    if (this.manifest.count - this.cursor === MAX_AHEAD - 1) this.changed.wake()
  }

  /** Walks the object in order: hashes it, and yields bytes for ordered output. */
  private async * walk (): AsyncGenerator<OutputPiece> {
    const hasher = this.deps.pool.stream()
    let done = false
    let held: OutputPiece | undefined
    let run: HashRun | undefined
    const flush = (): void => { if (run !== undefined) { hashRun(hasher, run); run = undefined } }
    try {
      for (;;) {
        // A run is hashed when it is full or breaks; not before each wait, which would cost a
        // worker message per chunk when the cursor keeps up with the network.
        const next = await this.nextInOrder()
        if (next === undefined) break
        const { bytes } = next
        if (run !== undefined && run.buffer === bytes.buffer && run.end === bytes.byteOffset && run.end - run.start < 8 * 1024 * 1024) {
          run.end += bytes.byteLength
        } else {
          flush()
          run = { buffer: bytes.buffer, start: bytes.byteOffset, end: bytes.byteOffset + bytes.byteLength, release: [] }
        }
        if (this.options.order === 'any') {
          // Chunks already stored come from here, not the scheduler: hold back while the reader lags.
          while (this.anyQueued > this.window) { this.check(); await this.changed.wait() }
          if (!this.emitted.has(this.cursor)) { this.emitted.add(this.cursor); this.pushAny(next.d.offset, bytes, this.entries.get(next.d.cid)!.block) }
          this.emitted.delete(this.cursor)
        } else {
          const piece = clip({ offset: next.d.offset, bytes }, this.options.range)
          if (piece !== undefined) {
            holdFor(piece, this.entries.get(next.d.cid)!.block)
            // Once yielded, a piece is the reader's to release: forget it before yielding, so an
            // early exit while suspended releases only what was never handed out.
            const out = held
            held = piece
            if (out !== undefined) yield out
          }
        }
        this.advance(next.d, run)
      }
      flush()
      done = true
      const digest = await hasher.digest()
      if (Buffer.compare(digest, digestFromName(this.oid)) !== 0) {
        throw new HashMismatchError(`the assembled object does not hash to ${this.oid}: the manifest was wrong`)
      }
      await this.writer.commit(this.oid, this.manifest)
      this.deps.metrics.objectsCompleted.inc()
      // The last piece goes out only now: a reader that has every byte may take the object as
      // verified (a Content-Length response is complete), so it must not see them earlier.
      if (held !== undefined) { const out = held; held = undefined; yield out }
    } finally {
      if (!done) { flush(); hasher.drop() }
      held?.release?.()
      // Arenas still held by entries the cursor never reached go back to the pool.
      for (const e of this.entries.values()) { e.block?.release(); e.block = undefined; e.bytes = undefined }
    }
  }

  /**
   * The object's bytes (or the range asked for). The iteration ends normally only when the whole
   * object verified against its OID and was stored; otherwise it throws a coded error.
   */
  async * output (): AsyncGenerator<OutputPiece> {
    this.deps.metrics.transfersInFlight.inc()
    let ok = false
    try {
      if (this.size === undefined) await this.start()
      if (this.options.order === 'any') {
        const walking = (async () => { for await (const _ of this.walk()); })()
        walking.catch(err => this.fail(err))
        let finished = false
        void walking.then(() => { finished = true; this.changed.wake() }, () => {})
        for (;;) {
          this.check()
          const piece = this.anyQueue.shift()
          if (piece !== undefined) {
            this.anyQueued -= piece.bytes.byteLength
            this.schedule()
            this.changed.wake()
            this.bytesOut += piece.bytes.byteLength
            yield piece
            continue
          }
          if (finished) break
          await this.changed.wait()
        }
        await walking
      } else {
        for await (const piece of this.walk()) {
          this.bytesOut += piece.bytes.byteLength
          yield piece
        }
      }
      ok = true
    } catch (err) {
      this.fail(err)
      throw this.failure
    } finally {
      if (!ok) {
        for (const p of this.anyQueue.splice(0)) p.release?.()
        this.fail(new AbortedError('output abandoned'))
        await this.writer.abort().catch(() => {})
      }
      this.cleanup?.()
      this.deps.metrics.transfersInFlight.dec()
    }
  }
}

/** The reader may keep arena bytes past the cursor: it holds a reference until it calls release. */
function holdFor (piece: OutputPiece, block: SharedBlock | undefined): void {
  if (block === undefined) return
  block.retain()
  let released = false
  piece.release = () => { if (!released) { released = true; block.release() } }
}

function hashRun (hasher: StreamHasher, run: HashRun): void {
  const release = (): void => { for (const b of run.release) b.release() }
  hasher.update(new Uint8Array(run.buffer, run.start, run.end - run.start)).then(release, release)
}

function clip (piece: OutputPiece, range: ByteRange | undefined): OutputPiece | undefined {
  if (range === undefined) return piece
  const start = Math.max(piece.offset, range.start)
  const end = Math.min(piece.offset + piece.bytes.byteLength, range.end + 1)
  if (start >= end) return undefined
  return { offset: start, bytes: piece.bytes.subarray(start - piece.offset, end - piece.offset) }
}
