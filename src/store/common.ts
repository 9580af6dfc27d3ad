/**
 * What the stores share: chunk names as map keys and digests, slice checks, and the pin counts
 * that keep an open writer's chunks from being collected (memory store).
 */
import { canonicalDigest, cidFromDigest, digestFromName } from '../core/naming.ts'
import { BadRequestError, InvalidCidError, type InvalidOidError } from '../core/errors.ts'
import type { BlockSlice, BorrowedChunk } from './types.ts'

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

/** getMany from borrowMany: a copy the caller owns per chunk, the lent buffer given back at once. */
export async function * copiesOfBorrowed (borrowed: AsyncIterable<BorrowedChunk>): AsyncIterable<{ cid: string, bytes: Uint8Array }> {
  for await (const chunk of borrowed) {
    const bytes = new Uint8Array(chunk.bytes)
    chunk.release()
    yield { cid: chunk.cid, bytes }
  }
}

export function sameDigest (a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.compare(a, b) === 0
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
