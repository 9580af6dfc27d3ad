/**
 * Names: an object (and each chunk) is named by a CIDv1 with the raw codec over the sha2-256
 * multihash of its bytes. The same digest is also accepted as an RFC 6920 `ni:` URI.
 */
import { CID } from 'multiformats/cid'
import * as Digest from 'multiformats/hashes/digest'
import { base32 } from 'multiformats/bases/base32'
import { InvalidCidError, InvalidOidError } from './errors.ts'

export const RAW_CODEC = 0x55
export const SHA2_256 = 0x12
export const DIGEST_LENGTH = 32

/** The CID string (base32, `bafkrei…`) of a sha2-256 digest. */
export function cidFromDigest (digest: Uint8Array): string {
  if (digest.length !== DIGEST_LENGTH) throw new InvalidCidError(`digest must be ${DIGEST_LENGTH} bytes, got ${digest.length}`)
  return CID.createV1(RAW_CODEC, Digest.create(SHA2_256, digest)).toString(base32)
}

const NI_PREFIX = 'ni:///sha-256;'
/** `ni://authority/sha-256;…` (RFC 6920 §3): the authority says where to ask, not what it is. */
const NI_WITH_AUTHORITY = /^ni:\/\/[^/?#]*\/sha-256;/

/**
 * Parses a CIDv1-raw-sha2-256 string (or an `ni:` name) and returns its 32-byte digest.
 * Everything else — other codecs, other hashes, CIDv0, garbage — is refused with a code.
 */
export function digestFromName (name: string, ErrorClass: typeof InvalidOidError | typeof InvalidCidError = InvalidOidError): Uint8Array {
  if (typeof name !== 'string' || name.length === 0 || name.length > 200) throw new ErrorClass('name must be a non-empty string of at most 200 characters')
  if (name.startsWith('ni:')) return digestFromNi(name, ErrorClass)
  let cid: CID
  try {
    cid = CID.parse(name)
  } catch (err) {
    throw new ErrorClass(`not a CID: ${JSON.stringify(name.slice(0, 80))}`, { cause: err })
  }
  if (cid.version !== 1) throw new ErrorClass('only CIDv1 names are accepted')
  if (cid.code !== RAW_CODEC) throw new ErrorClass(`CID codec must be raw (0x55), got 0x${cid.code.toString(16)}`)
  if (cid.multihash.code !== SHA2_256 || cid.multihash.digest.length !== DIGEST_LENGTH) throw new ErrorClass('CID hash must be sha2-256')
  return cid.multihash.digest
}

function digestFromNi (name: string, ErrorClass: typeof InvalidOidError): Uint8Array {
  const prefix = NI_WITH_AUTHORITY.exec(name)
  if (prefix === null) throw new ErrorClass('ni names must be ni://[authority]/sha-256;<base64url digest> (only sha-256 is accepted)')
  let rest = name.slice(prefix[0].length)
  const q = rest.indexOf('?') // RFC 6920 allows query parameters; they do not change the name
  if (q >= 0) rest = rest.slice(0, q)
  if (!/^[A-Za-z0-9_-]{43}$/.test(rest)) throw new ErrorClass('ni digest must be 43 base64url characters (sha-256, unpadded)')
  const digest = Buffer.from(rest, 'base64url')
  if (digest.length !== DIGEST_LENGTH) throw new ErrorClass('ni digest must decode to 32 bytes')
  return new Uint8Array(digest)
}

/** Canonical OID string for any accepted spelling (CID or ni). */
export function parseOid (name: string): string {
  return cidFromDigest(digestFromName(name, InvalidOidError))
}

/** Canonical chunk CID string; refuses anything that is not CIDv1 raw sha2-256. */
export function parseCid (name: string): string {
  return cidFromDigest(digestFromName(name, InvalidCidError))
}

export function toNi (name: string): string {
  return NI_PREFIX + Buffer.from(digestFromName(name)).toString('base64url')
}

export function digestHex (name: string): string {
  return Buffer.from(digestFromName(name)).toString('hex')
}
