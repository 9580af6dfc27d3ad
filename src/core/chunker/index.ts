import { InvalidConfigError } from '../errors.ts'
import { parseSize } from '../units.ts'
import type { HashPool } from '../hash-pool.ts'
import { cdcCutter } from './cdc.ts'
import { fixedCutter } from './fixed.ts'
import { ChunkingPipeline, type PipelineOptions } from './pipeline.ts'
import { type Chunk, type ChunkerSpec, type Cutter, DEFAULT_CDC, DEFAULT_FIXED } from './types.ts'

export * from './types.ts'
export { cdcCutter, GEAR } from './cdc.ts'
export { fixedCutter } from './fixed.ts'
export { ChunkingPipeline, type ChunkedBlock, type BlockChunk, DEFAULT_BLOCK_SIZE } from './pipeline.ts'

/** DESIGN.md's Chunker: bytes in, chunks (with their cids) out, streaming. */
export interface Chunker {
  readonly spec: ChunkerSpec
  readonly cutter: Cutter
  /** Blocks of chunks plus the whole object's OID once iterated: the fast path. */
  pipeline (src: AsyncIterable<Uint8Array>, o?: PipelineOptions): ChunkingPipeline
  /** The same, reading a file straight into the blocks (no intermediate copies). */
  fromFile (path: string, o?: PipelineOptions): ChunkingPipeline
  /** One chunk at a time: the simple path. */
  chunk (src: AsyncIterable<Uint8Array>, o?: PipelineOptions): AsyncIterable<Chunk>
}

export function createChunker (spec: ChunkerSpec = { kind: 'cdc' }): Chunker {
  let cutter: Cutter
  if (spec.kind === 'cdc') cutter = cdcCutter(spec)
  else if (spec.kind === 'fixed') cutter = fixedCutter(spec.size)
  else throw new InvalidConfigError(`unknown chunker ${JSON.stringify((spec as { kind: unknown }).kind)} (cdc or fixed)`)
  const pipeline = (src: AsyncIterable<Uint8Array>, o?: PipelineOptions): ChunkingPipeline => new ChunkingPipeline(src, cutter, o)
  return {
    spec,
    cutter,
    pipeline,
    fromFile: (path, o) => ChunkingPipeline.fromFile(path, cutter, o),
    async * chunk (src, o) {
      for await (const block of pipeline(src, o)) {
        // Each chunk gets its own copy: the block goes back to the pool for reuse.
        try {
          for (const c of block.chunks) yield { cid: c.cid, offset: c.offset, length: c.length, bytes: block.bytes.slice(c.start, c.start + c.length) }
        } finally { block.release() }
      }
    }
  }
}

/**
 * Parses a chunker name as the CLI and APIs take it: `cdc`, `cdc:MIN:AVG:MAX`, `fixed`, `fixed:SIZE`
 * (sizes in bytes or with k/m). Validates by building the cutter.
 */
export function parseChunkerSpec (text: string): ChunkerSpec {
  if (typeof text !== 'string' || text.length > 64) throw new InvalidConfigError('chunker must be cdc or fixed')
  const [kind, ...rest] = text.split(':')
  let spec: ChunkerSpec
  if (kind === 'cdc') {
    if (rest.length !== 0 && rest.length !== 3) throw new InvalidConfigError('cdc takes cdc or cdc:MIN:AVG:MAX')
    spec = rest.length === 3 ? { kind: 'cdc', min: parseSize(rest[0]), avg: parseSize(rest[1]), max: parseSize(rest[2]) } : { kind: 'cdc', ...DEFAULT_CDC }
  } else if (kind === 'fixed') {
    if (rest.length > 1) throw new InvalidConfigError('fixed takes fixed or fixed:SIZE')
    spec = { kind: 'fixed', size: rest.length === 1 ? parseSize(rest[0]) : DEFAULT_FIXED.size }
  } else {
    throw new InvalidConfigError(`unknown chunker ${JSON.stringify(kind)} (cdc or fixed)`)
  }
  createChunker(spec)
  return spec
}

export type { HashPool }
