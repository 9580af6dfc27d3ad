/**
 * The locker server's resource model and pipelining in `npm run bench` (issue 3's acceptance):
 *
 *  (c) fairness at a server capped at C (BERTH_BENCH_FAIR_C, default 64 MB/s egress): three
 *      users with weights 1:2:3 downloading at once — shares vs 1/6, 2/6, 3/6 (target: each
 *      within 5% of its share); one user alone (≥ 95% of C); a user with a floor of 0.4·C and
 *      weight 1 against a user of weight 10 (gets ≥ 0.4·C); a grant with bwMax = C/4 (within 5%).
 *      Shares are taken over a 3 s window in which every download is running (bench/lib/shares.ts).
 *  (d) pipelining: how far a 256 MiB PUT was when a GET started at 10% got its first byte; how
 *      much of a 256 MiB object a source had sent when the end of a 3-locker cascade got its
 *      first byte (the source sends at 200 MB/s, so the chain is not simply faster than it).
 *
 * The server under (c) is a separate process (`berth locker serve --egress C`), the clients
 * another; (d) runs three in-process servers. Standalone: `node --import tsx bench/resources.ts`.
 * Env: BERTH_BENCH_RESOURCES (1; 0 skips), BERTH_BENCH_FAIR_C (64e6).
 */
import { createCipheriv, createHash } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { createServer } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { issueAccessToken, issueResourceToken, loadSigningKey, issueAdminToken, generateSigningKey } from '../src/core/tokens.ts'
import { createLockerServer } from '../src/locker/server.ts'
import { LockerClient } from '../src/sdk/locker-client.ts'
import { LockerProc, oidFromDigestHex } from './lib/berth.ts'
import { installCleanup } from './lib/proc.ts'
import { markdownTable, type Row } from './lib/report.ts'
import { measureShares, type Download } from './lib/shares.ts'

export const RESOURCES_ENABLED = process.env.BERTH_BENCH_RESOURCES !== '0'
const C = Number(process.env.BERTH_BENCH_FAIR_C ?? 64e6)
const MiB = 1024 * 1024

/** Deterministic incompressible bytes (AES-CTR of zeros): fast, and the same every run. */
function bytesOf (size: number, seed: number): Buffer {
  const key = createHash('sha256').update(`berth-bench-${seed}`).digest()
  return createCipheriv('aes-256-ctr', key, Buffer.alloc(16)).update(Buffer.alloc(size))
}

async function oidOf (bytes: Uint8Array): Promise<string> {
  return await oidFromDigestHex(createHash('sha256').update(bytes).digest('hex'))
}

const pct = (x: number): string => `${(100 * x).toFixed(1)}%`
const mbs = (x: number): string => `${(x / 1e6).toFixed(1)} MB/s`

export interface ResourcesResult { rows: Row[], json: Record<string, unknown> }

export async function resourcesSection (log: (s: string) => void, tmp: string): Promise<ResourcesResult> {
  const rows: Row[] = []
  const json: Record<string, unknown> = { capacity: C }

  // ── (c) fairness, against a server process capped at C ──
  const server = new LockerProc(join(tmp, 'fair'), [], ['--egress', String(C)])
  await server.start()
  try {
    const size = Math.ceil(C * 8 / MiB) * MiB // longer than any window at any share
    const data = bytesOf(size, 1)
    const oid = await oidOf(data)
    const lockers: Record<string, { key: string }> = {}
    const make = async (name: string, more: string[] = []): Promise<void> => {
      lockers[name] = { key: await server.createLocker(name, '10g', more) }
      const token = await issueAccessToken(await loadSigningKey(lockers[name].key), { locker: name, ops: ['read', 'write'], objects: 'all', ttlSeconds: 7200 })
      await new LockerClient(server.url).put(name, oid, data, { token })
    }
    const download = async (name: string, resource?: { bwMax?: number }): Promise<Download> => {
      const key = await loadSigningKey(lockers[name].key)
      const token = await issueAccessToken(key, { locker: name, ops: ['read'], objects: 'all', ttlSeconds: 7200 })
      const headers: Record<string, string> = { authorization: `Bearer ${token}` }
      if (resource !== undefined) headers['berth-resource'] = await issueResourceToken(key, token, { ttlSeconds: 7200, ...resource })
      return { url: `${server.url}/v1/lockers/${name}/objects/${oid}`, headers }
    }
    await make('w1', ['--weight', '1'])
    await make('w2', ['--weight', '2'])
    await make('w3', ['--weight', '3'])
    await make('floored', ['--weight', '1', '--floor', String(0.4 * C)])
    await make('heavy', ['--weight', '10'])
    const window = { settleMs: 1000, windowMs: 3000 }

    log(`fairness: 3 users 1:2:3 at C = ${mbs(C)}`)
    const three = await measureShares([await download('w1'), await download('w2'), await download('w3')], window)
    const expected = [1 / 6, 2 / 6, 3 / 6]
    const worst = Math.max(...three.shares.map((s, i) => Math.abs(s - expected[i]) / expected[i]))
    rows.push({ id: 'fair-123', measure: `locker fairness: 3 users, weights 1:2:3, egress capped at ${mbs(C)}`, berth: three.shares.map(pct).join(' / '), anchor: '16.7% / 33.3% / 50.0%', ratio: `worst ${pct(worst)} off`, target: 'each within 5% of its share', verdict: worst <= 0.05 ? 'pass' : 'fail', data: { ...three } })

    log('fairness: one user alone')
    const alone = await measureShares([await download('w1')], window)
    rows.push({ id: 'fair-alone', measure: 'locker fairness: one user alone', berth: mbs(alone.total), anchor: mbs(C), ratio: pct(alone.total / C), target: '≥ 95% of C', verdict: alone.total >= 0.95 * C ? 'pass' : 'fail', data: { ...alone } })

    log('fairness: a floor of 0.4 C against weight 10')
    const floor = await measureShares([await download('floored'), await download('heavy')], window)
    rows.push({ id: 'fair-floor', measure: 'locker fairness: floor 0.4·C, weight 1, vs a user of weight 10', berth: mbs(floor.rates[0]), anchor: mbs(0.4 * C), ratio: pct(floor.rates[0] / (0.4 * C)), target: '≥ the floor (within 5%)', verdict: floor.rates[0] >= 0.95 * 0.4 * C ? 'pass' : 'fail', data: { ...floor } })

    log('fairness: bwMax C/4')
    const capped = await measureShares([await download('heavy', { bwMax: C / 4 })], window)
    const capErr = Math.abs(capped.total - C / 4) / (C / 4)
    rows.push({ id: 'fair-bwmax', measure: 'locker fairness: a grant with bwMax = C/4, alone', berth: mbs(capped.total), anchor: mbs(C / 4), ratio: `${pct(capErr)} off`, target: 'within 5% of bwMax', verdict: capErr <= 0.05 ? 'pass' : 'fail', data: { ...capped } })
    json.fairness = { three, alone, floor, capped }
  } finally {
    await server.stop()
  }

  // ── (d) pipelining, on in-process servers ──
  const admin = await generateSigningKey()
  const servers = await Promise.all([0, 1, 2].map(async i => await createLockerServer({ listen: '127.0.0.1:0', dir: join(tmp, `pipe${i}`), adminKey: admin.publicJwk, allowPrivatePlaces: true })))
  for (const s of servers) await s.start()
  try {
    const owner = await generateSigningKey()
    const adminToken = await issueAdminToken(admin)
    const token = async (name: string): Promise<string> => await issueAccessToken(owner, { locker: name, ops: ['read', 'write', 'distribute'], objects: 'all', ttlSeconds: 7200 })
    const clients = servers.map(s => new LockerClient(s.url))
    for (const [i, c] of clients.entries()) await c.createLocker(adminToken, { name: `l${i}`, key: owner.publicJwk })
    const size = 256 * MiB
    const data = bytesOf(size, 2)
    const oid = await oidOf(data)

    log('pipelining: GET started when a PUT is 10% done')
    let sent = 0
    let firstAt = -1
    async function * body (): AsyncGenerator<Uint8Array> {
      for (let at = 0; at < size; at += MiB) {
        sent += MiB
        yield data.subarray(at, at + MiB)
        // The uploader's pace: about 400 MB/s.
        if (at % (8 * MiB) === 0) await new Promise(resolve => setTimeout(resolve, 20))
      }
    }
    const t0 = await token('l0')
    const putting = clients[0].put('l0', oid, body(), { token: t0, size })
    while (sent < size / 10) await new Promise(resolve => setTimeout(resolve, 2))
    const got = await clients[0].get('l0', oid, { token: t0 })
    let received = 0
    for await (const chunk of got.stream) {
      if (firstAt < 0) firstAt = sent
      received += (chunk as Buffer).length
    }
    await putting
    rows.push({ id: 'pipe-get', measure: `locker pipelining: a GET started when a ${size / MiB} MiB PUT is 10% done`, berth: `first byte at ${pct(firstAt / size)} of the PUT`, anchor: '', ratio: '', target: 'first bytes before the PUT ends', verdict: firstAt < size && received === size ? 'pass' : 'fail' })

    log('pipelining: relay through 3 cascaded lockers')
    const data2 = bytesOf(size, 3)
    const oid2 = await oidOf(data2)
    let originSent = 0
    const origin = createServer((_req, res) => {
      res.writeHead(200, { 'content-length': size })
      void (async () => {
        // 200 MB/s: 2 MiB every ~10 ms.
        for (let at = 0; at < size; at += 2 * MiB) {
          originSent += Math.min(2 * MiB, size - at)
          if (!res.write(data2.subarray(at, at + 2 * MiB))) await new Promise(resolve => res.once('drain', resolve))
          await new Promise(resolve => setTimeout(resolve, 10))
        }
        res.end()
      })()
    })
    await new Promise<void>(resolve => origin.listen(0, '127.0.0.1', resolve))
    try {
      const originUrl = `http://127.0.0.1:${(origin.address() as { port: number }).port}/o`
      const hosts = servers.map(s => new URL(s.url).host)
      await clients[0].distribute('l0', { oid: oid2, src: originUrl }, { token: await token('l0') })
      await clients[1].distribute('l1', { oid: oid2, src: { uri: `locker://${hosts[0]}/l0`, token: await token('l0') } }, { token: await token('l1') })
      await clients[2].distribute('l2', { oid: oid2, src: { uri: `locker://${hosts[1]}/l1`, token: await token('l1') } }, { token: await token('l2') })
      const end = await clients[2].get('l2', oid2, { token: await token('l2') })
      let sourceAtFirst = -1
      let n = 0
      const h = createHash('sha256')
      for await (const chunk of end.stream) {
        if (sourceAtFirst < 0) sourceAtFirst = originSent
        n += (chunk as Buffer).length
        h.update(chunk as Buffer)
      }
      const ok = n === size && (await oidFromDigestHex(h.digest('hex'))) === oid2
      rows.push({ id: 'pipe-relay', measure: `locker pipelining: first byte at the end of a 3-locker cascade (${size / MiB} MiB, source at 200 MB/s)`, berth: `source had sent ${pct(sourceAtFirst / size)}`, anchor: '', ratio: '', target: 'before the source has sent half', verdict: ok && sourceAtFirst < size / 2 ? 'pass' : 'fail' })
      json.pipelining = { getFirstByteAt: firstAt / size, relaySourceAtFirstByte: sourceAtFirst / size }
    } finally {
      origin.closeAllConnections()
      origin.close()
    }
  } finally {
    for (const s of servers) await s.stop()
  }
  return { rows, json }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const tmp = mkdtempSync(join(tmpdir(), 'berth-bench-res-'))
  installCleanup(() => { rmSync(tmp, { recursive: true, force: true }) })
  const r = await resourcesSection(s => process.stderr.write(`[resources] ${s}\n`), tmp)
  process.stdout.write(markdownTable(r.rows) + '\n')
  rmSync(tmp, { recursive: true, force: true })
  process.exit(0)
}
