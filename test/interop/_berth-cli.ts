/**
 * Test helpers that drive the real `berth` binary as separate processes, the way a user does.
 */
import { type ChildProcess, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { createServer } from 'node:net'
import { fileURLToPath } from 'node:url'
import { cidFromDigest } from '../../src/core/naming.ts'

export const BERTH_BIN = fileURLToPath(new URL('../../bin/berth.js', import.meta.url))

export interface RunResult { code: number | null, signal: NodeJS.Signals | null, stdout: Buffer, stderr: string }

/** Runs `node bin/berth.js ARGS` to completion. */
export async function runBerth (args: string[], o: { input?: Uint8Array, env?: NodeJS.ProcessEnv, timeoutMs?: number, cwd?: string } = {}): Promise<RunResult> {
  const env = { ...process.env, ...o.env }
  // A developer's own BERTH_AGENT must not leak into tests that rely on --agent or its absence.
  if (o.env?.BERTH_AGENT === undefined) delete env.BERTH_AGENT
  const child = spawn(process.execPath, [BERTH_BIN, ...args], { env, cwd: o.cwd, stdio: ['pipe', 'pipe', 'pipe'] })
  const out: Buffer[] = []
  let err = ''
  child.stdout.on('data', (b: Buffer) => out.push(b))
  child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s })
  child.stdin.on('error', () => {})
  child.stdin.end(o.input)
  const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000)
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(resolve => child.once('close', (c, s) => resolve([c, s])))
  clearTimeout(timer)
  return { code, signal, stdout: Buffer.concat(out), stderr: err }
}

/** A free TCP port on loopback (closed again; a tiny race with other processes is accepted). */
export async function freePort (): Promise<number> {
  return await new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const port = (server.address() as { port: number }).port
      server.close(() => resolve(port))
    })
  })
}

export interface AgentProcess {
  url: string
  peerUrl: string
  hint: string
  child: ChildProcess
  stderr: () => string
  /** SIGTERM, then the exit code (SIGKILL after a grace period) */
  stop: () => Promise<number | null>
}

/** Waits for a daemon's first stdout line (it prints it once listening) and parses it as JSON. */
async function firstJsonLine (child: ChildProcess, stderr: () => string, timeoutMs = 30_000): Promise<Record<string, unknown>> {
  return await new Promise((resolve, reject) => {
    let buffered = ''
    const timer = setTimeout(() => { cleanup(); reject(new Error(`daemon did not start in ${timeoutMs} ms: ${stderr()}`)) }, timeoutMs)
    const onData = (s: string): void => {
      buffered += s
      const nl = buffered.indexOf('\n')
      if (nl < 0) return
      cleanup()
      try { resolve(JSON.parse(buffered.slice(0, nl))) } catch (err) { reject(err) }
    }
    const onExit = (code: number | null): void => { cleanup(); reject(new Error(`daemon exited with ${code}: ${stderr()}`)) }
    const cleanup = (): void => { clearTimeout(timer); child.stdout!.off('data', onData); child.off('exit', onExit) }
    child.stdout!.setEncoding('utf8').on('data', onData)
    child.once('exit', onExit)
  })
}

export function stopper (child: ChildProcess): () => Promise<number | null> {
  return async () => {
    if (child.exitCode !== null || child.signalCode !== null) return child.exitCode
    const exited = new Promise<number | null>(resolve => child.once('exit', code => resolve(code)))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 10_000)
    const code = await exited
    clearTimeout(timer)
    return code
  }
}

/** `berth agent --json …` as its own process; ports default to 0 (the agent reports the real ones). */
export async function startAgentProcess (o: { store?: string, listen?: string, peerListen?: string, extra?: string[] } = {}): Promise<AgentProcess> {
  const args = ['agent', '--json', '--listen', o.listen ?? '127.0.0.1:0', '--peer-listen', o.peerListen ?? '127.0.0.1:0', ...(o.store !== undefined ? ['--store', o.store] : []), ...(o.extra ?? [])]
  const env = { ...process.env }
  delete env.BERTH_AGENT
  const child = spawn(process.execPath, [BERTH_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { err += s })
  const stderr = (): string => err
  const stop = stopper(child)
  try {
    const info = await firstJsonLine(child, stderr)
    return { url: String(info.url), peerUrl: String(info.peerUrl), hint: String(info.hint), child, stderr, stop }
  } catch (e) {
    await stop()
    throw e
  }
}

/** Deterministic pseudo-random bytes, fast enough for a few MiB. */
export function pseudoRandom (size: number, seed = 1): Buffer {
  const out = Buffer.alloc(size)
  let counter = 0
  for (let at = 0; at < size; at += 32) createHash('sha256').update(`${seed}:${counter++}`).digest().copy(out, at)
  return out
}

export function oidOf (bytes: Uint8Array): string {
  return cidFromDigest(createHash('sha256').update(bytes).digest())
}

export { firstJsonLine }
