/**
 * Content-defined chunking, FastCDC style: a gear rolling hash (one shift and one add per byte),
 * cut-point skipping below `min`, and normalized chunking — a harder mask before `avg` and an
 * easier one after it — so chunk sizes cluster around `avg`. An insertion shifts only the chunks
 * around it: the rolling hash resynchronises within a chunk.
 */
import { createHash } from 'node:crypto'
import { InvalidConfigError } from '../errors.ts'
import { type CdcParams, type Cutter, DEFAULT_CDC, MAX_CHUNK, MIN_CHUNK } from './types.ts'

/**
 * The gear table: 256 pseudo-random 32-bit values. Derived from SHA-256 of a fixed label so it is
 * the same everywhere forever — changing it would change every chunk boundary ever computed.
 */
export const GEAR: Int32Array = (() => {
  // Int32 so every entry is a small integer to V8: a Uint32 above 2^31 would be a heap double.
  const table = new Int32Array(256)
  for (let i = 0; i < 256; i++) {
    table[i] = createHash('sha256').update(`berth-gear-v1:${i}`).digest().readInt32BE(0)
  }
  return table
})()

/** A mask of `bits` one-bits taken from the top of a 32-bit word, where the gear hash mixes most. */
function topMask (bits: number): number {
  return bits <= 0 ? 0 : (~0 << (32 - bits)) >>> 0
}

export function cdcCutter (params: Partial<CdcParams> = {}): Cutter {
  const { min, avg, max } = { ...DEFAULT_CDC, ...params }
  for (const [k, v] of Object.entries({ min, avg, max })) {
    if (!Number.isInteger(v) || v < MIN_CHUNK || v > MAX_CHUNK) throw new InvalidConfigError(`cdc ${k} must be an integer from ${MIN_CHUNK} to ${MAX_CHUNK}`)
  }
  if (!(min < avg && avg < max)) throw new InvalidConfigError('cdc sizes must satisfy min < avg < max')
  const bits = Math.round(Math.log2(avg))
  // Normalization level 2: two more bits before avg (cut less likely), two fewer after.
  const maskHard = topMask(bits + 2) | 0
  const maskEasy = topMask(bits - 2) | 0
  const gear = GEAR
  return {
    name: `cdc-${min}-${avg}-${max}`,
    maxSize: max,
    next (data, start, end, final) {
      const available = end - start
      if (available <= min) return final ? available : 0
      if (available < max && !final) {
        // Only decide when a whole max-sized window is here, so the cut does not depend on
        // how the input happened to be split into reads.
        return 0
      }
      const stop = start + Math.min(available, max)
      const normal = Math.min(start + avg, stop)
      let h = 0
      let i = start + min
      for (; i < normal; i++) {
        h = ((h << 1) + gear[data[i]]) | 0
        if ((h & maskHard) === 0) return i + 1 - start
      }
      for (; i < stop; i++) {
        h = ((h << 1) + gear[data[i]]) | 0
        if ((h & maskEasy) === 0) return i + 1 - start
      }
      return stop - start
    }
  }
}
