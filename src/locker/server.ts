/**
 * The locker server (SAILOR's data lockers, DECADE's in-network storage): many lockers on one
 * ChunkStore, so bytes are held once however many lockers reference them.
 *
 * Every object request carries an access token (`Authorization: Bearer`) signed by a key the
 * locker's owner registered, and optionally a resource token (`Berth-Resource`) bound to it.
 * A PUT streams through the chunking pipeline into the store and is committed only if the bytes
 * hash to the OID in the URL; the locker's reference is recorded after that, so a crash leaves
 * either no reference (the orphan is released at the next start) or a complete object. Quota is
 * checked before an upload (Content-Length) and while it runs (every byte is reserved as it
 * arrives), so concurrent uploads cannot overrun it together.
 */
import { randomUUID } from 'node:crypto'
import { performance } from 'node:perf_hooks'
import { mkdir } from 'node:fs/promises'
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { Readable } from 'node:stream'
import { setTimeout as sleep } from 'node:timers/promises'
import { join } from 'node:path'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { JWK } from 'jose'
import type { Logger } from 'pino'
import { Counter, Gauge, Registry } from 'prom-client'
import { z } from 'zod'
import { BadRequestError, InvalidConfigError, NotFoundError, OverloadedError, ProofError, QuotaExceededError, SlotsExhaustedError, SourceError, toBerthError, TokenScopeError, TooLargeError } from '../core/errors.ts'
import { type HashPool, sharedHashPool } from '../core/hash-pool.ts'
import { parseOid } from '../core/naming.ts'
import type { ByteRange } from '../core/range.ts'
import { type AccessClaims, parseLockerName, publicKeyFrom, type ResourceClaims, TokenVerifier, type TokenOp, verifyAdminToken } from '../core/tokens.ts'
import { answerChallenge, type Challenge, newChallenge, parseChallenge, sameAnswer } from '../core/proof.ts'
import { encodeDescriptor, encodeManifestHead, MANIFEST_TYPE } from '../core/wire.ts'
import { abortOnClose, createHttpServer, type ListenAddress, listen, parseListen, rangeOf, urlOf } from '../agent/http.ts'
import { PeerPlugin } from '../agent/plugins/peer.ts'
import { putObject } from '../agent/put.ts'
import { readStoredObject } from '../agent/read.ts'
import { sendPieces } from '../agent/send.ts'
import type { OutputPiece } from '../agent/transfer.ts'
import type { Endpoint, TransferStatus } from '../sdk/locker-client.ts'
import { AltoClient } from '../sdk/alto-client.ts'
import { cachedStore, openStore } from '../store/index.ts'
import type { ChunkStore, ObjectInfo } from '../store/types.ts'
import { LockerDb } from './db.ts'
import { LiveObject } from './live.ts'
import { type Flow, Pacer, Scheduler } from './scheduler.ts'
import { checkPlace, deliver, type Opened, openSource, type Place, parsePlace, provePlace, samePlace } from './sources.ts'

export interface LockerServerOptions {
  /** address of the HTTP API; default 127.0.0.1:4660 (port 0 picks a free one) */
  listen?: string
  /** data directory (metadata + disk store); absent → everything in memory */
  dir?: string
  /** the provider's admin public key: it signs the tokens that create lockers */
  adminKey: JWK
  /** quota of a locker created without one; default 10 GiB */
  defaultQuota?: number
  /** how often expired objects are swept, ms; default 5000 */
  sweepMs?: number
  pool?: HashPool
  /**
   * Let distributes fetch from or deliver to loopback, private and link-local addresses; default
   * false: a tenant must not make the server reach what sits behind it (an agent's local API,
   * internal services). For single-host setups and tests.
   */
  allowPrivatePlaces?: boolean
  /** structured logs (pino): a line per request, per distribute, per sweep; none when absent */
  logger?: Logger
  /** bytes of verified chunks kept in memory for readers (disk stores); default 256 MiB */
  cacheBytes?: number
  /** what the server has to share (SAILOR's resources); each shared by weight with floors */
  capacity?: Partial<Capacity>
  /** pull-through caching: lockers that fetch what they lack from upstream lockers or foreign origins */
  cache?: CacheOptions
}

/**
 * A cache locker answers a GET for an object it lacks by fetching it once from an upstream
 * locker (verified against the OID, stored within its quota, served while it arrives), and
 * `GET /v1/lockers/{locker}/cache?url=` for any HTTP(S) origin outside Berth.
 */
export interface CacheOptions {
  /** the lockers that act as caches; default every locker of the server */
  lockers?: string[]
  /** upstream lockers, `locker://host:port/<name>` with a read token; tried cheapest first (ALTO), else in this order */
  upstreams?: Endpoint[]
  /** seconds a pulled object is kept (the sweep drops it after); default 86400 */
  ttl?: number
  /** seconds a foreign resource is served without asking its origin; after that it is revalidated (conditional GET); default 300 */
  fresh?: number
  /** an ALTO server: upstreams ranked by its endpoint cost from this server's address */
  alto?: string
  /** this server's address as the ALTO server knows it; default the listen address */
  from?: string
}

export interface Capacity {
  /** bytes/s out (GETs, deliveries); default unlimited (the link decides) */
  egress: number
  /** bytes/s in (PUTs, fetches); default unlimited */
  ingress: number
  /** transfers at once (connection slots); default 4096 */
  connections: number
  /** bytes the lockers' quotas may add up to; default unlimited */
  storage: number
}

export interface LockerServer {
  readonly url: string
  readonly store: ChunkStore
  readonly db: LockerDb
  /** changes what the server shares; floors already admitted are kept */
  setCapacity (c: Partial<Capacity>): void
  start (): Promise<void>
  stop (): Promise<void>
  /** drops references whose TTL ran out and frees their bytes; returns how many (also runs on a timer) */
  sweep (): Promise<number>
}

interface InFlight { id: string, locker: string, op: 'put' | 'get', oid: string, app: string, bytes: number, startedAt: number }

/** Where a locker's copy of an object is to be, when it arrives. */
interface Target { locker: string, expiresAt: number | null, seq: number | null }

/**
 * An object on its way into the store (an upload or a distribute's fetch): readable while it
 * arrives, and joined by distributes that want the same object rather than fetched again.
 */
interface Arrival {
  obj: LiveObject
  /** where the bytes come from (a distribute's src; undefined for an upload) */
  src: Place | undefined
  seq: number | null
  /** distributes (by transfer id) whose lockers hold the object once it is complete; each told how that went */
  joiners: Map<string, { target: Target, settle: (err?: unknown) => void }>
}

/** A challenge handed out and not yet answered: single use, short-lived. */
interface IssuedChallenge extends Challenge { locker: string, oid: string, size: number, expiresAt: number }

const DEFAULT_LISTEN = '127.0.0.1:4660'
const MAX_TTL = 10 * 365 * 24 * 3600
const CHALLENGE_MS = 60_000
const MAX_CHALLENGES = 10_000
/** finished distributes kept for their progress queries */
const KEEP_TRANSFERS = 1000
const DEFAULT_CONNECTIONS = 4096
/**
 * Connection slots: until this share of them is taken anyone gets one; the rest are kept for
 * users holding less than their weighted share of that part, so a heavy user cannot take the
 * last ones from the others (slots cannot be taken back once given, unlike bandwidth).
 */
const SLOTS_OPEN_SHARE = 0.9
/** While an object whose manifest was asked is still arriving, a blank line this often keeps the answer alive. */
const MANIFEST_KEEPALIVE_MS = 1000

function checkCapacity (c: Partial<Capacity>): void {
  for (const [k, v] of Object.entries(c)) {
    if (v !== undefined && (typeof v !== 'number' || Number.isNaN(v) || v <= 0)) throw new InvalidConfigError(`capacity.${k} must be a positive number (Infinity for unlimited)`)
  }
}

const createBody = z.object({
  name: z.string(),
  key: z.unknown(),
  weight: z.number().positive().max(1e6).optional(),
  quota: z.number().int().nonnegative().optional(),
  floor: z.number().nonnegative().optional()
}).strict()

const revokeBody = z.object({ jti: z.string().min(1).max(128), until: z.number().int().positive().optional() }).strict()

const endpoint = z.union([
  z.string().max(2048),
  z.object({ uri: z.string().max(2048), token: z.string().max(8192).optional(), resource: z.string().max(8192).optional() }).strict()
])
const distributeBody = z.object({
  oid: z.string().max(200),
  src: endpoint.optional(),
  dst: endpoint.optional(),
  ttl: z.number().int().min(1).max(MAX_TTL).optional()
}).strict()

function bearer (request: FastifyRequest): string | undefined {
  const h = request.headers.authorization
  if (h === undefined) return undefined
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h)
  if (m === null) throw new BadRequestError('Authorization must be "Bearer <token>"')
  return m[1]
}

function queryToken (request: FastifyRequest): string | undefined {
  const t = (request.query as Record<string, unknown> | undefined)?.token
  if (t === undefined) return undefined
  if (typeof t !== 'string' || t === '') throw new BadRequestError('token must be given once, as ?token=<access token>')
  return t
}

function headerInt (request: FastifyRequest, name: string, max: number, min = 0): number | undefined {
  const v = request.headers[name]
  if (v === undefined) return undefined
  if (typeof v !== 'string' || !/^\d{1,15}$/.test(v) || Number(v) > max || Number(v) < min) throw new BadRequestError(`${name} must be an integer from ${min} to ${max}`)
  return Number(v)
}

function zodMessage (e: z.ZodError): string {
  return e.issues.map(i => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ')
}

/** Piece bytes for hashing: each piece's memory goes back to the store once the consumer moved on. */
async function * bytesOf (pieces: AsyncIterable<OutputPiece>): AsyncGenerator<Uint8Array> {
  for await (const p of pieces) {
    try { yield p.bytes } finally { p.release?.() }
  }
}

/** Piece bytes for a stream that may keep them (an upload to another server): copied, released at once. */
async function * copiesOf (pieces: AsyncIterable<OutputPiece>, count: (n: number) => void): AsyncGenerator<Uint8Array> {
  for await (const p of pieces) {
    const copy = Buffer.from(p.bytes)
    p.release?.()
    count(copy.byteLength)
    yield copy
  }
}

export async function createLockerServer (options: LockerServerOptions): Promise<LockerServer> {
  const admin = (await publicKeyFrom(options.adminKey)).jwk
  const pool = options.pool ?? sharedHashPool()
  if (options.dir !== undefined) await mkdir(options.dir, { recursive: true })
  // Many readers of the same objects (a CDN's or ISP's lockers): chunks read from disk are
  // verified once and kept in a bounded cache of verified bytes that concurrent readers share
  // (src/store/cache.ts). A memory store needs none: its chunks are in memory already.
  const store = options.dir !== undefined
    ? cachedStore(await openStore({ kind: 'disk', dir: join(options.dir, 'store'), pool }), { bytes: options.cacheBytes })
    : await openStore({ kind: 'memory', pool })
  const db = new LockerDb(options.dir !== undefined ? join(options.dir, 'lockers.sqlite') : ':memory:')
  const verifier = new TokenVerifier({ keys: locker => db.keys(locker), revoked: jti => db.isRevoked(jti) })
  const defaultQuota = options.defaultQuota ?? 10 * 2 ** 30
  const closing = new AbortController()
  const inFlight = new Set<InFlight>()
  /** bytes uploads in progress have taken of each locker's quota */
  const reserved = new Map<string, number>()
  /** bytes each locker's references account for (from the database; dropped when it changes) */
  const used = new Map<string, number>()
  const usedBy = (locker: string): number => {
    let n = used.get(locker)
    if (n === undefined) { n = db.usage(locker).bytes; used.set(locker, n) }
    return n
  }
  /** objects arriving, by OID: one arrival per object, however many lockers wait for it */
  const arrivals = new Map<string, Arrival>()
  const challenges = new Map<string, IssuedChallenge>()
  const transfers = new Map<string, TransferStatus>()
  // Distributes reach agents with the same peer protocol agents use among themselves.
  const peer = new PeerPlugin()
  checkCapacity(options.capacity ?? {})
  const capacity: Capacity = { egress: Infinity, ingress: Infinity, connections: DEFAULT_CONNECTIONS, storage: Infinity }
  // Only what is given: an absent option (undefined) keeps the default.
  for (const [k, v] of Object.entries(options.capacity ?? {})) if (v !== undefined) capacity[k as keyof Capacity] = v
  const bandwidth = { egress: new Scheduler({ capacity: capacity.egress }), ingress: new Scheduler({ capacity: capacity.ingress }) }
  /** transfers holding a connection slot: in all, per locker, per grant (resource token, else access token) */
  const slots = { total: 0, byLocker: new Map<string, number>(), byGrant: new Map<string, number>() }

  const registry = new Registry()
  const m = {
    bytesIn: new Counter({ name: 'berth_locker_bytes_in_total', help: 'object bytes uploaded or fetched', registers: [registry] }),
    bytesOut: new Counter({ name: 'berth_locker_bytes_out_total', help: 'object bytes served or delivered', registers: [registry] }),
    objectsStored: new Counter({ name: 'berth_locker_objects_stored_total', help: 'objects committed (uploads and fetches)', registers: [registry] }),
    linked: new Counter({ name: 'berth_locker_links_total', help: 'objects a locker came to hold without moving their bytes, by how', labelNames: ['how'], registers: [registry] }),
    denied: new Counter({ name: 'berth_locker_requests_denied_total', help: 'requests refused, by error code', labelNames: ['code'], registers: [registry] }),
    inFlight: new Gauge({ name: 'berth_locker_transfers_in_flight', help: 'uploads and downloads in progress', registers: [registry] }),
    distributes: new Gauge({ name: 'berth_locker_distributes_running', help: 'distributes in progress', registers: [registry] })
  }

  // A crash between a store commit and the reference that follows it leaves an object nobody
  // holds: released here, so usage always equals what the references account for.
  {
    const held = db.heldOids()
    const orphans: string[] = []
    for await (const o of store.objects()) if (!held.has(o.oid)) orphans.push(o.oid)
    for (const oid of orphans) await store.release(oid)
    if (orphans.length > 0) {
      await store.gc()
      options.logger?.warn({ orphans: orphans.length }, 'released objects no locker held (an upload cut off by a crash)')
    }
  }

  const app = createHttpServer()
  let address: ListenAddress = parseListen(options.listen ?? DEFAULT_LISTEN)

  const log = options.logger
  /** the error code a request failed with, for its log line */
  const failedWith = new WeakMap<object, string>()
  app.addHook('onError', async (request, _reply, error) => {
    const code = toBerthError(error).code
    m.denied.inc({ code })
    failedWith.set(request, code)
  })
  if (log !== undefined) {
    // One line per request when its response is over (also for streamed, hijacked answers).
    app.addHook('onRequest', async (request, reply) => {
      const t0 = performance.now()
      reply.raw.once('close', () => {
        const params = request.params as { locker?: string } | undefined
        log.info({
          method: request.method,
          route: request.routeOptions.url ?? request.url.slice(0, 200),
          locker: params?.locker,
          status: reply.raw.statusCode,
          code: failedWith.get(request),
          complete: reply.raw.writableFinished,
          ms: Math.round(performance.now() - t0)
        }, 'request')
      })
    })
  }

  /** The request's tokens, checked for `op` on `oid` of `locker`. */
  async function authorize (request: FastifyRequest, locker: string, op: TokenOp, oid?: string, seq?: number): Promise<{ access: AccessClaims, resource: ResourceClaims | undefined }> {
    // A read may carry its access token as `?token=` instead: a browser that a portal redirects
    // here (HTTP 302) cannot add an Authorization header to the request it follows the redirect with.
    const token = bearer(request) ?? (op === 'read' ? queryToken(request) : undefined)
    const access = await verifier.access(token, { locker, op, oid, seq })
    const resourceHeader = request.headers['berth-resource']
    if (Array.isArray(resourceHeader)) throw new BadRequestError('one Berth-Resource header at most')
    const resource = await verifier.resource(resourceHeader, token!, locker)
    return { access, resource }
  }

  function track (t: Omit<InFlight, 'id' | 'startedAt' | 'bytes'>): InFlight {
    const entry: InFlight = { ...t, id: randomUUID(), bytes: 0, startedAt: Date.now() }
    inFlight.add(entry)
    m.inFlight.inc()
    return entry
  }
  function untrack (t: InFlight): void {
    if (inFlight.delete(t)) m.inFlight.dec()
  }

  /**
   * A transfer's share of the server: a connection slot and a bandwidth flow in one direction,
   * placed in the tree users (lockers, by subscription weight and floor) → applications (the
   * locker's weights) → grants (the resource token's bwWeight, bwMin, bwMax). Refused with 429
   * when the grant's own slots are taken, 503 + Retry-After when the server cannot take it.
   */
  function admit (direction: 'egress' | 'ingress', locker: string, grant: { access: AccessClaims, resource: ResourceClaims | undefined }): { flow: Flow, close: () => void } {
    const row = db.mustLocker(locker)
    const { resource } = grant
    const key = resource?.jti ?? grant.access.jti
    const mine = slots.byGrant.get(key) ?? 0
    if (resource?.connSlots !== undefined && mine >= resource.connSlots) throw new SlotsExhaustedError(`the resource token's ${resource.connSlots} connection slots are in use`)
    if (slots.total >= capacity.connections) throw new OverloadedError(`all ${capacity.connections} connection slots of the server are in use`)
    const theirs = slots.byLocker.get(locker) ?? 0
    if (slots.total >= capacity.connections * SLOTS_OPEN_SHARE) {
      let weights = row.weight
      for (const l of slots.byLocker.keys()) if (l !== locker) weights += db.locker(l)?.weight ?? 1
      if (theirs >= capacity.connections * SLOTS_OPEN_SHARE * row.weight / weights) throw new OverloadedError(`locker ${locker} has its share of the server's connection slots`)
    }
    const app = resource?.app ?? 'default'
    const flow = bandwidth[direction].open({
      user: locker,
      userWeight: row.weight,
      userFloor: row.floor,
      app,
      appWeight: db.appWeight(locker, app),
      weight: resource?.bwWeight ?? 1,
      floor: resource?.bwMin,
      max: resource?.bwMax
    })
    slots.total++
    slots.byLocker.set(locker, theirs + 1)
    slots.byGrant.set(key, mine + 1)
    let closed = false
    return {
      flow,
      close () {
        if (closed) return
        closed = true
        flow.close()
        slots.total--
        const l = slots.byLocker.get(locker)! - 1
        if (l === 0) slots.byLocker.delete(locker); else slots.byLocker.set(locker, l)
        const g = slots.byGrant.get(key)! - 1
        if (g === 0) slots.byGrant.delete(key); else slots.byGrant.set(key, g)
      }
    }
  }

  /** Pieces let through at the flow's pace (each waits for its bytes' grant). */
  async function * paced (pieces: AsyncIterable<OutputPiece>, flow: Flow, signal: AbortSignal, total: number | undefined): AsyncGenerator<OutputPiece> {
    // Grants asked ahead are at most what the answer will carry: a 4 KiB GET is charged 4 KiB.
    const pacer = new Pacer(flow, signal, total)
    for await (const p of pieces) {
      try { await pacer.take(p.bytes.byteLength) } catch (err) { p.release?.(); throw err }
      yield p
    }
  }

  /** Frees a reference's bytes when no locker holds the object any more. */
  async function dropReference (locker: string, oid: string): Promise<boolean> {
    const left = db.drop(locker, oid)
    used.delete(locker)
    if (left === -1) return false
    if (left === 0) { await store.release(oid); await store.gc() }
    return true
  }

  /** The reference a request may see: absent or expired is undefined. */
  function liveRef (locker: string, oid: string): { size: number, seq: number | null } | undefined {
    const h = db.held(locker, oid)
    return h === undefined || (h.expiresAt !== null && h.expiresAt <= Date.now()) ? undefined : h
  }
  function mustHold (locker: string, oid: string): { size: number, seq: number | null } {
    const h = liveRef(locker, oid)
    if (h === undefined) throw new NotFoundError(`locker ${locker} holds no object ${oid}`)
    return h
  }

  /** Makes `target` hold an object whose bytes are in the store, within its quota. */
  function holdWithin (target: Target, oid: string, size: number): void {
    // A link made while the last holder was deleting (a proof takes round trips) would reference
    // collected bytes: checked here, synchronously, where nothing can come in between.
    if (db.holders(oid) === 0) throw new NotFoundError(`the object ${oid} is no longer on this server`)
    const current = liveRef(target.locker, oid)
    if (current === undefined) {
      const row = db.mustLocker(target.locker)
      if (usedBy(target.locker) + (reserved.get(target.locker) ?? 0) + size > row.quota) throw new QuotaExceededError(`locker ${target.locker} is over its quota of ${row.quota} bytes`)
    }
    db.hold(target.locker, { oid, size, seq: target.seq ?? current?.seq ?? null, expiresAt: target.expiresAt })
    used.delete(target.locker)
  }

  /** Registers an arrival at once, so that what comes after it (a GET, a distribute) finds it. */
  function beginArrival (oid: string, target: Target, size: number | undefined, src: Place | undefined): Arrival {
    const a: Arrival = { obj: new LiveObject(oid, size), src, seq: target.seq, joiners: new Map() }
    a.obj.lockers.add(target.locker)
    // A second upload of an object already arriving runs beside the first, unseen by readers.
    if (!arrivals.has(oid)) arrivals.set(oid, a)
    return a
  }

  /**
   * Brings an arrival's bytes into the store: chunked, stored (each run readable at once),
   * verified against the OID, then held by its locker and its joiners. Quota is taken byte by
   * byte as they come (all of a declared size up front), so uploads racing each other cannot
   * overrun it together; sizeMax stops an upload that grows past it.
   */
  async function ingest (a: Arrival, target: Target, stream: AsyncIterable<Uint8Array>, o: { declared?: number, sizeMax?: number, signal: AbortSignal, flow: Flow, count: (n: number) => void }): Promise<ObjectInfo> {
    const { oid } = a.obj
    const locker = target.locker
    let taken = 0
    // The quota as the upload starts (read once: this runs for every network chunk).
    const row = db.mustLocker(locker)
    const take = (n: number): void => {
      if (usedBy(locker) + (reserved.get(locker) ?? 0) + n > row.quota) throw new QuotaExceededError(`locker ${locker} is over its quota of ${row.quota} bytes`)
      reserved.set(locker, (reserved.get(locker) ?? 0) + n)
      taken += n
    }
    // Counts every byte; an upload longer than announced, or past sizeMax or the quota, stops here.
    async function * metered (source: AsyncIterable<Uint8Array>): AsyncGenerator<Uint8Array> {
      const pacer = new Pacer(o.flow, o.signal, o.declared)
      for await (const chunk of source) {
        a.obj.received += chunk.byteLength
        if (o.sizeMax !== undefined && a.obj.received > o.sizeMax) throw new TooLargeError(`the object exceeds the resource token's sizeMax of ${o.sizeMax} bytes`)
        if (o.declared !== undefined && a.obj.received > o.declared) throw new TooLargeError(`more bytes came than the ${o.declared} announced`)
        if (a.obj.received > taken) take(a.obj.received - taken)
        // Reading no further until the bytes are granted is what paces the sender (TCP backpressure).
        await pacer.take(chunk.byteLength)
        o.count(chunk.byteLength)
        m.bytesIn.inc(chunk.byteLength)
        yield chunk
      }
    }
    try {
      if (o.declared !== undefined) take(o.declared)
      // An arrival without an OID (a foreign resource) is named by its bytes.
      const info = await putObject({ stream: metered(stream) }, store, pool, { expect: oid === '' ? undefined : oid, signal: o.signal, onStored: d => a.obj.add(d) })
      // The object exists in the store; now the lockers hold it (the order a crash respects).
      db.hold(locker, { oid: info.oid, size: info.size, seq: target.seq, expiresAt: target.expiresAt })
      used.delete(locker)
      m.objectsStored.inc()
      for (const j of a.joiners.values()) {
        try { holdWithin(j.target, info.oid, info.size); j.settle() } catch (err) { j.settle(err) }
      }
      a.obj.finish(info.size)
      return info
    } catch (err) {
      a.obj.fail(err)
      for (const j of a.joiners.values()) j.settle(err)
      throw err
    } finally {
      reserved.set(locker, (reserved.get(locker) ?? 0) - taken)
      if (arrivals.get(oid) === a) arrivals.delete(oid)
    }
  }

  /** What a reader of `locker`'s `oid` gets: the stored object, or the one still arriving for it. */
  function readable (locker: string, oid: string): { size: number | undefined, seq: number | null, arrival?: Arrival } | undefined {
    const h = liveRef(locker, oid)
    if (h !== undefined) return { size: h.size, seq: h.seq }
    const a = arrivals.get(oid)
    if (a !== undefined && a.obj.arriving && a.obj.lockers.has(locker)) return { size: a.obj.size, seq: a.seq, arrival: a }
    return undefined
  }

  function readPieces (oid: string, r: { arrival?: Arrival }, o: { range?: ByteRange, signal: AbortSignal }): AsyncGenerator<OutputPiece> {
    return r.arrival !== undefined ? r.arrival.obj.read(store, o) : readStoredObject(store, oid, o)
  }

  /** Our answer to a challenge over `locker`'s copy of `oid` (stored, or the part that has arrived). */
  async function answerFor (oid: string, r: { arrival?: Arrival }, c: Challenge, signal: AbortSignal): Promise<string> {
    return await answerChallenge(c, (start, end) => bytesOf(readPieces(oid, r, { range: { start, end }, signal })))
  }

  app.post('/v1/lockers', async (request, reply) => {
    await verifyAdminToken(bearer(request), admin)
    const parsed = createBody.safeParse(request.body)
    if (!parsed.success) throw new BadRequestError(`bad locker: ${zodMessage(parsed.error)}`)
    const name = parseLockerName(parsed.data.name)
    const key = await publicKeyFrom(parsed.data.key)
    const quota = parsed.data.quota ?? defaultQuota
    // Quotas are the storage floors: the server promises no more than it has.
    if (db.promised() + quota > capacity.storage) throw new QuotaExceededError(`the server can promise ${Math.max(0, capacity.storage - db.promised())} more bytes of storage, not ${quota}`)
    const row = db.createLocker({ name, weight: parsed.data.weight ?? 1, quota, floor: parsed.data.floor ?? 0, key })
    return await reply.code(201).send({ locker: { name: row.name, weight: row.weight, quota: row.quota, floor: row.floor, kid: key.kid } })
  })

  app.register(async (scope) => {
    // Uploads are streamed into the chunker, never parsed or buffered.
    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', (_request, _payload, done) => done(null))
    scope.put('/v1/lockers/:locker/objects/:oid', async (request, reply) => {
      const params = request.params as { locker: string, oid: string }
      const locker = parseLockerName(params.locker)
      const oid = parseOid(params.oid)
      const seq = headerInt(request, 'berth-seq', Number.MAX_SAFE_INTEGER)
      const ttl = headerInt(request, 'berth-ttl', MAX_TTL, 1)
      const grant = await authorize(request, locker, 'write', oid, seq)
      const { resource } = grant
      db.mustLocker(locker)
      const target: Target = { locker, expiresAt: ttl !== undefined ? Date.now() + ttl * 1000 : null, seq: seq ?? null }
      const declared = headerInt(request, 'content-length', Number.MAX_SAFE_INTEGER)
      const sizeMax = resource?.sizeMax
      if (declared !== undefined && sizeMax !== undefined && declared > sizeMax) throw new TooLargeError(`the upload is ${declared} bytes; the resource token allows ${sizeMax}`)
      const current = liveRef(locker, oid)
      if (current !== undefined) {
        // Held already: the bytes are not needed. Renew the TTL and sequence number — with a
        // token that covers the object as it is held too (a range token must not move an
        // object into its range by renumbering it).
        if (current.seq !== null && seq !== undefined && seq !== current.seq) await authorize(request, locker, 'write', oid, current.seq)
        request.raw.resume()
        db.hold(locker, { oid, size: current.size, seq: seq ?? current.seq, expiresAt: target.expiresAt })
        return await reply.code(200).send({ oid, size: current.size, locker, expiresAt: target.expiresAt })
      }
      const proof = request.headers['berth-proof']
      if (proof !== undefined) {
        // Distribution dedup for uploads: the bytes are here for another locker, and the
        // uploader proved it has them too, so they are linked, not sent.
        request.raw.resume()
        const m1 = typeof proof === 'string' ? /^([A-Za-z0-9_-]{8,64}):([0-9a-f]{64})$/.exec(proof) : null
        if (m1 === null) throw new BadRequestError('Berth-Proof must be "<challenge id>:<64 hex digits>"')
        const c = challenges.get(m1[1])
        // Single use, right or wrong: each guess costs a new challenge with a new nonce.
        challenges.delete(m1[1])
        if (c === undefined || c.expiresAt < Date.now() || c.locker !== locker || c.oid !== oid) throw new ProofError('no such challenge for this object (unknown, used, expired or for another object)')
        if (db.holders(oid) === 0) throw new ProofError('the object is no longer here; upload its bytes')
        if (!sameAnswer(m1[2], await answerFor(oid, {}, c, closing.signal))) throw new ProofError('wrong answer to the challenge')
        if (sizeMax !== undefined && c.size > sizeMax) throw new TooLargeError(`the object is ${c.size} bytes; the resource token allows ${sizeMax}`)
        holdWithin(target, oid, c.size)
        m.linked.inc({ how: 'proof' })
        return await reply.code(201).send({ oid, size: c.size, locker, expiresAt: target.expiresAt, linked: true })
      }
      const share = admit('ingress', locker, grant)
      const t = track({ locker, op: 'put', oid, app: resource?.app ?? 'default' })
      try {
        const signal = AbortSignal.any([closing.signal, abortOnClose(reply)])
        const a = beginArrival(oid, target, declared, undefined)
        const info = await ingest(a, target, request.raw, { declared, sizeMax, signal, flow: share.flow, count: n => { t.bytes += n } })
        return await reply.code(201).send({ oid, size: info.size, locker, expiresAt: target.expiresAt })
      } finally {
        share.close()
        untrack(t)
      }
    })
  })

  // ---- Pull-through caching (issue 5): upstream lockers and foreign origins ----
  const cacheOptions = options.cache
  const cacheLockers = cacheOptions?.lockers !== undefined ? new Set(cacheOptions.lockers.map(parseLockerName)) : undefined
  const isCache = (locker: string): boolean => cacheOptions !== undefined && (cacheLockers === undefined || cacheLockers.has(locker))
  const upstreams = (cacheOptions?.upstreams ?? []).map(e => {
    const p = parsePlace(e)
    if (p.kind !== 'locker' || p.token === undefined) throw new InvalidConfigError(`a cache upstream is a locker:// URI with a read token, not ${e.uri}`)
    return p
  })
  const cacheTtlMs = (cacheOptions?.ttl ?? 86_400) * 1000
  const freshMs = (cacheOptions?.fresh ?? 300) * 1000
  const alto = cacheOptions?.alto !== undefined ? new AltoClient(cacheOptions.alto) : undefined
  /** pulls from upstream in progress, by locker + OID (concurrent GETs share one) */
  const pulls = new Map<string, Promise<NonNullable<ReturnType<typeof readable>>>>()
  /** foreign fetches in progress, by locker + URL */
  const foreignPulls = new Map<string, Promise<string>>()
  let ranking: { at: number, order: Promise<Array<Extract<Place, { kind: 'locker' }>>> } | undefined

  /** The upstreams cheapest first by ALTO endpoint cost from this server (kept 30 s); config order without ALTO or when it fails. */
  async function rankedUpstreams (): Promise<Array<Extract<Place, { kind: 'locker' }>>> {
    if (alto === undefined || upstreams.length < 2) return upstreams
    if (ranking !== undefined && Date.now() - ranking.at < 30_000) return await ranking.order
    const order = (async () => {
      try {
        const ip = async (host: string): Promise<string> => isIP(host) !== 0 ? host : (await lookup(host)).address
        const from = cacheOptions?.from ?? address.host
        const ips = await Promise.all(upstreams.map(async u => await ip(new URL(u.origin).hostname.replace(/^\[(.*)\]$/, '$1'))))
        const [row] = await alto.endpointCost([await ip(from)], [...new Set(ips)], { signal: closing.signal })
        const cost = new Map(row?.ranked.map(r => [r.endpoint.replace(/^ipv[46]:/, ''), r.cost]) ?? [])
        // Upstreams the ALTO server has no cost for come after the ranked ones, in config order.
        return upstreams.map((u, i) => ({ u, c: cost.get(ips[i]!) ?? Infinity, i })).sort((a, b) => a.c - b.c || a.i - b.i).map(x => x.u)
      } catch (err) {
        log?.warn({ err: toBerthError(err).message }, 'ALTO ranking of cache upstreams failed; using config order')
        return upstreams
      }
    })()
    ranking = { at: Date.now(), order }
    return await order
  }

  /** The object's bytes from the first upstream (cheapest first) that answers; one that is down or lacks it is skipped. */
  async function openUpstream (oid: string): Promise<Opened & { place: Place }> {
    const failures: string[] = []
    let missing = 0
    for (const place of await rankedUpstreams()) {
      try {
        return { ...await openSource(place, oid, { peer, signal: closing.signal }), place }
      } catch (err) {
        const cause = (err as { cause?: unknown }).cause
        if (cause !== undefined && toBerthError(cause).status === 404) missing++
        failures.push(toBerthError(err).message)
      }
    }
    if (missing > 0 && missing === failures.length) throw new NotFoundError(`no upstream of this cache holds ${oid}`)
    throw new SourceError(`no upstream of this cache could give ${oid}: ${failures.join('; ')}`)
  }

  /**
   * A cache locker's GET of an object it lacks: fetched once from an upstream (the distribute's
   * fetch path, verified against the OID), held for the cache TTL, readable while it arrives.
   * Resolves once the upstream answered (so the size is known), rejects if none could.
   */
  async function pullThrough (locker: string, oid: string, grant: Awaited<ReturnType<typeof authorize>>): Promise<NonNullable<ReturnType<typeof readable>>> {
    const key = `${locker}\n${oid}`
    const running = pulls.get(key)
    if (running !== undefined) return await running
    const target: Target = { locker, expiresAt: Date.now() + cacheTtlMs, seq: null }
    const a = beginArrival(oid, target, undefined, undefined)
    let opened!: () => void
    const sourceOpened = new Promise<void>(resolve => { opened = resolve })
    const fetched = pull(a, target, async () => {
      const o = await openUpstream(oid)
      a.src = o.place
      opened()
      return o
    }, { grant, count: () => {} })
    fetched.then(() => { log?.info({ locker, oid, from: a.src?.uri }, 'cache pull done') }, (err: unknown) => { log?.warn({ locker, oid, err: toBerthError(err).message }, 'cache pull failed') })
    const known = (async () => {
      await Promise.race([sourceOpened, fetched])
      return { size: a.obj.size, seq: null, arrival: a }
    })()
    pulls.set(key, known)
    fetched.catch(() => {}).finally(() => { if (pulls.get(key) === known) pulls.delete(key) })
    return await known
  }

  /**
   * A foreign resource through a cache locker: fetched once from its origin (stored whole, then
   * named by the OID of its bytes; a URL whose last segment is an OID must hash to it), served
   * from here while fresh, then revalidated with a conditional GET (If-None-Match /
   * If-Modified-Since) — a 304 keeps the copy, new bytes make a new object.
   */
  async function foreignObject (locker: string, place: Place, grant: Awaited<ReturnType<typeof authorize>>): Promise<string> {
    const url = place.uri
    const key = `${locker}\n${url}`
    const running = foreignPulls.get(key)
    if (running !== undefined) return await running
    const row = db.foreign(locker, url)
    const have = row !== undefined && liveRef(locker, row.oid) !== undefined ? row : undefined
    if (have !== undefined && Date.now() - have.checked < freshMs) return have.oid
    const p = (async () => {
      const target: Target = { locker, expiresAt: Date.now() + cacheTtlMs, seq: null }
      const opened = await openSource(place, '', { peer, signal: closing.signal }, {
        ifChanged: have !== undefined && (have.etag !== null || have.modified !== null) ? { etag: have.etag ?? undefined, lastModified: have.modified ?? undefined } : undefined
      })
      if (opened.notModified === true && have !== undefined) {
        const held = mustHold(locker, have.oid)
        db.hold(locker, { oid: have.oid, size: held.size, seq: held.seq, expiresAt: target.expiresAt })
        db.setForeign({ ...have, checked: Date.now() })
        return have.oid
      }
      let named = ''
      try { named = parseOid(decodeURIComponent(new URL(url).pathname.split('/').pop() ?? '')) } catch {}
      const a: Arrival = { obj: new LiveObject(named, undefined), src: place, seq: null, joiners: new Map() }
      a.obj.lockers.add(locker)
      const info = await pull(a, target, async () => opened, { grant, count: () => {} })
      db.setForeign({ locker, url, oid: info.oid, etag: opened.validators?.etag ?? null, modified: opened.validators?.lastModified ?? null, checked: Date.now() })
      log?.info({ locker, url: url.slice(0, 200), oid: info.oid, size: info.size }, 'foreign resource cached')
      return info.oid
    })()
    foreignPulls.set(key, p)
    try { return await p } finally { foreignPulls.delete(key) }
  }

  app.get('/v1/lockers/:locker/cache', { exposeHeadRoute: false }, async (request, reply) => {
    const locker = parseLockerName((request.params as { locker: string }).locker)
    const url = (request.query as Record<string, unknown> | undefined)?.url
    if (typeof url !== 'string' || url === '') throw new BadRequestError('give the foreign resource once, as ?url=<http(s) URL>')
    // Storing a new object for the locker, whose OID nobody knows yet: a token that may read all its objects.
    const grant = await authorize(request, locker, 'read')
    if (grant.access.objects !== 'all') throw new TokenScopeError('a foreign resource needs a read token for all of the locker\'s objects')
    db.mustLocker(locker)
    if (!isCache(locker)) throw new BadRequestError(`locker ${locker} is not a cache on this server`)
    const place = parsePlace(url)
    if (place.kind !== 'http') throw new BadRequestError('a foreign resource is an http:// or https:// URL')
    await checkPlace(place, options.allowPrivatePlaces === true)
    const oid = await foreignObject(locker, place, grant)
    const held = mustHold(locker, oid)
    await authorize(request, locker, 'read', oid, held.seq ?? undefined)
    await serveObject(request, reply, request.method === 'HEAD', { locker, oid, known: { size: held.size, seq: held.seq }, grant })
  })

  /** A read of `…/lockers/{locker}/objects/{oid}…`: the object, once the request's token allows it. */
  async function readRequest (request: FastifyRequest): Promise<{ locker: string, oid: string, known: NonNullable<ReturnType<typeof readable>>, grant: Awaited<ReturnType<typeof authorize>> }> {
    const params = request.params as { locker: string, oid: string }
    const locker = parseLockerName(params.locker)
    const oid = parseOid(params.oid)
    // The sequence number is needed before the token check (range tokens); an unknown object
    // answers the token's error first, so its existence is not told to those without access.
    let known = readable(locker, oid)
    const grant = await authorize(request, locker, 'read', oid, known?.seq ?? undefined)
    // A cache locker fetches what it lacks from its upstreams (once, however many ask).
    if (known === undefined && upstreams.length > 0 && isCache(locker)) {
      db.mustLocker(locker)
      known = readable(locker, oid) ?? await pullThrough(locker, oid, grant)
    }
    if (known === undefined) throw new NotFoundError(`locker ${locker} holds no object ${oid}`)
    return { locker, oid, known, grant }
  }

  async function serveObject (request: FastifyRequest, reply: FastifyReply, head: boolean, resolved?: Awaited<ReturnType<typeof readRequest>>): Promise<void> {
    const { locker, oid, known, grant } = resolved ?? await readRequest(request)
    const { resource } = grant
    const { size } = known
    const etag = `"${oid}"`
    const headers: Record<string, string> = { etag, 'berth-oid': oid, 'content-type': 'application/octet-stream' }
    if (request.headers['if-none-match'] === etag) { await reply.code(304).headers(headers).send(); return }
    // An object still arriving without an announced size streams whole (chunked); ranges need the size.
    let range: ByteRange | undefined
    if (size !== undefined) {
      headers['accept-ranges'] = 'bytes'
      range = rangeOf(request.headers.range, size, reply)
      headers['content-length'] = String(range === undefined ? size : range.end - range.start + 1)
      if (range !== undefined) headers['content-range'] = `bytes ${range.start}-${range.end}/${size}`
    }
    if (head) { await reply.code(range !== undefined ? 206 : 200).headers(headers).send(); return }
    const share = admit('egress', locker, grant)
    const t = track({ locker, op: 'get', oid, app: resource?.app ?? 'default' })
    try {
      const signal = AbortSignal.any([closing.signal, abortOnClose(reply)])
      await sendPieces(reply, range !== undefined ? 206 : 200, headers, paced(readPieces(oid, known, { range, signal }), share.flow, signal, range !== undefined ? range.end - range.start + 1 : size), {
        count: n => { t.bytes += n; m.bytesOut.inc(n) }
      })
    } finally {
      share.close()
      untrack(t)
    }
  }
  // HEAD is its own route: fastify's automatic one would run the GET handler and read the object.
  app.get('/v1/lockers/:locker/objects/:oid', { exposeHeadRoute: false }, async (request, reply) => { await serveObject(request, reply, false) })
  app.head('/v1/lockers/:locker/objects/:oid', async (request, reply) => { await serveObject(request, reply, true) })

  // The object's manifest as the agents' peer API gives it (NDJSON, core/wire.ts), for readers
  // that fetch its chunks by Range and verify each (the agent's locker plugin). The head carries
  // the chunk count, so an object still arriving is described once it is complete; until then a
  // blank line (which readers skip) now and then tells the reader this locker is still there.
  app.get('/v1/lockers/:locker/objects/:oid/manifest', async (request, reply) => {
    const { oid, known } = await readRequest(request)
    const signal = AbortSignal.any([closing.signal, abortOnClose(reply)])
    async function * text (): AsyncGenerator<string> {
      const arriving = known.arrival?.obj.done(signal)
      if (arriving !== undefined) {
        let complete = false
        arriving.then(() => { complete = true }, () => { complete = true })
        while (!complete) {
          yield '\n'
          await Promise.race([arriving.catch(() => {}), sleep(MANIFEST_KEEPALIVE_MS, undefined, { signal })])
        }
        await arriving
      }
      const info = await store.stat(oid)
      if (info === undefined) throw new NotFoundError(`the object ${oid} is no longer on this server`)
      let out = encodeManifestHead({ oid, size: info.size, chunks: info.chunks })
      for await (const d of store.manifest(oid, { signal })) {
        out += encodeDescriptor(d)
        if (out.length >= 64 * 1024) { yield out; out = '' }
      }
      yield out
    }
    return await reply.type(MANIFEST_TYPE).send(Readable.from(text(), { objectMode: false }))
  })

  // Dedup, step 1: an uploader asks whether the bytes are here already; if they are, it gets a
  // challenge (nonce + random ranges) whose answer, sent as Berth-Proof on the PUT, links them.
  app.post('/v1/lockers/:locker/objects/:oid/challenge', async (request, reply) => {
    const params = request.params as { locker: string, oid: string }
    const locker = parseLockerName(params.locker)
    const oid = parseOid(params.oid)
    await authorize(request, locker, 'write', oid)
    db.mustLocker(locker)
    // Every stored object is held by some locker (orphans are released at start).
    const info = db.holders(oid) > 0 ? await store.stat(oid) : undefined
    if (info === undefined) throw new NotFoundError('these bytes are not here: upload them')
    const now = Date.now()
    for (const [id, c] of challenges) { if (c.expiresAt >= now && challenges.size < MAX_CHALLENGES) break; challenges.delete(id) }
    const id = randomUUID()
    const c: IssuedChallenge = { ...newChallenge(info.size), locker, oid, size: info.size, expiresAt: now + CHALLENGE_MS }
    challenges.set(id, c)
    return await reply.code(200).send({ id, nonce: c.nonce, ranges: c.ranges, size: c.size, expiresAt: c.expiresAt })
  })

  // Dedup, the other side: this locker proves to another server that it holds an object.
  app.post('/v1/lockers/:locker/objects/:oid/proof', async (request) => {
    const { oid, known } = await readRequest(request)
    const c = parseChallenge(request.body, known.size ?? known.arrival!.obj.stored)
    return { proof: await answerFor(oid, known, c, closing.signal) }
  })

  /**
   * SAILOR's distribute. The locker comes to hold the object — it does already; or links it from
   * a locker here the requester may read; or, the bytes being here for another locker, links
   * them once `src` proves it holds them; or joins an arrival of the same object; or fetches it
   * from `src` — and, with `dst`, delivers it there, each segment as soon as it is stored.
   */
  app.post('/v1/lockers/:locker/distribute', async (request, reply) => {
    const locker = parseLockerName((request.params as { locker: string }).locker)
    const parsed = distributeBody.safeParse(request.body)
    if (!parsed.success) throw new BadRequestError(`bad distribute: ${zodMessage(parsed.error)}`)
    const oid = parseOid(parsed.data.oid)
    const here = readable(locker, oid)
    const grant = await authorize(request, locker, 'distribute', oid, here?.seq ?? undefined)
    db.mustLocker(locker)
    const src = parsed.data.src !== undefined ? parsePlace(parsed.data.src) : undefined
    const dst = parsed.data.dst !== undefined ? parsePlace(parsed.data.dst) : undefined
    if (dst !== undefined && dst.kind !== 'locker') throw new BadRequestError('dst must be a locker:// URI (with its token)')
    if (src === undefined && dst === undefined) throw new BadRequestError('a distribute needs src, dst or both')
    if (src === undefined && here === undefined) throw new NotFoundError(`locker ${locker} holds no object ${oid}, and no src was given`)
    // Places this server would contact (not its own lockers) must not be internal ones.
    for (const p of [src, dst]) if (p !== undefined && !localLocker(p)) await checkPlace(p, options.allowPrivatePlaces === true)
    // A destination here: its token is checked now, so a refusal is this request's answer.
    if (localLocker(dst)) await verifier.access(dst.token, { locker: dst.locker, op: 'write', oid })
    const target: Target = { locker, expiresAt: parsed.data.ttl !== undefined ? Date.now() + parsed.data.ttl * 1000 : null, seq: here?.seq ?? null }
    const t: TransferStatus = { id: randomUUID(), locker, oid, src: src?.uri, dst: dst?.uri, state: 'running', how: 'none', delivered: 'none', size: here?.size ?? null, bytesIn: 0, bytesOut: 0, startedAt: Date.now(), endedAt: null }
    for (const [id, old] of transfers) {
      if (transfers.size < KEEP_TRANSFERS) break
      if (old.state !== 'running') transfers.delete(id)
    }
    transfers.set(t.id, t)
    // An arrival starts before the answer, so a distribute posted after this one (the next
    // locker of a cascade, another destination) finds the object arriving and joins it.
    let arrival: Arrival | undefined
    // Admission before the answer: a distribute the server cannot take gets its 503 now.
    const fetchShare = here === undefined && arrivals.get(oid) === undefined && db.holders(oid) === 0 ? admit('ingress', locker, grant) : undefined
    let deliverShare: ReturnType<typeof admit> | undefined
    try {
      if (dst !== undefined && !localLocker(dst)) deliverShare = admit('egress', locker, grant)
    } catch (err) { fetchShare?.close(); throw err }
    if (fetchShare !== undefined) arrival = beginArrival(oid, target, undefined, src)
    m.distributes.inc()
    log?.info({ transfer: t.id, locker, oid, src: src?.uri, dst: dst?.uri }, 'distribute started')
    runDistribute(t, { target, here, arrival, src, dst, grant, ttl: parsed.data.ttl, fetchShare, deliverShare })
      .then(() => { t.state = 'done' }, (err: unknown) => {
        const e = toBerthError(err)
        t.state = 'failed'
        t.error = { code: e.code, message: e.message }
      })
      .finally(() => {
        t.endedAt = Date.now()
        m.distributes.dec()
        fetchShare?.close()
        deliverShare?.close()
        const fields = { transfer: t.id, locker, oid, state: t.state, how: t.how, delivered: t.delivered, bytesIn: t.bytesIn, bytesOut: t.bytesOut, ms: t.endedAt - t.startedAt, error: t.error }
        if (t.state === 'failed') log?.warn(fields, 'distribute failed'); else log?.info(fields, 'distribute done')
      })
    return await reply.code(202).send({ transfer: t })
  })

  /**
   * Fills an arrival from a source: chunked, stored, verified against the OID (when it is known)
   * and held by the arrival's locker — the one fetch path of distributes and pull-through caches.
   */
  async function pull (a: Arrival, target: Target, open: () => Promise<Opened>, o: { grant: { access: AccessClaims, resource: ResourceClaims | undefined }, share?: ReturnType<typeof admit>, count: (n: number) => void, onSize?: (n: number) => void }): Promise<ObjectInfo> {
    const { oid } = a.obj
    let share = o.share
    try {
      share ??= admit('ingress', target.locker, o.grant)
      const opened = await open()
      if (opened.size !== undefined) { a.obj.size = opened.size; o.onSize?.(opened.size) }
      return await ingest(a, target, opened.stream, { declared: opened.size, sizeMax: o.grant.resource?.sizeMax, signal: closing.signal, flow: share.flow, count: o.count })
    } catch (err) {
      // Joiners of an arrival that failed before its bytes came are told too.
      a.obj.fail(err)
      for (const j of a.joiners.values()) j.settle(err)
      if (arrivals.get(oid) === a) arrivals.delete(oid)
      throw err
    } finally {
      share?.close()
    }
  }

  interface DistributePlan {
    target: Target
    here: ReturnType<typeof readable>
    /** set when this distribute fetches the object itself */
    arrival: Arrival | undefined
    src: Place | undefined
    dst: Place | undefined
    /** the requester's tokens: its resource token's limits apply to what the distribute moves */
    grant: { access: AccessClaims, resource: ResourceClaims | undefined }
    ttl: number | undefined
    /** shares admitted when the distribute was accepted (closed when used, or at the end) */
    fetchShare: ReturnType<typeof admit> | undefined
    deliverShare: ReturnType<typeof admit> | undefined
  }

  /** A place that is a locker of this very server. */
  function localLocker (p: Place | undefined): p is Extract<Place, { kind: 'locker' }> {
    return p?.kind === 'locker' && p.origin === urlOf(address)
  }

  async function runDistribute (t: TransferStatus, plan: DistributePlan): Promise<void> {
    const { target, src, dst } = plan
    const { oid } = t
    const signal = closing.signal
    const deps = { peer, signal }
    // The object arriving here, whose bytes `dst` may get as they come (only once this
    // distribute's claim on it stands: its own fetch, or the same source as the one fetching).
    let streaming: Arrival | undefined
    let fetching: Promise<unknown> | undefined
    const fetch = (a: Arrival): void => {
      t.how = 'fetch'
      streaming = a
      const share = plan.fetchShare
      plan.fetchShare = undefined
      fetching = pull(a, target, async () => await openSource(src!, oid, deps), { grant: plan.grant, share, count: n => { t.bytesIn += n }, onSize: n => { t.size = n } })
      // Awaited at the end; a delivery that fails first must not leave this failure unhandled.
      fetching.catch(() => {})
    }

    /** The bytes are here (for another locker): link them if `src` may be read or proves it holds them; else fetch. */
    const fromHere = async (): Promise<void> => {
      const size = (await store.stat(oid))?.size
      if (size === undefined || src === undefined) throw new NotFoundError(`locker ${target.locker} holds no object ${oid}`)
      if (localLocker(src)) {
        // A locker here: the requester's token for it decides; no bytes move.
        const held = mustHold(src.locker, oid)
        await verifier.access(src.token, { locker: src.locker, op: 'read', oid, seq: held.seq ?? undefined })
        holdWithin(target, oid, size)
        t.how = 'link'
        m.linked.inc({ how: 'local' })
      } else if (await provePlace(src, oid, newChallenge(size), (s, e) => bytesOf(readStoredObject(store, oid, { range: { start: s, end: e }, signal })), deps)) {
        holdWithin(target, oid, size)
        t.how = 'challenge'
        m.linked.inc({ how: 'challenge' })
      } else {
        // No proof: fetch the bytes like any other (the store keeps one copy of each chunk).
        fetch(beginArrival(oid, target, undefined, src))
        return
      }
      // Told only now: the size of an object this requester could not show it holds is not theirs to know.
      t.size = size
    }

    if (plan.here !== undefined && plan.here.arrival === undefined) {
      t.how = 'held'
    } else if (plan.arrival !== undefined) {
      fetch(plan.arrival)
    } else if (plan.here?.arrival !== undefined || arrivals.get(oid) !== undefined) {
      const a = plan.here?.arrival ?? arrivals.get(oid)!
      if (a.obj.lockers.has(target.locker)) {
        // Arriving for this very locker: wait for it, and deliver as it comes.
        t.how = 'joined'
        streaming = a
        fetching = a.obj.done(signal)
        fetching.catch(() => {})
      } else if (src !== undefined && a.src !== undefined && samePlace(a.src, src)) {
        // The same source with the same credentials: the arrival's claim is this one's, and its
        // bytes are verified against the OID like its own would be. One read of `src` for all.
        t.how = 'joined'
        streaming = a
        const joined = new Promise<void>((resolve, reject) => {
          a.joiners.set(t.id, { target, settle: err => { if (err === undefined) resolve(); else reject(err) } })
        })
        joined.catch(() => {})
        a.obj.lockers.add(target.locker)
        fetching = joined
      } else {
        // Another claim: proved over the whole object once it is here (a prefix proves little).
        if (src === undefined) throw new NotFoundError(`locker ${target.locker} holds no object ${oid}, and no src was given`)
        await a.obj.done(signal).catch(() => { signal.throwIfAborted() })
        if (db.holders(oid) > 0) await fromHere(); else fetch(beginArrival(oid, target, undefined, src))
      }
      if (a.obj.size !== undefined && t.how === 'joined') t.size = a.obj.size
    } else {
      await fromHere()
    }

    if (dst !== undefined) {
      const a = streaming
      const sizeNow = (): number | undefined => a?.obj.size ?? t.size ?? undefined
      const r = { arrival: a }
      if (localLocker(dst)) {
        // A locker here: its token must allow the write; the reference is all that moves.
        await (fetching ?? Promise.resolve())
        await verifier.access(dst.token, { locker: dst.locker, op: 'write', oid })
        holdWithin({ locker: dst.locker, expiresAt: plan.ttl !== undefined ? Date.now() + plan.ttl * 1000 : null, seq: null }, oid, mustHold(target.locker, oid).size)
        t.delivered = 'link'
      } else {
        const share = plan.deliverShare ?? admit('egress', target.locker, plan.grant)
        plan.deliverShare = undefined
        try {
          const stored = await deliver(dst, oid, {
            size: sizeNow(),
            ttl: plan.ttl,
            signal,
            bytes: () => copiesOf(paced(readPieces(oid, r, { signal }), share.flow, signal, sizeNow()), n => { t.bytesOut += n; m.bytesOut.inc(n) }),
            // The far server's challenge is checked like one from any client: bounded ranges within the object.
            prove: async c => await answerFor(oid, r, parseChallenge(c, sizeNow() ?? Number.MAX_SAFE_INTEGER), signal)
          })
          t.delivered = stored.linked === true ? 'link' : 'sent'
        } finally {
          share.close()
        }
      }
    }
    await fetching
  }

  app.get('/v1/lockers/:locker/transfers/:id', async (request) => {
    const params = request.params as { locker: string, id: string }
    const locker = parseLockerName(params.locker)
    await authorize(request, locker, 'distribute')
    const t = transfers.get(params.id)
    if (t === undefined || t.locker !== locker) throw new NotFoundError(`no transfer ${params.id.slice(0, 64)} in locker ${locker}`)
    return { transfer: t }
  })

  app.put('/v1/lockers/:locker/apps/:app', async (request) => {
    const params = request.params as { locker: string, app: string }
    const locker = parseLockerName(params.locker)
    await authorize(request, locker, 'manage')
    if (!/^[\w.-]{1,128}$/.test(params.app)) throw new BadRequestError('an application name is 1–128 of A-Z a-z 0-9 _ . -')
    const parsed = z.object({ weight: z.number().positive().max(1e6) }).strict().safeParse(request.body)
    if (!parsed.success) throw new BadRequestError(`bad application weight: ${zodMessage(parsed.error)}`)
    db.mustLocker(locker)
    db.setAppWeight(locker, params.app, parsed.data.weight)
    return { app: params.app, weight: parsed.data.weight }
  })

  app.delete('/v1/lockers/:locker/objects/:oid', async (request, reply) => {
    const params = request.params as { locker: string, oid: string }
    const locker = parseLockerName(params.locker)
    const oid = parseOid(params.oid)
    await authorize(request, locker, 'delete', oid, db.held(locker, oid)?.seq ?? undefined)
    mustHold(locker, oid)
    await dropReference(locker, oid)
    return await reply.code(204).send()
  })

  app.get('/v1/lockers/:locker/status', async (request) => {
    const locker = parseLockerName((request.params as { locker: string }).locker)
    await authorize(request, locker, 'status')
    const row = db.mustLocker(locker)
    const usage = db.usage(locker)
    const running = [...inFlight].filter(t => t.locker === locker)
    return {
      locker: row.name,
      weight: row.weight,
      floor: row.floor,
      quota: row.quota,
      used: usage.bytes,
      reserved: reserved.get(locker) ?? 0,
      objects: usage.objects,
      apps: db.appWeights(locker),
      // Current shares (bytes/s over about the last second), per direction and application.
      bandwidth: {
        egress: bandwidth.egress.snapshot().users.find(u => u.user === locker) ?? null,
        ingress: bandwidth.ingress.snapshot().users.find(u => u.user === locker) ?? null
      },
      slots: slots.byLocker.get(locker) ?? 0,
      transfers: running.map(t => ({ id: t.id, op: t.op, oid: t.oid, app: t.app, bytes: t.bytes, startedAt: t.startedAt })),
      distributes: [...transfers.values()].filter(t => t.locker === locker && t.state === 'running'),
      list: db.list(locker, 1000)
    }
  })

  app.post('/v1/lockers/:locker/revocations', async (request, reply) => {
    const locker = parseLockerName((request.params as { locker: string }).locker)
    await authorize(request, locker, 'manage')
    const parsed = revokeBody.safeParse(request.body)
    if (!parsed.success) throw new BadRequestError(`bad revocation: ${parsed.error.issues.map(i => i.message).join('; ')}`)
    // Kept until the revoked token would have expired anyway (default: 30 days).
    db.revoke(parsed.data.jti, parsed.data.until ?? Math.floor(Date.now() / 1000) + 30 * 24 * 3600)
    return await reply.code(204).send()
  })

  app.get('/metrics', async (_request, reply) => await reply.type(registry.contentType).send(await registry.metrics()))

  async function sweep (): Promise<number> {
    let n = 0
    for (const { locker, oid } of db.expired(Date.now())) {
      if (await dropReference(locker, oid)) n++
    }
    if (n > 0) log?.info({ expired: n }, 'sweep')
    return n
  }
  let sweeper: NodeJS.Timeout | undefined

  return {
    get url () { return urlOf(address) },
    store,
    db,
    sweep,
    setCapacity (c) {
      checkCapacity(c)
      for (const [k, v] of Object.entries(c)) if (v !== undefined) capacity[k as keyof Capacity] = v
      if (c.egress !== undefined) bandwidth.egress.setCapacity(c.egress)
      if (c.ingress !== undefined) bandwidth.ingress.setCapacity(c.ingress)
    },
    async start () {
      address = await listen(app, address)
      log?.info({ url: urlOf(address), capacity }, 'locker server listening')
      sweeper = setInterval(() => { sweep().catch((err: unknown) => { log?.error({ err: toBerthError(err).message }, 'sweep failed') }) }, options.sweepMs ?? 5000)
      sweeper.unref()
    },
    async stop () {
      closing.abort()
      bandwidth.egress.close()
      bandwidth.ingress.close()
      if (sweeper !== undefined) clearInterval(sweeper)
      await app.close()
      await peer.close()
      await store.close()
      db.close()
    }
  }
}
