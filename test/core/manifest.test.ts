import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { randomBytes } from 'node:crypto'
import { CID } from 'multiformats/cid'
import { base36 } from 'multiformats/bases/base36'
import { base58btc } from 'multiformats/bases/base58'
import { MANIFEST_ENTRY, MAX_CHUNK_LENGTH, PackedManifest, packManifest } from '../../src/core/manifest.ts'
import { cidFromDigest, DIGEST_LENGTH, toNi } from '../../src/core/naming.ts'
import type { Descriptor } from '../../src/core/chunker/types.ts'

/** Contiguous descriptors for the given lengths, each chunk a fresh random digest unless `digests` says which. */
function descriptorsOf (lengths: readonly number[], digests: readonly Uint8Array[] = lengths.map(() => randomBytes(DIGEST_LENGTH))): Descriptor[] {
  const out: Descriptor[] = []
  let offset = 0
  lengths.forEach((length, i) => {
    out.push({ cid: cidFromDigest(digests[i]), offset, length })
    offset += length
  })
  return out
}

function descriptorsOfManifest (m: PackedManifest): Descriptor[] {
  return [...m.descriptors()]
}

describe('PackedManifest', () => {
  it('packs 36 bytes per entry: the 32-byte digest, then the length as uint32 big-endian', () => {
    assert.equal(MANIFEST_ENTRY, 36)
    const digests = [randomBytes(32), randomBytes(32), randomBytes(32)]
    const lengths = [1, 0x01020304, MAX_CHUNK_LENGTH]
    const m = PackedManifest.from(descriptorsOf(lengths, digests))
    assert.equal(m.count, 3)
    assert.equal(m.size, 1 + 0x01020304 + MAX_CHUNK_LENGTH)
    const entries = m.entries
    assert.equal(entries.byteLength, 3 * 36)
    for (let i = 0; i < 3; i++) {
      assert.ok(entries.subarray(i * 36, i * 36 + 32).equals(digests[i]), `digest ${i}`)
      assert.equal(entries.readUInt32BE(i * 36 + 32), lengths[i], `length ${i}`)
      assert.ok(m.digest(i).equals(digests[i]))
      assert.equal(m.length(i), lengths[i])
    }
    assert.deepEqual([...entries.subarray(36 + 32, 36 + 36)], [1, 2, 3, 4])
    assert.deepEqual([...entries.subarray(2 * 36 + 32)], [0xff, 0xff, 0xff, 0xff])
  })

  it('round trips: from → entries → decode → descriptors gives the original descriptors', () => {
    const lengths = Array.from({ length: 500 }, (_, i) => 1 + ((i * 7919) % 300_000))
    lengths.push(MAX_CHUNK_LENGTH, 1, MAX_CHUNK_LENGTH) // offsets past 2^32 must not wrap
    const original = descriptorsOf(lengths)
    const packed = PackedManifest.from(original)
    assert.deepEqual(descriptorsOfManifest(packed), original)
    const decoded = PackedManifest.decode(Buffer.from(packed.entries))
    assert.equal(decoded.count, original.length)
    assert.equal(decoded.size, lengths.reduce((a, b) => a + b, 0))
    assert.ok(decoded.size > 2 * 0xffffffff)
    assert.deepEqual(descriptorsOfManifest(decoded), original)
    assert.ok(decoded.entries.equals(packed.entries))
    // The last descriptor's offset lies past 2^33.
    assert.equal(descriptorsOfManifest(decoded).at(-1)!.offset, decoded.size - MAX_CHUNK_LENGTH)
  })

  it('descriptors() names chunks canonically, whatever spelling the input used', () => {
    const digests = [randomBytes(32), randomBytes(32), randomBytes(32)]
    const canonical = descriptorsOf([10, 20, 30], digests)
    const spelled = canonical.map((d, i) => ({
      ...d,
      cid: i === 0 ? CID.parse(d.cid).toString(base36) : i === 1 ? CID.parse(d.cid).toString(base58btc) : toNi(d.cid)
    }))
    assert.notDeepEqual(spelled, canonical)
    assert.deepEqual(descriptorsOfManifest(PackedManifest.from(spelled)), canonical)
  })

  it('an empty manifest has no entries, no size and no descriptors; it round trips', () => {
    for (const m of [PackedManifest.empty(), PackedManifest.empty(0), PackedManifest.from([]), PackedManifest.decode(Buffer.alloc(0))]) {
      assert.equal(m.count, 0)
      assert.equal(m.size, 0)
      assert.equal(m.entries.byteLength, 0)
      assert.deepEqual(descriptorsOfManifest(m), [])
      assert.deepEqual([...m.distinct()], [])
    }
  })

  it('grows past its initial capacity, keeping every entry (10,000 pushes from capacity 1 and 0)', () => {
    for (const capacity of [1, 0, 64]) {
      const m = PackedManifest.empty(capacity)
      const digests: Buffer[] = []
      const lengths: number[] = []
      let size = 0
      for (let i = 0; i < 10_000; i++) {
        const digest = randomBytes(32)
        const length = 1 + (i * 104_729) % 1_000_000
        m.push(digest, length)
        digests.push(digest)
        lengths.push(length)
        size += length
        assert.equal(m.count, i + 1)
      }
      assert.equal(m.size, size)
      assert.equal(m.entries.byteLength, 10_000 * 36)
      for (let i = 0; i < 10_000; i++) {
        assert.ok(m.digest(i).equals(digests[i]), `capacity ${capacity}: digest ${i}`)
        assert.equal(m.length(i), lengths[i], `capacity ${capacity}: length ${i}`)
      }
      assert.deepEqual(descriptorsOfManifest(m), descriptorsOf(lengths, digests))
      assert.deepEqual(descriptorsOfManifest(PackedManifest.decode(Buffer.from(m.entries))), descriptorsOf(lengths, digests))
      assert.equal(m.distinct().length, 10_000)
    }
  })

  it('push copies the digest: the caller may reuse its buffer', () => {
    const m = PackedManifest.empty(2)
    const scratch = randomBytes(32)
    const first = Buffer.from(scratch)
    m.push(scratch, 5)
    scratch.fill(0)
    m.push(scratch, 6)
    assert.ok(m.digest(0).equals(first))
    assert.ok(m.digest(1).equals(Buffer.alloc(32)))
  })

  it('decode wraps the buffer; pushing to a decoded manifest leaves the decoded buffer as it was', () => {
    const original = descriptorsOf([100, 200])
    const stored = Buffer.from(PackedManifest.from(original).entries)
    const copy = Buffer.from(stored)
    const m = PackedManifest.decode(stored)
    assert.equal(m.size, 300)
    const extra = randomBytes(32)
    m.push(extra, 50)
    assert.ok(stored.equals(copy), 'the decoded buffer is not written past or over')
    assert.deepEqual(descriptorsOfManifest(m), [...original, { cid: cidFromDigest(extra), offset: 300, length: 50 }])
    assert.equal(m.size, 350)
  })

  it('decode refuses a buffer that is not whole entries with ERR_BAD_REQUEST', () => {
    const whole = PackedManifest.from(descriptorsOf([1, 2, 3])).entries
    for (const length of [1, 35, 37, 71, 3 * 36 - 1, 3 * 36 + 1]) {
      assert.throws(() => PackedManifest.decode(Buffer.alloc(length)), { code: 'ERR_BAD_REQUEST', name: 'BadRequestError' }, `${length} bytes`)
    }
    assert.throws(() => PackedManifest.decode(whole.subarray(0, whole.byteLength - 1)), { code: 'ERR_BAD_REQUEST' })
    assert.equal(PackedManifest.decode(Buffer.from(whole)).count, 3)
  })

  it('distinct() gives each chunk once, at its first index, in first-use order', () => {
    const [a, b, c] = [randomBytes(32), randomBytes(32), randomBytes(32)]
    const m = PackedManifest.from(descriptorsOf([10, 20, 10, 30, 20, 10, 10], [a, b, a, c, b, a, a]))
    const distinct = m.distinct()
    assert.ok(distinct instanceof Uint32Array)
    assert.deepEqual([...distinct], [0, 1, 3])
    assert.ok(m.digest(distinct[0]).equals(a))
    assert.ok(m.digest(distinct[1]).equals(b))
    assert.ok(m.digest(distinct[2]).equals(c))
    // a manifest of one chunk over and over
    const same = PackedManifest.from(descriptorsOf([7, 7, 7, 7], [a, a, a, a]))
    assert.deepEqual([...same.distinct()], [0])
    assert.equal(same.size, 28)
  })

  it('distinct() refuses a chunk that appears with two lengths (ERR_BAD_REQUEST)', () => {
    const [a, b] = [randomBytes(32), randomBytes(32)]
    const m = PackedManifest.from(descriptorsOf([10, 20, 11], [a, b, a]))
    assert.throws(() => m.distinct(), (err: Error & { code?: string }) => {
      assert.equal(err.code, 'ERR_BAD_REQUEST')
      assert.match(err.message, /descriptor 2/)
      return true
    })
    const pushed = PackedManifest.empty()
    pushed.push(b, 5)
    pushed.push(b, 6)
    assert.throws(() => pushed.distinct(), { code: 'ERR_BAD_REQUEST' })
  })

  it('from refuses descriptors that are not contiguous from 0 (ERR_BAD_REQUEST)', () => {
    const good = descriptorsOf([100, 200, 300])
    const cases: Array<[string, Descriptor[]]> = [
      ['first offset not 0', good.map((d, i) => i === 0 ? { ...d, offset: 1 } : d)],
      ['a gap', good.map((d, i) => i === 2 ? { ...d, offset: d.offset + 1 } : d)],
      ['an overlap', good.map((d, i) => i === 1 ? { ...d, offset: d.offset - 1 } : d)],
      ['out of order', [good[0], good[2], good[1]]],
      ['offset as a string', good.map((d, i) => i === 1 ? { ...d, offset: String(d.offset) as unknown as number } : d)]
    ]
    for (const [label, descriptors] of cases) {
      assert.throws(() => PackedManifest.from(descriptors), { code: 'ERR_BAD_REQUEST' }, label)
      assert.throws(() => packManifest(descriptors), { code: 'ERR_BAD_REQUEST' }, `packManifest: ${label}`)
    }
    assert.equal(PackedManifest.from(good).count, 3)
  })

  it('from refuses bad lengths (ERR_BAD_REQUEST), naming the descriptor', () => {
    for (const bad of [0, -1, 1.5, NaN, Infinity, MAX_CHUNK_LENGTH + 1, 2 ** 53, '5' as unknown as number, undefined as unknown as number]) {
      const descriptors = descriptorsOf([100, 200])
      descriptors.push({ cid: cidFromDigest(randomBytes(32)), offset: 300, length: bad })
      assert.throws(() => PackedManifest.from(descriptors), (err: Error & { code?: string }) => {
        assert.equal(err.code, 'ERR_BAD_REQUEST', String(bad))
        assert.match(err.message, /descriptor 2: bad length/)
        return true
      })
    }
  })

  it('from refuses cids that are not CIDv1 raw sha2-256 (ERR_INVALID_CID)', () => {
    const good = descriptorsOf([100])[0]
    const dagPb = CID.createV1(0x70, CID.parse(good.cid).multihash).toString()
    for (const cid of ['', 'not-a-cid', good.cid.slice(0, -1), dagPb, 'QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n', 42 as unknown as string]) {
      assert.throws(() => PackedManifest.from([{ ...good, cid }]), { code: 'ERR_INVALID_CID' }, String(cid))
    }
  })

  it('push refuses bad lengths (ERR_BAD_REQUEST) and digests not 32 bytes (ERR_INVALID_CID), and stays unchanged', () => {
    const m = PackedManifest.empty(1)
    m.push(randomBytes(32), 10)
    const before = Buffer.from(m.entries)
    for (const bad of [0, -5, 0.5, NaN, MAX_CHUNK_LENGTH + 1]) {
      assert.throws(() => m.push(randomBytes(32), bad), { code: 'ERR_BAD_REQUEST' }, String(bad))
    }
    for (const size of [0, 31, 33, 64]) {
      assert.throws(() => m.push(randomBytes(size), 10), { code: 'ERR_INVALID_CID' }, `${size}-byte digest`)
    }
    assert.equal(m.count, 1)
    assert.equal(m.size, 10)
    assert.ok(m.entries.equals(before))
    // the extremes are fine
    m.push(randomBytes(32), 1)
    m.push(new Uint8Array(32), MAX_CHUNK_LENGTH)
    assert.equal(m.count, 3)
    assert.equal(m.size, 11 + MAX_CHUNK_LENGTH)
    assert.equal(m.length(2), MAX_CHUNK_LENGTH)
  })

  it('push names the entry in its error by index (its own count by default)', () => {
    const m = PackedManifest.empty()
    m.push(randomBytes(32), 1)
    assert.throws(() => m.push(randomBytes(32), 0), /descriptor 1: bad length/)
    assert.throws(() => m.push(randomBytes(32), 0, 17), /descriptor 17: bad length/)
  })

  it('packManifest passes a PackedManifest through and packs descriptors', () => {
    const descriptors = descriptorsOf([5, 6, 7])
    const packed = PackedManifest.from(descriptors)
    assert.equal(packManifest(packed), packed)
    const fromArray = packManifest(descriptors)
    assert.ok(fromArray instanceof PackedManifest)
    assert.notEqual(fromArray, packed)
    assert.ok(fromArray.entries.equals(packed.entries))
    assert.deepEqual(descriptorsOfManifest(fromArray), descriptors)
    assert.equal(packManifest([]).count, 0)
  })
})
