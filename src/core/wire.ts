/**
 * Wire formats shared by agents (and later lockers):
 * - manifests: NDJSON — a head line {oid, size, chunks} then one descriptor per line, so a
 *   manifest streams while it is read from the store and is parsed incrementally;
 * - chunk frames (peer `POST /v1/chunks` answers): 32-byte digest, uint32 length, bytes;
 *   length 0xFFFFFFFF means "not here" (missing or failed verification at the source);
 * - offset frames (`?order=any` answers): uint64 offset, uint32 length, bytes.
 */
import { BadRequestError, SourceError } from './errors.ts'
import { cidFromDigest, digestFromName, parseCid } from './naming.ts'
import { MAX_CHUNK, type Descriptor } from './chunker/types.ts'

export const MANIFEST_TYPE = 'application/x-ndjson'
export const CHUNK_FRAMES_TYPE = 'application/vnd.berth.chunks'
export const OFFSET_FRAMES_TYPE = 'application/vnd.berth.frames'
export const MISSING = 0xFFFFFFFF
export const CHUNK_HEADER = 36
export const OFFSET_HEADER = 12
/** Largest object a manifest may describe (2^50 bytes: far beyond any disk, well inside 2^53). */
export const MAX_OBJECT_SIZE = 2 ** 50
/**
 * Most descriptors one manifest may list: a receiver keeps the manifest to commit it (~100 bytes
 * a descriptor), so this bounds what a hostile head can make it hold — 4 Mi chunks, 256 GiB at
 * the default 64 KiB.
 */
export const MAX_CHUNKS = 4 * 1024 * 1024

export interface ManifestHead { oid: string, size: number, chunks: number }

export function encodeManifestHead (head: ManifestHead): string { return JSON.stringify(head) + '\n' }
export function encodeDescriptor (d: Descriptor): string { return `{"cid":"${d.cid}","offset":${d.offset},"length":${d.length}}\n` }

const MAX_MANIFEST_LINE = 512

async function * lines (src: AsyncIterable<Uint8Array | string>): AsyncGenerator<string> {
  const decoder = new TextDecoder()
  let carry = ''
  for await (const piece of src) {
    const text = carry + (typeof piece === 'string' ? piece : decoder.decode(piece, { stream: true }))
    const parts = text.split('\n')
    carry = parts.pop()!
    if (carry.length > MAX_MANIFEST_LINE) throw new SourceError('manifest line too long')
    for (const line of parts) {
      if (line.length > MAX_MANIFEST_LINE) throw new SourceError('manifest line too long')
      if (line.length > 0) yield line
    }
  }
  if (carry.length > 0) yield carry
}

function json (line: string): Record<string, unknown> {
  try {
    const v = JSON.parse(line)
    if (typeof v === 'object' && v !== null) return v
  } catch {}
  throw new SourceError('manifest line is not a JSON object')
}

/**
 * Reads a manifest stream: the head at once, then descriptors as they arrive, checking the
 * shape as it goes — descriptors tile the object from offset 0 without gaps, lengths are within
 * chunk limits, cids are well formed, count and total match the head. (Whether it is the *right*
 * manifest is known only when the assembled object hashes to the OID: the transfer checks that.)
 */
export async function readManifest (src: AsyncIterable<Uint8Array | string>, expectedOid: string): Promise<{ head: ManifestHead, descriptors: AsyncIterable<Descriptor> }> {
  const it = lines(src)[Symbol.asyncIterator]()
  const first = await it.next()
  if (first.done === true) throw new SourceError('empty manifest')
  const v = json(first.value)
  if (v.oid !== expectedOid) throw new SourceError(`manifest is for ${String(v.oid).slice(0, 80)}, not ${expectedOid}`)
  if (!Number.isSafeInteger(v.size) || (v.size as number) < 0 || (v.size as number) > MAX_OBJECT_SIZE) throw new SourceError('manifest head has a bad size')
  if (!Number.isSafeInteger(v.chunks) || (v.chunks as number) < 0 || (v.chunks as number) > MAX_CHUNKS) throw new SourceError(`manifest head has a bad chunk count (at most ${MAX_CHUNKS})`)
  const head: ManifestHead = { oid: expectedOid, size: v.size as number, chunks: v.chunks as number }
  async function * descriptors (): AsyncGenerator<Descriptor> {
    let next = 0
    let count = 0
    for (;;) {
      const r = await it.next()
      if (r.done === true) break
      const { cid, offset, length } = json(r.value)
      if (typeof cid !== 'string') throw new SourceError('descriptor without cid')
      let canonical: string
      try { canonical = parseCid(cid) } catch { throw new SourceError('descriptor has a malformed cid') }
      if (offset !== next) throw new SourceError(`descriptor offset ${String(offset)} where ${next} was due`)
      if (!Number.isSafeInteger(length) || (length as number) <= 0 || (length as number) > MAX_CHUNK) throw new SourceError('descriptor has a bad length')
      next += length as number
      count++
      if (next > head.size || count > head.chunks) throw new SourceError('manifest describes more than its head says')
      yield { cid: canonical, offset: offset as number, length: length as number }
    }
    if (next !== head.size || count !== head.chunks) throw new SourceError('manifest ended early')
  }
  return { head, descriptors: descriptors() }
}

export function encodeChunkHeader (cid: string, length: number): Buffer {
  const h = Buffer.allocUnsafe(CHUNK_HEADER)
  h.set(digestFromName(cid), 0)
  h.writeUInt32BE(length, 32)
  return h
}

export function encodeOffsetHeader (offset: number, length: number): Buffer {
  const h = Buffer.allocUnsafe(OFFSET_HEADER)
  h.writeUInt32BE(Math.floor(offset / 2 ** 32), 0)
  h.writeUInt32BE(offset % 2 ** 32, 4)
  h.writeUInt32BE(length, 8)
  return h
}

export interface Frame { header: Buffer, payload: Uint8Array | undefined }

/**
 * Reads length-prefixed frames from a byte stream. `lengthOf(header)` gives the payload length
 * (MISSING for none). Payloads are placed in memory from `alloc` when given — the transfer uses
 * that to land chunks straight in a shared arena the hash workers read — else in fresh buffers.
 */
export async function * readFrames (
  src: AsyncIterable<Uint8Array>,
  headerSize: number,
  lengthOf: (header: Buffer) => number,
  alloc: (length: number) => Uint8Array = (n) => new Uint8Array(n)
): AsyncGenerator<Frame> {
  const header = Buffer.allocUnsafe(headerSize)
  let headerFill = 0
  let payload: Uint8Array | undefined
  let payloadFill = 0
  for await (const raw of src) {
    const buf = raw instanceof Uint8Array ? raw : new Uint8Array(raw as ArrayBuffer)
    let at = 0
    while (at < buf.byteLength) {
      if (payload === undefined) {
        const n = Math.min(headerSize - headerFill, buf.byteLength - at)
        header.set(buf.subarray(at, at + n), headerFill)
        headerFill += n
        at += n
        if (headerFill < headerSize) break
        const length = lengthOf(header)
        if (length === MISSING) {
          yield { header: Buffer.from(header), payload: undefined }
          headerFill = 0
          continue
        }
        if (length > MAX_CHUNK) throw new SourceError(`frame of ${length} bytes exceeds the chunk limit`)
        payload = alloc(length)
        payloadFill = 0
      }
      const n = Math.min(payload.byteLength - payloadFill, buf.byteLength - at)
      payload.set(buf.subarray(at, at + n), payloadFill)
      payloadFill += n
      at += n
      if (payloadFill === payload.byteLength) {
        yield { header: Buffer.from(header), payload }
        payload = undefined
        headerFill = 0
      }
    }
  }
  if (payload !== undefined || headerFill !== 0) throw new SourceError('stream ended inside a frame')
}

export function chunkFrameLength (header: Buffer): number { return header.readUInt32BE(32) }
export function chunkFrameCid (header: Buffer): string { return cidFromDigest(header.subarray(0, 32)) }
export function offsetFrameLength (header: Buffer): number { return header.readUInt32BE(8) }
export function offsetFrameOffset (header: Buffer): number { return header.readUInt32BE(0) * 2 ** 32 + header.readUInt32BE(4) }

/** Validates a peer chunk request body: {cids: string[]} of 1..MAX_BATCH well-formed cids. */
export const MAX_BATCH = 1024
export function parseChunkRequest (body: unknown): string[] {
  const cids = (body as { cids?: unknown } | null)?.cids
  if (!Array.isArray(cids) || cids.length === 0 || cids.length > MAX_BATCH) throw new BadRequestError(`body must be {"cids": [1 to ${MAX_BATCH} chunk cids]}`)
  return cids.map(c => { if (typeof c !== 'string') throw new BadRequestError('cids must be strings'); return parseCid(c) })
}
