/**
 * A transfer skips chunks the store `has`; the store must keep them until the transfer commits.
 * Review finding: fails against the code as of 955d0c0 (has() now answers true for another open
 * writer's uncommitted chunks, which nothing protects once that writer aborts).
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { Transfer } from '../../src/agent/transfer.ts'
import { PluginRegistry, type TransferPlugin } from '../../src/agent/plugin.ts'
import { createAgentMetrics } from '../../src/agent/metrics.ts'
import { sharedHashPool } from '../../src/core/hash-pool.ts'
import type { Descriptor } from '../../src/core/chunker/types.ts'
import { openDiskStore } from '../../src/store/index.ts'
import { assertSameBytes, chunkBytes, makeObject, type TestObject } from '../store/compliance.ts'

/** Serves one object's manifest and chunks from memory. */
function fixturePlugin (object: TestObject): TransferPlugin {
  const index = new Map(object.descriptors.map((d, i) => [d.cid, i]))
  return {
    name: 'fixture',
    schemes: ['fixture:'],
    async manifest () {
      return {
        size: object.bytes.byteLength,
        chunks: object.descriptors.length,
        descriptors: (async function * (): AsyncGenerator<Descriptor> { yield * object.descriptors })()
      }
    },
    async * chunks (wanted, _hint, o) {
      for (const d of wanted) {
        const source = chunkBytes(object, index.get(d.cid)!)
        const bytes = o.alloc?.(d.length) ?? new Uint8Array(d.length)
        bytes.set(source)
        yield { descriptor: d, bytes }
      }
    }
  }
}

describe('transfer and chunks the store already had', () => {
  it('a chunk the transfer found in the store (another writer\'s, uncommitted) is not collected before the transfer commits', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-transfer-local-'))
    const store = await openDiskStore({ dir })
    try {
      const object = makeObject(4 * 64 * 1024, [64 * 1024])
      // Another writer (a put, or a transfer of an object sharing chunks) wrote chunk 0.
      const other = store.openWriter()
      await other.putChunk(object.descriptors[0].cid, chunkBytes(object, 0))
      // A read indexes the queue at once (before the transfer's writer opens); earlier versions
      // kept uncommitted chunks out of the index and answered ERR_NOT_FOUND here.
      await store.get(object.descriptors[0].cid).catch(() => {})

      const transfer = new Transfer(object.oid, [{ uri: 'fixture://source', priority: 0, weight: 1 }], {
        store, pool: sharedHashPool(), plugins: new PluginRegistry([fixturePlugin(object)]), metrics: createAgentMetrics()
      })
      await transfer.start()
      // Let the manifest reader look at the descriptors: chunk 0 is found with has(), not fetched.
      await new Promise(resolve => setTimeout(resolve, 50))

      // The other writer gives up, and a gc runs while the transfer is still open.
      await other.abort()
      await store.gc()

      const pieces: Uint8Array[] = []
      for await (const piece of transfer.output()) { pieces.push(Buffer.from(piece.bytes)); piece.release?.() }
      assertSameBytes(Buffer.concat(pieces), object.bytes)
      assert.ok(await store.stat(object.oid))
    } finally {
      await store.close()
      await rm(dir, { recursive: true, force: true })
    }
  })
})
