/** Streams an object the local store holds (already verified at commit; chunks re-verified on read). */
import type { Descriptor } from '../core/chunker/types.ts'
import type { ByteRange } from '../core/range.ts'
import type { ChunkStore } from '../store/types.ts'
import type { OutputPiece } from './transfer.ts'

// Chunks per store read: the store reads ahead within one call, so runs are long (only cids are held).
const RUN = 2048

export interface ReadPiecesOptions { range?: ByteRange, signal?: AbortSignal }

/**
 * The bytes of descriptors that arrive in runs (in object order), read from the store one run
 * per call, clipped to `range`. A run is read as soon as it arrives: an object still being
 * stored hands over its runs as they are written, and its readers must not wait for more.
 */
export async function * readRuns (store: ChunkStore, runs: AsyncIterable<readonly Descriptor[]>, o: ReadPiecesOptions = {}): AsyncGenerator<OutputPiece> {
  const { range, signal } = o
  for await (const all of runs) {
    const run = range === undefined ? all : all.filter(d => d.offset + d.length > range.start && d.offset <= range.end)
    if (run.length === 0) {
      if (range !== undefined && all.length > 0 && all[0].offset > range.end) return
      continue
    }
    let i = 0
    // Lent by the store: the consumer releases each piece once its bytes are sent.
    for await (const { bytes, release } of store.borrowMany(run.map(d => d.cid), { signal })) {
      const d = run[i++]
      if (range === undefined) { yield { offset: d.offset, bytes, release }; continue }
      const start = Math.max(d.offset, range.start)
      const end = Math.min(d.offset + d.length, range.end + 1)
      yield { offset: start, bytes: bytes.subarray(start - d.offset, end - d.offset), release }
    }
  }
}

/** A stored manifest in runs of RUN descriptors, skipping what lies wholly before `range`. */
async function * manifestRuns (store: ChunkStore, oid: string, o: ReadPiecesOptions): AsyncGenerator<Descriptor[]> {
  const { range, signal } = o
  let run: Descriptor[] = []
  for await (const d of store.manifest(oid, { signal })) {
    if (range !== undefined) {
      if (d.offset + d.length <= range.start) continue
      if (d.offset > range.end) break
    }
    run.push(d)
    if (run.length === RUN) { yield run; run = [] }
  }
  if (run.length > 0) yield run
}

export function readStoredObject (store: ChunkStore, oid: string, o: ReadPiecesOptions = {}): AsyncGenerator<OutputPiece> {
  return readRuns(store, manifestRuns(store, oid, o), o)
}
