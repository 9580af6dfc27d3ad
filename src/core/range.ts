/** HTTP Range (RFC 9110 §14) for one byte range: what the agent and lockers serve. */
import { InvalidRangeError } from './errors.ts'

export interface ByteRange { start: number, end: number /* inclusive */ }

/**
 * Parses a Range header against a known size. Returns undefined when there is no header.
 * One range only (multipart responses are not offered): several ranges, bad syntax, or a range
 * that starts past the end are refused with ERR_INVALID_RANGE (416).
 */
export function parseRange (header: string | undefined, size: number): ByteRange | undefined {
  if (header === undefined) return undefined
  if (header.length > 200) throw new InvalidRangeError('Range header too long')
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim())
  if (m === null) throw new InvalidRangeError(`unsupported Range ${JSON.stringify(header.slice(0, 60))} (one range, bytes=START-END)`)
  const [, a, b] = m
  if (a === '' && b === '') throw new InvalidRangeError('Range needs a start or a suffix length')
  if (a.length > 16 || b.length > 16) throw new InvalidRangeError('Range numbers too large')
  let start: number
  let end: number
  if (a === '') {
    const suffix = Number(b)
    if (suffix === 0) throw new InvalidRangeError('empty suffix range')
    start = Math.max(0, size - suffix)
    end = size - 1
  } else {
    start = Number(a)
    end = b === '' ? size - 1 : Math.min(Number(b), size - 1)
    if (b !== '' && Number(b) < start) throw new InvalidRangeError('Range end before start')
  }
  if (start >= size) throw new InvalidRangeError(`Range starts at ${start}, past the end (${size} bytes)`)
  return { start, end }
}
