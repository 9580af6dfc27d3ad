import { InvalidConfigError } from '../errors.ts'
import { type Cutter, DEFAULT_FIXED, MAX_CHUNK, MIN_CHUNK } from './types.ts'

/** Every chunk is `size` bytes, the last one what remains. */
export function fixedCutter (size: number = DEFAULT_FIXED.size): Cutter {
  if (!Number.isInteger(size) || size < MIN_CHUNK || size > MAX_CHUNK) {
    throw new InvalidConfigError(`fixed chunk size must be an integer from ${MIN_CHUNK} to ${MAX_CHUNK}`)
  }
  return {
    name: `fixed-${size}`,
    maxSize: size,
    next (_data, start, end, final) {
      const available = end - start
      if (available >= size) return size
      return final ? available : 0
    }
  }
}
