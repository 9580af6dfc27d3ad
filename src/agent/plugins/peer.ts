/**
 * Agent-to-agent transfer (`berth://host:port` hints): the manifest over
 * `GET /v1/objects/{oid}/manifest` (undici), chunks in batches over `POST /v1/chunks` through
 * the FrameClient, which reads payloads straight into the transfer's arenas. Several batches are
 * in flight at once over a small pool of keep-alive connections.
 */
import { Pool } from 'undici'
import type { Descriptor } from '../../core/chunker/types.ts'
import type { Hint } from '../../core/hints.ts'
import { SourceError, toBerthError } from '../../core/errors.ts'
import { chunkFrameCid } from '../../core/wire.ts'
import { HttpStatusError, parseErrorBody } from '../../core/http-client.ts'
import { FrameClient } from './frame-client.ts'
import { type ChunkResult, manifestFromBody, type ManifestStream, type PluginCallOptions, type TransferPlugin } from '../plugin.ts'

export interface PeerPluginOptions {
  /** connections per peer; default 4 */
  connections?: number
  /** local address to bind outgoing connections to (multi-path, ALTO regions on loopback) */
  localAddress?: string
  /** give up on a silent peer after this many ms; default 30 s */
  timeoutMs?: number
}

export function peerOrigin (hint: Hint): string {
  const u = new URL(hint.uri)
  return `http://${u.host}`
}

/** A peer's error answer, as the same error the chunk path gives. */
async function failureOf (res: { statusCode: number, body: { text: () => Promise<string> } }): Promise<HttpStatusError> {
  let text = ''
  try { text = await res.body.text() } catch {}
  const { code, message } = parseErrorBody(text)
  return new HttpStatusError(res.statusCode, code, message, 'peer')
}

export class PeerPlugin implements TransferPlugin {
  readonly name = 'peer'
  readonly schemes = ['berth:'] as const
  private readonly pools = new Map<string, Pool>()
  private readonly frameClients = new Map<string, FrameClient>()

  constructor (private readonly options: PeerPluginOptions = {}) {}

  private pool (hint: Hint): Pool {
    const origin = peerOrigin(hint)
    let pool = this.pools.get(origin)
    if (pool === undefined) {
      const timeout = this.options.timeoutMs ?? 30_000
      pool = new Pool(origin, {
        connections: this.options.connections ?? 4,
        pipelining: 1,
        headersTimeout: timeout,
        bodyTimeout: timeout,
        // undici takes the source address here; inside `connect` it is silently ignored (checked).
        localAddress: this.options.localAddress
      })
      this.pools.set(origin, pool)
    }
    return pool
  }

  async manifest (oid: string, hint: Hint, o: PluginCallOptions): Promise<ManifestStream> {
    const res = await this.pool(hint).request({ path: `/v1/objects/${oid}/manifest`, method: 'GET', signal: o.signal })
      .catch(err => { throw new SourceError(`peer ${hint.uri} unreachable: ${toBerthError(err).message}`, { cause: err }) })
    if (res.statusCode !== 200) throw await failureOf(res)
    return await manifestFromBody(res.body, oid)
  }

  private frameClient (hint: Hint): FrameClient {
    const u = new URL(hint.uri)
    let client = this.frameClients.get(u.host)
    if (client === undefined) {
      // URL keeps IPv6 literals bracketed; a socket wants them bare.
      const host = u.hostname.replace(/^\[(.*)\]$/, '$1')
      client = new FrameClient(host, Number(u.port), { connections: this.options.connections ?? 4, localAddress: this.options.localAddress, timeoutMs: this.options.timeoutMs ?? 30_000 })
      this.frameClients.set(u.host, client)
    }
    return client
  }

  async * chunks (wanted: readonly Descriptor[], hint: Hint, o: PluginCallOptions): AsyncIterable<ChunkResult> {
    const byCid = new Map<string, Descriptor>()
    for (const d of wanted) byCid.set(d.cid, d)
    const frames = this.frameClient(hint).post({
      path: '/v1/chunks',
      contentType: 'application/json',
      body: Buffer.from(JSON.stringify({ cids: [...byCid.keys()] })),
      alloc: o.alloc ?? ((n: number) => new Uint8Array(n)),
      signal: o.signal
    })
    const seen = new Set<string>()
    for await (const frame of frames) {
      const cid = chunkFrameCid(frame.header)
      const descriptor = byCid.get(cid)
      if (descriptor === undefined || seen.has(cid)) throw new SourceError('peer sent a chunk that was not asked for')
      seen.add(cid)
      yield { descriptor, bytes: frame.payload }
    }
    for (const [cid, descriptor] of byCid) if (!seen.has(cid)) yield { descriptor, bytes: undefined }
  }

  async close (): Promise<void> {
    await Promise.allSettled([...this.pools.values()].map(async p => await p.close()))
    await Promise.allSettled([...this.frameClients.values()].map(async c => await c.close()))
    this.pools.clear()
    this.frameClients.clear()
  }
}
