/**
 * The ALTO server (RFC 7285) on a real socket: every resource's media type and JSON shape as in
 * the RFC's examples (meta.vtag, dependent-vtags, cost-type, cost-map nesting, endpoint maps keyed
 * by typed addresses), numerical vs ordinal costs, filtered maps and constraints, path costs
 * through intermediate PIDs, longest-prefix match, every error the protocol and HTTP give,
 * the vtag across reloads, the SDK client, and `berth alto serve` as its own process.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { copyFile, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { Agent, request } from 'undici'
import { createAltoServer, type AltoServer } from '../../src/overlay/alto/server.ts'
import { loadTopology, Topology, type TopologySpec } from '../../src/overlay/alto/topology.ts'
import { AltoClient, ALTO_MEDIA_TYPES as MEDIA } from '../../src/sdk/alto-client.ts'
import { AltoRequestError, InvalidConfigError } from '../../src/core/errors.ts'
import { BERTH_BIN, firstJsonLine, runBerth, stopper } from '../interop/_berth-cli.ts'

const FIXTURE = fileURLToPath(new URL('../fixtures/alto-three-regions.json', import.meta.url))

interface Answer { status: number, type: string, body: any, headers: Headers }

async function get (url: string, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, { headers })
  return await toAnswer(res)
}

async function post (url: string, body: unknown, contentType: string | undefined, headers: Record<string, string> = {}): Promise<Answer> {
  const res = await fetch(url, {
    method: 'POST',
    headers: { ...(contentType !== undefined ? { 'content-type': contentType } : {}), ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body)
  })
  return await toAnswer(res)
}

async function toAnswer (res: Response): Promise<Answer> {
  const text = await res.text()
  const type = res.headers.get('content-type') ?? ''
  let body: unknown = text
  if (type.includes('json')) body = JSON.parse(text)
  // The whole header, parameters included: RFC 7285's media types are sent exactly as named.
  return { status: res.status, type, body, headers: res.headers }
}

const NUMERICAL = { 'cost-mode': 'numerical', 'cost-metric': 'routingcost' }
const ORDINAL = { 'cost-mode': 'ordinal', 'cost-metric': 'routingcost' }

function assertVtag (vtag: any, resourceId: string): void {
  assert.deepEqual(Object.keys(vtag).sort(), ['resource-id', 'tag'])
  assert.equal(vtag['resource-id'], resourceId)
  // RFC 7285 §10.3: at most 64 printable ASCII characters.
  assert.match(vtag.tag, /^[\x21-\x7e]{1,64}$/)
}

describe('ALTO server (RFC 7285)', async () => {
  let server: AltoServer
  let dir: Directory

  interface Directory { meta: any, resources: Record<string, { uri: string, 'media-type': string, accepts?: string, capabilities?: any, uses?: string[] }> }
  const uri = (id: string): string => dir.resources[id]!.uri

  before(async () => {
    server = await createAltoServer({ listen: '127.0.0.1:0', topologyFile: FIXTURE })
    await server.start()
    dir = (await get(`${server.url}/`)).body
  })
  after(async () => { await server.stop() })

  describe('information resource directory', () => {
    it('is served at / and /directory as application/alto-directory+json', async () => {
      for (const path of ['/', '/directory']) {
        const a = await get(server.url + path, { accept: `${MEDIA.directory},${MEDIA.error}` })
        assert.equal(a.status, 200)
        assert.equal(a.type, MEDIA.directory)
        assert.deepEqual(a.body, dir)
      }
    })

    it('lists cost types, the default network map, and every resource with uses and capabilities', () => {
      assert.deepEqual(dir.meta['cost-types'], { 'num-routingcost': NUMERICAL, 'ord-routingcost': ORDINAL })
      assert.equal(dir.meta['default-alto-network-map'], 'default-network-map')
      const r = dir.resources
      assert.deepEqual(Object.keys(r).sort(), ['default-network-map', 'endpoint-cost', 'endpoint-property', 'filtered-cost-map', 'routingcost-numerical', 'routingcost-ordinal'])
      assert.equal(r['default-network-map']!['media-type'], MEDIA.networkMap)
      assert.equal(r['routingcost-numerical']!['media-type'], MEDIA.costMap)
      assert.deepEqual(r['routingcost-numerical']!.capabilities, { 'cost-type-names': ['num-routingcost'] })
      assert.deepEqual(r['routingcost-ordinal']!.capabilities, { 'cost-type-names': ['ord-routingcost'] })
      assert.deepEqual(r['filtered-cost-map']!.capabilities, { 'cost-constraints': true, 'cost-type-names': ['num-routingcost', 'ord-routingcost'] })
      assert.equal(r['filtered-cost-map']!.accepts, MEDIA.costMapFilter)
      assert.equal(r['endpoint-property']!['media-type'], MEDIA.endpointProperty)
      assert.equal(r['endpoint-property']!.accepts, MEDIA.endpointPropertyParams)
      assert.deepEqual(r['endpoint-property']!.capabilities, { 'prop-types': ['default-network-map.pid'] })
      assert.equal(r['endpoint-cost']!['media-type'], MEDIA.endpointCost)
      assert.equal(r['endpoint-cost']!.accepts, MEDIA.endpointCostParams)
      for (const id of ['routingcost-numerical', 'routingcost-ordinal', 'filtered-cost-map', 'endpoint-property']) assert.deepEqual(r[id]!.uses, ['default-network-map'])
      for (const entry of Object.values(r)) assert.ok(entry.uri.startsWith(server.url + '/'), entry.uri)
    })

    it('every GET resource it lists answers with the media type it declares', async () => {
      for (const [id, entry] of Object.entries(dir.resources)) {
        if (entry.accepts !== undefined) continue
        const a = await get(entry.uri)
        assert.equal(a.status, 200, id)
        assert.equal(a.type, entry['media-type'], id)
      }
    })
  })

  describe('network map', () => {
    it('has meta.vtag and each PID\'s blocks grouped by address type', async () => {
      const a = await get(uri('default-network-map'), { accept: MEDIA.networkMap })
      assert.equal(a.status, 200)
      assert.equal(a.type, MEDIA.networkMap)
      assert.deepEqual(Object.keys(a.body).sort(), ['meta', 'network-map'])
      assertVtag(a.body.meta.vtag, 'default-network-map')
      assert.equal(a.body.meta.vtag.tag, server.topology.vtag)
      assert.deepEqual(a.body['network-map'], {
        east: { ipv4: ['127.1.0.0/16'], ipv6: ['fd00:1::/32'] },
        south: { ipv4: ['127.3.0.0/16'] },
        west: { ipv4: ['127.2.0.0/16'] }
      })
    })
  })

  describe('cost maps', () => {
    it('numerical: cheapest paths, through intermediate PIDs, 0 within a PID, with dependent-vtags and cost-type', async () => {
      const a = await get(uri('routingcost-numerical'))
      assert.equal(a.type, MEDIA.costMap)
      assert.deepEqual(Object.keys(a.body).sort(), ['cost-map', 'meta'])
      assert.deepEqual(a.body.meta['cost-type'], NUMERICAL)
      assert.equal(a.body.meta['dependent-vtags'].length, 1)
      assertVtag(a.body.meta['dependent-vtags'][0], 'default-network-map')
      assert.equal(a.body.meta['dependent-vtags'][0].tag, server.topology.vtag)
      assert.deepEqual(a.body['cost-map'], {
        east: { east: 0, south: 15, west: 10 },
        south: { east: 15, south: 0, west: 5 },
        west: { east: 10, south: 5, west: 0 }
      })
    })

    it('ordinal: ranks 1..n of the numerical costs, equal costs sharing a rank', async () => {
      const a = await get(uri('routingcost-ordinal'))
      assert.equal(a.type, MEDIA.costMap)
      assert.deepEqual(a.body.meta['cost-type'], ORDINAL)
      // numerical values 0, 5, 10, 15 → ranks 1, 2, 3, 4
      assert.deepEqual(a.body['cost-map'], {
        east: { east: 1, south: 4, west: 3 },
        south: { east: 4, south: 1, west: 2 },
        west: { east: 3, south: 2, west: 1 }
      })
    })

    it('a cheaper detour beats a direct link, and unreachable PIDs are left out', async () => {
      const t = Topology.from({
        pids: { a: ['10.1.0.0/16'], b: ['10.2.0.0/16'], c: ['10.3.0.0/16'], island: ['10.9.0.0/16'] },
        links: [{ from: 'a', to: 'c', cost: 100 }, { from: 'a', to: 'b', cost: 1 }, { from: 'c', to: 'b', cost: 2 }]
      })
      const s = await createAltoServer({ listen: '127.0.0.1:0', topology: t })
      await s.start()
      try {
        const a = await get(`${s.url}/costmap/routingcost-numerical`)
        assert.deepEqual(a.body['cost-map'], {
          a: { a: 0, b: 1, c: 3 },
          b: { a: 1, b: 0, c: 2 },
          c: { a: 3, b: 2, c: 0 },
          island: { island: 0 }
        })
      } finally { await s.stop() }
    })
  })

  describe('filtered cost map', () => {
    it('answers application/alto-costmap+json for the PIDs asked, in the mode asked', async () => {
      const a = await post(uri('filtered-cost-map'), { 'cost-type': NUMERICAL, pids: { srcs: ['east'], dsts: ['south', 'west'] } }, MEDIA.costMapFilter, { accept: `${MEDIA.costMap},${MEDIA.error}` })
      assert.equal(a.status, 200)
      assert.equal(a.type, MEDIA.costMap)
      assert.deepEqual(a.body.meta, { 'dependent-vtags': [{ 'resource-id': 'default-network-map', tag: server.topology.vtag }], 'cost-type': NUMERICAL })
      assert.deepEqual(a.body['cost-map'], { east: { south: 15, west: 10 } })
    })

    it('empty lists mean every PID; undefined PIDs are ignored; no "pids" is the whole map', async () => {
      const a = await post(uri('filtered-cost-map'), { 'cost-type': NUMERICAL, pids: { srcs: ['west', 'nowhere'], dsts: [] } }, MEDIA.costMapFilter)
      assert.deepEqual(a.body['cost-map'], { west: { east: 10, south: 5, west: 0 } })
      const whole = await post(uri('filtered-cost-map'), { 'cost-type': NUMERICAL }, MEDIA.costMapFilter)
      assert.deepEqual(whole.body['cost-map'], (await get(uri('routingcost-numerical'))).body['cost-map'])
    })

    it('ordinal ranks the costs it returns; constraints filter in the requested mode', async () => {
      const ord = await post(uri('filtered-cost-map'), { 'cost-type': ORDINAL, pids: { srcs: ['east'], dsts: [] } }, MEDIA.costMapFilter)
      assert.deepEqual(ord.body.meta['cost-type'], ORDINAL)
      assert.deepEqual(ord.body['cost-map'], { east: { east: 1, west: 2, south: 3 } })
      const near = await post(uri('filtered-cost-map'), { 'cost-type': NUMERICAL, constraints: ['le 10', 'gt 0'], pids: { srcs: [], dsts: [] } }, MEDIA.costMapFilter)
      assert.deepEqual(near.body['cost-map'], { east: { west: 10 }, south: { west: 5 }, west: { east: 10, south: 5 } })
    })
  })

  describe('endpoint property service', () => {
    it('maps typed addresses to their PID, under the property name asked', async () => {
      const a = await post(uri('endpoint-property'), { properties: ['default-network-map.pid', 'pid'], endpoints: ['ipv4:127.1.2.3', 'ipv4:127.3.0.1', 'ipv6:fd00:1::5', 'ipv4:192.0.2.1'] }, MEDIA.endpointPropertyParams, { accept: `${MEDIA.endpointProperty},${MEDIA.error}` })
      assert.equal(a.status, 200)
      assert.equal(a.type, MEDIA.endpointProperty)
      assert.deepEqual(a.body, {
        meta: { 'dependent-vtags': [{ 'resource-id': 'default-network-map', tag: server.topology.vtag }] },
        'endpoint-properties': {
          'ipv4:127.1.2.3': { 'default-network-map.pid': 'east', pid: 'east' },
          'ipv4:127.3.0.1': { 'default-network-map.pid': 'south', pid: 'south' },
          'ipv6:fd00:1::5': { 'default-network-map.pid': 'east', pid: 'east' },
          // no block covers it: the property is left out for that endpoint
          'ipv4:192.0.2.1': {}
        }
      })
    })
  })

  describe('endpoint cost service', () => {
    it('answers an endpoint-cost-map keyed by typed addresses, with the cost type in meta', async () => {
      const a = await post(uri('endpoint-cost'), { 'cost-type': NUMERICAL, endpoints: { srcs: ['ipv4:127.1.0.9'], dsts: ['ipv4:127.1.0.1', 'ipv4:127.2.0.1', 'ipv4:127.3.0.1', 'ipv4:192.0.2.1'] } }, MEDIA.endpointCostParams, { accept: `${MEDIA.endpointCost},${MEDIA.error}` })
      assert.equal(a.status, 200)
      assert.equal(a.type, MEDIA.endpointCost)
      assert.deepEqual(a.body, {
        meta: { 'cost-type': NUMERICAL },
        // 192.0.2.1 is in no PID, so it has no cost
        'endpoint-cost-map': { 'ipv4:127.1.0.9': { 'ipv4:127.1.0.1': 0, 'ipv4:127.2.0.1': 10, 'ipv4:127.3.0.1': 15 } }
      })
    })

    it('ordinal ranks within the answer; constraints apply', async () => {
      const a = await post(uri('endpoint-cost'), { 'cost-type': ORDINAL, endpoints: { srcs: ['ipv4:127.3.0.9'], dsts: ['ipv4:127.1.0.1', 'ipv4:127.2.0.1'] } }, MEDIA.endpointCostParams)
      assert.deepEqual(a.body['endpoint-cost-map'], { 'ipv4:127.3.0.9': { 'ipv4:127.1.0.1': 2, 'ipv4:127.2.0.1': 1 } })
      const b = await post(uri('endpoint-cost'), { 'cost-type': NUMERICAL, constraints: ['lt 15'], endpoints: { srcs: ['ipv4:127.1.0.9', 'ipv6:fd00:1::1'], dsts: ['ipv4:127.2.0.1', 'ipv4:127.3.0.1'] } }, MEDIA.endpointCostParams)
      assert.deepEqual(b.body['endpoint-cost-map'], { 'ipv4:127.1.0.9': { 'ipv4:127.2.0.1': 10 }, 'ipv6:fd00:1::1': { 'ipv4:127.2.0.1': 10 } })
    })

    it('without sources, costs are from the client\'s own address (a user bound in a region)', async () => {
      const dispatcher = new Agent({ localAddress: '127.2.0.77' })
      try {
        const res = await request(uri('endpoint-cost'), {
          method: 'POST',
          dispatcher,
          headers: { 'content-type': MEDIA.endpointCostParams },
          body: JSON.stringify({ 'cost-type': NUMERICAL, endpoints: { dsts: ['ipv4:127.1.0.1', 'ipv4:127.3.0.1'] } })
        })
        assert.equal(res.statusCode, 200)
        assert.deepEqual(await res.body.json(), { meta: { 'cost-type': NUMERICAL }, 'endpoint-cost-map': { 'ipv4:127.2.0.77': { 'ipv4:127.1.0.1': 10, 'ipv4:127.3.0.1': 5 } } })
      } finally { await dispatcher.close() }
    })
  })

  describe('longest-prefix match', () => {
    const spec: TopologySpec = {
      pids: {
        wide: ['10.0.0.0/8'],
        narrow: ['10.1.0.0/16'],
        narrowest: ['10.1.2.3/32'],
        v6: ['2001:db8::/32'],
        v6narrow: ['2001:db8:1::/48'],
        default: ['0.0.0.0/0', '::/0']
      },
      links: [{ from: 'wide', to: 'narrow', cost: 1 }]
    }

    it('the most specific block wins; 0.0.0.0/0 and ::/0 catch the rest', () => {
      const t = Topology.from(spec)
      assert.equal(t.pidOf('10.200.0.1'), 'wide')
      assert.equal(t.pidOf('10.1.9.9'), 'narrow')
      assert.equal(t.pidOf('10.1.2.3'), 'narrowest')
      assert.equal(t.pidOf('10.1.2.4'), 'narrow')
      assert.equal(t.pidOf('2001:db8:2::1'), 'v6')
      assert.equal(t.pidOf('2001:db8:1:ffff::1'), 'v6narrow')
      assert.equal(t.pidOf('192.0.2.1'), 'default')
      assert.equal(t.pidOf('::1'), 'default')
      assert.equal(t.pidOf('not-an-address'), undefined)
    })

    it('through the endpoint property service, IPv4-mapped and compressed IPv6 included', async () => {
      const s = await createAltoServer({ listen: '127.0.0.1:0', topology: spec })
      await s.start()
      try {
        const a = await post(`${s.url}/endpointprop/lookup`, { properties: ['pid'], endpoints: ['ipv4:10.1.2.3', 'ipv4:10.1.0.1', 'ipv4:10.3.0.1', 'ipv6:2001:db8:1::9', 'ipv6:2001:0db8:0000::1', 'ipv4:8.8.8.8'] }, MEDIA.endpointPropertyParams)
        assert.deepEqual(a.body['endpoint-properties'], {
          'ipv4:10.1.2.3': { pid: 'narrowest' },
          'ipv4:10.1.0.1': { pid: 'narrow' },
          'ipv4:10.3.0.1': { pid: 'wide' },
          'ipv6:2001:db8:1::9': { pid: 'v6narrow' },
          'ipv6:2001:0db8:0000::1': { pid: 'v6' },
          'ipv4:8.8.8.8': { pid: 'default' }
        })
        const map = await get(`${s.url}/networkmap`)
        assert.deepEqual(map.body['network-map'].default, { ipv4: ['0.0.0.0/0'], ipv6: ['::/0'] })
      } finally { await s.stop() }
    })
  })

  describe('errors', () => {
    async function altoError (a: Answer, code: string, field?: string): Promise<void> {
      assert.equal(a.status, 400, JSON.stringify(a.body))
      assert.equal(a.type, MEDIA.error)
      assert.equal(a.body.meta.code, code, JSON.stringify(a.body))
      if (field !== undefined) assert.equal(a.body.meta.field, field, JSON.stringify(a.body))
    }

    it('415 for a body in another media type, or none, before the body is read', async () => {
      for (const [id, type] of [['filtered-cost-map', 'application/json'], ['endpoint-cost', MEDIA.costMapFilter], ['endpoint-property', 'text/plain'], ['endpoint-cost', undefined]] as const) {
        const a = await post(uri(id), '{not json', type)
        assert.equal(a.status, 415, `${id} ${type}`)
      }
      // parameters on the media type are fine
      const ok = await post(uri('filtered-cost-map'), { 'cost-type': NUMERICAL }, `${MEDIA.costMapFilter}; charset=utf-8`)
      assert.equal(ok.status, 200)
    })

    it('E_SYNTAX for a body that is not a JSON object', async () => {
      for (const body of ['{"cost-type": ', '', '[1,2]', '"text"', 'null']) {
        const a = await post(uri('endpoint-cost'), body, MEDIA.endpointCostParams)
        await altoError(a, 'E_SYNTAX')
        assert.equal(typeof a.body.meta['syntax-error'], 'string')
      }
    })

    it('E_MISSING_FIELD names the field', async () => {
      await altoError(await post(uri('filtered-cost-map'), { pids: { srcs: [], dsts: [] } }, MEDIA.costMapFilter), 'E_MISSING_FIELD', 'cost-type')
      await altoError(await post(uri('filtered-cost-map'), { 'cost-type': { 'cost-metric': 'routingcost' } }, MEDIA.costMapFilter), 'E_MISSING_FIELD', 'cost-type/cost-mode')
      await altoError(await post(uri('filtered-cost-map'), { 'cost-type': NUMERICAL, pids: { dsts: [] } }, MEDIA.costMapFilter), 'E_MISSING_FIELD', 'pids/srcs')
      await altoError(await post(uri('endpoint-cost'), { 'cost-type': NUMERICAL }, MEDIA.endpointCostParams), 'E_MISSING_FIELD', 'endpoints')
      await altoError(await post(uri('endpoint-cost'), { 'cost-type': NUMERICAL, endpoints: { srcs: ['ipv4:127.1.0.1'] } }, MEDIA.endpointCostParams), 'E_MISSING_FIELD', 'endpoints/dsts')
      await altoError(await post(uri('endpoint-property'), { endpoints: ['ipv4:127.1.0.1'] }, MEDIA.endpointPropertyParams), 'E_MISSING_FIELD', 'properties')
      await altoError(await post(uri('endpoint-property'), { properties: ['pid'] }, MEDIA.endpointPropertyParams), 'E_MISSING_FIELD', 'endpoints')
    })

    it('E_INVALID_FIELD_TYPE names the field and the value', async () => {
      const a = await post(uri('filtered-cost-map'), { 'cost-type': 'routingcost' }, MEDIA.costMapFilter)
      await altoError(a, 'E_INVALID_FIELD_TYPE', 'cost-type')
      assert.equal(a.body.meta.value, 'routingcost')
      await altoError(await post(uri('filtered-cost-map'), { 'cost-type': { 'cost-mode': 1, 'cost-metric': 'routingcost' } }, MEDIA.costMapFilter), 'E_INVALID_FIELD_TYPE', 'cost-type/cost-mode')
      await altoError(await post(uri('filtered-cost-map'), { 'cost-type': NUMERICAL, pids: ['east'] }, MEDIA.costMapFilter), 'E_INVALID_FIELD_TYPE', 'pids')
      await altoError(await post(uri('filtered-cost-map'), { 'cost-type': NUMERICAL, pids: { srcs: 'east', dsts: [] } }, MEDIA.costMapFilter), 'E_INVALID_FIELD_TYPE', 'pids/srcs')
      await altoError(await post(uri('filtered-cost-map'), { 'cost-type': NUMERICAL, constraints: 'le 5' }, MEDIA.costMapFilter), 'E_INVALID_FIELD_TYPE', 'constraints')
      await altoError(await post(uri('endpoint-cost'), { 'cost-type': NUMERICAL, endpoints: { dsts: [42] } }, MEDIA.endpointCostParams), 'E_INVALID_FIELD_TYPE', 'endpoints/dsts')
      await altoError(await post(uri('endpoint-cost'), { 'cost-type': NUMERICAL, endpoints: 'ipv4:127.1.0.1' }, MEDIA.endpointCostParams), 'E_INVALID_FIELD_TYPE', 'endpoints')
      await altoError(await post(uri('endpoint-property'), { properties: 'pid', endpoints: [] }, MEDIA.endpointPropertyParams), 'E_INVALID_FIELD_TYPE', 'properties')
    })

    it('E_INVALID_FIELD_VALUE names the field and the value', async () => {
      const cases: Array<[string, unknown, string, string, unknown]> = [
        ['filtered-cost-map', { 'cost-type': { 'cost-mode': 'cardinal', 'cost-metric': 'routingcost' } }, MEDIA.costMapFilter, 'cost-type/cost-mode', 'cardinal'],
        ['filtered-cost-map', { 'cost-type': { 'cost-mode': 'numerical', 'cost-metric': 'hopcount' } }, MEDIA.costMapFilter, 'cost-type/cost-metric', 'hopcount'],
        ['filtered-cost-map', { 'cost-type': NUMERICAL, constraints: ['less 5'] }, MEDIA.costMapFilter, 'constraints', 'less 5'],
        ['endpoint-cost', { 'cost-type': NUMERICAL, endpoints: { dsts: ['127.1.0.1'] } }, MEDIA.endpointCostParams, 'endpoints/dsts', '127.1.0.1'],
        ['endpoint-cost', { 'cost-type': NUMERICAL, endpoints: { srcs: ['ipv4:::1'], dsts: ['ipv4:127.1.0.1'] } }, MEDIA.endpointCostParams, 'endpoints/srcs', 'ipv4:::1'],
        ['endpoint-cost', { 'cost-type': NUMERICAL, endpoints: { srcs: ['ipv6:127.1.0.1'], dsts: ['ipv4:127.1.0.1'] } }, MEDIA.endpointCostParams, 'endpoints/srcs', 'ipv6:127.1.0.1'],
        ['endpoint-cost', { 'cost-type': NUMERICAL, endpoints: { dsts: ['ipv4:300.1.0.1'] } }, MEDIA.endpointCostParams, 'endpoints/dsts', 'ipv4:300.1.0.1'],
        ['endpoint-cost', { 'cost-type': NUMERICAL, endpoints: { srcs: ['ipv4:127.1.0.1'], dsts: [] } }, MEDIA.endpointCostParams, 'endpoints/dsts', undefined],
        ['endpoint-property', { properties: ['priv:bandwidth'], endpoints: ['ipv4:127.1.0.1'] }, MEDIA.endpointPropertyParams, 'properties', 'priv:bandwidth'],
        ['endpoint-property', { properties: [], endpoints: ['ipv4:127.1.0.1'] }, MEDIA.endpointPropertyParams, 'properties', undefined],
        ['endpoint-property', { properties: ['pid'], endpoints: ['ipv4:127.1.0.1/32'] }, MEDIA.endpointPropertyParams, 'endpoints', 'ipv4:127.1.0.1/32']
      ]
      for (const [id, body, type, field, value] of cases) {
        const a = await post(uri(id), body, type)
        await altoError(a, 'E_INVALID_FIELD_VALUE', field)
        if (value !== undefined) assert.equal(a.body.meta.value, value)
      }
    })

    it('404 for an unknown resource, 405 for the wrong method, 406 for an Accept that admits nothing we send', async () => {
      assert.equal((await get(`${server.url}/costmap/hopcount`)).status, 404)
      assert.equal((await post(`${server.url}/nowhere`, {}, MEDIA.costMapFilter)).status, 404)
      const wrongMethod = await get(uri('endpoint-cost'))
      assert.equal(wrongMethod.status, 405)
      assert.equal(wrongMethod.headers.get('allow'), 'POST')
      const postToMap = await post(uri('default-network-map'), {}, MEDIA.costMapFilter)
      assert.equal(postToMap.status, 405)
      assert.equal(postToMap.headers.get('allow'), 'GET, HEAD')
      assert.equal((await get(uri('default-network-map'), { accept: MEDIA.costMap })).status, 406)
      assert.equal((await post(uri('filtered-cost-map'), { 'cost-type': NUMERICAL }, MEDIA.costMapFilter, { accept: MEDIA.endpointCost })).status, 406)
      assert.equal((await get(uri('default-network-map'), { accept: 'application/*' })).status, 200)
      assert.equal((await get(uri('default-network-map'), { accept: 'text/html, */*;q=0.1' })).status, 200)
    })
  })

  describe('reload and vtag', () => {
    it('the vtag changes when the map or a cost changes, and not when only the writing does', async () => {
      const base = JSON.parse(await readFile(FIXTURE, 'utf8')) as TopologySpec
      const first = server.topology.vtag
      const reordered: TopologySpec = { pids: { south: ['127.3.0.0/16'], west: ['127.2.0.0/16'], east: ['fd00:1:0::/32', '127.1.0.0/16'] }, links: [{ from: 'south', to: 'west', cost: 5 }, { from: 'west', to: 'east', cost: 10 }] }
      assert.equal(Topology.from(reordered).vtag, first)
      try {
        const cheaper = await server.reload({ ...base, links: [...base.links!, { from: 'east', to: 'south', cost: 1 }] })
        assert.notEqual(cheaper.vtag, first)
        const map = await get(uri('default-network-map'))
        assert.equal(map.body.meta.vtag.tag, cheaper.vtag)
        const costs = await get(uri('routingcost-numerical'))
        assert.equal(costs.body.meta['dependent-vtags'][0].tag, cheaper.vtag)
        assert.equal(costs.body['cost-map'].east.south, 1)
        const moreBlocks = await server.reload({ ...base, pids: { ...base.pids, south: ['127.3.0.0/16', '127.4.0.0/16'] } })
        assert.notEqual(moreBlocks.vtag, first)
        assert.notEqual(moreBlocks.vtag, cheaper.vtag)
        // a bad topology leaves the served one in place
        await assert.rejects(server.reload({ pids: { east: ['127.1.0.1/16'] } }), InvalidConfigError)
        assert.equal(server.topology.vtag, moreBlocks.vtag)
        // without an argument: the file again
        assert.equal((await server.reload()).vtag, first)
      } finally { await server.reload() }
    })
  })

  describe('topology files', () => {
    const bad: Array<[string, unknown, RegExp]> = [
      ['not an object', [], /JSON object/],
      ['no PIDs', { pids: {} }, /at least one PID/],
      ['unknown key', { pids: { a: ['10.0.0.0/8'] }, link: [] }, /unknown key "link"/],
      ['bad PID name', { pids: { 'a b': ['10.0.0.0/8'] } }, /PID name "a b"/],
      ['blocks not a list', { pids: { a: '10.0.0.0/8' } }, /pids\.a must be a list/],
      ['not CIDR', { pids: { a: ['10.0.0.0'] } }, /not a CIDR block/],
      ['not an address', { pids: { a: ['10.0.0.300/8'] } }, /IPv4 or IPv6/],
      ['prefix too long', { pids: { a: ['10.0.0.0/33'] } }, /prefix length/],
      ['host bits', { pids: { a: ['127.1.0.1/16'] } }, /host bits set \(did you mean 127\.1\.0\.0\/16\?\)/],
      ['same block twice', { pids: { a: ['10.0.0.0/8'], b: ['10.0.0.0/8'] } }, /in both PIDs a and b/],
      ['link to unknown PID', { pids: { a: ['10.0.0.0/8'] }, links: [{ from: 'a', to: 'zz', cost: 1 }] }, /links\[0\]\.to: "zz" is not one of the PIDs/],
      ['negative cost', { pids: { a: ['10.0.0.0/8'], b: ['11.0.0.0/8'] }, links: [{ from: 'a', to: 'b', cost: -1 }] }, /cost must be a number/],
      ['self link', { pids: { a: ['10.0.0.0/8'] }, links: [{ from: 'a', to: 'a', cost: 1 }] }, /to itself/],
      ['link twice', { pids: { a: ['10.0.0.0/8'], b: ['11.0.0.0/8'] }, links: [{ from: 'a', to: 'b', cost: 1 }, { from: 'b', to: 'a', cost: 2 }] }, /given twice/]
    ]
    for (const [what, value, message] of bad) {
      it(`refuses ${what} with ERR_INVALID_CONFIG`, () => {
        assert.throws(() => Topology.from(value, 'topo.json'), (err: unknown) => err instanceof InvalidConfigError && err.code === 'ERR_INVALID_CONFIG' && /^topo\.json: /.test(err.message) && message.test(err.message))
      })
    }

    it('refuses a file that is missing or not JSON', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'berth-alto-'))
      try {
        await assert.rejects(loadTopology(join(dir, 'missing.json')), /cannot read topology file/)
        await writeFile(join(dir, 'bad.json'), '{"pids": ')
        await assert.rejects(loadTopology(join(dir, 'bad.json')), /not valid JSON/)
      } finally { await rm(dir, { recursive: true, force: true }) }
    })
  })

  describe('SDK client', () => {
    it('finds resources through the directory and ranks endpoints by cost', async () => {
      const alto = new AltoClient(server.url)
      assert.deepEqual(Object.keys((await alto.networkMap())['network-map']).sort(), ['east', 'south', 'west'])
      assert.equal((await alto.costMap({ mode: 'ordinal' }))['cost-map'].east!.south, 4)
      const ranked = await alto.endpointCost(['127.3.0.9', 'ipv4:127.1.0.9'], ['127.1.0.1', '127.2.0.1', '127.3.0.1', '192.0.2.1'])
      assert.deepEqual(ranked, [
        { src: 'ipv4:127.3.0.9', ranked: [{ endpoint: 'ipv4:127.3.0.1', cost: 0 }, { endpoint: 'ipv4:127.2.0.1', cost: 5 }, { endpoint: 'ipv4:127.1.0.1', cost: 15 }] },
        { src: 'ipv4:127.1.0.9', ranked: [{ endpoint: 'ipv4:127.1.0.1', cost: 0 }, { endpoint: 'ipv4:127.2.0.1', cost: 10 }, { endpoint: 'ipv4:127.3.0.1', cost: 15 }] }
      ])
      await assert.rejects(alto.endpointCost(['nonsense'], ['127.1.0.1']), (err: unknown) => err instanceof AltoRequestError && err.altoCode === 'E_INVALID_FIELD_VALUE')
    })
  })
})

describe('berth alto serve', async () => {
  it('prints its URL, serves the topology, reloads on SIGHUP and stops on SIGTERM', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-alto-cli-'))
    const file = join(dir, 'topology.json')
    await copyFile(FIXTURE, file)
    const child = spawn(process.execPath, [BERTH_BIN, 'alto', 'serve', '--json', '--listen', '127.0.0.1:0', '--topology', file], { stdio: ['ignore', 'pipe', 'pipe'] })
    let stderr = ''
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr += s })
    const stop = stopper(child)
    try {
      const info = await firstJsonLine(child, () => stderr)
      assert.match(String(info.url), /^http:\/\/127\.0\.0\.1:\d+$/)
      assert.equal(info.directory, `${String(info.url)}/`)
      const directory = await get(String(info.directory))
      assert.equal(directory.type, MEDIA.directory)
      const before = (await get(`${String(info.url)}/networkmap`)).body.meta.vtag.tag
      assert.equal(before, info.vtag)

      const spec = JSON.parse(await readFile(file, 'utf8')) as TopologySpec
      spec.links!.push({ from: 'east', to: 'south', cost: 2 })
      await writeFile(file, JSON.stringify(spec))
      child.kill('SIGHUP')
      let after = before
      for (let i = 0; i < 100 && after === before; i++) {
        await new Promise(resolve => setTimeout(resolve, 50))
        after = (await get(`${String(info.url)}/networkmap`)).body.meta.vtag.tag
      }
      assert.notEqual(after, before)
      assert.equal((await get(`${String(info.url)}/costmap/routingcost-numerical`)).body['cost-map'].east.south, 2)

      // a broken file on SIGHUP is reported and the map being served stays
      await writeFile(file, '{"pids": {"east": ["127.1.0.1/16"]}}')
      child.kill('SIGHUP')
      for (let i = 0; i < 100 && !stderr.includes('ERR_INVALID_CONFIG'); i++) await new Promise(resolve => setTimeout(resolve, 50))
      assert.match(stderr, /ERR_INVALID_CONFIG: .*host bits set/)
      assert.equal((await get(`${String(info.url)}/networkmap`)).body.meta.vtag.tag, after)

      assert.equal(await stop(), 0)
    } finally {
      await stop()
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('fails with one line and exit code 2 on a bad topology file', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-alto-cli-'))
    try {
      const file = join(dir, 'bad.json')
      await writeFile(file, JSON.stringify({ pids: { east: ['127.1.0.0/16'] }, links: [{ from: 'east', to: 'west', cost: 1 }] }))
      const r = await runBerth(['alto', 'serve', '--listen', '127.0.0.1:0', '--topology', file], { timeoutMs: 30_000 })
      assert.equal(r.code, 2, r.stderr)
      assert.match(r.stderr, /^berth: ERR_INVALID_CONFIG: .*"west" is not one of the PIDs\n$/)
      const missing = await runBerth(['alto', 'serve', '--listen', '127.0.0.1:0'], { timeoutMs: 30_000 })
      assert.equal(missing.code, 2)
      assert.match(missing.stderr, /--topology/)
    } finally { await rm(dir, { recursive: true, force: true }) }
  })
})
