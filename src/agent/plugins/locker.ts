/**
 * Lockers (SAILOR's data lockers, `locker://host:port/<locker>` hints): where this agent's puts
 * go, and a source for gets.
 *
 * Put side: every object put on the agent is uploaded to the owner's locker (`mine`) in the
 * background, a couple at a time, streamed from the store; the locker is first asked whether it
 * holds the bytes already (for anyone), and a proof of possession answered from the store links
 * them with no bytes sent. The locker's hint is returned at once, ahead of the agent's own: a
 * locker serves an object while it is still arriving.
 *
 * Get side, for the hint of a peer's locker La — SAILOR's priority-req:
 *  1. my locker Lb (when I have one and it is not La) is asked to `distribute` the object from La,
 *     and the chunks are read from Lb by byte range as they arrive there;
 *  2. else, or when that fails, they are read from La directly;
 *  3. when both fail, an urgent get (the default) fails at once with a SourceError, so the core
 *     falls back to the next hint (the peer agent itself);
 *  4. a non-urgent one is held: it waits `holdMs` (the next schedule time) and starts over at 1,
 *     until its signal aborts.
 * A locker fails when it refuses the connection or does not answer within `timeoutMs`, answers
 * 429/503 (out of resources), 401/403 (the token) or 404 (no such object). Failures are
 * remembered a while (`downMs`; a Retry-After, up to `holdMs`), so the next batch of the same get
 * does not wait on a dead locker again; a held get asks again regardless.
 *
 * The manifest comes from a locker's `GET …/objects/{oid}/manifest` (the NDJSON of the agents'
 * peer API): La's while Lb is still bringing the object (Lb can describe it only once it is
 * complete), Lb's once it is. Chunks are fetched like an HTTP mirror's (plugins/ranges.ts); the
 * agent core verifies each against its cid and the whole against the OID, as for any source.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { Agent as Dispatcher } from 'undici'
import type { Descriptor } from '../../core/chunker/types.ts'
import type { Hint } from '../../core/hints.ts'
import { AbortedError, type BerthError, SourceError, toBerthError } from '../../core/errors.ts'
import { answerChallenge } from '../../core/proof.ts'
import type { ByteRange } from '../../core/range.ts'
import { parsePlace } from '../../locker/sources.ts'
import { LockerClient, type TransferStatus } from '../../sdk/locker-client.ts'
import type { ChunkStore } from '../../store/types.ts'
import { type AddedObject, type ChunkResult, manifestFromBody, type ManifestStream, type PluginCallOptions, type TransferPlugin } from '../plugin.ts'
import { readStoredObject } from '../read.ts'
import { cutRun, rangeRuns, runSpan } from './ranges.ts'

export interface LockerCredential {
  /** locker://host:port/<locker> */
  uri: string
  /** the access token */
  token: string
  /** the resource token bound to it */
  resource?: string
}

export interface LockerPluginOptions {
  /**
   * The agent owner's locker: puts are uploaded to it, gets relay through it. Its token needs
   * read, write and distribute. `ttl`: seconds the locker keeps what this plugin puts there.
   */
  mine?: LockerCredential & { ttl?: number }
  /** tokens for other users' lockers (read) */
  credentials?: LockerCredential[]
  /** a locker that does not answer within this is down; default 10 s */
  timeoutMs?: number
  /** non-urgent gets with every locker down or busy wait this long before asking again; default 5 s */
  holdMs?: number
  /** a locker that failed is passed over this long by later requests; default 5 s */
  downMs?: number
  /** uploads to `mine` at once; default 2 */
  uploads?: number
  /** connections per locker server; default 8 */
  connections?: number
}

export interface LockerPluginStats {
  uploads: { queued: number, running: number, done: number, linked: number, failed: number, lastError?: { oid: string, code: string, message: string } }
  /** chunk bytes read from my locker (relayed) and from peers' lockers directly */
  bytes: { relayed: number, direct: number }
  /** distributes asked of my locker */
  relays: number
  /** times a non-urgent get was held */
  holds: number
}

/** A locker and the tokens for it. */
interface Locker { key: string, uri: string, origin: string, name: string, token: string, resource?: string }

/** One way to a peer's locker La: through my locker (SAILOR's distribute), or straight. */
type Path = { kind: 'relay', via: Locker, from: Locker } | { kind: 'direct', at: Locker }

interface Job { oid: string, size: number, store: ChunkStore }

/** How often a relay's progress is asked of my locker while a read waits on it. */
const POLL_MS = 100
/** the least wait after a Retry-After, however small it says */
const RETRY_FLOOR_MS = 100
/** Gets of one object through one locker are remembered this long after their last request. */
const SESSION_MS = 60_000

/** The object's bytes from the store, each piece copied out of the store's buffers (an upload may keep them a while). */
async function * storedBytes (store: ChunkStore, oid: string, o: { range?: ByteRange, signal: AbortSignal }): AsyncGenerator<Uint8Array> {
  for await (const p of readStoredObject(store, oid, o)) {
    const copy = Buffer.from(p.bytes)
    p.release?.()
    yield copy
  }
}

/** Seconds to come back after, from a 429/503 answer. */
function retryAfterOf (err: unknown): number | undefined {
  const r = (err as { retryAfter?: unknown }).retryAfter
  return typeof r === 'number' ? r : undefined
}

function statusOf (err: unknown): number | undefined {
  const s = (err as { status?: unknown }).status
  return typeof s === 'number' ? s : undefined
}

/**
 * A distribute my locker runs for a get (La → Lb), and its progress as last polled; reads of
 * Lb's copy wait until the bytes they ask for have come.
 */
class Relay {
  private lastProgress = Date.now()
  private polling: Promise<void> | undefined
  /** when it was seen to fail (0: it has not) */
  failedAt = 0

  constructor (
    private status: TransferStatus,
    readonly path: Extract<Path, { kind: 'relay' }>,
    private readonly poll: (id: string) => Promise<TransferStatus>,
    private readonly timeoutMs: number
  ) {}

  /** my locker holds the whole object */
  get done (): boolean { return this.status.state === 'done' }

  /**
   * The transfer once bytes up to `through` (inclusive) have come to my locker (or, with
   * `through` undefined, once it holds the whole object). Throws when the distribute failed or
   * stopped moving for timeoutMs.
   */
  async until (through: number | undefined, signal: AbortSignal): Promise<TransferStatus> {
    for (;;) {
      const t = this.status
      if (t.state === 'failed') {
        this.failedAt ||= Date.now()
        throw new SourceError(`${t.locker} could not bring ${t.oid} from ${this.path.from.uri}: ${t.error?.message ?? 'failed'}`)
      }
      if (t.state === 'done') return t
      // Joined another arrival of the object: its bytes stream to readers as they come.
      if (through !== undefined && t.size !== null && (t.how === 'joined' || (t.how === 'fetch' && t.bytesIn > through))) return t
      if (Date.now() - this.lastProgress > this.timeoutMs) {
        this.status = { ...t, state: 'failed', error: { code: 'ERR_SOURCE', message: `no progress for ${this.timeoutMs} ms` } }
        continue
      }
      this.polling ??= this.refresh().finally(() => { this.polling = undefined })
      await abortable(this.polling, signal)
    }
  }

  private async refresh (): Promise<void> {
    await sleep(POLL_MS)
    const t = await this.poll(this.status.id)
    const s = this.status
    if (t.state !== s.state || t.how !== s.how || t.bytesIn !== s.bytesIn || t.size !== s.size) this.lastProgress = Date.now()
    this.status = t
  }
}

/** Waits for `p`, or throws when `signal` aborts first. */
async function abortable<T> (p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) throw new AbortedError('aborted', { cause: signal.reason })
  let onAbort: (() => void) | undefined
  try {
    return await Promise.race([p, new Promise<never>((_resolve, reject) => {
      onAbort = () => reject(new AbortedError('aborted', { cause: signal.reason }))
      signal.addEventListener('abort', onAbort, { once: true })
    })])
  } finally {
    if (onAbort !== undefined) signal.removeEventListener('abort', onAbort)
  }
}

export class LockerPlugin implements TransferPlugin {
  readonly name = 'locker'
  readonly schemes = ['locker:'] as const
  private readonly mine: (Locker & { ttl?: number }) | undefined
  private readonly credentials = new Map<string, Locker>()
  private readonly timeoutMs: number
  private readonly holdMs: number
  private readonly downMs: number
  /** get side: every request answers within timeoutMs or fails */
  private readonly dispatcher: Dispatcher
  /** uploads: the locker answers once the whole object is in, and may pace it */
  private readonly uploadDispatcher: Dispatcher
  private readonly clients = new Map<string, LockerClient>()
  /** lockers (and locker + object, for 404s) that failed lately: passed over until `until` */
  private readonly down = new Map<string, { until: number, error: BerthError }>()
  /** relays by object and peer locker */
  private readonly sessions = new Map<string, { relay: Promise<Relay> | undefined, used: number }>()
  private readonly closing = new AbortController()
  private readonly queue: Job[] = []
  private readonly running = new Set<Promise<void>>()
  private readonly pending = new Set<string>()
  private idleWaiters: Array<() => void> = []
  private readonly counts: LockerPluginStats = { uploads: { queued: 0, running: 0, done: 0, linked: 0, failed: 0 }, bytes: { relayed: 0, direct: 0 }, relays: 0, holds: 0 }

  constructor (private readonly options: LockerPluginOptions = {}) {
    this.timeoutMs = options.timeoutMs ?? 10_000
    this.holdMs = options.holdMs ?? 5_000
    this.downMs = options.downMs ?? 5_000
    const connections = options.connections ?? 8
    this.dispatcher = new Dispatcher({ connections, connect: { timeout: this.timeoutMs }, headersTimeout: this.timeoutMs, bodyTimeout: this.timeoutMs })
    const slow = Math.max(this.timeoutMs, 60_000)
    this.uploadDispatcher = new Dispatcher({ connections, connect: { timeout: this.timeoutMs }, headersTimeout: slow, bodyTimeout: slow })
    if (options.mine !== undefined) this.mine = { ...this.locker(options.mine), ttl: options.mine.ttl }
    for (const c of options.credentials ?? []) {
      const l = this.locker(c)
      this.credentials.set(l.key, l)
    }
  }

  private locker (c: LockerCredential): Locker {
    const p = parsePlace(c.uri)
    if (p.kind !== 'locker') throw new SourceError(`${c.uri} is not a locker:// URI`)
    return { key: `${p.origin}/${p.locker}`, uri: c.uri, origin: p.origin, name: p.locker, token: c.token, resource: c.resource }
  }

  private client (l: Locker): LockerClient {
    let c = this.clients.get(l.origin)
    if (c === undefined) {
      c = new LockerClient(l.origin, { dispatcher: this.dispatcher })
      this.clients.set(l.origin, c)
    }
    return c
  }

  get stats (): LockerPluginStats {
    const u = this.counts.uploads
    return { ...this.counts, uploads: { ...u, queued: this.queue.length, running: this.running.size }, bytes: { ...this.counts.bytes } }
  }

  // ---- put side ----

  objectAdded (object: AddedObject, store: ChunkStore): Hint[] {
    if (this.mine === undefined) return []
    if (!this.pending.has(object.oid) && !this.closing.signal.aborted) {
      this.pending.add(object.oid)
      this.queue.push({ oid: object.oid, size: object.size, store })
      this.pump()
    }
    return [{ uri: this.mine.uri, priority: 0, weight: 1 }]
  }

  /** Resolves once every upload queued so far has ended (done or failed). */
  async settled (): Promise<void> {
    if (this.queue.length === 0 && this.running.size === 0) return
    await new Promise<void>(resolve => this.idleWaiters.push(resolve))
  }

  private pump (): void {
    while (this.running.size < (this.options.uploads ?? 2) && this.queue.length > 0) {
      const job = this.queue.shift()!
      const p: Promise<void> = this.upload(job)
        .catch((err: unknown) => {
          // Stopped by close: not a failure of the locker's.
          if (this.closing.signal.aborted) return
          const e = toBerthError(err)
          this.counts.uploads.failed++
          this.counts.uploads.lastError = { oid: job.oid, code: e.code, message: e.message }
        })
        .finally(() => {
          this.running.delete(p)
          this.pending.delete(job.oid)
          if (!this.closing.signal.aborted) this.pump()
          if (this.queue.length === 0 && this.running.size === 0) {
            const w = this.idleWaiters
            this.idleWaiters = []
            for (const f of w) f()
          }
        })
      this.running.add(p)
    }
  }

  private async upload (job: Job): Promise<void> {
    const mine = this.mine!
    const signal = this.closing.signal
    const client = new LockerClient(mine.origin, { dispatcher: this.uploadDispatcher })
    const stored = await client.put(mine.name, job.oid, storedBytes(job.store, job.oid, { signal }), {
      token: mine.token,
      resource: mine.resource,
      ttl: mine.ttl,
      size: job.size,
      signal,
      // The locker holds these bytes already (for anyone): answered from our copy, no bytes move.
      prove: async c => await answerChallenge(c, (start, end) => storedBytes(job.store, job.oid, { range: { start, end }, signal }))
    })
    this.counts.uploads.done++
    if (stored.linked === true) this.counts.uploads.linked++
  }

  // ---- get side ----

  /** The peer's locker a hint names, with the token for it. */
  private peerLocker (hint: Hint): Locker {
    let l: Locker
    try { l = this.locker({ uri: hint.uri, token: '' }) } catch (err) { throw new SourceError(`bad locker hint ${hint.uri}: ${toBerthError(err).message}`) }
    const known = this.credentials.get(l.key) ?? (this.mine?.key === l.key ? this.mine : undefined)
    if (known === undefined) throw new SourceError(`no token for ${hint.uri}`)
    return known
  }

  private paths (la: Locker): Path[] {
    const paths: Path[] = []
    if (this.mine !== undefined && this.mine.key !== la.key) paths.push({ kind: 'relay', via: this.mine, from: la })
    paths.push({ kind: 'direct', at: la })
    return paths
  }

  /** Why a path is passed over now (a locker that failed lately), if it is. */
  private downReason (path: Path, oid: string): BerthError | undefined {
    const now = Date.now()
    const keys = path.kind === 'relay' ? [path.via.key, `${path.via.key} ${oid}`] : [path.at.key, `${path.at.key} ${oid}`]
    for (const k of keys) {
      const d = this.down.get(k)
      if (d === undefined) continue
      if (d.until > now) return d.error
      this.down.delete(k)
    }
    return undefined
  }

  /** A request to locker `l` failed: it is passed over for a while (for this object only, on a 404). */
  private failed (l: Locker, oid: string, err: unknown, signal: AbortSignal): BerthError {
    if (signal.aborted) return new AbortedError('aborted', { cause: signal.reason })
    const e = toBerthError(err)
    const status = statusOf(err)
    const retryAfter = retryAfterOf(err)
    // A `Retry-After: 0` must not become a tight loop: at least RETRY_FLOOR_MS.
    const ms = retryAfter !== undefined ? Math.max(RETRY_FLOOR_MS, Math.min(retryAfter * 1000, this.holdMs)) : this.downMs
    const error = new SourceError(`locker ${l.uri}: ${e.message}`, { cause: err })
    const now = Date.now()
    if (this.down.size > 1000) for (const [k, d] of this.down) if (d.until <= now) this.down.delete(k)
    this.down.set(status === 404 ? `${l.key} ${oid}` : l.key, { until: now + ms, error })
    return Object.assign(error, { retryAfter })
  }

  /** Runs a request to locker `l`; a failure is remembered against it. */
  private async ask<T> (l: Locker, oid: string, signal: AbortSignal, fn: (c: LockerClient) => Promise<T>): Promise<T> {
    try { return await fn(this.client(l)) } catch (err) { throw this.failed(l, oid, err, signal) }
  }

  /**
   * Every path failed: an urgent get says so at once (the core goes on to the next hint), a
   * non-urgent one waits for the next schedule time — holdMs, or sooner when every locker said
   * when to come back.
   */
  private async hold (la: Locker, oid: string, errors: unknown[], o: PluginCallOptions): Promise<void> {
    const why = errors.map(e => toBerthError(e).message).join('; ')
    if (o.urgent !== false) throw new SourceError(`no locker could give ${oid} (${la.uri}): ${why}`)
    this.counts.holds++
    const wait = Math.max(RETRY_FLOOR_MS, Math.min(this.holdMs, ...errors.map(e => retryAfterOf(e) !== undefined ? retryAfterOf(e)! * 1000 : this.holdMs)))
    try { await sleep(wait, undefined, { signal: o.signal }) } catch (err) { throw new AbortedError('aborted while held', { cause: err }) }
  }

  async manifest (oid: string, hint: Hint, o: PluginCallOptions): Promise<ManifestStream> {
    if (o.urgent === false) return await this.manifestHeld(oid, hint, o)
    // An urgent get does not wait on a locker still receiving the object (its manifest answer
    // idles until then): after timeoutMs the next hint is tried. Cleared once the head is in,
    // so the descriptors that follow are not cut off.
    const deadline = new AbortController()
    const timer = setTimeout(() => deadline.abort(new SourceError(`${hint.uri}: no manifest within ${this.timeoutMs} ms`)), this.timeoutMs)
    try {
      return await this.manifestHeld(oid, hint, { ...o, signal: AbortSignal.any([o.signal, deadline.signal]) })
    } catch (err) {
      // Our deadline, not the caller's abort: a source failure the core moves on from.
      if (deadline.signal.aborted && !o.signal.aborted) throw deadline.signal.reason
      throw err
    } finally {
      clearTimeout(timer)
    }
  }

  private async manifestHeld (oid: string, hint: Hint, o: PluginCallOptions): Promise<ManifestStream> {
    const la = this.peerLocker(hint)
    for (let fresh = false; ; fresh = true) {
      const errors: unknown[] = []
      for (const path of this.paths(la)) {
        const down = fresh ? undefined : this.downReason(path, oid)
        if (down !== undefined) { errors.push(down); continue }
        try {
          const m = await this.manifestVia(path, oid, o, fresh)
          return m
        } catch (err) {
          if (o.signal.aborted) throw err
          errors.push(err)
        }
      }
      await this.hold(la, oid, errors, o)
    }
  }

  private async manifestFrom (l: Locker, oid: string, signal: AbortSignal): Promise<ManifestStream> {
    return await this.ask(l, oid, signal, async c => await manifestFromBody(await c.manifest(l.name, oid, { token: l.token, resource: l.resource, signal }), oid))
  }

  private async manifestVia (path: Path, oid: string, o: PluginCallOptions, fresh: boolean): Promise<ManifestStream> {
    if (path.kind === 'direct') return await this.manifestFrom(path.at, oid, o.signal)
    const relay = await this.relay(path, oid, o.signal, fresh)
    // My locker describes the object once it has it all; until then the source does, if we
    // reach it (the manifest is small; the bytes are what the relay is for).
    if (relay.failedAt === 0 && !relay.done && this.downReason({ kind: 'direct', at: path.from }, oid) === undefined) {
      try { return await this.manifestFrom(path.from, oid, o.signal) } catch (err) { if (o.signal.aborted) throw err }
    }
    await relay.until(undefined, o.signal)
    return await this.manifestFrom(path.via, oid, o.signal)
  }

  /**
   * The distribute La → Lb serving this object's gets: one per object and peer locker, made on
   * first need. One that failed lately is not asked again (it fails the call at once), but is on
   * a held get's new round.
   */
  private async relay (path: Extract<Path, { kind: 'relay' }>, oid: string, signal: AbortSignal, fresh: boolean): Promise<Relay> {
    const now = Date.now()
    for (const [k, x] of this.sessions) if (now - x.used > SESSION_MS) this.sessions.delete(k)
    const key = `${oid} ${path.from.key}`
    const s = this.sessions.get(key) ?? { relay: undefined, used: now }
    this.sessions.set(key, s)
    s.used = now
    if (s.relay !== undefined) {
      // A distribute my locker refused fails the call too (its memory of my locker says for how
      // long); one that failed since is asked again once forgotten, or on a held get's new round.
      const r = await abortable(s.relay, signal).catch((err: unknown) => { if (signal.aborted || !fresh) throw err })
      if (r !== undefined && (r.failedAt === 0 || (!fresh && now - r.failedAt < this.downMs))) return r
    }
    const { via, from } = path
    const auth = { token: via.token, resource: via.resource, signal: this.closing.signal }
    const made = this.ask(via, oid, this.closing.signal, async c => {
      this.counts.relays++
      const t = await c.distribute(via.name, { oid, src: { uri: from.uri, token: from.token, resource: from.resource }, ttl: this.mine?.ttl }, auth)
      return new Relay(t, path, async id => await this.ask(via, oid, this.closing.signal, async c2 => await c2.transfer(via.name, id, auth)), this.timeoutMs)
    })
    s.relay = made
    made.catch(() => { if (s.relay === made) s.relay = undefined })
    return await abortable(made, signal)
  }

  async * chunks (wanted: readonly Descriptor[], hint: Hint, o: PluginCallOptions): AsyncIterable<ChunkResult> {
    const la = this.peerLocker(hint)
    const oid = this.oidOf(hint, o)
    const alloc = o.alloc ?? ((n: number) => new Uint8Array(n))
    for (const run of rangeRuns(wanted)) {
      // Chunks come in order: after a failure, the rest of the run is asked of the next path.
      let done = 0
      for (let fresh = false; done < run.length; fresh = true) {
        const errors: unknown[] = []
        for (const path of this.paths(la)) {
          const down = fresh ? undefined : this.downReason(path, oid)
          if (down !== undefined) { errors.push(down); continue }
          try {
            for await (const r of this.readRun(path, oid, run.slice(done), alloc, o, fresh)) { done++; yield r }
            break
          } catch (err) {
            if (o.signal.aborted) throw err
            errors.push(err)
          }
        }
        if (done < run.length) await this.hold(la, oid, errors, o)
      }
    }
  }

  /** The object a chunks call is for: a locker serves objects by range, not loose chunks by cid. */
  private oidOf (hint: Hint, o: PluginCallOptions): string {
    if (o.oid === undefined) throw new SourceError(`${hint.uri}: a locker serves chunks of a named object (the core passes its oid)`)
    return o.oid
  }

  private async * readRun (path: Path, oid: string, run: Descriptor[], alloc: (n: number) => Uint8Array, o: PluginCallOptions, fresh: boolean): AsyncGenerator<ChunkResult> {
    const { start, end } = runSpan(run)
    let from: Locker
    let past = 0
    if (path.kind === 'relay') {
      const relay = await this.relay(path, oid, o.signal, fresh)
      // One byte past the run, while my locker is still bringing the object: it holds back the
      // last bytes of an answer until the object is whole, and that byte is what it holds back.
      const t = await relay.until(end + 1, o.signal)
      if (t.state !== 'done' && t.size !== null && end + 1 < t.size) past = 1
      from = path.via
    } else {
      from = path.at
    }
    const who = `locker ${from.uri}`
    const got = await this.ask(from, oid, o.signal, async c => await c.get(from.name, oid, { token: from.token, resource: from.resource, range: { start, end: end + past }, signal: o.signal }))
    if (got.range?.start !== start || got.range.end !== end + past) {
      got.stream.destroy()
      throw this.failed(from, oid, new SourceError(`${who} did not answer the range ${start}-${end + past}`), o.signal)
    }
    try {
      for await (const r of cutRun(got.stream, run, alloc, who, past)) {
        if (path.kind === 'relay') this.counts.bytes.relayed += r.descriptor.length
        else this.counts.bytes.direct += r.descriptor.length
        yield r
      }
    } catch (err) {
      throw this.failed(from, oid, err, o.signal)
    }
  }

  async close (): Promise<void> {
    this.closing.abort()
    this.queue.length = 0
    await Promise.allSettled([...this.running])
    this.sessions.clear()
    await Promise.allSettled([this.dispatcher.destroy(), this.uploadDispatcher.destroy()])
  }
}
