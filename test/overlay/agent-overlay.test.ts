import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import { createOverlayNode, type OverlayNode } from '../../src/overlay/registry.ts'
import type { Agent } from '../../src/agent/agent.ts'
import { startAgent, pseudoRandom, oidOf, readAll } from '../agent/_helpers.ts'

const cleanups: Array<() => Promise<void>> = []
after(async () => { for (const c of cleanups.reverse()) await c() })

test('an agent with an overlay finds replicas for a get with no hints', async (t) => {
  const na: OverlayNode = await createOverlayNode()
  await na.start()
  cleanups.push(async () => await na.stop())
  const nb: OverlayNode = await createOverlayNode({ bootstrap: na.multiaddrs })
  await nb.start()
  cleanups.push(async () => await nb.stop())

  const a: Agent = await startAgent()
  cleanups.push(async () => await a.stop())
  const b: Agent = await startAgent({ overlay: nb })
  cleanups.push(async () => await b.stop())
  const plain: Agent = await startAgent()
  cleanups.push(async () => await plain.stop())
  const ca = new AgentClient(a.url); const cb = new AgentClient(b.url); const cp = new AgentClient(plain.url)
  cleanups.push(async () => { await ca.close(); await cb.close(); await cp.close() })

  const data = pseudoRandom(3 * 1024 * 1024 + 17, 5)
  const put = await ca.put({ bytes: data })
  assert.equal(put.oid, oidOf(data))

  // without an overlay, no hint means not found
  await assert.rejects(cp.get(put.oid), (err: { code?: string }) => err.code === 'ERR_NOT_FOUND')

  // before the announce the overlay knows nothing either
  await assert.rejects(cb.get(put.oid), (err: { code?: string }) => err.code === 'ERR_NOT_FOUND')

  await na.announceReplica(put.oid, a.selfHint.uri)
  const t0 = Date.now()
  const got = await cb.get(put.oid)
  const bytes = await readAll(got.stream)
  t.diagnostic(`get with no hint through the overlay: ${Date.now() - t0} ms for ${data.length} bytes`)
  assert.equal(bytes.length, data.length)
  assert.ok(bytes.equals(data))
})

test('file: hints from the overlay are ignored', async () => {
  const fake = { findReplicas: async () => ['file:///etc/', 'not a uri'] }
  const agent = await startAgent({ overlay: fake })
  const c = new AgentClient(agent.url)
  try {
    await assert.rejects(c.get(oidOf(Buffer.from('nowhere'))), (err: { code?: string }) => err.code === 'ERR_NOT_FOUND')
  } finally { await c.close(); await agent.stop() }
})
