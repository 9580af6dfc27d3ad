/**
 * The peer plugin's chunk fetcher: a small HTTP/1.1 client for one request, `POST /v1/chunks`,
 * that lands each chunk's payload straight in the caller's memory (the transfer's shared arena).
 *
 * Why not undici, which fetches everything else: a chunk response is nearly all payload, and
 * through undici every byte was copied twice more on the receiving agent — socket buffer → the
 * parser's WebAssembly memory → the arena — the second copy in V8's slow mode for shared memory
 * (misaligned copies into a SharedArrayBuffer run at ~2.5 GB/s, ~0.4 CPU-s per GiB here), plus a
 * fresh 64 KiB socket buffer per read for the garbage collector. Here the socket reads
 * (`onread` with a buffer chosen per read) go into a small scratch buffer while the parser needs
 * control bytes (status line, headers, chunk sizes, frame headers) and straight into the payload's
 * place in the arena otherwise: kernel → arena, nothing in between.
 *
 * The parser is a state machine run synchronously in the read callback, because Node asks for the
 * next read's buffer right after the callback returns. It handles what an HTTP/1.1 server may
 * send: chunked or Content-Length bodies split anywhere, chunk extensions, trailers, error
 * statuses (their JSON body is read for the error code), and `Connection: close`.
 */
import net from 'node:net'
import { MAX_CHUNK } from '../../core/chunker/types.ts'
import { AbortedError, SourceError } from '../../core/errors.ts'
import { CHUNK_HEADER, MISSING } from '../../core/wire.ts'

export interface Frame { header: Buffer, payload: Uint8Array | undefined }

export interface FrameRequest {
  path: string
  body: Uint8Array
  contentType: string
  alloc: (length: number) => Uint8Array
  signal?: AbortSignal
}

/** A non-2xx answer: its status and, when the body is Berth's JSON error, its code. */
export class PeerStatusError extends SourceError {
  constructor (readonly statusCode: number, readonly remoteCode: string, detail: string) {
    super(`peer answered ${statusCode}${remoteCode !== '' ? ' ' + remoteCode : ''}${detail !== '' && remoteCode === '' ? ': ' + detail : ''}`)
  }
}

const SCRATCH_SIZE = 32 * 1024
/** Control reads ask for at most this much, so little payload lands in scratch (and is copied). */
const CONTROL_READ = 1024
const MAX_HEAD = 16 * 1024
const MAX_LINE = 1024
const MAX_ERROR_BODY = 16 * 1024
const CRLF = Buffer.from('\r\n')
const HEAD_END = Buffer.from('\r\n\r\n')

type Phase = 'idle' | 'head' | 'body' | 'done'
type Segment = 'size' | 'data' | 'crlf' | 'trailer'

/** One keep-alive connection; one exchange at a time. */
class Connection {
  readonly socket: net.Socket
  private readonly scratch = Buffer.allocUnsafe(SCRATCH_SIZE)
  private start = 0
  private end = 0
  /** where the read in progress lands */
  private target: Uint8Array
  private targetIsScratch = true

  // The exchange in progress.
  private phase: Phase = 'idle'
  private request: FrameRequest | undefined
  private status = 0
  private chunked = false
  private keepAlive = true
  /** body bytes left: in the current chunk (chunked) or in the whole body (Content-Length) */
  private segLeft = 0
  private segment: Segment = 'size'
  private readonly header = Buffer.allocUnsafe(CHUNK_HEADER)
  private headerFill = 0
  private payload: Uint8Array | undefined
  private payloadFill = 0
  private errorBody: Buffer[] = []
  private errorBytes = 0
  private frames: Frame[] = []
  private failure: Error | undefined
  private wake: (() => void) | undefined
  dead = false

  constructor (host: string, port: number, localAddress: string | undefined, private readonly timeoutMs: number) {
    this.target = this.scratch
    this.socket = net.connect({
      host,
      port,
      localAddress,
      noDelay: true,
      onread: { buffer: () => this.nextTarget(), callback: (n: number) => this.onRead(n) }
    })
    // Read only while an exchange wants bytes.
    this.socket.pause()
    this.socket.setTimeout(timeoutMs, () => this.fail(new SourceError(`peer sent nothing for ${timeoutMs} ms`)))
    this.socket.on('error', err => this.fail(new SourceError(`peer connection failed: ${err.message}`, { cause: err })))
    this.socket.on('close', () => { this.dead = true; this.fail(new SourceError('peer closed the connection mid-response')) })
    this.socket.on('end', () => this.fail(new SourceError('peer closed the connection mid-response')))
  }

  async connected (signal?: AbortSignal): Promise<void> {
    if (!this.socket.connecting) return
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { cleanup(); reject(new AbortedError('aborted while connecting', { cause: signal?.reason })) }
      const onError = (err: Error): void => { cleanup(); reject(new SourceError(`peer unreachable: ${err.message}`, { cause: err })) }
      const onConnect = (): void => { cleanup(); resolve() }
      const cleanup = (): void => {
        this.socket.off('connect', onConnect)
        this.socket.off('error', onError)
        signal?.removeEventListener('abort', onAbort)
      }
      this.socket.once('connect', onConnect)
      this.socket.once('error', onError)
      signal?.addEventListener('abort', onAbort, { once: true })
    })
  }

  /** Sends the request and yields the response's frames; throws PeerStatusError on a non-2xx. */
  async * exchange (host: string, r: FrameRequest): AsyncGenerator<Frame> {
    if (this.phase !== 'idle' || this.dead) throw new SourceError('connection is not reusable')
    this.reset(r)
    const onAbort = (): void => this.fail(new AbortedError('transfer aborted', { cause: r.signal?.reason }))
    r.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      if (r.signal?.aborted === true) onAbort()
      const head = `POST ${r.path} HTTP/1.1\r\nhost: ${host}\r\ncontent-type: ${r.contentType}\r\ncontent-length: ${r.body.byteLength}\r\naccept: */*\r\n\r\n`
      this.socket.write(Buffer.concat([Buffer.from(head, 'latin1'), r.body]))
      this.phase = 'head'
      this.socket.resume()
      while (true) {
        if (this.frames.length > 0) {
          const batch = this.frames
          this.frames = []
          for (const f of batch) yield f
          continue
        }
        if (this.failure !== undefined) throw this.failure
        if (this.finished()) break
        await new Promise<void>(resolve => { this.wake = resolve })
      }
      if (this.status < 200 || this.status > 299) throw this.statusError()
      if (this.headerFill !== 0 || this.payload !== undefined) throw new SourceError('peer response ended inside a frame')
    } finally {
      r.signal?.removeEventListener('abort', onAbort)
      // Reusable only after a complete, clean exchange.
      if (!this.finished() || this.failure !== undefined || !this.keepAlive || this.start !== this.end) this.destroy()
      else this.phase = 'idle'
      this.request = undefined
    }
  }

  destroy (): void {
    this.dead = true
    this.socket.destroy()
  }

  private reset (r: FrameRequest): void {
    this.request = r
    this.status = 0
    this.chunked = false
    this.keepAlive = true
    this.segLeft = 0
    this.segment = 'size'
    this.headerFill = 0
    this.payload = undefined
    this.payloadFill = 0
    this.errorBody = []
    this.errorBytes = 0
    this.frames = []
    this.failure = undefined
    // start/end stay: Node already holds the next read's buffer, chosen at `end` (scratch is empty).
  }

  private fail (err: Error): void {
    // Between exchanges (closed by the peer, idle timeout): the connection is just gone.
    if (this.phase === 'idle') { this.destroy(); return }
    // After a complete response: `exchange` decides (a close after `Connection: close` is expected).
    if (this.phase === 'done') return
    if (this.failure === undefined) this.failure = err
    this.destroy()
    this.notify()
  }

  private notify (): void {
    const w = this.wake
    this.wake = undefined
    w?.()
  }

  /** Called by Node after each read: where the next read lands. */
  private nextTarget (): Uint8Array {
    if (this.phase === 'body' && this.payload !== undefined && this.segLeft > 0 && this.start === this.end) {
      const n = Math.min(this.payload.byteLength - this.payloadFill, this.segLeft)
      this.target = this.payload.subarray(this.payloadFill, this.payloadFill + n)
      this.targetIsScratch = false
    } else {
      if (this.start === this.end) this.start = this.end = 0
      else if (this.end + CONTROL_READ > SCRATCH_SIZE) {
        this.scratch.copy(this.scratch, 0, this.start, this.end)
        this.end -= this.start
        this.start = 0
      }
      // A head longer than the scratch space is refused in `pump`, before it can fill up.
      this.target = this.scratch.subarray(this.end, Math.min(this.end + (this.phase === 'head' ? MAX_HEAD : CONTROL_READ), SCRATCH_SIZE))
      this.targetIsScratch = true
    }
    return this.target
  }

  /** Returns false to stop reading (the exchange is over, or failed). */
  private onRead (n: number): boolean {
    if (this.phase === 'idle' || this.phase === 'done' || this.failure !== undefined) {
      // Bytes nobody asked for: the connection can no longer be trusted.
      if (this.phase === 'idle') this.destroy()
      return false
    }
    try {
      if (this.targetIsScratch) {
        this.end += n
      } else {
        this.payloadFill += n
        this.segLeft -= n
        if (this.payloadFill === this.payload!.byteLength) this.frameDone()
        if (this.segLeft === 0) this.segEnd()
      }
      this.pump()
    } catch (err) {
      this.fail(err instanceof Error ? err : new SourceError(String(err)))
      return false
    }
    this.notify()
    return !this.finished()
  }

  /** The response is complete (a method, so the compiler does not narrow `phase`: callbacks change it). */
  private finished (): boolean {
    return this.phase === 'done'
  }

  /** Parses what is in scratch. */
  private pump (): void {
    while (this.start < this.end) {
      if (this.phase === 'head') {
        const at = this.scratch.subarray(this.start, this.end).indexOf(HEAD_END)
        if (at < 0) {
          if (this.end - this.start >= MAX_HEAD) throw new SourceError('peer response head is too large')
          return
        }
        this.parseHead(this.scratch.toString('latin1', this.start, this.start + at))
        this.start += at + HEAD_END.byteLength
        this.phase = 'body'
        if (!this.chunked && this.segLeft === 0) { this.phase = 'done'; return }
        continue
      }
      if (this.phase !== 'body') return // 'done' with bytes left: the exchange refuses reuse
      if (this.chunked && this.segment !== 'data') {
        if (!this.chunkControl()) return
        continue
      }
      const n = Math.min(this.segLeft, this.end - this.start)
      this.body(this.scratch, this.start, this.start + n)
      this.start += n
      this.segLeft -= n
      if (this.segLeft === 0) this.segEnd()
    }
  }

  private parseHead (text: string): void {
    const lines = text.split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0])
    if (m === null) throw new SourceError(`peer sent no HTTP status line: ${JSON.stringify(lines[0].slice(0, 80))}`)
    this.status = Number(m[1])
    let length: number | undefined
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':')
      if (colon <= 0) throw new SourceError('peer sent a malformed header line')
      const name = line.slice(0, colon).trim().toLowerCase()
      const value = line.slice(colon + 1).trim()
      if (name === 'transfer-encoding') this.chunked = value.toLowerCase().split(',').map(s => s.trim()).includes('chunked')
      else if (name === 'content-length') {
        if (!/^\d{1,15}$/.test(value) || (length !== undefined && length !== Number(value))) throw new SourceError('peer sent a bad Content-Length')
        length = Number(value)
      } else if (name === 'connection' && value.toLowerCase().includes('close')) this.keepAlive = false
    }
    if (this.chunked) { this.segment = 'size'; this.segLeft = 0 } else if (length !== undefined) this.segLeft = length
    else throw new SourceError('peer response has neither Content-Length nor chunked encoding')
  }

  /** Chunk-size lines, the CRLF after chunk data, trailers. False when more bytes are needed. */
  private chunkControl (): boolean {
    const view = this.scratch.subarray(this.start, this.end)
    if (this.segment === 'crlf') {
      if (view.byteLength < 2) return false
      if (view[0] !== 0x0d || view[1] !== 0x0a) throw new SourceError('peer sent a malformed chunk')
      this.start += 2
      this.segment = 'size'
      return true
    }
    const eol = view.indexOf(CRLF)
    if (eol < 0) {
      if (view.byteLength > MAX_LINE) throw new SourceError('peer sent an overlong chunk line')
      return false
    }
    const line = view.toString('latin1', 0, eol)
    this.start += eol + 2
    if (this.segment === 'trailer') {
      if (line === '') this.phase = 'done'
      return true
    }
    const size = line.split(';')[0].trim()
    if (!/^[0-9a-fA-F]{1,8}$/.test(size)) throw new SourceError('peer sent a malformed chunk size')
    const n = parseInt(size, 16)
    if (n === 0) this.segment = 'trailer'
    else { this.segLeft = n; this.segment = 'data' }
    return true
  }

  /** The current body segment is finished. */
  private segEnd (): void {
    if (this.chunked) this.segment = 'crlf'
    else this.phase = 'done'
  }

  /** Body bytes that came through scratch. */
  private body (src: Buffer, from: number, to: number): void {
    if (this.status < 200 || this.status > 299) {
      // An error answer: keep the start of its body for the error message.
      if (this.errorBytes < MAX_ERROR_BODY) this.errorBody.push(Buffer.from(src.subarray(from, Math.min(to, from + MAX_ERROR_BODY - this.errorBytes))))
      this.errorBytes += to - from
      return
    }
    let at = from
    while (at < to) {
      if (this.payload === undefined) {
        const n = Math.min(CHUNK_HEADER - this.headerFill, to - at)
        src.copy(this.header, this.headerFill, at, at + n)
        this.headerFill += n
        at += n
        if (this.headerFill === CHUNK_HEADER) this.headerDone()
        continue
      }
      const n = Math.min(this.payload.byteLength - this.payloadFill, to - at)
      this.payload.set(src.subarray(at, at + n), this.payloadFill)
      this.payloadFill += n
      at += n
      if (this.payloadFill === this.payload.byteLength) this.frameDone()
    }
  }

  private headerDone (): void {
    const length = this.header.readUInt32BE(32)
    if (length === MISSING) {
      this.frames.push({ header: Buffer.from(this.header), payload: undefined })
      this.headerFill = 0
      return
    }
    if (length > MAX_CHUNK) throw new SourceError(`frame of ${length} bytes exceeds the chunk limit`)
    this.payload = this.request!.alloc(length)
    this.payloadFill = 0
    if (length === 0) this.frameDone()
  }

  private frameDone (): void {
    this.frames.push({ header: Buffer.from(this.header), payload: this.payload })
    this.payload = undefined
    this.headerFill = 0
  }

  private statusError (): PeerStatusError {
    const detail = Buffer.concat(this.errorBody).toString('utf8').slice(0, 300)
    let code = ''
    try { code = JSON.parse(detail)?.error?.code ?? '' } catch {}
    return new PeerStatusError(this.status, typeof code === 'string' ? code : '', detail)
  }
}

export interface FrameClientOptions {
  /** connections per origin; default 4 */
  connections?: number
  localAddress?: string
  /** a read that waits longer than this fails the exchange; default 30 s */
  timeoutMs?: number
}

/** Keep-alive connections to one `host:port`, at most `connections` at once. */
export class FrameClient {
  private readonly idle: Connection[] = []
  private open = 0
  private readonly waiters: Array<() => void> = []
  private closed = false

  constructor (readonly host: string, readonly port: number, private readonly options: FrameClientOptions = {}) {}

  async * post (r: FrameRequest): AsyncGenerator<Frame> {
    const conn = await this.acquire(r.signal)
    try {
      yield * conn.exchange(`${this.host}:${this.port}`, r)
    } finally {
      this.release(conn)
    }
  }

  async close (): Promise<void> {
    this.closed = true
    for (const c of this.idle.splice(0)) c.destroy()
    for (const w of this.waiters.splice(0)) w()
  }

  private async acquire (signal?: AbortSignal): Promise<Connection> {
    while (true) {
      if (this.closed) throw new SourceError('peer client is closed')
      if (signal?.aborted === true) throw new AbortedError('transfer aborted', { cause: signal.reason })
      const idle = this.idle.pop()
      if (idle !== undefined) {
        if (idle.dead) { this.open--; continue }
        return idle
      }
      if (this.open < (this.options.connections ?? 4)) {
        this.open++
        const conn = new Connection(this.host, this.port, this.options.localAddress, this.options.timeoutMs ?? 30_000)
        try {
          await conn.connected(signal)
          return conn
        } catch (err) {
          conn.destroy()
          this.open--
          this.wakeOne()
          throw err
        }
      }
      await new Promise<void>(resolve => this.waiters.push(resolve))
    }
  }

  private release (conn: Connection): void {
    if (conn.dead || this.closed) {
      conn.destroy()
      this.open--
    } else {
      this.idle.push(conn)
    }
    this.wakeOne()
  }

  private wakeOne (): void {
    this.waiters.shift()?.()
  }
}
