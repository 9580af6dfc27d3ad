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
import { cutRun, expectRange, rangeRuns, runSpan } from './ranges.ts'

export interface HttpPluginOptions {
  /** connections per mirror; default 4 */
  connections?: number
  /** give up on a silent mirror after this many ms; default 30 s */
  timeoutMs?: number
  /** where the manifest lies, given the object's URL; default `<url>.manifest` */
  manifestUrl?: (objectUrl: URL) => URL
}

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
    for (const run of rangeRuns(wanted)) yield * this.fetchRun(url, run, alloc, o.signal)
  }

  private async * fetchRun (url: URL, run: Descriptor[], alloc: (n: number) => Uint8Array, signal: AbortSignal): AsyncGenerator<ChunkResult> {
    const { start, end } = runSpan(run)
    const res = await this.pool(url).request({ path: url.pathname + url.search, method: 'GET', headers: { range: `bytes=${start}-${end}` }, signal })
      .catch(err => { throw new SourceError(`mirror ${url.origin} unreachable: ${toBerthError(err).message}`, { cause: err }) })
    if (res.statusCode === 416 || res.statusCode === 404) {
      // The mirror's copy is shorter, or gone: it lacks these chunks (others may have them).
      await res.body.dump().catch(() => {})
      for (const d of run) yield { descriptor: d, bytes: undefined }
      return
    }
    expectRange(res, start, end, `mirror ${url.origin}`)
    yield * cutRun(res.body, run, alloc, `mirror ${url.origin}`)
  }

  async close (): Promise<void> {
    await Promise.allSettled([...this.pools.values()].map(async p => await p.close()))
    this.pools.clear()
  }
}
