import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { CID } from 'multiformats/cid'
import * as raw from 'multiformats/codecs/raw'
import * as Digest from 'multiformats/hashes/digest'
import { sha256 } from 'multiformats/hashes/sha2'
import { base58btc } from 'multiformats/bases/base58'
import { base64 } from 'multiformats/bases/base64'
import { cidFromDigest, digestFromName, digestHex, parseCid, parseOid, toNi } from '../../src/core/naming.ts'

const digestOf = (text: string): Buffer => createHash('sha256').update(text).digest()
/** What multiformats alone makes of the bytes: Berth's names must agree with it. */
const multiformatsCid = async (bytes: Uint8Array): Promise<string> => CID.createV1(raw.code, await sha256.digest(bytes)).toString()

const EMPTY_OID = 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'
const hello = cidFromDigest(digestOf('hello'))

describe('OIDs', () => {
  it('names the empty object by the CIDv1 raw of sha2-256("")', async () => {
    assert.equal(cidFromDigest(digestOf('')), EMPTY_OID)
    assert.equal(await multiformatsCid(new Uint8Array(0)), EMPTY_OID)
  })

  it('agrees with multiformats on other inputs', async () => {
    for (const text of ['hello', 'Hello World!', 'x'.repeat(100_000), '\u00e9\u4e2d\ud83d\ude00']) {
      const bytes = new TextEncoder().encode(text)
      assert.equal(cidFromDigest(createHash('sha256').update(bytes).digest()), await multiformatsCid(bytes), text.slice(0, 20))
    }
  })

  it('prints base32 CIDv1 (bafkrei…) and parses to the same name', () => {
    assert.match(hello, /^bafkrei[a-z2-7]{52}$/)
    assert.equal(parseOid(hello), hello)
    assert.equal(parseCid(hello), hello)
    assert.deepEqual(Buffer.from(digestFromName(hello)), digestOf('hello'))
    assert.equal(digestHex(hello), digestOf('hello').toString('hex'))
  })

  it('accepts the same CID in base58btc and prints it canonically', () => {
    assert.equal(parseOid(CID.parse(hello).toString(base58btc)), hello)
  })

  it('refuses a digest that is not 32 bytes', () => {
    assert.throws(() => cidFromDigest(new Uint8Array(31)), { code: 'ERR_INVALID_CID' })
  })
})

describe('ni names (RFC 6920)', () => {
  it('prints ni:///sha-256;<base64url without padding> and reads it back', () => {
    const ni = toNi(hello)
    assert.equal(ni, 'ni:///sha-256;' + digestOf('hello').toString('base64url'))
    assert.match(ni, /^ni:\/\/\/sha-256;[A-Za-z0-9_-]{43}$/)
    assert.equal(parseOid(ni), hello)
    assert.equal(toNi(ni), ni)
  })

  it('reads the example of RFC 6920 section 3 (sha-256 of "Hello World!")', () => {
    const ni = 'ni:///sha-256;f4OxZX_x_FO5LcGBSKHWXfwtSx-j1ncoSt3SABJtkGk'
    assert.equal(parseOid(ni), cidFromDigest(digestOf('Hello World!')))
    assert.equal(toNi(cidFromDigest(digestOf('Hello World!'))), ni)
  })

  it('ignores query parameters, which do not change the name', () => {
    assert.equal(parseOid(toNi(hello) + '?ct=text/plain'), hello)
  })
})

describe('bad names', () => {
  const good = CID.parse(hello)
  const digest = digestOf('hello')
  const niValue = digest.toString('base64url')
  const bad: Array<[string, unknown]> = [
    ['empty string', ''],
    ['too long', hello + 'a'.repeat(200)],
    ['plain words', 'not a cid'],
    ['CIDv0 (Qm…)', 'QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n'],
    ['dag-pb codec', CID.createV1(0x70, good.multihash).toString()],
    ['dag-cbor codec', CID.createV1(0x71, good.multihash).toString()],
    ['sha1 multihash', CID.createV1(raw.code, Digest.create(0x11, digest.subarray(0, 20))).toString()],
    ['blake2b-256 multihash', CID.createV1(raw.code, Digest.create(0xb220, digest)).toString()],
    ['sha2-512 multihash', CID.createV1(raw.code, Digest.create(0x13, createHash('sha512').update('hello').digest())).toString()],
    ['identity multihash', CID.createV1(raw.code, Digest.create(0x00, new Uint8Array([1, 2, 3]))).toString()],
    ['sha2-256 code with a 31-byte digest', CID.createV1(raw.code, Digest.create(0x12, digest.subarray(0, 31))).toString()],
    ['truncated', hello.slice(0, -5)],
    ['trailing garbage', hello + 'a'],
    ['surrounding space', ` ${hello} `],
    ['base64 multibase', good.toString(base64)],
    ['characters outside base32', 'bafkrei' + '1'.repeat(52)],
    ['unknown multibase prefix', 'xafkreibm6jg3ux5qumhcn2b3flc3tyu6dmlb4xa7u5bf44yegnrjhc4yeq'],
    ['ni with sha-512', `ni:///sha-512;${niValue}`],
    ['ni with sha-1', `ni:///sha-1;${niValue}`],
    ['ni with no algorithm', `ni:///;${niValue}`],
    ['ni one character short', `ni:///sha-256;${niValue.slice(1)}`],
    ['ni one character long', `ni:///sha-256;${niValue}A`],
    ['ni with padding', `ni:///sha-256;${niValue}=`],
    ['ni in standard base64', `ni:///sha-256;${digest.toString('base64').replace(/=+$/, '')}`.replace(/[A-Za-z0-9]$/, '+')],
    ['ni with an empty value', 'ni:///sha-256;'],
    ['a number', 42],
    ['null', null],
    ['undefined', undefined],
    ['an object', { toString: () => hello }],
    ['bytes', new TextEncoder().encode(hello)]
  ]

  for (const [label, name] of bad) {
    it(`refuses ${label} with ERR_INVALID_OID`, () => {
      assert.throws(() => parseOid(name as string), { code: 'ERR_INVALID_OID' })
    })
  }

  it('refuses them as chunk CIDs with ERR_INVALID_CID', () => {
    for (const [label, name] of bad) assert.throws(() => parseCid(name as string), { code: 'ERR_INVALID_CID' }, label)
  })

  it('answers with a one-line reason and a 400 status', () => {
    assert.throws(() => parseOid('QmdfTbBqBPQ7VNxZEYEj14VmRuZBkqFbiwReogJgS1zR1n'), (err: Error & { status?: number }) => {
      assert.equal(err.status, 400)
      assert.ok(!err.message.includes('\n'))
      return true
    })
  })
})
