import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { ChunkMemory, sizeClass } from '../../src/store/cache-memory.ts'
import { CachePolicy, FrequencySketch } from '../../src/store/cache-policy.ts'

const KiB = 1024

/** A chunk name and digest for the policy: the digest is what the sketch indexes. */
function chunk (name: string): { key: string, digest: Uint8Array } {
  return { key: name, digest: createHash('sha256').update(name).digest() }
}

/** Chunks readers have announced and not come to yet (what the read cache tells the policy). */
class Announced {
  private readonly counts = new Map<string, number>()
  readonly wanted = (key: string): boolean => this.counts.has(key)
  add (key: string): void { this.counts.set(key, (this.counts.get(key) ?? 0) + 1) }
  reached (key: string): void {
    const count = this.counts.get(key)
    if (count === undefined) return
    if (count <= 1) this.counts.delete(key)
    else this.counts.set(key, count - 1)
  }
}

/**
 * Plays requests against the policy as the read cache does (a miss is read and offered); a
 * request `+name` announces a chunk instead. Returns the hit rate.
 */
function replay (policy: CachePolicy<string>, sequence: readonly string[], size: number, announced?: Announced): number {
  let hits = 0
  let requests = 0
  for (const item of sequence) {
    if (item.startsWith('+')) { announced?.add(item.slice(1)); continue }
    requests++
    announced?.reached(item)
    const { key, digest } = chunk(item)
    if (policy.request(key, digest) !== undefined) hits++
    else policy.add(key, digest, item, size)
  }
  return hits / requests
}

function object (name: string, chunks: number): string[] {
  return Array.from({ length: chunks }, (_, i) => `${name}/${i}`)
}

/** `readers` readers through `chunks`, each `spacing` chunks behind the one before, announcing their lists if `announce`. */
function following (chunks: readonly string[], readers: number, spacing: number, announce: boolean): string[] {
  const sequence: string[] = []
  for (let step = 0; step < chunks.length + (readers - 1) * spacing; step++) {
    for (let reader = 0; reader < readers; reader++) {
      const at = step - spacing * reader
      if (at === 0 && announce) sequence.push(...chunks.map(c => `+${c}`))
      if (at >= 0 && at < chunks.length) sequence.push(chunks[at])
    }
  }
  return sequence
}

describe('CachePolicy (W-TinyLFU by bytes, told what readers will ask for)', () => {
  const cacheOf256 = (announced?: Announced): CachePolicy<string> => new CachePolicy<string>(256 * 64 * KiB, { wanted: announced?.wanted })

  it('keeps the bytes it holds within its capacity, and tells of every chunk it lets go', () => {
    const dropped: string[] = []
    const policy = new CachePolicy<string>(1024 * KiB, { dropped: value => dropped.push(value) })
    const sizes = [64 * KiB, 100 * KiB, 3 * KiB, 256 * KiB, 17 * KiB]
    let added = 0
    for (let i = 0; i < 2000; i++) {
      const { key, digest } = chunk(`c${i % 300}`)
      if (policy.request(key, digest) === undefined && policy.add(key, digest, key, sizes[i % sizes.length])) added++
      assert.ok(policy.bytes <= policy.capacity, `${policy.bytes} bytes held after ${i} requests`)
    }
    assert.equal(added - dropped.length, policy.size)
    assert.ok(policy.evictions > 0)
  })

  it('refuses a chunk bigger than the whole cache, and one it holds already', () => {
    const policy = new CachePolicy<string>(100 * KiB)
    const { key, digest } = chunk('big')
    assert.equal(policy.add(key, digest, 'big', 100 * KiB + 1), false)
    assert.equal(policy.has(key), false)
    assert.equal(policy.add(key, digest, 'fits', 10 * KiB), true)
    assert.equal(policy.add(key, digest, 'again', 10 * KiB), false)
    assert.equal(policy.request(key, digest), 'fits')
  })

  it('readers one behind the other that announce their chunks: each chunk is read once while their spread fits the cache', () => {
    const announced = new Announced()
    // 4 readers 48 chunks apart: a spread of 144 chunks, more than the window, less than the cache
    const hitRate = replay(cacheOf256(announced), following(object('big', 2048), 4, 48, true), 64 * KiB, announced)
    assert.ok(hitRate >= 0.74, `hit rate ${hitRate.toFixed(3)} (3 of 4 reads can hit)`)
    // the same readers announcing nothing: only the window keeps chunks for them, and it is too small
    assert.ok(replay(cacheOf256(), following(object('big', 2048), 4, 48, false), 64 * KiB) < 0.2)
  })

  it('readers that announce nothing are served from the window while their spread fits it', () => {
    const hitRate = replay(cacheOf256(), following(object('big', 2048), 4, 6, false), 64 * KiB)
    assert.ok(hitRate >= 0.74, `hit rate ${hitRate.toFixed(3)}`)
  })

  it('when the readers\' spread outgrows the cache, the ones in front still hit', () => {
    const announced = new Announced()
    const hitRate = replay(cacheOf256(announced), following(object('big', 4096), 4, 100, true), 64 * KiB, announced)
    // LRU: 0.04 (every reader misses once the last one's misses push out what the others need)
    assert.ok(hitRate >= 0.3, `hit rate ${hitRate.toFixed(3)}`)
  })

  it('readers further apart than the cache holds still hit part of the object (LRU would hit nothing)', () => {
    // an object 4 times the cache, read whole 8 times one reader after the other: at most 0.25 can hit
    const chunks = object('big', 1024)
    const announced = new Announced()
    const told = replay(cacheOf256(announced), Array.from({ length: 8 }, () => following(chunks, 1, 0, true)).flat(), 64 * KiB, announced)
    assert.ok(told >= 0.17, `hit rate ${told.toFixed(3)} with the readers' lists`)
    const untold = replay(cacheOf256(), Array.from({ length: 8 }, () => chunks).flat(), 64 * KiB)
    assert.ok(untold >= 0.1, `hit rate ${untold.toFixed(3)} without`)
  })

  it('one pass over a big object does not push out what many readers ask for', () => {
    const announced = new Announced()
    const policy = new CachePolicy<string>(8 * 1024 * KiB, { wanted: announced.wanted })
    const hot = object('hot', 32) // 2 MiB
    for (let i = 0; i < 5; i++) replay(policy, hot, 64 * KiB)
    const scan = object('scan', 2048) // 128 MiB, once, announced as a locker GET does
    replay(policy, following(scan, 1, 0, true), 64 * KiB, announced)
    assert.equal(replay(policy, hot, 64 * KiB), 1)
  })

  it('newly popular chunks displace ones that were popular long ago', () => {
    const policy = new CachePolicy<string>(4 * 1024 * KiB)
    const old = object('old', 48)
    const fresh = object('fresh', 48)
    for (let i = 0; i < 8; i++) replay(policy, old, 64 * KiB)
    for (let i = 0; i < 40; i++) replay(policy, fresh, 64 * KiB)
    assert.ok(replay(policy, fresh, 64 * KiB) > 0.9)
  })

  it('a chunk a reader will ask for displaces one nobody will, whatever their frequencies; not the other way round', () => {
    const announced = new Announced()
    // window 1 chunk of 64 KiB (10 %), main 9
    const policy = new CachePolicy<string>(640 * KiB, { wanted: announced.wanted })
    const popular = object('popular', 9)
    for (let i = 0; i < 5; i++) replay(policy, popular, 64 * KiB)
    assert.equal(replay(policy, popular, 64 * KiB), 1)
    announced.add('wanted/0')
    replay(policy, ['wanted/0', 'pushes-it-out-of-the-window'], 64 * KiB)
    assert.equal(policy.segmentOf('wanted/0'), 'probation', 'admitted against a popular chunk')
    assert.equal(policy.size, 10)
    // now every chunk in main is wanted: a chunk nobody wants does not get in
    for (const name of popular) announced.add(name)
    replay(policy, ['unwanted/0', 'unwanted/1', 'unwanted/2'], 64 * KiB)
    for (const name of ['unwanted/0', 'unwanted/1']) assert.equal(policy.has(name), false)
    assert.ok(popular.filter(name => policy.has(name)).length >= 8)
  })

  it('delete and clear let go of what they remove', () => {
    const dropped: string[] = []
    const policy = new CachePolicy<string>(1024 * KiB, { dropped: value => dropped.push(value) })
    for (const name of ['a', 'b', 'c']) { const { key, digest } = chunk(name); policy.request(key, digest); policy.add(key, digest, name, 10 * KiB) }
    assert.equal(policy.delete('b'), true)
    assert.equal(policy.delete('b'), false)
    assert.deepEqual(dropped, ['b'])
    policy.clear()
    assert.deepEqual(dropped.sort(), ['a', 'b', 'c'])
    assert.equal(policy.bytes, 0)
    assert.equal(policy.size, 0)
  })
})

describe('FrequencySketch', () => {
  it('counts requests up to 15, and halves every count after its sample of requests', () => {
    const sketch = new FrequencySketch(100)
    const { digest } = chunk('x')
    for (let i = 0; i < 20; i++) sketch.increment(digest)
    assert.equal(sketch.frequency(digest), 15)
    assert.equal(sketch.frequency(chunk('never').digest), 0)
    // 1,000 requests (10 per expected entry) make a sample
    for (let i = 0; i < 1000; i++) sketch.increment(chunk(`other${i}`).digest)
    assert.ok(sketch.frequency(digest) <= 7, `count ${sketch.frequency(digest)} after a reset`)
  })
})

describe('the cache\'s chunk memory', () => {
  it('rounds sizes up to a quarter of their power of two', () => {
    assert.equal(sizeClass(1), 4096)
    assert.equal(sizeClass(4096), 4096)
    assert.equal(sizeClass(65_536), 65_536)
    assert.equal(sizeClass(65_537), 81_920)
    assert.equal(sizeClass(100_000), 114_688)
    for (let n = 1; n < 5_000_000; n = Math.ceil(n * 1.37) + 1) {
      const size = sizeClass(n)
      assert.ok(size >= n && (n <= 4096 || size <= 1.25 * n), `${n} → ${size}`)
    }
  })

  it('reuses a buffer once its last reference is released, not before', () => {
    const memory = new ChunkMemory(1024 * KiB)
    const source = new Uint8Array(70_000).fill(1)
    const first = memory.copy(source)
    first.retain()
    first.retain()
    first.release()
    const second = memory.copy(source)
    assert.notEqual(second.bytes.buffer, first.bytes.buffer, 'still referenced: not reused')
    first.release()
    assert.equal(memory.spared, first.size)
    const third = memory.copy(new Uint8Array(69_000).fill(2))
    assert.equal(third.bytes.buffer, first.bytes.buffer, 'same size class: reused')
    assert.equal(memory.spared, 0)
    assert.throws(() => third.release(), /released more often than retained/)
  })

  it('copies at the source\'s alignment, and keeps no more spares than it is allowed', () => {
    const memory = new ChunkMemory(100 * KiB)
    const source = new Uint8Array(new SharedArrayBuffer(200_000), 5, 90_000).fill(3)
    const held = memory.copy(source)
    assert.equal(held.bytes.byteOffset % 8, 5)
    assert.deepEqual(held.bytes, new Uint8Array(90_000).fill(3))
    held.discardIfUnused()
    assert.ok(memory.spared <= 100 * KiB)
    const others = [memory.copy(source), memory.copy(source)]
    for (const other of others) other.discardIfUnused()
    assert.ok(memory.spared <= 100 * KiB)
  })
})
