/**
 * Multipath over real links: a sender host in a network namespace joined to this one by two
 * veth links shaped with tbf (bench/lib/netns.ts), the sending agent a `berth agent` process
 * inside it (peer API on 0.0.0.0, so reached at 10.77.1.2 over link 0 and 10.77.2.2 over
 * link 1), the receiving agent in this process with its default pipeline (multipath).
 *
 * Correctness only — no timed assertions (the figures belong to bench/multipath.ts); the times
 * seen are logged. Skipped LOUDLY only when namespaces cannot be made here (no CAP_NET_ADMIN,
 * no `ip`/`tc`). Another harness holding the namespace (a bench run) is waited for.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import type { ChildProcess } from 'node:child_process'
import { writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { agentReady, createTwoLinkHost, netnsUnavailable, type TwoLinkHost } from '../../bench/lib/netns.ts'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import type { Agent } from '../../src/agent/agent.ts'
import { oidOf, pseudoRandom, readAll, startAgent, tempDir } from '../agent/_helpers.ts'

const unavailable = await netnsUnavailable()
if (unavailable !== undefined) process.stderr.write(`# multipath-netns: SKIPPED LOUDLY: ${unavailable}\n`)
const MiB = 1024 * 1024
const ROOT = new URL('../../', import.meta.url).pathname
const BIN = join(ROOT, 'bin', 'berth.js')
const SENDER_API = 4650
const SENDER_PEER = 4651

function log (s: string): void { process.stderr.write(`# multipath-netns: ${s}\n`) }
const mib = (n: number): string => `${(n / MiB).toFixed(2)} MiB`

describe('multipath over two shaped links (network namespace)', { skip: unavailable !== undefined ? `SKIPPED LOUDLY: ${unavailable}` : false, timeout: 900_000 }, () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let host: TwoLinkHost
  let sender: ChildProcess | undefined
  let senderErr = ''
  const data = pseudoRandom(16 * MiB + 54321, 77)
  const oid = oidOf(data)
  let hints: string[] = []

  before(async () => {
    tmp = await tempDir('berth-mp-netns-')
    const file = join(tmp.dir, 'object.bin')
    await writeFile(file, data)
    host = await createTwoLinkHost({ rates: ['40mbit', '40mbit'], log })
    // The sender, inside the namespace: local API on the namespace's loopback, peer API on both links.
    sender = host.exec(process.execPath, [BIN, 'agent', '--listen', `127.0.0.1:${SENDER_API}`, '--peer-listen', `0.0.0.0:${SENDER_PEER}`, '--allow-path', tmp.dir, '--json'], { cwd: ROOT })
    sender.stderr?.setEncoding('utf8').on('data', (d: string) => { senderErr = (senderErr + d).slice(-20000) })
    await agentReady(sender, 'sender agent in the namespace', () => senderErr, 120_000)
    const put = await host.run(process.execPath, [BIN, 'put', file, '--agent', `http://127.0.0.1:${SENDER_API}`, '--json'], 120_000)
    assert.equal(put.code, 0, `put into the sender: ${put.stderr}`)
    assert.equal((JSON.parse(put.stdout) as { oid: string }).oid, oid)
    hints = host.addrs.map(a => `berth://${a}:${SENDER_PEER}`)
    log(`sender ${hints.join(', ')}; links ${host.shaping.map(s => `${s.rate} (tbf burst ${s.burst} latency ${s.latency})`).join(' + ')}`)
  })

  after(async () => {
    if (sender?.pid !== undefined && sender.exitCode === null) { try { process.kill(-sender.pid, 'SIGKILL') } catch {} }
    await host?.destroy()
    await tmp?.cleanup()
  })

  /** A receiving agent with an empty store for each case. */
  async function withReceiver (fn: (receiver: Agent, client: AgentClient) => Promise<void>, options: Parameters<typeof startAgent>[0] = {}): Promise<void> {
    const receiver = await startAgent(options)
    try { await fn(receiver, new AgentClient(receiver.url)) } finally { await receiver.stop() }
  }

  const counters = (): [number, number] => [host.bytesFromNs(0), host.bytesFromNs(1)]

  it('a get over two 40 mbit links completes, verifies, and both links carry bytes', { timeout: 180_000 }, async () => {
    await withReceiver(async (receiver, client) => {
      const before = counters()
      const t0 = performance.now()
      const got = await readAll((await client.get(oid, { hints })).stream)
      const ms = performance.now() - t0
      const after = counters()
      const per = [after[0] - before[0], after[1] - before[1]]
      log(`two links: ${mib(data.length)} in ${(ms / 1000).toFixed(2)} s (${(data.length * 8 / ms / 1e3).toFixed(1)} mbit/s); link 0 ${mib(per[0])}, link 1 ${mib(per[1])}`)
      log(`receiver's pipeline: ${JSON.stringify((await (await fetch(`${receiver.url}/v1/status`)).json()).plugins)}`)
      assert.equal(got.length, data.length)
      assert.ok(got.equals(data), 'the bytes are the object')
      for (const i of [0, 1]) assert.ok(per[i] >= data.length / 10, `link ${i} carried ${mib(per[i])}, less than a tenth of the object: ${per.map(mib).join(' / ')}`)
    })
  })

  it('with one link taken down mid-transfer, the get completes over the other', { timeout: 180_000 }, async () => {
    await withReceiver(async (_receiver, client) => {
      const before = counters()
      const t0 = performance.now()
      const { stream } = await client.get(oid, { hints })
      // Cut link 1 once a quarter of the object has crossed the links (what the client has
      // been handed lags behind: the receiver delivers in order).
      let cutAt: number | undefined
      let cutCounters: [number, number] | undefined
      let delivered = 0
      const cut = (): void => {
        const now = counters()
        if (cutAt !== undefined || (now[0] - before[0]) + (now[1] - before[1]) < data.length / 4) return
        cutAt = performance.now() - t0
        void host.setLink(1, false).then(() => { cutCounters = counters() })
        log(`link 1 down ${(cutAt / 1000).toFixed(2)} s in: link 0 ${mib(now[0] - before[0])}, link 1 ${mib(now[1] - before[1])} crossed, ${mib(delivered)} delivered`)
      }
      const timer = setInterval(cut, 5)
      const parts: Buffer[] = []
      let after: [number, number] = before
      try {
        for await (const p of stream) {
          parts.push(Buffer.from(p))
          delivered += p.byteLength
        }
        after = counters()
      } finally {
        clearInterval(timer)
        await host.setLink(1, true)
      }
      const ms = performance.now() - t0
      log(`one link cut: ${mib(delivered)} in ${(ms / 1000).toFixed(2)} s; link 0 ${mib(after[0] - before[0])}, link 1 ${mib(after[1] - before[1])} (after the cut: link 0 ${mib(after[0] - (cutCounters?.[0] ?? NaN))}, link 1 ${mib(after[1] - (cutCounters?.[1] ?? NaN))})`)
      assert.ok(cutAt !== undefined, 'the link was cut mid-transfer')
      const got = Buffer.concat(parts)
      assert.equal(got.length, data.length)
      assert.ok(got.equals(data), 'the bytes are the object')
      assert.ok(after[1] - cutCounters![1] < 64 * 1024, 'nothing crossed link 1 while it was down')
    })
  })

  it('on very unequal links (10 + 1 mbit) an idle fast path borrows the slow one\'s tail; switched off, it does not', { timeout: 240_000 }, async () => {
    const small = pseudoRandom(4 * MiB + 777, 78)
    const file = join(tmp.dir, 'small.bin')
    await writeFile(file, small)
    const put = await host.run(process.execPath, [BIN, 'put', file, '--agent', `http://127.0.0.1:${SENDER_API}`, '--json'], 120_000)
    assert.equal(put.code, 0, put.stderr)
    const smallOid = (JSON.parse(put.stdout) as { oid: string }).oid
    await host.setRate(0, '10mbit')
    await host.setRate(1, '1mbit')
    try {
      const seen: Record<string, { ms: number, borrowed: number }> = {}
      for (const borrow of [true, false]) {
        await withReceiver(async (receiver, client) => {
          const t0 = performance.now()
          const got = await readAll((await client.get(smallOid, { hints })).stream)
          const ms = performance.now() - t0
          assert.ok(got.equals(small), 'the bytes are the object')
          const plugins = (await (await fetch(`${receiver.url}/v1/status`)).json()).plugins as Array<{ name: string, stats?: { borrowed: number, duplicates: number } }>
          const stats = plugins.find(p => p.name === 'multipath')!.stats!
          seen[String(borrow)] = { ms, borrowed: stats.borrowed }
          log(`10 + 1 mbit, borrowing ${borrow ? 'on' : 'off'}: ${mib(small.length)} in ${(ms / 1000).toFixed(2)} s; ${JSON.stringify(stats)}`)
        }, { pipeline: [{ type: 'multipath', borrow, paths: [{ type: 'peer' }] }] })
      }
      assert.ok(seen.true.borrowed > 0, 'the fast path borrowed from the slow one')
      assert.equal(seen.false.borrowed, 0)
    } finally {
      await host.setRate(0, '40mbit')
      await host.setRate(1, '40mbit')
    }
  })
})
