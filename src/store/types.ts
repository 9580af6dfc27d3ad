/**
 * Chunk and object storage behind one interface (DESIGN.md's ChunkStore).
 *
 * Objects become visible atomically: chunks are written through an ObjectWriter, and only its
 * `commit` makes the object (its manifest and the chunks' references) exist. A crash before
 * that leaves nothing listed; the orphaned bytes are reclaimed by garbage collection.
 * A chunk is served only after its bytes hash to its cid; a chunk that fails that check is
 * dropped from the store and reported as ERR_HASH_MISMATCH.
 */
import type { Descriptor } from '../core/chunker/types.ts'
import type { ManifestInput } from '../core/manifest.ts'

export type { Descriptor, ManifestInput }

export interface ObjectInfo {
  oid: string
  size: number
  /** number of descriptors in the manifest */
  chunks: number
  /** ms since epoch */
  createdAt: number
}

export interface StoreUsage {
  objects: number
  /** distinct chunks held */
  chunks: number
  /** bytes of distinct chunks held (what the data costs, after dedup) */
  bytes: number
}

export interface GcResult { chunks: number, bytes: number }

export interface ReadOptions { signal?: AbortSignal }

/** A chunk as it lies in a block of memory (the chunking pipeline's output). */
export interface BlockSlice { cid: string, start: number, length: number }

/** A chunk's verified bytes lent from the store's buffers: call `release` (once) when done with them. */
export interface BorrowedChunk { cid: string, bytes: Uint8Array, release: () => void }

export interface WriterOptions {
  /**
   * true (default): commit returns only once the chunk bytes are on disk. false: for copies that
   * can be fetched again (an agent's fetched objects, a cache): no fsync; a power loss may leave
   * chunks whose bytes do not verify — found on read, dropped, never served.
   */
  durable?: boolean
}

export interface ObjectWriter {
  /**
   * Stores a chunk whose bytes the caller has already hashed to `cid` (the agent core verifies
   * everything before it reaches a writer). A chunk the store already has is not written again.
   * Until commit or abort, chunks written (or found present) here are safe from collection.
   */
  putChunk (cid: string, bytes: Uint8Array, o?: ReadOptions): Promise<void>
  /**
   * Many verified chunks lying in one buffer; contiguous runs are written with one call. The
   * caller may reuse `bytes` once it settles, whether it succeeded or failed.
   */
  putBlock (bytes: Uint8Array, chunks: readonly BlockSlice[], o?: ReadOptions): Promise<void>
  /**
   * Whether the store has a chunk; if it has, the chunk is this writer's as if written here (safe
   * from gc until the writer finishes, made durable by its commit). Callers that skip fetching
   * the chunks a store holds ask this rather than `ChunkStore.has`.
   */
  has (cid: string): Promise<boolean>
  /**
   * Makes the object exist: flushes the chunk bytes durably, then records the manifest and a
   * reference from the object to each distinct chunk, in one transaction. Every descriptor's
   * chunk must be present (else ERR_STORE). Committing an object that already exists is a no-op.
   * The manifest may come packed (PackedManifest): big objects are committed without a
   * descriptor object per chunk.
   */
  commit (oid: string, manifest: ManifestInput): Promise<ObjectInfo>
  /**
   * Lets go of the writer's chunks: unreferenced ones become collectable (the disk store may keep
   * them until writers opened before this one have finished too).
   */
  abort (): Promise<void>
}

export interface ChunkStore {
  has (cid: string): Promise<boolean>
  /** The verified bytes of a chunk. ERR_NOT_FOUND if absent, ERR_HASH_MISMATCH if corrupted. */
  get (cid: string, o?: ReadOptions): Promise<Uint8Array>
  /**
   * The verified bytes of several chunks, in the order asked. Implementations coalesce reads of
   * chunks that lie next to each other. A missing or corrupt chunk fails the iteration at that
   * chunk with ERR_NOT_FOUND / ERR_HASH_MISMATCH, after the good ones before it were yielded.
   */
  getMany (cids: readonly string[], o?: ReadOptions): AsyncIterable<{ cid: string, bytes: Uint8Array }>
  /**
   * getMany without the copy: the bytes are views into the store's read buffers, valid until the
   * chunk's `release`. For consumers that hand bytes straight to a socket. Every chunk yielded
   * must be released, also when the iteration stops early.
   */
  borrowMany (cids: readonly string[], o?: ReadOptions): AsyncIterable<BorrowedChunk>
  /** A loose chunk (no object references it yet); its bytes are verified against `cid` here. */
  put (cid: string, bytes: Uint8Array, o?: ReadOptions): Promise<void>

  openWriter (o?: WriterOptions): ObjectWriter
  /** Shortcut: writer + commit for a manifest whose chunks are all present already. */
  putManifest (oid: string, manifest: ManifestInput): Promise<ObjectInfo>

  stat (oid: string): Promise<ObjectInfo | undefined>
  /** Descriptors in offset order. ERR_NOT_FOUND if the object is not stored. */
  manifest (oid: string, o?: ReadOptions): AsyncIterable<Descriptor>
  objects (o?: ReadOptions): AsyncIterable<ObjectInfo>
  /** Drops the object (its references). Returns false if it was not stored. */
  release (oid: string): Promise<boolean>
  /** Reclaims chunks no object references and no open writer holds (wrote, found or relies on). */
  gc (o?: ReadOptions): Promise<GcResult>
  usage (): Promise<StoreUsage>
  close (): Promise<void>
}
