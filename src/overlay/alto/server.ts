/**
 * The ALTO server (RFC 7285): the proximity service the portal and the overlay ask which
 * replica is nearest. It serves, from one topology (see topology.ts):
 *
 *   GET  /  and /directory                    information resource directory
 *   GET  /networkmap                          the network map (resource "default-network-map")
 *   GET  /costmap/routingcost-numerical       full cost maps, routingcost, both modes
 *   GET  /costmap/routingcost-ordinal
 *   POST /costmap/filtered                    filtered cost map (with constraints)
 *   POST /endpointprop/lookup                 endpoint property service (property "pid")
 *   POST /endpointcost/lookup                 endpoint cost service (with constraints)
 *
 * Requests that the protocol refuses are answered 400 with `application/alto-error+json` and an
 * RFC 7285 code; what HTTP itself refuses (unknown resource 404, wrong method 405, an Accept that
 * admits nothing we send 406, a body in the wrong media type 415, too large 413) gets the HTTP
 * status and a one-line text reason, since RFC 7285 registers no ALTO code for those.
 */
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { Logger } from 'pino'
import { AltoRequestError, InvalidConfigError, MethodNotAllowedError, NotAcceptableError, NotFoundError, toBerthError, UnsupportedMediaTypeError } from '../../core/errors.ts'
import { createHttpServer, type ListenAddress, listen, parseListen, urlOf } from '../../agent/http.ts'
import { ALTO_MEDIA_TYPES as MEDIA, type CostMode, type CostType, type Directory } from '../../sdk/alto-client.ts'
import { loadTopology, parseAddress, Topology, type TopologySpec } from './topology.ts'

export interface AltoServerOptions {
  /** HTTP address, HOST:PORT; default 127.0.0.1:4670 (port 0 picks a free one) */
  listen?: string
  /** the topology itself (parsed or as written); or */
  topology?: Topology | TopologySpec
  /** a topology file, read at creation and again by `reload()` without an argument */
  topologyFile?: string
  /** one line per reload; none when absent */
  logger?: Logger
}

export interface AltoServer {
  readonly url: string
  /** the topology being served */
  readonly topology: Topology
  start (): Promise<void>
  stop (): Promise<void>
  /**
   * Serves another topology from the next request on: the one given, else the topology file
   * read again. A bad topology throws and leaves the served one in place.
   */
  reload (topology?: Topology | TopologySpec): Promise<Topology>
}

const DEFAULT_LISTEN = '127.0.0.1:4670'
export const NETWORK_MAP_ID = 'default-network-map'
/** The property RFC 7285 §7.1.1 defines, qualified by the network map it comes from. */
const PID_PROPERTY = `${NETWORK_MAP_ID}.pid`

const COST_TYPES: Record<string, CostType> = {
  'num-routingcost': { 'cost-mode': 'numerical', 'cost-metric': 'routingcost' },
  'ord-routingcost': { 'cost-mode': 'ordinal', 'cost-metric': 'routingcost' }
}

/** Resource id → where it lives, how it is asked for, and what it answers with. */
const RESOURCES = {
  [NETWORK_MAP_ID]: { path: '/networkmap', method: 'GET', mediaType: MEDIA.networkMap },
  'routingcost-numerical': { path: '/costmap/routingcost-numerical', method: 'GET', mediaType: MEDIA.costMap },
  'routingcost-ordinal': { path: '/costmap/routingcost-ordinal', method: 'GET', mediaType: MEDIA.costMap },
  'filtered-cost-map': { path: '/costmap/filtered', method: 'POST', mediaType: MEDIA.costMap, accepts: MEDIA.costMapFilter },
  'endpoint-property': { path: '/endpointprop/lookup', method: 'POST', mediaType: MEDIA.endpointProperty, accepts: MEDIA.endpointPropertyParams },
  'endpoint-cost': { path: '/endpointcost/lookup', method: 'POST', mediaType: MEDIA.endpointCost, accepts: MEDIA.endpointCostParams }
} as const

const DIRECTORY_PATHS = ['/', '/directory']
const ALLOWED = new Map<string, string>([
  ...DIRECTORY_PATHS.map(p => [p, 'GET, HEAD'] as [string, string]),
  ...Object.values(RESOURCES).map(r => [r.path, r.method === 'GET' ? 'GET, HEAD' : 'POST'] as [string, string])
])

function toTopology (t: Topology | TopologySpec): Topology {
  return t instanceof Topology ? t : Topology.from(t)
}

export async function createAltoServer (options: AltoServerOptions): Promise<AltoServer> {
  if (options.topology === undefined && options.topologyFile === undefined) throw new InvalidConfigError('an ALTO server needs a topology or a topologyFile')
  let topology = options.topology !== undefined ? toTopology(options.topology) : await loadTopology(options.topologyFile!)
  let address: ListenAddress = parseListen(options.listen ?? DEFAULT_LISTEN)
  const log = options.logger

  const app = createHttpServer()
  // The ALTO routes live in their own scope: their error handler and body parsing replace
  // the shared server's without touching it.
  app.register(async scope => {
    // Bodies are parsed here, not by fastify: a body that is not JSON must be E_SYNTAX, and the
    // media type is checked per resource (415) before the body is looked at.
    scope.removeAllContentTypeParsers()
    scope.addContentTypeParser('*', { parseAs: 'string' }, (_request, body, done) => { done(null, body) })

    scope.setErrorHandler((error, request, reply) => {
      if (error instanceof AltoRequestError) {
        const meta: Record<string, unknown> = { code: error.altoCode }
        if (error.field !== undefined) meta.field = error.field
        if (error.value !== undefined) meta.value = error.value
        if (error.altoCode === 'E_SYNTAX') meta['syntax-error'] = error.message
        else meta.message = error.message
        void reply.code(400).header('content-type', MEDIA.error).send(Buffer.from(JSON.stringify({ meta })))
        return
      }
      const err = toBerthError(error)
      if (err instanceof MethodNotAllowedError) void reply.header('allow', ALLOWED.get(pathOf(request)) ?? '')
      void reply.code(err.status).type('text/plain; charset=utf-8').send(`${err.message}\n`)
    })

    const baseOf = (request: FastifyRequest): string => request.headers.host !== undefined ? `${request.protocol}://${request.headers.host}` : urlOf(address)

    const directory = (request: FastifyRequest): Directory => {
      const base = baseOf(request)
      const costTypeNames = Object.keys(COST_TYPES)
      return {
        meta: { 'cost-types': COST_TYPES, 'default-alto-network-map': NETWORK_MAP_ID },
        resources: {
          [NETWORK_MAP_ID]: { uri: base + RESOURCES[NETWORK_MAP_ID].path, 'media-type': MEDIA.networkMap },
          'routingcost-numerical': { uri: base + RESOURCES['routingcost-numerical'].path, 'media-type': MEDIA.costMap, capabilities: { 'cost-type-names': ['num-routingcost'] }, uses: [NETWORK_MAP_ID] },
          'routingcost-ordinal': { uri: base + RESOURCES['routingcost-ordinal'].path, 'media-type': MEDIA.costMap, capabilities: { 'cost-type-names': ['ord-routingcost'] }, uses: [NETWORK_MAP_ID] },
          'filtered-cost-map': { uri: base + RESOURCES['filtered-cost-map'].path, 'media-type': MEDIA.costMap, accepts: MEDIA.costMapFilter, capabilities: { 'cost-constraints': true, 'cost-type-names': costTypeNames }, uses: [NETWORK_MAP_ID] },
          'endpoint-property': { uri: base + RESOURCES['endpoint-property'].path, 'media-type': MEDIA.endpointProperty, accepts: MEDIA.endpointPropertyParams, capabilities: { 'prop-types': [PID_PROPERTY] }, uses: [NETWORK_MAP_ID] },
          'endpoint-cost': { uri: base + RESOURCES['endpoint-cost'].path, 'media-type': MEDIA.endpointCost, accepts: MEDIA.endpointCostParams, capabilities: { 'cost-constraints': true, 'cost-type-names': costTypeNames } }
        }
      }
    }

    const dependentVtags = (t: Topology): Array<{ 'resource-id': string, tag: string }> => [{ 'resource-id': NETWORK_MAP_ID, tag: t.vtag }]

    for (const path of DIRECTORY_PATHS) {
      scope.get(path, async (request, reply) => { answer(request, reply, MEDIA.directory, directory(request)) })
    }

    scope.get(RESOURCES[NETWORK_MAP_ID].path, async (request, reply) => {
      const t = topology
      answer(request, reply, MEDIA.networkMap, { meta: { vtag: { 'resource-id': NETWORK_MAP_ID, tag: t.vtag } }, 'network-map': t.networkMap })
    })

    for (const mode of ['numerical', 'ordinal'] as const) {
      scope.get(RESOURCES[`routingcost-${mode}`].path, async (request, reply) => {
        const t = topology
        const costType = costTypeFor(mode)
        answer(request, reply, MEDIA.costMap, { meta: { 'dependent-vtags': dependentVtags(t), 'cost-type': costType }, 'cost-map': pidCostMap(t, t.pids, t.pids, mode, () => true) })
      })
    }

    /** What the two cost queries share: the body (of the type it must be), the map that answers, cost type and constraints. */
    const costQuery = (request: FastifyRequest, accepts: string, answers: string): { body: Record<string, unknown>, t: typeof topology, costType: ReturnType<typeof readCostType>, keep: ReturnType<typeof readConstraints> } => {
      const body = requestBody(request, accepts)
      acceptable(request, answers)
      return { body, t: topology, costType: readCostType(body), keep: readConstraints(body) }
    }

    scope.post(RESOURCES['filtered-cost-map'].path, async (request, reply) => {
      const { body, t, costType, keep } = costQuery(request, MEDIA.costMapFilter, MEDIA.costMap)
      let srcs = t.pids
      let dsts = t.pids
      if (body.pids !== undefined) {
        if (!isRecord(body.pids)) throw new AltoRequestError('E_INVALID_FIELD_TYPE', '"pids" must be an object {"srcs": [...], "dsts": [...]}', { field: 'pids', value: body.pids })
        // RFC 7285 §11.3.2.3: an empty list means every PID; a PID the map does not define is ignored.
        const pick = (field: 'srcs' | 'dsts'): readonly string[] => {
          const list = stringList((body.pids as Record<string, unknown>)[field], `pids/${field}`, { required: true })!
          return list.length === 0 ? t.pids : [...new Set(list)].filter(p => Object.hasOwn(t.networkMap, p))
        }
        srcs = pick('srcs')
        dsts = pick('dsts')
      }
      answer(request, reply, MEDIA.costMap, { meta: { 'dependent-vtags': dependentVtags(t), 'cost-type': costType }, 'cost-map': pidCostMap(t, srcs, dsts, costType['cost-mode'], keep) })
    })

    scope.post(RESOURCES['endpoint-property'].path, async (request, reply) => {
      const body = requestBody(request, MEDIA.endpointPropertyParams)
      acceptable(request, MEDIA.endpointProperty)
      const t = topology
      const properties = stringList(body.properties, 'properties', { required: true })!
      if (properties.length === 0) throw new AltoRequestError('E_INVALID_FIELD_VALUE', '"properties" must name at least one property', { field: 'properties', value: [] })
      for (const p of properties) {
        // "pid" alone is accepted as shorthand: this server has one network map, so it is not ambiguous.
        if (p !== PID_PROPERTY && p !== 'pid') throw new AltoRequestError('E_INVALID_FIELD_VALUE', `unknown property ${JSON.stringify(p)} (this server has ${PID_PROPERTY})`, { field: 'properties', value: p })
      }
      const endpoints = readEndpoints(body.endpoints, 'endpoints', true)
      const out: Record<string, Record<string, string>> = {}
      for (const { typed, ip } of endpoints) {
        const pid = t.pidOf(ip)
        // RFC 7285 §11.4.1.6: a property with no value for an endpoint is left out for that endpoint.
        out[typed] = pid === undefined ? {} : Object.fromEntries(properties.map(p => [p, pid]))
      }
      answer(request, reply, MEDIA.endpointProperty, { meta: { 'dependent-vtags': dependentVtags(t) }, 'endpoint-properties': out })
    })

    scope.post(RESOURCES['endpoint-cost'].path, async (request, reply) => {
      const { body, t, costType, keep } = costQuery(request, MEDIA.endpointCostParams, MEDIA.endpointCost)
      if (body.endpoints === undefined) throw new AltoRequestError('E_MISSING_FIELD', 'missing "endpoints" ({"srcs": [...], "dsts": [...]})', { field: 'endpoints' })
      if (!isRecord(body.endpoints)) throw new AltoRequestError('E_INVALID_FIELD_TYPE', '"endpoints" must be an object {"srcs": [...], "dsts": [...]}', { field: 'endpoints', value: body.endpoints })
      let srcs = readEndpoints(body.endpoints.srcs, 'endpoints/srcs', false)
      // RFC 7285 §11.5.1.3: no sources means the client's own address.
      if (srcs.length === 0) srcs = [clientEndpoint(request.ip)]
      const dsts = readEndpoints(body.endpoints.dsts, 'endpoints/dsts', true)
      if (dsts.length === 0) throw new AltoRequestError('E_INVALID_FIELD_VALUE', '"endpoints/dsts" must list at least one endpoint', { field: 'endpoints/dsts', value: [] })
      const numerical: Record<string, Record<string, number>> = {}
      for (const src of srcs) {
        const from = t.pidOf(src.ip)
        const row: Record<string, number> = {}
        for (const dst of dsts) {
          const to = t.pidOf(dst.ip)
          const cost = from !== undefined && to !== undefined ? t.cost(from, to) : undefined
          if (cost !== undefined) row[dst.typed] = cost
        }
        numerical[src.typed] = row
      }
      answer(request, reply, MEDIA.endpointCost, { meta: { 'cost-type': costType }, 'endpoint-cost-map': finishCosts(numerical, costType['cost-mode'], keep) })
    })

    // Known paths asked with another method get 405 (with Allow); anything else is not a resource here.
    scope.all('/*', async request => {
      if (ALLOWED.has(pathOf(request))) throw new MethodNotAllowedError(`${request.method} is not allowed on ${pathOf(request)} (${ALLOWED.get(pathOf(request))})`)
      throw new NotFoundError(`no ALTO resource at ${pathOf(request).slice(0, 100)}`)
    })
  })

  return {
    get url () { return urlOf(address) },
    get topology () { return topology },
    async start () {
      address = await listen(app, address)
    },
    async stop () {
      await app.close()
    },
    async reload (next) {
      const fresh = next !== undefined ? toTopology(next) : options.topologyFile !== undefined ? await loadTopology(options.topologyFile) : topology
      const previous = topology.vtag
      topology = fresh
      log?.info({ vtag: fresh.vtag, previous, pids: fresh.pids.length, links: fresh.links.length }, 'topology loaded')
      return fresh
    }
  }
}

function pathOf (request: FastifyRequest): string {
  return request.url.split('?')[0]!
}

function costTypeFor (mode: CostMode): CostType {
  return { 'cost-mode': mode, 'cost-metric': 'routingcost' }
}

function answer (request: FastifyRequest, reply: FastifyReply, mediaType: string, body: unknown): void {
  acceptable(request, mediaType)
  // As a Buffer, so fastify sends the media type exactly as RFC 7285 names it (no charset added).
  void reply.header('content-type', mediaType).send(Buffer.from(JSON.stringify(body)))
}

/** 406 unless the Accept header (if any) admits the media type, directly or by a wildcard. */
function acceptable (request: FastifyRequest, mediaType: string): void {
  const header = request.headers.accept
  if (header === undefined || header.trim() === '') return
  const [type] = mediaType.split('/')
  for (const item of header.split(',')) {
    const [range, ...params] = item.split(';').map(s => s.trim().toLowerCase())
    if (params.some(p => /^q=0(\.0*)?$/.test(p))) continue
    if (range === '*/*' || range === `${type}/*` || range === mediaType) return
  }
  throw new NotAcceptableError(`this resource answers with ${mediaType}, which the Accept header (${header.slice(0, 200)}) does not admit`)
}

/** The body of a POST as a JSON object: the media type first (415), then the syntax (E_SYNTAX). */
function requestBody (request: FastifyRequest, accepts: string): Record<string, unknown> {
  const type = (request.headers['content-type'] ?? '').split(';')[0]!.trim().toLowerCase()
  if (type !== accepts) throw new UnsupportedMediaTypeError(`this resource accepts ${accepts}, not ${type === '' ? 'a body without Content-Type' : type}`)
  const text = typeof request.body === 'string' ? request.body : ''
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new AltoRequestError('E_SYNTAX', text.trim() === '' ? 'the request body is empty' : `the request body is not JSON: ${(err as Error).message}`)
  }
  if (!isRecord(value)) throw new AltoRequestError('E_SYNTAX', 'the request body must be a JSON object')
  return value
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

function stringList (value: unknown, field: string, o: { required: boolean }): string[] | undefined {
  if (value === undefined) {
    if (o.required) throw new AltoRequestError('E_MISSING_FIELD', `missing "${field}"`, { field })
    return undefined
  }
  if (!Array.isArray(value)) throw new AltoRequestError('E_INVALID_FIELD_TYPE', `"${field}" must be a list of strings`, { field, value })
  for (const item of value) if (typeof item !== 'string') throw new AltoRequestError('E_INVALID_FIELD_TYPE', `"${field}" must be a list of strings`, { field, value: item })
  return value as string[]
}

function readCostType (body: Record<string, unknown>): CostType {
  const ct = body['cost-type']
  if (ct === undefined) throw new AltoRequestError('E_MISSING_FIELD', 'missing "cost-type"', { field: 'cost-type' })
  if (!isRecord(ct)) throw new AltoRequestError('E_INVALID_FIELD_TYPE', '"cost-type" must be an object {"cost-mode", "cost-metric"}', { field: 'cost-type', value: ct })
  for (const key of ['cost-mode', 'cost-metric']) {
    const field = `cost-type/${key}`
    if (ct[key] === undefined) throw new AltoRequestError('E_MISSING_FIELD', `missing "${field}"`, { field })
    if (typeof ct[key] !== 'string') throw new AltoRequestError('E_INVALID_FIELD_TYPE', `"${field}" must be a string`, { field, value: ct[key] })
  }
  if (ct['cost-metric'] !== 'routingcost') throw new AltoRequestError('E_INVALID_FIELD_VALUE', `cost metric ${JSON.stringify(ct['cost-metric'])} is not offered (routingcost is)`, { field: 'cost-type/cost-metric', value: ct['cost-metric'] })
  if (ct['cost-mode'] !== 'numerical' && ct['cost-mode'] !== 'ordinal') throw new AltoRequestError('E_INVALID_FIELD_VALUE', `cost mode ${JSON.stringify(ct['cost-mode'])} is not offered (numerical, ordinal)`, { field: 'cost-type/cost-mode', value: ct['cost-mode'] })
  return costTypeFor(ct['cost-mode'])
}

const CONSTRAINT = /^(gt|lt|ge|le|eq) (-?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?)$/

/** RFC 7285 §11.3.2.3 constraints ("le 10", …), all of which a cost must meet, in the requested mode's values. */
function readConstraints (body: Record<string, unknown>): (cost: number) => boolean {
  const list = stringList(body.constraints, 'constraints', { required: false }) ?? []
  const tests = list.map(text => {
    const m = CONSTRAINT.exec(text.trim())
    if (m === null) throw new AltoRequestError('E_INVALID_FIELD_VALUE', `constraint ${JSON.stringify(text)} is not "gt|lt|ge|le|eq NUMBER"`, { field: 'constraints', value: text })
    const bound = Number(m[2])
    switch (m[1]) {
      case 'gt': return (c: number) => c > bound
      case 'lt': return (c: number) => c < bound
      case 'ge': return (c: number) => c >= bound
      case 'le': return (c: number) => c <= bound
      default: return (c: number) => c === bound
    }
  })
  return cost => tests.every(test => test(cost))
}

interface Endpoint { typed: string, ip: string }

/** A list of RFC 7285 typed endpoint addresses ("ipv4:192.0.2.1", "ipv6:2001:db8::1"). */
function readEndpoints (value: unknown, field: string, required: boolean): Endpoint[] {
  const list = stringList(value, field, { required }) ?? []
  return [...new Set(list)].map(typed => {
    const colon = typed.indexOf(':')
    const family = typed.slice(0, colon)
    const ip = typed.slice(colon + 1)
    const parsed = colon > 0 ? parseAddress(ip) : undefined
    if (parsed === undefined || parsed[0] !== family) throw new AltoRequestError('E_INVALID_FIELD_VALUE', `${JSON.stringify(typed)} is not a typed endpoint address ("ipv4:ADDRESS" or "ipv6:ADDRESS")`, { field, value: typed })
    return { typed, ip }
  })
}

function clientEndpoint (ip: string): Endpoint {
  // A dual-stack socket reports IPv4 clients as IPv4-mapped IPv6; they belong to IPv4 blocks.
  const plain = ip.startsWith('::ffff:') && parseAddress(ip.slice(7))?.[0] === 'ipv4' ? ip.slice(7) : ip
  return { typed: `${parseAddress(plain)?.[0] ?? 'ipv4'}:${plain}`, ip: plain }
}

function pidCostMap (t: Topology, srcs: readonly string[], dsts: readonly string[], mode: CostMode, keep: (cost: number) => boolean): Record<string, Record<string, number>> {
  const numerical: Record<string, Record<string, number>> = {}
  for (const src of srcs) {
    const row: Record<string, number> = {}
    // Unreachable pairs have no cost and are left out (RFC 7285 §11.2.3.6 allows a sparse map).
    for (const dst of dsts) { const c = t.cost(src, dst); if (c !== undefined) row[dst] = c }
    numerical[src] = row
  }
  return finishCosts(numerical, mode, keep)
}

/**
 * Turns numerical costs into the requested mode, then applies the constraints. Ordinal costs are
 * ranks 1..n over the distinct values of the map being returned (RFC 7285 §6.1.2.2: a ranking
 * relative to the other values in the map; equal costs share a rank).
 */
function finishCosts (numerical: Record<string, Record<string, number>>, mode: CostMode, keep: (cost: number) => boolean): Record<string, Record<string, number>> {
  let rank: (cost: number) => number = c => c
  if (mode === 'ordinal') {
    const distinct = [...new Set(Object.values(numerical).flatMap(row => Object.values(row)))].sort((a, b) => a - b)
    const ranks = new Map(distinct.map((c, i) => [c, i + 1]))
    rank = c => ranks.get(c)!
  }
  const out: Record<string, Record<string, number>> = {}
  for (const [src, row] of Object.entries(numerical)) {
    const kept: Record<string, number> = {}
    for (const [dst, cost] of Object.entries(row)) { const v = rank(cost); if (keep(v)) kept[dst] = v }
    out[src] = kept
  }
  return out
}
