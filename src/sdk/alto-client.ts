/**
 * A client of an ALTO server (RFC 7285): the directory, the network map, cost maps and the
 * endpoint cost service, which ranks candidate endpoints (lockers, say) by their cost from a
 * user's address. Resource URIs are found through the server's directory, never assumed.
 *
 * ```ts
 * const alto = new AltoClient('http://127.0.0.1:4670')
 * const [{ ranked }] = await alto.endpointCost(['127.1.0.9'], ['127.1.0.1', '127.2.0.1'])
 * // ranked: [{ endpoint: 'ipv4:127.1.0.1', cost: 0 }, { endpoint: 'ipv4:127.2.0.1', cost: 10 }]
 * ```
 */
import { isIPv4, isIPv6 } from 'node:net'
import { AltoRequestError, SourceError } from '../core/errors.ts'

/** The media types RFC 7285 §14.1 registers, by the role they play. */
export const ALTO_MEDIA_TYPES = {
  directory: 'application/alto-directory+json',
  networkMap: 'application/alto-networkmap+json',
  costMap: 'application/alto-costmap+json',
  costMapFilter: 'application/alto-costmapfilter+json',
  endpointProperty: 'application/alto-endpointprop+json',
  endpointPropertyParams: 'application/alto-endpointpropparams+json',
  endpointCost: 'application/alto-endpointcost+json',
  endpointCostParams: 'application/alto-endpointcostparams+json',
  error: 'application/alto-error+json'
} as const

export type CostMode = 'numerical' | 'ordinal'
export interface CostType { 'cost-mode': CostMode, 'cost-metric': 'routingcost' }
export interface VersionTag { 'resource-id': string, tag: string }

export interface DirectoryEntry {
  uri: string
  'media-type': string
  accepts?: string
  capabilities?: { 'cost-type-names'?: string[], 'cost-constraints'?: boolean, 'prop-types'?: string[] }
  uses?: string[]
}
export interface Directory {
  meta: { 'cost-types': Record<string, CostType>, 'default-alto-network-map': string }
  resources: Record<string, DirectoryEntry>
}
export interface NetworkMapResponse {
  meta: { vtag: VersionTag }
  'network-map': Record<string, { ipv4?: string[], ipv6?: string[] }>
}
export interface CostMapResponse {
  meta: { 'dependent-vtags': VersionTag[], 'cost-type': CostType }
  'cost-map': Record<string, Record<string, number>>
}
export interface EndpointCostResponse {
  meta: { 'cost-type': CostType }
  'endpoint-cost-map': Record<string, Record<string, number>>
}
export interface EndpointPropertyResponse {
  meta: { 'dependent-vtags': VersionTag[] }
  'endpoint-properties': Record<string, Record<string, string>>
}

/** One source's destinations, cheapest first; destinations the server has no cost for are left out. */
export interface RankedEndpoints { src: string, ranked: Array<{ endpoint: string, cost: number }> }

/** `1.2.3.4` → `ipv4:1.2.3.4`; already typed addresses pass through. */
export function typedAddress (address: string): string {
  if (address.startsWith('ipv4:') || address.startsWith('ipv6:')) return address
  if (isIPv4(address)) return `ipv4:${address}`
  if (isIPv6(address)) return `ipv6:${address}`
  throw new AltoRequestError('E_INVALID_FIELD_VALUE', `${JSON.stringify(address)} is not an IP address`, { value: address })
}

export interface AltoRequestOptions { signal?: AbortSignal }

export class AltoClient {
  readonly url: string
  #directory: Promise<Directory> | undefined

  constructor (url: string) {
    this.url = url.replace(/\/+$/, '')
  }

  /** The information resource directory (fetched once; `refresh` fetches it again). */
  async directory (o: AltoRequestOptions & { refresh?: boolean } = {}): Promise<Directory> {
    if (this.#directory === undefined || o.refresh === true) {
      this.#directory = this.#call<Directory>(`${this.url}/`, ALTO_MEDIA_TYPES.directory, undefined, o)
      // A failed fetch must not be remembered.
      this.#directory.catch(() => { this.#directory = undefined })
    }
    return await this.#directory
  }

  async networkMap (o: AltoRequestOptions = {}): Promise<NetworkMapResponse> {
    const entry = await this.#find(e => e['media-type'] === ALTO_MEDIA_TYPES.networkMap && e.accepts === undefined, 'a network map', o)
    return await this.#call(entry.uri, ALTO_MEDIA_TYPES.networkMap, undefined, o)
  }

  /** The full cost map for `routingcost` in the given mode (default numerical). */
  async costMap (o: AltoRequestOptions & { mode?: CostMode } = {}): Promise<CostMapResponse> {
    const name = await this.#costTypeName(o.mode ?? 'numerical', o)
    const entry = await this.#find(e => e['media-type'] === ALTO_MEDIA_TYPES.costMap && e.accepts === undefined && (e.capabilities?.['cost-type-names']?.includes(name) ?? false), `a ${o.mode ?? 'numerical'} routingcost map`, o)
    return await this.#call(entry.uri, ALTO_MEDIA_TYPES.costMap, undefined, o)
  }

  /**
   * Costs from each source to each destination (plain or typed IP addresses), each source's
   * destinations ranked cheapest first.
   */
  async endpointCost (srcs: string[], dsts: string[], o: AltoRequestOptions & { mode?: CostMode } = {}): Promise<RankedEndpoints[]> {
    const typedSrcs = srcs.map(typedAddress)
    const typedDsts = dsts.map(typedAddress)
    const entry = await this.#find(e => e['media-type'] === ALTO_MEDIA_TYPES.endpointCost && e.accepts === ALTO_MEDIA_TYPES.endpointCostParams, 'an endpoint cost service', o)
    const body = { 'cost-type': { 'cost-mode': o.mode ?? 'numerical', 'cost-metric': 'routingcost' }, endpoints: { srcs: typedSrcs, dsts: typedDsts } }
    const answer = await this.#call<EndpointCostResponse>(entry.uri, ALTO_MEDIA_TYPES.endpointCost, { type: ALTO_MEDIA_TYPES.endpointCostParams, body }, o)
    return typedSrcs.map(src => {
      const row = answer['endpoint-cost-map'][src] ?? {}
      // Ties keep the caller's order of destinations, so equal-cost candidates are not reshuffled.
      const ranked = typedDsts.filter(d => typeof row[d] === 'number').map(endpoint => ({ endpoint, cost: row[endpoint]! }))
      return { src, ranked: ranked.sort((a, b) => a.cost - b.cost) }
    })
  }

  async #costTypeName (mode: CostMode, o: AltoRequestOptions): Promise<string> {
    const types = (await this.directory(o)).meta['cost-types']
    const name = Object.keys(types).find(n => types[n]?.['cost-mode'] === mode && types[n]?.['cost-metric'] === 'routingcost')
    if (name === undefined) throw new SourceError(`the ALTO server ${this.url} offers no ${mode} routingcost`)
    return name
  }

  async #find (match: (e: DirectoryEntry) => boolean, what: string, o: AltoRequestOptions): Promise<DirectoryEntry> {
    const entry = Object.values((await this.directory(o)).resources).find(match)
    if (entry === undefined) throw new SourceError(`the ALTO server ${this.url} lists no ${what}`)
    return entry
  }

  async #call<T> (uri: string, mediaType: string, post: { type: string, body: unknown } | undefined, o: AltoRequestOptions): Promise<T> {
    let response: Response
    try {
      response = await fetch(new URL(uri, this.url + '/'), {
        method: post === undefined ? 'GET' : 'POST',
        headers: { accept: `${mediaType},${ALTO_MEDIA_TYPES.error}`, ...(post !== undefined ? { 'content-type': post.type } : {}) },
        body: post !== undefined ? JSON.stringify(post.body) : undefined,
        signal: o.signal
      })
    } catch (err) {
      throw new SourceError(`cannot reach the ALTO server at ${uri}: ${(err as Error).message}`, { cause: err })
    }
    const type = (response.headers.get('content-type') ?? '').split(';')[0]!.trim().toLowerCase()
    const text = await response.text()
    if (!response.ok) {
      if (type === ALTO_MEDIA_TYPES.error) {
        const meta = (JSON.parse(text) as { meta?: { code?: string, field?: string, value?: unknown } }).meta ?? {}
        throw new AltoRequestError(meta.code ?? 'E_UNKNOWN', `ALTO server refused the request: ${meta.code ?? 'no code'}${meta.field !== undefined ? ` (${meta.field})` : ''}`, { field: meta.field, value: meta.value })
      }
      throw new SourceError(`ALTO server answered ${response.status} for ${uri}: ${text.slice(0, 200).trim()}`)
    }
    if (type !== mediaType) throw new SourceError(`ALTO server answered ${uri} with ${type || 'no media type'}, not ${mediaType}`)
    return JSON.parse(text) as T
  }
}
