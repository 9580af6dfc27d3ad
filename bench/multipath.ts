/**
 * Multipath over real, rate-limited links (bench/lib/netns.ts): a sender host in a network
 * namespace, joined to this one by two veth links shaped with tbf; the receiving agent here.
 *
 *  (a) equal links, 100 + 100 mbit: `berth get` of a 40 MiB object with two hints
 *      berth://10.77.1.2:P and berth://10.77.2.2:P (the same sender agent, reached over each
 *      link) → time vs the ideal 40 MiB ÷ (sum of the two links' measured single-connection
 *      goodput); target ≤ 1/0.9 of the ideal. Context: the same get with one hint (one link).
 *  (b) unequal links, 10 + 1 mbit: multipath (both hints) vs the fast link alone (one hint);
 *      target: multipath not slower.
 *  (c) (b) with request borrowing off — the receiving agent runs with a config file whose
 *      `plugins` list is [{ type: multipath, borrow: false, paths: [peer, http] }] (schema in
 *      src/agent/pipeline.ts) → its time against (b)'s multipath time (context: what borrowing
 *      buys).
 *  (d) two HTTP mirrors (nginx inside the namespace, the object and its `.manifest` published
 *      in one directory, served on both links' addresses), 50 + 50 mbit and 20 + 5 mbit:
 *      `berth get` with the two http:// hints vs `aria2c -s2 -x2 -k1M URL1 URL2` (one connection
 *      per mirror, 1 MiB pieces, the sha-256 checked with --checksum) in the same run → ratio.
 *
 * (b) and (c) use a 10 MiB object, not 40 MiB: at 10 + 1 mbit 40 MiB takes ~33 s per get (the
 * fast link alone) and the three gets would be half the bench; 10 MiB keeps the 10:1 rates and
 * the absolute 1 mbit (where one 1 MiB request in flight on the slow link lasts ~9 s, which is
 * what borrowing is about) at ~9 s per get. The row labels say "10 MiB".
 *
 * Each get: the receiving agent is a separate process (`node bin/berth.js agent --store DIR`),
 * restarted with an empty store before every get (untimed); the timed command is
 * `curl URL/v1/objects/OID?hint=…&hint=… -o /dev/null` (the get as an application asks its
 * agent; a Node CLI's ~0.2 s start-up would be no part of the transfer, and aria2c's own start-up
 * is a few ms). The bytes each link carried (the root side's rx counter of its veth) are recorded
 * per get and shown beside the time. The sender is `berth agent --peer-listen 0.0.0.0:4651`
 * inside the namespace with a disk store holding both objects.
 *
 * Standalone: `node --import tsx bench/multipath.ts` (table on stdout, JSON in
 * bench/out/multipath.json); `… bench/multipath.ts calibrate` measures one TCP connection's
 * goodput per nominal rate (curl ← nginx in the namespace) and prints the table that
 * bench/lib/netns.ts quotes. run.ts: `multipathRows(log, TMP, json)` returns the rows.
 * Env: BERTH_BENCH_MULTIPATH (1; 0 skips), BERTH_BENCH_MP_REPEAT (2: repetitions of (a), (b) and
 * (d) 50 + 50, the median reported; (c) and (d) 20 + 5 run once), BERTH_BENCH_MP_ROOT (a Berth checkout
 * whose bin/berth.js to run; default this one).
 * Needs root (CAP_NET_ADMIN), `ip`, `tc`, nginx, curl; aria2c is installed with apt-get.
 */
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync, readFileSync } from 'node:fs'
import { copyFile, mkdir, rm, writeFile } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { ensurePrograms } from './lib/anchors.ts'
import { ROOT } from './lib/berth.ts'
import { ensureRandomFile, fmtBytes } from './lib/data.ts'
import { agentReady, createTwoLinkHost, nginxArgs, nginxConfig, NetnsUnavailableError, netnsUnavailable, rateBits, tbfFor, waitForTcp, type TwoLinkHost } from './lib/netns.ts'
import { describeFailure, devNull, freePort, installCleanup, killAll, median, run, start, stop, type Started } from './lib/proc.ts'
import { fmtSeconds, machine, machineLine, markdownTable, notes, type Row } from './lib/report.ts'

const SELF = fileURLToPath(import.meta.url)
const MiB = 1024 * 1024
const SIZE = 40 * MiB
const SLOW_SIZE = 10 * MiB
const BERTH_ROOT = process.env.BERTH_BENCH_MP_ROOT ?? ROOT
const BIN = join(BERTH_ROOT, 'bin', 'berth.js')
const REPEAT = Math.max(1, Number.parseInt(process.env.BERTH_BENCH_MP_REPEAT ?? '2', 10) || 2)
const SENDER_API = 4650
const SENDER_PEER = 4651
const MIRROR_PORT = 80

export const MULTIPATH_ENABLED = process.env.BERTH_BENCH_MULTIPATH !== '0'

type Log = (s: string) => void

const mbit = (bytes: number, ms: number): number => bytes * 8 / (ms / 1000) / 1e6
const fmtMbit = (bytes: number, ms: number): string => `${mbit(bytes, ms).toFixed(1)} mbit/s`
const fmtMiB = (n: number): string => `${(n / MiB).toFixed(1)} MiB`

interface Timed { ms: number, ok: boolean, error?: string, perLink?: [number, number] }

// ── the receiving agent, a process in this namespace ───────────────────────────────────────

class Receiver {
  port = 0
  peerPort = 0
  proc: Started | undefined
  /**
   * Set when this agent's config file was refused because the CLI's config schema has no
   * `plugins` key yet: the receiver then runs in this process, createAgent({ pipeline }), with
   * the same plugin list (src/agent/pipeline.ts), and the row says so.
   */
  fallback: string | undefined
  private inproc: { stop: () => Promise<void> } | undefined
  constructor (readonly dir: string, readonly config?: { plugins?: unknown[] }) {}
  get url (): string { return `http://127.0.0.1:${this.port}` }

  async fresh (): Promise<void> {
    await this.stop()
    await rm(join(this.dir, 'store'), { recursive: true, force: true })
    await mkdir(this.dir, { recursive: true })
    if (this.port === 0) { this.port = await freePort(); this.peerPort = await freePort() }
    if (this.fallback !== undefined) { await this.startInProcess(); return }
    const args = [BIN, 'agent', '--listen', `127.0.0.1:${this.port}`, '--peer-listen', `127.0.0.1:${this.peerPort}`, '--store', join(this.dir, 'store'), '--json']
    if (this.config !== undefined) {
      await writeFile(join(this.dir, 'agent.json'), JSON.stringify(this.config))
      args.push('--config', join(this.dir, 'agent.json'))
    }
    this.proc = start(process.execPath, args, { cwd: BERTH_ROOT, stdout: 'pipe' })
    try {
      await agentReady(this.proc.child, 'receiving agent', this.proc.stderr)
    } catch (err) {
      const msg = (err as Error).message
      if (this.config?.plugins === undefined || !/ERR_INVALID_CONFIG.*Unrecognized key: "plugins"/.test(msg)) throw err
      await this.stop()
      this.fallback = 'the agent CLI refused the config file\'s `plugins` key (src/cli/agent-config.ts has no `plugins` yet), so this receiver ran in the bench process: createAgent({ pipeline: <the same list> })'
      await this.startInProcess()
    }
  }

  private async startInProcess (): Promise<void> {
    const { createAgent } = await import('../src/agent/agent.ts')
    const { PluginSpecSchema } = await import('../src/agent/pipeline.ts')
    const pipeline = (this.config?.plugins ?? []).map(p => PluginSpecSchema.parse(p))
    const agent = await createAgent({ listen: `127.0.0.1:${this.port}`, peerListen: `127.0.0.1:${this.peerPort}`, storeDir: join(this.dir, 'store'), pipeline })
    await agent.start()
    this.inproc = agent
  }

  async stop (): Promise<void> {
    if (this.proc !== undefined) await stop(this.proc, 10000)
    this.proc = undefined
    if (this.inproc !== undefined) await this.inproc.stop()
    this.inproc = undefined
  }

  stderr (): string { return this.proc?.stderr() ?? '' }
}

// ── set-up: the two-link host, its agent and nginx ─────────────────────────────────────────

interface World {
  host: TwoLinkHost
  sender: Started
  nginx: Started
  oid: string
  slowOid: string
  hex: string
  mirrorUrls: [string, string]
  berthHints: [string, string]
}

async function setUp (log: Log, tmp: string, data: string, slowData: string): Promise<World> {
  const host = await createTwoLinkHost({ rates: ['100mbit', '100mbit'], log })
  try {
    // The sender agent, inside the namespace: local API on the namespace's loopback only.
    const senderArgs = [BIN, 'agent', '--listen', `127.0.0.1:${SENDER_API}`, '--peer-listen', `0.0.0.0:${SENDER_PEER}`, '--store', join(tmp, 'sender-store'), '--allow-path', tmp, '--json']
    const sender = start(...host.wrap(process.execPath, senderArgs), { cwd: BERTH_ROOT, stdout: 'pipe' })
    await agentReady(sender.child, 'sender agent (in the namespace)', sender.stderr)
    const oids: string[] = []
    for (const f of [data, slowData]) {
      const args = [BIN, 'put', f, '--agent', `http://127.0.0.1:${SENDER_API}`, '--json']
      const r = await host.run(process.execPath, args, 300000)
      const oid = r.code === 0 ? (JSON.parse(r.stdout) as { oid?: string }).oid : undefined
      if (oid === undefined) throw new Error(`put into the sender failed: \`${args.join(' ')}\` exit ${r.code}: ${r.stderr.trim().slice(-500)}`)
      oids.push(oid)
    }
    // The mirror: the object and its manifest, as the sender's peer API gives it.
    const www = join(tmp, 'www')
    await mkdir(www, { recursive: true })
    await copyFile(data, join(www, 'obj'))
    const m = await host.run('curl', ['-s', '--fail', '-o', join(www, 'obj.manifest'), `http://127.0.0.1:${SENDER_PEER}/v1/objects/${oids[0]}/manifest`])
    if (m.code !== 0) throw new Error(`fetching the manifest from the sender failed: curl exit ${m.code} ${m.stderr}`)
    const ng = join(tmp, 'nginx')
    await mkdir(ng, { recursive: true })
    await writeFile(join(ng, 'nginx.conf'), nginxConfig(ng, www, MIRROR_PORT))
    const nginx = start(...host.wrap('nginx', nginxArgs(ng)))
    const dead = (): string | undefined => nginx.child.exitCode !== null ? nginx.stderr().trim().slice(-500) : undefined
    for (const a of host.addrs) await waitForTcp(a, MIRROR_PORT, 'nginx (in the namespace)', dead)
    for (const a of host.addrs) await waitForTcp(a, SENDER_PEER, 'sender agent peer API')
    const hex = createHash('sha256').update(readFileSync(data)).digest('hex')
    return {
      host,
      sender,
      nginx,
      oid: oids[0],
      slowOid: oids[1],
      hex,
      mirrorUrls: [`http://${host.addrs[0]}/obj`, `http://${host.addrs[1]}/obj`],
      berthHints: [`berth://${host.addrs[0]}:${SENDER_PEER}`, `berth://${host.addrs[1]}:${SENDER_PEER}`]
    }
  } catch (err) {
    await host.destroy()
    throw err
  }
}

// ── the timed commands ─────────────────────────────────────────────────────────────────────

function linkBytes (host: TwoLinkHost): [number, number] { return [host.bytesFromNs(0), host.bytesFromNs(1)] }
function delta (a: [number, number], b: [number, number]): [number, number] { return [b[0] - a[0], b[1] - a[1]] }

async function berthGet (w: World, recv: Receiver, oid: string, hints: readonly string[], timeoutMs: number): Promise<Timed> {
  try {
    await recv.fresh()
  } catch (err) {
    await recv.stop()
    return { ms: NaN, ok: false, error: (err as Error).message }
  }
  // The get as an application asks it of its agent (the local API), timed by curl like aria2c
  // times itself: a Node CLI's start-up (~0.2 s) is not part of the transfer.
  const query = hints.map(h => `hint=${encodeURIComponent(h)}`).join('&')
  const args = ['-s', '--fail-with-body', '-o', '/dev/null', `${recv.url}/v1/objects/${oid}?${query}`]
  const nul = devNull()
  try {
    const before = linkBytes(w.host)
    const r = await run('curl', args, { out: nul.fd, timeoutMs })
    const perLink = delta(before, linkBytes(w.host))
    if (r.code !== 0 || r.timedOut) {
      return { ms: r.ms, ok: false, perLink, error: describeFailure('curl', args, r) + ` — receiving agent: ${recv.stderr().trim().split('\n').slice(-4).join(' | ').slice(-600)}` }
    }
    return { ms: r.ms, ok: true, perLink }
  } finally {
    nul.close()
    await recv.stop()
  }
}

async function aria2 (w: World, tmp: string, timeoutMs: number): Promise<Timed> {
  const dir = join(tmp, 'aria2')
  await rm(dir, { recursive: true, force: true })
  await mkdir(dir, { recursive: true })
  const args = ['-s2', '-x2', '-k1M', '--piece-length=1M', '--file-allocation=none', '--allow-overwrite=true', '--auto-file-renaming=false',
    `--checksum=sha-256=${w.hex}`, '--console-log-level=warn', '--summary-interval=0', '--download-result=hide', '--no-conf=true',
    '-d', dir, '-o', 'obj', ...w.mirrorUrls]
  const before = linkBytes(w.host)
  const r = await run('aria2c', args, { timeoutMs })
  const perLink = delta(before, linkBytes(w.host))
  await rm(dir, { recursive: true, force: true })
  if (r.code !== 0 || r.timedOut) return { ms: r.ms, ok: false, perLink, error: describeFailure('aria2c', args, r) + ` ${r.stdout.trim().slice(-300)}` }
  return { ms: r.ms, ok: true, perLink }
}

/** One TCP connection's goodput over link i: curl ← nginx in the namespace, `bytes` of the object. */
async function goodput (w: World, i: number, bytes: number): Promise<{ bytes: number, ms: number, mbit: number }> {
  const args = ['-s', '--fail', '-o', '/dev/null', '-r', `0-${bytes - 1}`, '-w', '%{size_download} %{time_total}', w.mirrorUrls[i]]
  const r = await run('curl', args, { timeoutMs: 120000 })
  const [n, t] = r.stdout.trim().split(' ').map(Number)
  if (r.code !== 0 || n !== bytes) throw new Error(`goodput probe failed: ${describeFailure('curl', args, r)} (${r.stdout.trim()})`)
  return { bytes: n, ms: t * 1000, mbit: mbit(n, t * 1000) }
}

/** Bytes worth ~3 s at this rate (at least 256 KiB, at most the object). */
function probeBytes (rate: string): number {
  return Math.min(SIZE, Math.max(256 * 1024, Math.round(rateBits(rate) / 8 * 3 / 65536) * 65536))
}

async function setRates (w: World, rates: [string, string], log: Log): Promise<void> {
  await w.host.setRate(0, rates[0])
  await w.host.setRate(1, rates[1])
  log(`links now ${rates[0]} + ${rates[1]} (tbf ${w.host.shaping.map(s => `burst ${s.burst} latency ${s.latency}`).join(', ')})`)
}

/** Goodput of each link at its current rate (bytes/s). */
async function measureLinks (w: World, rates: [string, string], log: Log): Promise<[number, number]> {
  const out: number[] = []
  for (const i of [0, 1]) {
    const g = await goodput(w, i, probeBytes(rates[i]))
    log(`  link ${i} (${rates[i]}): one connection ${g.mbit.toFixed(2)} mbit/s (${fmtBytes(g.bytes)} in ${fmtSeconds(g.ms)})`)
    out.push(g.bytes / (g.ms / 1000))
  }
  return [out[0], out[1]]
}

// ── the section ────────────────────────────────────────────────────────────────────────────

function split (t: Timed): string {
  if (t.perLink === undefined) return ''
  const total = t.perLink[0] + t.perLink[1]
  return total > 0 ? `link 0 ${fmtMiB(t.perLink[0])} / link 1 ${fmtMiB(t.perLink[1])} (Σ ${fmtMiB(total)})` : ''
}
function okMs (ts: Timed[]): number { return median(ts.filter(t => t.ok).map(t => t.ms)) }
function medianRun (ts: Timed[]): Timed | undefined {
  const good = ts.filter(t => t.ok).sort((a, b) => a.ms - b.ms)
  return good[(good.length - 1) >> 1]
}
function figure (ts: Timed[], bytes: number): string {
  const m = medianRun(ts)
  if (m === undefined) return 'failed'
  const n = ts.length > 1 ? ` (median of ${ts.length}: ${ts.map(t => t.ok ? (t.ms / 1000).toFixed(2) : '✗').join(', ')} s)` : ''
  return `${fmtSeconds(m.ms)}, ${fmtMbit(bytes, m.ms)}${n}; ${split(m)}`
}
function firstError (...series: Timed[][]): string | undefined {
  for (const s of series) { const e = s.find(t => !t.ok)?.error; if (e !== undefined) return e }
  return undefined
}
function complete (...series: Timed[][]): boolean { return series.every(s => s.length > 0 && s.every(t => t.ok)) }
function raw (ts: Timed[]): unknown { return ts.map(t => ({ ms: t.ok ? Math.round(t.ms) : null, perLink: t.perLink, error: t.error })) }

export interface MultipathResult { rows: Row[], json: Record<string, unknown> }

export async function multipathSection (log: Log, tmp: string): Promise<MultipathResult> {
  const rows: Row[] = []
  const json: Record<string, unknown> = { date: new Date().toISOString(), size: SIZE, slowSize: SLOW_SIZE, repeat: REPEAT, tbf: Object.fromEntries(['100mbit', '50mbit', '20mbit', '10mbit', '5mbit', '1mbit'].map(r => [r, tbfFor(r)])) }
  const reason = await netnsUnavailable()
  if (reason !== undefined) {
    log(`SKIPPED LOUDLY: multipath section: ${reason}`)
    return { rows: [{ id: 'mp', measure: 'multipath over two shaped links (network namespace)', berth: 'skipped', anchor: '', ratio: '', target: '', verdict: 'skipped', note: `SKIPPED LOUDLY: ${reason}` }], json: { skipped: reason } }
  }
  const missing = await ensurePrograms([{ prog: 'nginx', pkg: 'nginx-light' }, { prog: 'curl', pkg: 'curl' }, { prog: 'aria2c', pkg: 'aria2' }], log)
  if (missing.some(m => !m.startsWith('aria2c'))) throw new Error(missing.join('; '))
  const aria2Missing = missing.find(m => m.startsWith('aria2c'))

  const data = join(ROOT, 'bench', 'out', 'data', `random-${SIZE}.bin`)
  const slowData = join(ROOT, 'bench', 'out', 'data', `random-${SLOW_SIZE}.bin`)
  await ensureRandomFile(data, SIZE, log)
  await ensureRandomFile(slowData, SLOW_SIZE, log)
  const dir = join(tmp, 'multipath')
  await mkdir(dir, { recursive: true })
  await copyFile(data, join(dir, 'obj.bin'))
  await copyFile(slowData, join(dir, 'slow.bin'))

  const w = await setUp(log, dir, join(dir, 'obj.bin'), join(dir, 'slow.bin'))
  const recv = new Receiver(join(dir, 'recv'))
  const recvNoBorrow = new Receiver(join(dir, 'recv-noborrow'), { plugins: [{ type: 'multipath', borrow: false, paths: [{ type: 'peer' }, { type: 'http' }] }] })
  const goodputs: Record<string, number[]> = {}
  json.goodputMbit = goodputs
  const addGoodput = (rates: [string, string], g: [number, number]): void => {
    for (const i of [0, 1]) (goodputs[rates[i]] ??= []).push(Math.round(g[i] * 8 / 1e3) / 1000)
  }
  try {
    log(`sender agent in ${w.host.ns}: ${w.berthHints.join(', ')}; mirrors ${w.mirrorUrls.join(', ')}; object ${w.oid} (${fmtBytes(SIZE)}), ${w.slowOid} (${fmtBytes(SLOW_SIZE)})`)

    // ── (a) 100 + 100 mbit ──
    const rA: [string, string] = ['100mbit', '100mbit']
    await setRates(w, rA, log)
    const gA = await measureLinks(w, rA, log)
    addGoodput(rA, gA)
    const idealA = SIZE / (gA[0] + gA[1]) * 1000
    const idealA1 = SIZE / gA[0] * 1000
    const single: Timed[] = []
    const multi: Timed[] = []
    for (let i = 0; i < REPEAT; i++) {
      log(`(a) repetition ${i + 1}/${REPEAT}`)
      multi.push(await berthGet(w, recv, w.oid, w.berthHints, 60000 + 3 * idealA1))
      log(`  berth get, two hints: ${multi[i].ok ? `${fmtSeconds(multi[i].ms)} (${split(multi[i])})` : multi[i].error}`)
      single.push(await berthGet(w, recv, w.oid, [w.berthHints[0]], 60000 + 3 * idealA1))
      log(`  berth get, one hint: ${single[i].ok ? `${fmtSeconds(single[i].ms)} (${split(single[i])})` : single[i].error}`)
    }
    const ratioA = okMs(multi) / idealA
    rows.push({
      id: 'mp-equal',
      measure: `multipath get ${fmtBytes(SIZE)} over 100 + 100 mbit (two berth:// hints, one sender)`,
      berth: figure(multi, SIZE),
      anchor: `ideal ${fmtBytes(SIZE)} ÷ (${(gA[0] * 8 / 1e6).toFixed(1)} + ${(gA[1] * 8 / 1e6).toFixed(1)} mbit/s measured) = ${fmtSeconds(idealA)}` +
        (Number.isFinite(okMs(single)) ? ` (+ what the one-link get takes over its ideal, ${fmtSeconds(okMs(single) - idealA1)}: ${fmtSeconds(idealA + okMs(single) - idealA1)})` : ''),
      ratio: Number.isFinite(ratioA) ? `${ratioA.toFixed(2)}×` : '',
      target: '≤ 1.11× ideal (≥ 90% of the sum)',
      verdict: !complete(multi) ? 'error' : ratioA <= 1 / 0.9 ? 'pass' : 'fail',
      data: { idealMs: idealA, goodputBytesPerSec: gA, runs: raw(multi) },
      note: firstError(multi)
    })
    const ratioA1 = okMs(single) / idealA1
    rows.push({
      id: 'mp-equal-single',
      measure: `context: the same get over one 100 mbit link (one hint)`,
      berth: figure(single, SIZE),
      anchor: `ideal ${fmtBytes(SIZE)} ÷ ${(gA[0] * 8 / 1e6).toFixed(1)} mbit/s = ${fmtSeconds(idealA1)}`,
      ratio: Number.isFinite(ratioA1) ? `${ratioA1.toFixed(2)}×` : '',
      target: '—',
      verdict: complete(single) ? 'info' : 'error',
      data: { idealMs: idealA1, runs: raw(single) },
      note: firstError(single)
    })

    // ── (b) and (c): 10 + 1 mbit, 10 MiB ──
    const rB: [string, string] = ['10mbit', '1mbit']
    await setRates(w, rB, log)
    const gB = await measureLinks(w, rB, log)
    addGoodput(rB, gB)
    const fastAloneIdeal = SLOW_SIZE / gB[0] * 1000
    const idealB = SLOW_SIZE / (gB[0] + gB[1]) * 1000
    const limitB = 120000 + 4 * fastAloneIdeal
    const mB: Timed[] = []
    const fB: Timed[] = []
    for (let i = 0; i < REPEAT; i++) {
      // Alternate who goes first, so neither always runs on a colder box.
      for (const who of i % 2 === 0 ? ['multi', 'fast'] : ['fast', 'multi']) {
        if (who === 'multi') {
          log(`(b) multipath, 10 + 1 mbit, repetition ${i + 1}/${REPEAT}`)
          const t = await berthGet(w, recv, w.slowOid, w.berthHints, limitB)
          mB.push(t)
          log(`  berth get, two hints: ${t.ok ? `${fmtSeconds(t.ms)} (${split(t)})` : t.error}`)
        } else {
          log(`(b) the fast link alone, repetition ${i + 1}/${REPEAT}`)
          const t = await berthGet(w, recv, w.slowOid, [w.berthHints[0]], limitB)
          fB.push(t)
          log(`  berth get, one hint: ${t.ok ? `${fmtSeconds(t.ms)} (${split(t)})` : t.error}`)
        }
      }
    }
    log('(c) multipath without borrowing, 10 + 1 mbit')
    const nB = [await berthGet(w, recvNoBorrow, w.slowOid, w.berthHints, limitB)]
    log(`  berth get, two hints, borrow off: ${nB[0].ok ? `${fmtSeconds(nB[0].ms)} (${split(nB[0])})` : nB[0].error}`)
    const ratioB = okMs(mB) / okMs(fB)
    rows.push({
      id: 'mp-unequal',
      measure: `multipath get ${fmtBytes(SLOW_SIZE)} (scaled from 40 MiB: time) over 10 + 1 mbit vs the fast link alone`,
      berth: `${figure(mB, SLOW_SIZE)}; ideal ${fmtSeconds(idealB)}`,
      anchor: `Berth, one hint (10 mbit link) ${figure(fB, SLOW_SIZE)}`,
      ratio: Number.isFinite(ratioB) ? `${ratioB.toFixed(2)}×` : '',
      target: '≤ 1.00× (not slower)',
      verdict: !complete(mB, fB) ? 'error' : ratioB <= 1 ? 'pass' : 'fail',
      data: { idealMs: idealB, fastAloneIdealMs: fastAloneIdeal, goodputBytesPerSec: gB, multipath: raw(mB), fastAlone: raw(fB) },
      note: firstError(mB, fB)
    })
    const ratioC = okMs(nB) / okMs(mB)
    rows.push({
      id: 'mp-noborrow',
      measure: `context: the 10 + 1 mbit multipath get (${fmtBytes(SLOW_SIZE)}) with request borrowing off (config \`plugins\`: multipath borrow:false)`,
      berth: figure(nB, SLOW_SIZE),
      anchor: `with borrowing ${okMs(mB) > 0 ? fmtSeconds(okMs(mB)) : 'failed'}`,
      ratio: Number.isFinite(ratioC) ? `${ratioC.toFixed(2)}×` : '',
      target: '— (shows what borrowing buys)',
      verdict: complete(nB) ? 'info' : 'error',
      data: { runs: raw(nB), inProcessFallback: recvNoBorrow.fallback },
      note: [firstError(nB), recvNoBorrow.fallback].filter(x => x !== undefined).join('; ') || undefined
    })

    // ── (d) two HTTP mirrors, Berth vs aria2c ──
    for (const rD of [['50mbit', '50mbit'], ['20mbit', '5mbit']] as Array<[string, string]>) {
      await setRates(w, rD, log)
      const gD = await measureLinks(w, rD, log)
      addGoodput(rD, gD)
      const idealD = SIZE / (gD[0] + gD[1]) * 1000
      const limitD = 60000 + 4 * SIZE / Math.max(gD[0], gD[1]) * 1000
      const reps = rD[0] === rD[1] ? REPEAT : 1
      const b: Timed[] = []
      const a: Timed[] = []
      for (let i = 0; i < reps; i++) {
        log(`(d) mirrors ${rD.join(' + ')}, repetition ${i + 1}/${reps}`)
        // Alternate who goes first, so neither always runs on a colder box.
        const order = i % 2 === 0 ? ['berth', 'aria2c'] : ['aria2c', 'berth']
        for (const who of order) {
          if (who === 'berth') {
            b.push(await berthGet(w, recv, w.oid, w.mirrorUrls, limitD))
            const t = b[b.length - 1]
            log(`  berth get, two http:// hints: ${t.ok ? `${fmtSeconds(t.ms)} (${split(t)})` : t.error}`)
          } else if (aria2Missing === undefined) {
            a.push(await aria2(w, dir, limitD))
            const t = a[a.length - 1]
            log(`  aria2c: ${t.ok ? `${fmtSeconds(t.ms)} (${split(t)})` : t.error}`)
          } else {
            a.push({ ms: NaN, ok: false, error: aria2Missing })
          }
        }
      }
      const ratio = okMs(b) / okMs(a)
      rows.push({
        id: `mp-mirrors-${rD.join('-')}`,
        measure: `get ${fmtBytes(SIZE)} from two HTTP mirrors (nginx), ${rD.join(' + ')}, vs aria2c on the same two URLs`,
        berth: `${figure(b, SIZE)}; ideal ${fmtSeconds(idealD)}`,
        anchor: `aria2c -s2 -x2 -k1M --checksum ${figure(a, SIZE)}`,
        ratio: Number.isFinite(ratio) ? `${ratio.toFixed(2)}×` : '',
        target: '— (Berth ÷ aria2c)',
        verdict: complete(b, a) ? 'info' : 'error',
        data: { idealMs: idealD, goodputBytesPerSec: gD, berth: raw(b), aria2c: raw(a) },
        note: firstError(b, a)
      })
    }
  } finally {
    await recv.stop()
    await recvNoBorrow.stop()
    await stop(w.nginx, 3000)
    await stop(w.sender, 10000)
    await w.host.destroy()
  }
  const good = Object.entries(goodputs).map(([r, g]) => `${r}: ${g.map(x => x.toFixed(2)).join(' / ')} mbit/s (${(100 * median(g) * 1e6 / rateBits(r)).toFixed(1)}%)`).join('; ')
  rows.unshift({
    id: 'mp-goodput',
    measure: 'context: one TCP connection per link (curl ← nginx in the namespace), goodput per nominal rate',
    berth: '—',
    anchor: good,
    ratio: '',
    target: '—',
    verdict: 'info'
  })
  return { rows, json: { ...json, rows } }
}

/** For run.ts: the section's rows, skipped or errored rows included (never throws). */
export async function multipathRows (log: Log, tmp: string, json?: Record<string, unknown>): Promise<Row[]> {
  if (!MULTIPATH_ENABLED) return [{ id: 'mp', measure: 'multipath over two shaped links', berth: 'skipped', anchor: '', ratio: '', target: '', verdict: 'skipped', note: 'BERTH_BENCH_MULTIPATH=0' }]
  try {
    const r = await multipathSection(log, tmp)
    if (json !== undefined) json.multipath = r.json
    return r.rows
  } catch (err) {
    const why = err instanceof NetnsUnavailableError ? `SKIPPED LOUDLY: ${err.reason}` : (err as Error).message
    log(`multipath section failed: ${why}`)
    return [{ id: 'mp', measure: 'multipath over two shaped links', berth: 'failed', anchor: '', ratio: '', target: '', verdict: err instanceof NetnsUnavailableError ? 'skipped' : 'error', note: why }]
  }
}

// ── calibration: goodput per nominal rate ─────────────────────────────────────────────────

async function calibrate (log: Log, tmp: string): Promise<void> {
  const data = join(ROOT, 'bench', 'out', 'data', `random-${SIZE}.bin`)
  const slowData = join(ROOT, 'bench', 'out', 'data', `random-${SLOW_SIZE}.bin`)
  await ensureRandomFile(data, SIZE, log)
  await ensureRandomFile(slowData, SLOW_SIZE, log)
  const w = await setUp(log, tmp, data, slowData)
  try {
    const lines = ['nominal    goodput      of nominal   (bytes, time)']
    for (const rate of ['100mbit', '50mbit', '40mbit', '20mbit', '10mbit', '5mbit', '2mbit', '1mbit']) {
      await w.host.setRate(0, rate)
      const gs = []
      for (let i = 0; i < 3; i++) gs.push(await goodput(w, 0, probeBytes(rate)))
      const g = gs.sort((x, y) => x.mbit - y.mbit)[1]
      const line = `${rate.padEnd(10)} ${g.mbit.toFixed(2).padStart(7)} mbit ${(100 * g.mbit * 1e6 / rateBits(rate)).toFixed(1).padStart(6)} %     ${fmtBytes(g.bytes)} in ${fmtSeconds(g.ms)} (3 runs: ${gs.map(x => x.mbit.toFixed(2)).join(', ')}; tbf burst ${tbfFor(rate).burst} latency ${tbfFor(rate).latency})`
      log(line)
      lines.push(line)
    }
    process.stdout.write(lines.join('\n') + '\n')
  } finally {
    await stop(w.nginx, 3000)
    await stop(w.sender, 10000)
    await w.host.destroy()
  }
}

if (process.argv[1] === SELF) {
  const t0 = performance.now()
  const log: Log = s => { process.stderr.write(`[multipath ${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${s}\n`) }
  const tmp = mkdtempSync(join(tmpdir(), 'berth-mp-'))
  installCleanup(() => { rmSync(tmp, { recursive: true, force: true }) })
  try {
    if (process.argv[2] === 'calibrate') {
      await calibrate(log, tmp)
    } else {
      const m = machine()
      log(`machine: ${machineLine(m)}`)
      const json: Record<string, unknown> = { machine: m }
      const rows = await multipathRows(log, tmp, json)
      const totalMs = performance.now() - t0
      json.totalMs = totalMs
      await mkdir(join(ROOT, 'bench', 'out'), { recursive: true })
      await writeFile(join(ROOT, 'bench', 'out', 'multipath.json'), JSON.stringify(json, null, 2) + '\n')
      const out = ['', `Berth multipath benchmark — ${machineLine(m)}`, `objects ${fmtBytes(SIZE)} (and ${fmtBytes(SLOW_SIZE)} at 10 + 1 mbit), pseudo-random; MB = 10^6 B, mbit = 10^6 bit`, '', markdownTable(rows), '']
      const n = notes(rows)
      if (n.length > 0) out.push('Notes:', ...n, '')
      out.push(`took ${fmtSeconds(totalMs)}; load average at the end ${loadavg().map(l => l.toFixed(2)).join(' / ')}; JSON in bench/out/multipath.json`, '')
      process.stdout.write(out.join('\n'))
      if (rows.some(r => r.verdict === 'error')) process.exitCode = 1
    }
  } catch (err) {
    log(`FAILED: ${(err as Error).stack ?? String(err)}`)
    process.exitCode = 1
  } finally {
    killAll('SIGKILL')
    rmSync(tmp, { recursive: true, force: true })
  }
}
