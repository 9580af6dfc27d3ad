import { randomBytes, createHash } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createAgent, type Agent, type AgentOptions } from '../../src/agent/agent.ts'
import { cidFromDigest } from '../../src/core/naming.ts'

export async function startAgent (options: AgentOptions = {}): Promise<Agent> {
  const agent = await createAgent({ listen: '127.0.0.1:0', peerListen: '127.0.0.1:0', ...options })
  await agent.start()
  return agent
}

export async function tempDir (prefix = 'berth-test-'): Promise<{ dir: string, cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), prefix))
  return { dir, cleanup: async () => await rm(dir, { recursive: true, force: true }) }
}

/** Deterministic pseudo-random bytes (so failures reproduce). */
export function pseudoRandom (size: number, seed = 1): Buffer {
  const out = Buffer.alloc(size)
  let counter = 0
  for (let at = 0; at < size; at += 32) {
    createHash('sha256').update(`${seed}:${counter++}`).digest().copy(out, at)
  }
  return out
}

export function oidOf (bytes: Uint8Array): string {
  return cidFromDigest(createHash('sha256').update(bytes).digest())
}

export async function readAll (stream: AsyncIterable<Uint8Array>): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const p of stream) parts.push(Buffer.from(p))
  return Buffer.concat(parts)
}

export { randomBytes }
