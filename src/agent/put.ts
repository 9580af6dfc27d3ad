/**
 * put: an object goes in, its OID comes out. Bytes are chunked and hashed on the way (the
 * pipeline), each block of chunks is written while the next is hashed, and the object appears
 * in the store only at commit — after its bytes are durable. A failure at any point (bad input,
 * truncated upload, abort) stores no object.
 */
import { createChunker, type ChunkerSpec, type Descriptor } from '../core/chunker/index.ts'
import type { ChunkingPipeline, PipelineOptions } from '../core/chunker/pipeline.ts'
import type { HashPool } from '../core/hash-pool.ts'
import type { ChunkStore, ObjectInfo } from '../store/types.ts'
import { stat } from 'node:fs/promises'
import { BadRequestError } from '../core/errors.ts'

async function regularFile (path: string): Promise<string> {
  if (!(await stat(path)).isFile()) throw new BadRequestError(`${path} is not a regular file`)
  return path
}

export interface PutSource {
  /** a byte stream (an upload) ... */
  stream?: AsyncIterable<Uint8Array>
  /** ... or a file the agent reads itself (DOT's put_fd: no copy through the API) */
  path?: string
}

export interface PutOptions {
  chunker?: ChunkerSpec
  signal?: AbortSignal
}

export async function putObject (source: PutSource, store: ChunkStore, pool: HashPool, options: PutOptions = {}): Promise<ObjectInfo> {
  const chunker = createChunker(options.chunker ?? { kind: 'cdc' })
  const pipelineOptions: PipelineOptions = { pool, signal: options.signal }
  const pipeline: ChunkingPipeline = source.path !== undefined
    ? chunker.fromFile(await regularFile(source.path), pipelineOptions)
    : chunker.pipeline(source.stream!, pipelineOptions)
  const writer = store.openWriter()
  const descriptors: Descriptor[] = []
  try {
    for await (const block of pipeline) {
      try {
        await writer.putBlock(block.bytes, block.chunks, { signal: options.signal })
      } finally {
        // The write has completed (putBlock awaits it): the block's memory may be reused.
        block.release()
      }
      for (const c of block.chunks) descriptors.push({ cid: c.cid, offset: c.offset, length: c.length })
    }
    return await writer.commit(pipeline.oid!, descriptors)
  } catch (err) {
    await writer.abort().catch(() => {})
    throw err
  }
}
