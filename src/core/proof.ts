/**
 * Proof of possession (SAILOR's distribution dedup): before a locker server links an object it
 * already stores into another locker without moving the bytes, whoever claims to hold the object
 * must show it. The verifier picks a fresh nonce and random byte ranges; the prover answers
 * sha-256(nonce ‖ the bytes of each range, in order). Knowing the OID (a public name) does not
 * help: the answer needs the bytes, and a nonce makes every answer single-use.
 */
import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto'
import { BadRequestError } from './errors.ts'

/** [start, length] */
export type ProofRange = [number, number]

export interface Challenge { nonce: string, ranges: ProofRange[] }

/** Ranges per challenge and their length: 16 × 4 KiB lands in 16 random places of any object. */
const RANGES = 16
const RANGE_BYTES = 4096
const MAX_RANGES = 64
const MAX_RANGE_BYTES = 65536

/** A fresh challenge over the first `limit` bytes of an object (all of it, usually). */
export function newChallenge (limit: number): Challenge {
  const ranges: ProofRange[] = []
  if (limit > 0) {
    for (let i = 0; i < RANGES; i++) {
      const length = Math.min(RANGE_BYTES, limit)
      // randomInt's bound is exclusive and at most 2^48: objects are far smaller.
      ranges.push([limit === length ? 0 : randomInt(0, limit - length + 1), length])
    }
    ranges.sort((a, b) => a[0] - b[0])
  }
  return { nonce: randomBytes(16).toString('base64url'), ranges }
}

/** Checks a challenge that came from outside (a prover's side), against the object's size. */
export function parseChallenge (input: unknown, size: number): Challenge {
  const c = input as Partial<Challenge> | null
  if (typeof c !== 'object' || c === null || typeof c.nonce !== 'string' || !/^[A-Za-z0-9_-]{16,64}$/.test(c.nonce)) throw new BadRequestError('a challenge needs a nonce of 16–64 base64url characters')
  if (!Array.isArray(c.ranges) || c.ranges.length > MAX_RANGES) throw new BadRequestError(`a challenge has at most ${MAX_RANGES} ranges`)
  for (const r of c.ranges) {
    if (!Array.isArray(r) || r.length !== 2 || !Number.isSafeInteger(r[0]) || !Number.isSafeInteger(r[1]) || r[0] < 0 || r[1] < 1 || r[1] > MAX_RANGE_BYTES || r[0] + r[1] > size) {
      throw new BadRequestError(`each range is [start, length] within the object's ${size} bytes, length 1–${MAX_RANGE_BYTES}`)
    }
  }
  return { nonce: c.nonce, ranges: c.ranges as ProofRange[] }
}

/** The answer: hex sha-256 of the nonce and the ranges' bytes, read with `read(start, endInclusive)`. */
export async function answerChallenge (c: Challenge, read: (start: number, end: number) => AsyncIterable<Uint8Array>): Promise<string> {
  const h = createHash('sha256').update(Buffer.from(c.nonce, 'base64url'))
  for (const [start, length] of c.ranges) {
    let got = 0
    for await (const bytes of read(start, start + length - 1)) { h.update(bytes); got += bytes.byteLength }
    if (got !== length) throw new BadRequestError(`range ${start}+${length} is not all there`)
  }
  return h.digest('hex')
}

/** Constant-time comparison of two hex answers (a wrong one tells nothing of the right one). */
export function sameAnswer (a: string, b: string): boolean {
  const x = Buffer.from(a, 'utf8')
  const y = Buffer.from(b, 'utf8')
  return x.length === y.length && timingSafeEqual(x, y)
}
