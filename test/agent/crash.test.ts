/**
 * kill -9 of an agent in the middle of a put and of a get, then a restart on the same store:
 * no half object is listed, every listed object's chunks verify, and the next get completes.
 * Size: BERTH_CRASH_SIZE bytes (default 192 MiB; the closing measurement uses 1 GiB).
 */
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn, type ChildProcess } from 'node:child_process'
import { createInterface } from 'node:readline'
import { createHash } from 'node:crypto'
import { request } from 'undici'
import { Readable } from 'node:stream'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import { openStore } from '../../src/store/index.ts'
import { cidFromDigest } from '../../src/core/naming.ts'
import { tempDir } from './_helpers.ts'

const SIZE = Number(process.env.BERTH_CRASH_SIZE ?? 192 * 1024 * 1024)
const children = new Set<ChildProcess>()

interface Running { url: string, peerUrl: string, hint: string, child: ChildProcess }

async function spawnAgent (storeDir: string): Promise<Running> {
  const child = spawn(process.execPath, ['--import', 'tsx', new URL('./_agent-process.ts', import.meta.url).pathname, storeDir], { stdio: ['ignore', 'pipe', 'inherit'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  const line = await new Promise<string>((resolve, reject) => {
    createInterface({ input: child.stdout! }).once('line', resolve)
    child.once('exit', code => reject(new Error(`agent exited with ${code}`)))
  })
  return { ...JSON.parse(line), child }
}

async function kill9 (r: Running): Promise<void> {
  if (r.child.exitCode !== null || r.child.signalCode !== null) return
  const exited = new Promise(resolve => r.child.once('exit', resolve))
  r.child.kill('SIGKILL')
  await exited
}

/** Deterministic bytes generated on the fly: the object is never held in memory. */
async function * generate (size: number, seed: string): AsyncGenerator<Buffer> {
  const block = 1024 * 1024
  for (let at = 0, i = 0; at < size; at += block, i++) {
    const out = Buffer.allocUnsafe(Math.min(block, size - at))
    const h = createHash('sha256').update(`${seed}:${i}`).digest()
    for (let o = 0; o < out.length; o += 32) { h.writeUInt32LE(o, 0); h.copy(out, o, 0, Math.min(32, out.length - o)) }
    yield out
  }
}

async function oidOfGenerated (size: number, seed: string): Promise<string> {
  const h = createHash('sha256')
  for await (const b of generate(size, seed)) h.update(b)
  return cidFromDigest(h.digest())
}

/** Opens the store the dead agent left and reads every chunk of every listed object (each read verifies). */
async function verifyStore (dir: string): Promise<string[]> {
  const store = await openStore({ kind: 'disk', dir })
  try {
    const oids: string[] = []
    for await (const o of store.objects()) {
      oids.push(o.oid)
      const cids: string[] = []
      let size = 0
      for await (const d of store.manifest(o.oid)) { cids.push(d.cid); size += d.length }
      assert.equal(size, o.size, `manifest of ${o.oid} covers ${size} of ${o.size} bytes`)
      const h = createHash('sha256')
      let i = 0
      for await (const c of store.getMany(cids)) { assert.equal(c.cid, cids[i++]); h.update(c.bytes) }
      assert.equal(cidFromDigest(h.digest()), o.oid, 'a listed object does not hash to its OID')
    }
    await store.gc()
    return oids
  } finally { await store.close() }
}

after(() => { for (const c of children) c.kill('SIGKILL') })

describe('crash safety (kill -9)', { timeout: 600_000 }, () => {
  it('kill -9 during a put: nothing half-stored, store verifies, the put then succeeds', async () => {
    const { dir, cleanup } = await tempDir()
    try {
      const oid = await oidOfGenerated(SIZE, 'put')
      let agent = await spawnAgent(dir)
      let sent = 0
      const upload = request(`${agent.url}/v1/objects`, {
        method: 'POST',
        body: Readable.from((async function * () {
          for await (const b of generate(SIZE, 'put')) {
            sent += b.length
            if (sent > SIZE / 2) { await kill9(agent); return }
            yield b
          }
        })())
      })
      await upload.then(() => {}, () => {})
      const listed = await verifyStore(dir)
      assert.ok(!listed.includes(oid), 'a half-uploaded object is listed')
      agent = await spawnAgent(dir)
      const client = new AgentClient(agent.url)
      try {
        const res = await client.put({ stream: generate(SIZE, 'put') })
        assert.equal(res.oid, oid)
      } finally { await client.close(); await kill9(agent) }
      assert.ok((await verifyStore(dir)).includes(oid))
    } finally { await cleanup() }
  })

  it('kill -9 during a get: nothing half-stored, store verifies, the next get completes', async () => {
    const src = await tempDir(); const dst = await tempDir()
    try {
      const source = await spawnAgent(src.dir)
      const put = await new AgentClient(source.url).put({ stream: generate(SIZE, 'get') })
      let receiver = await spawnAgent(dst.dir)
      const res = await request(`${receiver.url}/v1/objects/${put.oid}?hint=${encodeURIComponent(source.hint)}`)
      let got = 0
      try {
        for await (const b of res.body) {
          got += b.length
          if (got > SIZE / 2) { await kill9(receiver); break }
        }
      } catch {}
      await kill9(receiver)
      assert.ok(!(await verifyStore(dst.dir)).includes(put.oid), 'a half-fetched object is listed')
      receiver = await spawnAgent(dst.dir)
      const client = new AgentClient(receiver.url)
      try {
        const { stream } = await client.get(put.oid, { hints: [source.hint] })
        const h = createHash('sha256')
        for await (const b of stream) h.update(b)
        assert.equal(cidFromDigest(h.digest()), put.oid)
      } finally { await client.close(); await kill9(receiver); await kill9(source) }
      assert.ok((await verifyStore(dst.dir)).includes(put.oid))
    } finally { await src.cleanup(); await dst.cleanup() }
  })
})
