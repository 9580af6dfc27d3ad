/**
 * DECADE's client API for a locker server: put (with TTL and sequence number), get (streamed,
 * with Range), head, delete, status, revoke — each with the access token (and optionally the
 * resource token) the locker's owner issued, and an AbortSignal.
 *
 * ```ts
 * const lockers = new LockerClient('http://127.0.0.1:4660')
 * await lockers.put('alice', oid, createReadStream('video.mp4'), { token, ttl: 3600 })
 * const { stream } = await lockers.get('alice', oid, { token, range: { start: 0, end: 1023 } })
 * ```
 */
import { createReadStream } from 'node:fs'
import { Readable } from 'node:stream'
import type { JWK } from 'jose'
import { type Dispatcher, request } from 'undici'
import { answerChallenge, type Challenge } from '../core/proof.ts'
import { errorFrom } from './agent-client.ts'

export interface LockerAuth {
  /** the access token */
  token: string
  /** the resource token bound to it, if any */
  resource?: string
  signal?: AbortSignal
}

export interface BandwidthShare { user: string, weight: number, floor: number, rate: number, flows: number, apps: Array<{ app: string, weight: number, rate: number, flows: number }> }

export interface LockerStatus {
  locker: string
  weight: number
  floor: number
  quota: number
  used: number
  reserved: number
  objects: number
  apps: Array<{ app: string, weight: number }>
  /** current bandwidth shares (bytes/s over about the last second); null: nothing moving */
  bandwidth: { egress: BandwidthShare | null, ingress: BandwidthShare | null }
  /** connection slots in use */
  slots: number
  transfers: Array<{ id: string, op: 'put' | 'get', oid: string, app: string, bytes: number, startedAt: number }>
  distributes: TransferStatus[]
  list: Array<{ oid: string, size: number, seq: number | null, expiresAt: number | null, createdAt: number }>
}

export interface StoredObject { oid: string, size: number, locker: string, expiresAt: number | null, linked?: boolean }

/** A server's challenge: prove you hold the object's bytes (see core/proof.ts). */
export interface IssuedChallenge extends Challenge { id: string, size: number, expiresAt: number }

/** Answers a challenge from bytes this side holds. */
export type Prover = (c: Challenge) => Promise<string>

/** A prover over a local file (the object's bytes). */
export function fileProver (path: string): Prover {
  return async c => await answerChallenge(c, (start, end) => createReadStream(path, { start, end }))
}

/** Where a distribute takes the object from or delivers it to: a URI and the tokens it needs there. */
export interface Endpoint { uri: string, token?: string, resource?: string }

export interface TransferStatus {
  id: string
  locker: string
  oid: string
  src?: string
  dst?: string
  state: 'running' | 'done' | 'failed'
  /** how the locker came to hold the object: 'held' (already did), 'link' (from a locker here),
   * 'challenge' (here already; src proved it holds it), 'joined' (another transfer was bringing it), 'fetch' */
  how: 'held' | 'link' | 'challenge' | 'joined' | 'fetch' | 'none'
  /** how the destination got it: 'sent' (bytes pushed), 'link' (proved, no bytes moved), 'none' */
  delivered: 'sent' | 'link' | 'none'
  size: number | null
  bytesIn: number
  bytesOut: number
  startedAt: number
  endedAt: number | null
  error?: { code: string, message: string }
}

function headers (auth: LockerAuth, extra: Record<string, string> = {}): Record<string, string> {
  const h: Record<string, string> = { authorization: `Bearer ${auth.token}`, ...extra }
  if (auth.resource !== undefined) h['berth-resource'] = auth.resource
  return h
}

export interface LockerClientOptions {
  /** undici dispatcher for every request (connection limits, connect/headers/body timeouts); default undici's global one */
  dispatcher?: Dispatcher
}

/**
 * The error of a non-2xx answer; out-of-resources answers (429/503) carry their Retry-After as
 * `retryAfter` (seconds).
 */
async function failure (res: { statusCode: number, headers: Record<string, string | string[] | undefined>, body: { text: () => Promise<string> } }): Promise<Error> {
  const err = await errorFrom(res.statusCode, res.body, 'locker')
  const retryAfter = Number(res.headers['retry-after'])
  return Number.isFinite(retryAfter) && retryAfter >= 0 ? Object.assign(err, { retryAfter }) : err
}

export class LockerClient {
  readonly url: string
  private readonly dispatcher: Dispatcher | undefined

  constructor (url: string, options: LockerClientOptions = {}) {
    this.url = url.replace(/\/+$/, '')
    this.dispatcher = options.dispatcher
  }

  private objectUrl (locker: string, oid: string): string {
    return `${this.url}/v1/lockers/${encodeURIComponent(locker)}/objects/${encodeURIComponent(oid)}`
  }

  /** A request whose answer is JSON (or 204). `body`: bytes as they are, anything else as JSON. */
  private async json<T> (method: 'GET' | 'POST' | 'PUT' | 'DELETE', url: string, h: Record<string, string>, body?: Uint8Array | Readable | object, signal?: AbortSignal): Promise<T> {
    const raw = body instanceof Uint8Array || body instanceof Readable
    const res = await request(url, {
      method,
      headers: body !== undefined && !raw ? { ...h, 'content-type': 'application/json' } : h,
      body: body === undefined ? undefined : raw ? body : JSON.stringify(body),
      signal,
      dispatcher: this.dispatcher
    })
    if (res.statusCode >= 300) throw await failure(res)
    if (res.statusCode === 204) { await res.body.dump(); return undefined as T }
    return await res.body.json() as T
  }

  /** Creates a locker (needs a token signed with the provider's admin key). */
  async createLocker (adminToken: string, l: { name: string, key: JWK, weight?: number, quota?: number, floor?: number }, signal?: AbortSignal): Promise<{ name: string, weight: number, quota: number, floor: number, kid: string }> {
    const r = await this.json<{ locker: { name: string, weight: number, quota: number, floor: number, kid: string } }>('POST', `${this.url}/v1/lockers`, { authorization: `Bearer ${adminToken}` }, l, signal)
    return r.locker
  }

  /**
   * Stores an object under its OID: the server refuses bytes that do not hash to it. With
   * `prove`, the server is first asked whether it holds the bytes already (for another locker):
   * if so, answering its challenge links them and `body` is never read — no object bytes move.
   */
  async put (locker: string, oid: string, body: Uint8Array | Readable | AsyncIterable<Uint8Array>, o: LockerAuth & { ttl?: number, seq?: number, size?: number, prove?: Prover }): Promise<StoredObject> {
    const extra: Record<string, string> = {}
    if (o.ttl !== undefined) extra['berth-ttl'] = String(o.ttl)
    if (o.seq !== undefined) extra['berth-seq'] = String(o.seq)
    if (o.prove !== undefined) {
      const c = await this.challenge(locker, oid, o)
      if (c !== undefined) {
        try {
          const linked = await this.json<StoredObject>('PUT', this.objectUrl(locker, oid), headers(o, { ...extra, 'berth-proof': `${c.id}:${await o.prove(c)}`, 'content-length': '0' }), undefined, o.signal)
          if (body instanceof Readable) body.destroy()
          return linked
        } catch (err) {
          // No link (a wrong answer, the bytes gone meanwhile): the bytes are sent after all.
          const code = (err as { code?: string }).code
          if (code !== 'ERR_PROOF' && code !== 'ERR_NOT_FOUND' && code !== 'ERR_BAD_REQUEST') throw err
        }
      }
    }
    const size = body instanceof Uint8Array ? body.byteLength : o.size
    if (size !== undefined) extra['content-length'] = String(size)
    const stream = body instanceof Uint8Array || body instanceof Readable ? body : Readable.from(body)
    return await this.json<StoredObject>('PUT', this.objectUrl(locker, oid), headers(o, extra), stream, o.signal)
  }

  /** A challenge for linking an object the server holds already, or undefined when it holds no such bytes. */
  async challenge (locker: string, oid: string, o: LockerAuth): Promise<IssuedChallenge | undefined> {
    try {
      return await this.json<IssuedChallenge>('POST', `${this.objectUrl(locker, oid)}/challenge`, headers(o), undefined, o.signal)
    } catch (err) {
      if ((err as { status?: number }).status === 404) return undefined
      throw err
    }
  }

  /** This locker's answer to a challenge over its copy of the object (needs read access). */
  async proof (locker: string, oid: string, c: Challenge, o: LockerAuth): Promise<string> {
    return (await this.json<{ proof: string }>('POST', `${this.objectUrl(locker, oid)}/proof`, headers(o), c, o.signal)).proof
  }

  /**
   * SAILOR's distribute: the locker takes the object from `src` (another locker, an agent, an
   * HTTP URL; none: it holds the object already) and/or delivers it to `dst` (another locker),
   * forwarding each segment as it arrives. Returns at once with the transfer.
   */
  async distribute (locker: string, d: { oid: string, src?: Endpoint | string, dst?: Endpoint | string, ttl?: number }, o: LockerAuth): Promise<TransferStatus> {
    return (await this.json<{ transfer: TransferStatus }>('POST', `${this.url}/v1/lockers/${encodeURIComponent(locker)}/distribute`, headers(o), d, o.signal)).transfer
  }

  /** A transfer's progress. */
  async transfer (locker: string, id: string, o: LockerAuth): Promise<TransferStatus> {
    return (await this.json<{ transfer: TransferStatus }>('GET', `${this.url}/v1/lockers/${encodeURIComponent(locker)}/transfers/${encodeURIComponent(id)}`, headers(o), undefined, o.signal)).transfer
  }

  /** Polls a transfer until it ends; resolves with its final state (also when it failed). */
  async waitTransfer (locker: string, id: string, o: LockerAuth & { intervalMs?: number, onProgress?: (t: TransferStatus) => void }): Promise<TransferStatus> {
    for (;;) {
      const t = await this.transfer(locker, id, o)
      o.onProgress?.(t)
      if (t.state !== 'running') return t
      await new Promise<void>((resolve, reject) => {
        const onAbort = (): void => { clearTimeout(timer); reject(o.signal!.reason) }
        const timer = setTimeout(() => { o.signal?.removeEventListener('abort', onAbort); resolve() }, o.intervalMs ?? 200)
        o.signal?.addEventListener('abort', onAbort, { once: true })
      })
    }
  }

  /**
   * The object's bytes (or a range of them, inclusive) as a stream. `range`: the bytes the answer
   * carries when it is a range (an object still arriving without a known size comes whole).
   */
  async get (locker: string, oid: string, o: LockerAuth & { range?: { start: number, end?: number } }): Promise<{ stream: Readable, size: number, length: number, range?: { start: number, end: number } }> {
    const extra: Record<string, string> = {}
    if (o.range !== undefined) extra.range = `bytes=${o.range.start}-${o.range.end ?? ''}`
    const res = await request(this.objectUrl(locker, oid), { method: 'GET', headers: headers(o, extra), signal: o.signal, dispatcher: this.dispatcher })
    if (res.statusCode >= 300) throw await failure(res)
    const length = Number(res.headers['content-length'])
    const contentRange = res.headers['content-range']
    const m = typeof contentRange === 'string' && res.statusCode === 206 ? /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(contentRange) : null
    const size = typeof contentRange === 'string' ? Number(contentRange.split('/')[1]) : length
    return { stream: res.body as unknown as Readable, size, length, range: m !== null ? { start: Number(m[1]), end: Number(m[2]) } : undefined }
  }

  /**
   * The object's manifest as the agents' peer API gives it (NDJSON: a head line, then one
   * descriptor per line; see core/wire.ts). For an object still arriving the head comes once it
   * is complete; blank lines keep the answer alive meanwhile.
   */
  async manifest (locker: string, oid: string, o: LockerAuth): Promise<Readable> {
    const res = await request(`${this.objectUrl(locker, oid)}/manifest`, { method: 'GET', headers: headers(o), signal: o.signal, dispatcher: this.dispatcher })
    if (res.statusCode >= 300) throw await failure(res)
    return res.body as unknown as Readable
  }

  /** The object's size, or undefined when the locker does not hold it. */
  async head (locker: string, oid: string, o: LockerAuth): Promise<{ size: number } | undefined> {
    const res = await request(this.objectUrl(locker, oid), { method: 'HEAD', headers: headers(o), signal: o.signal, dispatcher: this.dispatcher })
    await res.body.dump()
    if (res.statusCode === 404) return undefined
    if (res.statusCode >= 300) throw await failure({ ...res, body: { text: async () => '' } })
    return { size: Number(res.headers['content-length']) }
  }

  /** Drops this locker's reference (DECADE's delete); the bytes go when no locker holds them. */
  async delete (locker: string, oid: string, o: LockerAuth): Promise<void> {
    await this.json<undefined>('DELETE', this.objectUrl(locker, oid), headers(o), undefined, o.signal)
  }

  /** DECADE's Status_Query. */
  async status (locker: string, o: LockerAuth): Promise<LockerStatus> {
    return await this.json<LockerStatus>('GET', `${this.url}/v1/lockers/${encodeURIComponent(locker)}/status`, headers(o), undefined, o.signal)
  }

  /** Sets an application's weight in the locker (SAILOR's per-application shares; needs `manage`). */
  async setAppWeight (locker: string, app: string, weight: number, o: LockerAuth): Promise<void> {
    await this.json<unknown>('PUT', `${this.url}/v1/lockers/${encodeURIComponent(locker)}/apps/${encodeURIComponent(app)}`, headers(o), { weight }, o.signal)
  }

  /** Revokes a token by its id (needs a token with the `manage` operation). */
  async revoke (locker: string, jti: string, o: LockerAuth & { until?: number }): Promise<void> {
    await this.json<undefined>('POST', `${this.url}/v1/lockers/${encodeURIComponent(locker)}/revocations`, headers(o), { jti, until: o.until }, o.signal)
  }
}
