/**
 * Hints say where an object may be pulled from: `{uri, priority, weight}`, tried like DNS SRV
 * records — lowest priority first, weighted random order among equal priorities (RFC 2782).
 */
import { InvalidHintError } from './errors.ts'

export interface Hint {
  uri: string
  /** lower is tried first; default 0 */
  priority: number
  /** relative share among hints of equal priority; default 1 */
  weight: number
}

export const HINT_SCHEMES = ['berth:', 'locker:', 'file:', 'http:', 'https:'] as const
const MAX_HINT_LENGTH = 2048

/**
 * Accepts a hint as a URI string (optionally `URI;priority=P;weight=W`) or an object, and
 * returns it validated and normalised. Unknown schemes, missing hosts, non-integer or negative
 * numbers are refused with ERR_INVALID_HINT.
 */
export function parseHint (input: unknown): Hint {
  if (typeof input === 'string') {
    if (input.length === 0 || input.length > MAX_HINT_LENGTH) throw new InvalidHintError(`hint must be 1 to ${MAX_HINT_LENGTH} characters`)
    const [uri, ...params] = input.split(';')
    const hint: Record<string, unknown> = { uri }
    for (const p of params) {
      const [k, v] = p.split('=')
      if ((k !== 'priority' && k !== 'weight') || v === undefined) throw new InvalidHintError(`bad hint parameter ${JSON.stringify(p)} (priority=N or weight=N)`)
      hint[k] = Number(v)
    }
    return parseHint(hint)
  }
  if (typeof input !== 'object' || input === null) throw new InvalidHintError('hint must be a URI string or {uri, priority, weight}')
  const { uri, priority = 0, weight = 1 } = input as Record<string, unknown>
  if (typeof uri !== 'string' || uri.length === 0 || uri.length > MAX_HINT_LENGTH) throw new InvalidHintError('hint uri must be a non-empty string')
  for (const [k, v] of [['priority', priority], ['weight', weight]] as const) {
    if (typeof v !== 'number' || !Number.isInteger(v) || v < 0 || v > 65535) throw new InvalidHintError(`hint ${k} must be an integer from 0 to 65535`)
  }
  let url: URL
  try {
    url = new URL(uri)
  } catch {
    throw new InvalidHintError(`hint is not a URI: ${JSON.stringify(uri.slice(0, 100))}`)
  }
  if (!(HINT_SCHEMES as readonly string[]).includes(url.protocol)) {
    throw new InvalidHintError(`unsupported hint scheme ${JSON.stringify(url.protocol)} (berth:, locker:, file:, http:, https:)`)
  }
  if (url.protocol !== 'file:' && url.hostname === '') throw new InvalidHintError('hint needs a host')
  if (url.protocol === 'berth:' && url.port === '') throw new InvalidHintError('berth: hints need a port (berth://host:port)')
  if (url.username !== '' || url.password !== '') throw new InvalidHintError('hints must not carry credentials')
  return { uri: url.protocol === 'file:' ? url.href : uri, priority: priority as number, weight: weight as number }
}

export function formatHint (h: Hint): string {
  return h.priority === 0 && h.weight === 1 ? h.uri : `${h.uri};priority=${h.priority};weight=${h.weight}`
}

/**
 * SRV ordering: groups by ascending priority; inside a group, repeatedly picks a hint with
 * probability proportional to its weight (zero weights get a small chance, as RFC 2782 says).
 */
export function orderHints (hints: readonly Hint[], random: () => number = Math.random): Hint[] {
  const byPriority = new Map<number, Hint[]>()
  for (const h of hints) {
    const group = byPriority.get(h.priority) ?? []
    group.push(h)
    byPriority.set(h.priority, group)
  }
  const out: Hint[] = []
  for (const priority of [...byPriority.keys()].sort((a, b) => a - b)) {
    const group = [...byPriority.get(priority)!]
    // Zero-weight entries first, as RFC 2782 orders them, so they are only picked when drawn at 0.
    group.sort((a, b) => a.weight - b.weight)
    while (group.length > 0) {
      const total = group.reduce((s, h) => s + h.weight, 0)
      let draw = random() * total
      let i = 0
      if (total > 0) {
        for (; i < group.length - 1; i++) {
          draw -= group[i].weight
          if (draw < 0 && group[i].weight > 0) break
        }
      }
      out.push(group[i])
      group.splice(i, 1)
    }
  }
  return out
}

/** Removes duplicates (same URI), keeping the first. */
export function uniqueHints (hints: readonly Hint[]): Hint[] {
  const seen = new Set<string>()
  return hints.filter(h => !seen.has(h.uri) && seen.add(h.uri) !== undefined)
}
