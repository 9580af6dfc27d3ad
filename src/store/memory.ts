/**
 * A chunk store in memory: for tests, caches and short-lived agents. Same contract as the disk
 * store, including reference counts, pins and verification on every read.
 *
 * Chunks a writer puts are held (copied: callers reuse their buffers) and visible to `has` at
 * once, pinned until the writer commits or aborts. A chunk whose bytes no longer hash to its cid
 * loses its bytes but keeps its reference count, so objects that use it stay listed and a later
 * put of the right bytes repairs them.
 */
import { ClosedError, HashMismatchError, InvalidOidError, NotFoundError, StoreError, throwIfAborted } from '../core/errors.ts'
import { sha256 } from '../core/hash-pool.ts'
import { PackedManifest, packManifest } from '../core/manifest.ts'
import { cidFromDigest } from '../core/naming.ts'
import { checkSlice, parseName, Pins, sameDigest } from './common.ts'
import type { BlockSlice, BorrowedChunk, ChunkStore, Descriptor, GcResult, ManifestInput, ObjectInfo, ObjectWriter, ReadOptions, StoreUsage } from './types.ts'

function ignore (): void {}

interface StoredChunk {
  /** undefined once the bytes failed verification */
  bytes: Uint8Array | undefined
  digest: Uint8Array
  refs: number
}

/** A copy in memory of its own (Buffer's slice would share the caller's memory). */
function copyOf (bytes: Uint8Array): Uint8Array {
  return new Uint8Array(bytes)
}

interface StoredObject { info: ObjectInfo, manifest: PackedManifest, distinct: string[] }

export class MemoryStore implements ChunkStore {
  private readonly chunks = new Map<string, StoredChunk>()
  private readonly objectsByOid = new Map<string, StoredObject>()
  private readonly pins = new Pins()
  private closed = false

  async has (cid: string): Promise<boolean> {
    this.ensureOpen()
    return this.chunks.get(parseName(cid).key)?.bytes !== undefined
  }

  async get (cid: string, o: ReadOptions = {}): Promise<Uint8Array> {
    this.ensureOpen()
    throwIfAborted(o.signal)
    return copyOf(this.verified(parseName(cid).key))
  }

  async * getMany (cids: readonly string[], o: ReadOptions = {}): AsyncIterable<{ cid: string, bytes: Uint8Array }> {
    for (const cid of cids) {
      this.ensureOpen()
      throwIfAborted(o.signal)
      yield { cid, bytes: copyOf(this.verified(parseName(cid).key)) }
    }
  }

  async * borrowMany (cids: readonly string[], o: ReadOptions = {}): AsyncIterable<BorrowedChunk> {
    for (const cid of cids) {
      this.ensureOpen()
      throwIfAborted(o.signal)
      // The stored bytes themselves, which nothing ever writes to: lending them costs nothing.
      yield { cid, bytes: this.verified(parseName(cid).key), release: ignore }
    }
  }

  async put (cid: string, bytes: Uint8Array, o: ReadOptions = {}): Promise<void> {
    this.ensureOpen()
    throwIfAborted(o.signal)
    const { key, digest } = parseName(cid)
    if (!sameDigest(sha256(bytes), digest)) throw new HashMismatchError(`bytes do not hash to ${key}`)
    this.keep(key, digest, bytes)
  }

  openWriter (): ObjectWriter {
    this.ensureOpen()
    return new MemoryWriter(this)
  }

  async putManifest (oid: string, manifest: ManifestInput): Promise<ObjectInfo> {
    return await this.openWriter().commit(oid, manifest)
  }

  async stat (oid: string): Promise<ObjectInfo | undefined> {
    this.ensureOpen()
    const stored = this.objectsByOid.get(parseName(oid, InvalidOidError).key)
    return stored === undefined ? undefined : { ...stored.info }
  }

  async * manifest (oid: string, o: ReadOptions = {}): AsyncIterable<Descriptor> {
    this.ensureOpen()
    const stored = this.objectsByOid.get(parseName(oid, InvalidOidError).key)
    if (stored === undefined) throw new NotFoundError(`object ${oid} is not stored`)
    for (const descriptor of stored.manifest.descriptors()) {
      throwIfAborted(o.signal)
      yield descriptor
    }
  }

  async * objects (o: ReadOptions = {}): AsyncIterable<ObjectInfo> {
    this.ensureOpen()
    for (const stored of [...this.objectsByOid.values()]) {
      throwIfAborted(o.signal)
      yield { ...stored.info }
    }
  }

  async release (oid: string): Promise<boolean> {
    this.ensureOpen()
    const key = parseName(oid, InvalidOidError).key
    const stored = this.objectsByOid.get(key)
    if (stored === undefined) return false
    this.objectsByOid.delete(key)
    for (const key of stored.distinct) {
      const chunk = this.chunks.get(key)
      if (chunk !== undefined) chunk.refs--
    }
    return true
  }

  async gc (o: ReadOptions = {}): Promise<GcResult> {
    this.ensureOpen()
    throwIfAborted(o.signal)
    const result: GcResult = { chunks: 0, bytes: 0 }
    for (const [key, chunk] of this.chunks) {
      if (chunk.refs > 0 || this.pins.has(key)) continue
      this.chunks.delete(key)
      result.chunks++
      result.bytes += chunk.bytes?.byteLength ?? 0
    }
    return result
  }

  async usage (): Promise<StoreUsage> {
    this.ensureOpen()
    const usage: StoreUsage = { objects: this.objectsByOid.size, chunks: 0, bytes: 0 }
    for (const chunk of this.chunks.values()) {
      if (chunk.bytes === undefined) continue
      usage.chunks++
      usage.bytes += chunk.bytes.byteLength
    }
    return usage
  }

  async close (): Promise<void> {
    this.closed = true
    this.chunks.clear()
    this.objectsByOid.clear()
  }

  ensureOpen (): void {
    if (this.closed) throw new ClosedError('store is closed')
  }

  /** Stores a copy of verified bytes, or fills in a chunk whose bytes were lost. */
  keep (key: string, digest: Uint8Array, bytes: Uint8Array): void {
    const chunk = this.chunks.get(key)
    if (chunk === undefined) this.chunks.set(key, { bytes: copyOf(bytes), digest, refs: 0 })
    else chunk.bytes ??= copyOf(bytes)
  }

  present (key: string): boolean {
    return this.chunks.get(key)?.bytes !== undefined
  }

  pin (key: string): void { this.pins.add(key) }
  unpin (key: string): void { this.pins.delete(key) }

  /** Makes the object exist; synchronous, so nothing can interleave between check and record. */
  record (oid: string, input: ManifestInput): ObjectInfo {
    this.ensureOpen()
    const key = parseName(oid, InvalidOidError).key
    const existing = this.objectsByOid.get(key)
    if (existing !== undefined) return { ...existing.info }
    const manifest = packManifest(input)
    const distinct: string[] = []
    for (const i of manifest.distinct()) {
      const chunkKey = cidFromDigest(manifest.digest(i))
      const stored = this.chunks.get(chunkKey)
      // A descriptor with the wrong length names bytes the store does not have, like a wrong cid.
      if (stored?.bytes?.byteLength !== manifest.length(i)) throw new StoreError(`chunk ${chunkKey} (${manifest.length(i)} bytes) is not in the store`)
      distinct.push(chunkKey)
    }
    for (const chunkKey of distinct) this.chunks.get(chunkKey)!.refs++
    const info: ObjectInfo = { oid: key, size: manifest.size, chunks: manifest.count, createdAt: Date.now() }
    // A copy: a packed manifest handed in may be a view its builder appends to.
    this.objectsByOid.set(key, { info, manifest: PackedManifest.decode(Buffer.from(manifest.entries)), distinct })
    return { ...info }
  }

  /** The stored bytes after checking them; a chunk that fails loses its bytes (see the file comment). */
  private verified (key: string): Uint8Array {
    const chunk = this.chunks.get(key)
    if (chunk?.bytes === undefined) throw new NotFoundError(`chunk ${key} is not in the store`)
    if (!sameDigest(sha256(chunk.bytes), chunk.digest)) {
      if (chunk.refs > 0) chunk.bytes = undefined
      else this.chunks.delete(key)
      throw new HashMismatchError(`chunk ${key} is corrupted in the store`)
    }
    return chunk.bytes
  }
}

class MemoryWriter implements ObjectWriter {
  private readonly pinned = new Set<string>()
  private finished = false

  constructor (private readonly store: MemoryStore) {}

  async putChunk (cid: string, bytes: Uint8Array, o: ReadOptions = {}): Promise<void> {
    this.ensureWritable(o)
    this.hold(cid, bytes)
  }

  async putBlock (bytes: Uint8Array, chunks: readonly BlockSlice[], o: ReadOptions = {}): Promise<void> {
    this.ensureWritable(o)
    for (const slice of chunks) checkSlice(bytes, slice)
    for (const { cid, start, length } of chunks) this.hold(cid, bytes.subarray(start, start + length))
  }

  async has (cid: string): Promise<boolean> {
    this.ensureWritable({})
    const { key } = parseName(cid)
    if (!this.store.present(key)) return false
    if (!this.pinned.has(key)) {
      this.store.pin(key)
      this.pinned.add(key)
    }
    return true
  }

  async commit (oid: string, manifest: ManifestInput): Promise<ObjectInfo> {
    this.ensureWritable({})
    try {
      return this.store.record(oid, manifest)
    } finally {
      this.finish()
    }
  }

  async abort (): Promise<void> {
    if (!this.finished) this.finish()
  }

  private hold (cid: string, bytes: Uint8Array): void {
    const { key, digest } = parseName(cid)
    if (this.pinned.has(key)) return
    if (!this.store.present(key)) this.store.keep(key, digest, bytes)
    this.store.pin(key)
    this.pinned.add(key)
  }

  private ensureWritable (o: ReadOptions): void {
    this.store.ensureOpen()
    if (this.finished) throw new ClosedError('writer is finished (committed or aborted)')
    throwIfAborted(o.signal)
  }

  private finish (): void {
    this.finished = true
    for (const key of this.pinned) this.store.unpin(key)
    this.pinned.clear()
  }
}

export function createMemoryStore (): MemoryStore {
  return new MemoryStore()
}
