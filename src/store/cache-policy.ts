/**
 * Which chunks a read cache keeps, by bytes: W-TinyLFU (Einziger, Friedman & Manes, "TinyLFU: A
 * Highly Efficient Cache Admission Policy", ACM ToS 2017 — the policy of Caffeine and Ristretto),
 * told in addition which chunks its readers have announced they will ask for.
 *
 *   window     FIFO, WINDOW_SHARE of the bytes: every chunk read enters here
 *   main       SLRU: `probation` (admitted, not read since) and `protected` (read again in main,
 *              at most PROTECTED_SHARE of main); victims come from probation's least recent
 *   frequency  a count-min sketch of how often each chunk was asked for, halved every
 *              SAMPLE_FACTOR × (expected entries) requests so that old popularity fades
 *   wanted     chunks a reader has announced and not come to yet (borrowMany gets its whole list
 *              of cids up front: a locker GET hands over 2,048 at a time; what a reader has
 *              looked up it holds itself, so only the chunks further on count)
 *
 * A chunk leaving the window enters main if a reader still wants it and the chunk it displaces
 * is not wanted, or else if it was asked for more often than that chunk (ties keep the
 * incumbent). Victims that no reader wants are taken first (looking past up to VICTIM_SCAN
 * wanted ones).
 *
 * Why this and not plain LRU, CLOCK or 2Q: what a locker serves is mostly large objects read
 * front to back, often by several clients one behind the other, plus small objects many clients
 * ask for. Hit rates simulated with a 256-chunk cache (test/store/_cache-policy-sim.ts; the
 * tests check the same cases at a smaller scale):
 *
 *                                              LRU    W-TinyLFU (25 % window)   this
 *   4 readers 48 chunks apart                  0.75   0.08                      0.75  (0.75 at most)
 *   4 readers 100 chunks apart                 0.03   0.07                      0.53
 *   one reader, object 4× the cache, 8 times   0.00   0.15                      0.20  (0.25 at most)
 *   a hot 64-chunk object amid a long scan     0.89   1.00                      1.00
 *   4-chunk objects, Zipf popularity           0.45   0.55                      0.56
 *   a hot object GET'd amid 3 readers          0.93   0.81                      0.93
 *
 *  - Readers one behind the other: a follower wants every chunk the leader reads, so those stay
 *    until it has come to them, in preference to chunks every reader is past — as long as the
 *    readers' spread fits the cache, each chunk is read from the store once. LRU does as well
 *    while it fits, but once the spread is bigger than the cache, the last reader's misses are
 *    inserted as the newest chunks and push out what the others need: everyone misses. Here,
 *    when wanted chunks alone overflow the cache, the older ones (wanted sooner) win the ties and
 *    the readers in front still hit; and a foreseen request (see `request`) does not make a chunk
 *    recent, so what the last reader has passed is what goes. (Readers close together mostly
 *    never get this far: the read cache joins them to the reads in flight.)
 *  - Readers further apart than the cache holds (a scan bigger than the cache, repeated): LRU,
 *    CLOCK and 2Q/ARC's recency lists evict each chunk just before the next reader wants it.
 *    Ties keeping the incumbent make main hold on to one part of the object instead, and every
 *    later reader hits that part; a reader's own announcement even lets the chunks it has passed
 *    go first (most-recently-used eviction, what is best for a loop).
 *  - One client reading a big object once: its chunks are asked for once, lose against anything
 *    in main that was asked for twice, and leave with the window: hot small objects stay.
 * The window is FIFO, not Caffeine's LRU: a chunk stays for a window's worth of newer reads
 * however often it is hit, which is the spread it absorbs for readers that announce nothing
 * (an LRU window keeps the chunks the last reader just took and drops the ones it has not reached:
 * 4 readers 16 chunks apart through a 64-chunk window, 56 % hits with LRU, 75 % — all that can
 * hit — with FIFO). It is 10 %, not Caffeine's 1 %, for those readers, and because each step down
 * to 1 % gained less than 2 points in the cases above.
 * The sketch needs no keys of evicted chunks (2Q's and ARC's ghost lists): a chunk's digest is
 * already uniformly distributed, so its words index the sketch's rows directly.
 */

/** Share of the capacity that is the window (the rest is main). */
const WINDOW_SHARE = 0.1
/** Share of main that read-again chunks (protected) may take; the rest is probation. */
const PROTECTED_SHARE = 0.8
/** Chunk size the sketch is dimensioned for when sizing it from a capacity in bytes (the cdc average). */
const EXPECTED_CHUNK_BYTES = 64 * 1024
/** The sketch halves its counters after this many requests per expected entry (TinyLFU's W/C). */
const SAMPLE_FACTOR = 10
/** Victim candidates looked at for one that no reader wants, before taking the oldest anyway. */
const VICTIM_SCAN = 16
/** Counters saturate here (TinyLFU: 4 bits suffice, the reset keeps them small). */
const MAX_COUNT = 15
const ROWS = 4

type Segment = 'window' | 'probation' | 'protected'

interface Node<V> { key: string, digest: Uint8Array, value: V, size: number, segment: Segment }

/**
 * How often each chunk was asked for, approximately: four rows of byte counters, each indexed by
 * a different 32-bit word of the chunk's sha-256 digest; the estimate is the smallest of its
 * four counters (conservative update: only the smallest ones grow).
 */
export class FrequencySketch {
  private readonly counters: Uint8Array
  private readonly mask: number
  private readonly sampleSize: number
  private additions = 0

  constructor (expectedEntries: number) {
    // 4 counters per expected entry and row keeps collisions rare; a power of two for masking.
    let width = 1024
    while (width < 4 * expectedEntries) width *= 2
    this.mask = width - 1
    this.counters = new Uint8Array(ROWS * width)
    this.sampleSize = Math.max(64, SAMPLE_FACTOR * expectedEntries)
  }

  frequency (digest: Uint8Array): number {
    let min = MAX_COUNT
    for (let row = 0; row < ROWS; row++) min = Math.min(min, this.counters[this.index(digest, row)])
    return min
  }

  increment (digest: Uint8Array): void {
    const count = this.frequency(digest)
    if (count >= MAX_COUNT) return
    for (let row = 0; row < ROWS; row++) {
      const i = this.index(digest, row)
      if (this.counters[i] === count) this.counters[i]++
    }
    if (++this.additions >= this.sampleSize) this.age()
  }

  /** Halves every counter: popularity is relative to the recent past, not to all time. */
  private age (): void {
    this.additions = 0
    for (let i = 0; i < this.counters.length; i++) this.counters[i] >>= 1
  }

  private index (digest: Uint8Array, row: number): number {
    const at = 4 * row
    // Little-endian word of the digest (uniform: it is sha-256 output), row-th of the first four.
    const word = (digest[at] | (digest[at + 1] << 8) | (digest[at + 2] << 16) | (digest[at + 3] << 24)) >>> 0
    return row * (this.mask + 1) + (word & this.mask)
  }
}

export interface PolicyOptions<V> {
  /** told of every value that leaves (evicted, refused entry into main, deleted, cleared): the cache lets go of its memory then */
  dropped?: (value: V) => void
  /** whether a reader has announced it will ask for a chunk and not come to it yet; default: none is */
  wanted?: (key: string) => boolean
  /** chunk size the sketch is dimensioned for; default 64 KiB (the cdc average) */
  expectedChunkBytes?: number
  /** share of the capacity that is the window; default WINDOW_SHARE (0.1) */
  windowShare?: number
}

/**
 * The cache's bookkeeping: which chunks are held, and which go when more must fit. Synchronous
 * and unaware of I/O; values are whatever the cache keeps per chunk. Keys are canonical cids,
 * digests their sha-256 (at least 16 bytes are used).
 */
export class CachePolicy<V> {
  readonly capacity: number
  /** Oldest first: a Map iterates in insertion order (LRU segments re-insert on a hit). */
  private readonly window = new Map<string, Node<V>>()
  private readonly probation = new Map<string, Node<V>>()
  private readonly protected = new Map<string, Node<V>>()
  private readonly windowMax: number
  private readonly mainMax: number
  private readonly protectedMax: number
  private windowBytes = 0
  private probationBytes = 0
  private protectedBytes = 0
  private readonly sketch: FrequencySketch
  /** chunks dropped to make room so far */
  evictions = 0

  private readonly dropped: (value: V) => void
  private readonly wanted: (key: string) => boolean

  constructor (capacity: number, options: PolicyOptions<V> = {}) {
    this.dropped = options.dropped ?? (() => {})
    this.wanted = options.wanted ?? (() => false)
    const expectedChunkBytes = options.expectedChunkBytes ?? EXPECTED_CHUNK_BYTES
    this.capacity = Math.max(0, Math.floor(capacity))
    this.windowMax = Math.floor(this.capacity * (options.windowShare ?? WINDOW_SHARE))
    this.mainMax = this.capacity - this.windowMax
    this.protectedMax = Math.floor(this.mainMax * PROTECTED_SHARE)
    this.sketch = new FrequencySketch(Math.max(1, Math.ceil(this.capacity / expectedChunkBytes)))
  }

  /** bytes held */
  get bytes (): number { return this.windowBytes + this.probationBytes + this.protectedBytes }
  /** chunks held */
  get size (): number { return this.window.size + this.probation.size + this.protected.size }

  has (key: string): boolean {
    return this.window.has(key) || this.probation.has(key) || this.protected.has(key)
  }

  /**
   * Counts a request for a chunk; returns its value if held. `foreseen`: the request was
   * announced (a reader's list reached this chunk): it counts for frequency but does not make the
   * chunk recent. A reader streaming an object announces it all; when the last of several readers
   * one behind the other takes a chunk, nobody will want it again, and moving it to the recent end
   * of main would keep it in preference to the chunks the others still have to come to. (Hot
   * objects are announced too; they keep their place by frequency.)
   */
  request (key: string, digest: Uint8Array, foreseen = false): V | undefined {
    this.sketch.increment(digest)
    if (foreseen) return (this.window.get(key) ?? this.protected.get(key) ?? this.probation.get(key))?.value
    // The window is FIFO: a hit there does not move the chunk (see the file comment).
    let node = this.window.get(key)
    if (node !== undefined) return node.value
    node = this.protected.get(key)
    if (node !== undefined) {
      this.protected.delete(key)
      this.protected.set(key, node)
      return node.value
    }
    node = this.probation.get(key)
    if (node !== undefined) {
      // Asked for again since it was admitted: protected, and protected's least recent make room.
      this.probation.delete(key)
      this.probationBytes -= node.size
      node.segment = 'protected'
      this.protected.set(key, node)
      this.protectedBytes += node.size
      while (this.protectedBytes > this.protectedMax) {
        const demoted = first(this.protected)!
        this.protected.delete(demoted.key)
        this.protectedBytes -= demoted.size
        demoted.segment = 'probation'
        this.probation.set(demoted.key, demoted)
        this.probationBytes += demoted.size
      }
      return node.value
    }
    return undefined
  }

  /**
   * Offers a chunk just read (its request was counted by `request`). It enters the window; what
   * the window pushes out competes for main. true: the policy took the value (and tells `dropped`
   * when it goes, perhaps at once); false: not taken (bigger than the cache, or the key is held).
   */
  add (key: string, digest: Uint8Array, value: V, size: number): boolean {
    if (size > this.capacity || this.has(key)) return false
    this.window.set(key, { key, digest, value, size, segment: 'window' })
    this.windowBytes += size
    while (this.windowBytes > this.windowMax) {
      const candidate = first(this.window)!
      this.window.delete(candidate.key)
      this.windowBytes -= candidate.size
      this.admit(candidate)
    }
    return true
  }

  delete (key: string): boolean {
    const node = this.window.get(key) ?? this.probation.get(key) ?? this.protected.get(key)
    if (node === undefined) return false
    this.unlink(node)
    this.dropped(node.value)
    return true
  }

  keys (): string[] {
    return [...this.window.keys(), ...this.probation.keys(), ...this.protected.keys()]
  }

  clear (): void {
    const values = [...this.window.values(), ...this.probation.values(), ...this.protected.values()].map(node => node.value)
    this.window.clear()
    this.probation.clear()
    this.protected.clear()
    this.windowBytes = this.probationBytes = this.protectedBytes = 0
    for (const value of values) this.dropped(value)
  }

  /** How often a chunk was asked for recently (the sketch's estimate). */
  frequency (digest: Uint8Array): number {
    return this.sketch.frequency(digest)
  }

  /** For tests and stats: which part of the cache holds a chunk. */
  segmentOf (key: string): Segment | undefined {
    return (this.window.get(key) ?? this.probation.get(key) ?? this.protected.get(key))?.segment
  }

  /**
   * A chunk out of the window gets into main if, against each chunk it displaces, it is wanted
   * and that one is not, or it is asked for more often (see the file comment).
   */
  private admit (candidate: Node<V>): void {
    if (candidate.size > this.mainMax) return this.evict(candidate)
    const frequency = this.sketch.frequency(candidate.digest)
    const wanted = this.wanted(candidate.key)
    while (this.probationBytes + this.protectedBytes + candidate.size > this.mainMax) {
      const victim = this.unwanted(this.probation) ?? this.unwanted(this.protected) ?? first(this.probation) ?? first(this.protected)!
      const victimWanted = this.wanted(victim.key)
      if (wanted === victimWanted ? frequency <= this.sketch.frequency(victim.digest) : victimWanted) return this.evict(candidate)
      this.unlink(victim)
      this.evict(victim)
    }
    candidate.segment = 'probation'
    this.probation.set(candidate.key, candidate)
    this.probationBytes += candidate.size
  }

  /** The oldest of the first VICTIM_SCAN chunks of a segment that no reader wants. */
  private unwanted (segment: Map<string, Node<V>>): Node<V> | undefined {
    let looked = 0
    for (const node of segment.values()) {
      if (!this.wanted(node.key)) return node
      if (++looked >= VICTIM_SCAN) break
    }
    return undefined
  }

  /** `node` is out of every segment already. */
  private evict (node: Node<V>): void {
    this.evictions++
    this.dropped(node.value)
  }

  private unlink (node: Node<V>): void {
    switch (node.segment) {
      case 'window': this.window.delete(node.key); this.windowBytes -= node.size; break
      case 'probation': this.probation.delete(node.key); this.probationBytes -= node.size; break
      case 'protected': this.protected.delete(node.key); this.protectedBytes -= node.size; break
    }
  }
}

function first<V> (map: Map<string, Node<V>>): Node<V> | undefined {
  for (const node of map.values()) return node
  return undefined
}
