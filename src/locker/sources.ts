/**
 * The far ends of a distribute: where a locker server takes an object from (another locker, an
 * agent, any HTTP server) and where it delivers it (another locker). Each source gives the
 * object's bytes in order as a stream; the server chunks, stores and verifies them against the
 * OID itself, so a source can be wrong but never believed.
 */
import { lookup } from 'node:dns/promises'
import { isIP } from 'node:net'
import { Readable } from 'node:stream'
import { request } from 'undici'
import type { Descriptor } from '../core/chunker/types.ts'
import { BadRequestError, PlaceNotAllowedError, SourceError, toBerthError, UnsupportedSchemeError } from '../core/errors.ts'
import type { Hint } from '../core/hints.ts'
import { parseLockerName } from '../core/tokens.ts'
import { answerChallenge, type Challenge, sameAnswer } from '../core/proof.ts'
import type { PeerPlugin } from '../agent/plugins/peer.ts'
import { type Endpoint, LockerClient, type StoredObject } from '../sdk/locker-client.ts'

export type Place =
  | { kind: 'locker', uri: string, origin: string, locker: string, token?: string, resource?: string }
  | { kind: 'http', uri: string }
  | { kind: 'agent', uri: string, hint: Hint }

/** `locker://host:port/name` (+ tokens), `berth://host:port` (an agent) or `http(s)://…`. */
export function parsePlace (e: Endpoint | string): Place {
  const ep: Endpoint = typeof e === 'string' ? { uri: e } : e
  let u: URL
  try { u = new URL(ep.uri) } catch { throw new BadRequestError(`not a URI: ${JSON.stringify(ep.uri).slice(0, 200)}`) }
  if (u.protocol === 'locker:') {
    if (u.host === '') throw new BadRequestError('a locker URI is locker://host:port/<locker>')
    const name = decodeURIComponent(u.pathname.replace(/^\/+/, '').replace(/\/+$/, ''))
    return { kind: 'locker', uri: ep.uri, origin: `http://${u.host}`, locker: parseLockerName(name), token: ep.token, resource: ep.resource }
  }
  if (u.protocol === 'berth:') {
    if (u.host === '') throw new BadRequestError('an agent URI is berth://host:port')
    return { kind: 'agent', uri: ep.uri, hint: { uri: ep.uri, priority: 0, weight: 1 } }
  }
  if (u.protocol === 'http:' || u.protocol === 'https:') return { kind: 'http', uri: ep.uri }
  throw new UnsupportedSchemeError(`a distribute goes from or to locker://, berth:// or http(s):// URIs, not ${u.protocol}`)
}

/** Loopback, private (RFC 1918, CGNAT, ULA), link-local and unspecified addresses. */
function internal (address: string): boolean {
  const v4 = /^(?:::ffff:)?(\d+)\.(\d+)\.(\d+)\.(\d+)$/i.exec(address)
  if (v4 !== null) {
    const [a, b] = [Number(v4[1]), Number(v4[2])]
    return a === 0 || a === 10 || a === 127 || (a === 169 && b === 254) || (a === 172 && b >= 16 && b < 32) || (a === 192 && b === 168) || (a === 100 && b >= 64 && b < 128)
  }
  const v6 = address.toLowerCase()
  return v6 === '::' || v6 === '::1' || /^f[cd]/.test(v6) || /^fe[89ab]/.test(v6)
}

/**
 * Refuses a place whose host is, or resolves to, an internal address: a tenant must not make
 * the server fetch from (or prove against) what sits behind it — the agent's local API on the
 * same host, internal services. (The address is checked, not pinned: a name that resolves
 * differently a moment later is not caught; single-host setups pass `allow`.)
 */
export async function checkPlace (p: Place, allow: boolean): Promise<void> {
  if (allow) return
  const host = new URL(p.uri).hostname.replace(/^\[(.*)\]$/, '$1')
  let addresses: string[]
  try {
    addresses = isIP(host) !== 0 ? [host] : (await lookup(host, { all: true })).map(a => a.address)
  } catch (err) {
    throw new SourceError(`cannot resolve ${host}: ${toBerthError(err).message}`, { cause: err })
  }
  if (addresses.some(internal)) throw new PlaceNotAllowedError(`${p.uri} is on an internal address; this server does not reach those (allowPrivatePlaces / --allow-private-places)`)
}

/** Two places are the same claim when they name the same bytes with the same credentials. */
export function samePlace (a: Place, b: Place): boolean {
  if (a.kind !== b.kind || a.uri !== b.uri) return false
  return a.kind !== 'locker' || (b.kind === 'locker' && a.token === b.token && a.resource === b.resource)
}

export interface Opened {
  size: number | undefined
  stream: AsyncIterable<Uint8Array>
  /** an HTTP source's validators, for a conditional request later (pull-through caches) */
  validators?: Validators
  /** the conditional request found the copy we have still current (HTTP 304): no bytes */
  notModified?: boolean
}

/** What an HTTP origin said identifies its bytes: revalidated with If-None-Match / If-Modified-Since. */
export interface Validators { etag?: string, lastModified?: string }

export interface SourceDeps { peer: PeerPlugin, signal: AbortSignal }

function lockerClient (p: Extract<Place, { kind: 'locker' }>): LockerClient { return new LockerClient(p.origin) }
function auth (p: Extract<Place, { kind: 'locker' }>, signal: AbortSignal): { token: string, resource?: string, signal: AbortSignal } {
  if (p.token === undefined) throw new BadRequestError(`${p.uri} needs a token`)
  return { token: p.token, resource: p.resource, signal }
}

/** The object's bytes from a place, in order. */
export async function openSource (p: Place, oid: string, d: SourceDeps, o: { ifChanged?: Validators } = {}): Promise<Opened> {
  try {
    if (p.kind === 'locker') {
      const got = await lockerClient(p).get(p.locker, oid, auth(p, d.signal))
      return { size: Number.isSafeInteger(got.size) ? got.size : undefined, stream: got.stream }
    }
    if (p.kind === 'http') {
      const headers: Record<string, string> = {}
      if (o.ifChanged?.etag !== undefined) headers['if-none-match'] = o.ifChanged.etag
      if (o.ifChanged?.lastModified !== undefined) headers['if-modified-since'] = o.ifChanged.lastModified
      const res = await request(p.uri, { method: 'GET', headers, signal: d.signal, maxRedirections: 0 } as Parameters<typeof request>[1])
      const header = (name: string): string | undefined => { const v = res.headers[name]; return typeof v === 'string' && v.length <= 1024 ? v : undefined }
      const validators: Validators = { etag: header('etag'), lastModified: header('last-modified') }
      if (res.statusCode === 304 && o.ifChanged !== undefined) { await res.body.dump().catch(() => {}); return { size: undefined, stream: (async function * () {})(), validators, notModified: true } }
      // An HTTP source's error body is not passed on: it could be anything the server reached.
      if (res.statusCode !== 200) { await res.body.dump().catch(() => {}); throw new SourceError(`answered ${res.statusCode}`) }
      const length = Number(res.headers['content-length'])
      return { size: Number.isSafeInteger(length) ? length : undefined, stream: res.body, validators }
    }
    const m = await d.peer.manifest(oid, p.hint, { signal: d.signal })
    return { size: m.size, stream: agentBytes(d.peer, p.hint, m.descriptors, d.signal) }
  } catch (err) {
    const e = toBerthError(err)
    throw new SourceError(`source ${p.uri}: ${e.message}`, { cause: err })
  }
}

/** Batches of this many bytes are asked of an agent, this many at once (in object order). */
const AGENT_BATCH = 4 * 1024 * 1024
const AGENT_PARALLEL = 3

/** An agent's chunks in object order: batches fetched ahead, yielded as each completes in turn. */
async function * agentBytes (peer: PeerPlugin, hint: Hint, descriptors: AsyncIterable<Descriptor>, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const fetchBatch = async (ds: Descriptor[]): Promise<Uint8Array[]> => {
    const got = new Map<string, Uint8Array>()
    for await (const r of peer.chunks(ds, hint, { signal })) {
      if (r.bytes === undefined) throw new SourceError(`agent ${hint.uri} lacks chunk ${r.descriptor.cid}`)
      got.set(r.descriptor.cid, r.bytes)
    }
    return ds.map(x => got.get(x.cid)!)
  }
  const queue: Array<Promise<Uint8Array[]>> = []
  const enqueue = (ds: Descriptor[]): void => {
    const p = fetchBatch(ds)
    // Awaited in turn below; this keeps one failing while an earlier one is awaited from counting as unhandled.
    p.catch(() => {})
    queue.push(p)
  }
  let batch: Descriptor[] = []
  let bytes = 0
  for await (const x of descriptors) {
    batch.push(x)
    bytes += x.length
    if (bytes >= AGENT_BATCH) {
      enqueue(batch); batch = []; bytes = 0
      if (queue.length >= AGENT_PARALLEL) yield * await queue.shift()!
    }
  }
  if (batch.length > 0) enqueue(batch)
  while (queue.length > 0) yield * await queue.shift()!
}

/**
 * Whether a place proves it holds the object, against bytes here: a locker answers a challenge
 * (nonce + random ranges, hashed) with its own copy; an HTTP server or an agent is asked for the
 * random ranges' bytes, which must equal ours. `c` lies within bytes we have; `read` gives them.
 */
export async function provePlace (p: Place, oid: string, c: Challenge, read: (start: number, end: number) => AsyncIterable<Uint8Array>, d: SourceDeps): Promise<boolean> {
  try {
    const ours = await answerChallenge(c, read)
    if (p.kind === 'locker') return sameAnswer(await lockerClient(p).proof(p.locker, oid, c, auth(p, d.signal)), ours)
    if (p.kind === 'http') {
      const theirs = await answerChallenge(c, (start, end) => httpRange(p.uri, start, end, d.signal))
      return sameAnswer(theirs, ours)
    }
    // An agent serves whole chunks: the ones covering each range, placed by the agent's manifest
    // and cut to the range. Bytes that differ from ours at any offset fail the proof.
    const m = await d.peer.manifest(oid, p.hint, { signal: d.signal })
    const wanted: Descriptor[] = []
    let r = 0
    for await (const x of m.descriptors) {
      while (r < c.ranges.length && c.ranges[r][0] + c.ranges[r][1] <= x.offset) r++
      if (r === c.ranges.length) break
      for (let i = r; i < c.ranges.length && c.ranges[i][0] < x.offset + x.length; i++) {
        if (c.ranges[i][0] + c.ranges[i][1] > x.offset) { wanted.push(x); break }
      }
    }
    const chunks = new Map<string, { d: Descriptor, bytes: Uint8Array }>()
    for await (const got of d.peer.chunks(wanted, p.hint, { signal: d.signal })) {
      if (got.bytes === undefined) return false
      chunks.set(got.descriptor.cid, { d: got.descriptor, bytes: got.bytes })
    }
    const theirs = await answerChallenge(c, (start, end) => agentRange(wanted, chunks, start, end))
    return sameAnswer(theirs, ours)
  } catch {
    // A place that cannot answer has not proved anything: the bytes will be fetched instead.
    return false
  }
}

async function * httpRange (uri: string, start: number, end: number, signal: AbortSignal): AsyncGenerator<Uint8Array> {
  const res = await request(uri, { method: 'GET', headers: { range: `bytes=${start}-${end}` }, signal })
  if (res.statusCode !== 206) { await res.body.dump(); throw new SourceError(`${uri} does not serve ranges (answered ${res.statusCode})`) }
  yield * res.body
}

async function * agentRange (wanted: Descriptor[], chunks: Map<string, { bytes: Uint8Array }>, start: number, end: number): AsyncGenerator<Uint8Array> {
  for (const x of wanted) {
    if (x.offset + x.length <= start || x.offset > end) continue
    const bytes = chunks.get(x.cid)?.bytes
    if (bytes === undefined) return
    yield bytes.subarray(Math.max(0, start - x.offset), Math.min(x.length, end + 1 - x.offset))
  }
}

/**
 * Delivers the object to another locker. If that server holds the bytes already it challenges
 * us, and our answer (`prove`) links them there with no object bytes sent; otherwise the bytes
 * are streamed, each segment as soon as we have it.
 */
export async function deliver (p: Place, oid: string, o: { size: number | undefined, bytes: () => AsyncIterable<Uint8Array>, prove: (c: Challenge) => Promise<string>, ttl?: number, signal: AbortSignal }): Promise<StoredObject> {
  if (p.kind !== 'locker') throw new BadRequestError(`a distribute delivers to a locker:// URI, not ${p.uri}`)
  const client = lockerClient(p)
  return await client.put(p.locker, oid, Readable.from(o.bytes(), { objectMode: false }), { ...auth(p, o.signal), ttl: o.ttl, size: o.size, prove: o.prove })
}
