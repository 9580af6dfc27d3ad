/**
 * What the stores share: chunk names as map keys and digests, the manifest checks a commit
 * makes, and the pin counts that keep an open writer's chunks from being collected.
 */
import { canonicalDigest, cidFromDigest, digestFromName } from '../core/naming.ts'
import { BadRequestError, InvalidCidError, type InvalidOidError } from '../core/errors.ts'
import type { BlockSlice, Descriptor } from './types.ts'

/** Chunk lengths are kept as uint32 in manifests; no chunker may cut larger. */
const MAX_CHUNK_LENGTH = 0xffffffff

export interface ParsedName {
  /** the canonical spelling: the key of every map in the stores */
  key: string
  digest: Buffer
}

/** Parses a chunk cid (or, with InvalidOidError, an OID) in any accepted spelling. */
export function parseName (name: string, ErrorClass: typeof InvalidCidError | typeof InvalidOidError = InvalidCidError): ParsedName {
  const fast = typeof name === 'string' ? canonicalDigest(name) : undefined
  if (fast !== undefined) return { key: name, digest: fast }
  const digest = Buffer.from(digestFromName(name, ErrorClass))
  return { key: cidFromDigest(digest), digest }
}

export function sameDigest (a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0
}

export interface DistinctChunk { key: string, digest: Buffer, length: number }

export interface CheckedManifest {
  size: number
  /** each chunk once, in first-use order: references are counted once per object */
  distinct: DistinctChunk[]
  /** per descriptor: its index in `distinct` */
  order: Uint32Array
}

/**
 * Refuses a manifest that cannot describe an object: offsets must run contiguously from 0 and
 * one cid must always have the same length (its bytes are fixed by its hash).
 */
export function checkManifest (descriptors: readonly Descriptor[]): CheckedManifest {
  const distinct: DistinctChunk[] = []
  const indexOf = new Map<string, number>()
  const order = new Uint32Array(descriptors.length)
  let size = 0
  for (let i = 0; i < descriptors.length; i++) {
    const { cid, offset, length } = descriptors[i]
    if (!Number.isSafeInteger(length) || length < 1 || length > MAX_CHUNK_LENGTH) throw new BadRequestError(`descriptor ${i}: bad length ${String(length)}`)
    if (offset !== size) throw new BadRequestError(`descriptor ${i}: offset ${String(offset)} should be ${size} (descriptors must be contiguous, in order)`)
    const { key, digest } = parseName(cid)
    let index = indexOf.get(key)
    if (index === undefined) {
      index = distinct.length
      indexOf.set(key, index)
      distinct.push({ key, digest, length })
    } else if (distinct[index].length !== length) {
      throw new BadRequestError(`descriptor ${i}: chunk ${key} appears with lengths ${distinct[index].length} and ${length}`)
    }
    order[i] = index
    size += length
  }
  return { size, distinct, order }
}

/** Refuses a slice that does not lie inside its block (subarray would silently clamp it). */
export function checkSlice (block: Uint8Array, { cid, start, length }: BlockSlice): void {
  if (!Number.isSafeInteger(start) || !Number.isSafeInteger(length) || start < 0 || length < 1 || start + length > block.byteLength) {
    throw new BadRequestError(`chunk ${cid}: [${start}, ${start + length}) is not inside the block of ${block.byteLength} bytes`)
  }
}

/** Counted pins: several writers may hold the same chunk, and it stays safe until the last lets go. */
export class Pins {
  private readonly counts = new Map<string, number>()

  add (key: string): void {
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1)
  }

  delete (key: string): void {
    const count = this.counts.get(key)
    if (count === undefined) return
    if (count <= 1) this.counts.delete(key)
    else this.counts.set(key, count - 1)
  }

  has (key: string): boolean {
    return this.counts.has(key)
  }
}
