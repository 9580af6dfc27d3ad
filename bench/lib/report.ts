/**
 * The benchmark's report: the machine it ran on, one row per measure with Berth's figure beside
 * the anchor measured in the same run, their ratio, the target and the verdict; printed as a
 * Markdown table (pasteable into bench/README.md) and saved as JSON.
 */
import { readFileSync } from 'node:fs'
import { cpus, totalmem, hostname, release, loadavg } from 'node:os'

export type Verdict = 'pass' | 'fail' | 'info' | 'error' | 'skipped'

export interface Row {
  id: string
  measure: string
  /** Berth's figure, formatted */
  berth: string
  /** the anchor: which, and its figure */
  anchor: string
  /** Berth ÷ anchor (times), formatted; '' when not applicable */
  ratio: string
  target: string
  verdict: Verdict
  /** raw numbers for the JSON */
  data?: Record<string, unknown>
  /** why it failed / was skipped */
  note?: string
}

export interface Machine {
  cpu: string
  cores: number
  ramBytes: number
  node: string
  kernel: string
  host: string
  date: string
  /** 1-minute load average when the bench started (others' work on the box skews every figure) */
  load1: number
}

export function machine (): Machine {
  let cpu = cpus()[0]?.model ?? 'unknown'
  try {
    const m = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))
    if (m !== null) cpu = m[1].trim()
  } catch {}
  return { cpu, cores: cpus().length, ramBytes: totalmem(), node: process.version, kernel: release(), host: hostname(), date: new Date().toISOString(), load1: loadavg()[0] }
}

export function fmtSeconds (ms: number): string { return `${(ms / 1000).toFixed(3)} s` }
export function fmtRate (bytes: number, ms: number): string { return `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s` }
export function fmtMB (bytes: number): string { return `${(bytes / 1e6).toFixed(1)} MB` }
export function fmtRatio (r: number): string { return Number.isFinite(r) ? `${r.toFixed(2)}×` : '' }

function esc (s: string): string { return s.replace(/\|/g, '\\|') }

export function markdownTable (rows: readonly Row[]): string {
  const head = ['measure', 'Berth', 'anchor', 'ratio', 'target', 'pass/fail']
  const lines = [`| ${head.join(' | ')} |`, `|${head.map(() => '---').join('|')}|`]
  for (const r of rows) lines.push(`| ${[r.measure, r.berth, r.anchor, r.ratio, r.target, r.verdict].map(esc).join(' | ')} |`)
  return lines.join('\n')
}

export function machineLine (m: Machine): string {
  return `${m.date} · ${m.cpu} · ${m.cores} cores · ${(m.ramBytes / 2 ** 30).toFixed(1)} GiB RAM · Node ${m.node} · Linux ${m.kernel} · load ${m.load1.toFixed(2)} at start`
}

export function notes (rows: readonly Row[]): string[] {
  return rows.filter(r => r.note !== undefined).map(r => `- ${r.measure}: ${r.note}`)
}
