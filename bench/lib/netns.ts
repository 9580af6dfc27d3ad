/**
 * A second "host" with two real, rate-limited links to this one, for multipath measures and
 * tests: a network namespace (`berthmp`) joined to the root namespace by two veth pairs
 *
 *     root namespace (the receiver)                  namespace berthmp (the sender host)
 *     bmp1r 10.77.1.1/24  <──── veth, link 0 ────>  bmp1n 10.77.1.2/24   tbf on egress
 *     bmp2r 10.77.2.1/24  <──── veth, link 1 ────>  bmp2n 10.77.2.2/24   tbf on egress
 *
 * Each link is shaped with a token bucket (`tc qdisc replace dev bmpXn root tbf rate R burst B
 * latency L`) on the namespace side's egress — the direction the data flows, sender → receiver —
 * and by default on the root side's egress too (requests and ACKs; a symmetric link). A process
 * started with `exec` / `wrap` runs inside the namespace (`ip netns exec berthmp …`), so a server
 * listening on 0.0.0.0 there is reached from the root namespace at 10.77.1.2 over link 0 and at
 * 10.77.2.2 over link 1, and nothing else: the two paths are real, separate TCP paths through the
 * kernel, each with its own queue and rate.
 *
 * Only tbf, htb and pfifo exist in this kernel (no netem, fq, fq_codel, sfq): `delayMs` needs
 * netem and is refused with the reason when netem is missing.
 *
 * ### tbf settings (tbfFor) and the goodput they give
 * burst = max(rate × 4 ms, 16 KiB) (≥ 10 full-size frames, so the bucket never starves a
 * segmentation-offload burst at low rates; 50 KB at 100 mbit, more than the timer granularity
 * needs), latency = 100 ms (the queue holds rate × 100 ms + burst: a TCP flow in slow start is
 * not cut short by tail drops at ≥ 20 mbit — at 50 ms, 20 mbit dropped 243 packets of an 8 MiB
 * transfer — while a 1 mbit link does not grow a multi-second queue). Below 20 mbit the first
 * round trips still overflow the queue (veth hands tbf 64 KB GSO segments), as on a real slow
 * link; goodput does not suffer. Burst 16 KiB … 200 KB and latency 10 … 400 ms all gave the
 * same goodput within 0.5 %: the choice is about queueing, not rate. One TCP connection
 * (curl ← nginx inside the namespace, sendfile, BBR, MTU 1500, ~3 s of data, median of 3),
 * measured 2026-11-25 07:08 UTC on the 2-core Xeon box with
 * `node --import tsx bench/multipath.ts calibrate`:
 *
 *     nominal    goodput       of nominal   (bytes)
 *     100 mbit   95.64 mbit    95.6 %       35.8 MiB
 *      50 mbit   47.82 mbit    95.6 %       17.9 MiB
 *      40 mbit   38.29 mbit    95.7 %       14.3 MiB
 *      20 mbit   19.16 mbit    95.8 %        7.1 MiB
 *      10 mbit    9.60 mbit    96.0 %        3.6 MiB
 *       5 mbit    4.81 mbit    96.3 %        1.8 MiB
 *       2 mbit    1.92 mbit    96.2 %        704 KiB
 *       1 mbit    0.96 mbit    96.2 %        384 KiB
 *
 * 95.6 % is the ceiling with a 1500-byte MTU: tbf counts whole frames (1514 bytes with the
 * Ethernet header) and a TCP segment carries 1448 bytes of data (timestamps on), 1448 / 1514 =
 * 0.956; the low rates read a little above it because the bucket starts full (16 KiB free over
 * 3 s is +0.4 % at 10 mbit, +4 % at 1 mbit).
 *
 * Only one harness may own the namespace and the 10.77.1/2 subnets at a time (a test run and a
 * bench run would fight over them): `createTwoLinkHost` takes a lock file (/run/berth-netns.lock,
 * holding the owner's pid and start time), waits while a live process holds it, and removes
 * whatever a dead owner left behind (its processes inside the namespace, the namespace, the
 * veths) before building its own. `destroy()` undoes everything, and an exit hook does the same
 * synchronously if the process ends without calling it.
 */
import { spawn, spawnSync, type ChildProcess, type SpawnOptions } from 'node:child_process'
import { closeSync, existsSync, openSync, readFileSync, unlinkSync, writeSync } from 'node:fs'
import { connect } from 'node:net'

export const NS = 'berthmp'
const PROBE_NS = 'bmprobe'
const PROBE_DEVS = ['bmprobe0']
const LOCK = '/run/berth-netns.lock'

export interface LinkNames { root: string, ns: string, rootAddr: string, nsAddr: string }
export const LINKS: readonly LinkNames[] = [
  { root: 'bmp1r', ns: 'bmp1n', rootAddr: '10.77.1.1', nsAddr: '10.77.1.2' },
  { root: 'bmp2r', ns: 'bmp2n', rootAddr: '10.77.2.1', nsAddr: '10.77.2.2' }
]

export interface TbfSettings { rate: string, burst: string, latency: string }

/** bits per second of a tc rate ("100mbit", "1.5mbit", "800kbit", "10000bit"). */
export function rateBits (rate: string): number {
  const m = /^(\d+(?:\.\d+)?)\s*(bit|kbit|mbit|gbit)?$/i.exec(rate.trim())
  if (m === null) throw new Error(`bad rate ${JSON.stringify(rate)} (e.g. 100mbit, 800kbit)`)
  const unit = (m[2] ?? 'bit').toLowerCase()
  return Number(m[1]) * ({ bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 } as Record<string, number>)[unit]
}

/** The tbf parameters used for a rate (see the file comment for why, and what they give). */
export function tbfFor (rate: string): TbfSettings {
  const bytesPerSec = rateBits(rate) / 8
  const burst = Math.max(Math.ceil(bytesPerSec * 0.004), 16 * 1024)
  return { rate, burst: String(burst), latency: '100ms' }
}

// ── small process helpers (synchronous ones only for set-up / tear-down) ───────────────────

interface Ran { code: number | null, stdout: string, stderr: string }

function sh (cmd: string, args: readonly string[], timeoutMs = 20000): Ran {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: timeoutMs })
  if (r.error !== undefined) return { code: -1, stdout: '', stderr: r.error.message }
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' }
}

function must (cmd: string, args: readonly string[]): string {
  const r = sh(cmd, args)
  if (r.code !== 0) throw new Error(`\`${[cmd, ...args].join(' ')}\` failed (exit ${r.code}): ${r.stderr.trim().slice(-500)}`)
  return r.stdout
}

async function runAsync (cmd: string, args: readonly string[], timeoutMs = 60000): Promise<Ran> {
  return await new Promise(resolve => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (d: string) => { stdout += d })
    child.stderr.setEncoding('utf8').on('data', (d: string) => { stderr += d })
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
    child.once('error', e => { clearTimeout(timer); resolve({ code: -1, stdout, stderr: stderr + e.message }) })
    child.once('close', code => { clearTimeout(timer); resolve({ code, stdout, stderr }) })
  })
}

function hasProgram (p: string): boolean {
  return sh('sh', ['-c', 'command -v "$1"', 'sh', p]).code === 0
}

/** Does this process hold CAP_NET_ADMIN (bit 12 of CapEff)? */
function hasNetAdmin (): boolean {
  try {
    const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'))
    return m !== null && (BigInt(`0x${m[1]}`) & (1n << 12n)) !== 0n
  } catch {
    return process.getuid?.() === 0
  }
}

function procStart (pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8')
    // Field 22 (starttime), counted after the command name's closing parenthesis.
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

// ── cleanup ───────────────────────────────────────────────────────────────────────────────

/** Kills every process inside namespace `ns` (they are the harness's own, from this or a crashed run). */
function killNsProcesses (ns: string): void {
  const r = sh('ip', ['netns', 'pids', ns])
  if (r.code !== 0) return
  for (const line of r.stdout.split('\n')) {
    const pid = Number.parseInt(line.trim(), 10)
    if (Number.isInteger(pid) && pid > 1 && pid !== process.pid) { try { process.kill(pid, 'SIGKILL') } catch {} }
  }
}

/** Removes the namespace and both veth pairs, whatever state they are in (idempotent). */
function removeAll (): void {
  killNsProcesses(NS)
  // A killed process can take a moment to leave; the namespace goes when its last user does.
  const until = Date.now() + 2000
  while (Date.now() < until && sh('ip', ['netns', 'pids', NS]).stdout.trim() !== '') { /* wait */ }
  sh('ip', ['netns', 'del', NS])
  for (const l of LINKS) sh('ip', ['link', 'del', l.root])
}

function removeProbe (): void {
  killNsProcesses(PROBE_NS)
  sh('ip', ['netns', 'del', PROBE_NS])
  for (const d of PROBE_DEVS) sh('ip', ['link', 'del', d])
}

// ── the lock ──────────────────────────────────────────────────────────────────────────────

function lockOwner (): { pid: number, start: string } | undefined {
  try {
    const [pid, start] = readFileSync(LOCK, 'utf8').trim().split(/\s+/)
    return { pid: Number(pid), start }
  } catch {
    return undefined
  }
}

function ownerAlive (o: { pid: number, start: string }): boolean {
  return Number.isInteger(o.pid) && o.pid > 0 && procStart(o.pid) === o.start
}

async function takeLock (waitMs: number, log: (s: string) => void): Promise<void> {
  const deadline = Date.now() + waitMs
  let said = false
  for (;;) {
    try {
      const fd = openSync(LOCK, 'wx')
      writeSync(fd, `${process.pid} ${procStart(process.pid) ?? ''}\n`)
      closeSync(fd)
      return
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err
    }
    const o = lockOwner()
    if (o !== undefined && o.pid === process.pid) throw new Error(`${LOCK} is held by this process already: one two-link host at a time`)
    if (o === undefined || !ownerAlive(o)) {
      // The owner died without tearing down: its leftovers go with its lock.
      try { unlinkSync(LOCK) } catch {}
      continue
    }
    if (Date.now() > deadline) throw new Error(`the two-link namespace is in use by pid ${o.pid} (${LOCK}) for more than ${Math.round(waitMs / 1000)} s`)
    if (!said) { log(`waiting for pid ${o.pid} to release the two-link namespace (${LOCK})`); said = true }
    await new Promise(resolve => setTimeout(resolve, 250))
  }
}

function releaseLock (): void {
  const o = lockOwner()
  if (o?.pid === process.pid) { try { unlinkSync(LOCK) } catch {} }
}

// ── can namespaces be made here? ───────────────────────────────────────────────────────────

let probed: Promise<string | undefined> | undefined

/**
 * Why a two-link host cannot be made here, or undefined when it can: `ip` and `tc` present,
 * CAP_NET_ADMIN held, and a probe namespace with a veth pair and a tbf qdisc really made (and
 * removed). Callers skip LOUDLY with the reason.
 */
export async function netnsUnavailable (): Promise<string | undefined> {
  probed ??= (async () => {
    if (process.platform !== 'linux') return `network namespaces need Linux (this is ${process.platform})`
    for (const p of ['ip', 'tc']) if (!hasProgram(p)) return `\`${p}\` is missing (apt-get install iproute2)`
    if (!hasNetAdmin()) return 'no CAP_NET_ADMIN (run as root, or in a container with --cap-add NET_ADMIN)'
    removeProbe()
    try {
      for (const [cmd, args] of [
        ['ip', ['netns', 'add', PROBE_NS]],
        ['ip', ['link', 'add', PROBE_DEVS[0], 'type', 'veth', 'peer', 'name', 'bmprobe1', 'netns', PROBE_NS]],
        ['ip', ['netns', 'exec', PROBE_NS, 'tc', 'qdisc', 'add', 'dev', 'bmprobe1', 'root', 'tbf', 'rate', '10mbit', 'burst', '16384', 'latency', '50ms']]
      ] as const) {
        const r = sh(cmd, args)
        if (r.code !== 0) return `cannot make a network namespace with a shaped veth: \`${[cmd, ...args].join(' ')}\`: ${r.stderr.trim().slice(-300) || `exit ${r.code}`}`
      }
      return undefined
    } finally {
      removeProbe()
    }
  })()
  return await probed
}

/** Is netem (needed for `delayMs`) in this kernel? */
function netemMissing (): string | undefined {
  removeProbe()
  try {
    if (sh('ip', ['link', 'add', PROBE_DEVS[0], 'type', 'veth', 'peer', 'name', 'bmprobe1']).code !== 0) return 'cannot make a probe veth'
    const r = sh('tc', ['qdisc', 'add', 'dev', PROBE_DEVS[0], 'root', 'netem', 'delay', '1ms'])
    return r.code === 0 ? undefined : `tc netem is not available in this kernel (${r.stderr.trim()}): no added delay possible`
  } finally {
    removeProbe()
  }
}

// ── the host ──────────────────────────────────────────────────────────────────────────────

export interface TwoLinkOptions {
  /** the two links' rates, tc syntax (default 100mbit each) */
  rates?: [string, string]
  /** one-way delay added on each link's namespace-side egress (needs netem) */
  delayMs?: number
  /** shape the root side's egress too (requests and ACKs), default true */
  bothWays?: boolean
  /** how long to wait for another harness holding the namespace, default 6 min */
  lockWaitMs?: number
  log?: (s: string) => void
}

export interface TwoLinkHost {
  readonly ns: string
  /** the sender host's addresses, link 0 and link 1 */
  readonly addrs: [string, string]
  /** this (root) namespace's addresses on the links */
  readonly rootAddrs: [string, string]
  readonly links: readonly LinkNames[]
  /** the current tbf settings of each link */
  readonly shaping: TbfSettings[]
  /** `[ip, [netns, exec, NS, cmd, ...args]]`: a command line that runs inside the namespace */
  wrap (cmd: string, args: readonly string[]): [string, string[]]
  /** spawns cmd inside the namespace (its own process group: kill it with process.kill(-pid)) */
  exec (cmd: string, args: readonly string[], options?: SpawnOptions): ChildProcess
  /** runs cmd inside the namespace to completion */
  run (cmd: string, args: readonly string[], timeoutMs?: number): Promise<Ran>
  /** re-shapes link i (both directions when bothWays) */
  setRate (i: number, rate: string): Promise<void>
  /** takes link i down or up (the namespace side: what a cable pulled at the sender looks like) */
  setLink (i: number, up: boolean): Promise<void>
  /** bytes the sender host has sent over link i (its namespace-side tx counter, read from the root side's rx) */
  bytesFromNs (i: number): number
  /** bytes sent to the sender host over link i */
  bytesToNs (i: number): number
  /** kills every process in the namespace, removes it and the veths, releases the lock (idempotent) */
  destroy (): Promise<void>
}

/** Thrown by createTwoLinkHost when namespaces cannot be made at all (`reason` says why). */
export class NetnsUnavailableError extends Error {
  readonly reason: string
  constructor (reason: string) { super(`network namespaces unavailable: ${reason}`); this.reason = reason }
}

function counter (dev: string, which: 'rx_bytes' | 'tx_bytes'): number {
  try { return Number(readFileSync(`/sys/class/net/${dev}/statistics/${which}`, 'utf8').trim()) } catch { return NaN }
}

let exitHook: (() => void) | undefined

export async function createTwoLinkHost (o: TwoLinkOptions = {}): Promise<TwoLinkHost> {
  const log = o.log ?? (() => {})
  const rates = o.rates ?? ['100mbit', '100mbit']
  const bothWays = o.bothWays ?? true
  for (const r of rates) rateBits(r)
  const reason = await netnsUnavailable()
  if (reason !== undefined) throw new NetnsUnavailableError(reason)
  if (o.delayMs !== undefined && o.delayMs > 0) {
    const why = netemMissing()
    if (why !== undefined) throw new Error(`delayMs ${o.delayMs}: ${why}`)
  }

  await takeLock(o.lockWaitMs ?? 6 * 60_000, log)
  let destroyed = false
  const teardown = (): void => {
    if (destroyed) return
    destroyed = true
    removeAll()
    releaseLock()
    if (exitHook !== undefined) { process.removeListener('exit', exitHook); exitHook = undefined }
  }
  exitHook = teardown
  process.on('exit', teardown)

  const shaping: TbfSettings[] = []
  const shape = (i: number, rate: string): void => {
    const t = tbfFor(rate)
    const tbf = ['root', 'tbf', 'rate', t.rate, 'burst', t.burst, 'latency', t.latency]
    const l = LINKS[i]
    if (o.delayMs !== undefined && o.delayMs > 0) {
      must('ip', ['netns', 'exec', NS, 'tc', 'qdisc', 'replace', 'dev', l.ns, 'root', 'handle', '1:', 'netem', 'delay', `${o.delayMs}ms`])
      must('ip', ['netns', 'exec', NS, 'tc', 'qdisc', 'replace', 'dev', l.ns, 'parent', '1:1', 'handle', '10:', ...tbf.slice(1)])
    } else {
      must('ip', ['netns', 'exec', NS, 'tc', 'qdisc', 'replace', 'dev', l.ns, ...tbf])
    }
    if (bothWays) must('tc', ['qdisc', 'replace', 'dev', l.root, ...tbf])
    shaping[i] = t
  }

  try {
    // Leftovers of a run that died without tearing down (we hold the lock: nobody else owns them).
    removeAll()
    must('ip', ['netns', 'add', NS])
    must('ip', ['-n', NS, 'link', 'set', 'lo', 'up'])
    for (const [i, l] of LINKS.entries()) {
      must('ip', ['link', 'add', l.root, 'type', 'veth', 'peer', 'name', l.ns, 'netns', NS])
      must('ip', ['addr', 'add', `${l.rootAddr}/24`, 'dev', l.root])
      must('ip', ['-n', NS, 'addr', 'add', `${l.nsAddr}/24`, 'dev', l.ns])
      must('ip', ['link', 'set', l.root, 'up'])
      must('ip', ['-n', NS, 'link', 'set', l.ns, 'up'])
      shape(i, rates[i])
    }
    // Up means carrier on both ends; it takes a few ms.
    const deadline = Date.now() + 5000
    for (const l of LINKS) {
      while (readFileSync(`/sys/class/net/${l.root}/operstate`, 'utf8').trim() !== 'up') {
        if (Date.now() > deadline) throw new Error(`${l.root} did not come up`)
        await new Promise(resolve => setTimeout(resolve, 20))
      }
    }
  } catch (err) {
    teardown()
    throw err
  }
  log(`two-link host: namespace ${NS}, ${LINKS.map((l, i) => `${l.rootAddr} ⇄ ${l.nsAddr} ${shaping[i].rate} (tbf burst ${shaping[i].burst} latency ${shaping[i].latency})`).join(', ')}`)

  const wrap = (cmd: string, args: readonly string[]): [string, string[]] => ['ip', ['netns', 'exec', NS, cmd, ...args]]
  return {
    ns: NS,
    addrs: [LINKS[0].nsAddr, LINKS[1].nsAddr],
    rootAddrs: [LINKS[0].rootAddr, LINKS[1].rootAddr],
    links: LINKS,
    shaping,
    wrap,
    exec: (cmd, args, options = {}) => {
      const [c, a] = wrap(cmd, args)
      return spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'], detached: true, ...options })
    },
    run: async (cmd, args, timeoutMs) => { const [c, a] = wrap(cmd, args); return await runAsync(c, a, timeoutMs) },
    setRate: async (i, rate) => { rateBits(rate); shape(i, rate) },
    setLink: async (i, up) => { must('ip', ['-n', NS, 'link', 'set', 'dev', LINKS[i].ns, up ? 'up' : 'down']) },
    bytesFromNs: i => counter(LINKS[i].root, 'rx_bytes'),
    bytesToNs: i => counter(LINKS[i].root, 'tx_bytes'),
    destroy: async () => { teardown() }
  }
}

/** Waits until addr:port accepts TCP connections from here (or `alive` says the server died). */
export async function waitForTcp (addr: string, port: number, what: string, alive: () => string | undefined = () => undefined, timeoutMs = 30000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    const dead = alive()
    if (dead !== undefined) throw new Error(`${what} exited before listening on ${addr}:${port}: ${dead}`)
    const ok = await new Promise<boolean>(resolve => {
      const s = connect({ host: addr, port })
      s.setTimeout(1000, () => { s.destroy(); resolve(false) })
      s.once('connect', () => { s.destroy(); resolve(true) })
      s.once('error', () => { s.destroy(); resolve(false) })
    })
    if (ok) return
    if (Date.now() > deadline) throw new Error(`${what} did not listen on ${addr}:${port} within ${timeoutMs} ms`)
    await new Promise(resolve => setTimeout(resolve, 100))
  }
}

/**
 * nginx configuration for a server inside the namespace: serves `root` on 0.0.0.0:port (so on
 * both links' addresses), sendfile on, no access log, runs in the foreground. Start it with
 * `host.exec('nginx', nginxArgs(dir))` or the bench's `start(...host.wrap(...))`.
 */
export function nginxConfig (dir: string, root: string, port = 80): string {
  const user = process.getuid?.() === 0 ? 'user root;\n' : ''
  return `${user}daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/nginx-error.log;
events { worker_connections 64; }
http {
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  default_type application/octet-stream;
  server {
    listen 0.0.0.0:${port};
    root ${root};
    sendfile on;
    tcp_nopush on;
    access_log off;
  }
}
`
}

export function nginxArgs (dir: string): string[] {
  return ['-e', `${dir}/nginx-error.log`, '-p', dir, '-c', `${dir}/nginx.conf`]
}

/** True when a leftover of a crashed run is visible (for diagnostics). */
export function leftovers (): string[] {
  const out: string[] = []
  if (sh('ip', ['netns', 'list']).stdout.split('\n').some(l => l.split(' ')[0] === NS)) out.push(`namespace ${NS}`)
  for (const l of LINKS) if (existsSync(`/sys/class/net/${l.root}`)) out.push(`veth ${l.root}`)
  if (existsSync(LOCK)) out.push(`lock ${LOCK} (${readFileSync(LOCK, 'utf8').trim()})`)
  return out
}

/**
 * Waits for the one JSON line a `berth agent --json` prints once it listens ({url, peerUrl, …});
 * rejects with the agent's stderr when it exits first, prints something else, or takes too long.
 */
export async function agentReady (child: ChildProcess, what: string, stderr: () => string, timeoutMs = 60000): Promise<{ url: string, peerUrl: string }> {
  return await new Promise((resolve, reject) => {
    let buf = ''
    let done = false
    const finish = (err: Error | undefined, v?: { url: string, peerUrl: string }): void => {
      if (done) return
      done = true
      clearTimeout(timer)
      child.stdout?.removeListener('data', onData)
      child.removeListener('exit', onExit)
      if (err !== undefined) reject(err); else resolve(v!)
    }
    const tail = (): string => stderr().trim().split('\n').slice(-8).join(' | ').slice(-1500)
    const timer = setTimeout(() => finish(new Error(`${what}: not listening within ${timeoutMs} ms: ${tail()}`)), timeoutMs)
    const onData = (d: Buffer | string): void => {
      buf += d.toString()
      const nl = buf.indexOf('\n')
      if (nl < 0) return
      const line = buf.slice(0, nl)
      let v: { url?: unknown, peerUrl?: unknown } | undefined
      try { v = JSON.parse(line) as typeof v } catch {}
      if (typeof v?.url === 'string' && typeof v.peerUrl === 'string') finish(undefined, { url: v.url, peerUrl: v.peerUrl })
      else finish(new Error(`${what}: printed ${line.slice(0, 300)} instead of its address: ${tail()}`))
    }
    const onExit = (code: number | null, signal: string | null): void => {
      // Let the last stderr arrive before quoting it.
      setTimeout(() => finish(new Error(`${what} exited (${code ?? signal}) before listening: ${tail()}`)), 50)
    }
    child.stdout?.on('data', onData)
    child.once('exit', onExit)
    if (child.exitCode !== null || child.signalCode !== null) onExit(child.exitCode, child.signalCode)
  })
}
