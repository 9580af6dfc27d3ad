/**
 * The locker server in `npm run bench` (acceptance points of the locker-server issue):
 *
 *  (a) BERTH_BENCH_LOCKER_N (2,000) concurrent GETs of a 1 MiB object from a locker, one
 *      connection each, from one undici client process: all must complete without error
 *      (count ok/failed, wall time, aggregate MB/s, p50/p99 latency). The same client fetches the
 *      same bytes from nginx as well (context: what the loopback and the client manage).
 *  (b) aggregate throughput of large GETs: BERTH_BENCH_LOCKER_CLIENTS (4) curl processes at once,
 *      each GETting the bench's data file (BERTH_BENCH_SIZE, 1 GiB) to /dev/null, for
 *      BERTH_BENCH_LOCKER_ROUNDS (3) rounds, from the locker server and from nginx (sendfile)
 *      serving the same file, rounds interleaved; target: Berth's MB/s ≥ 0.70 × nginx's.
 *
 * The locker server is a separate process started through the CLI
 * (`node bin/berth.js locker serve --listen 127.0.0.1:P --store DIR --admin-key FILE`); the locker
 * is made with `berth locker create`, the access token (read,write, all objects) with
 * `berth token issue`, and both objects are PUT with `curl -T` (the server checks them against
 * their OIDs). nginx is a second instance of the bench's nginx with room for the 2,000 connections.
 *
 * Standalone (only this section): `node --import tsx bench/locker.ts` — prints its own table and
 * writes bench/out/locker.json. run.ts imports `lockerSection` and adds its rows to the main table.
 * Internal: `node --import tsx bench/locker.ts fetch-many URL N SIZE SHA256HEX` is the client of (a).
 *
 * Env: BERTH_BENCH_LOCKER (1; 0 skips), BERTH_BENCH_LOCKER_N (2000), BERTH_BENCH_LOCKER_CLIENTS (4),
 *      BERTH_BENCH_LOCKER_ROUNDS (3), BERTH_BENCH_LOCKER_PROF (a directory: the server runs with
 *      --cpu-prof and writes its profiles there), BERTH_BENCH_SIZE (1GiB, standalone: the big object).
 */
import { createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { mkdir, writeFile } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { basename, dirname, join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { startNginx, opensslDgst, type Nginx } from './lib/anchors.ts'
import { LockerProc, oidFromDigestHex, ROOT } from './lib/berth.ts'
import { ensureRandomFile, fmtBytes, parseSize, warm } from './lib/data.ts'
import { describeFailure, installCleanup, killAll, median, run, runPipe } from './lib/proc.ts'
import { fmtMB, fmtSeconds, machine, machineLine, markdownTable, notes, type Row } from './lib/report.ts'
import { cpuSeconds, RssSampler } from './lib/rss.ts'

const SELF = fileURLToPath(import.meta.url)
const SMALL = 1024 * 1024

function envInt (name: string, dflt: number): number {
  const n = Number.parseInt(process.env[name] ?? '', 10)
  return Number.isFinite(n) && n > 0 ? n : dflt
}

/** Is the section on (BERTH_BENCH_LOCKER=0 skips it)? */
export const LOCKER_ENABLED = process.env.BERTH_BENCH_LOCKER !== '0'

export interface LockerConfig { n: number, clients: number, rounds: number, prof?: string }
export function lockerConfig (): LockerConfig {
  return {
    n: envInt('BERTH_BENCH_LOCKER_N', 2000),
    clients: envInt('BERTH_BENCH_LOCKER_CLIENTS', 4),
    rounds: envInt('BERTH_BENCH_LOCKER_ROUNDS', 3),
    prof: process.env.BERTH_BENCH_LOCKER_PROF !== undefined && process.env.BERTH_BENCH_LOCKER_PROF !== '' ? process.env.BERTH_BENCH_LOCKER_PROF : undefined
  }
}

export interface LockerInput {
  log: (s: string) => void
  /** scratch directory (the server's store and nginx's config go under it) */
  tmp: string
  /** the big object: the bench's data file, in the page cache already */
  data: string
  /** its sha-256 (hex) */
  dataHex: string
  size: number
}

const MANY_ID = 'locker-get-many'
const LARGE_ID = 'locker-get-large'

/** The section's rows when it does not run (skipped, or Berth not runnable). */
export function lockerRows (verdict: 'skipped' | 'error', why: string, c = lockerConfig(), size?: number): Row[] {
  const row = (id: string, measure: string, target: string): Row => ({ id, measure, berth: verdict === 'skipped' ? 'skipped' : 'failed', anchor: '', ratio: '', target, verdict, note: why })
  return [
    row(MANY_ID, `locker: ${c.n} concurrent GETs of a 1 MiB object`, `all ${c.n} complete, none fails`),
    row(LARGE_ID, `locker: ${c.clients} concurrent large GETs${size !== undefined ? ` of ${fmtBytes(size)}` : ''}, aggregate MB/s`, '≥ 0.70 of nginx')
  ]
}

// ── the client of (a): a separate process ──────────────────────────────────────────────────────

interface ManyResult {
  n: number, ok: number, failed: number, wallMs: number, bytes: number
  p50: number, p90: number, p99: number, max: number
  /** responses whose sha-256 was checked (every 100th), and how many of those were wrong */
  hashed: number, badHash: number
  /** the client's own CPU time (user + sys), seconds */
  clientCpu: number
  errors: Record<string, number>
}

function percentile (sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p / 100 * sorted.length) - 1))]
}

/**
 * N GETs of `url` started at once, one connection each (undici Pool, no pipelining); every body
 * read to the end and its length checked; every 100th body hashed and checked. Latency: request
 * sent → last byte received. Prints one JSON line. A short warm-up (its own pool) comes first.
 */
async function fetchMany (url: string, n: number, size: number, hex: string): Promise<void> {
  const { Pool } = await import('undici')
  const u = new URL(url)
  const path = u.pathname + u.search
  const headers: Record<string, string> = {}
  if (process.env.BERTH_BENCH_AUTH !== undefined) headers.authorization = process.env.BERTH_BENCH_AUTH
  const errors: Record<string, number> = {}
  let hashed = 0
  let badHash = 0
  const opts = { connect: { timeout: 120000 }, headersTimeout: 300000, bodyTimeout: 300000, pipelining: 1 }
  async function one (pool: InstanceType<typeof Pool>, hash: boolean): Promise<{ ok: boolean, ms: number, bytes: number }> {
    const t0 = performance.now()
    let bytes = 0
    try {
      const res = await pool.request({ path, method: 'GET', headers })
      if (res.statusCode !== 200) {
        const text = (await res.body.text()).slice(0, 200)
        throw new Error(`HTTP ${res.statusCode}: ${text}`)
      }
      const h = hash ? createHash('sha256') : undefined
      for await (const c of res.body) { bytes += (c as Buffer).byteLength; h?.update(c as Buffer) }
      if (bytes !== size) throw new Error(`short body: ${bytes} of ${size} bytes`)
      if (h !== undefined) {
        hashed++
        if (h.digest('hex') !== hex) { badHash++; throw new Error('body does not hash to the object\'s sha-256') }
      }
      return { ok: true, ms: performance.now() - t0, bytes }
    } catch (err) {
      const e = err as Error & { code?: string }
      const key = `${e.code ?? e.name}: ${e.message}`.slice(0, 200)
      errors[key] = (errors[key] ?? 0) + 1
      return { ok: false, ms: performance.now() - t0, bytes }
    }
  }
  // Warm-up: the server's code paths compiled before the timed burst (not counted).
  const warmPool = new Pool(u.origin, { ...opts, connections: 16 })
  await Promise.all(Array.from({ length: Math.min(64, n) }, async () => await one(warmPool, false)))
  await warmPool.close()
  for (const k of Object.keys(errors)) delete errors[k]
  hashed = 0

  const pool = new Pool(u.origin, { ...opts, connections: n })
  const cpu0 = process.cpuUsage()
  const t0 = performance.now()
  const results = await Promise.all(Array.from({ length: n }, async (_, i) => await one(pool, i % 100 === 0)))
  const wallMs = performance.now() - t0
  const cpu = process.cpuUsage(cpu0)
  await pool.close()
  const okMs = results.filter(r => r.ok).map(r => r.ms).sort((a, b) => a - b)
  const out: ManyResult = {
    n,
    ok: okMs.length,
    failed: n - okMs.length,
    wallMs,
    bytes: results.reduce((s, r) => s + r.bytes, 0),
    p50: percentile(okMs, 50),
    p90: percentile(okMs, 90),
    p99: percentile(okMs, 99),
    max: okMs[okMs.length - 1] ?? NaN,
    hashed,
    badHash,
    clientCpu: (cpu.user + cpu.system) / 1e6,
    errors
  }
  process.stdout.write(JSON.stringify(out) + '\n')
}

async function runMany (url: string, n: number, hex: string, auth?: string): Promise<ManyResult | { error: string }> {
  const args = ['--import', 'tsx', SELF, 'fetch-many', url, String(n), String(SMALL), hex]
  const r = await run(process.execPath, args, { cwd: ROOT, timeoutMs: 600000, env: { ...process.env, ...(auth !== undefined ? { BERTH_BENCH_AUTH: auth } : {}) } })
  try {
    if (r.code === 0) return JSON.parse(r.stdout.trim().split('\n').pop() ?? '') as ManyResult
  } catch {}
  return { error: describeFailure('node', ['bench/locker.ts', 'fetch-many', url, String(n)], r) }
}

// ── (b): C curl processes at once ───────────────────────────────────────────────────────────────

interface Round { ms: number, ok: boolean, error?: string, each: number[] }

/** One round: `clients` × `curl -s --fail -o /dev/null URL` started together; wall time of all. */
async function curlRound (url: string, clients: number, size: number, headerFile?: string): Promise<Round> {
  const args = ['-s', '--fail', '-o', '/dev/null', '-w', '%{size_download} %{time_total}', ...(headerFile !== undefined ? ['-H', `@${headerFile}`] : []), url]
  const t0 = performance.now()
  const rs = await Promise.all(Array.from({ length: clients }, async () => await run('curl', args, { timeoutMs: 600000 })))
  const ms = performance.now() - t0
  const bad = rs.find(r => r.code !== 0 || Number(r.stdout.trim().split(' ')[0]) !== size)
  const each = rs.map(r => Number(r.stdout.trim().split(' ')[1]) * 1000)
  if (bad !== undefined) return { ms, ok: false, error: bad.code !== 0 ? describeFailure('curl', args, bad) : `curl got ${bad.stdout.trim().split(' ')[0]} of ${size} bytes`, each }
  return { ms, ok: true, each }
}

// ── the section ─────────────────────────────────────────────────────────────────────────────────

function mbps (bytes: number, ms: number): number { return bytes / 1e6 / (ms / 1000) }
function fmtMs (ms: number): string { return Number.isFinite(ms) ? (ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(0)} ms`) : '—' }
function manyText (r: ManyResult): string {
  return `${r.ok} ok / ${r.failed} failed, ${fmtSeconds(r.wallMs)} wall, ${mbps(r.ok * SMALL, r.wallMs).toFixed(0)} MB/s, latency p50 ${fmtMs(r.p50)}, p99 ${fmtMs(r.p99)}`
}
function errText (r: ManyResult): string {
  return Object.entries(r.errors).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([e, k]) => `${k}× ${e}`).join('; ')
}

export async function lockerSection (input: LockerInput, c: LockerConfig = lockerConfig()): Promise<{ rows: Row[], json: Record<string, unknown> }> {
  const { log, tmp, data, dataHex, size } = input
  const t0 = performance.now()
  const json: Record<string, unknown> = { config: { ...c, size, small: SMALL } }
  const rows: Row[] = []
  const dir = join(tmp, 'locker')
  await mkdir(dir, { recursive: true })

  // The 1 MiB object, next to the data file (so one nginx serves both).
  const small = join(dirname(data), `random-${SMALL}.bin`)
  await ensureRandomFile(small, SMALL, log)
  await warm(small)
  const smallRef = await opensslDgst(small)
  if (!smallRef.ok || smallRef.hex === undefined) throw new Error(`cannot hash ${small}: ${smallRef.error}`)
  const smallHex = smallRef.hex

  let nginx: Nginx | undefined
  let nginxError: string | undefined
  try { nginx = await startNginx(data, join(dir, 'nginx'), { workerConnections: Math.max(64, c.n + 256) }) } catch (err) { nginxError = (err as Error).message; log(`locker: nginx failed: ${nginxError}`) }
  const nginxUrl = (file: string): string => `http://127.0.0.1:${nginx!.port}/${encodeURIComponent(basename(file))}`

  const nodeArgs = c.prof !== undefined ? ['--cpu-prof', '--cpu-prof-dir', c.prof] : []
  if (c.prof !== undefined) await mkdir(c.prof, { recursive: true })
  const server = new LockerProc(join(dir, 'server'), nodeArgs)
  try {
    await server.start()
    log(`locker server on ${server.url} (pid ${server.pid})${c.prof !== undefined ? `, CPU profiles to ${c.prof}` : ''}`)
    const quota = `${Math.ceil((size + 2 * SMALL) / 2 ** 30) + 1}g`
    const ownerKey = await server.createLocker('bench', quota)
    const token = await server.issueToken('bench', ownerKey, 'read,write')
    const auth = `Bearer ${token}`
    const headerFile = join(dir, 'auth-header')
    await writeFile(headerFile, `Authorization: ${auth}\n`, { mode: 0o600 })
    const bigOid = await oidFromDigestHex(dataHex)
    const smallOid = await oidFromDigestHex(smallHex)
    const objectUrl = (oid: string): string => `${server.url}/v1/lockers/bench/objects/${oid}`

    // PUT both objects (the server refuses bytes that do not hash to the OID in the URL).
    const puts: Record<string, number> = {}
    for (const [file, oid, bytes] of [[small, smallOid, SMALL], [data, bigOid, size]] as const) {
      const args = ['-s', '--fail-with-body', '-T', file, '-H', `@${headerFile}`, '-o', '-', objectUrl(oid)]
      const r = await run('curl', args, { timeoutMs: 600000 })
      let stored: { oid?: string, size?: number } = {}
      try { stored = JSON.parse(r.stdout) as typeof stored } catch {}
      if (r.code !== 0 || stored.oid !== oid || stored.size !== bytes) throw new Error(`PUT ${fmtBytes(bytes)} into the locker: ${describeFailure('curl', args, r)} ${r.stdout.slice(0, 300)} — server: ${server.stderr().trim().slice(-500)}`)
      puts[fmtBytes(bytes)] = r.ms
      log(`locker: PUT ${fmtBytes(bytes)} (curl -T) ${fmtSeconds(r.ms)} (${mbps(bytes, r.ms).toFixed(0)} MB/s)`)
    }
    json.putMs = puts

    // Once, untimed: the locker serves the big object's exact bytes (also warms the server up).
    const check = await runPipe(['curl', ['-s', '--fail', '-H', `@${headerFile}`, objectUrl(bigOid)]], ['openssl', ['dgst', '-sha256', '-r']], { timeoutMs: 600000 })
    const gotHex = check.stdout.trim().split(/\s+/)[0]
    const bigCheck = check.codeA === 0 && gotHex === dataHex ? 'ok' : `curl | openssl dgst: curl exit ${check.codeA}, digest ${gotHex} (expected ${dataHex}) ${check.stderrA.trim().slice(-300)}`
    log(`locker: GET ${fmtBytes(size)} | openssl dgst (untimed check): ${bigCheck}`)
    json.bigCheck = bigCheck

    // ── (a) N concurrent small GETs ──
    log(`locker: ${c.n} concurrent GETs of 1 MiB from the locker server`)
    const rss = new RssSampler(() => ({ server: server.pid })).start()
    const cpuA0 = cpuSeconds(server.pid)
    const many = await runMany(objectUrl(smallOid), c.n, smallHex, auth)
    const cpuA1 = cpuSeconds(server.pid)
    const peak = rss.stop().get('server')
    let manyNginx: ManyResult | { error: string } | undefined
    if (nginx !== undefined) {
      log(`locker: the same ${c.n} GETs from nginx`)
      manyNginx = await runMany(nginxUrl(small), c.n, smallHex)
    }
    json.many = { berth: many, nginx: manyNginx ?? nginxError, serverCpu: cpuA0 !== undefined && cpuA1 !== undefined ? cpuA1 - cpuA0 : undefined, serverPeakRss: peak }
    if ('error' in many) {
      rows.push({ id: MANY_ID, measure: `locker: ${c.n} concurrent GETs of a 1 MiB object`, berth: 'failed', anchor: '', ratio: '', target: `all ${c.n} complete, none fails`, verdict: 'error', note: many.error })
    } else {
      log(`  Berth: ${manyText(many)}${many.failed > 0 ? ` — ${errText(many)}` : ''}`)
      const a = manyNginx !== undefined && !('error' in manyNginx) ? manyNginx : undefined
      if (a !== undefined) log(`  nginx: ${manyText(a)}`)
      const notesMany = [many.failed > 0 ? `Berth: ${errText(many)}` : '', a === undefined ? `nginx: ${manyNginx !== undefined && 'error' in manyNginx ? manyNginx.error : nginxError}` : a.failed > 0 ? `nginx: ${errText(a)}` : ''].filter(s => s !== '')
      rows.push({
        id: MANY_ID,
        measure: `locker: ${c.n} concurrent GETs of a 1 MiB object, one connection each (undici client process)`,
        berth: manyText(many),
        anchor: a !== undefined ? `nginx, same client: ${manyText(a)}` : 'nginx: failed',
        ratio: a !== undefined ? `${(many.wallMs / a.wallMs).toFixed(2)}×` : '',
        target: `all ${c.n} complete, none fails`,
        verdict: many.ok === c.n && many.failed === 0 && many.badHash === 0 ? 'pass' : 'fail',
        data: { berth: many, nginx: a },
        note: notesMany.length > 0 ? notesMany.join('; ') : undefined
      })
      const cpuA = cpuA0 !== undefined && cpuA1 !== undefined ? cpuA1 - cpuA0 : NaN
      rows.push({
        id: 'locker-get-many-server',
        measure: `context: locker server during the ${c.n} GETs (includes the client's warm-up of up to 64 GETs)`,
        berth: `CPU ${cpuA.toFixed(2)} s (user+sys, all threads), peak RSS ${fmtMB(peak ?? NaN)}; client CPU ${many.clientCpu.toFixed(2)} s; ${many.hashed} bodies hashed, ${many.badHash} wrong`,
        anchor: a !== undefined ? `nginx client CPU ${a.clientCpu.toFixed(2)} s` : '—',
        ratio: '',
        target: '—',
        verdict: 'info'
      })
    }

    // ── (b) large GETs: C clients at once, R rounds, interleaved with nginx ──
    const berthRounds: Round[] = []
    const nginxRounds: Round[] = []
    const cpuB: number[] = []
    for (let i = 0; i < c.rounds; i++) {
      const order = i % 2 === 0 ? ['nginx', 'berth'] : ['berth', 'nginx']
      for (const who of order) {
        if (who === 'nginx') {
          if (nginx === undefined) { nginxRounds.push({ ms: NaN, ok: false, error: `nginx: ${nginxError}`, each: [] }); continue }
          const r = await curlRound(nginxUrl(data), c.clients, size)
          nginxRounds.push(r)
          log(`locker: round ${i + 1}/${c.rounds} nginx  ${c.clients} × ${fmtBytes(size)}: ${r.ok ? `${fmtSeconds(r.ms)} (${mbps(c.clients * size, r.ms).toFixed(0)} MB/s)` : r.error}`)
        } else {
          const before = cpuSeconds(server.pid)
          const r = await curlRound(objectUrl(bigOid), c.clients, size, headerFile)
          const after = cpuSeconds(server.pid)
          if (before !== undefined && after !== undefined) cpuB.push(after - before)
          berthRounds.push(r)
          log(`locker: round ${i + 1}/${c.rounds} Berth  ${c.clients} × ${fmtBytes(size)}: ${r.ok ? `${fmtSeconds(r.ms)} (${mbps(c.clients * size, r.ms).toFixed(0)} MB/s)` : r.error}`)
        }
      }
    }
    const total = c.clients * size
    const bMs = median(berthRounds.filter(r => r.ok).map(r => r.ms))
    const aMs = median(nginxRounds.filter(r => r.ok).map(r => r.ms))
    const bRate = mbps(total, bMs)
    const aRate = mbps(total, aMs)
    const ratio = bRate / aRate
    const complete = berthRounds.length > 0 && berthRounds.every(r => r.ok) && nginxRounds.every(r => r.ok) && bigCheck === 'ok'
    const rawRounds = (rs: Round[]): unknown => rs.map(r => ({ ms: Math.round(r.ms * 10) / 10, ok: r.ok, eachMs: r.each.map(x => Math.round(x)), error: r.error }))
    json.large = { clients: c.clients, rounds: c.rounds, bytesPerRound: total, berth: rawRounds(berthRounds), nginx: rawRounds(nginxRounds), berthMBps: bRate, nginxMBps: aRate, ratio, serverCpuPerRound: cpuB }
    const why = [berthRounds.find(r => !r.ok)?.error, nginxRounds.find(r => !r.ok)?.error, bigCheck !== 'ok' ? `check: ${bigCheck}` : undefined].filter(s => s !== undefined)
    rows.push({
      id: LARGE_ID,
      measure: `locker: ${c.clients} concurrent GETs of a ${fmtBytes(size)} object (curl → /dev/null), aggregate MB/s, median of ${c.rounds} rounds`,
      berth: Number.isFinite(bRate) ? `${bRate.toFixed(0)} MB/s (${fmtSeconds(bMs)} per round)` : 'failed',
      anchor: Number.isFinite(aRate) ? `nginx (sendfile), same curls: ${aRate.toFixed(0)} MB/s (${fmtSeconds(aMs)} per round)` : 'nginx: failed',
      ratio: Number.isFinite(ratio) ? `${ratio.toFixed(2)} of nginx's MB/s` : '',
      target: '≥ 0.70 of nginx',
      verdict: !complete || !Number.isFinite(ratio) ? 'error' : ratio >= 0.7 ? 'pass' : 'fail',
      data: json.large as Record<string, unknown>,
      note: why.length > 0 ? why.join('; ') : undefined
    })
    const cpuPerGiB = cpuB.length > 0 ? median(cpuB) / (total / 2 ** 30) : NaN
    rows.push({
      id: 'locker-context',
      measure: `context: locker server CPU (user+sys, all threads) per GiB served in the large GETs; PUT via curl -T`,
      berth: `${cpuPerGiB.toFixed(2)} CPU-s per GiB; PUT ${fmtBytes(size)} ${fmtSeconds(puts[fmtBytes(size)])} (${mbps(size, puts[fmtBytes(size)]).toFixed(0)} MB/s)`,
      anchor: '—',
      ratio: '',
      target: '—',
      verdict: 'info'
    })
  } catch (err) {
    const msg = (err as Error).message
    log(`locker section FAILED: ${msg}`)
    for (const r of lockerRows('error', msg, c, size)) if (!rows.some(x => x.id === r.id)) rows.push(r)
    json.error = msg
  } finally {
    await server.stop().catch(() => {})
    await nginx?.stop().catch(() => {})
    rmSync(join(dir, 'server'), { recursive: true, force: true })
  }
  json.ms = performance.now() - t0
  log(`locker section took ${fmtSeconds(performance.now() - t0)}`)
  return { rows, json }
}

// ── standalone ──────────────────────────────────────────────────────────────────────────────────

async function standalone (): Promise<void> {
  const t0 = performance.now()
  const log = (s: string): void => { process.stderr.write(`[locker ${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${s}\n`) }
  const tmp = mkdtempSync(join(tmpdir(), 'berth-bench-locker-'))
  installCleanup(() => { rmSync(tmp, { recursive: true, force: true }) })
  try {
    const m = machine()
    log(`machine: ${machineLine(m)}`)
    if (m.load1 > 0.5) log(`WARNING: load average ${m.load1.toFixed(2)} at start — other work on this ${m.cores}-core box will skew the figures`)
    const size = parseSize(process.env.BERTH_BENCH_SIZE ?? '1GiB')
    const data = join(ROOT, 'bench', 'out', 'data', `random-${size}.bin`)
    await ensureRandomFile(data, size, log)
    log(`warming the page cache: read ${fmtBytes(size)} in ${fmtSeconds(await warm(data))}`)
    const ref = await opensslDgst(data)
    if (!ref.ok || ref.hex === undefined) throw new Error(`cannot hash ${data}: ${ref.error}`)
    const c = lockerConfig()
    const { rows, json } = LOCKER_ENABLED
      ? await lockerSection({ log, tmp, data, dataHex: ref.hex, size }, c)
      : { rows: lockerRows('skipped', 'BERTH_BENCH_LOCKER=0', c, size), json: {} }
    const out = join(ROOT, 'bench', 'out')
    await mkdir(out, { recursive: true })
    await writeFile(join(out, 'locker.json'), JSON.stringify({ machine: m, locker: json, rows, loadAtEnd: loadavg() }, null, 2) + '\n')
    const lines = ['', `Berth locker bench — ${machineLine(m)}`, '', markdownTable(rows), '']
    const n = notes(rows)
    if (n.length > 0) lines.push('Notes:', ...n, '')
    lines.push(`took ${fmtSeconds(performance.now() - t0)}; load average at the end ${loadavg().map(l => l.toFixed(2)).join(' / ')} (1/5/15 min); JSON in bench/out/locker.json`, '')
    process.stdout.write(lines.join('\n'))
  } finally {
    killAll('SIGKILL')
    rmSync(tmp, { recursive: true, force: true })
  }
}

if (process.argv[1] !== undefined && pathToFileURL(process.argv[1]).href === import.meta.url) {
  try {
    if (process.argv[2] === 'fetch-many') {
      const [url, n, size, hex] = process.argv.slice(3)
      await fetchMany(url, Number(n), Number(size), hex)
    } else {
      await standalone()
    }
  } catch (err) {
    process.stderr.write(`FAILED: ${(err as Error).stack ?? String(err)}\n`)
    process.exitCode = 1
  }
}
