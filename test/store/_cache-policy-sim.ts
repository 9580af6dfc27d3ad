/**
 * The read cache's policy against plain LRU and plain W-TinyLFU, on the access patterns a locker
 * sees: the table in src/store/cache-policy.ts. Not a test (the runner skips `_` files); run with
 * `node --import tsx test/store/_cache-policy-sim.ts`. A 256-chunk cache, chunks of 64 KiB; a miss
 * is read and offered to the cache, as CachedStore does; a reader "announces" its list of chunks
 * when it starts, as borrowMany does.
 */
import { createHash } from 'node:crypto'
import { CachePolicy } from '../../src/store/cache-policy.ts'

const CHUNK = 64 * 1024
const CAPACITY = 256 * CHUNK

interface Policy { request: (key: string, digest: Uint8Array, foreseen: boolean) => unknown, add: (key: string, digest: Uint8Array, value: string, size: number) => unknown }

class Lru implements Policy {
  private readonly held = new Map<string, number>()
  private bytes = 0
  request (key: string): unknown {
    const size = this.held.get(key)
    if (size === undefined) return undefined
    this.held.delete(key)
    this.held.set(key, size)
    return key
  }

  add (key: string, digest: Uint8Array, value: string, size: number): void {
    this.held.set(key, size)
    this.bytes += size
    for (const [oldest, oldSize] of this.held) {
      if (this.bytes <= CAPACITY) break
      this.held.delete(oldest)
      this.bytes -= oldSize
    }
  }
}

const digests = new Map<string, Uint8Array>()
function digestOf (key: string): Uint8Array {
  let digest = digests.get(key)
  if (digest === undefined) digests.set(key, digest = createHash('sha256').update(key).digest())
  return digest
}

/** Plays a sequence: `+name` announces a chunk, `name` asks for it. Returns the hit rate. */
function play (policy: Policy, sequence: readonly string[], announced: Map<string, number>): number {
  let hits = 0
  let requests = 0
  for (const item of sequence) {
    if (item.startsWith('+')) { announced.set(item.slice(1), (announced.get(item.slice(1)) ?? 0) + 1); continue }
    requests++
    const count = announced.get(item)
    if (count !== undefined) { if (count <= 1) announced.delete(item); else announced.set(item, count - 1) }
    if (policy.request(item, digestOf(item), count !== undefined) !== undefined) hits++
    else policy.add(item, digestOf(item), item, CHUNK)
  }
  return hits / requests
}

const object = (name: string, chunks: number): string[] => Array.from({ length: chunks }, (_, i) => `${name}/${i}`)

/** Readers through `chunks`, each `spacing` behind the one before, each announcing its list when it starts. */
function following (chunks: readonly string[], readers: number, spacing: number): string[] {
  const sequence: string[] = []
  for (let step = 0; step < chunks.length + (readers - 1) * spacing; step++) {
    for (let reader = 0; reader < readers; reader++) {
      const at = step - reader * spacing
      if (at === 0) sequence.push(...chunks.map(c => `+${c}`))
      if (at >= 0 && at < chunks.length) sequence.push(chunks[at])
    }
  }
  return sequence
}

let seed = 1
function random (): number {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff
  return seed / 0x7fffffff
}

const scenarios: Array<[string, (make: () => Policy, announced: Map<string, number>) => number]> = [
  ['4 readers 48 chunks apart', (make, a) => play(make(), following(object('big', 4096), 4, 48), a)],
  ['4 readers 100 chunks apart', (make, a) => play(make(), following(object('big', 4096), 4, 100), a)],
  ['one reader, object 4× the cache, 8 times', (make, a) => play(make(), Array.from({ length: 8 }, () => following(object('loop', 1024), 1, 0)).flat(), a)],
  ['a hot 64-chunk object amid a long scan', (make, a) => {
    const hot = object('hot', 64)
    const sequence: string[] = []
    for (const chunk of object('scan', 8192)) {
      sequence.push(chunk)
      if (random() < 0.5) sequence.push(hot[Math.floor(random() * hot.length)])
    }
    const policy = make()
    play(policy, sequence, a)
    return play(policy, [...hot, ...hot], a)
  }],
  ['4-chunk objects, Zipf popularity', (make, a) => {
    const weights = Array.from({ length: 2000 }, (_, i) => 1 / (i + 1))
    const total = weights.reduce((x, y) => x + y)
    const sequence: string[] = []
    for (let i = 0; i < 20_000; i++) {
      let r = random() * total
      let j = 0
      while (r > weights[j]) r -= weights[j++]
      for (let c = 0; c < 4; c++) sequence.push(`zipf${j}/${c}`)
    }
    return play(make(), sequence, a)
  }],
  ['a hot object GET\'d amid 3 readers', (make, a) => {
    const hot = object('hot', 16)
    const sequence: string[] = []
    let i = 0
    for (const item of following(object('big', 4096), 3, 60)) {
      sequence.push(item)
      if (!item.startsWith('+') && i++ % 4 === 0) sequence.push(...hot.map(c => `+${c}`), ...hot)
    }
    return play(make(), sequence, a)
  }]
]

const contestants: Array<[string, (announced: Map<string, number>) => Policy]> = [
  ['LRU', () => new Lru()],
  ['W-TinyLFU (25 % window)', () => {
    const policy = new CachePolicy<string>(CAPACITY, { windowShare: 0.25 })
    return { request: (key, digest) => policy.request(key, digest), add: (key, digest, value, size) => policy.add(key, digest, value, size) }
  }],
  ['this', announced => new CachePolicy<string>(CAPACITY, { wanted: key => announced.has(key) })]
]

for (const [name, scenario] of scenarios) {
  const rates = contestants.map(([, make]) => {
    seed = 1
    const announced = new Map<string, number>()
    return scenario(() => make(announced), announced).toFixed(2)
  })
  console.log(`${name.padEnd(42)} ${rates.map((r, i) => `${contestants[i][0]} ${r}`).join('   ')}`)
}
