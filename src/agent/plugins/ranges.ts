/**
 * Chunks by byte range, for sources that serve an object's bytes rather than its chunks (HTTP
 * mirrors, lockers): the wanted chunks are grouped into runs of neighbours, each run is asked
 * with one Range request, and the answer's body is cut into the run's chunks as it comes, each
 * into memory the core hands out (its arenas). The core verifies every chunk against its cid.
 */
import type { Descriptor } from '../../core/chunker/types.ts'
import { SourceError } from '../../core/errors.ts'
import type { ChunkResult } from '../plugin.ts'

/** One request covers neighbouring chunks up to this many bytes. */
export const MAX_RUN = 8 * 1024 * 1024

/** Each cid once, at its first place, in offset order; neighbours make one run (up to `maxRun` bytes). */
export function rangeRuns (wanted: readonly Descriptor[], maxRun = MAX_RUN): Descriptor[][] {
  const first = new Map<string, Descriptor>()
  for (const d of wanted) if (!first.has(d.cid)) first.set(d.cid, d)
  const sorted = [...first.values()].sort((a, b) => a.offset - b.offset)
  const runs: Descriptor[][] = []
  for (const d of sorted) {
    const run = runs.at(-1)
    const last = run?.at(-1)
    if (run !== undefined && last !== undefined && last.offset + last.length === d.offset && d.offset + d.length - run[0].offset <= maxRun) run.push(d)
    else runs.push([d])
  }
  return runs
}

/** The run's bytes, inclusive: [first offset, last byte]. */
export function runSpan (run: readonly Descriptor[]): { start: number, end: number } {
  const last = run[run.length - 1]
  return { start: run[0].offset, end: last.offset + last.length - 1 }
}

interface RangeAnswer { statusCode: number, headers: Record<string, string | string[] | undefined>, body: { destroy: () => unknown } }

/**
 * Checks that an answer is the 206 for exactly bytes `start`–`end`: a whole body where a range
 * was asked (no Range support) would cost the whole object per batch, so it is refused.
 */
export function expectRange (res: RangeAnswer, start: number, end: number, who: string): void {
  const range = res.headers['content-range']
  if (res.statusCode !== 206 || typeof range !== 'string' || !range.startsWith(`bytes ${start}-${end}/`)) {
    res.body.destroy()
    throw new SourceError(`${who} does not serve byte ranges (answered ${res.statusCode})`)
  }
}

/**
 * Cuts a range answer's body into the run's chunks as it comes, each into memory from `alloc`.
 * `past`: bytes asked beyond the run, which are not waited for — the answer is dropped as soon as
 * the run is complete (a locker holds back the last bytes of an object still arriving until it
 * is whole; one byte more lets the run's own last chunk through). Without them the body is read
 * to its end, so the connection can be reused.
 */
export async function * cutRun (body: AsyncIterable<Uint8Array> & { destroy: () => unknown }, run: readonly Descriptor[], alloc: (n: number) => Uint8Array, who: string, past = 0): AsyncGenerator<ChunkResult> {
  let i = 0
  let target = alloc(run[0].length)
  let filled = 0
  let extra = 0
  try {
    for await (const piece of body) {
      let at = 0
      while (at < piece.length && i < run.length) {
        const n = Math.min(piece.length - at, target.length - filled)
        target.set(piece.subarray(at, at + n), filled)
        filled += n
        at += n
        if (filled === target.length) {
          yield { descriptor: run[i], bytes: target }
          i++
          filled = 0
          if (i < run.length) target = alloc(run[i].length)
        }
      }
      extra += piece.length - at
      if (extra > past) throw new SourceError(`${who} sent more than the range asked`)
      if (i === run.length && past > 0) return
    }
  } finally {
    if (i < run.length || past > 0) body.destroy()
  }
  if (i < run.length) throw new SourceError(`${who} ended the range early`)
}
