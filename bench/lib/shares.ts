/**
 * Bandwidth shares of concurrent downloads from a locker server: each client streams its GET,
 * recording when its bytes came; the shares are taken over a window in which every client is
 * still downloading (after a settling time), so start-up and the first finisher do not count.
 * Used by the fairness benchmark (bench/fairness.ts) and the fairness tests.
 */
import { request } from 'undici'

export interface Download { url: string, headers: Record<string, string> }

export interface ShareResult {
  /** bytes/s of each download over the window */
  rates: number[]
  /** each download's fraction of the window's total */
  shares: number[]
  /** all downloads together, bytes/s */
  total: number
  windowMs: number
}

/**
 * Runs the downloads at once; measures from `settleMs` after the last one got its first byte,
 * for `windowMs` (cut short when any finishes). Aborts them all at the end of the window.
 */
export async function measureShares (downloads: Download[], o: { settleMs?: number, windowMs?: number, signal?: AbortSignal } = {}): Promise<ShareResult> {
  const settleMs = o.settleMs ?? 500
  const windowMs = o.windowMs ?? 2000
  const stop = new AbortController()
  const signal = o.signal !== undefined ? AbortSignal.any([o.signal, stop.signal]) : stop.signal
  const counts = downloads.map(() => 0)
  const started = downloads.map(() => false)
  let finished = false
  let wake: () => void = () => {}
  const changed = (): void => { const w = wake; wake = () => {}; w() }
  const runs = downloads.map(async (d, i) => {
    const res = await request(d.url, { method: 'GET', headers: d.headers, signal })
    if (res.statusCode !== 200) throw new Error(`download ${i} answered ${res.statusCode}: ${await res.body.text()}`)
    for await (const chunk of res.body) {
      counts[i] += (chunk as Buffer).length
      if (!started[i]) { started[i] = true; changed() }
    }
    finished = true
    changed()
  })
  const failed = Promise.all(runs).catch((err: unknown) => { if (!stop.signal.aborted) throw err })
  // Polls until `cond` holds, or the measurement is over (a waiter left behind must not keep polling).
  const waitFor = async (cond: () => boolean): Promise<void> => {
    while (!cond() && !stop.signal.aborted) await new Promise<void>(resolve => { wake = resolve; setTimeout(resolve, 20) })
  }
  try {
    await Promise.race([waitFor(() => started.every(Boolean)), failed])
    await new Promise(resolve => setTimeout(resolve, settleMs))
    if (finished) throw new Error('a download finished before the window: use larger objects')
    const t0 = performance.now()
    const c0 = [...counts]
    await Promise.race([new Promise(resolve => setTimeout(resolve, windowMs)), waitFor(() => finished), failed])
    const elapsed = performance.now() - t0
    const got = counts.map((c, i) => c - c0[i])
    const sum = got.reduce((a, b) => a + b, 0)
    return { rates: got.map(g => g / (elapsed / 1000)), shares: got.map(g => g / sum), total: sum / (elapsed / 1000), windowMs: elapsed }
  } finally {
    stop.abort()
    await Promise.allSettled(runs)
  }
}
