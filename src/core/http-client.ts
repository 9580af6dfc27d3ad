/**
 * A small HTTP/1.1 client for Berth's bulk paths, where a response body is nearly all payload
 * and every copy of it costs: chunk frames from a peer (landing in the transfer's shared
 * arenas) and an object streamed from the local agent to a file or stdout.
 *
 * Why not undici, which serves every other request: through undici each body byte is copied
 * from a fresh 64 KiB socket buffer into the parser's WebAssembly memory and then wherever the
 * caller puts it, and a stream of 1 GiB makes 16,000 buffers for the garbage collector. Measured
 * here for 1 GiB into /dev/null: undici + stream pipeline 1.7–2.2 CPU-s, this client 0.5.
 * Here each socket read (Node's `onread`, with a buffer chosen per read) lands in a small scratch
 * buffer while the parser needs control bytes (status line, headers, chunk-size lines) and
 * straight where the consumer wants the body otherwise: kernel → destination.
 *
 * The parser is a state machine run synchronously in the read callback, because Node asks for
 * the next read's buffer right after the callback returns. It takes what an HTTP/1.1 server may
 * send: chunked or Content-Length bodies split anywhere, chunk extensions, trailers, error
 * statuses (their JSON body is kept for the error code), and `Connection: close`.
 */
import net from 'node:net'
import { AbortedError, SourceError } from './errors.ts'

export interface RawRequest {
  method: 'GET' | 'POST' | 'DELETE'
  path: string
  headers?: Record<string, string>
  body?: Uint8Array
  signal?: AbortSignal
}

export interface ResponseHead { status: number, headers: ReadonlyMap<string, string> }

/** Where a 2xx response's body goes. Called synchronously from the socket's read callback. */
export interface BodyConsumer<T> {
  /** the head, before any body byte; may throw to refuse the response */
  head?: (head: ResponseHead) => void
  /** memory the next body bytes may be read into directly (the read fills at most all of it), or undefined */
  directTarget: () => Uint8Array | undefined
  /** `n` body bytes were read into the last direct target */
  landed: (n: number) => void
  /** body bytes that came through scratch */
  feed: (bytes: Buffer) => void
  /** the body is complete; throws if it ended where the consumer did not expect */
  end: () => void
  /** items ready for the caller (e.g. complete frames) */
  drain: () => T[]
}

/** A non-2xx answer, with the `{error: {code, message}}` of its body when it had one. */
export class HttpStatusError extends SourceError {
  constructor (readonly statusCode: number, readonly remoteCode: string, readonly remoteMessage: string, who: string) {
    super(`${who} answered ${statusCode}${remoteCode !== '' ? ' ' + remoteCode : ''}${remoteMessage !== '' ? ': ' + remoteMessage : ''}`)
  }
}

/** The `{error: {code, message}}` body every Berth server answers errors with ('' where absent). */
export function parseErrorBody (text: string): { code: string, message: string } {
  try {
    const e = JSON.parse(text)?.error
    if (typeof e?.code === 'string') return { code: e.code, message: String(e.message ?? '') }
  } catch {}
  return { code: '', message: text.slice(0, 300) }
}

/** The connection ended before the response did. */
export class CutOffError extends SourceError {}

export interface HttpClientOptions {
  /** connections at once; default 4 */
  connections?: number
  localAddress?: string
  /** a read that waits longer than this fails the exchange; default 30 s, 0 for never */
  timeoutMs?: number
  /** who is on the other side, for messages ("peer", "agent") */
  who?: string
}

const SCRATCH_SIZE = 32 * 1024
/** Control reads ask for at most this much, so little body lands in scratch (and is copied). */
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
  private targetIsScratch = true

  private phase: Phase = 'idle'
  private consumer: BodyConsumer<unknown> | undefined
  private status = 0
  private chunked = false
  private keepAlive = true
  /** body bytes left: in the current chunk (chunked) or in the whole body (Content-Length) */
  private segLeft = 0
  private segment: Segment = 'size'
  private errorBody: Buffer[] = []
  private errorBytes = 0
  private failure: Error | undefined
  private wake: (() => void) | undefined
  dead = false

  constructor (host: string, port: number, private readonly options: HttpClientOptions) {
    const timeoutMs = options.timeoutMs ?? 30_000
    this.socket = net.connect({
      host,
      port,
      localAddress: options.localAddress,
      noDelay: true,
      onread: { buffer: () => this.nextTarget(), callback: (n: number) => this.onRead(n) }
    })
    // Read only while an exchange wants bytes.
    this.socket.pause()
    if (timeoutMs > 0) this.socket.setTimeout(timeoutMs, () => this.fail(new SourceError(`${this.who} sent nothing for ${timeoutMs} ms`)))
    this.socket.on('error', err => this.fail(new SourceError(`${this.who} connection failed: ${err.message}`, { cause: err })))
    this.socket.on('close', () => { this.dead = true; this.fail(new CutOffError(`${this.who} closed the connection mid-response`)) })
    this.socket.on('end', () => this.fail(new CutOffError(`${this.who} closed the connection mid-response`)))
  }

  private get who (): string { return this.options.who ?? 'server' }

  async connected (signal?: AbortSignal): Promise<void> {
    if (!this.socket.connecting) return
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { cleanup(); reject(new AbortedError('aborted while connecting', { cause: signal?.reason })) }
      const onError = (err: Error): void => { cleanup(); reject(new SourceError(`${this.who} unreachable: ${err.message}`, { cause: err })) }
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

  /** Sends the request and yields what the consumer makes of the body; HttpStatusError on a non-2xx. */
  async * exchange<T> (host: string, r: RawRequest, consumer: BodyConsumer<T>): AsyncGenerator<T> {
    if (this.phase !== 'idle' || this.dead) throw new SourceError('connection is not reusable')
    this.consumer = consumer
    this.status = 0
    this.chunked = false
    this.keepAlive = true
    this.segLeft = 0
    this.segment = 'size'
    this.errorBody = []
    this.errorBytes = 0
    this.failure = undefined
    // start/end stay: Node already holds the next read's buffer, chosen at `end` (scratch is empty).
    const onAbort = (): void => this.fail(new AbortedError('aborted', { cause: r.signal?.reason }))
    r.signal?.addEventListener('abort', onAbort, { once: true })
    try {
      if (r.signal?.aborted === true) onAbort()
      const body = r.body ?? new Uint8Array(0)
      let head = `${r.method} ${r.path} HTTP/1.1\r\nhost: ${host}\r\n`
      for (const [k, v] of Object.entries(r.headers ?? {})) head += `${k}: ${v}\r\n`
      if (r.method === 'POST' || body.byteLength > 0) head += `content-length: ${body.byteLength}\r\n`
      this.socket.write(Buffer.concat([Buffer.from(head + '\r\n', 'latin1'), body]))
      this.phase = 'head'
      this.socket.resume()
      while (true) {
        if (this.failure !== undefined) throw this.failure
        const ready = consumer.drain()
        if (ready.length > 0) { for (const item of ready) yield item; continue }
        if (this.finished()) break
        await new Promise<void>(resolve => { this.wake = resolve })
      }
      if (!this.ok()) throw this.statusError()
    } finally {
      r.signal?.removeEventListener('abort', onAbort)
      // Reusable only after a complete, clean exchange.
      if (!this.finished() || this.failure !== undefined || !this.keepAlive || this.start !== this.end) this.destroy()
      else this.phase = 'idle'
      this.consumer = undefined
    }
  }

  destroy (): void {
    this.dead = true
    this.socket.destroy()
  }

  private ok (): boolean { return this.status >= 200 && this.status <= 299 }

  /** The response is complete (a method, so the compiler does not narrow `phase`: callbacks change it). */
  private finished (): boolean { return this.phase === 'done' }

  private fail (err: Error): void {
    // Between exchanges (closed by the server, idle timeout): the connection is just gone.
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
    if (this.phase === 'body' && this.ok() && this.segLeft > 0 && this.start === this.end && (!this.chunked || this.segment === 'data')) {
      const direct = this.consumer?.directTarget()
      if (direct !== undefined && direct.byteLength > 0) {
        this.targetIsScratch = false
        return direct.byteLength > this.segLeft ? direct.subarray(0, this.segLeft) : direct
      }
    }
    if (this.start === this.end) this.start = this.end = 0
    else if (this.end + CONTROL_READ > SCRATCH_SIZE) {
      this.scratch.copy(this.scratch, 0, this.start, this.end)
      this.end -= this.start
      this.start = 0
    }
    this.targetIsScratch = true
    // A head longer than MAX_HEAD is refused in `pump`, before scratch can fill up.
    return this.scratch.subarray(this.end, Math.min(this.end + (this.phase === 'head' ? MAX_HEAD : CONTROL_READ), SCRATCH_SIZE))
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
        this.segLeft -= n
        this.consumer!.landed(n)
        if (this.segLeft === 0) this.segmentEnd()
      }
      this.pump()
    } catch (err) {
      this.fail(err instanceof Error ? err : new SourceError(String(err)))
      return false
    }
    this.notify()
    return !this.finished()
  }

  /** Parses what is in scratch. */
  private pump (): void {
    while (this.start < this.end && this.phase !== 'done') {
      if (this.phase === 'head') {
        const at = this.scratch.subarray(this.start, this.end).indexOf(HEAD_END)
        if (at < 0) {
          if (this.end - this.start >= MAX_HEAD) throw new SourceError(`${this.who} response head is too large`)
          return
        }
        this.parseHead(this.scratch.toString('latin1', this.start, this.start + at))
        this.start += at + HEAD_END.byteLength
        continue
      }
      if (this.chunked && this.segment !== 'data') {
        if (!this.chunkControl()) return
        continue
      }
      const n = Math.min(this.segLeft, this.end - this.start)
      this.body(this.scratch.subarray(this.start, this.start + n))
      this.start += n
      this.segLeft -= n
      if (this.segLeft === 0) this.segmentEnd()
    }
  }

  private parseHead (text: string): void {
    const lines = text.split('\r\n')
    const m = /^HTTP\/1\.[01] (\d{3})/.exec(lines[0])
    if (m === null) throw new SourceError(`${this.who} sent no HTTP status line: ${JSON.stringify(lines[0].slice(0, 80))}`)
    this.status = Number(m[1])
    const headers = new Map<string, string>()
    let length: number | undefined
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(':')
      if (colon <= 0) throw new SourceError(`${this.who} sent a malformed header line`)
      const name = line.slice(0, colon).trim().toLowerCase()
      const value = line.slice(colon + 1).trim()
      headers.set(name, value)
      if (name === 'transfer-encoding') this.chunked = value.toLowerCase().split(',').map(s => s.trim()).includes('chunked')
      else if (name === 'content-length') {
        if (!/^\d{1,15}$/.test(value) || (length !== undefined && length !== Number(value))) throw new SourceError(`${this.who} sent a bad Content-Length`)
        length = Number(value)
      } else if (name === 'connection' && value.toLowerCase().includes('close')) this.keepAlive = false
    }
    // 1xx, 204 and 304 answers never have a body (RFC 9112 §6.3), whatever their headers say.
    const bodyless = this.status < 200 || this.status === 204 || this.status === 304
    if (bodyless) { this.chunked = false; this.segLeft = 0 } else if (this.chunked) this.segment = 'size'
    else if (length !== undefined) this.segLeft = length
    else throw new SourceError(`${this.who} response has neither Content-Length nor chunked encoding`)
    if (this.ok()) this.consumer!.head?.({ status: this.status, headers })
    this.phase = 'body'
    if (!this.chunked && this.segLeft === 0) this.bodyEnd()
  }

  /** Chunk-size lines, the CRLF after chunk data, trailers. False when more bytes are needed. */
  private chunkControl (): boolean {
    const view = this.scratch.subarray(this.start, this.end)
    if (this.segment === 'crlf') {
      if (view.byteLength < 2) return false
      if (view[0] !== 0x0d || view[1] !== 0x0a) throw new SourceError(`${this.who} sent a malformed chunk`)
      this.start += 2
      this.segment = 'size'
      return true
    }
    const eol = view.indexOf(CRLF)
    if (eol < 0) {
      if (view.byteLength > MAX_LINE) throw new SourceError(`${this.who} sent an overlong chunk line`)
      return false
    }
    const line = view.toString('latin1', 0, eol)
    this.start += eol + 2
    if (this.segment === 'trailer') {
      if (line === '') this.bodyEnd()
      return true
    }
    const size = line.split(';')[0].trim()
    if (!/^[0-9a-fA-F]{1,8}$/.test(size)) throw new SourceError(`${this.who} sent a malformed chunk size`)
    const n = parseInt(size, 16)
    if (n === 0) this.segment = 'trailer'
    else { this.segLeft = n; this.segment = 'data' }
    return true
  }

  private segmentEnd (): void {
    if (this.chunked) this.segment = 'crlf'
    else this.bodyEnd()
  }

  private bodyEnd (): void {
    if (this.ok()) this.consumer!.end()
    this.phase = 'done'
  }

  private body (bytes: Buffer): void {
    if (this.ok()) { this.consumer!.feed(bytes); return }
    // An error answer: keep the start of its body for the message.
    if (this.errorBytes < MAX_ERROR_BODY) this.errorBody.push(Buffer.from(bytes.subarray(0, MAX_ERROR_BODY - this.errorBytes)))
    this.errorBytes += bytes.byteLength
  }

  private statusError (): HttpStatusError {
    const { code, message } = parseErrorBody(Buffer.concat(this.errorBody).toString('utf8'))
    return new HttpStatusError(this.status, code, message, this.who)
  }
}

/** Keep-alive connections to one `host:port`, at most `connections` at once. */
export class HttpClient {
  private readonly idle: Connection[] = []
  private open = 0
  private readonly waiters: Array<() => void> = []
  private closed = false

  constructor (readonly host: string, readonly port: number, private readonly options: HttpClientOptions = {}) {}

  /** One exchange: yields the consumer's items; HttpStatusError on a non-2xx. */
  async * request<T> (r: RawRequest, consumer: BodyConsumer<T>): AsyncGenerator<T> {
    const conn = await this.acquire(r.signal)
    try {
      yield * conn.exchange(this.host.includes(':') ? `[${this.host}]:${this.port}` : `${this.host}:${this.port}`, r, consumer)
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
      if (this.closed) throw new SourceError('client is closed')
      if (signal?.aborted === true) throw new AbortedError('aborted', { cause: signal.reason })
      const idle = this.idle.pop()
      if (idle !== undefined) {
        if (idle.dead) { this.open--; continue }
        return idle
      }
      if (this.open < (this.options.connections ?? 4)) {
        this.open++
        const conn = new Connection(this.host, this.port, this.options)
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

