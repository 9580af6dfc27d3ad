/**
 * Berth as the benchmark sees it: agents run as separate processes through the real CLI
 * (`node bin/berth.js agent …`), and put/get are timed as whole `berth` commands.
 */
import { rm, mkdir } from 'node:fs/promises'
import { join } from 'node:path'
import { describeFailure, devNull, freePort, run, start, stop, type RunResult, type Started } from './proc.ts'

export const ROOT = new URL('../../', import.meta.url).pathname.replace(/\/$/, '')
export const BIN = join(ROOT, 'bin', 'berth.js')

/** `node bin/berth.js ARGS` */
export function berthCmd (args: readonly string[]): [string, string[]] {
  return [process.execPath, [BIN, ...args]]
}

export class AgentProc {
  readonly name: string
  readonly storeDir: string
  port = 0
  peerPort = 0
  proc: Started | undefined

  constructor (name: string, storeDir: string) {
    this.name = name
    this.storeDir = storeDir
  }

  get url (): string { return `http://127.0.0.1:${this.port}` }
  get hint (): string { return `berth://127.0.0.1:${this.peerPort}` }
  get pid (): number | undefined { return this.proc?.child.pid }

  get args (): string[] {
    return ['agent', '--listen', `127.0.0.1:${this.port}`, '--peer-listen', `127.0.0.1:${this.peerPort}`, '--store', this.storeDir]
  }

  /** Starts the agent (same ports every time) and waits until its API answers. */
  async start (): Promise<void> {
    if (this.port === 0) { this.port = await freePort(); this.peerPort = await freePort() }
    await mkdir(this.storeDir, { recursive: true })
    const [cmd, args] = berthCmd(this.args)
    this.proc = start(cmd, args, { cwd: ROOT })
    const deadline = Date.now() + 30000
    for (;;) {
      const p = this.proc
      if (p.child.exitCode !== null || p.child.signalCode !== null) {
        throw new Error(`agent ${this.name}: \`berth ${this.args.join(' ')}\` exited (${p.child.exitCode ?? p.child.signalCode}) before answering: ${p.stderr().trim().split('\n').slice(-8).join(' | ')}`)
      }
      try {
        const res = await fetch(`${this.url}/v1/status`, { signal: AbortSignal.timeout(2000) })
        await res.arrayBuffer()
        if (res.ok) break
      } catch {}
      if (Date.now() > deadline) throw new Error(`agent ${this.name}: no answer on ${this.url}/v1/status within 30 s: ${p.stderr().trim().slice(-1000)}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }

  async stop (): Promise<void> {
    if (this.proc !== undefined) await stop(this.proc, 10000)
    this.proc = undefined
  }

  /** Stop, delete the store directory, start again: an agent that has never seen the data. */
  async fresh (): Promise<void> {
    await this.stop()
    await rm(this.storeDir, { recursive: true, force: true })
    await this.start()
  }

  stderr (): string { return this.proc?.stderr() ?? '' }
}

export interface BerthRun { ms: number, ok: boolean, error?: string, oid?: string, result?: RunResult }

/** `berth put FILE --agent URL [--chunker K] --json` */
export async function berthPut (agent: AgentProc, file: string, chunker?: 'fixed' | 'cdc', timeoutMs = 900000): Promise<BerthRun> {
  const [cmd, args] = berthCmd(['put', file, '--agent', agent.url, ...(chunker !== undefined ? ['--chunker', chunker] : []), '--json'])
  const r = await run(cmd, args, { cwd: ROOT, timeoutMs })
  if (r.code !== 0 || r.timedOut) return { ms: r.ms, ok: false, error: describeFailure('berth', args.slice(1), r) + agentTail(agent), result: r }
  let oid: string | undefined
  try {
    oid = (JSON.parse(r.stdout) as { oid?: string }).oid
  } catch {
    // Not JSON: take the first thing that looks like a CIDv1 in base32.
    oid = /\bbafk[a-z2-7]{20,}\b/.exec(r.stdout)?.[0]
  }
  if (oid === undefined) return { ms: r.ms, ok: false, error: `\`berth ${args.slice(1).join(' ')}\` printed no OID: ${r.stdout.slice(0, 300)}`, result: r }
  return { ms: r.ms, ok: true, oid, result: r }
}

/** `berth get OID --hint HINT --agent URL -o -` with stdout on /dev/null. */
export async function berthGet (agent: AgentProc, oid: string, hint: string, timeoutMs = 900000): Promise<BerthRun> {
  const [cmd, args] = berthCmd(['get', oid, '--hint', hint, '--agent', agent.url, '-o', '-'])
  const nul = devNull()
  try {
    const r = await run(cmd, args, { cwd: ROOT, out: nul.fd, timeoutMs })
    if (r.code !== 0 || r.timedOut) return { ms: r.ms, ok: false, error: describeFailure('berth', args.slice(1), r) + agentTail(agent), result: r }
    return { ms: r.ms, ok: true, oid, result: r }
  } finally {
    nul.close()
  }
}

function agentTail (agent: AgentProc): string {
  const t = agent.stderr().trim()
  return t === '' ? '' : ` — agent ${agent.name} stderr: ${t.split('\n').slice(-4).join(' | ').slice(-600)}`
}

/** Does the CLI answer `--help`? Returns the failure (command + stderr) if not. */
export async function cliProbe (): Promise<{ ok: boolean, ms: number, error?: string }> {
  const [cmd, args] = berthCmd(['--help'])
  const r = await run(cmd, args, { cwd: ROOT, timeoutMs: 60000 })
  if (r.code !== 0) return { ok: false, ms: r.ms, error: describeFailure('node', args, r) }
  for (const sub of ['agent', 'put', 'get']) {
    if (!new RegExp(`\\b${sub}\\b`).test(r.stdout)) return { ok: false, ms: r.ms, error: `\`node bin/berth.js --help\` does not list "${sub}"` }
  }
  return { ok: true, ms: r.ms }
}

/** The sha-256 digest (hex) inside a CIDv1 raw/sha2-256 OID. */
export async function oidDigestHex (oid: string): Promise<string | undefined> {
  try {
    const { CID } = await import('multiformats/cid')
    const cid = CID.parse(oid)
    if (cid.multihash.code !== 0x12) return undefined
    return Buffer.from(cid.multihash.digest).toString('hex')
  } catch {
    return undefined
  }
}

/**
 * The same put through the agent's HTTP API with curl (`POST /v1/objects?path=…`), no CLI:
 * separates the agent's own time from the CLI's start-up.
 */
export async function apiPut (agent: AgentProc, file: string, chunker: 'fixed' | 'cdc', timeoutMs = 900000): Promise<BerthRun> {
  const url = `${agent.url}/v1/objects?${new URLSearchParams({ chunker, path: file }).toString()}`
  const args = ['-s', '--fail-with-body', '-X', 'POST', '-o', '-', url]
  const r = await run('curl', args, { timeoutMs })
  if (r.code !== 0 || r.timedOut) return { ms: r.ms, ok: false, error: describeFailure('curl', args, r) + ` ${r.stdout.slice(0, 300)}` + agentTail(agent), result: r }
  let oid: string | undefined
  try { oid = (JSON.parse(r.stdout) as { oid?: string }).oid } catch {}
  return oid === undefined ? { ms: r.ms, ok: false, error: `\`curl ${args.join(' ')}\`: no oid in ${r.stdout.slice(0, 300)}` } : { ms: r.ms, ok: true, oid, result: r }
}

/** The same get through the agent's HTTP API with curl (`GET /v1/objects/OID?hint=…` → /dev/null). */
export async function apiGet (agent: AgentProc, oid: string, hint: string, timeoutMs = 900000): Promise<BerthRun> {
  const url = `${agent.url}/v1/objects/${oid}?hint=${encodeURIComponent(hint)}`
  const args = ['-s', '--fail', '-o', '/dev/null', '-w', '%{size_download}', url]
  const r = await run('curl', args, { timeoutMs })
  if (r.code !== 0 || r.timedOut) return { ms: r.ms, ok: false, error: describeFailure('curl', args, r) + agentTail(agent), result: r }
  return { ms: r.ms, ok: true, oid, result: r }
}

/** The OID (CIDv1, raw codec, sha2-256) of bytes whose sha-256 is `hex`. */
export async function oidFromDigestHex (hex: string): Promise<string> {
  const { CID } = await import('multiformats/cid')
  const { create } = await import('multiformats/hashes/digest')
  return CID.createV1(0x55, create(0x12, Buffer.from(hex, 'hex'))).toString()
}

/**
 * A locker server as a separate process through the real CLI:
 * `node [nodeArgs] bin/berth.js locker serve --listen 127.0.0.1:P --store DIR/store --admin-key DIR/admin.jwk`
 * (the admin key is made by the server on first start). `nodeArgs` are Node's own flags
 * (e.g. `--cpu-prof --cpu-prof-dir D`). Lockers and tokens are made with the CLI too.
 */
export class LockerProc {
  readonly dir: string
  readonly nodeArgs: string[]
  port = 0
  proc: Started | undefined

  /** more `locker serve` options (capacities: --egress 100m, …) */
  readonly serveArgs: string[]

  constructor (dir: string, nodeArgs: string[] = [], serveArgs: string[] = []) {
    this.dir = dir
    this.nodeArgs = nodeArgs
    this.serveArgs = serveArgs
  }

  get url (): string { return `http://127.0.0.1:${this.port}` }
  get pid (): number | undefined { return this.proc?.child.pid }
  get adminKey (): string { return join(this.dir, 'admin.jwk') }
  get args (): string[] {
    return ['locker', 'serve', '--listen', `127.0.0.1:${this.port}`, '--store', join(this.dir, 'store'), '--admin-key', this.adminKey, ...this.serveArgs]
  }

  /** Starts the server and waits until it answers HTTP (any status: the route needs a token). */
  async start (): Promise<void> {
    if (this.port === 0) this.port = await freePort()
    await mkdir(this.dir, { recursive: true })
    this.proc = start(process.execPath, [...this.nodeArgs, BIN, ...this.args], { cwd: ROOT })
    const deadline = Date.now() + 60000
    for (;;) {
      const p = this.proc
      if (p.child.exitCode !== null || p.child.signalCode !== null) {
        throw new Error(`locker server: \`berth ${this.args.join(' ')}\` exited (${p.child.exitCode ?? p.child.signalCode}) before answering: ${p.stderr().trim().split('\n').slice(-8).join(' | ')}`)
      }
      try {
        const res = await fetch(`${this.url}/v1/lockers/probe/status`, { signal: AbortSignal.timeout(2000) })
        await res.arrayBuffer()
        break
      } catch {}
      if (Date.now() > deadline) throw new Error(`locker server: no answer on ${this.url} within 60 s: ${p.stderr().trim().slice(-1000)}`)
      await new Promise(resolve => setTimeout(resolve, 100))
    }
  }

  /** SIGTERM (the CLI stops cleanly, so a --cpu-prof profile is written), SIGKILL after graceMs. */
  async stop (graceMs = 15000): Promise<void> {
    if (this.proc !== undefined) await stop(this.proc, graceMs)
    this.proc = undefined
  }

  stderr (): string { return this.proc?.stderr() ?? '' }

  /** `berth locker create NAME --server URL --admin-key … --owner-key DIR/NAME.jwk --quota Q`; returns the owner key's path. */
  async createLocker (name: string, quota: string, more: string[] = []): Promise<string> {
    const ownerKey = join(this.dir, `${name}.jwk`)
    const [cmd, args] = berthCmd(['locker', 'create', name, '--server', this.url, '--admin-key', this.adminKey, '--owner-key', ownerKey, '--quota', quota, '--json', ...more])
    const r = await run(cmd, args, { cwd: ROOT, timeoutMs: 60000 })
    if (r.code !== 0) throw new Error(describeFailure('berth', args.slice(1), r))
    return ownerKey
  }

  /** `berth token issue --locker NAME --key OWNER --ops OPS --all --ttl TTL`: the access token. */
  async issueToken (name: string, ownerKey: string, ops: string, ttl = '2h'): Promise<string> {
    const [cmd, args] = berthCmd(['token', 'issue', '--server', this.url, '--locker', name, '--key', ownerKey, '--ops', ops, '--all', '--ttl', ttl])
    const r = await run(cmd, args, { cwd: ROOT, timeoutMs: 60000 })
    const token = r.stdout.trim().split('\n')[0]
    if (r.code !== 0 || token === undefined || token === '') throw new Error(describeFailure('berth', args.slice(1), r))
    return token
  }
}
