/**
 * Chunk frames from a peer (`POST /v1/chunks`) over the bulk HTTP client: each frame's payload is
 * read from the socket straight into the memory `alloc` gives (the transfer's shared arena).
 */
import { MAX_CHUNK } from '../../core/chunker/types.ts'
import { SourceError } from '../../core/errors.ts'
import { type BodyConsumer, HttpClient, type HttpClientOptions } from '../../core/http-client.ts'
import { CHUNK_HEADER, MISSING } from '../../core/wire.ts'

export interface Frame { header: Buffer, payload: Uint8Array | undefined }

/** Splits a body into chunk frames; payload bytes go to `alloc`'s memory, read there directly. */
class FrameConsumer implements BodyConsumer<Frame> {
  private readonly header = Buffer.allocUnsafe(CHUNK_HEADER)
  private headerFill = 0
  private payload: Uint8Array | undefined
  private payloadFill = 0
  private frames: Frame[] = []

  constructor (private readonly alloc: (length: number) => Uint8Array) {}

  directTarget (): Uint8Array | undefined {
    return this.payload?.subarray(this.payloadFill)
  }

  landed (n: number): void {
    this.payloadFill += n
    if (this.payloadFill === this.payload!.byteLength) this.frameDone()
  }

  feed (bytes: Buffer): void {
    let at = 0
    while (at < bytes.byteLength) {
      if (this.payload === undefined) {
        const n = Math.min(CHUNK_HEADER - this.headerFill, bytes.byteLength - at)
        bytes.copy(this.header, this.headerFill, at, at + n)
        this.headerFill += n
        at += n
        if (this.headerFill === CHUNK_HEADER) this.headerDone()
        continue
      }
      const n = Math.min(this.payload.byteLength - this.payloadFill, bytes.byteLength - at)
      this.payload.set(bytes.subarray(at, at + n), this.payloadFill)
      at += n
      this.landed(n)
    }
  }

  end (): void {
    if (this.headerFill !== 0 || this.payload !== undefined) throw new SourceError('peer response ended inside a frame')
  }

  drain (): Frame[] {
    const frames = this.frames
    this.frames = []
    return frames
  }

  private headerDone (): void {
    const length = this.header.readUInt32BE(32)
    if (length === MISSING) {
      this.frames.push({ header: Buffer.from(this.header), payload: undefined })
      this.headerFill = 0
      return
    }
    if (length > MAX_CHUNK) throw new SourceError(`frame of ${length} bytes exceeds the chunk limit`)
    this.payload = this.alloc(length)
    this.payloadFill = 0
    if (length === 0) this.frameDone()
  }

  private frameDone (): void {
    this.frames.push({ header: Buffer.from(this.header), payload: this.payload })
    this.payload = undefined
    this.headerFill = 0
  }
}

export interface FrameRequest {
  path: string
  body: Uint8Array
  contentType: string
  alloc: (length: number) => Uint8Array
  signal?: AbortSignal
}

/** Keep-alive connections to one peer, for chunk requests. */
export class FrameClient {
  private readonly http: HttpClient

  constructor (host: string, port: number, options: HttpClientOptions = {}) {
    this.http = new HttpClient(host, port, { who: 'peer', ...options })
  }

  post (r: FrameRequest): AsyncGenerator<Frame> {
    return this.http.request({ method: 'POST', path: r.path, headers: { 'content-type': r.contentType }, body: r.body, signal: r.signal }, new FrameConsumer(r.alloc))
  }

  async close (): Promise<void> {
    await this.http.close()
  }
}
