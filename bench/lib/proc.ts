/**
 * Child processes for the benchmark: every process started here is remembered and killed when
 * the harness ends, fails, or is interrupted. Commands are always spawned with argument arrays
 * (no shell) and timed with performance.now() around the whole command.
 */
import { spawn, type ChildProcess, type StdioOptions } from 'node:child_process'
import { openSync, closeSync } from 'node:fs'
import { createServer } from 'node:net'
import { performance } from 'node:perf_hooks'
import type { Writable } from 'node:stream'

const live = new Set<ChildProcess>()

function killGroup (child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return
  // Each child leads its own process group (detached), so helpers it starts go down with it.
  try { process.kill(-child.pid, signal) } catch { try { child.kill(signal) } catch {} }
}

/** Kills every process still running (synchronous: usable from an 'exit' handler). */
export function killAll (signal: NodeJS.Signals = 'SIGKILL'): void {
  for (const child of live) killGroup(child, signal)
}

let cleanupInstalled = false
/** Kills every child on exit, on SIGINT/SIGTERM and on an uncaught error. */
export function installCleanup (onSignal?: () => void): void {
  if (cleanupInstalled) return
  cleanupInstalled = true
  process.on('exit', () => killAll('SIGKILL'))
  for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    process.on(sig, () => {
      process.stderr.write(`\n${sig}: stopping every process the benchmark started\n`)
      killAll('SIGKILL')
      // Give the kernel a moment to take them down before their files are removed.
      const until = Date.now() + 300
      while (Date.now() < until) { /* spin: no event loop in a signal exit path */ }
      try { onSignal?.() } catch {}
      process.exit(130)
    })
  }
}

export interface Started {
  child: ChildProcess
  /** the last 64 KiB of stderr */
  stderr: () => string
  /** resolves when the process has exited */
  exited: Promise<{ code: number | null, signal: NodeJS.Signals | null }>
}

export interface StartOptions {
  cwd?: string
  env?: NodeJS.ProcessEnv
  /** what the child's stdout goes to; default: ignored */
  stdout?: 'ignore' | 'pipe' | number | Writable
  stdin?: 'ignore' | 'pipe' | number
}

function tail (buf: string, add: string, max = 64 * 1024): string {
  const s = buf + add
  return s.length > max ? s.slice(s.length - max) : s
}

/** Starts a long-running process (a server). */
export function start (cmd: string, args: readonly string[], o: StartOptions = {}): Started {
  const stdio: StdioOptions = [o.stdin ?? 'ignore', o.stdout ?? 'ignore', 'pipe']
  const child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, stdio, detached: true })
  live.add(child)
  let err = ''
  child.stderr?.setEncoding('utf8')
  child.stderr?.on('data', (d: string) => { err = tail(err, d) })
  const exited = new Promise<{ code: number | null, signal: NodeJS.Signals | null }>((resolve) => {
    child.once('error', (e) => { err = tail(err, `spawn error: ${e.message}\n`); live.delete(child); resolve({ code: -1, signal: null }) })
    child.once('exit', (code, signal) => { live.delete(child); resolve({ code, signal }) })
  })
  return { child, stderr: () => err, exited }
}

/** Stops a process: SIGTERM, then SIGKILL after graceMs. */
export async function stop (p: Started, graceMs = 5000): Promise<void> {
  if (p.child.exitCode !== null || p.child.signalCode !== null || !live.has(p.child)) { await p.exited; return }
  killGroup(p.child, 'SIGTERM')
  const timer = setTimeout(() => killGroup(p.child, 'SIGKILL'), graceMs)
  await p.exited
  clearTimeout(timer)
}

export interface RunResult {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  /** wall time of the whole command, ms */
  ms: number
  timedOut: boolean
}

export interface RunOptions extends StartOptions {
  /** 'capture' keeps stdout in the result; a number is an fd; default 'capture' */
  out?: 'capture' | 'ignore' | number
  timeoutMs?: number
}

/** Runs a command to completion; the time covers spawn → exit. */
export async function run (cmd: string, args: readonly string[], o: RunOptions = {}): Promise<RunResult> {
  const out = o.out ?? 'capture'
  const t0 = performance.now()
  const p = start(cmd, args, { ...o, stdout: out === 'capture' ? 'pipe' : out })
  let stdout = ''
  p.child.stdout?.setEncoding('utf8')
  p.child.stdout?.on('data', (d: string) => { stdout = tail(stdout, d, 1024 * 1024) })
  let timedOut = false
  const timer = o.timeoutMs !== undefined ? setTimeout(() => { timedOut = true; killGroup(p.child, 'SIGKILL') }, o.timeoutMs) : undefined
  const { code, signal } = await p.exited
  const ms = performance.now() - t0
  if (timer !== undefined) clearTimeout(timer)
  // Let the pipes drain (exit can come before the last 'data').
  await new Promise<void>(resolve => { if (p.child.stdout === null || p.child.stdout.closed) resolve(); else p.child.stdout.once('close', () => resolve()) })
  return { code, signal, stdout, stderr: p.stderr(), ms, timedOut }
}

/**
 * Runs `a | b` without a shell: b is started first with a pipe on stdin, a writes straight into
 * that pipe, and this process closes its own end (so b sees EOF when a exits, and this process
 * never reads any of the data). The time covers the start of b → the exit of both.
 */
export async function runPipe (a: [string, readonly string[]], b: [string, readonly string[]], o: { timeoutMs?: number, cwd?: string } = {}): Promise<RunResult & { codeA: number | null, stderrA: string }> {
  const t0 = performance.now()
  const pb = start(b[0], b[1], { stdin: 'pipe', stdout: 'pipe', cwd: o.cwd })
  const stdin = pb.child.stdin as Writable
  // Pass b's stdin pipe to a as its stdout, then close this process's copy of it.
  const pa = start(a[0], a[1], { stdout: stdin, cwd: o.cwd })
  stdin.destroy()
  let stdout = ''
  pb.child.stdout?.setEncoding('utf8')
  pb.child.stdout?.on('data', (d: string) => { stdout += d })
  let timedOut = false
  const timer = o.timeoutMs !== undefined ? setTimeout(() => { timedOut = true; killGroup(pa.child, 'SIGKILL'); killGroup(pb.child, 'SIGKILL') }, o.timeoutMs) : undefined
  const [ra, rb] = await Promise.all([pa.exited, pb.exited])
  const ms = performance.now() - t0
  if (timer !== undefined) clearTimeout(timer)
  await new Promise<void>(resolve => { if (pb.child.stdout === null || pb.child.stdout.closed) resolve(); else pb.child.stdout.once('close', () => resolve()) })
  return { code: rb.code, signal: rb.signal, codeA: ra.code, stdout, stderr: pb.stderr(), stderrA: pa.stderr(), ms, timedOut }
}

/** An fd on /dev/null for stdout; closed by the caller. */
export function devNull (): { fd: number, close: () => void } {
  const fd = openSync('/dev/null', 'w')
  return { fd, close: () => closeSync(fd) }
}

/** A TCP port free on 127.0.0.1 right now. */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const s = createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const addr = s.address()
      const port = typeof addr === 'object' && addr !== null ? addr.port : 0
      s.close(() => resolve(port))
    })
  })
}

/** Waits until a TCP port accepts connections (or the process dies, or time runs out). */
export async function waitForPort (port: number, p: Started, what: string, timeoutMs = 30000): Promise<void> {
  const { connect } = await import('node:net')
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (p.child.exitCode !== null || p.child.signalCode !== null) throw new Error(`${what} exited (${p.child.exitCode ?? p.child.signalCode}) before listening: ${p.stderr().trim().slice(-2000)}`)
    const ok = await new Promise<boolean>(resolve => {
      const s = connect(port, '127.0.0.1')
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => { s.destroy(); resolve(false) })
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`${what} did not listen on 127.0.0.1:${port} within ${timeoutMs} ms: ${p.stderr().trim().slice(-2000)}`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

/** Is a program on PATH (or an absolute path that exists)? */
export async function which (prog: string): Promise<string | undefined> {
  const r = await run('sh', ['-c', 'command -v "$1"', 'sh', prog])
  const p = r.stdout.trim()
  return r.code === 0 && p !== '' ? p : undefined
}

export function median (xs: readonly number[]): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  const m = s.length >> 1
  return s.length % 2 === 1 ? s[m] : (s[m - 1] + s[m]) / 2
}

/** One line describing a failed command, for the report. */
export function describeFailure (cmd: string, args: readonly string[], r: RunResult): string {
  const how = r.timedOut ? 'timed out' : r.signal !== null ? `killed by ${r.signal}` : `exit ${r.code}`
  const err = r.stderr.trim().split('\n').slice(-6).join(' | ')
  return `\`${[cmd, ...args].join(' ')}\` ${how}${err !== '' ? `: ${err}` : ''}`
}
