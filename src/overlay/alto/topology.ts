/**
 * The ALTO server's view of the network: PIDs (groups of address blocks) and the links between
 * them with costs, read from a topology file (see DESIGN.md, "Service routing").
 *
 * Everything a request needs is computed once when a topology is built — path costs between
 * every pair of PIDs (cheapest path over symmetric links, 0 within a PID, unreachable pairs
 * absent), the blocks sorted for longest-prefix match, and the vtag — so a reload swaps one
 * immutable object and requests never see a half-built map.
 */
import { createHash } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { isIPv4, isIPv6 } from 'node:net'
import { InvalidConfigError } from '../../core/errors.ts'

/** The topology file, as written. */
export interface TopologySpec {
  pids: Record<string, string[]>
  links?: LinkSpec[]
}

export interface LinkSpec { from: string, to: string, cost: number }

export type AddressFamily = 'ipv4' | 'ipv6'

/** One address block of a PID, parsed. */
interface Block { family: AddressFamily, network: bigint, length: number, pid: string }

/** RFC 7285 §10.1: PIDName is at most 64 of these characters ('.' is reserved for ResourceId.pid property names). */
const PID_NAME = /^[A-Za-z0-9\-:@_]{1,64}$/
const FAMILY_BITS: Record<AddressFamily, number> = { ipv4: 32, ipv6: 128 }

function ipv4ToBigint (text: string): bigint {
  return text.split('.').reduce((acc, part) => (acc << 8n) | BigInt(Number(part)), 0n)
}

function ipv6ToBigint (text: string): bigint {
  let s = text
  // An embedded IPv4 tail (::ffff:1.2.3.4) is two 16-bit groups.
  if (s.includes('.')) {
    const cut = s.lastIndexOf(':')
    const v4 = ipv4ToBigint(s.slice(cut + 1))
    s = `${s.slice(0, cut + 1)}${(v4 >> 16n).toString(16)}:${(v4 & 0xffffn).toString(16)}`
  }
  const [head, tail] = s.includes('::') ? s.split('::') as [string, string] : [s, undefined]
  const headGroups = head === '' ? [] : head.split(':')
  const tailGroups = tail === undefined || tail === '' ? [] : tail.split(':')
  const zeros = tail === undefined ? [] : new Array<string>(8 - headGroups.length - tailGroups.length).fill('0')
  return [...headGroups, ...zeros, ...tailGroups].reduce((acc, group) => (acc << 16n) | BigInt(parseInt(group, 16)), 0n)
}

/** An IP address as [family, value], or undefined when it is not one (zones are not addresses here). */
export function parseAddress (text: string): [AddressFamily, bigint] | undefined {
  if (isIPv4(text)) return ['ipv4', ipv4ToBigint(text)]
  if (isIPv6(text) && !text.includes('%')) return ['ipv6', ipv6ToBigint(text)]
  return undefined
}

function formatAddress (family: AddressFamily, value: bigint): string {
  if (family === 'ipv4') return [24n, 16n, 8n, 0n].map(shift => String((value >> shift) & 0xffn)).join('.')
  const groups: string[] = []
  for (let shift = 112n; shift >= 0n; shift -= 16n) groups.push(((value >> shift) & 0xffffn).toString(16))
  // The WHATWG URL parser writes the RFC 5952 compressed form; no need for our own.
  return new URL(`http://[${groups.join(':')}]`).hostname.slice(1, -1)
}

function parseBlock (text: unknown, pid: string): Block {
  const where = `pids.${pid}`
  if (typeof text !== 'string') throw new InvalidConfigError(`${where}: address blocks must be strings like "127.1.0.0/16"`)
  const slash = text.indexOf('/')
  if (slash < 0) throw new InvalidConfigError(`${where}: ${JSON.stringify(text)} is not a CIDR block (address/length)`)
  const address = parseAddress(text.slice(0, slash))
  if (address === undefined) throw new InvalidConfigError(`${where}: ${JSON.stringify(text)} does not start with an IPv4 or IPv6 address`)
  const [family, value] = address
  const lengthText = text.slice(slash + 1)
  const length = Number(lengthText)
  if (!/^\d{1,3}$/.test(lengthText) || length > FAMILY_BITS[family]) throw new InvalidConfigError(`${where}: ${JSON.stringify(text)} has a bad prefix length (0–${FAMILY_BITS[family]})`)
  const hostBits = BigInt(FAMILY_BITS[family] - length)
  // A block with host bits set is almost always a typo for a different block: refuse rather than guess.
  if ((value & ((1n << hostBits) - 1n)) !== 0n) throw new InvalidConfigError(`${where}: ${JSON.stringify(text)} has host bits set (did you mean ${formatAddress(family, (value >> hostBits) << hostBits)}/${length}?)`)
  return { family, network: value, length, pid }
}

function blockText (b: Block): string {
  return `${formatAddress(b.family, b.network)}/${b.length}`
}

function isRecord (value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value)
}

export class Topology {
  /** PID names, sorted */
  readonly pids: readonly string[]
  /** each PID's blocks in canonical text, sorted, per family (RFC 7285's EndpointAddrGroup) */
  readonly networkMap: Readonly<Record<string, { ipv4?: string[], ipv6?: string[] }>>
  readonly links: readonly LinkSpec[]
  /**
   * A hash of the normalised topology, links included: a change of costs alone must also make
   * clients that cache cost maps (keyed by their dependent vtag) fetch them again.
   */
  readonly vtag: string
  readonly #blocks: Block[]
  readonly #costs: Map<string, Map<string, number>>

  private constructor (pids: string[], blocks: Block[], links: LinkSpec[]) {
    this.pids = pids
    this.links = links
    // Longest prefix first, so the first match is the answer.
    this.#blocks = [...blocks].sort((a, b) => b.length - a.length)
    const networkMap: Record<string, { ipv4?: string[], ipv6?: string[] }> = {}
    for (const pid of pids) {
      const groups: { ipv4?: string[], ipv6?: string[] } = {}
      for (const family of ['ipv4', 'ipv6'] as const) {
        const own = blocks.filter(b => b.pid === pid && b.family === family).sort((a, b) => a.network < b.network ? -1 : a.network > b.network ? 1 : a.length - b.length)
        if (own.length > 0) groups[family] = own.map(blockText)
      }
      networkMap[pid] = groups
    }
    this.networkMap = networkMap
    this.#costs = pathCosts(pids, links)
    this.vtag = createHash('sha256').update(JSON.stringify({ networkMap, links })).digest('hex')
  }

  /** Validates a parsed topology file; `source` names it in errors. */
  static from (value: unknown, source = 'topology'): Topology {
    try {
      return Topology.#from(value)
    } catch (err) {
      if (err instanceof InvalidConfigError) throw new InvalidConfigError(`${source}: ${err.message}`)
      throw err
    }
  }

  static #from (value: unknown): Topology {
    if (!isRecord(value)) throw new InvalidConfigError('must be a JSON object with "pids" and "links"')
    for (const key of Object.keys(value)) if (key !== 'pids' && key !== 'links') throw new InvalidConfigError(`unknown key ${JSON.stringify(key)} (expected "pids" and "links")`)
    if (!isRecord(value.pids) || Object.keys(value.pids).length === 0) throw new InvalidConfigError('"pids" must be an object with at least one PID: {"name": ["10.0.0.0/8", …]}')
    const pids = Object.keys(value.pids).sort()
    const blocks: Block[] = []
    const owner = new Map<string, string>()
    for (const pid of pids) {
      // `__proto__` would be swallowed by the objects the maps are built in.
      if (!PID_NAME.test(pid) || pid === '__proto__') throw new InvalidConfigError(`PID name ${JSON.stringify(pid)}: 1–64 letters, digits, '-', ':', '@' or '_' (RFC 7285 PIDName)`)
      const list = value.pids[pid]
      if (!Array.isArray(list)) throw new InvalidConfigError(`pids.${pid} must be a list of address blocks`)
      for (const text of list) {
        const block = parseBlock(text, pid)
        const key = blockText(block)
        const other = owner.get(key)
        // The same block in two PIDs would make an endpoint's PID depend on file order.
        if (other !== undefined && other !== pid) throw new InvalidConfigError(`block ${key} is in both PIDs ${other} and ${pid}`)
        if (other === undefined) { owner.set(key, pid); blocks.push(block) }
      }
    }
    const links: LinkSpec[] = []
    const seen = new Set<string>()
    if (value.links !== undefined && !Array.isArray(value.links)) throw new InvalidConfigError('"links" must be a list of {"from", "to", "cost"}')
    for (const [i, link] of ((value.links ?? []) as unknown[]).entries()) {
      const where = `links[${i}]`
      if (!isRecord(link)) throw new InvalidConfigError(`${where} must be an object {"from", "to", "cost"}`)
      const { from, to, cost } = link
      for (const [name, end] of [['from', from], ['to', to]] as const) {
        if (typeof end !== 'string' || !Object.hasOwn(value.pids, end)) throw new InvalidConfigError(`${where}.${name}: ${JSON.stringify(end)} is not one of the PIDs`)
      }
      if (typeof cost !== 'number' || !Number.isFinite(cost) || cost < 0) throw new InvalidConfigError(`${where}.cost must be a number ≥ 0`)
      if (from === to) throw new InvalidConfigError(`${where} links ${String(from)} to itself (the cost within a PID is always 0)`)
      // Links are symmetric: store each once, ends in order, so the vtag does not depend on how they were written.
      const [a, b] = [String(from), String(to)].sort() as [string, string]
      if (seen.has(`${a}\n${b}`)) throw new InvalidConfigError(`${where}: the link ${a}–${b} is given twice`)
      seen.add(`${a}\n${b}`)
      links.push({ from: a, to: b, cost })
    }
    links.sort((x, y) => x.from < y.from ? -1 : x.from > y.from ? 1 : x.to < y.to ? -1 : x.to > y.to ? 1 : 0)
    return new Topology(pids, blocks, links)
  }

  /** The cheapest path cost between two PIDs; undefined when either is unknown or no path joins them. */
  cost (src: string, dst: string): number | undefined {
    return this.#costs.get(src)?.get(dst)
  }

  /** The PID an IP address belongs to (longest-prefix match); undefined when no block covers it. */
  pidOf (address: string): string | undefined {
    const parsed = parseAddress(address)
    if (parsed === undefined) return undefined
    const [family, value] = parsed
    for (const b of this.#blocks) {
      if (b.family !== family) continue
      const shift = BigInt(FAMILY_BITS[family] - b.length)
      if ((value >> shift) === (b.network >> shift)) return b.pid
    }
    return undefined
  }
}

/** Floyd–Warshall: PID counts are small (tens to hundreds), and it gives every pair at once. */
function pathCosts (pids: readonly string[], links: readonly LinkSpec[]): Map<string, Map<string, number>> {
  const n = pids.length
  const index = new Map(pids.map((p, i) => [p, i]))
  const d = new Float64Array(n * n).fill(Infinity)
  for (let i = 0; i < n; i++) d[i * n + i] = 0
  for (const { from, to, cost } of links) {
    const a = index.get(from)!
    const b = index.get(to)!
    d[a * n + b] = Math.min(d[a * n + b]!, cost)
    d[b * n + a] = d[a * n + b]!
  }
  for (let k = 0; k < n; k++) {
    for (let i = 0; i < n; i++) {
      const ik = d[i * n + k]!
      if (ik === Infinity) continue
      for (let j = 0; j < n; j++) {
        const through = ik + d[k * n + j]!
        if (through < d[i * n + j]!) d[i * n + j] = through
      }
    }
  }
  const out = new Map<string, Map<string, number>>()
  for (let i = 0; i < n; i++) {
    const row = new Map<string, number>()
    for (let j = 0; j < n; j++) if (d[i * n + j] !== Infinity) row.set(pids[j]!, d[i * n + j]!)
    out.set(pids[i]!, row)
  }
  return out
}

/** Reads and validates a topology file (JSON). */
export async function loadTopology (file: string): Promise<Topology> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new InvalidConfigError(`cannot read topology file ${file}: ${(err as Error).message}`, { cause: err })
  }
  let value: unknown
  try {
    value = JSON.parse(text)
  } catch (err) {
    throw new InvalidConfigError(`topology file ${file} is not valid JSON: ${(err as Error).message}`, { cause: err })
  }
  return Topology.from(value, file)
}
