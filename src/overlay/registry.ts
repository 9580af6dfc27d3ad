/**
 * The overlay node: a libp2p node that joins Berth's Kademlia DHT (the registry) and its gossipsub
 * event topics.
 *
 * Registry records live in the kad-dht (protocol /berth/kad/1.0.0) under the key
 * `/berth/<hex sha-256 of the name>`, where the name is `/berth/replica/<oid>` (replica pointers:
 * which hint URIs hold the object) or `/berth/service/<name>` (service descriptors: the URLs of a
 * service). Values are JSON:
 *
 *   { "name": "/berth/replica/<oid>", "hints": ["http://…", …], "updated": <ms since epoch> }
 *   { "name": "/berth/service/<name>", "urls": ["http://…", …], "updated": <ms since epoch> }
 *
 * Several replicas per OID, merged at three places: an announce reads the record, adds its hint
 * and puts the union back (read-modify-write, serialised per key inside one node); every node's
 * datastore merges an incoming replica record with the one it holds instead of replacing it
 * (MergingDatastore below — this is what makes concurrent announces from different nodes safe:
 * without it, 3 nodes announcing the same OID at once lost a hint in 3 of 10 trials); and a
 * lookup returns the union of every version it met (kad-dht's `kad-dht:query:value` progress
 * events, not only the one its selector picks), putting the union back when versions disagreed.
 * Hints are only ever added: there is no withdrawal yet.
 * Provider records (provide/findProviders on a CID of the OID) were not used: they name the
 * announcing peer and its multiaddrs, not arbitrary hint URIs (a locker's URL, another agent),
 * so each provider would need a second lookup, and a locker announced by a node that has since
 * gone would be lost with it.
 *
 * Replication is kad-dht's: a put goes to the k closest peers (k = kBucketSize, default 20), so in
 * a small overlay every node holds every record and losing some of them loses nothing.
 *
 * Loopback and private addresses are kept (`passthroughMapper`): kad-dht's default drops them,
 * and Berth overlays run on LANs and loopback as much as on the Internet.
 */
import './polyfill.ts'
import { createHash } from 'node:crypto'
import { createLibp2p, type Libp2p } from 'libp2p'
import { tcp } from '@libp2p/tcp'
import { noise } from '@chainsafe/libp2p-noise'
import { yamux } from '@chainsafe/libp2p-yamux'
import { identify } from '@libp2p/identify'
import { ping } from '@libp2p/ping'
import { kadDHT, passthroughMapper, type KadDHT, type SingleKadDHT } from '@libp2p/kad-dht'
import { gossipsub, type GossipSub } from '@libp2p/gossipsub'
import { multiaddr, type Multiaddr } from '@multiformats/multiaddr'
import { MemoryDatastore } from 'datastore-core'
import type { Key } from 'interface-datastore'
import { Libp2pRecord } from '@libp2p/record'
import { AbortedError, InvalidConfigError } from '../core/errors.ts'

export { TOPICS, type Topic } from './topics.ts'

/** Events on the topics: JSON objects; `type` names the topic's event, the rest is free. */
export interface OverlayEvent {
  type?: string
  /** peer id of the publisher (set by publish) */
  from?: string
  /** ms since epoch at publication (set by publish) */
  at?: number
  [field: string]: unknown
}

export interface OverlayNodeOptions {
  /** multiaddr(s) to listen on; default /ip4/127.0.0.1/tcp/0 */
  listen?: string | string[]
  /** nodes to join through */
  bootstrap?: Array<string | Multiaddr>
  /** Kademlia k (bucket size and replication factor); default 20 */
  k?: number
  /** DHT protocol id; default /berth/kad/1.0.0 */
  protocol?: string
}

export interface LookupOptions { signal?: AbortSignal, timeoutMs?: number }

export interface OverlayNode {
  readonly peerId: string
  /** where this node listens (with /p2p/<peerId>) */
  readonly multiaddrs: string[]
  start (): Promise<void>
  stop (): Promise<void>
  /** Adds hintUri to the replica pointers of oid; resolves with how many peers took the record. */
  announceReplica (oid: string, hintUri: string, options?: LookupOptions): Promise<number>
  /** Every hint URI announced for oid that the DHT still holds; [] when none. */
  findReplicas (oid: string, options?: LookupOptions): Promise<string[]>
  /** Sets (replaces) the URLs of a service. */
  putService (name: string, urls: string[], options?: LookupOptions): Promise<number>
  /** The URLs of a service (the newest descriptor); [] when unknown. */
  findService (name: string, options?: LookupOptions): Promise<string[]>
  publish (topic: string, event: OverlayEvent): Promise<void>
  /** Calls handler for every event on topic from another node; returns the unsubscribe. */
  subscribe (topic: string, handler: (event: OverlayEvent, from: string) => void): () => void
  /** peers currently connected */
  peers (): string[]
  /** peers in the DHT routing table (lookups wait until there is one) */
  routingTableSize (): number
  /** peers known to be subscribed to topic */
  subscribers (topic: string): string[]
}

const DEFAULT_LISTEN = '/ip4/127.0.0.1/tcp/0'
const DEFAULT_TIMEOUT_MS = 10_000

interface RecordValue { name: string, hints?: string[], urls?: string[], updated: number }

export function registryKey (name: string): Uint8Array {
  return new TextEncoder().encode('/berth/' + createHash('sha256').update(name).digest('hex'))
}

function decodeRecord (value: Uint8Array): RecordValue {
  const v = JSON.parse(new TextDecoder().decode(value)) as RecordValue
  if (typeof v !== 'object' || v === null || typeof v.name !== 'string' || typeof v.updated !== 'number') throw new Error('not a berth record')
  for (const list of [v.hints, v.urls]) {
    if (list !== undefined && (!Array.isArray(list) || list.some(x => typeof x !== 'string'))) throw new Error('not a berth record')
  }
  return v
}

function encodeRecord (v: RecordValue): Uint8Array {
  return new TextEncoder().encode(JSON.stringify(v))
}

/** Newest record wins; among equals, the one with the most entries. */
function selectRecord (_key: Uint8Array, records: Uint8Array[]): number {
  let best = 0
  let bestScore: [number, number] = [-1, -1]
  records.forEach((r, i) => {
    try {
      const v = decodeRecord(r)
      const score: [number, number] = [v.updated, (v.hints ?? v.urls ?? []).length]
      if (score[0] > bestScore[0] || (score[0] === bestScore[0] && score[1] > bestScore[1])) { best = i; bestScore = score }
    } catch {}
  })
  return best
}

function lookupSignal (options: LookupOptions = {}): AbortSignal {
  const t = AbortSignal.timeout(options.timeoutMs ?? DEFAULT_TIMEOUT_MS)
  return options.signal !== undefined ? AbortSignal.any([options.signal, t]) : t
}

/**
 * The node's datastore, merging replica records where kad-dht would replace them: a PUT_VALUE
 * (from an announcer, or a lookup's "correction") of a replica record whose key already holds one
 * stores the union of both hint lists. Two announces that race therefore both survive on every
 * peer that receives both. Service records are replaced as usual (newest wins, by the selector).
 */
class MergingDatastore extends MemoryDatastore {
  override async put (key: Key, val: Uint8Array, options?: Parameters<MemoryDatastore['put']>[2]): Promise<Key> {
    if (key.toString().startsWith('/dht/record/')) {
      try {
        const incoming = Libp2pRecord.deserialize(val)
        const next = decodeRecord(incoming.value)
        if (next.hints !== undefined && await this.has(key)) {
          const prev = decodeRecord(Libp2pRecord.deserialize(await this.get(key)).value)
          if (prev.name === next.name && prev.hints !== undefined) {
            const merged: RecordValue = { name: next.name, hints: [...new Set([...prev.hints, ...next.hints])], updated: Math.max(prev.updated, next.updated) }
            val = new Libp2pRecord(incoming.key, encodeRecord(merged), incoming.timeReceived).serialize()
          }
        }
      } catch {}
    }
    return await super.put(key, val, options)
  }
}

type Services = { identify: unknown, ping: unknown, dht: KadDHT, pubsub: GossipSub }

export async function createOverlayNode (options: OverlayNodeOptions = {}): Promise<OverlayNode> {
  const listen = options.listen === undefined ? [DEFAULT_LISTEN] : Array.isArray(options.listen) ? options.listen : [options.listen]
  let bootstrap: Multiaddr[]
  try {
    listen.forEach(a => multiaddr(a))
    bootstrap = (options.bootstrap ?? []).map(a => typeof a === 'string' ? multiaddr(a) : a)
  } catch (err) {
    throw new InvalidConfigError(`bad multiaddr: ${(err as Error).message}`, { cause: err })
  }

  const node: Libp2p<Services> = await createLibp2p({
    start: false,
    datastore: new MergingDatastore(),
    addresses: { listen },
    transports: [tcp()],
    connectionEncrypters: [noise()],
    streamMuxers: [yamux()],
    services: {
      identify: identify(),
      ping: ping(),
      dht: kadDHT({
        protocol: options.protocol ?? '/berth/kad/1.0.0',
        clientMode: false,
        kBucketSize: options.k ?? 20,
        peerInfoMapper: passthroughMapper,
        // queries wait for the first self-lookup, which kad-dht delays 1 s by default; start()
        // does its own join lookup once the bootstrap peers are in the routing table instead
        initialQuerySelfInterval: 0,
        validators: { berth: async (_key, value) => { decodeRecord(value) } },
        selectors: { berth: selectRecord }
      }),
      pubsub: gossipsub({ allowPublishToZeroTopicPeers: true, emitSelf: false })
    }
  })

  const handlers = new Map<string, Set<(event: OverlayEvent, from: string) => void>>()
  node.services.pubsub.addEventListener('message', (evt) => {
    const msg = evt.detail
    const set = handlers.get(msg.topic)
    if (set === undefined || set.size === 0) return
    let event: OverlayEvent
    try { event = JSON.parse(new TextDecoder().decode(msg.data)) as OverlayEvent } catch { return }
    if (typeof event !== 'object' || event === null) return
    const from = msg.type === 'signed' ? msg.from.toString() : String(event.from ?? '')
    for (const h of set) { try { h(event, from) } catch {} }
  })

  /** Every version of the record that the lookup met (own copy included), newest first. */
  async function getAll (name: string, options?: LookupOptions): Promise<RecordValue[]> {
    const signal = lookupSignal(options)
    const seen: RecordValue[] = []
    const collect = (value: Uint8Array): void => {
      try {
        const v = decodeRecord(value)
        if (v.name === name) seen.push(v)
      } catch {}
    }
    try {
      for await (const ev of node.services.dht.get(registryKey(name), {
        signal,
        onProgress: (e: CustomEvent<unknown>) => {
          if (e.type === 'kad-dht:query:value') collect((e.detail as { value: Uint8Array }).value)
        }
      } as Parameters<KadDHT['get']>[1])) {
        if (ev.name === 'VALUE') collect(ev.value)
      }
    } catch (err) {
      // a lookup cut short still returns what it met; only the caller's own abort is an error
      if (options?.signal?.aborted === true) throw new AbortedError('overlay lookup aborted', { cause: err })
    }
    return seen.sort((a, b) => b.updated - a.updated)
  }

  async function put (value: RecordValue, options?: LookupOptions): Promise<number> {
    const signal = lookupSignal(options)
    let stored = 0
    try {
      for await (const ev of node.services.dht.put(registryKey(value.name), encodeRecord(value), { signal })) {
        if (ev.name === 'PEER_RESPONSE' && ev.record != null) stored++
      }
    } catch (err) {
      if (options?.signal?.aborted === true) throw new AbortedError('overlay put aborted', { cause: err })
    }
    return stored
  }

  // background repairs of raced records (findReplicas); stop() cuts them short
  const stopping = new AbortController()
  const repairs = new Set<Promise<unknown>>()

  // read-modify-write of one key at a time inside this node
  const locks = new Map<string, Promise<unknown>>()
  function serialised<T> (key: string, fn: () => Promise<T>): Promise<T> {
    const prev = locks.get(key) ?? Promise.resolve()
    const next = prev.then(fn, fn)
    const tail = next.catch(() => {})
    locks.set(key, tail)
    void tail.then(() => { if (locks.get(key) === tail) locks.delete(key) })
    return next
  }

  const self: OverlayNode = {
    get peerId () { return node.peerId.toString() },
    get multiaddrs () { return node.getMultiaddrs().map(m => m.toString()) },

    async start () {
      await node.start()
      for (const topic of handlers.keys()) node.services.pubsub.subscribe(topic)
      const dialled = await Promise.all(bootstrap.map(async (ma) => {
        try { await node.dial(ma, { signal: AbortSignal.timeout(5000) }); return true } catch { return false }
      }))
      if (!dialled.includes(true)) return
      // Kademlia join: once a bootstrap peer is in the routing table, look ourselves up so the
      // table fills with the peers near us (and they learn of us)
      const dht = node.services.dht as SingleKadDHT
      const end = Date.now() + 3000
      while (dht.routingTable.size === 0 && Date.now() < end) await new Promise(resolve => setTimeout(resolve, 10))
      try {
        for await (const _ of dht.getClosestPeers(node.peerId.toMultihash().bytes, { signal: AbortSignal.timeout(5000) })) { /* drain */ }
      } catch {}
    },

    async stop () {
      stopping.abort()
      await Promise.allSettled([...repairs])
      await node.stop()
    },

    async announceReplica (oid, hintUri, options) {
      const name = `/berth/replica/${oid}`
      return await serialised(name, async () => {
        const hints = new Set<string>()
        for (const v of await getAll(name, options)) for (const h of v.hints ?? []) hints.add(h)
        hints.add(hintUri)
        return await put({ name, hints: [...hints], updated: Date.now() }, options)
      })
    },

    async findReplicas (oid, options) {
      const name = `/berth/replica/${oid}`
      const versions = await getAll(name, options)
      const hints = new Set<string>()
      for (const v of versions) for (const h of v.hints ?? []) hints.add(h)
      // Versions that disagree (announces that raced): kad-dht has just "corrected" every peer to
      // the one its selector picked, which would drop the others' hints; put the union back.
      if (versions.some(v => (v.hints ?? []).length !== hints.size)) {
        const repair = serialised(name, async () => await put({ name, hints: [...hints], updated: Date.now() }, { signal: stopping.signal }))
        repairs.add(repair)
        void repair.catch(() => {}).finally(() => repairs.delete(repair))
      }
      return [...hints]
    },

    async putService (name, urls, options) {
      const key = `/berth/service/${name}`
      return await serialised(key, async () => await put({ name: key, urls: [...urls], updated: Date.now() }, options))
    },

    async findService (name, options) {
      const all = await getAll(`/berth/service/${name}`, options)
      return all[0]?.urls ?? []
    },

    async publish (topic, event) {
      const body: OverlayEvent = { ...event, from: node.peerId.toString(), at: Date.now() }
      await node.services.pubsub.publish(topic, new TextEncoder().encode(JSON.stringify(body)))
    },

    subscribe (topic, handler) {
      let set = handlers.get(topic)
      if (set === undefined) { set = new Set(); handlers.set(topic, set) }
      set.add(handler)
      if (node.status === 'started') node.services.pubsub.subscribe(topic)
      return () => {
        set.delete(handler)
        if (set.size === 0) {
          handlers.delete(topic)
          if (node.status === 'started') node.services.pubsub.unsubscribe(topic)
        }
      }
    },

    peers () { return node.getPeers().map(p => p.toString()) },
    routingTableSize () { return (node.services.dht as SingleKadDHT).routingTable.size },
    subscribers (topic) { return node.services.pubsub.getSubscribers(topic).map(p => p.toString()) }
  }
  return self
}
