/**
 * Objects still arriving at a locker server (an upload or a distribute in progress), readable
 * while they arrive: each run of chunks is handed to the readers as soon as it is in the store,
 * so a GET that starts when a PUT is 10% done, or the next locker of a relay, gets its first
 * bytes long before the last ones exist. Every chunk a reader gets was verified against its cid
 * by the store; the object as a whole is proven against its OID only at the end, so a transfer
 * that fails (wrong bytes, a source that stops) breaks its readers' responses off mid-stream
 * rather than ending them as if complete.
 */
import type { Descriptor } from '../core/chunker/types.ts'
import { AbortedError, type BerthError, toBerthError } from '../core/errors.ts'
import type { ByteRange } from '../core/range.ts'
import type { OutputPiece } from '../agent/transfer.ts'
import { readRuns } from '../agent/read.ts'
import type { ChunkStore } from '../store/types.ts'

export class LiveObject {
  /** the stored prefix, in object order */
  private readonly runs: Array<readonly Descriptor[]> = []
  /** bytes stored so far (the prefix readers can have) */
  stored = 0
  /** bytes received from the source so far (ahead of `stored` by what is being chunked) */
  received = 0
  private state: 'arriving' | 'done' | 'failed' = 'arriving'
  private error: BerthError | undefined
  private waiters: Array<() => void> = []
  /** lockers that will hold the object when it is complete (readers must be allowed by one) */
  readonly lockers = new Set<string>()
  /** the whole object's size if the source announced it */
  constructor (readonly oid: string, public size: number | undefined) {}

  get arriving (): boolean { return this.state === 'arriving' }

  add (descriptors: readonly Descriptor[]): void {
    this.runs.push(descriptors)
    for (const d of descriptors) this.stored += d.length
    this.wake()
  }

  finish (size: number): void {
    this.size = size
    this.state = 'done'
    this.wake()
  }

  fail (err: unknown): void {
    if (this.state !== 'arriving') return
    this.state = 'failed'
    this.error = toBerthError(err)
    this.wake()
  }

  /** Resolves when the object is complete; rejects with its failure. */
  async done (signal?: AbortSignal): Promise<void> {
    while (this.state === 'arriving') await this.changed(signal)
    if (this.state === 'failed') throw this.error!
  }

  /**
   * The object's bytes as they are stored, clipped to `range`. The last piece is held back until
   * the object has proven itself against its OID: a client that counts Content-Length bytes
   * must not get them all from an object that then turns out wrong.
   */
  async * read (store: ChunkStore, o: { range?: ByteRange, signal?: AbortSignal } = {}): AsyncGenerator<OutputPiece> {
    let held: OutputPiece | undefined
    try {
      for await (const p of readRuns(store, this.runsFrom(o.signal), o)) {
        const out = held
        held = p
        if (out !== undefined) yield out
      }
      await this.done(o.signal)
      const out = held
      held = undefined
      if (out !== undefined) yield out
    } finally {
      held?.release?.()
    }
  }

  private async * runsFrom (signal?: AbortSignal): AsyncGenerator<readonly Descriptor[]> {
    let i = 0
    for (;;) {
      // A failed transfer's chunks may be collected: its readers stop at once.
      if (this.state === 'failed') throw this.error!
      if (i < this.runs.length) { yield this.runs[i++]; continue }
      if (this.state === 'done') return
      await this.changed(signal)
    }
  }

  private async changed (signal?: AbortSignal): Promise<void> {
    signal?.throwIfAborted()
    await new Promise<void>((resolve, reject) => {
      const onAbort = (): void => { reject(new AbortedError('the reader went away', { cause: signal!.reason })) }
      signal?.addEventListener('abort', onAbort, { once: true })
      this.waiters.push(() => { signal?.removeEventListener('abort', onAbort); resolve() })
    })
  }

  private wake (): void {
    const w = this.waiters
    this.waiters = []
    for (const f of w) f()
  }
}
