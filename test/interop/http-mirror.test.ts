/**
 * HTTP mirrors as sources (issue 4): plain nginx serves an object and its manifest (as an agent's
 * peer API gives it); an agent gets the object by Range and verifies every chunk. A mirror with a
 * corrupted copy is caught and the chunks come from the next hint; a mirror without the manifest
 * is passed over.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { mkdir, writeFile } from 'node:fs/promises'
import { join } from 'node:path'
import { startNginx, type Nginx } from '../../bench/lib/anchors.ts'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import type { Agent } from '../../src/agent/agent.ts'
import { pseudoRandom, readAll, startAgent, tempDir } from '../agent/_helpers.ts'
import { ensurePackages } from './_apt.ts'

const nginxMissing = ensurePackages(['/usr/sbin/nginx'], ['nginx-light'])
const MiB = 1024 * 1024

describe('HTTP mirrors (nginx) as sources', { skip: nginxMissing !== undefined ? `SKIPPED LOUDLY: ${nginxMissing}` : false }, async () => {
  let tmp: Awaited<ReturnType<typeof tempDir>>
  let publisher: Agent
  let good: Nginx
  let bad: Nginx
  const data = pseudoRandom(24 * MiB + 12345, 41)
  let oid = ''

  before(async () => {
    tmp = await tempDir('berth-mirror-')
    publisher = await startAgent()
    oid = (await new AgentClient(publisher.url).put({ bytes: data })).oid
    // Publishing to a mirror: the object's bytes, and its manifest from the agent's peer API beside them.
    const manifest = Buffer.from(await (await fetch(`${publisher.peerUrl}/v1/objects/${oid}/manifest`)).arrayBuffer())
    const corrupt = Buffer.from(data)
    for (let at = 5 * MiB; at < corrupt.length; at += 3 * MiB) corrupt[at] ^= 0xff
    await mkdir(join(tmp.dir, 'good'), { recursive: true })
    await mkdir(join(tmp.dir, 'bad'), { recursive: true })
    await writeFile(join(tmp.dir, 'good', 'video.bin'), data)
    await writeFile(join(tmp.dir, 'good', 'video.bin.manifest'), manifest)
    await writeFile(join(tmp.dir, 'bad', 'video.bin'), corrupt)
    await writeFile(join(tmp.dir, 'bad', 'video.bin.manifest'), manifest)
    await writeFile(join(tmp.dir, 'bad', 'nomanifest.bin'), data)
    good = await startNginx(join(tmp.dir, 'good', 'video.bin'), join(tmp.dir, 'nginx-good'))
    bad = await startNginx(join(tmp.dir, 'bad', 'video.bin'), join(tmp.dir, 'nginx-bad'))
  })
  after(async () => {
    await good?.stop()
    await bad?.stop()
    await publisher?.stop()
    await tmp?.cleanup()
  })

  /** A receiving agent with an empty store for each case (a fetched object would be served from its store). */
  async function withReceiver (fn: (receiver: Agent, client: AgentClient) => Promise<void>): Promise<void> {
    const receiver = await startAgent()
    try { await fn(receiver, new AgentClient(receiver.url)) } finally { await receiver.stop() }
  }

  it('an object served by nginx with its manifest is fetched by Range and verified', async () => {
    await withReceiver(async (receiver, client) => {
      const { stream } = await client.get(oid, { hints: [good.url] })
      assert.ok((await readAll(stream)).equals(data))
      assert.match(await (await fetch(`${receiver.url}/metrics`)).text(), /berth_agent_bytes_received_total\{plugin="http"\} [1-9]/)
    })
  })

  it('a mirror serving a corrupted copy is caught, and the chunks come from the next hint', async () => {
    await withReceiver(async (receiver, client) => {
      const { stream } = await client.get(oid, { hints: [`${bad.url};priority=0`, `${good.url};priority=1`] })
      assert.ok((await readAll(stream)).equals(data))
      const metrics = await (await fetch(`${receiver.url}/metrics`)).text()
      assert.match(metrics, /berth_agent_chunks_rejected_total\{plugin="http"\} [1-9]/, 'the bad chunks were caught')
    })
  })

  it('with only the corrupted mirror the get fails and stores nothing', async () => {
    await withReceiver(async (receiver, client) => {
      await assert.rejects(async () => { await readAll((await client.get(oid, { hints: [bad.url] })).stream) })
      assert.equal(await receiver.store.stat(oid), undefined)
    })
  })

  it('a mirror without the manifest is passed over for the next hint', async () => {
    await withReceiver(async (_receiver, client) => {
      const noManifest = bad.url.replace(/video\.bin$/, 'nomanifest.bin')
      const { stream } = await client.get(oid, { hints: [`${noManifest};priority=0`, `${good.url};priority=1`] })
      assert.ok((await readAll(stream)).equals(data))
    })
  })
})
