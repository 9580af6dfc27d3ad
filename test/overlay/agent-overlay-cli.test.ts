/**
 * `berth agent --bootstrap …` / `--config {overlay}` as separate processes joined to a `berth overlay`
 * node: a put on A is announced; a hint-less `berth get` on B (which saw the object-available
 * event) and on C (started later, so only the DHT can tell it) fetch the right bytes.
 */
import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import { BERTH_BIN, firstJsonLine, oidOf, pseudoRandom, runBerth, stopper } from '../interop/_berth-cli.ts'

interface Daemon { info: Record<string, any>, stop: () => Promise<number | null>, stderr: () => string }

async function daemon (args: string[]): Promise<Daemon> {
  const env = { ...process.env }
  delete env.BERTH_AGENT
  const child: ChildProcess = spawn(process.execPath, [BERTH_BIN, ...args], { env, stdio: ['ignore', 'pipe', 'pipe'] })
  let err = ''
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { err += s })
  const stop = stopper(child)
  try {
    return { info: await firstJsonLine(child, () => err), stop, stderr: () => err }
  } catch (e) { await stop(); throw e }
}

async function overlayStatus (url: string): Promise<Record<string, number>> {
  const c = new AgentClient(url)
  try { return (await c.status() as { overlay: Record<string, number> }).overlay } finally { await c.close() }
}

async function until (what: string, cond: () => Promise<boolean>, timeoutMs: number): Promise<number> {
  const t0 = Date.now()
  while (!await cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out (${timeoutMs} ms) waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 5))
  }
  return Date.now() - t0
}

test('berth agents on an overlay: a put is announced, hint-less gets find it (events and DHT)', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-overlay-cli-'))
  const daemons: Daemon[] = []
  const agentArgs = ['agent', '--json', '--listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0']
  try {
    const boot = await daemon(['overlay', '--json'])
    daemons.push(boot)
    const bootAddr = boot.info.multiaddrs[0] as string

    const a = await daemon([...agentArgs, '--overlay-listen', '/ip4/127.0.0.1/tcp/0', '--bootstrap', bootAddr])
    daemons.push(a)
    const b = await daemon([...agentArgs, '--bootstrap', bootAddr])
    daemons.push(b)
    for (const d of [a, b]) {
      assert.match(d.info.overlay.peerId, /^12D3Koo/)
      assert.ok(d.info.overlay.multiaddrs.length > 0 && d.info.overlay.multiaddrs.every((m: string) => m.startsWith('/ip4/127.0.0.1/tcp/')), JSON.stringify(d.info))
      assert.ok(d.info.overlay.peers >= 1, 'joined')
    }
    // let gossipsub's subscriptions spread (exchanged on connection; one heartbeat to be safe)
    await new Promise(resolve => setTimeout(resolve, 1200))

    const data = pseudoRandom(3 * 1024 * 1024 + 7, 21)
    const file = join(dir, 'in.bin')
    await writeFile(file, data)
    const t0 = Date.now()
    const put = await runBerth(['put', file, '--agent', a.info.url, '--json'])
    const tPut = Date.now()
    assert.equal(put.code, 0, put.stderr)
    const oid = JSON.parse(put.stdout.toString()).oid as string
    assert.equal(oid, oidOf(data))

    // B subscribes to object-available: the event of A's put reaches it within 1 s
    const eventMs = await until('B receives object-available', async () => (await overlayStatus(b.info.url)).recentObjects >= 1, 1000)
    t.diagnostic(`object-available from A's put seen by agent B ${eventMs} ms after \`berth put\` exited (${Date.now() - t0} ms after it was started, process start included); publish → B's handler: ${(await overlayStatus(b.info.url)).lastEventDelayMs} ms`)
    assert.ok((await overlayStatus(b.info.url)).lastEventDelayMs < 1000)
    await until('A announced', async () => (await overlayStatus(a.info.url)).announced >= 1, 10_000)
    t.diagnostic(`A's replica announce done ${Date.now() - tPut} ms after the put exited`)

    // B: no hint; the recent event gives it A
    const outB = join(dir, 'out-b.bin')
    let t1 = Date.now()
    const getB = await runBerth(['get', oid, '--agent', b.info.url, '-o', outB])
    t.diagnostic(`berth get with no hint on B: ${Date.now() - t1} ms (process start included)`)
    assert.equal(getB.code, 0, getB.stderr)
    assert.ok((await readFile(outB)).equals(data))
    const sb = await overlayStatus(b.info.url)
    assert.equal(sb.recentHits, 1)
    assert.equal(sb.dhtLookups, 0)

    // C, configured by file, joins after the event: only the DHT can tell it where the object is
    const config = join(dir, 'c.json')
    await writeFile(config, JSON.stringify({ overlay: { listen: '/ip4/127.0.0.1/tcp/0', bootstrap: [bootAddr] } }))
    const c = await daemon([...agentArgs, '--config', config])
    daemons.push(c)
    assert.ok(c.info.overlay.multiaddrs.length > 0)
    const outC = join(dir, 'out-c.bin')
    t1 = Date.now()
    const getC = await runBerth(['get', oid, '--agent', c.info.url, '-o', outC])
    t.diagnostic(`berth get with no hint on C (DHT lookup): ${Date.now() - t1} ms (process start included)`)
    assert.equal(getC.code, 0, getC.stderr)
    assert.ok((await readFile(outC)).equals(data))
    const sc = await overlayStatus(c.info.url)
    assert.equal(sc.dhtLookups, 1)
    assert.equal(sc.recentHits, 0)
  } finally {
    const ts = Date.now()
    for (const d of daemons.reverse()) assert.equal(await d.stop(), 0, d.stderr())
    t.diagnostic(`stopping the 4 daemons: ${Date.now() - ts} ms`)
    await rm(dir, { recursive: true, force: true })
  }
})

test('berth agent: a bad --bootstrap or config overlay is a config error, exit 2', async () => {
  const r = await runBerth(['agent', '--listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', '--bootstrap', 'not-a-multiaddr'])
  assert.equal(r.code, 2, r.stderr)
  assert.match(r.stderr, /ERR_INVALID_CONFIG/)
  const dir = await mkdtemp(join(tmpdir(), 'berth-overlay-cli-'))
  try {
    const config = join(dir, 'bad.json')
    await writeFile(config, JSON.stringify({ overlay: { bootstrap: 'one' } }))
    const r2 = await runBerth(['agent', '--listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', '--config', config])
    assert.equal(r2.code, 2, r2.stderr)
    assert.match(r2.stderr, /overlay\.bootstrap/)
  } finally { await rm(dir, { recursive: true, force: true }) }
})

test('berth start --overlay-listen: the node runs an overlay node and reports it', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-overlay-start-'))
  try {
    const node = await daemon(['start', '--json', '--dir', dir, '--listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', '--locker-listen', '127.0.0.1:0', '--overlay-listen', '/ip4/127.0.0.1/tcp/0'])
    try {
      assert.match(node.info.overlay.peerId, /^12D3Koo/)
      assert.ok(node.info.overlay.multiaddrs[0].startsWith('/ip4/127.0.0.1/tcp/'))
      const s = await overlayStatus(node.info.agent.url)
      assert.equal(s.dhtLookups, 0)
    } finally { assert.equal(await node.stop(), 0, node.stderr()) }
  } finally { await rm(dir, { recursive: true, force: true }) }
})
