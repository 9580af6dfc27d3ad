/**
 * Streaming an answer made of pieces (object bytes, chunk frames) to an HTTP response: no copies,
 * backpressure, pooled memory given back once the socket has taken it, and few system calls.
 */
import type { FastifyReply } from 'fastify'
import { AbortedError, HashMismatchError, toBerthError } from '../core/errors.ts'

/** Bytes to send, and what to call once the socket has taken them (pooled memory goes back). */
export interface SendPiece { bytes: Uint8Array, release?: () => void }

export interface SendOptions<T extends SendPiece> {
  /** bytes written before each piece (a frame header); pieces are then counted as framed, not capped */
  header?: (piece: T) => Uint8Array
  /** told how many bytes each piece carried (metrics) */
  count?: (bytes: number) => void
}

/**
 * Bytes gathered (corked) before they go to the socket in one writev. Measured over loopback for
 * 1 GiB: one write per 64 KiB chunk costs the writer 0.84 CPU-s, the same bytes in writev calls of
 * 4 chunks or more 0.32–0.34 s (each write wakes the reader and runs the TCP path once).
 */
const FLUSH_BYTES = 1024 * 1024

/**
 * Writes pieces to the response with backpressure, without copying: each piece's bytes go to the
 * socket as they are, and its `release` runs once the socket has taken them (arena and store
 * buffers are reused after that). Pieces are corked and go out together, one writev per
 * FLUSH_BYTES, or as soon as the producer has nothing more ready this turn of the event loop, so
 * a slow producer's bytes are never held back. A failure mid-way destroys the response, so the
 * client sees an error, never a short object taken for whole.
 */
export async function sendPieces<T extends SendPiece> (reply: FastifyReply, status: number, headers: Record<string, string>, pieces: AsyncIterable<T>, o: SendOptions<T>): Promise<void> {
  // The status is committed only once the first piece is ready: a get that fails before any
  // byte (no source, wrong manifest) still answers with its error code.
  const it = pieces[Symbol.asyncIterator]()
  let next = await it.next()
  reply.hijack()
  const res = reply.raw
  res.writeHead(status, headers)
  const limit = headers['content-length'] !== undefined ? Number(headers['content-length']) : Infinity
  let sent = 0
  // Pieces the socket has not confirmed: a destroyed socket may never call a write callback, so
  // whatever is left is released when the response closes (release is idempotent).
  const unconfirmed = new Set<() => void>()
  res.once('close', () => { for (const r of unconfirmed) r(); unconfirmed.clear() })
  // Our own cork on the connection: while it holds, http's per-tick cork stays out of the way and
  // res.write only queues. `corked` counts the bytes queued since the last flush.
  const socket = res.socket
  let isCorked = false
  let corked = 0
  let later: NodeJS.Immediate | undefined
  const flush = (): void => {
    if (later !== undefined) { clearImmediate(later); later = undefined }
    if (!isCorked) return
    isCorked = false
    corked = 0
    socket?.uncork()
  }
  try {
    for (; next.done !== true; next = await it.next()) {
      const p = next.value
      if (res.destroyed) { p.release?.(); throw new AbortedError('client went away') }
      sent += p.bytes.byteLength
      // Never more than announced: a client would take the first Content-Length bytes as whole.
      if (sent > limit) { p.release?.(); throw new HashMismatchError('the object produced more bytes than its manifest announced') }
      if (!isCorked) {
        // A slow producer's flushes (below) do not wait for the socket: catch up here.
        if (res.writableNeedDrain) await drained(res)
        socket?.cork()
        isCorked = true
      }
      corked += p.bytes.byteLength
      if (o.header !== undefined) res.write(o.header(p))
      const release = p.release
      if (p.bytes.byteLength > 0) {
        if (release !== undefined) unconfirmed.add(release)
        res.write(p.bytes, release !== undefined ? () => { unconfirmed.delete(release); release() } : undefined)
      } else {
        release?.()
      }
      o.count?.(p.bytes.byteLength)
      if (corked >= FLUSH_BYTES) {
        flush()
        // Backpressure is honoured per flush: while corked, every write reports a full buffer.
        if (res.writableNeedDrain) await drained(res)
      } else {
        later ??= setImmediate(flush)
      }
    }
    flush()
    if (sent < limit && limit !== Infinity) throw new HashMismatchError('the object produced fewer bytes than its manifest announced')
    res.end()
  } catch (err) {
    flush()
    await it.return?.()
    res.destroy(toBerthError(err))
  }
}

function drained (res: NodeJS.WritableStream & { destroyed: boolean, once: Function, off: Function }): Promise<void> {
  return new Promise(resolve => {
    const done = (): void => { res.off('drain', done); res.off('close', done); resolve() }
    res.once('drain', done)
    res.once('close', done)
  })
}
