/**
 * The ALTO-guided content portal (DECADE's integration example): a publisher uploads a file, the
 * portal stores it in N locker servers and publishes a download URL; a user opening that URL is
 * redirected (302) to the locker nearest to the user's address by ALTO endpoint cost, with a
 * short-lived read token for that one object.
 *
 *   GET  /                          upload page (plain HTML)
 *   POST /v1/objects[?name=N]       the bytes (streamed) → 201 {oid, size, name, url, page, replicas}
 *   GET  /v1/objects/{oid}          what the portal knows of the object (name, size, replicas)
 *   GET  /v1/objects/{oid}/where    {locker, url, token, cost, skipped}: where this client should download from
 *   GET  /d/{oid}                   302 → <locker>/v1/lockers/{locker}/objects/{oid}?token=…
 *   GET  /d/{oid}?page=1            download page (plain HTML)
 *
 * Upload: the body is spooled to a temporary file while it is hashed (the locker API names an
 * object by its OID, which is known only at the end; nothing is held in memory), then PUT to the
 * first locker of the replication policy that takes it; every other replica *pulls* it from that
 * one with a locker-to-locker `distribute` (SAILOR), falling back to a PUT from the spool when
 * the distribute fails (a locker that may not reach private addresses, say). Lockers that are
 * down or refuse (503, 429, …) are skipped and the next one of the policy is tried.
 *
 * Replication policy (which N lockers): demand is taken to come from every PID of the ALTO
 * network map alike (weights per PID can be given as `demand`). Lockers are picked greedily so
 * that the demand-weighted cost from each PID to its nearest chosen locker is smallest
 * (k-median): the first pick is the locker cheapest on average, each next one the locker that
 * brings most PIDs closer. Remaining lockers follow in that greedy order as fallbacks.
 *
 * Download: the user's address is the socket's remote address (`trustProxy` to take
 * X-Forwarded-For instead). The lockers holding the object are ranked by ALTO endpoint cost from
 * that address (those ALTO has no cost for come last, in configuration order; without ALTO,
 * configuration order). Each is probed in turn with a 1-byte ranged GET carrying the freshly
 * issued token, under a short timeout: a HEAD would not do, because a locker's admission control
 * (503 when it cannot guarantee a floor) acts on GETs only. The first that answers is the one
 * redirected to.
 */
import { createHash } from 'node:crypto'
import { createReadStream, createWriteStream } from 'node:fs'
import { mkdtemp, rm } from 'node:fs/promises'
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { pipeline } from 'node:stream/promises'
import { Transform } from 'node:stream'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { JWK } from 'jose'
import type { Logger } from 'pino'
import { Agent, request as undiciRequest } from 'undici'
import { BadRequestError, BerthError, InvalidConfigError, NotFoundError } from '../../core/errors.ts'
import { cidFromDigest, parseOid } from '../../core/naming.ts'
import { issueAccessToken, publicKeyFrom, type SigningKey } from '../../core/tokens.ts'
import { createHttpServer, type ListenAddress, listen, parseListen, urlOf } from '../../agent/http.ts'
import { AltoClient } from '../../sdk/alto-client.ts'
import { LockerClient } from '../../sdk/locker-client.ts'
import { downloadPage, uploadPage } from './pages.ts'
import { TOPICS } from '../topics.ts'
import type { OverlayEvent } from '../registry.ts'

export interface PortalLocker {
  /** a label for logs and answers; default the locker name @ host */
  name?: string
  /** the locker server, http://host:port */
  url: string
  /** the locker on it */
  locker: string
  /** the locker owner's private key (Ed25519 JWK, or a loaded SigningKey): the portal issues tokens with it */
  ownerKey: JWK | SigningKey
  /** the address ALTO knows the server by; default the URL's host (resolved when it is a name) */
  address?: string
}

export interface PortalOptions {
  /** HTTP address, HOST:PORT; default 127.0.0.1:4680 */
  listen?: string
  /** the ALTO server's URL (its directory) */
  alto: string
  lockers: PortalLocker[]
  /** copies of each object; default 2 (at most the number of lockers) */
  replicas?: number
  /** demand weight per PID for the replication policy; default 1 for every PID */
  demand?: Record<string, number>
  /** lifetime of the read tokens handed to downloaders, seconds; default 300 */
  tokenTtl?: number
  /** how long a locker may take to answer a probe before it is skipped, ms; default 1500 */
  probeTimeoutMs?: number
  /** the URL the portal publishes (behind a proxy, say); default its listen URL */
  publicUrl?: string
  /** take the client's address from X-Forwarded-For; default false */
  trustProxy?: boolean
  /** where uploads are spooled while hashed; default the OS temp dir */
  spoolDir?: string
  logger?: Logger
  /**
   * An overlay node (started by the caller): the portal registers itself as service `portal`
   * and announces it (`service-change`) at start, publishes `object-available` {oid, size, hints}
   * after each upload, and listens to `locker-status` events {locker, state: up|down|busy}: a
   * locker reported down or busy is skipped for redirects and placement without probing, until
   * an `up` event or `lockerStatusTtlMs`.
   */
  overlay?: PortalOverlay
  /** how long a down/busy report holds without a newer event, ms; default 30000 */
  lockerStatusTtlMs?: number
}

/** What the portal needs of an overlay node (OverlayNode satisfies it). */
export interface PortalOverlay {
  publish (topic: string, event: OverlayEvent): Promise<void>
  subscribe (topic: string, handler: (event: OverlayEvent, from: string) => void): () => void
  putService? (name: string, urls: string[], options?: { signal?: AbortSignal }): Promise<number>
}

/** `via`: how the copy got there — uploaded by the portal ('put') or pulled from the first copy ('distribute') */
export interface Replica { name: string, url: string, locker: string, via?: 'put' | 'distribute' }

export interface UploadResult { oid: string, size: number, name?: string, url: string, page: string, replicas: Replica[], skipped: Array<{ name: string, reason: string }> }

export interface Where { oid: string, locker: string, name: string, url: string, token: string, cost: number | null, skipped: Array<{ name: string, reason: string }> }

export interface Portal {
  readonly url: string
  start (): Promise<void>
  stop (): Promise<void>
  /** the replica order the policy gives (names of lockers), best first */
  placement (): Promise<string[]>
  /** where a client at `address` should download `oid` from (what /d/{oid} redirects to) */
  where (oid: string, address: string): Promise<Where>
}

interface Known { size: number, name?: string, replicas: Set<number> }

const DEFAULT_LISTEN = '127.0.0.1:4680'

async function signingKey (k: JWK | SigningKey): Promise<SigningKey> {
  if ('privateJwk' in k && 'publicJwk' in k) return k as SigningKey
  const jwk = k as JWK
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.d !== 'string' || typeof jwk.x !== 'string') throw new InvalidConfigError('a locker\'s ownerKey must be a private Ed25519 JWK')
  const { jwk: publicJwk, kid } = await publicKeyFrom(jwk)
  return { privateJwk: { kty: 'OKP', crv: 'Ed25519', x: jwk.x, d: jwk.d }, publicJwk, kid }
}

/** `::ffff:1.2.3.4` → `1.2.3.4`. */
function plainAddress (a: string): string {
  return a.startsWith('::ffff:') && isIP(a.slice(7)) === 4 ? a.slice(7) : a
}

function reasonOf (err: unknown): string {
  const e = err as { code?: string, status?: number, message?: string, cause?: { code?: string } }
  const code = e.cause?.code ?? e.code ?? 'error'
  return `${code}${e.status !== undefined ? ` (${e.status})` : ''}: ${(e.message ?? String(err)).slice(0, 160)}`
}

export async function createPortal (options: PortalOptions): Promise<Portal> {
  if (options.lockers.length === 0) throw new InvalidConfigError('a portal needs at least one locker')
  const replicas = Math.min(options.replicas ?? 2, options.lockers.length)
  if (!Number.isInteger(replicas) || replicas < 1) throw new InvalidConfigError('replicas must be a positive integer')
  const tokenTtl = options.tokenTtl ?? 300
  const probeTimeoutMs = options.probeTimeoutMs ?? 1500
  const log = options.logger
  const alto = new AltoClient(options.alto)
  // Probes and redirects must not wait behind a locker that hangs: short connect and header timeouts.
  const dispatcher = new Agent({ connect: { timeout: probeTimeoutMs }, headersTimeout: probeTimeoutMs, bodyTimeout: 0, keepAliveTimeout: 1000 })
  const lockers = await Promise.all(options.lockers.map(async (l, i) => {
    const url = l.url.replace(/\/+$/, '')
    let u: URL
    try { u = new URL(url) } catch { throw new InvalidConfigError(`locker ${i}: bad url ${JSON.stringify(l.url)}`) }
    const host = u.hostname.replace(/^\[|\]$/g, '')
    const address = l.address ?? (isIP(host) !== 0 ? host : (await lookup(host)).address)
    return {
      index: i,
      name: l.name ?? `${l.locker}@${u.host}`,
      url,
      locker: l.locker,
      key: await signingKey(l.ownerKey),
      address,
      client: new LockerClient(url, { dispatcher }),
      uri: `locker://${u.host}/${l.locker}`,
      objectUrl: (oid: string) => `${url}/v1/lockers/${encodeURIComponent(l.locker)}/objects/${encodeURIComponent(oid)}`
    }
  }))
  type L = typeof lockers[number]
  const names = new Set(lockers.map(l => l.name))
  if (names.size !== lockers.length) throw new InvalidConfigError('locker names must be distinct')
  const known = new Map<string, Known>()

  // ── locker-status events ──────────────────────────────────────────────────────────────────
  const statusTtlMs = options.lockerStatusTtlMs ?? 30_000
  /** lockers reported down/busy: index → {state, until (ms)} */
  const reported = new Map<number, { state: 'down' | 'busy', until: number, from: string }>()
  /** A locker matches its name, its URL (with or without the locker path) or its locker:// URI. */
  const lockerOf = (ref: string): L | undefined => {
    const r = ref.replace(/\/+$/, '')
    return lockers.find(l => l.name === r || l.url === r || l.uri === r || `${l.url}/v1/lockers/${encodeURIComponent(l.locker)}` === r)
  }
  /** Why the events say l must not be used now; undefined when nothing says so. */
  const reportedDown = (l: L): string | undefined => {
    const s = reported.get(l.index)
    if (s === undefined) return undefined
    if (Date.now() >= s.until) { reported.delete(l.index); return undefined }
    return `reported ${s.state} (locker-status event from ${s.from})`
  }
  function onLockerStatus (event: OverlayEvent, from: string): void {
    if (typeof event.locker !== 'string') return
    const l = lockerOf(event.locker)
    if (l === undefined) return
    const state = event.state
    if (state === 'up') reported.delete(l.index)
    else if (state === 'down' || state === 'busy') reported.set(l.index, { state, until: Date.now() + statusTtlMs, from: from !== '' ? from : String(event.from ?? '?') })
    else return
    log?.info({ locker: l.name, state, from }, 'locker-status event')
  }
  const token = async (l: L, oid: string, ops: Array<'read' | 'write' | 'distribute'>, ttl = 600): Promise<string> =>
    await issueAccessToken(l.key, { locker: l.locker, ops, objects: { oids: [oid] }, ttlSeconds: ttl })

  // ── replication policy ────────────────────────────────────────────────────────────────────
  /** Lockers in the order the policy fills replicas: greedy k-median over the PIDs' demand. */
  async function placement (): Promise<L[]> {
    let costs: number[][]
    let weights: number[]
    try {
      const map = await alto.networkMap()
      const pids = Object.entries(map['network-map'])
      // One address standing for each PID: the first address of its first block (longest-prefix
      // matching puts it in that PID unless a longer block of another PID covers it).
      const reps: Array<{ pid: string, address: string }> = []
      for (const [pid, blocks] of pids) {
        const block = blocks.ipv4?.[0] ?? blocks.ipv6?.[0]
        if (block !== undefined) reps.push({ pid, address: block.split('/')[0]! })
      }
      if (reps.length === 0) throw new BerthError('ERR_ALTO', 'the network map has no PIDs', 502)
      const ranked = await alto.endpointCost(reps.map(r => r.address), lockers.map(l => l.address))
      const worst = Math.max(1, ...ranked.flatMap(r => r.ranked.map(e => e.cost))) * 10
      costs = ranked.map(r => lockers.map(l => r.ranked.find(e => e.endpoint.endsWith(`:${l.address}`))?.cost ?? worst))
      weights = reps.map(r => options.demand?.[r.pid] ?? 1)
    } catch (err) {
      log?.warn({ err: reasonOf(err) }, 'ALTO unavailable; replicas in configuration order')
      return [...lockers]
    }
    const chosen: L[] = []
    const best = weights.map(() => Infinity)
    while (chosen.length < lockers.length) {
      let pick: L | undefined
      let pickTotal = Infinity
      for (const l of lockers) {
        if (chosen.includes(l)) continue
        let total = 0
        for (let p = 0; p < weights.length; p++) total += weights[p]! * Math.min(best[p]!, costs[p]![l.index]!)
        if (total < pickTotal) { pick = l; pickTotal = total }
      }
      chosen.push(pick!)
      for (let p = 0; p < weights.length; p++) best[p] = Math.min(best[p]!, costs[p]![pick!.index]!)
    }
    return chosen
  }

  // ── upload ────────────────────────────────────────────────────────────────────────────────
  async function upload (body: NodeJS.ReadableStream, name: string | undefined, base: string, signal: AbortSignal): Promise<UploadResult> {
    const dir = await mkdtemp(join(options.spoolDir ?? tmpdir(), 'berth-portal-'))
    try {
      const file = join(dir, 'object')
      const hash = createHash('sha256')
      let size = 0
      await pipeline(body, new Transform({
        transform (chunk: Buffer, _enc, done) { hash.update(chunk); size += chunk.length; done(null, chunk) }
      }), createWriteStream(file), { signal })
      const oid = cidFromDigest(hash.digest())
      const order = await placement()
      const stored: L[] = []
      const via = new Map<L, 'put' | 'distribute'>()
      const skipped: Array<{ name: string, reason: string }> = []
      const put = async (l: L): Promise<void> => {
        await l.client.put(l.locker, oid, createReadStream(file), { token: await token(l, oid, ['write']), size, signal })
      }
      for (const l of order) {
        if (stored.length >= replicas) break
        const down = reportedDown(l)
        if (down !== undefined) { skipped.push({ name: l.name, reason: down }); continue }
        try {
          if (stored.length === 0) { await put(l); via.set(l, 'put') }
          else {
            const src = stored[0]!
            try {
              const t = await l.client.distribute(l.locker, { oid, src: { uri: src.uri, token: await token(src, oid, ['read']) } }, { token: await token(l, oid, ['write', 'distribute', 'read']), signal })
              const done = t.state === 'running' ? await l.client.waitTransfer(l.locker, t.id, { token: await token(l, oid, ['distribute', 'read']), signal, intervalMs: 50 }) : t
              if (done.state !== 'done') throw new BerthError(done.error?.code ?? 'ERR_DISTRIBUTE', done.error?.message ?? 'distribute failed', 502)
              via.set(l, 'distribute')
            } catch (err) {
              if (signal.aborted) throw err
              log?.info({ locker: l.name, err: reasonOf(err) }, 'distribute failed; uploading the copy instead')
              await put(l)
              via.set(l, 'put')
            }
          }
          stored.push(l)
        } catch (err) {
          if (signal.aborted) throw err
          skipped.push({ name: l.name, reason: reasonOf(err) })
          log?.warn({ locker: l.name, oid, err: reasonOf(err) }, 'locker skipped for a replica')
        }
      }
      if (stored.length === 0) throw new BerthError('ERR_NO_LOCKER', `no locker took the object (${skipped.map(s => `${s.name}: ${s.reason}`).join('; ')})`, 503)
      const k = known.get(oid) ?? { size, replicas: new Set<number>() }
      if (name !== undefined) k.name = name
      for (const l of stored) k.replicas.add(l.index)
      known.set(oid, k)
      log?.info({ oid, size, replicas: stored.map(l => l.name) }, 'object published')
      if (options.overlay !== undefined) {
        const hints = lockers.filter(l => k.replicas.has(l.index)).map(l => l.uri)
        options.overlay.publish(TOPICS.objectAvailable, { type: 'object-available', oid, size: k.size, hints, portal: base })
          .catch(err => log?.warn({ oid, err: reasonOf(err) }, 'object-available not published'))
      }
      return {
        oid,
        size,
        ...(k.name !== undefined ? { name: k.name } : {}),
        url: `${base}/d/${oid}`,
        page: `${base}/d/${oid}?page=1`,
        replicas: stored.map(l => ({ name: l.name, url: l.url, locker: l.locker, via: via.get(l) })),
        skipped
      }
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  }

  // ── download ──────────────────────────────────────────────────────────────────────────────
  async function rank (candidates: L[], address: string): Promise<Array<{ l: L, cost: number | null }>> {
    try {
      const [r] = await alto.endpointCost([address], candidates.map(l => l.address))
      const out: Array<{ l: L, cost: number | null }> = []
      for (const e of r!.ranked) {
        for (const l of candidates) if (`${e.endpoint}` === `ipv${isIP(l.address)}:${l.address}` && !out.some(o => o.l === l)) out.push({ l, cost: e.cost })
      }
      for (const l of candidates) if (!out.some(o => o.l === l)) out.push({ l, cost: null })
      return out
    } catch (err) {
      log?.warn({ err: reasonOf(err) }, 'ALTO unavailable; lockers in configuration order')
      return candidates.map(l => ({ l, cost: null }))
    }
  }

  /** Whether the locker serves the object now: a 1-byte GET with the token (admission acts on GETs). */
  async function probe (l: L, oid: string, t: string): Promise<string | undefined> {
    try {
      const res = await undiciRequest(l.objectUrl(oid), {
        method: 'GET',
        headers: { authorization: `Bearer ${t}`, range: 'bytes=0-0' },
        dispatcher,
        signal: AbortSignal.timeout(probeTimeoutMs)
      })
      await res.body.dump().catch(() => {})
      // 416: an empty object (no byte 0) — it is there.
      if (res.statusCode === 200 || res.statusCode === 206 || res.statusCode === 416) return undefined
      return `answered ${res.statusCode}`
    } catch (err) {
      return reasonOf(err)
    }
  }

  async function where (oid: string, address: string): Promise<Where> {
    oid = parseOid(oid)
    address = plainAddress(address)
    const k = known.get(oid)
    // An object this portal did not publish (or published before a restart): any locker may hold it.
    const candidates = k !== undefined ? lockers.filter(l => k.replicas.has(l.index)) : lockers
    const skipped: Array<{ name: string, reason: string }> = []
    for (const { l, cost } of await rank(candidates, address)) {
      const down = reportedDown(l)
      if (down !== undefined) { skipped.push({ name: l.name, reason: down }); continue }
      const t = await token(l, oid, ['read'], tokenTtl)
      const why = await probe(l, oid, t)
      if (why === undefined) return { oid, locker: l.locker, name: l.name, url: `${l.objectUrl(oid)}?token=${encodeURIComponent(t)}`, token: t, cost, skipped }
      skipped.push({ name: l.name, reason: why })
      log?.info({ oid, locker: l.name, reason: why }, 'locker skipped for a download')
    }
    if (k === undefined && skipped.every(s => s.reason === 'answered 404')) throw new NotFoundError(`no locker of this portal holds ${oid}`)
    throw new BerthError('ERR_NO_LOCKER', `no locker can serve ${oid} now (${skipped.map(s => `${s.name}: ${s.reason}`).join('; ')})`, 503)
  }

  // ── HTTP ──────────────────────────────────────────────────────────────────────────────────
  let address: ListenAddress = parseListen(options.listen ?? DEFAULT_LISTEN)
  const app = createHttpServer({ trustProxy: options.trustProxy === true })
  const baseOf = (): string => (options.publicUrl ?? urlOf(address)).replace(/\/+$/, '')
  const clientAddress = (request: FastifyRequest): string => plainAddress(options.trustProxy === true ? request.ip : (request.socket.remoteAddress ?? request.ip))

  app.get('/', async (_request, reply) => await reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(uploadPage()))

  app.register(async scope => {
    // The body is the object: streamed to the spool, never parsed or buffered.
    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', (_request, _payload, done) => { done(null) })
    scope.post('/v1/objects', async (request, reply) => {
      const q = request.query as Record<string, unknown>
      const name = q.name
      if (name !== undefined && (typeof name !== 'string' || name.length > 255 || /[\u0000-\u001f]/.test(name))) throw new BadRequestError('name must be one string of at most 255 characters')
      const controller = new AbortController()
      reply.raw.once('close', () => { if (!reply.raw.writableFinished) controller.abort() })
      const r = await upload(request.raw, name === '' ? undefined : name as string | undefined, baseOf(), controller.signal)
      return await reply.code(201).header('location', r.url).send(r)
    })
  })

  app.get('/v1/objects/:oid', async (request) => {
    const oid = parseOid((request.params as { oid: string }).oid)
    const k = known.get(oid)
    if (k === undefined) throw new NotFoundError(`this portal published no object ${oid}`)
    return { oid, size: k.size, name: k.name, url: `${baseOf()}/d/${oid}`, replicas: lockers.filter(l => k.replicas.has(l.index)).map(l => ({ name: l.name, url: l.url, locker: l.locker })) }
  })

  app.get('/v1/objects/:oid/where', async (request, reply) => {
    const w = await where((request.params as { oid: string }).oid, clientAddress(request))
    return await reply.header('cache-control', 'no-store').send(w)
  })

  app.get('/d/:oid', async (request: FastifyRequest, reply: FastifyReply) => {
    const oid = parseOid((request.params as { oid: string }).oid)
    const q = request.query as Record<string, unknown>
    if (q.page !== undefined) {
      const k = known.get(oid)
      return await reply.type('text/html; charset=utf-8').header('cache-control', 'no-store').send(downloadPage({ oid, name: k?.name, size: k?.size, download: `${baseOf()}/d/${oid}` }))
    }
    const w = await where(oid, clientAddress(request))
    // The token is for this user only and short-lived: no cache may keep the redirect.
    return await reply.code(302).header('location', w.url).header('cache-control', 'no-store').header('berth-locker', w.name).send()
  })

  let started = false
  let unsubscribe: (() => void) | undefined
  let registering: { abort: AbortController, done: Promise<void> } | undefined
  return {
    get url () { return baseOf() },
    async start () {
      address = await listen(app, address)
      started = true
      log?.info({ url: baseOf(), lockers: lockers.map(l => l.name), replicas }, 'portal listening')
      const overlay = options.overlay
      if (overlay !== undefined) {
        unsubscribe = overlay.subscribe(TOPICS.lockerStatus, onLockerStatus)
        const urls = [baseOf()]
        // In the background: registration must not keep the portal from serving (a node with no
        // peer yet waits out its lookup timeout, 10 s); stop() cuts it short.
        const abort = new AbortController()
        registering = {
          abort,
          done: (async () => {
            try {
              const stored = await overlay.putService?.('portal', urls, { signal: abort.signal })
              log?.info({ urls, stored }, 'portal registered in the overlay')
            } catch (err) {
              log?.warn({ err: reasonOf(err) }, 'portal not registered in the overlay')
            }
            await overlay.publish(TOPICS.serviceChange, { type: 'service-change', service: 'portal', urls })
              .catch(err => log?.warn({ err: reasonOf(err) }, 'service-change not published'))
          })()
        }
      }
    },
    async stop () {
      unsubscribe?.()
      unsubscribe = undefined
      if (registering !== undefined) {
        registering.abort.abort()
        await registering.done
        registering = undefined
      }
      if (started) await app.close()
      started = false
      await dispatcher.close().catch(() => {})
    },
    async placement () { return (await placement()).map(l => l.name) },
    where
  }
}
