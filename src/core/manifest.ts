/**
 * An object's chunk list, packed: 36 bytes per entry (the chunk's 32-byte sha2-256 digest, then
 * its length as uint32 big-endian); offsets are the running sum. It is the form a store keeps a
 * manifest in, and the form a put or a get builds one up in: a descriptor object with its cid
 * string costs ~10× as much, and a 4 GiB object has 65,536 chunks at the default chunker.
 */
import { randomBytes } from 'node:crypto'
import type { Descriptor } from './chunker/types.ts'
import { BadRequestError, InvalidCidError } from './errors.ts'
import { DIGEST_LENGTH, cidFromDigest, digestFromName } from './naming.ts'

export const MANIFEST_ENTRY = DIGEST_LENGTH + 4
/** Chunk lengths are kept as uint32; no chunker may cut larger. */
export const MAX_CHUNK_LENGTH = 0xffffffff
const SEED = randomBytes(4).readUInt32LE(0)

export class PackedManifest {
  private buffer: Buffer
  /** number of entries */
  count = 0
  /** bytes of the object: the sum of the lengths */
  size = 0

  private constructor (buffer: Buffer, count: number, size: number) {
    this.buffer = buffer
    this.count = count
    this.size = size
  }

  static empty (capacity = 64): PackedManifest {
    return new PackedManifest(Buffer.allocUnsafe(capacity * MANIFEST_ENTRY), 0, 0)
  }

  /** Wraps stored entries (no copy); a blob that is not whole entries is refused. */
  static decode (entries: Buffer): PackedManifest {
    if (entries.byteLength % MANIFEST_ENTRY !== 0) throw new BadRequestError(`a packed manifest is a multiple of ${MANIFEST_ENTRY} bytes, got ${entries.byteLength}`)
    const count = entries.byteLength / MANIFEST_ENTRY
    let size = 0
    for (let i = 0; i < count; i++) size += entries.readUInt32BE(i * MANIFEST_ENTRY + DIGEST_LENGTH)
    return new PackedManifest(entries, count, size)
  }

  /**
   * Packs descriptors, refusing any that cannot describe an object: offsets must run
   * contiguously from 0, cids must parse, lengths must be 1..2^32-1.
   */
  static from (descriptors: readonly Descriptor[]): PackedManifest {
    const m = PackedManifest.empty(Math.max(1, descriptors.length))
    for (let i = 0; i < descriptors.length; i++) {
      const { cid, offset, length } = descriptors[i]
      if (offset !== m.size) throw new BadRequestError(`descriptor ${i}: offset ${String(offset)} should be ${m.size} (descriptors must be contiguous, in order)`)
      m.push(digestFromName(cid, InvalidCidError), length, i)
    }
    return m
  }

  /** Appends a chunk; `index` only names the entry in the error for a bad length. */
  push (digest: Uint8Array, length: number, index = this.count): void {
    if (!Number.isSafeInteger(length) || length < 1 || length > MAX_CHUNK_LENGTH) throw new BadRequestError(`descriptor ${index}: bad length ${String(length)}`)
    if (digest.byteLength !== DIGEST_LENGTH) throw new InvalidCidError(`digest must be ${DIGEST_LENGTH} bytes, got ${digest.byteLength}`)
    const at = this.count * MANIFEST_ENTRY
    if (at + MANIFEST_ENTRY > this.buffer.byteLength) {
      // Doubling: appends stay O(1) amortized, and the slack is at most the size of what is held.
      const grown = Buffer.allocUnsafe(Math.max(64 * MANIFEST_ENTRY, this.buffer.byteLength * 2))
      this.buffer.copy(grown, 0, 0, at)
      this.buffer = grown
    }
    this.buffer.set(digest, at)
    this.buffer.writeUInt32BE(length, at + DIGEST_LENGTH)
    this.count++
    this.size += length
  }

  /** The entry's digest: a view into the manifest, valid while it lives (and is not appended to). */
  digest (i: number): Buffer {
    const at = i * MANIFEST_ENTRY
    return this.buffer.subarray(at, at + DIGEST_LENGTH)
  }

  length (i: number): number {
    return this.buffer.readUInt32BE(i * MANIFEST_ENTRY + DIGEST_LENGTH)
  }

  /** The packed entries (a view; copy it to keep it past the next push). */
  get entries (): Buffer {
    return this.buffer.subarray(0, this.count * MANIFEST_ENTRY)
  }

  * descriptors (): Generator<Descriptor> {
    let offset = 0
    for (let i = 0; i < this.count; i++) {
      const length = this.length(i)
      yield { cid: cidFromDigest(this.digest(i)), offset, length }
      offset += length
    }
  }

  /**
   * Each chunk once, in first-use order (an object references a chunk once however often it
   * repeats), with the index of its first entry. One cid must always have the same length.
   * An open-addressing table of entry indexes, not a Map of digest strings: committing a
   * 65,536-chunk object took ~6 MB of heap that way, at the moment an agent's memory peaks.
   */
  distinct (): Uint32Array {
    let capacity = 16
    while (capacity < this.count * 2) capacity *= 2
    const mask = capacity - 1
    const table = new Int32Array(capacity).fill(-1)
    const out = new Uint32Array(this.count)
    let found = 0
    const b = this.buffer
    for (let i = 0; i < this.count; i++) {
      const at = i * MANIFEST_ENTRY
      // Digests are sha2-256 outputs, uniform already; the per-process seed keeps a crafted
      // manifest from piling its entries into one run of slots.
      let slot = (Math.imul(b.readUInt32LE(at) ^ SEED, 0x9e3779b1) ^ b.readUInt32LE(at + 4)) & mask
      for (;;) {
        const j = table[slot]
        if (j === -1) {
          table[slot] = i
          out[found++] = i
          break
        }
        if (b.compare(b, j * MANIFEST_ENTRY, j * MANIFEST_ENTRY + DIGEST_LENGTH, at, at + DIGEST_LENGTH) === 0) {
          if (this.length(j) !== this.length(i)) {
            throw new BadRequestError(`descriptor ${i}: chunk ${cidFromDigest(this.digest(i))} appears with lengths ${this.length(j)} and ${this.length(i)}`)
          }
          break
        }
        slot = (slot + 1) & mask
      }
    }
    return out.subarray(0, found)
  }
}

/** What a store's commit takes: descriptors as a caller has them, or a manifest already packed. */
export type ManifestInput = readonly Descriptor[] | PackedManifest

export function packManifest (input: ManifestInput): PackedManifest {
  return input instanceof PackedManifest ? input : PackedManifest.from(input)
}
