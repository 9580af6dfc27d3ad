import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { CID } from 'multiformats/cid'
import { base36 } from 'multiformats/bases/base36'
import * as Digest from 'multiformats/hashes/digest'
import { cidFromDigest } from '../../src/core/naming.ts'
import { parseName } from '../../src/store/common.ts'
import { createMemoryStore, openStore } from '../../src/store/index.ts'
import { storeCompliance } from './compliance.ts'

storeCompliance('MemoryStore', async () => ({ store: createMemoryStore(), cleanup: async () => {} }))
storeCompliance('openStore({ kind: "memory" })', async () => ({ store: await openStore({ kind: 'memory' }), cleanup: async () => {} }))

describe('chunk names inside the stores', () => {
  it('print and parse exactly as multiformats does', () => {
    for (let i = 0; i < 2000; i++) {
      const digest = randomBytes(32)
      const cid = cidFromDigest(digest)
      assert.equal(cid, CID.createV1(0x55, Digest.create(0x12, digest)).toString())
      const parsed = parseName(cid)
      assert.equal(parsed.key, cid)
      assert.ok(parsed.digest.equals(digest))
    }
  })

  it('map other spellings of a cid to the canonical key', () => {
    const digest = randomBytes(32)
    const cid = cidFromDigest(digest)
    const parsed = parseName(CID.parse(cid).toString(base36))
    assert.equal(parsed.key, cid)
    assert.ok(parsed.digest.equals(digest))
  })

  it('refuse what is not a raw sha2-256 CIDv1', () => {
    const cid = cidFromDigest(randomBytes(32))
    for (const bad of ['', 'b', cid.slice(0, -1), cid.toUpperCase().replace('B', 'b') + 'x', cid.slice(0, 8) + '1' + cid.slice(9)]) {
      assert.throws(() => parseName(bad), { code: 'ERR_INVALID_CID' }, bad)
    }
    assert.throws(() => parseName('nonsense', undefined), { code: 'ERR_INVALID_CID' })
  })
})
