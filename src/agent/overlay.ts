/**
 * The agent's side of the overlay (src/overlay/registry.ts): where a get with no hints looks, and
 * what the agent tells the overlay about the objects it stores.
 *
 *  - Announce: after a put, and after a get has committed the object, the agent adds its own
 *    `berth://` hint to the object's replica pointers in the DHT and publishes an
 *    `object-available` event `{type, oid, size, hints}`. Both run in the background; a failure
 *    is counted (GET /v1/status → overlay) and otherwise ignored — it never fails the put or get.
 *  - Recent objects: object-available events from other nodes are kept (OID → hints, at most
 *    RECENT_MAX entries, each for RECENT_TTL_MS) and are the first source of hints for a get with
 *    none, ahead of the DHT: an object announced a moment ago is usable before (and without) a
 *    DHT lookup.
 */
import { type Hint, formatHint, parseHint, uniqueHints } from '../core/hints.ts'
import { parseOid } from '../core/naming.ts'
import { TOPICS } from '../overlay/topics.ts'

/** What the agent needs of an overlay node; only findReplicas is required (tests pass fakes). */
export interface AgentOverlay {
  findReplicas (oid: string, options?: { signal?: AbortSignal, timeoutMs?: number }): Promise<string[]>
  announceReplica? (oid: string, hintUri: string, options?: { signal?: AbortSignal, timeoutMs?: number }): Promise<number>
  publish? (topic: string, event: Record<string, unknown>): Promise<void>
  subscribe? (topic: string, handler: (event: Record<string, unknown>, from: string) => void): () => void
}

export const RECENT_MAX = 1024
export const RECENT_TTL_MS = 10 * 60_000
const MAX_HINTS = 64

export interface OverlayStats {
  announced: number
  announceFailures: number
  published: number
  publishFailures: number
  eventsReceived: number
  recentHits: number
  /** recent-event hints that failed, so the DHT was asked after all */
  recentStale: number
  dhtLookups: number
  /** receipt time minus the publisher's `at` of the last object-available event (ms; clocks of two hosts) */
  lastEventDelayMs?: number
  lastError?: string
}

/** Hints from a source we do not control: parsed, `file:` dropped (a remote must not name local dirs). */
function remoteHints (uris: unknown[]): Hint[] {
  const hints: Hint[] = []
  for (const uri of uris.slice(0, MAX_HINTS)) {
    try {
      const h = parseHint(uri)
      if (new URL(h.uri).protocol !== 'file:') hints.push(h)
    } catch {}
  }
  return uniqueHints(hints)
}

/** OID → hints of recent object-available events; bounded (oldest out first) with a TTL. */
export class RecentObjects {
  private readonly entries = new Map<string, { hints: Hint[], expires: number }>()
  constructor (private readonly max = RECENT_MAX, private readonly ttlMs = RECENT_TTL_MS, private readonly now = Date.now) {}

  add (oid: string, hints: Hint[]): void {
    if (hints.length === 0) return
    const prev = this.get(oid)
    this.entries.delete(oid)
    this.entries.set(oid, { hints: uniqueHints([...hints, ...prev]).slice(0, MAX_HINTS), expires: this.now() + this.ttlMs })
    while (this.entries.size > this.max) this.entries.delete(this.entries.keys().next().value as string)
  }

  get (oid: string): Hint[] {
    const e = this.entries.get(oid)
    if (e === undefined) return []
    if (e.expires <= this.now()) { this.entries.delete(oid); return [] }
    return e.hints
  }

  delete (oid: string): boolean { return this.entries.delete(oid) }

  get size (): number { return this.entries.size }
}

export interface AgentOverlayLink {
  readonly stats: OverlayStats
  readonly recent: RecentObjects
  /** hints for a get that gave none: recent events first, else the DHT (≤ 2 s); [] when nothing */
  hints (oid: string, signal: AbortSignal): Promise<Hint[]>
  /**
   * the hints hints() gave failed: when they came from a recent event, forget it and ask the DHT
   * (hints already tried left out); [] when they came from the DHT already
   */
  afterStale (oid: string, tried: Hint[], signal: AbortSignal): Promise<Hint[]>
  /** the agent now stores oid: announce self as a replica and publish object-available (background) */
  stored (object: { oid: string, size: number }, self: Hint, extra: Hint[], signal: AbortSignal): void
  /** waits for announcements in flight (stop) */
  settle (): Promise<void>
  close (): void
}

export function linkOverlay (overlay: AgentOverlay, selfHint: () => Hint): AgentOverlayLink {
  const stats: OverlayStats = { announced: 0, announceFailures: 0, published: 0, publishFailures: 0, eventsReceived: 0, recentHits: 0, recentStale: 0, dhtLookups: 0 }
  const recent = new RecentObjects()
  const inFlight = new Set<Promise<unknown>>()
  const track = (p: Promise<unknown>): void => { inFlight.add(p); void p.finally(() => inFlight.delete(p)) }
  const fail = (what: 'announceFailures' | 'publishFailures', err: unknown): void => {
    stats[what]++
    stats.lastError = `${what === 'announceFailures' ? 'announce' : 'publish'}: ${(err as Error)?.message ?? String(err)}`
  }

  const unsubscribe = overlay.subscribe?.(TOPICS.objectAvailable, (event) => {
    let oid: string
    try { oid = parseOid(String(event.oid)) } catch { return }
    if (!Array.isArray(event.hints)) return
    const self = selfHint().uri
    const hints = remoteHints(event.hints).filter(h => h.uri !== self)
    stats.eventsReceived++
    if (typeof event.at === 'number') stats.lastEventDelayMs = Date.now() - event.at
    recent.add(oid, hints)
  })

  /** Hints the DHT gives for oid (at most 2 s of looking); none when it fails. */
  async function fromDht (oid: string, signal: AbortSignal): Promise<Hint[]> {
    stats.dhtLookups++
    let uris: string[]
    try { uris = await overlay.findReplicas(oid, { signal, timeoutMs: 2000 }) } catch { return [] }
    const self = selfHint().uri
    return remoteHints(uris).filter(h => h.uri !== self)
  }

  return {
    stats,
    recent,
    async hints (oid, signal) {
      const cached = recent.get(oid)
      if (cached.length > 0) { stats.recentHits++; return cached }
      return await fromDht(oid, signal)
    },
    async afterStale (oid, tried, signal) {
      if (!recent.delete(oid)) return []
      stats.recentStale++
      const seen = new Set(tried.map(h => h.uri))
      return (await fromDht(oid, signal)).filter(h => !seen.has(h.uri))
    },
    stored (object, self, extra, signal) {
      // Through a resolved promise, so that even an overlay that throws synchronously cannot fail the caller.
      if (overlay.announceReplica !== undefined) {
        track(Promise.resolve().then(async () => await overlay.announceReplica!(object.oid, self.uri, { signal, timeoutMs: 10_000 }))
          .then(() => { stats.announced++ }, err => fail('announceFailures', err)))
      }
      if (overlay.publish !== undefined) {
        const hints = uniqueHints([...extra, self]).filter(h => !h.uri.startsWith('file:')).map(formatHint)
        track(Promise.resolve().then(async () => await overlay.publish!(TOPICS.objectAvailable, { type: 'object-available', oid: object.oid, size: object.size, hints }))
          .then(() => { stats.published++ }, err => fail('publishFailures', err)))
      }
    },
    async settle () { await Promise.allSettled([...inFlight]) },
    close () { unsubscribe?.() }
  }
}
