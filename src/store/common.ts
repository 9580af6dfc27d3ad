/**
 * What the stores share: chunk names as map keys and digests, the manifest checks a commit
 * makes, and the pin counts that keep an open writer's chunks from being collected.
 */
import { digestFromName, DIGEST_LENGTH } from '../core/naming.ts'
import { BadRequestError, InvalidCidError, type InvalidOidError } from '../core/errors.ts'
import type { BlockSlice, Descriptor } from './types.ts'

/** Chunk lengths are kept as uint32 in manifests; no chunker may cut larger. */
const MAX_CHUNK_LENGTH = 0xffffffff

// A CIDv1 raw sha2-256 name in base32 is 'b' + base32(0x01 0x55 0x12 0x20 ‖ digest): 59 characters.
// Parsing it through multiformats costs ~6 µs and printing ~4 µs; a 4 GiB object of 64 KiB chunks
// has 65k of them per commit and per manifest read, so the canonical spelling gets a direct codec
// (anything else still goes through naming.ts).
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567'
const CID_PREFIX = [0x01, 0x55, 0x12, 0x20]
const CID_BYTES = CID_PREFIX.length + DIGEST_LENGTH
const CANONICAL_LENGTH = 1 + Math.ceil(CID_BYTES * 8 / 5)
const ALPHABET_CODES = Buffer.from(ALPHABET, 'latin1')
const SYMBOL_VALUES = new Int8Array(128).fill(-1)
for (let i = 0; i < ALPHABET.length; i++) SYMBOL_VALUES[ALPHABET.charCodeAt(i)] = i

/** The digest of a canonical base32 name, or undefined when `name` is spelled any other way. */
function decodeCanonical (name: string): Buffer | undefined {
  if (name.length !== CANONICAL_LENGTH || name.charCodeAt(0) !== 0x62 /* b */) return undefined
  const bytes = Buffer.allocUnsafe(CID_BYTES)
  let buffer = 0
  let bits = 0
  let at = 0
  for (let i = 1; i < CANONICAL_LENGTH; i++) {
    const code = name.charCodeAt(i)
    const value = code < 128 ? SYMBOL_VALUES[code] : -1
    if (value < 0) return undefined
    buffer = ((buffer << 5) | value) & 0xfff
    bits += 5
    if (bits >= 8) {
      bits -= 8
      bytes[at++] = buffer >>> bits
    }
  }
  // Non-zero padding bits would make a second spelling of the same digest.
  if ((buffer & ((1 << bits) - 1)) !== 0) return undefined
  for (let i = 0; i < CID_PREFIX.length; i++) if (bytes[i] !== CID_PREFIX[i]) return undefined
  return bytes.subarray(CID_PREFIX.length)
}

// Scratch space for nameOfDigest: encoding is synchronous, so one buffer serves every call.
const encodeInput = Buffer.alloc(CID_BYTES)
encodeInput.set(CID_PREFIX, 0)
const encodeOutput = Buffer.alloc(CANONICAL_LENGTH)
encodeOutput[0] = 0x62

/** The canonical name (`bafkrei…`) of a sha2-256 digest; the same string naming.ts prints. */
export function nameOfDigest (digest: Uint8Array): string {
  encodeInput.set(digest, CID_PREFIX.length)
  let buffer = 0
  let bits = 0
  let at = 1
  for (let i = 0; i < CID_BYTES; i++) {
    buffer = ((buffer << 8) | encodeInput[i]) & 0xfff
    bits += 8
    while (bits >= 5) {
      bits -= 5
      encodeOutput[at++] = ALPHABET_CODES[(buffer >>> bits) & 31]
    }
  }
  if (bits > 0) encodeOutput[at] = ALPHABET_CODES[(buffer << (5 - bits)) & 31]
  return encodeOutput.toString('latin1', 0, CANONICAL_LENGTH)
}

export interface ParsedName {
  /** the canonical spelling: the key of every map in the stores */
  key: string
  digest: Buffer
}

/** Parses a chunk cid (or, with InvalidOidError, an OID) in any accepted spelling. */
export function parseName (name: string, ErrorClass: typeof InvalidCidError | typeof InvalidOidError = InvalidCidError): ParsedName {
  const fast = typeof name === 'string' ? decodeCanonical(name) : undefined
  if (fast !== undefined) return { key: name, digest: fast }
  const digest = Buffer.from(digestFromName(name, ErrorClass))
  return { key: nameOfDigest(digest), digest }
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
