/**
 * What a user of `berth get` sees when sources lie: with a good source behind a bad one the get
 * completes (and the agent's metrics show the rejections); with only a bad source the command
 * fails with ERR_HASH_MISMATCH and leaves no file at the -o path.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { readFile, readdir } from 'node:fs/promises'
import { join } from 'node:path'
import { request } from 'undici'
import type { Agent } from '../../src/agent/agent.ts'
import { startAgent, pseudoRandom, tempDir } from '../agent/_helpers.ts'
import { startEvilPeer, type EvilPeer } from '../agent/_evil-peer.ts'
import { runBerth } from '../interop/_berth-cli.ts'

describe('berth get against sources that send wrong bytes', () => {
  let source: Agent
  let evil: EvilPeer
  let out: { dir: string, cleanup: () => Promise<void> }
  const data = pseudoRandom(3 * 1024 * 1024 + 17, 21)
  let oid: string

  before(async () => {
    source = await startAgent()
    evil = await startEvilPeer(source.peerUrl, n => n % 2 === 0)
    out = await tempDir()
    const res = await request(`${source.url}/v1/objects`, { method: 'POST', body: data })
    oid = (await res.body.json() as { oid: string }).oid
  })
  after(async () => { await evil.close(); await source.stop(); await out.cleanup() })

  it('completes from the second hint and counts the rejected chunks', async () => {
    const receiver = await startAgent()
    try {
      const file = join(out.dir, 'good')
      const r = await runBerth(['get', oid, '--hint', `${evil.hint};priority=0`, '--hint', `${source.selfHint.uri};priority=1`, '-o', file, '--agent', receiver.url])
      assert.equal(r.code, 0, r.stderr)
      assert.ok((await readFile(file)).equals(data))
      const metrics = await (await request(`${receiver.url}/metrics`)).body.text()
      const rejected = /berth_agent_chunks_rejected_total\{plugin="peer"\} (\d+)/.exec(metrics)
      assert.ok(rejected !== null && Number(rejected[1]) > 0, metrics)
    } finally { await receiver.stop() }
  })

  it('with only the bad source: exit 4, ERR_HASH_MISMATCH, no file left', async () => {
    const receiver = await startAgent()
    try {
      const file = join(out.dir, 'bad')
      const r = await runBerth(['get', oid, '--hint', evil.hint, '-o', file, '--agent', receiver.url])
      assert.equal(r.code, 4, r.stderr)
      assert.match(r.stderr, /ERR_HASH_MISMATCH/)
      assert.deepEqual((await readdir(out.dir)).filter(f => f.includes('bad')), [])
    } finally { await receiver.stop() }
  })
})
