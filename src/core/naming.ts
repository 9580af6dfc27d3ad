/**
 * Names: an object (and each chunk) is named by a CIDv1 with the raw codec over the sha2-256
 * multihash of its bytes. The same digest is also accepted as an RFC 6920 `ni:` URI.
 */
import { CID } from 'multiformats/cid'
import { InvalidCidError, InvalidOidError } from './errors.ts'

export const RAW_CODEC = 0x55
export const SHA2_256 = 0x12
export const DIGEST_LENGTH = 32

// A CIDv1 raw sha2-256 name in base32 is 'b' + base32(0x01 0x55 0x12 0x20 ‖ digest): 59 characters.
// Parsing it through multiformats costs ~6 µs and printing ~4 µs; a 4 GiB object of 64 KiB chunks
// has 65k of them per commit and per manifest read, so the canonical spelling gets a direct codec
// (anything else goes through multiformats).
const ALPHABET = 'abcdefghijklmnopqrstuvwxyz234567'
const CID_PREFIX = [0x01, 0x55, 0x12, 0x20]
const CID_BYTES = CID_PREFIX.length + DIGEST_LENGTH
const CANONICAL_LENGTH = 1 + Math.ceil(CID_BYTES * 8 / 5)
const ALPHABET_CODES = Buffer.from(ALPHABET, 'latin1')
const SYMBOL_VALUES = new Int8Array(128).fill(-1)
for (let i = 0; i < ALPHABET.length; i++) SYMBOL_VALUES[ALPHABET.charCodeAt(i)] = i

/** The digest of a canonical base32 name, or undefined when `name` is spelled any other way. */
export function canonicalDigest (name: string): Buffer | undefined {
  if (name.length !== CANONICAL_LENGTH || name.charCodeAt(0) !== 0x62 /* b */) return undefined
  const bytes = Buffer.allocUnsafe(CID_BYTES)
  let buffer = 0
  let bits = 0
  let at = 0
  for (let i = 1; i < CANONICAL_LENGTH; i++) {
    const code = name.charCodeAt(i)
    const value = code < 128 ? SYMBOL_VALUES[code] : -1
    if (value < 0) return undefined
    buffer = ((buffer << 5) | value) & 0xfff
    bits += 5
    if (bits >= 8) {
      bits -= 8
      bytes[at++] = buffer >>> bits
    }
  }
  // Non-zero padding bits would make a second spelling of the same digest.
  if ((buffer & ((1 << bits) - 1)) !== 0) return undefined
  for (let i = 0; i < CID_PREFIX.length; i++) if (bytes[i] !== CID_PREFIX[i]) return undefined
  return bytes.subarray(CID_PREFIX.length)
}

// Scratch space for encodeCanonical: encoding is synchronous, so one buffer serves every call.
const encodeInput = Buffer.alloc(CID_BYTES)
encodeInput.set(CID_PREFIX, 0)
const encodeOutput = Buffer.alloc(CANONICAL_LENGTH)
encodeOutput[0] = 0x62

/** The canonical name (`bafkrei…`) of a sha2-256 digest, as multiformats would print it. */
function encodeCanonical (digest: Uint8Array): string {
  encodeInput.set(digest, CID_PREFIX.length)
  let buffer = 0
  let bits = 0
  let at = 1
  for (let i = 0; i < CID_BYTES; i++) {
    buffer = ((buffer << 8) | encodeInput[i]) & 0xfff
    bits += 8
    while (bits >= 5) {
      bits -= 5
      encodeOutput[at++] = ALPHABET_CODES[(buffer >>> bits) & 31]
    }
  }
  if (bits > 0) encodeOutput[at] = ALPHABET_CODES[(buffer << (5 - bits)) & 31]
  return encodeOutput.toString('latin1', 0, CANONICAL_LENGTH)
}

/** The CID string (base32, `bafkrei…`) of a sha2-256 digest. */
export function cidFromDigest (digest: Uint8Array): string {
  if (digest.length !== DIGEST_LENGTH) throw new InvalidCidError(`digest must be ${DIGEST_LENGTH} bytes, got ${digest.length}`)
  return encodeCanonical(digest)
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
  const fast = canonicalDigest(name)
  if (fast !== undefined) return fast
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
