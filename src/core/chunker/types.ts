/** Chunking: how an object's bytes are cut into chunks, and what a chunk is. */

export interface Descriptor {
  /** CIDv1 raw sha2-256 of the chunk's bytes */
  cid: string
  /** position of the chunk's first byte in the object */
  offset: number
  length: number
}

export interface Chunk extends Descriptor {
  bytes: Uint8Array
}

/**
 * Finds cut points. Pure and synchronous so that it can run in a tight loop over a buffer.
 * Given the unconsumed bytes data[start, end), returns the length of the next chunk, or 0 when
 * it needs more data to decide (never when `final` is true and start < end).
 */
export interface Cutter {
  readonly name: string
  /** No chunk is longer than this: the pipeline sizes its buffers by it. */
  readonly maxSize: number
  next (data: Uint8Array, start: number, end: number, final: boolean): number
}

export interface CdcParams { min: number, avg: number, max: number }
export interface FixedParams { size: number }

export type ChunkerSpec =
  | ({ kind: 'cdc' } & Partial<CdcParams>)
  | ({ kind: 'fixed' } & Partial<FixedParams>)

/** FastCDC's usual spread: min = avg/4, max = avg*4. */
export const DEFAULT_CDC: CdcParams = { min: 16 * 1024, avg: 64 * 1024, max: 256 * 1024 }
/** Large fixed chunks keep per-chunk costs (index rows, frames) low for bulk data. */
export const DEFAULT_FIXED: FixedParams = { size: 256 * 1024 }
export const DEFAULT_CHUNKER: ChunkerSpec['kind'] = 'cdc'
/** Smallest and largest chunk any chunker may be configured for. */
export const MIN_CHUNK = 64
export const MAX_CHUNK = 16 * 1024 * 1024
