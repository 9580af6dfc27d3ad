/** Streams an object the local store holds (already verified at commit; chunks re-verified on read). */
import type { Descriptor } from '../core/chunker/types.ts'
import type { ByteRange } from '../core/range.ts'
import type { ChunkStore } from '../store/types.ts'
import type { OutputPiece } from './transfer.ts'

// Chunks per store read: the store reads ahead within one call, so runs are long (only cids are held).
const RUN = 2048

export async function * readStoredObject (store: ChunkStore, oid: string, o: { range?: ByteRange, signal?: AbortSignal } = {}): AsyncGenerator<OutputPiece> {
  const { range, signal } = o
  let run: Descriptor[] = []
  async function * flush (): AsyncGenerator<OutputPiece> {
    let i = 0
    // Lent by the store: the consumer releases each piece once its bytes are sent.
    for await (const { bytes, release } of store.borrowMany(run.map(d => d.cid), { signal })) {
      const d = run[i++]
      let piece: OutputPiece = { offset: d.offset, bytes, release }
      if (range !== undefined) {
        const start = Math.max(d.offset, range.start)
        const end = Math.min(d.offset + d.length, range.end + 1)
        piece = { offset: start, bytes: bytes.subarray(start - d.offset, end - d.offset), release }
      }
      yield piece
    }
    run = []
  }
  for await (const d of store.manifest(oid, { signal })) {
    if (range !== undefined) {
      if (d.offset + d.length <= range.start) continue
      if (d.offset > range.end) break
    }
    run.push(d)
    if (run.length === RUN) yield * flush()
  }
  if (run.length > 0) yield * flush()
}
