/** Sizes and durations as people type them on command lines and in config files. */
import { InvalidConfigError } from './errors.ts'

const SIZE_RE = /^(\d+)([kKmMgGtT]?)(i?[bB])?$/
const SIZE_UNITS: Record<string, number> = { '': 1, k: 2 ** 10, m: 2 ** 20, g: 2 ** 30, t: 2 ** 40 }

/** Bytes: `65536`, `64k`, `1m`, `10g`, `2TiB` (binary multiples). */
export function parseSize (s: string): number {
  const m = SIZE_RE.exec(s.trim())
  if (m === null) throw new InvalidConfigError(`bad size ${JSON.stringify(s)} (e.g. 65536, 64k, 1m, 10g)`)
  const n = Number(m[1]) * SIZE_UNITS[m[2].toLowerCase()]
  if (!Number.isSafeInteger(n)) throw new InvalidConfigError(`size ${JSON.stringify(s)} is too large`)
  return n
}

const DURATION_RE = /^(\d+)([smhd]?)$/
const DURATION_UNITS: Record<string, number> = { '': 1, s: 1, m: 60, h: 3600, d: 86400 }

/** Seconds: `90`, `90s`, `15m`, `1h`, `30d`. */
export function parseDuration (s: string): number {
  const m = DURATION_RE.exec(s.trim())
  if (m === null || Number(m[1]) === 0) throw new InvalidConfigError(`bad duration ${JSON.stringify(s)} (e.g. 90s, 15m, 1h, 30d)`)
  return Number(m[1]) * DURATION_UNITS[m[2]]
}
