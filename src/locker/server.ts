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
import { mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { JWK } from 'jose'
import { Counter, Gauge, Registry } from 'prom-client'
import { z } from 'zod'
import { BadRequestError, NotFoundError, QuotaExceededError, toBerthError, TooLargeError } from '../core/errors.ts'
import { type HashPool, sharedHashPool } from '../core/hash-pool.ts'
import { parseOid } from '../core/naming.ts'
import type { ByteRange } from '../core/range.ts'
import { type AccessClaims, parseLockerName, publicKeyFrom, type ResourceClaims, TokenVerifier, type TokenOp, verifyAdminToken } from '../core/tokens.ts'
import { abortOnClose, createHttpServer, type ListenAddress, listen, parseListen, rangeOf, urlOf } from '../agent/http.ts'
import { putObject } from '../agent/put.ts'
import { readStoredObject } from '../agent/read.ts'
import { sendPieces } from '../agent/send.ts'
import { openStore } from '../store/index.ts'
import type { ChunkStore } from '../store/types.ts'
import { LockerDb } from './db.ts'

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
}

export interface LockerServer {
  readonly url: string
  readonly store: ChunkStore
  readonly db: LockerDb
  start (): Promise<void>
  stop (): Promise<void>
  /** drops references whose TTL ran out and frees their bytes; returns how many (also runs on a timer) */
  sweep (): Promise<number>
}

interface InFlight { id: string, locker: string, op: 'put' | 'get', oid: string, app: string, bytes: number, startedAt: number }

const DEFAULT_LISTEN = '127.0.0.1:4660'
const MAX_TTL = 10 * 365 * 24 * 3600

const createBody = z.object({
  name: z.string(),
  key: z.unknown(),
  weight: z.number().positive().max(1e6).optional(),
  quota: z.number().int().nonnegative().optional()
}).strict()

const revokeBody = z.object({ jti: z.string().min(1).max(128), until: z.number().int().positive().optional() }).strict()

function bearer (request: FastifyRequest): string | undefined {
  const h = request.headers.authorization
  if (h === undefined) return undefined
  const m = /^Bearer\s+(\S+)\s*$/i.exec(h)
  if (m === null) throw new BadRequestError('Authorization must be "Bearer <token>"')
  return m[1]
}

function headerInt (request: FastifyRequest, name: string, max: number, min = 0): number | undefined {
  const v = request.headers[name]
  if (v === undefined) return undefined
  if (typeof v !== 'string' || !/^\d{1,15}$/.test(v) || Number(v) > max || Number(v) < min) throw new BadRequestError(`${name} must be an integer from ${min} to ${max}`)
  return Number(v)
}

export async function createLockerServer (options: LockerServerOptions): Promise<LockerServer> {
  const admin = (await publicKeyFrom(options.adminKey)).jwk
  const pool = options.pool ?? sharedHashPool()
  if (options.dir !== undefined) await mkdir(options.dir, { recursive: true })
  const store = await openStore(options.dir !== undefined ? { kind: 'disk', dir: join(options.dir, 'store'), pool } : { kind: 'memory', pool })
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

  const registry = new Registry()
  const m = {
    bytesIn: new Counter({ name: 'berth_locker_bytes_in_total', help: 'object bytes uploaded', registers: [registry] }),
    bytesOut: new Counter({ name: 'berth_locker_bytes_out_total', help: 'object bytes served', registers: [registry] }),
    objectsStored: new Counter({ name: 'berth_locker_objects_stored_total', help: 'uploads committed', registers: [registry] }),
    denied: new Counter({ name: 'berth_locker_requests_denied_total', help: 'requests refused, by error code', labelNames: ['code'], registers: [registry] }),
    inFlight: new Gauge({ name: 'berth_locker_transfers_in_flight', help: 'uploads and downloads in progress', registers: [registry] })
  }

  // A crash between a store commit and the reference that follows it leaves an object nobody
  // holds: released here, so usage always equals what the references account for.
  {
    const held = db.heldOids()
    const orphans: string[] = []
    for await (const o of store.objects()) if (!held.has(o.oid)) orphans.push(o.oid)
    for (const oid of orphans) await store.release(oid)
    if (orphans.length > 0) await store.gc()
  }

  const app = createHttpServer()
  let address: ListenAddress = parseListen(options.listen ?? DEFAULT_LISTEN)

  app.addHook('onError', async (_request, _reply, error) => { m.denied.inc({ code: toBerthError(error).code }) })

  /** The request's tokens, checked for `op` on `oid` of `locker`. */
  async function authorize (request: FastifyRequest, locker: string, op: TokenOp, oid?: string, seq?: number): Promise<{ access: AccessClaims, resource: ResourceClaims | undefined }> {
    const token = bearer(request)
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

  /** Frees a reference's bytes when no locker holds the object any more. */
  async function dropReference (locker: string, oid: string): Promise<boolean> {
    const left = db.drop(locker, oid)
    used.delete(locker)
    if (left === -1) return false
    if (left === 0) { await store.release(oid); await store.gc() }
    return true
  }

  /** The reference a request may see: absent or expired is 404. */
  function live (locker: string, oid: string): { size: number, seq: number | null } {
    const h = db.held(locker, oid)
    if (h === undefined || (h.expiresAt !== null && h.expiresAt <= Date.now())) throw new NotFoundError(`locker ${locker} holds no object ${oid}`)
    return h
  }

  app.post('/v1/lockers', async (request, reply) => {
    await verifyAdminToken(bearer(request), admin)
    const parsed = createBody.safeParse(request.body)
    if (!parsed.success) throw new BadRequestError(`bad locker: ${parsed.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
    const name = parseLockerName(parsed.data.name)
    const key = await publicKeyFrom(parsed.data.key)
    const row = db.createLocker({ name, weight: parsed.data.weight ?? 1, quota: parsed.data.quota ?? defaultQuota, key })
    return await reply.code(201).send({ locker: { name: row.name, weight: row.weight, quota: row.quota, kid: key.kid } })
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
      const { resource } = await authorize(request, locker, 'write', oid, seq)
      const row = db.mustLocker(locker)
      const expiresAt = ttl !== undefined ? Date.now() + ttl * 1000 : null
      const declared = headerInt(request, 'content-length', Number.MAX_SAFE_INTEGER)
      const sizeMax = resource?.sizeMax
      if (declared !== undefined && sizeMax !== undefined && declared > sizeMax) throw new TooLargeError(`the upload is ${declared} bytes; the resource token allows ${sizeMax}`)
      const current = db.held(locker, oid)
      if (current !== undefined && (current.expiresAt === null || current.expiresAt > Date.now())) {
        // Held already: the bytes are not needed. Renew the TTL and sequence number.
        request.raw.resume()
        db.hold(locker, { oid, size: current.size, seq: seq ?? current.seq, expiresAt })
        return await reply.code(200).send({ oid, size: current.size, locker, expiresAt })
      }
      const take = (n: number): void => {
        const total = usedBy(locker) + (reserved.get(locker) ?? 0) + n
        if (total > row.quota) throw new QuotaExceededError(`locker ${locker} is over its quota of ${row.quota} bytes`)
        reserved.set(locker, (reserved.get(locker) ?? 0) + n)
      }
      if (declared !== undefined) take(declared)
      let taken = declared ?? 0
      const t = track({ locker, op: 'put', oid, app: resource?.app ?? 'default' })
      // Counts every byte; an upload longer than announced, or past sizeMax or the quota, stops here.
      async function * metered (source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
        for await (const chunk of source) {
          t.bytes += chunk.byteLength
          if (sizeMax !== undefined && t.bytes > sizeMax) throw new TooLargeError(`the upload exceeds the resource token's sizeMax of ${sizeMax} bytes`)
          if (t.bytes > taken) { take(t.bytes - taken); taken = t.bytes }
          m.bytesIn.inc(chunk.byteLength)
          yield chunk
        }
      }
      try {
        const signal = AbortSignal.any([closing.signal, abortOnClose(reply)])
        const info = await putObject({ stream: metered(request.raw) }, store, pool, { expect: oid, signal })
        // The object exists in the store; now this locker holds it (the order a crash respects).
        db.hold(locker, { oid, size: info.size, seq: seq ?? null, expiresAt })
        used.delete(locker)
        m.objectsStored.inc()
        return await reply.code(201).send({ oid, size: info.size, locker, expiresAt })
      } finally {
        reserved.set(locker, (reserved.get(locker) ?? 0) - taken)
        untrack(t)
      }
    })
  })

  async function serveObject (request: FastifyRequest, reply: FastifyReply, head: boolean): Promise<void> {
    const params = request.params as { locker: string, oid: string }
    const locker = parseLockerName(params.locker)
    const oid = parseOid(params.oid)
    // The sequence number is needed before the token check (range tokens); an unknown object
    // answers the token's error first, so its existence is not told to those without access.
    const known = db.held(locker, oid)
    const { resource } = await authorize(request, locker, 'read', oid, known?.seq ?? undefined)
    const { size } = live(locker, oid)
    const etag = `"${oid}"`
    const headers: Record<string, string> = { etag, 'accept-ranges': 'bytes', 'content-type': 'application/octet-stream' }
    if (request.headers['if-none-match'] === etag) { await reply.code(304).headers(headers).send(); return }
    const range: ByteRange | undefined = rangeOf(request.headers.range, size, reply)
    headers['content-length'] = String(range === undefined ? size : range.end - range.start + 1)
    if (range !== undefined) headers['content-range'] = `bytes ${range.start}-${range.end}/${size}`
    if (head) { await reply.code(range !== undefined ? 206 : 200).headers(headers).send(); return }
    const t = track({ locker, op: 'get', oid, app: resource?.app ?? 'default' })
    try {
      const signal = AbortSignal.any([closing.signal, abortOnClose(reply)])
      await sendPieces(reply, range !== undefined ? 206 : 200, headers, readStoredObject(store, oid, { range, signal }), {
        count: n => { t.bytes += n; m.bytesOut.inc(n) }
      })
    } finally {
      untrack(t)
    }
  }
  // HEAD is its own route: fastify's automatic one would run the GET handler and read the object.
  app.get('/v1/lockers/:locker/objects/:oid', { exposeHeadRoute: false }, async (request, reply) => { await serveObject(request, reply, false) })
  app.head('/v1/lockers/:locker/objects/:oid', async (request, reply) => { await serveObject(request, reply, true) })

  app.delete('/v1/lockers/:locker/objects/:oid', async (request, reply) => {
    const params = request.params as { locker: string, oid: string }
    const locker = parseLockerName(params.locker)
    const oid = parseOid(params.oid)
    await authorize(request, locker, 'delete', oid, db.held(locker, oid)?.seq ?? undefined)
    live(locker, oid)
    await dropReference(locker, oid)
    return await reply.code(204).send()
  })

  app.get('/v1/lockers/:locker/status', async (request) => {
    const locker = parseLockerName((request.params as { locker: string }).locker)
    await authorize(request, locker, 'status')
    const row = db.mustLocker(locker)
    const usage = db.usage(locker)
    const transfers = [...inFlight].filter(t => t.locker === locker)
    return {
      locker: row.name,
      weight: row.weight,
      quota: row.quota,
      used: usage.bytes,
      reserved: reserved.get(locker) ?? 0,
      objects: usage.objects,
      transfers: transfers.map(t => ({ id: t.id, op: t.op, oid: t.oid, app: t.app, bytes: t.bytes, startedAt: t.startedAt })),
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
    return n
  }
  let sweeper: NodeJS.Timeout | undefined

  return {
    get url () { return urlOf(address) },
    store,
    db,
    sweep,
    async start () {
      address = await listen(app, address)
      sweeper = setInterval(() => { sweep().catch(() => {}) }, options.sweepMs ?? 5000)
      sweeper.unref()
    },
    async stop () {
      closing.abort()
      if (sweeper !== undefined) clearInterval(sweeper)
      await app.close()
      await store.close()
      db.close()
    }
  }
}
