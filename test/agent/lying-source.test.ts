/**
 * A source that lies about the manifest must never get its bytes accepted as someone else's
 * object: not by a response that completes, not by a file renamed into place, not in the store.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { existsSync } from 'node:fs'
import Fastify, { type FastifyInstance } from 'fastify'
import type { Agent } from '../../src/agent/agent.ts'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import { cidFromDigest } from '../../src/core/naming.ts'
import { encodeChunkHeader, encodeDescriptor, encodeManifestHead, parseChunkRequest } from '../../src/core/wire.ts'
import { startAgent, readAll, tempDir } from './_helpers.ts'

const cid = (b: Buffer): string => cidFromDigest(createHash('sha256').update(b).digest())

describe('a source that lies about the manifest', () => {
  const A = Buffer.alloc(100_000, 'A')
  A.write('PAYLOAD CHOSEN BY THE SOURCE ')
  const C = Buffer.alloc(1000, 'c')
  const victim = cid(Buffer.from('the object the user asked for'))
  let liar: FastifyInstance
  let hint: string
  let agent: Agent
  let client: AgentClient
  let dir: { dir: string, cleanup: () => Promise<void> }

  before(async () => {
    liar = Fastify()
    // Chunk A listed twice, the second time as 1 byte: the bytes would overrun the head's size.
    liar.get('/v1/objects/:oid/manifest', async (_q, reply) => await reply.type('application/x-ndjson').send(
      encodeManifestHead({ oid: victim, size: A.length + 1 + C.length, chunks: 3 }) +
      encodeDescriptor({ cid: cid(A), offset: 0, length: A.length }) +
      encodeDescriptor({ cid: cid(A), offset: A.length, length: 1 }) +
      encodeDescriptor({ cid: cid(C), offset: A.length + 1, length: C.length })))
    liar.post('/v1/chunks', async (q, reply) => {
      const parts: Buffer[] = []
      for (const c of parseChunkRequest(q.body)) { const b = c === cid(A) ? A : C; parts.push(encodeChunkHeader(c, b.length), b) }
      return await reply.type('application/vnd.berth.chunks').send(Buffer.concat(parts))
    })
    await liar.listen({ host: '127.0.0.1', port: 0 })
    hint = `berth://127.0.0.1:${(liar.server.address() as { port: number }).port}`
    dir = await tempDir()
    agent = await startAgent()
    client = new AgentClient(agent.url)
  })
  after(async () => { await client.close(); await agent.stop(); await liar.close(); await dir.cleanup() })

  it('the get fails instead of completing with the source\'s bytes', async () => {
    await assert.rejects(async () => await readAll((await client.get(victim, { hints: [hint] })).stream))
  })

  it('getToFile leaves no file and nothing is stored', async () => {
    await assert.rejects(client.getToFile(victim, dir.dir + '/out', { hints: [hint] }))
    assert.equal(existsSync(dir.dir + '/out'), false)
    assert.equal(await agent.store.stat(victim), undefined)
  })
})
