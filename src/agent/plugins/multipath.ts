/**
 * Multipath (DOT §5.1): a load balancer over sub-plugins. A **path** is one sub-plugin towards
 * one hint — the same agent reached over two links (two hints, or two peer plugins bound to two
 * local addresses), two HTTP mirrors, a locker and an agent. For each get the core hands this
 * plugin every hint it serves at once, and it:
 *  - keeps about `perPath` chunk requests outstanding on each path of the best hint priority that
 *    is alive (a path alone at its level gets whole batches: nothing to balance), so a slow path
 *    pulls less work than a fast one;
 *  - **borrows**: a path whose queue runs dry takes the newest requests from the longest queue
 *    and asks for them too; the first copy to arrive wins and the other is cancelled (its request
 *    aborted once nothing in it is still wanted) — the tail of a transfer is not left to a slow
 *    or dead link;
 *  - falls back by priority: a chunk every path of one level lacks, or a level whose paths all
 *    failed, moves to the next level (SAILOR's lockers before the end host);
 *  - asks opportunistic sub-plugins (portable storage) for each whole batch at once, patiently,
 *    and cancels on the network what they bring first.
 * A path that fails or sends bad bytes (the core calls `reject`) is dropped for the get and
 * rested for a while for other gets. Integrity stays with the core: this only moves bytes.
 */
import type { Descriptor } from '../../core/chunker/types.ts'
import { type Hint, orderHints } from '../../core/hints.ts'
import { AbortedError, NoSourceError, SourceError, toBerthError } from '../../core/errors.ts'
import type { AddedObject, ChunkResult, ManifestStream, PluginCallOptions, SourceGroupPlugin, TransferPlugin } from '../plugin.ts'
import type { ChunkStore } from '../../store/types.ts'

export interface MultipathSub {
  plugin: TransferPlugin
  /** serve only hints whose URI starts with this (e.g. one peer plugin per local address) */
  match?: string
}

export interface MultipathOptions {
  paths: MultipathSub[]
  /** chunk requests kept outstanding per path; default 10 (DOT's figure) */
  perPath?: number
  /** request borrowing; default true */
  borrow?: boolean
}

/** A failed path rests this long (doubling per consecutive failure, up to 30 s) for other gets. */
const REST_MS = 1000
const MAX_REST_MS = 30_000
/** A path alone at its level gets requests of up to this many chunks (the core's batch bound). */
const SOLO_REQUEST = 1024
/**
 * With several paths at one level the core is asked for more, smaller batches: a batch completes
 * only when its slowest chunk has come, and with four 4 MiB batches the fast paths would run dry
 * waiting on a slow one (and borrow mid-transfer, fetching chunks twice). One path alone keeps
 * the core's large batches (measured: 1 MiB batches cost a loopback get ~45%).
 */
const SPREAD_BATCHING = { batchBytes: 1024 * 1024, parallel: 12 }

/** Errors that say this object or these credentials, not the path, are the problem. */
const OBJECT_FAULTS = new Set(['ERR_NOT_FOUND', 'ERR_TOKEN_MISSING', 'ERR_TOKEN_INVALID', 'ERR_TOKEN_EXPIRED', 'ERR_TOKEN_REVOKED', 'ERR_TOKEN_SCOPE'])

function objectFault (err: unknown): boolean {
  for (let e = err, depth = 0; e !== undefined && e !== null && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const { code, status } = e as { code?: unknown, status?: unknown }
    if (typeof code === 'string' && OBJECT_FAULTS.has(code)) return true
    if (typeof status === 'number' && (status === 401 || status === 403 || status === 404)) return true
  }
  return false
}

/** Health of one path, shared by every get that uses it. */
interface PathHealth { failures: number, restUntil: number }

/** One (sub-plugin, hint) pair as one get sees it. */
interface Path {
  key: string
  sub: MultipathSub
  hint: Hint
  health: PathHealth
  /** chunks asked of it and not yet answered (by it or another path), over all the get's batches */
  outstanding: Set<Req>
  /** failed during this get: no more requests */
  failed: boolean
  error?: unknown
}

interface Req {
  d: Descriptor
  call: Call
  done: boolean
  /** paths that said they lack it */
  lacking: Set<Path>
  /** paths it is asked of now */
  on: Set<Path>
}

interface SubRequest { path: Path, call: Call, reqs: Req[], controller: AbortController }

export class MultipathPlugin implements SourceGroupPlugin {
  readonly name = 'multipath'
  readonly group = true
  readonly schemes: readonly string[]
  readonly perPath: number
  readonly borrow: boolean
  private readonly health = new Map<string, PathHealth>()
  /** one scheduler per get (PluginCallOptions.session), so its batches share the paths' queues */
  private readonly sessions = new WeakMap<object, Session>()
  /** counts since start: chunks asked, of them borrowed copies, copies that came second, requests stopped */
  readonly stats = { requested: 0, borrowed: 0, duplicates: 0, aborted: 0 }

  constructor (private readonly options: MultipathOptions) {
    if (options.paths.length === 0) throw new SourceError('a multipath plugin needs at least one path')
    this.schemes = [...new Set(options.paths.flatMap(p => p.plugin.schemes))]
    this.perPath = options.perPath ?? 10
    this.borrow = options.borrow ?? true
  }

  get standingHints (): Hint[] {
    return this.options.paths.flatMap(p => p.plugin.standingHints ?? [])
  }

  /** Every (sub-plugin, hint) pair that can serve, in hint order (SRV: priority, then weight). */
  paths (hints: readonly Hint[]): Path[] {
    const out: Path[] = []
    for (const hint of orderHints(hints)) {
      const scheme = hint.uri.slice(0, hint.uri.indexOf(':') + 1)
      this.options.paths.forEach((sub, i) => {
        if (!sub.plugin.schemes.includes(scheme)) return
        if (sub.match !== undefined && !hint.uri.startsWith(sub.match)) return
        const key = `${i} ${hint.uri}`
        let health = this.health.get(key)
        if (health === undefined) {
          // Hints come from clients: forget paths in good health before the map grows large.
          if (this.health.size >= 4096) for (const [k, h] of this.health) if (h.failures === 0 || h.restUntil < Date.now()) this.health.delete(k)
          health = { failures: 0, restUntil: 0 }
          this.health.set(key, health)
        }
        out.push({ key, sub, hint, health, outstanding: new Set(), failed: false })
      })
    }
    return out
  }

  private session (hints: readonly Hint[], key: object | undefined): Session {
    let s = key !== undefined ? this.sessions.get(key) : undefined
    if (s === undefined) {
      s = new Session(this, this.paths(hints))
      if (key !== undefined) this.sessions.set(key, s)
    }
    return s
  }

  /**
   * @internal a path failed or lied: dropped for the get; rested for the others too when the
   * fault is the path's (unreachable, 5xx, bad bytes), not this object's or these credentials'
   * (404, 401/403: the next get may well find it there).
   */
  failPath (path: Path, err: unknown): void {
    if (path.failed) return
    path.failed = true
    path.error = err
    if (objectFault(err)) return
    path.health.failures++
    path.health.restUntil = Date.now() + Math.min(MAX_REST_MS, REST_MS * 2 ** (path.health.failures - 1))
  }

  async manifest (oid: string, hints: readonly Hint[], o: PluginCallOptions): Promise<ManifestStream> {
    const paths = this.session(hints, o.session).paths.filter(p => !p.failed)
    // Rested paths last: a mirror that just failed is tried only if nothing else answers.
    const now = Date.now()
    const order = [...paths.filter(p => p.health.restUntil <= now), ...paths.filter(p => p.health.restUntil > now)]
    const errors: unknown[] = []
    for (const path of order) {
      if (o.signal.aborted) throw new AbortedError('manifest aborted', { cause: o.signal.reason })
      try {
        const m = await path.sub.plugin.manifest(oid, path.hint, { ...o, patient: false })
        path.health.failures = 0
        return m
      } catch (err) {
        if (o.signal.aborted) throw err
        errors.push(err)
      }
    }
    throw new NoSourceError(`no path could give the manifest of ${oid}`, errors)
  }

  chunks (wanted: readonly Descriptor[], hints: readonly Hint[], o: PluginCallOptions): AsyncIterable<ChunkResult> {
    return this.session(hints, o.session).call(wanted, o)
  }

  serves (hint: Hint): boolean {
    return this.paths([hint]).length > 0
  }

  batching (hints: readonly Hint[]): { batchBytes: number, parallel: number } | undefined {
    const network = this.paths(hints).filter(p => p.sub.plugin.opportunistic !== true)
    const best = network[0]?.hint.priority
    return network.filter(p => p.hint.priority === best).length > 1 ? SPREAD_BATCHING : undefined
  }

  objectAdded (object: AddedObject, store: ChunkStore): Hint[] {
    return this.options.paths.flatMap(p => p.plugin.objectAdded?.(object, store) ?? [])
  }

  async close (): Promise<void> {
    await Promise.allSettled(this.options.paths.map(async p => await p.plugin.close?.()))
  }
}

/**
 * One get's scheduler: the paths with their queues, and the chunks of all its batches not yet
 * asked of any path, in object order. Each batch (a Call) is answered as its chunks come.
 */
class Session {
  readonly network: Path[]
  readonly patient: Path[]
  /** asked by the core, not yet asked of any path, in object order */
  private pending: Req[] = []
  private readonly subs = new Set<SubRequest>()

  constructor (readonly owner: MultipathPlugin, readonly paths: Path[]) {
    this.network = paths.filter(p => p.sub.plugin.opportunistic !== true)
    this.patient = paths.filter(p => p.sub.plugin.opportunistic === true)
    // Nothing else to wait for: the disks are asked like any source, and say what they lack.
    if (this.network.length === 0) { this.network = this.patient; this.patient = [] }
  }

  async * call (wanted: readonly Descriptor[], o: PluginCallOptions): AsyncGenerator<ChunkResult> {
    const call = new Call(o)
    const reqs: Req[] = wanted.map(d => ({ d, call, done: false, lacking: new Set(), on: new Set() }))
    call.remaining = reqs.length
    const onAbort = (): void => { call.controller.abort(o.signal.reason); call.notify() }
    if (o.signal.aborted) onAbort()
    else o.signal.addEventListener('abort', onAbort, { once: true })
    try {
      if (this.network.length === 0) throw new NoSourceError('no path serves these hints')
      this.askPatient(call, reqs)
      this.enqueue(reqs)
      this.pump()
      for (;;) {
        while (call.results.length > 0) yield call.results.shift()!
        if (call.remaining === 0) return
        if (o.signal.aborted) throw new AbortedError('chunk request aborted', { cause: o.signal.reason })
        if (call.failure !== undefined) throw call.failure
        await new Promise<void>(resolve => { call.wake = resolve })
      }
    } catch (err) {
      throw toBerthError(err)
    } finally {
      o.signal.removeEventListener('abort', onAbort)
      // The batch is over (answered, failed or abandoned): forget its chunks, stop what still runs for it.
      for (const r of reqs) if (!r.done) { r.done = true; for (const p of r.on) p.outstanding.delete(r); r.on.clear() }
      this.pending = this.pending.filter(r => r.call !== call)
      call.controller.abort(new AbortedError('batch finished'))
      // Its copies still running (borrowed, patient) write into the batch's arena: the core may
      // reuse that memory once this returns, so they must have stopped.
      await Promise.allSettled([...call.tasks])
      this.pump()
    }
  }

  private enqueue (all: Req[]): void {
    const reqs = all.filter(r => !r.call.controller.signal.aborted)
    if (reqs.length === 0) return
    const last = this.pending.at(-1)
    this.pending.push(...reqs)
    if (last !== undefined && last.d.offset > reqs[0].d.offset) this.pending.sort((a, b) => a.d.offset - b.d.offset)
  }

  /** The paths a request may go to now: the best level with a live path that does not lack it. */
  private eligible (r: Req): Path[] {
    const now = Date.now()
    let rested: Path[] | undefined
    let level: number | undefined
    let out: Path[] = []
    for (const p of this.network) {
      if (p.failed || r.lacking.has(p)) continue
      if (level !== undefined && p.hint.priority !== level) break
      if (p.health.restUntil > now) { (rested ??= []).push(p); continue }
      level = p.hint.priority
      out.push(p)
    }
    // Only rested paths left: try them rather than give up (the failure may have been brief).
    if (out.length === 0 && rested !== undefined) out = rested.filter(p => p.hint.priority === rested![0].hint.priority)
    return out
  }

  private answer (r: Req, bytes: Uint8Array | undefined, via?: Path): void {
    if (r.done) { if (bytes !== undefined) this.owner.stats.duplicates++; return }
    r.done = true
    for (const p of r.on) p.outstanding.delete(r)
    r.on.clear()
    const call = r.call
    call.remaining--
    const result: ChunkResult = { descriptor: r.d, bytes }
    if (via !== undefined && bytes !== undefined) {
      result.via = via.sub.plugin.name
      result.reject = (err) => {
        this.owner.failPath(via, err)
        // Whatever else it is sending is suspect too: stop it; those chunks go to other paths.
        for (const s of this.subs) if (s.path === via) s.controller.abort(err)
        this.pump()
      }
    }
    call.results.push(result)
    // A request none of whose chunks is still wanted is stopped: its link is freed.
    for (const s of this.subs) {
      if (s.path !== via && !s.controller.signal.aborted && s.reqs.every(q => q.done)) { this.owner.stats.aborted++; s.controller.abort(new AbortedError('answered by another path')) }
    }
    call.notify()
  }

  /** Hands out work: pending requests first, then (borrowing) the back of the longest queue. */
  private pump (): void {
    const { perPath, borrow } = this.owner
    // Requests no path can serve any more: lacking everywhere (answered so), or every path failed.
    const keep: Req[] = []
    for (const r of this.pending) {
      if (r.done || r.call.failure !== undefined || r.call.controller.signal.aborted) continue
      if (this.eligible(r).length > 0) { keep.push(r); continue }
      const left = this.network.filter(p => !p.failed)
      if (left.length > 0 && left.every(p => r.lacking.has(p))) {
        // Every live path lacks it: said so now (a disk that may turn up is no reason to hang;
        // whatever it brings first still wins while the batch lasts).
        this.answer(r, undefined)
        continue
      }
      r.call.failure = new NoSourceError(`no path left for chunk ${r.d.cid}`, this.network.map(p => p.error ?? new SourceError(`${p.hint.uri} lacks chunk ${r.d.cid}`)))
      r.call.notify()
    }
    this.pending = keep.filter(r => r.call.failure === undefined)
    for (const path of this.network) {
      if (path.failed) continue
      for (;;) {
        // A path alone at its level for the next chunk it may take gets whole batches.
        const next = this.pending.find(r => this.eligible(r).includes(path))
        const solo = next !== undefined && this.eligible(next).length === 1
        const limit = solo ? SOLO_REQUEST : perPath
        const room = limit - path.outstanding.size
        // Refill in halves: a request of one chunk per answered chunk would cost a round trip each.
        if (room <= 0 || (path.outstanding.size > 0 && room < Math.ceil(limit / 2))) break
        const take: Req[] = []
        const rest: Req[] = []
        for (const r of this.pending) {
          if (take.length < room && this.eligible(r).includes(path)) take.push(r)
          else rest.push(r)
        }
        if (take.length > 0) { this.pending = rest; this.issue(path, take); continue }
        if (borrow && path.outstanding.size === 0) {
          const borrowed = this.borrowFor(path, room)
          if (borrowed.length > 0) { this.owner.stats.borrowed += borrowed.length; this.issue(path, borrowed); continue }
        }
        break
      }
    }
  }

  /**
   * Borrowing: the newer half of the longest other queue that this path may serve and nobody
   * copies yet, newest first — the owner works from the front, the borrower from the back, and
   * they meet in the middle, so few chunks come twice.
   */
  private borrowFor (path: Path, room: number): Req[] {
    let victim: Path | undefined
    let best = 0
    for (const p of this.network) {
      if (p === path) continue
      let n = 0
      for (const r of p.outstanding) if (r.on.size === 1 && !r.done) n++
      if (n > best) { best = n; victim = p }
    }
    if (victim === undefined) return []
    const candidates = [...victim.outstanding].filter(r => r.on.size === 1 && !r.done && !r.lacking.has(path) && this.eligible(r).includes(path))
    // A queue of one is taken whole: at the very end it is what everyone waits for.
    const half = Math.max(1, Math.floor(candidates.length / 2))
    return candidates.slice(-Math.min(room, half)).reverse()
  }

  /** Asks a path for requests, one sub-request per batch (each lands in its batch's arena). */
  private issue (path: Path, reqs: Req[]): void {
    const byCall = new Map<Call, Req[]>()
    for (const r of reqs) {
      const list = byCall.get(r.call)
      if (list === undefined) byCall.set(r.call, [r])
      else list.push(r)
    }
    for (const [call, list] of byCall) {
      const controller = new AbortController()
      const sub: SubRequest = { path, call, reqs: list, controller }
      for (const r of list) { r.on.add(path); path.outstanding.add(r) }
      this.owner.stats.requested += list.length
      this.subs.add(sub)
      call.track(this.runSub(sub, AbortSignal.any([call.controller.signal, controller.signal])))
    }
  }

  private async runSub (sub: SubRequest, signal: AbortSignal): Promise<void> {
    const { path, reqs, call } = sub
    const byCid = new Map(reqs.map(r => [r.d.cid, r]))
    const seen = new Set<Req>()
    try {
      for await (const got of path.sub.plugin.chunks(reqs.map(r => r.d), path.hint, { signal, alloc: call.o.alloc, urgent: call.o.urgent, oid: call.o.oid })) {
        const r = byCid.get(got.descriptor.cid)
        if (r === undefined || seen.has(r)) continue
        seen.add(r)
        r.on.delete(path)
        path.outstanding.delete(r)
        if (got.bytes === undefined) r.lacking.add(path)
        else { path.health.failures = 0; this.answer(r, got.bytes, path) }
        // Room on this path: refilled at half mid-request, not only when a request ends.
        this.pump()
      }
      for (const r of reqs) if (!seen.has(r) && !r.done) r.lacking.add(path)
    } catch (err) {
      if (!signal.aborted) this.owner.failPath(path, err)
    } finally {
      this.subs.delete(sub)
      for (const r of reqs) if (r.on.delete(path)) path.outstanding.delete(r)
      // What this path did not bring and nobody else is fetching is asked again.
      this.enqueue(reqs.filter(r => !r.done && r.on.size === 0 && !this.pending.includes(r)))
      this.pump()
      call.notify()
    }
  }

  /** Opportunistic paths get each whole batch, patiently, until the batch is done. */
  private askPatient (call: Call, reqs: Req[]): void {
    for (const path of this.patient) {
      if (path.failed) continue
      const byCid = new Map(reqs.map(r => [r.d.cid, r]))
      call.track((async () => {
        try {
          for await (const got of path.sub.plugin.chunks(reqs.map(r => r.d), path.hint, { signal: call.controller.signal, alloc: call.o.alloc, patient: true, urgent: call.o.urgent, oid: call.o.oid })) {
            if (path.failed) break
            const r = byCid.get(got.descriptor.cid)
            if (r !== undefined && got.bytes !== undefined) this.answer(r, got.bytes, path)
          }
        } catch (err) {
          // A disk that fails is simply not used; the network paths carry on.
          if (!call.controller.signal.aborted) this.owner.failPath(path, err)
        } finally {
          this.pump()
          call.notify()
        }
      })())
    }
  }
}

/** One batch the core asked for: its answers, in the order they come. */
class Call {
  readonly results: ChunkResult[] = []
  remaining = 0
  failure: Error | undefined
  readonly controller = new AbortController()
  /** its sub-requests and patient reads still running */
  readonly tasks = new Set<Promise<void>>()
  wake: (() => void) | undefined
  constructor (readonly o: PluginCallOptions) {}
  track (task: Promise<void>): void {
    this.tasks.add(task)
    task.finally(() => this.tasks.delete(task)).catch(() => {})
  }
  notify (): void { const w = this.wake; this.wake = undefined; w?.() }
}
