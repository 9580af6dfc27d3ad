/**
 * put: an object goes in, its OID comes out. Bytes are chunked and hashed on the way (the
 * pipeline), each block of chunks is written while the next is hashed, and the object appears
 * in the store only at commit — after its bytes are durable. A failure at any point (bad input,
 * truncated upload, abort) stores no object.
 */
import { createChunker, type ChunkerSpec } from '../core/chunker/index.ts'
import type { ChunkingPipeline, PipelineOptions } from '../core/chunker/pipeline.ts'
import type { Descriptor } from '../core/chunker/types.ts'
import type { HashPool } from '../core/hash-pool.ts'
import type { ChunkStore, ObjectInfo } from '../store/types.ts'
import { stat } from 'node:fs/promises'
import { BadRequestError, HashMismatchError } from '../core/errors.ts'
import { PackedManifest } from '../core/manifest.ts'

async function regularFile (path: string): Promise<string> {
  if (!(await stat(path)).isFile()) throw new BadRequestError(`${path} is not a regular file`)
  return path
}

/** Block writes outstanding at once (each up to a 4 MiB block). */
const WRITES_IN_FLIGHT = 4

export interface PutSource {
  /** a byte stream (an upload) ... */
  stream?: AsyncIterable<Uint8Array>
  /** ... or a file the agent reads itself (DOT's put_fd: no copy through the API) */
  path?: string
}

export interface PutOptions {
  chunker?: ChunkerSpec
  signal?: AbortSignal
  /** the OID the bytes must have (an upload to a name): anything else is refused, nothing stored */
  expect?: string
  /**
   * Told of chunks once they are in the store (readable by cid before the commit), in object
   * order: block writes overlap and may finish out of order, so a block is told only when every
   * block before it is written. A locker serves an object still arriving from these.
   */
  onStored?: (descriptors: readonly Descriptor[]) => void
}

export async function putObject (source: PutSource, store: ChunkStore, pool: HashPool, options: PutOptions = {}): Promise<ObjectInfo> {
  const chunker = createChunker(options.chunker ?? { kind: 'cdc' })
  const pipelineOptions: PipelineOptions = { pool, signal: options.signal }
  const pipeline: ChunkingPipeline = source.path !== undefined
    ? chunker.fromFile(await regularFile(source.path), pipelineOptions)
    : chunker.pipeline(source.stream!, pipelineOptions)
  const writer = store.openWriter()
  // Packed: ~36 B per chunk, where descriptor objects would cost ~10× that (65,536 chunks in 4 GiB).
  const manifest = PackedManifest.empty()
  // Block writes overlap: a direct write waits for the disk, and the next block is ready by then.
  const writing = new Set<Promise<void>>()
  const onStored = options.onStored
  // Blocks written but not yet told, by number, until the ones before them are written too.
  const written = new Map<number, Descriptor[]>()
  let blocks = 0
  let told = 0
  try {
    for await (const block of pipeline) {
      const n = blocks++
      const descriptors = onStored !== undefined ? block.chunks.map(c => ({ cid: c.cid, offset: c.offset, length: c.length })) : undefined
      const write = writer.putBlock(block.bytes, block.chunks, { signal: options.signal })
        .then(() => {
          if (onStored === undefined) return
          written.set(n, descriptors!)
          for (let d = written.get(told); d !== undefined; d = written.get(told)) { written.delete(told++); onStored(d) }
        })
        // The write has completed (or failed): the block's memory may be reused.
        .finally(() => { block.release(); writing.delete(write) })
      // Handled where it is awaited (race, all); this only keeps a failure that lands between awaits from counting as unhandled.
      write.catch(() => {})
      writing.add(write)
      for (const c of block.chunks) manifest.push(c.digest, c.length)
      if (writing.size >= WRITES_IN_FLIGHT) await Promise.race(writing)
    }
    await Promise.all(writing)
    if (options.expect !== undefined && pipeline.oid !== options.expect) throw new HashMismatchError(`the uploaded bytes are ${pipeline.oid!}, not ${options.expect}`)
    return await writer.commit(pipeline.oid!, manifest)
  } catch (err) {
    // No write may still use a block once it is back in the pool.
    await Promise.allSettled(writing)
    await writer.abort().catch(() => {})
    throw err
  }
}
