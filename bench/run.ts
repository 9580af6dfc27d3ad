/**
 * `npm run bench`: Berth's figures beside outside anchors measured in the same run (issue 2).
 *
 *  1. verified agent→agent get of BERTH_BENCH_SIZE (default 1 GiB) over loopback, fresh receiving
 *     store each time, vs `curl | openssl dgst -sha256` from nginx, scp and rsync over ssh;
 *  2. `berth put FILE --chunker fixed|cdc` in MB/s, vs `openssl dgst -sha256 FILE`;
 *  3. peak RSS of both agents while a 4 GiB object moves (BERTH_BENCH_BIG=0 skips it);
 *  5. the locker's resource model (bench/resources.ts): shares at a capped server (weights 1:2:3,
 *     alone, a floor, bwMax) and pipelining (GET during a PUT, first byte through 3 lockers);
 *  4. the locker server (bench/locker.ts): 2,000 concurrent GETs of a 1 MiB object, and large
 *     GETs by 4 clients at once vs nginx serving the same file (BERTH_BENCH_LOCKER=0 skips it);
 *  6. multipath over two tbf-shaped veth links to a network namespace (bench/multipath.ts):
 *     equal and unequal links, borrowing off, two rate-limited nginx mirrors vs aria2c
 *     (BERTH_BENCH_MULTIPATH=0 skips it).
 *
 * Env: BERTH_BENCH_SIZE (1GiB), BERTH_BENCH_REPEAT (3, the median is reported),
 *      BERTH_BENCH_BIG (1), BERTH_BENCH_BIG_SIZE (4GiB), BERTH_BENCH_LOCKER (1) and the
 *      BERTH_BENCH_LOCKER_* settings described in bench/locker.ts.
 * Prints a Markdown table on stdout (progress on stderr) and writes bench/out/latest.json.
 */
import { mkdtempSync, rmSync } from 'node:fs'
import { mkdir, writeFile, rm } from 'node:fs/promises'
import { loadavg, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { ensurePrograms, startNginx, startSshd, opensslDgst, curlVerified, curlRaw, scp, rsync, ddFsync, type Nginx, type Sshd, type Timed } from './lib/anchors.ts'
import { AgentProc, apiGet, apiPut, berthCmd, berthGet, berthPut, cliProbe, oidDigestHex, ROOT, type BerthRun } from './lib/berth.ts'
import { ensureRandomFile, fmtBytes, freeBytes, parseSize, warm } from './lib/data.ts'
import { freePort, installCleanup, killAll, median, run, runPipe, start, stop, waitForPort, type Started } from './lib/proc.ts'
import { fmtMB, fmtRate, fmtRatio, fmtSeconds, machine, machineLine, markdownTable, notes, type Row } from './lib/report.ts'
import { cpuSeconds, RssSampler, vmHWM } from './lib/rss.ts'
import { LOCKER_ENABLED, lockerConfig, lockerRows, lockerSection } from './locker.ts'
import { RESOURCES_ENABLED, resourcesSection } from './resources.ts'

const SIZE = parseSize(process.env.BERTH_BENCH_SIZE ?? '1GiB')
const REPEAT = Math.max(1, Number.parseInt(process.env.BERTH_BENCH_REPEAT ?? '3', 10) || 3)
const BIG = process.env.BERTH_BENCH_BIG !== '0'
const BIG_SIZE = parseSize(process.env.BERTH_BENCH_BIG_SIZE ?? '4GiB')
const BIG_MIN_FREE = 20 * 2 ** 30
const RSS_LIMIT = 200e6

const OUT = join(ROOT, 'bench', 'out')
const DATA = join(OUT, 'data', `random-${SIZE}.bin`)
const BIG_DATA = join(OUT, 'data', `random-${BIG_SIZE}.bin`)

const t0 = performance.now()
function log (s: string): void {
  process.stderr.write(`[bench ${((performance.now() - t0) / 1000).toFixed(1).padStart(6)} s] ${s}\n`)
}

const TMP = mkdtempSync(join(tmpdir(), 'berth-bench-'))
installCleanup(() => { rmSync(TMP, { recursive: true, force: true }) })

interface Series { name: string, runs: Timed[] }
function series (name: string): Series { return { name, runs: [] } }
function ok (s: Series): number[] { return s.runs.filter(r => r.ok).map(r => r.ms) }
function med (s: Series): number { return median(ok(s)) }
function firstError (s: Series): string | undefined { return s.runs.find(r => !r.ok)?.error }
function raw (s: Series): Record<string, unknown> { return { name: s.name, ms: s.runs.map(r => r.ok ? Math.round(r.ms * 10) / 10 : null), medianMs: med(s), errors: s.runs.filter(r => !r.ok).map(r => r.error) } }
function timedOf (r: BerthRun): Timed { return { ms: r.ms, ok: r.ok, error: r.error } }

/** CPU seconds (user + sys) an agent process used during `fn`. */
const cpu: Record<string, number[]> = {}
async function withCpu<T> (key: string, pid: () => number | undefined, fn: () => Promise<T>): Promise<T> {
  const before = cpuSeconds(pid())
  const r = await fn()
  const after = cpuSeconds(pid())
  if (before !== undefined && after !== undefined) (cpu[key] ??= []).push(after - before)
  return r
}

const rows: Row[] = []
const json: Record<string, unknown> = {}

/** A row comparing two timed series: ratio = Berth time ÷ anchor time. */
function compareRow (id: string, measure: string, berth: Series, anchor: Series, bytes: number, target: string, pass: (ratio: number, berthMs: number) => boolean, byRatio = true): void {
  const b = med(berth)
  const a = med(anchor)
  const berr = firstError(berth)
  const aerr = firstError(anchor)
  const complete = ok(berth).length === berth.runs.length && berth.runs.length > 0
  const ratio = b / a
  const row: Row = {
    id,
    measure,
    berth: Number.isFinite(b) ? `${fmtSeconds(b)} (${fmtRate(bytes, b)})` : 'failed',
    anchor: Number.isFinite(a) ? `${anchor.name} ${fmtSeconds(a)} (${fmtRate(bytes, a)})` : `${anchor.name}: failed`,
    ratio: fmtRatio(ratio),
    target,
    // A ratio target needs the anchor; a rate target (MB/s) is judged on Berth alone.
    verdict: !complete || (byRatio && !Number.isFinite(ratio)) ? 'error' : pass(ratio, b) ? 'pass' : 'fail',
    data: { bytes, berth: raw(berth), anchor: raw(anchor), ratio }
  }
  const why = [berr !== undefined ? `Berth: ${berr}` : '', aerr !== undefined ? `anchor: ${aerr}` : ''].filter(s => s !== '').join('; ')
  if (why !== '') row.note = why
  rows.push(row)
}

function errorRow (id: string, measure: string, target: string, note: string, verdict: Row['verdict'] = 'error'): void {
  rows.push({ id, measure, berth: verdict === 'skipped' ? 'skipped' : 'failed', anchor: '', ratio: '', target, verdict, note })
}

async function main (): Promise<void> {
  const m = machine()
  json.machine = m
  json.config = { size: SIZE, repeat: REPEAT, big: BIG, bigSize: BIG_SIZE, locker: LOCKER_ENABLED ? lockerConfig() : false }
  log(`machine: ${machineLine(m)}`)
  if (m.load1 > 0.5) log(`WARNING: load average ${m.load1.toFixed(2)} at start — other work on this ${m.cores}-core box will skew the figures`)
  log(`size ${fmtBytes(SIZE)}, ${REPEAT} repetitions (median reported), big test ${BIG ? fmtBytes(BIG_SIZE) : 'off'}; temp dir ${TMP}`)

  // ── tools ────────────────────────────────────────────────────────────────────────────────
  const missing = await ensurePrograms([
    { prog: 'curl', pkg: 'curl' }, { prog: 'openssl', pkg: 'openssl' }, { prog: 'nginx', pkg: 'nginx-light' },
    { prog: '/usr/sbin/sshd', pkg: 'openssh-server' }, { prog: 'ssh', pkg: 'openssh-client' }, { prog: 'scp', pkg: 'openssh-client' },
    { prog: 'rsync', pkg: 'rsync' }
  ], log)
  for (const s of missing) log(`WARNING: ${s}`)

  // ── data ─────────────────────────────────────────────────────────────────────────────────
  const made = await ensureRandomFile(DATA, SIZE, log)
  log(made.created ? `data written in ${fmtSeconds(made.ms)}` : `reusing ${DATA}`)
  log(`warming the page cache: read ${fmtBytes(SIZE)} in ${fmtSeconds(await warm(DATA))}`)
  const ref = await opensslDgst(DATA)
  if (!ref.ok || ref.hex === undefined) throw new Error(`cannot hash the data file: ${ref.error}`)
  const expectHex = ref.hex
  log(`sha-256 ${expectHex}`)

  // ── servers ──────────────────────────────────────────────────────────────────────────────
  let nginx: Nginx | undefined
  let sshd: Sshd | undefined
  let nginxError: string | undefined
  let sshdError: string | undefined
  try { nginx = await startNginx(DATA, join(TMP, 'nginx')); log(`nginx on ${nginx.url}`) } catch (err) { nginxError = (err as Error).message; log(`nginx failed: ${nginxError}`) }
  try { sshd = await startSshd(join(TMP, 'sshd')); log(`sshd on 127.0.0.1:${sshd.port}`) } catch (err) { sshdError = (err as Error).message; log(`sshd failed: ${sshdError}`) }

  // ── Berth ────────────────────────────────────────────────────────────────────────────────
  const probe = await cliProbe()
  const nodeStart = series('`node -e 0`')
  const cliStart = series('berth --help')
  for (let i = 0; i < REPEAT; i++) {
    const r = await run(process.execPath, ['-e', '0'])
    nodeStart.runs.push({ ms: r.ms, ok: r.code === 0 })
    const h = await run(...berthCmd(['--help']), { cwd: ROOT })
    cliStart.runs.push({ ms: h.ms, ok: h.code === 0, error: h.code !== 0 ? h.stderr.trim().slice(-300) : undefined })
  }
  const A = new AgentProc('A', join(TMP, 'storeA'))
  const B = new AgentProc('B', join(TMP, 'storeB'))
  let berthError: string | undefined = probe.ok ? undefined : probe.error
  if (berthError === undefined) {
    try { await A.fresh(); await B.fresh(); log(`agents: A ${A.url} (peer ${A.hint}), B ${B.url} (peer ${B.hint})`) } catch (err) { berthError = (err as Error).message }
  }
  if (berthError !== undefined) log(`BERTH NOT RUNNABLE: ${berthError}`)

  // ── 2. put ───────────────────────────────────────────────────────────────────────────────
  const dgst = series('openssl dgst -sha256')
  const putFixed = series('berth put --chunker fixed')
  const putCdc = series('berth put --chunker cdc')
  const apiPutFixed = series('curl POST /v1/objects?chunker=fixed&path=')
  const apiPutCdc = series('curl POST /v1/objects?chunker=cdc&path=')
  const putPeak = new RssSampler(() => ({ A: A.pid })).start()
  for (let i = 0; i < REPEAT; i++) {
    log(`put, repetition ${i + 1}/${REPEAT}`)
    dgst.runs.push(await opensslDgst(DATA, expectHex))
    if (berthError !== undefined) continue
    for (const [s, kind] of [[putFixed, 'fixed'], [putCdc, 'cdc']] as const) {
      try {
        await A.fresh()
        const r = await withCpu(`put-${kind}`, () => A.pid, async () => await berthPut(A, DATA, kind))
        if (r.ok && await oidDigestHex(r.oid!) !== expectHex) { r.ok = false; r.error = `put --chunker ${kind} returned ${r.oid}, whose digest is not the file's sha-256 ${expectHex}` }
        s.runs.push(timedOf(r))
        log(`  ${s.name}: ${r.ok ? `${fmtSeconds(r.ms)} (${fmtRate(SIZE, r.ms)})` : r.error}`)
      } catch (err) {
        s.runs.push({ ms: NaN, ok: false, error: (err as Error).message })
      }
    }
    // The same through the HTTP API, without the CLI (context: the agent's own time).
    for (const [s, kind] of [[apiPutFixed, 'fixed'], [apiPutCdc, 'cdc']] as const) {
      try {
        await A.fresh()
        const r = await apiPut(A, DATA, kind)
        s.runs.push(timedOf(r))
        log(`  ${s.name}: ${r.ok ? `${fmtSeconds(r.ms)} (${fmtRate(SIZE, r.ms)})` : r.error}`)
      } catch (err) {
        s.runs.push({ ms: NaN, ok: false, error: (err as Error).message })
      }
    }
  }
  const putRss = putPeak.stop().get('A')
  for (const [s, kind, floor] of [[putFixed, 'fixed', 800], [putCdc, 'cdc', 500]] as const) {
    if (berthError !== undefined) { errorRow(`put-${kind}`, `put ${fmtBytes(SIZE)}, --chunker ${kind}`, `≥ ${floor} MB/s`, berthError); continue }
    compareRow(`put-${kind}`, `put ${fmtBytes(SIZE)}, --chunker ${kind} (agent reads the file)`, s, dgst, SIZE, `≥ ${floor} MB/s`, (_r, ms) => SIZE / 1e6 / (ms / 1000) >= floor, false)
  }
  json.putPeakRssA = putRss

  // ── 1. verified agent→agent get ──────────────────────────────────────────────────────────
  let oid: string | undefined
  if (berthError === undefined) {
    // The object as an application would put it: default chunker.
    try {
      await A.fresh()
      const r = await berthPut(A, DATA)
      if (r.ok) oid = r.oid
      else berthError = r.error
    } catch (err) { berthError = (err as Error).message }
  }
  const curlV = series('curl | openssl dgst -sha256')
  const curlR = series('curl -o /dev/null')
  const scpS = series('scp')
  const rsyncS = series('rsync --whole-file')
  const get = series('berth get')
  const apiGetS = series('curl GET /v1/objects/OID?hint=')
  const floor = series('floor (bench/floor.ts, curl client)')
  const floorProcs = await startFloor().catch((err: Error) => { floor.runs.push({ ms: NaN, ok: false, error: err.message }); return undefined })
  const getPeak = new RssSampler(() => ({ A: A.pid, B: B.pid })).start()
  for (let i = 0; i < REPEAT; i++) {
    log(`get, repetition ${i + 1}/${REPEAT}`)
    if (floorProcs !== undefined) {
      const before = floorProcs.cpu()
      const r = await run('curl', ['-s', '--fail', '-o', '/dev/null', '-w', '%{size_download}', `${floorProcs.url}/?sha=${expectHex}`], { timeoutMs: 600000 })
      const after = floorProcs.cpu()
      const good = r.code === 0 && Number(r.stdout.trim()) === SIZE
      floor.runs.push({ ms: r.ms, ok: good, error: good ? undefined : `floor: curl exit ${r.code}, ${r.stdout.trim()} bytes: ${floorProcs.stderr()}` })
      if (good && before !== undefined && after !== undefined) (cpu.floor ??= []).push(after - before)
      log(`  floor: ${good ? fmtSeconds(r.ms) : 'failed'}`)
    }
    if (nginx !== undefined) {
      curlV.runs.push(await curlVerified(nginx.url, expectHex))
      curlR.runs.push(await curlRaw(nginx.url))
    } else {
      curlV.runs.push({ ms: NaN, ok: false, error: `nginx: ${nginxError}` })
    }
    if (sshd !== undefined) {
      scpS.runs.push(await scp(sshd, DATA, join(TMP, 'scp-dest.bin')))
      rsyncS.runs.push(await rsync(sshd, DATA, join(TMP, 'rsync-dest.bin')))
    } else {
      scpS.runs.push({ ms: NaN, ok: false, error: `sshd: ${sshdError}` })
      rsyncS.runs.push({ ms: NaN, ok: false, error: `sshd: ${sshdError}` })
    }
    await rm(join(TMP, 'scp-dest.bin'), { force: true })
    await rm(join(TMP, 'rsync-dest.bin'), { force: true })
    if (berthError === undefined && oid !== undefined) {
      try {
        await B.fresh()
        const aBefore = cpuSeconds(A.pid)
        const r = await withCpu('get-receiver', () => B.pid, async () => await berthGet(B, oid!, A.hint))
        const aAfter = cpuSeconds(A.pid)
        if (aBefore !== undefined && aAfter !== undefined) (cpu['get-sender'] ??= []).push(aAfter - aBefore)
        get.runs.push(timedOf(r))
        log(`  berth get: ${r.ok ? `${fmtSeconds(r.ms)} (${fmtRate(SIZE, r.ms)})` : r.error}`)
      } catch (err) {
        get.runs.push({ ms: NaN, ok: false, error: (err as Error).message })
      }
      try {
        await B.fresh()
        const r = await apiGet(B, oid, A.hint)
        if (r.ok && Number(r.result?.stdout.trim()) !== SIZE) { r.ok = false; r.error = `agent API get delivered ${r.result?.stdout.trim()} bytes, not ${SIZE}` }
        apiGetS.runs.push(timedOf(r))
        log(`  ${apiGetS.name}: ${r.ok ? `${fmtSeconds(r.ms)} (${fmtRate(SIZE, r.ms)})` : r.error}`)
      } catch (err) {
        apiGetS.runs.push({ ms: NaN, ok: false, error: (err as Error).message })
      }
    }
    log(`  curl|openssl ${fmtSeconds(curlV.runs[i].ms)}, scp ${fmtSeconds(scpS.runs[i].ms)}, rsync ${fmtSeconds(rsyncS.runs[i].ms)}`)
  }
  const getRss = getPeak.stop()
  if (floorProcs !== undefined) await floorProcs.stop()
  json.getPeakRss = Object.fromEntries(getRss)

  // Once, untimed: the bytes `berth get -o -` writes really are the object (its sha-256 checked).
  let outputCheck: string | undefined
  if (berthError === undefined && oid !== undefined && get.runs.some(r => r.ok)) {
    await B.fresh()
    const [cmd, args] = berthCmd(['get', oid, '--hint', A.hint, '--agent', B.url, '-o', '-'])
    const r = await runPipe([cmd, args], ['openssl', ['dgst', '-sha256', '-r']], { timeoutMs: 900000 })
    const hex = r.stdout.trim().split(/\s+/)[0]
    outputCheck = r.codeA === 0 && hex === expectHex ? 'ok' : `berth get -o - | openssl dgst: exit ${r.codeA}, digest ${hex} (expected ${expectHex}): ${r.stderrA.trim().slice(-300)}`
    log(`output check (berth get -o - | openssl dgst, untimed): ${outputCheck}`)
    json.getOutputCheck = outputCheck
  }

  if (berthError !== undefined || oid === undefined) {
    const why = berthError ?? 'no OID'
    errorRow('get-vs-curl', `get ${fmtBytes(SIZE)} agent→agent, verified`, '≤ 1.5×', why)
    errorRow('get-vs-scp', `get ${fmtBytes(SIZE)} vs scp`, '< 1×', why)
    errorRow('get-vs-rsync', `get ${fmtBytes(SIZE)} vs rsync`, '< 1×', why)
  } else {
    compareRow('get-vs-curl', `get ${fmtBytes(SIZE)} agent→agent, verified (fresh store on B)`, get, curlV, SIZE, '≤ 1.5×', r => r <= 1.5)
    compareRow('get-vs-scp', `get ${fmtBytes(SIZE)} vs scp over loopback ssh`, get, scpS, SIZE, '< 1× (faster)', r => r < 1)
    compareRow('get-vs-rsync', `get ${fmtBytes(SIZE)} vs rsync over loopback ssh`, get, rsyncS, SIZE, '< 1× (faster)', r => r < 1)
    if (outputCheck !== undefined && outputCheck !== 'ok') {
      for (const r of rows) if (r.id.startsWith('get-')) { r.verdict = 'error'; r.note = `${r.note ?? ''} output check failed: ${outputCheck}`.trim() }
    }
  }

  // ── 4. the locker server (bench/locker.ts) ───────────────────────────────────────────────
  // Its context rows go with the other context rows at the end of the table.
  const lockerInfo: Row[] = []
  if (!LOCKER_ENABLED) {
    rows.push(...lockerRows('skipped', 'BERTH_BENCH_LOCKER=0', undefined, SIZE))
  } else if (berthError !== undefined) {
    rows.push(...lockerRows('error', berthError, undefined, SIZE))
  } else {
    try {
      const r = await lockerSection({ log, tmp: TMP, data: DATA, dataHex: expectHex, size: SIZE })
      rows.push(...r.rows.filter(x => x.verdict !== 'info'))
      lockerInfo.push(...r.rows.filter(x => x.verdict === 'info'))
      json.locker = r.json
    } catch (err) {
      log(`locker section failed: ${(err as Error).message}`)
      rows.push(...lockerRows('error', (err as Error).message, undefined, SIZE))
    }
  }

  // ── 5. the locker's resource model and pipelining (bench/resources.ts) ─────────────────
  if (!RESOURCES_ENABLED) {
    rows.push({ id: 'fair', measure: 'locker fairness and pipelining', berth: 'skipped', anchor: '', ratio: '', target: '', verdict: 'skipped', note: 'BERTH_BENCH_RESOURCES=0' })
  } else {
    try {
      const r = await resourcesSection(log, TMP)
      rows.push(...r.rows)
      json.resources = r.json
    } catch (err) {
      log(`resources section failed: ${(err as Error).message}`)
      rows.push({ id: 'fair', measure: 'locker fairness and pipelining', berth: 'failed', anchor: '', ratio: '', target: '', verdict: 'error', note: (err as Error).message })
    }
  }

  // ── 6. multipath over two shaped links, and two mirrors vs aria2c (bench/multipath.ts) ──
  rows.push(...await (await import('./multipath.ts')).multipathRows(log, TMP, json))

  // ── 3. RSS while moving a big object ─────────────────────────────────────────────────────
  if (!BIG) {
    errorRow('rss', `agent RSS moving ${fmtBytes(BIG_SIZE)}`, '< 200 MB', 'BERTH_BENCH_BIG=0', 'skipped')
  } else if (berthError !== undefined) {
    errorRow('rss', `agent RSS moving ${fmtBytes(BIG_SIZE)}`, '< 200 MB', berthError)
  } else {
    const free = Math.min(await freeBytes(OUT), await freeBytes(TMP))
    if (free < BIG_MIN_FREE) {
      const why = `only ${fmtBytes(free)} free on disk, ${fmtBytes(BIG_MIN_FREE)} needed`
      log(`SKIPPING the ${fmtBytes(BIG_SIZE)} RSS test: ${why}`)
      errorRow('rss', `agent RSS moving ${fmtBytes(BIG_SIZE)}`, '< 200 MB', why, 'skipped')
    } else {
      await bigTest()
    }
  }

  if (floor.runs.length > 0) {
    compareRow('get-floor', `context: the floor — only the work a verified get must do, no protocol (bench/floor.ts, curl as client)`, floor, curlV, SIZE, '—', () => true)
    rows[rows.length - 1].verdict = floor.runs.every(r => r.ok) ? 'info' : 'error'
  }

  // context rows (no target)
  const ctx = (id: string, measure: string, s: Series, anchor: Series | undefined, bytes?: number): void => {
    const b = med(s)
    const a = anchor !== undefined ? med(anchor) : NaN
    rows.push({
      id,
      measure,
      berth: Number.isFinite(b) ? fmtSeconds(b) + (bytes !== undefined ? ` (${fmtRate(bytes, b)})` : '') : (firstError(s) !== undefined ? 'failed' : '—'),
      anchor: anchor !== undefined && Number.isFinite(a) ? `${anchor.name} ${fmtSeconds(a)}` : '—',
      ratio: fmtRatio(b / a),
      target: '—',
      verdict: 'info',
      data: { berth: raw(s), anchor: anchor !== undefined ? raw(anchor) : undefined },
      note: firstError(s)
    })
  }
  ctx('cli-startup', 'context: CLI start-up, `berth --help`', cliStart, nodeStart)
  if (apiPutFixed.runs.length > 0) {
    ctx('api-put-fixed', `context: put ${fmtBytes(SIZE)} fixed via the agent API (curl, no CLI)`, apiPutFixed, dgst, SIZE)
    ctx('api-put-cdc', `context: put ${fmtBytes(SIZE)} cdc via the agent API (curl, no CLI)`, apiPutCdc, dgst, SIZE)
  }
  if (apiGetS.runs.length > 0) ctx('api-get', `context: get ${fmtBytes(SIZE)} via agent B's API (curl → /dev/null, no CLI)`, apiGetS, curlV, SIZE)
  if (curlR.runs.length > 0) {
    const b = med(curlR)
    rows.push({ id: 'curl-raw', measure: `context: nginx → curl -o /dev/null, ${fmtBytes(SIZE)} (no hashing)`, berth: '—', anchor: Number.isFinite(b) ? `${fmtSeconds(b)} (${fmtRate(SIZE, b)})` : 'failed', ratio: '', target: '—', verdict: 'info', data: { anchor: raw(curlR) }, note: firstError(curlR) })
  }
  const dd = series('dd conv=fsync')
  dd.runs.push(await ddFsync(DATA, join(TMP, 'dd.bin')))
  rows.push({ id: 'disk', measure: `context: write ${fmtBytes(SIZE)} to disk + fsync (dd bs=4M conv=fsync)`, berth: '—', anchor: Number.isFinite(med(dd)) ? `${fmtSeconds(med(dd))} (${fmtRate(SIZE, med(dd))})` : 'failed', ratio: '', target: '—', verdict: 'info', data: { anchor: raw(dd) }, note: firstError(dd) })
  json.agentCpuSeconds = cpu
  if (Object.keys(cpu).length > 0) {
    const f = (k: string): string => cpu[k] !== undefined ? `${median(cpu[k]).toFixed(2)} s` : '—'
    rows.push({ id: 'agent-cpu', measure: `context: agent CPU time (user+sys, all threads) per ${fmtBytes(SIZE)}, median`, berth: `put fixed ${f('put-fixed')}, put cdc ${f('put-cdc')}; get: sender A ${f('get-sender')}, receiver B ${f('get-receiver')}; the floor's sender + receiver ${f('floor')}`, anchor: `openssl dgst ${fmtSeconds(med(dgst))} (one thread: wall ≈ CPU)`, ratio: '', target: '—', verdict: 'info', data: cpu })
  }
  rows.push(...lockerInfo)
  if (getRss.size > 0) {
    rows.push({ id: 'rss-1g', measure: `context: agent peak RSS during the ${fmtBytes(SIZE)} gets (sampled)`, berth: `A ${fmtMB(getRss.get('A') ?? NaN)}, B ${fmtMB(getRss.get('B') ?? NaN)}`, anchor: '—', ratio: '', target: '—', verdict: 'info' })
  }

  /** The floor's sender and receiver (bench/floor.ts), listening; `cpu` sums both processes. */
  async function startFloor (): Promise<{ url: string, cpu: () => number | undefined, stderr: () => string, stop: () => Promise<void> }> {
    const dir = join(TMP, 'floor')
    await mkdir(dir, { recursive: true })
    const [sendPort, recvPort] = [await freePort(), await freePort()]
    const script = join(ROOT, 'bench', 'floor.ts')
    const procs: Started[] = []
    procs.push(start(process.execPath, ['--import', 'tsx', script, 'sender', String(sendPort), DATA], { cwd: ROOT }))
    await waitForPort(sendPort, procs[0], 'floor sender')
    procs.push(start(process.execPath, ['--import', 'tsx', script, 'receiver', String(recvPort), String(sendPort), dir], { cwd: ROOT }))
    await waitForPort(recvPort, procs[1], 'floor receiver')
    return {
      url: `http://127.0.0.1:${recvPort}`,
      cpu: () => {
        const [a, b] = procs.map(p => cpuSeconds(p.child.pid))
        return a !== undefined && b !== undefined ? a + b : undefined
      },
      stderr: () => procs.map(p => p.stderr().trim().slice(-300)).join(' | '),
      stop: async () => { await Promise.all(procs.map(async p => await stop(p))) }
    }
  }

  async function bigTest (): Promise<void> {
    const made = await ensureRandomFile(BIG_DATA, BIG_SIZE, log)
    log(made.created ? `big data written in ${fmtSeconds(made.ms)}` : `reusing ${BIG_DATA}`)
    log(`warming the page cache: read ${fmtBytes(BIG_SIZE)} in ${fmtSeconds(await warm(BIG_DATA))}`)
    const bigRef = await opensslDgst(BIG_DATA)
    await A.fresh()
    await B.fresh()
    const phase1 = new RssSampler(() => ({ A: A.pid, B: B.pid })).start()
    const put = await berthPut(A, BIG_DATA, undefined, 1800000)
    const p1 = phase1.stop()
    log(`big put: ${put.ok ? `${fmtSeconds(put.ms)} (${fmtRate(BIG_SIZE, put.ms)}), A peak ${fmtMB(p1.get('A') ?? NaN)}` : put.error}`)
    if (!put.ok || put.oid === undefined) { errorRow('rss', `agent RSS moving ${fmtBytes(BIG_SIZE)}`, '< 200 MB', put.error ?? 'no OID'); return }
    if (bigRef.hex !== undefined && await oidDigestHex(put.oid) !== bigRef.hex) log(`WARNING: big put OID ${put.oid} does not carry the file's sha-256 ${bigRef.hex}`)
    const phase2 = new RssSampler(() => ({ A: A.pid, B: B.pid })).start()
    const get = await berthGet(B, put.oid, A.hint, 1800000)
    const p2 = phase2.stop()
    const hwmA = vmHWM(A.pid)
    const hwmB = vmHWM(B.pid)
    log(`big get: ${get.ok ? `${fmtSeconds(get.ms)} (${fmtRate(BIG_SIZE, get.ms)})` : get.error}; peaks A ${fmtMB(p2.get('A') ?? NaN)}, B ${fmtMB(p2.get('B') ?? NaN)}; VmHWM A ${fmtMB(hwmA ?? NaN)}, B ${fmtMB(hwmB ?? NaN)}`)
    const data = {
      bytes: BIG_SIZE,
      putMs: put.ms,
      getMs: get.ms,
      getOk: get.ok,
      sampledPeak: { putA: p1.get('A'), getA: p2.get('A'), getB: p2.get('B') },
      samples: { put: Object.fromEntries(phase1.samples), get: Object.fromEntries(phase2.samples) },
      vmHWM: { A: hwmA, B: hwmB }
    }
    json.big = data
    const peakA = Math.max(p1.get('A') ?? 0, p2.get('A') ?? 0)
    const peakB = p2.get('B') ?? 0
    const worstA = Math.max(peakA, hwmA ?? 0)
    const worstB = Math.max(peakB, hwmB ?? 0)
    rows.push({
      id: 'rss-sender',
      measure: `agent RSS, sender A (put ${fmtBytes(BIG_SIZE)}, then serves it)`,
      berth: `peak ${fmtMB(peakA)} (put ${fmtMB(p1.get('A') ?? NaN)}, serving ${fmtMB(p2.get('A') ?? NaN)}; VmHWM ${fmtMB(hwmA ?? NaN)})`,
      anchor: '—',
      ratio: '',
      target: '< 200 MB',
      verdict: !get.ok ? 'error' : worstA < RSS_LIMIT ? 'pass' : 'fail',
      data,
      note: get.ok ? undefined : get.error
    })
    rows.push({
      id: 'rss-receiver',
      measure: `agent RSS, receiver B (get ${fmtBytes(BIG_SIZE)}, fresh store)`,
      berth: `peak ${fmtMB(peakB)} (VmHWM ${fmtMB(hwmB ?? NaN)})`,
      anchor: '—',
      ratio: '',
      target: '< 200 MB',
      verdict: !get.ok ? 'error' : worstB < RSS_LIMIT ? 'pass' : 'fail',
      note: get.ok ? undefined : get.error
    })
    rows.push({
      id: 'big-times',
      measure: `context: ${fmtBytes(BIG_SIZE)} put (default chunker) / get`,
      berth: `put ${fmtSeconds(put.ms)} (${fmtRate(BIG_SIZE, put.ms)}), get ${get.ok ? `${fmtSeconds(get.ms)} (${fmtRate(BIG_SIZE, get.ms)})` : 'failed'}`,
      anchor: '—',
      ratio: '',
      target: '—',
      verdict: 'info'
    })
  }

  // ── stop everything, report ──────────────────────────────────────────────────────────────
  await A.stop().catch(() => {})
  await B.stop().catch(() => {})
  await nginx?.stop()
  await sshd?.stop()

  const totalMs = performance.now() - t0
  json.rows = rows
  json.totalMs = totalMs
  json.loadAtEnd = loadavg()
  json.notes = {
    ratio: 'Berth time ÷ anchor time (median of the repetitions); MB = 10^6 bytes',
    get: 'berth get -o - with stdout on /dev/null, timed around the whole CLI command (process start-up included); agent B restarted with an empty store before each repetition',
    anchors: 'every anchor reads the same data file from the page cache (warmed before timing)'
  }
  await mkdir(OUT, { recursive: true })
  await writeFile(join(OUT, 'latest.json'), JSON.stringify(json, null, 2) + '\n')

  const out = [
    '',
    `Berth benchmark — ${machineLine(m)}`,
    `data ${fmtBytes(SIZE)} pseudo-random, ${REPEAT} repetitions (median), ratio = Berth time ÷ anchor time, MB = 10^6 B`,
    '',
    markdownTable(rows),
    ''
  ]
  const n = notes(rows)
  if (n.length > 0) out.push('Notes:', ...n, '')
  out.push(`bench took ${fmtSeconds(totalMs)}; load average at the end ${loadavg().map(l => l.toFixed(2)).join(' / ')} (1/5/15 min); JSON in bench/out/latest.json`, '')
  process.stdout.write(out.join('\n'))
}

try {
  await main()
} catch (err) {
  log(`FAILED: ${(err as Error).stack ?? String(err)}`)
  process.exitCode = 1
} finally {
  killAll('SIGKILL')
  rmSync(TMP, { recursive: true, force: true })
}
