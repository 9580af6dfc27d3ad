/**
 * The agent (DOT's GTC): the local transfer service on a host. Two listeners:
 *  - the local API (applications ↔ agent, loopback by default): put, get, done, status, metrics;
 *  - the peer API (agent ↔ agent): manifests and batched chunk requests.
 * Everything it stores lives in one ChunkStore, shared by every application: an object or chunk
 * already here is never fetched again.
 */
import { realpath } from 'node:fs/promises'
import { hostname, networkInterfaces } from 'node:os'
import { isAbsolute, resolve, sep } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Readable } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify'
import { BadRequestError, NotFoundError, PathNotAllowedError, UnsupportedSchemeError, toBerthError } from '../core/errors.ts'
import { type Hint, parseHint, uniqueHints } from '../core/hints.ts'
import { type HashPool, sharedHashPool } from '../core/hash-pool.ts'
import { parseOid } from '../core/naming.ts'
import type { ByteRange } from '../core/range.ts'
import { parseChunkerSpec, type ChunkerSpec } from '../core/chunker/index.ts'
import {
  CHUNK_FRAMES_TYPE, MANIFEST_TYPE, MISSING, OFFSET_FRAMES_TYPE,
  encodeChunkHeader, encodeDescriptor, encodeManifestHead, encodeOffsetHeader, parseChunkRequest
} from '../core/wire.ts'
import { openStore } from '../store/index.ts'
import type { ChunkStore } from '../store/types.ts'
import { createAgentMetrics, type AgentMetrics } from './metrics.ts'
import { type AnyPlugin, PluginRegistry } from './plugin.ts'
import { buildPipeline, type PluginSpec } from './pipeline.ts'
import { putObject } from './put.ts'
import { readStoredObject } from './read.ts'
import { type OutputPiece, Transfer } from './transfer.ts'
import { abortOnClose, createHttpServer, type ListenAddress, listen, parseListen, rangeOf, urlOf } from './http.ts'
import { sendPieces, type SendPiece } from './send.ts'
import { type AgentOverlay, linkOverlay } from './overlay.ts'

export interface AgentOptions {
  /** local API address; default 127.0.0.1:4650 (port 0 picks a free one) */
  listen?: string
  /** peer API address; default 127.0.0.1:4651 */
  peerListen?: string
  /** host:port other agents should use to reach the peer API (default: the bound address) */
  advertise?: string
  /** store directory (disk store); absent → in-memory store */
  storeDir?: string
  /** an already open store (tests, `berth start` sharing one store) */
  store?: ChunkStore
  /**
   * directories `POST /v1/objects?path=` may read from; default: the agent's working directory
   * only — the local API has no authentication, so anyone who can reach it may ask for any file
   * under these roots with the agent's permissions. Clients fall back to sending the bytes.
   */
  allowedRoots?: string[]
  /** default chunker for puts; default cdc */
  chunker?: ChunkerSpec
  /** plugins ahead of the pipeline (the first plugin to name a scheme serves its hints) */
  plugins?: AnyPlugin[]
  /**
   * the plugin pipeline, as the config file's `plugins` gives it (see pipeline.ts); default: a
   * multipath plugin over peer, HTTP-mirror, portable-storage and locker plugins
   */
  pipeline?: PluginSpec[]
  /** bind outgoing peer connections to this local address (default pipeline) */
  localAddress?: string
  pool?: HashPool
  /** collect process metrics (one agent per process) */
  processMetrics?: boolean
  /**
   * an overlay node (src/overlay/registry.ts; see ./overlay.ts): a get with no hints for an
   * object not stored here takes hints from recent object-available events, else asks the DHT
   * (file: hints from either are ignored); with announceReplica/publish, every object put here
   * or fetched by a get is announced as a replica and published as object-available
   */
  overlay?: AgentOverlay
}

export interface Agent {
  readonly url: string
  readonly peerUrl: string
  /** the hint that points other agents here */
  readonly selfHint: Hint
  readonly store: ChunkStore
  readonly metrics: AgentMetrics
  start (): Promise<void>
  stop (): Promise<void>
}

const DEFAULT_LISTEN = '127.0.0.1:4650'
const DEFAULT_PEER_LISTEN = '127.0.0.1:4651'

function firstExternalAddress (): string {
  for (const list of Object.values(networkInterfaces())) {
    for (const a of list ?? []) if (a.family === 'IPv4' && !a.internal) return a.address
  }
  return hostname()
}

function parseHints (query: unknown): Hint[] {
  const raw = (query as { hint?: unknown }).hint
  const list = raw === undefined ? [] : Array.isArray(raw) ? raw : [raw]
  if (list.length > 64) throw new BadRequestError('at most 64 hints')
  return uniqueHints(list.map(h => parseHint(h)))
}

function parseOrder (query: unknown): 'ordered' | 'any' {
  const order = (query as { order?: unknown }).order
  if (order === undefined || order === 'ordered') return 'ordered'
  if (order === 'any') return 'any'
  throw new BadRequestError('order must be "ordered" or "any"')
}

/** `?urgent=0`: the get may wait for busy or down lockers rather than fall back to the peer (SAILOR). */
function parseUrgent (query: unknown): boolean {
  const urgent = (query as { urgent?: unknown }).urgent
  if (urgent === undefined || urgent === '1' || urgent === 'true') return true
  if (urgent === '0' || urgent === 'false') return false
  throw new BadRequestError('urgent must be 1 or 0')
}

interface ChunkFrame extends SendPiece { cid: string, missing?: boolean }
const NOTHING = new Uint8Array(0)

export async function createAgent (options: AgentOptions = {}): Promise<Agent> {
  const pool = options.pool ?? sharedHashPool()
  const ownsStore = options.store === undefined
  const store = options.store ?? await openStore(options.storeDir !== undefined ? { kind: 'disk', dir: options.storeDir, pool } : { kind: 'memory', pool })
  const metrics = createAgentMetrics({ processMetrics: options.processMetrics })
  const plugins = new PluginRegistry([...(options.plugins ?? []), ...buildPipeline(options.pipeline, { localAddress: options.localAddress })])
  const defaultChunker = options.chunker ?? { kind: 'cdc' }
  const roots = await Promise.all((options.allowedRoots ?? [process.cwd()]).map(async r => await realpath(resolve(r)).catch(() => resolve(r))))
  const transfers = new Set<Transfer>()
  const closing = new AbortController()

  const local = createHttpServer()
  const peer = createHttpServer({ bodyLimit: 256 * 1024 })
  let localAddress: ListenAddress = parseListen(options.listen ?? DEFAULT_LISTEN)
  let peerAddress: ListenAddress = parseListen(options.peerListen ?? DEFAULT_PEER_LISTEN)
  let selfHint: Hint = { uri: '', priority: 0, weight: 1 }
  const overlay = options.overlay !== undefined ? linkOverlay(options.overlay, () => selfHint) : undefined

  async function allowedPath (path: unknown): Promise<string> {
    if (typeof path !== 'string' || path.length === 0 || path.length > 4096 || !isAbsolute(path)) throw new BadRequestError('path must be an absolute file path')
    let real: string
    try {
      real = await realpath(path)
    } catch (err) {
      throw toBerthError(err)
    }
    // The real path (symlinks and `..` resolved) must lie under an allowed root.
    if (!roots.some(r => real === r || real.startsWith(r.endsWith(sep) ? r : r + sep))) throw new PathNotAllowedError(`path is outside the directories this agent may read (${roots.join(', ')})`)
    return real
  }

  /**
   * A `file:` hint names a directory the agent will read (and watch): like `put ?path=`, only
   * under the allowed roots or a configured portable disk — the local API has no authentication.
   * The directory may not exist yet (a disk not yet mounted), so a missing path is judged as given.
   */
  async function checkFileHints (hints: Hint[]): Promise<void> {
    const disks = plugins.standingHints().map(h => fileURLToPath(h.uri))
    for (const h of hints) {
      if (!h.uri.startsWith('file:')) continue
      const given = fileURLToPath(h.uri)
      const real = await realpath(given).catch(() => resolve(given))
      const under = (root: string): boolean => real === root || real.startsWith(root.endsWith(sep) ? root : root + sep)
      if (!roots.some(under) && !disks.some(under)) throw new PathNotAllowedError(`${h.uri} is outside the directories this agent may read (${[...roots, ...disks].join(', ')})`)
    }
  }

  /** Local API: applications ↔ agent. */
  function localRoutes (app: FastifyInstance): void {
    // Uploads are streamed into the chunker, never parsed or buffered.
    app.register(async (scope) => {
      scope.removeAllContentTypeParsers()
      scope.addContentTypeParser('*', (_request, _payload, done) => done(null))
      scope.post('/v1/objects', async (request: FastifyRequest, reply: FastifyReply) => {
        const query = request.query as { path?: unknown, chunker?: unknown }
        const chunker = query.chunker === undefined ? defaultChunker : parseChunkerSpec(String(query.chunker))
        const signal = AbortSignal.any([closing.signal, abortOnClose(reply)])
        let info
        if (query.path !== undefined) {
          const path = await allowedPath(query.path)
          // The body is unused: drain it so the connection stays usable.
          request.raw.resume()
          info = await putObject({ path }, store, pool, { chunker, signal })
        } else {
          info = await putObject({ stream: request.raw }, store, pool, { chunker, signal })
        }
        metrics.objectsPut.inc()
        metrics.bytesPut.inc(info.size)
        // Pushing plugins (portable disk, the owner's locker) start their copies now; the hints
        // they give come first, this agent after them (SAILOR: lockers before end hosts).
        const pushed = plugins.objectAdded({ oid: info.oid, size: info.size, chunks: info.chunks }, store)
        const self = pushed.length === 0 ? selfHint : { ...selfHint, priority: Math.max(...pushed.map(h => h.priority)) + 1 }
        overlay?.stored(info, self, pushed, closing.signal)
        return await reply.code(201).send({ oid: info.oid, size: info.size, chunks: info.chunks, hints: [...pushed, self] })
      })
    })

    app.get('/v1/objects/:oid', async (request, reply) => {
      const oid = parseOid((request.params as { oid: string }).oid)
      let hints = parseHints(request.query)
      await checkFileHints(hints)
      const order = parseOrder(request.query)
      const rangeHeader = request.headers.range
      const signal = AbortSignal.any([closing.signal, abortOnClose(reply)])
      let size: number
      let pieces: AsyncIterable<OutputPiece>
      let range: ByteRange | undefined
      const stored = await store.stat(oid)
      if (stored !== undefined) {
        size = stored.size
        range = rangeOf(rangeHeader, size, reply)
        pieces = readStoredObject(store, oid, { range, signal })
      } else {
        // No hint given: the overlay may know where the object is (recent events, else its DHT).
        const fromOverlay = hints.length === 0 && overlay !== undefined
        if (fromOverlay) hints = await overlay.hints(oid, signal)
        // Configured portable disks are searched for every get, hinted or not.
        const standing = plugins.standingHints()
        if (hints.length === 0 && standing.length === 0) throw new NotFoundError(`${oid} is not stored here and no hint says where it is`)
        const usable = hints.filter(h => plugins.has(h))
        if (usable.length === 0 && standing.length === 0) throw new UnsupportedSchemeError(`no transfer plugin here serves ${[...new Set(hints.map(h => new URL(h.uri).protocol))].join(' ')} hints`)
        // The size is needed to check the Range, so the manifest head is fetched first.
        const urgent = parseUrgent(request.query)
        const begin = async (from: Hint[]): Promise<{ transfer: Transfer, size: number }> => {
          const transfer = new Transfer(oid, from, { store, pool, plugins, metrics }, { signal, order, urgent })
          try {
            return { transfer, ...await transfer.start() }
          } catch (err) {
            // Nobody will read this transfer's output: stop it, or it fetches a window for nothing.
            await transfer.cancel(err)
            throw err
          }
        }
        let started: { transfer: Transfer, size: number }
        try {
          started = await begin(usable)
        } catch (err) {
          // Hints from a recent event that no longer hold (that agent has gone): the DHT may know others.
          const more = fromOverlay ? (await overlay.afterStale(oid, hints, signal)).filter(h => plugins.has(h)) : []
          if (more.length === 0) throw err
          started = await begin(more)
        }
        const { transfer } = started
        size = started.size
        try {
          range = rangeOf(rangeHeader, size, reply)
        } catch (err) {
          await transfer.cancel(err)
          throw err
        }
        // The whole object is still fetched for a range: only the whole verifies against the OID.
        if (range !== undefined) transfer.clipTo(range)
        transfers.add(transfer)
        pieces = (async function * () {
          try {
            yield * transfer.output()
            // the output ends only once the object is verified and committed: it is stored here now
            overlay?.stored({ oid, size }, selfHint, [], closing.signal)
          } finally { transfers.delete(transfer) }
        })()
      }
      const headers: Record<string, string> = { etag: `"${oid}"`, 'accept-ranges': 'bytes', 'berth-size': String(size) }
      if (order === 'any') headers['content-type'] = OFFSET_FRAMES_TYPE
      else {
        headers['content-type'] = 'application/octet-stream'
        headers['content-length'] = String(range === undefined ? size : range.end - range.start + 1)
      }
      if (range !== undefined) headers['content-range'] = `bytes ${range.start}-${range.end}/${size}`
      const header = order === 'any' ? (p: OutputPiece) => encodeOffsetHeader(p.offset, p.bytes.byteLength) : undefined
      await sendPieces(reply, range !== undefined ? 206 : 200, headers, pieces, { header, count: n => metrics.bytesServed.inc({ api: 'local' }, n) })
    })

    app.delete('/v1/objects/:oid', async (request, reply) => {
      const oid = parseOid((request.params as { oid: string }).oid)
      if (!await store.release(oid)) throw new NotFoundError(`${oid} is not stored here`)
      return await reply.code(204).send()
    })

    app.get('/v1/objects', async (request) => {
      const limit = Number((request.query as { limit?: unknown }).limit ?? 1000)
      if (!Number.isInteger(limit) || limit < 1 || limit > 100000) throw new BadRequestError('limit must be an integer from 1 to 100000')
      const objects = []
      for await (const o of store.objects()) { objects.push(o); if (objects.length >= limit) break }
      return { objects }
    })

    app.get('/v1/status', async () => ({
      agent: { url: urlOf(localAddress), peer: urlOf(peerAddress), hint: selfHint },
      usage: await store.usage(),
      transfers: [...transfers].map(t => ({ id: t.id, oid: t.oid, size: t.size, fetched: t.bytesFetched, sent: t.bytesOut, startedAt: t.startedAt })),
      // What the pipeline did (multipath: requests, borrowed copies, copies that came second).
      plugins: plugins.plugins.map(p => ({ name: p.name, ...('stats' in p ? { stats: p.stats } : {}) })),
      ...(overlay !== undefined ? { overlay: { ...overlay.stats, recentObjects: overlay.recent.size } } : {})
    }))

    app.get('/metrics', async (_request, reply) => {
      return await reply.type(metrics.registry.contentType).send(await metrics.registry.metrics())
    })
  }

  /** Peer API: agent ↔ agent. */
  function peerRoutes (app: FastifyInstance): void {
    app.get('/v1/objects/:oid/manifest', async (request, reply) => {
      const oid = parseOid((request.params as { oid: string }).oid)
      const info = await store.stat(oid)
      if (info === undefined) throw new NotFoundError(`${oid} is not stored here`)
      const signal = abortOnClose(reply)
      async function * lines (): AsyncGenerator<string> {
        yield encodeManifestHead({ oid, size: info!.size, chunks: info!.chunks })
        let batch = ''
        for await (const d of store.manifest(oid, { signal })) {
          batch += encodeDescriptor(d)
          if (batch.length > 64 * 1024) { yield batch; batch = '' }
        }
        if (batch.length > 0) yield batch
      }
      return await reply.type(MANIFEST_TYPE).send(Readable.from(lines(), { objectMode: false }))
    })

    app.post('/v1/chunks', async (request, reply) => {
      const cids = parseChunkRequest(request.body)
      const signal = abortOnClose(reply)
      // Chunks are lent by the store and go to the socket without a copy.
      async function * frames (): AsyncGenerator<ChunkFrame> {
        let i = 0
        while (i < cids.length) {
          try {
            for await (const chunk of store.borrowMany(cids.slice(i), { signal })) {
              i++
              yield chunk
            }
          } catch (err) {
            if (signal.aborted) throw err
            // Missing here, or failed verification (and dropped): say so, go on with the rest.
            yield { cid: cids[i], bytes: NOTHING, missing: true }
            i++
          }
        }
      }
      await sendPieces(reply, 200, { 'content-type': CHUNK_FRAMES_TYPE }, frames(), {
        header: f => encodeChunkHeader(f.cid, f.missing === true ? MISSING : f.bytes.byteLength),
        count: n => metrics.bytesServed.inc({ api: 'peer' }, n)
      })
    })

    app.get('/v1/info', async () => ({ service: 'berth-agent', hint: selfHint }))
  }

  localRoutes(local)
  peerRoutes(peer)

  const agent: Agent = {
    get url () { return urlOf(localAddress) },
    get peerUrl () { return urlOf(peerAddress) },
    get selfHint () { return selfHint },
    store,
    metrics,
    async start () {
      localAddress = await listen(local, localAddress)
      peerAddress = await listen(peer, peerAddress)
      let advertised = options.advertise
      if (advertised === undefined) {
        const host = peerAddress.host === '0.0.0.0' || peerAddress.host === '::' ? firstExternalAddress() : peerAddress.host
        advertised = `${host.includes(':') ? `[${host}]` : host}:${peerAddress.port}`
      }
      selfHint = parseHint(`berth://${advertised}`)
    },
    async stop () {
      closing.abort()
      overlay?.close()
      await Promise.allSettled([local.close(), peer.close(), overlay?.settle()])
      await plugins.close()
      if (ownsStore) await store.close()
    }
  }
  return agent
}
