/**
 * SHA-256 off the main thread. Measured here: createHash runs ~1.37 GB/s on one core and
 * WebCrypto's digest is ~6x slower per 64 KiB chunk, so chunk digests and whole-object digests
 * go to worker threads, in batches (one message per multi-MiB block, never one per chunk).
 *
 * Data posted to a worker is zero-copy when it lives in a SharedArrayBuffer; otherwise it is
 * copied once into a compact buffer first, because structured clone of a subarray would clone
 * its whole backing ArrayBuffer.
 */
import { Worker } from 'node:worker_threads'
import { availableParallelism } from 'node:os'
import { createHash } from 'node:crypto'
import { ClosedError } from './errors.ts'

// Plain JS so that workers need no TypeScript loader, whatever started the process.
const WORKER_SOURCE = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
const streams = new Map()
const view = (m) => Buffer.from(m.buf, m.off, m.len)
parentPort.on('message', (m) => {
  try {
    if (m.op === 'slices') {
      const data = view(m)
      const out = Buffer.allocUnsafe(32 * m.ends.length)
      let start = 0
      for (let i = 0; i < m.ends.length; i++) {
        createHash('sha256').update(data.subarray(start, m.ends[i])).digest().copy(out, 32 * i)
        start = m.ends[i]
      }
      parentPort.postMessage({ id: m.id, digests: out })
    } else if (m.op === 'update') {
      let h = streams.get(m.sid)
      if (h === undefined) { h = createHash('sha256'); streams.set(m.sid, h) }
      h.update(view(m))
      if (m.id !== undefined) parentPort.postMessage({ id: m.id, done: true })
    } else if (m.op === 'final') {
      const h = streams.get(m.sid) ?? createHash('sha256')
      streams.delete(m.sid)
      parentPort.postMessage({ id: m.id, digest: h.digest() })
    } else if (m.op === 'drop') {
      streams.delete(m.sid)
    }
  } catch (err) {
    parentPort.postMessage({ id: m.id, error: String(err && err.stack || err) })
  }
})
`

interface Posted { buf: ArrayBufferLike, off: number, len: number }

/**
 * A buffer the worker can read: shared memory as is, anything else as a compact copy handed
 * over (transferred). `owned` says the caller gives up `data` entirely, so no copy is needed.
 */
function toPosted (data: Uint8Array, owned = false): { posted: Posted, transfer: ArrayBuffer[] } {
  if (data.buffer instanceof SharedArrayBuffer) return { posted: { buf: data.buffer, off: data.byteOffset, len: data.byteLength }, transfer: [] }
  if (owned && data.byteOffset === 0 && data.byteLength === data.buffer.byteLength) return { posted: { buf: data.buffer, off: 0, len: data.byteLength }, transfer: [data.buffer as ArrayBuffer] }
  const copy = new Uint8Array(data.byteLength)
  copy.set(data)
  return { posted: { buf: copy.buffer, off: 0, len: copy.byteLength }, transfer: [copy.buffer] }
}

/** Concatenates views into one buffer (one copy) so a batch goes to a worker as one message. */
export function concatViews (views: readonly Uint8Array[]): { data: Uint8Array, ends: number[] } {
  let total = 0
  for (const v of views) total += v.byteLength
  // Ordinary memory, handed over to the worker: shared memory is only for pooled blocks.
  const data = new Uint8Array(total)
  const ends: number[] = []
  let at = 0
  for (const v of views) { data.set(v, at); at += v.byteLength; ends.push(at) }
  return { data, ends }
}

interface Pending { resolve: (v: any) => void, reject: (e: Error) => void, cost: number, worker: WorkerSlot }
interface WorkerSlot { worker: Worker, load: number }

export interface StreamHasher {
  /**
   * Feeds the next bytes, in order; hashing happens on the worker. The promise resolves when the
   * worker has read them — only then may shared memory holding them be reused.
   */
  update (bytes: Uint8Array): Promise<void>
  /** The sha2-256 of everything fed so far; the hasher is finished afterwards. */
  digest (): Promise<Uint8Array>
  /** Forget the state (on abort). */
  drop (): void
}

export interface HashPoolOptions {
  /** Worker threads; default: available cores (at least 1, at most 4). */
  threads?: number
}

export class HashPool {
  private readonly slots: WorkerSlot[] = []
  private readonly pending = new Map<number, Pending>()
  private nextId = 1
  private nextStream = 1
  private closed = false

  constructor (options: HashPoolOptions = {}) {
    const n = options.threads ?? Math.max(1, Math.min(4, availableParallelism()))
    for (let i = 0; i < n; i++) {
      const slot: WorkerSlot = { worker: this.spawn(), load: 0 }
      this.watch(slot)
      this.slots.push(slot)
    }
  }

  private spawn (): Worker {
    const worker = new Worker(WORKER_SOURCE, { eval: true })
    worker.on('message', (m: { id: number, digests?: Buffer, digest?: Buffer, error?: string }) => this.onMessage(m))
    // Idle workers must not keep a CLI process alive.
    worker.unref()
    return worker
  }

  /** A worker that dies fails what it had and is replaced, so later calls do not wait forever. */
  private watch (slot: WorkerSlot): void {
    const worker = slot.worker
    const died = (err: unknown): void => {
      if (slot.worker !== worker || this.closed) return
      for (const [id, p] of this.pending) if (p.worker === slot) { this.pending.delete(id); p.reject(err instanceof Error ? err : new Error(String(err))) }
      slot.load = 0
      slot.worker = this.spawn()
      this.watch(slot)
    }
    worker.once('error', died)
    worker.once('exit', (code) => died(new Error(`hash worker exited with code ${code}`)))
  }

  private onMessage (m: { id: number, digests?: Buffer, digest?: Buffer, error?: string, done?: boolean }): void {
    const p = this.pending.get(m.id)
    if (p === undefined) return
    this.pending.delete(m.id)
    p.worker.load -= p.cost
    if (m.error !== undefined) p.reject(new Error(m.error))
    else p.resolve(m.digests ?? m.digest)
  }

  private failAll (err: Error): void {
    for (const p of this.pending.values()) p.reject(err)
    this.pending.clear()
  }

  private leastLoaded (): WorkerSlot {
    let best = this.slots[0]
    for (const s of this.slots) if (s.load < best.load) best = s
    return best
  }

  private call (slot: WorkerSlot, message: Record<string, unknown>, transfer: ArrayBuffer[], cost: number): Promise<any> {
    if (this.closed) return Promise.reject(new ClosedError('hash pool is closed'))
    const id = this.nextId++
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, cost, worker: slot })
      slot.load += cost
      if (this.pending.size === 1) for (const s of this.slots) s.worker.ref()
      slot.worker.postMessage({ ...message, id }, transfer)
    }).finally(() => {
      if (this.pending.size === 0) for (const s of this.slots) s.worker.unref()
    })
  }

  /**
   * Digests of consecutive slices of `data`: slice i is [ends[i-1] ?? 0, ends[i]).
   * Returns one Uint8Array of 32 bytes per slice.
   */
  async digestSlices (data: Uint8Array, ends: readonly number[], owned = false): Promise<Uint8Array[]> {
    if (ends.length === 0) return []
    // Tiny batches are cheaper here than a round trip to a worker.
    if (data.byteLength < 16 * 1024) {
      const out: Uint8Array[] = []
      let start = 0
      for (const end of ends) { out.push(createHash('sha256').update(data.subarray(start, end)).digest()); start = end }
      return out
    }
    const { posted, transfer } = toPosted(data, owned)
    const all: Buffer = await this.call(this.leastLoaded(), { op: 'slices', ...posted, ends: Uint32Array.from(ends) }, transfer, data.byteLength)
    const out: Uint8Array[] = []
    for (let i = 0; i < ends.length; i++) out.push(new Uint8Array(all.buffer, all.byteOffset + 32 * i, 32))
    return out
  }

  /** Digests of separate views, batched into one message. */
  async digestMany (views: readonly Uint8Array[]): Promise<Uint8Array[]> {
    if (views.length === 0) return []
    if (views.length === 1) return await this.digestSlices(views[0], [views[0].byteLength])
    const { data, ends } = concatViews(views)
    return await this.digestSlices(data, ends, true)
  }

  /** An incremental hash pinned to one worker, so updates are applied in order. */
  stream (): StreamHasher {
    const sid = this.nextStream++
    const slot = this.slots[sid % this.slots.length]
    let done = false
    // Updates have no reply, so their bytes count as load on the pinned worker until the
    // final digest comes back; that steers chunk batches to the other workers meanwhile.
    let queued = 0
    return {
      update: async (bytes: Uint8Array) => {
        if (done) throw new ClosedError('stream hasher already finished')
        if (bytes.byteLength === 0) return
        const { posted, transfer } = toPosted(bytes)
        queued += bytes.byteLength
        slot.load += bytes.byteLength
        // Only shared memory needs the acknowledgement: a copy is the worker's own.
        if (transfer.length > 0) slot.worker.postMessage({ op: 'update', sid, ...posted }, transfer)
        else await this.call(slot, { op: 'update', sid, ...posted }, [], 0)
      },
      digest: async () => {
        if (done) throw new ClosedError('stream hasher already finished')
        done = true
        const d: Buffer = await this.call(slot, { op: 'final', sid }, [], queued)
        slot.load -= queued
        return new Uint8Array(d.buffer, d.byteOffset, 32)
      },
      drop: () => {
        if (done || this.closed) return
        done = true
        slot.load -= queued
        slot.worker.postMessage({ op: 'drop', sid })
      }
    }
  }

  async close (): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.failAll(new ClosedError('hash pool closed'))
    await Promise.all(this.slots.map(async s => await s.worker.terminate()))
  }
}

let shared: HashPool | undefined
/** One pool per process is enough: it is sized to the cores. */
export function sharedHashPool (): HashPool {
  shared ??= new HashPool()
  return shared
}

/** Synchronous sha2-256 for small inputs on the calling thread. */
export function sha256 (bytes: Uint8Array): Uint8Array {
  return createHash('sha256').update(bytes).digest()
}
