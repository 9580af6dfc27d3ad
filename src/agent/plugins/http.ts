/**
 * HTTP mirrors as sources (`http(s)://…` hints): any server that answers Range requests — nginx,
 * a CDN, object storage — serving the object's bytes at the hint's URL and its manifest beside
 * it at `<URL>.manifest` (the NDJSON an agent's peer API serves at
 * `GET /v1/objects/{oid}/manifest`; `curl` it next to the file when publishing). Chunks are
 * fetched by byte range, a run of neighbouring chunks with one request, and the agent core
 * verifies each against its cid like any other source's: a mirror with a corrupted copy is
 * caught chunk by chunk and the chunks are asked of the next hint.
 */
import { Pool } from 'undici'
import type { Descriptor } from '../../core/chunker/types.ts'
import type { Hint } from '../../core/hints.ts'
import { SourceError, toBerthError } from '../../core/errors.ts'
import { type ChunkResult, manifestFromBody, type ManifestStream, type PluginCallOptions, type TransferPlugin } from '../plugin.ts'

export interface HttpPluginOptions {
  /** connections per mirror; default 4 */
  connections?: number
  /** give up on a silent mirror after this many ms; default 30 s */
  timeoutMs?: number
  /** where the manifest lies, given the object's URL; default `<url>.manifest` */
  manifestUrl?: (objectUrl: URL) => URL
}

/** One request covers neighbouring chunks up to this many bytes. */
const MAX_RUN = 8 * 1024 * 1024

export class HttpPlugin implements TransferPlugin {
  readonly name = 'http'
  readonly schemes = ['http:', 'https:'] as const
  private readonly pools = new Map<string, Pool>()

  constructor (private readonly options: HttpPluginOptions = {}) {}

  private pool (url: URL): Pool {
    let pool = this.pools.get(url.origin)
    if (pool === undefined) {
      const timeout = this.options.timeoutMs ?? 30_000
      pool = new Pool(url.origin, { connections: this.options.connections ?? 4, headersTimeout: timeout, bodyTimeout: timeout })
      this.pools.set(url.origin, pool)
    }
    return pool
  }

  async manifest (oid: string, hint: Hint, o: PluginCallOptions): Promise<ManifestStream> {
    const object = new URL(hint.uri)
    const url = this.options.manifestUrl?.(object) ?? new URL(object.href.replace(/[?#].*$/, '') + '.manifest')
    const res = await this.pool(url).request({ path: url.pathname + url.search, method: 'GET', signal: o.signal })
      .catch(err => { throw new SourceError(`mirror ${url.origin} unreachable: ${toBerthError(err).message}`, { cause: err }) })
    if (res.statusCode !== 200) {
      await res.body.dump().catch(() => {})
      throw new SourceError(`mirror answered ${res.statusCode} for the manifest ${url.href}`)
    }
    return await manifestFromBody(res.body, oid)
  }

  async * chunks (wanted: readonly Descriptor[], hint: Hint, o: PluginCallOptions): AsyncIterable<ChunkResult> {
    const url = new URL(hint.uri)
    const alloc = o.alloc ?? ((n: number) => new Uint8Array(n))
    // Each cid once, at its first place; runs of neighbours become one range request.
    const first = new Map<string, Descriptor>()
    for (const d of wanted) if (!first.has(d.cid)) first.set(d.cid, d)
    const sorted = [...first.values()].sort((a, b) => a.offset - b.offset)
    const runs: Descriptor[][] = []
    for (const d of sorted) {
      const run = runs.at(-1)
      const last = run?.at(-1)
      if (run !== undefined && last !== undefined && last.offset + last.length === d.offset && d.offset + d.length - run[0].offset <= MAX_RUN) run.push(d)
      else runs.push([d])
    }
    for (const run of runs) yield * this.fetchRun(url, run, alloc, o.signal)
  }

  private async * fetchRun (url: URL, run: Descriptor[], alloc: (n: number) => Uint8Array, signal: AbortSignal): AsyncGenerator<ChunkResult> {
    const start = run[0].offset
    const end = run[run.length - 1].offset + run[run.length - 1].length - 1
    const res = await this.pool(url).request({ path: url.pathname + url.search, method: 'GET', headers: { range: `bytes=${start}-${end}` }, signal })
      .catch(err => { throw new SourceError(`mirror ${url.origin} unreachable: ${toBerthError(err).message}`, { cause: err }) })
    if (res.statusCode === 416 || res.statusCode === 404) {
      // The mirror's copy is shorter, or gone: it lacks these chunks (others may have them).
      await res.body.dump().catch(() => {})
      for (const d of run) yield { descriptor: d, bytes: undefined }
      return
    }
    const range = res.headers['content-range']
    if (res.statusCode !== 206 || typeof range !== 'string' || !range.startsWith(`bytes ${start}-${end}/`)) {
      // A whole body where a range was asked (no Range support) would cost the whole object per batch.
      res.body.destroy()
      throw new SourceError(`mirror ${url.origin} does not serve byte ranges (answered ${res.statusCode})`)
    }
    // The body is cut into the chunks as it comes, each into memory the core hands out.
    let i = 0
    let target = alloc(run[0].length)
    let filled = 0
    try {
      for await (const piece of res.body) {
        let at = 0
        const bytes = piece as Buffer
        while (at < bytes.length) {
          if (i === run.length) throw new SourceError(`mirror ${url.origin} sent more than the range asked`)
          const n = Math.min(bytes.length - at, target.length - filled)
          target.set(bytes.subarray(at, at + n), filled)
          filled += n
          at += n
          if (filled === target.length) {
            yield { descriptor: run[i], bytes: target }
            i++
            filled = 0
            if (i < run.length) target = alloc(run[i].length)
          }
        }
      }
    } finally {
      if (i < run.length) res.body.destroy()
    }
    if (i < run.length) throw new SourceError(`mirror ${url.origin} ended the range early`)
  }

  async close (): Promise<void> {
    await Promise.allSettled([...this.pools.values()].map(async p => await p.close()))
    this.pools.clear()
  }
}
