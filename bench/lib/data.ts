/**
 * Benchmark data: incompressible pseudo-random files (an AES-256-CTR keystream under a random
 * key, ~GB/s), written in 16 MiB pieces — never sparse — and reused when present with the
 * right size. `warm` reads a file once so that every contestant reads it from the page cache.
 */
import { createCipheriv, randomBytes } from 'node:crypto'
import { open, rename, rm, stat, mkdir, statfs } from 'node:fs/promises'
import { dirname } from 'node:path'
import { performance } from 'node:perf_hooks'

const PIECE = 16 * 1024 * 1024

export async function ensureRandomFile (path: string, size: number, log: (s: string) => void): Promise<{ created: boolean, ms: number }> {
  const t0 = performance.now()
  const st = await stat(path).catch(() => undefined)
  // Reuse only a file that is fully allocated (not sparse) and of the right size.
  if (st !== undefined && st.size === size && st.blocks * 512 >= size) return { created: false, ms: 0 }
  await mkdir(dirname(path), { recursive: true })
  log(`writing ${fmtBytes(size)} of pseudo-random data to ${path}`)
  const temp = `${path}.part-${process.pid}`
  const cipher = createCipheriv('aes-256-ctr', randomBytes(32), randomBytes(16))
  const zeros = Buffer.alloc(PIECE)
  const fh = await open(temp, 'w')
  try {
    let left = size
    while (left > 0) {
      const n = Math.min(PIECE, left)
      const piece = cipher.update(n === PIECE ? zeros : zeros.subarray(0, n))
      let off = 0
      while (off < piece.byteLength) off += (await fh.write(piece, off, piece.byteLength - off)).bytesWritten
      left -= n
    }
    await fh.sync()
  } catch (err) {
    await fh.close().catch(() => {})
    await rm(temp, { force: true })
    throw err
  }
  await fh.close()
  await rename(temp, path)
  return { created: true, ms: performance.now() - t0 }
}

/** Reads the whole file once (into the page cache); returns ms. */
export async function warm (path: string): Promise<number> {
  const t0 = performance.now()
  const fh = await open(path, 'r')
  const buf = Buffer.allocUnsafe(8 * 1024 * 1024)
  try {
    for (;;) {
      const { bytesRead } = await fh.read(buf, 0, buf.byteLength, null)
      if (bytesRead === 0) break
    }
  } finally {
    await fh.close()
  }
  return performance.now() - t0
}

export async function freeBytes (path: string): Promise<number> {
  const s = await statfs(path)
  return s.bavail * s.bsize
}

export function fmtBytes (n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  let v = n
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++ }
  return `${Number.isInteger(v) ? v : v.toFixed(1)} ${units[i]}`
}

/** Parses "1GiB", "512MiB", "1g", "1073741824". */
export function parseSize (s: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b?)\s*$/i.exec(s)
  if (m === null) throw new Error(`cannot parse size "${s}" (e.g. 1GiB, 256MiB, 1073741824)`)
  const mult = { '': 1, k: 1024, m: 1024 ** 2, g: 1024 ** 3, t: 1024 ** 4 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g' | 't']
  return Math.round(Number(m[1]) * mult)
}
