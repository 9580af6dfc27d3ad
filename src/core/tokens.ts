/**
 * SAILOR's tokens as EdDSA JWTs (jose): an **access token** says which operations on which
 * objects of which locker its holder may perform until when; a **resource token** says how much
 * that holder may use, and is bound to one access token by `ath` = sha-256 of it (SAILOR's
 * AccessTokenHash), so it cannot be replayed with another grant.
 *
 * A locker's owner issues both offline with a private key whose public half is registered for
 * that locker on the server; the server checks signature, time, scope, link and revocation on
 * every request. Ed25519 verification costs ~0.27 ms here (jose measured ~3,700/s on one core),
 * so a verified token's claims are cached by the token string — what stays per request (time,
 * revocation, scope) is a few comparisons.
 */
import { createHash, randomUUID } from 'node:crypto'
import { chmod, readFile, writeFile } from 'node:fs/promises'
import { calculateJwkThumbprint, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair, importJWK, type JWK, jwtVerify, SignJWT } from 'jose'
import { z } from 'zod'
import {
  BadRequestError, InvalidConfigError, TokenExpiredError, TokenInvalidError, TokenMissingError,
  TokenRevokedError, TokenScopeError, TokenUnlinkedError
} from './errors.ts'

export const TOKEN_OPS = ['read', 'write', 'delete', 'distribute', 'status', 'manage'] as const
export type TokenOp = typeof TOKEN_OPS[number]

/**
 * Which objects a token covers: all of the locker's, a list of OIDs, or (DECADE's range token,
 * for live streams) the objects stored with a sequence number from `seq[0]` to `seq[1]`.
 */
export type ObjectScope = 'all' | { oids: string[] } | { seq: [number, number] }

export interface AccessClaims {
  use: 'access'
  locker: string
  ops: TokenOp[]
  objects: ObjectScope
  exp: number
  iat: number
  jti: string
}

export interface ResourceClaims {
  use: 'resource'
  /** bytes this grant may store (per upload) */
  sizeMax?: number
  /** weight among the application's tokens */
  bwWeight: number
  /** bytes/s cap */
  bwMax?: number
  /** bytes/s guaranteed while the holder transfers (admission control refuses what cannot be) */
  bwMin?: number
  /** concurrent connections */
  connSlots?: number
  /** the application this grant belongs to (weights per application are the locker's) */
  app: string
  ath: string
  exp: number
  iat: number
  jti: string
}

const LOCKER_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/

/** Locker names: lower-case letters, digits, `.`, `_`, `-`; at most 63 characters. */
export function parseLockerName (name: unknown): string {
  if (typeof name !== 'string' || !LOCKER_NAME.test(name)) throw new BadRequestError('locker name must be 1–63 characters of a-z, 0-9, ".", "_", "-", starting with a letter or digit')
  return name
}

const int = z.number().int().nonnegative()
const scopeSchema = z.union([
  z.literal('all'),
  z.object({ oids: z.array(z.string().min(1).max(200)).min(1).max(10000) }).strict(),
  z.object({ seq: z.tuple([int, int]) }).strict().refine(s => s.seq[0] <= s.seq[1], 'seq range must be ascending')
])
const accessSchema = z.object({
  use: z.literal('access'),
  locker: z.string().regex(LOCKER_NAME),
  ops: z.array(z.enum(TOKEN_OPS)).min(1),
  objects: scopeSchema,
  exp: int,
  iat: int,
  jti: z.string().min(8).max(128)
})
const resourceSchema = z.object({
  use: z.literal('resource'),
  sizeMax: int.optional(),
  bwWeight: z.number().positive().max(1e6),
  bwMax: z.number().positive().optional(),
  bwMin: z.number().positive().optional(),
  connSlots: z.number().int().positive().max(1e6).optional(),
  app: z.string().min(1).max(128),
  ath: z.string().regex(/^[A-Za-z0-9_-]{43}$/),
  exp: int,
  iat: int,
  jti: z.string().min(8).max(128)
})

/** base64url sha-256 of the access token string: the `ath` a resource token must carry. */
export function accessTokenHash (accessToken: string): string {
  return createHash('sha256').update(accessToken).digest('base64url')
}

// ── keys ────────────────────────────────────────────────────────────────────────────────────

export interface SigningKey { privateJwk: JWK, publicJwk: JWK, kid: string }

export async function generateSigningKey (): Promise<SigningKey> {
  const { privateKey } = await generateKeyPair('EdDSA', { crv: 'Ed25519', extractable: true })
  return await signingKeyFrom(await exportJWK(privateKey))
}

/** A public Ed25519 JWK, checked, with its kid (the RFC 7638 thumbprint). */
export async function publicKeyFrom (jwk: unknown): Promise<{ jwk: JWK, kid: string }> {
  const j = jwk as JWK
  if (typeof j !== 'object' || j === null || j.kty !== 'OKP' || j.crv !== 'Ed25519' || typeof j.x !== 'string') throw new BadRequestError('key must be an Ed25519 JWK ({kty: "OKP", crv: "Ed25519", x})')
  const pub: JWK = { kty: 'OKP', crv: 'Ed25519', x: j.x }
  try {
    await importJWK(pub, 'EdDSA')
  } catch (err) {
    throw new BadRequestError(`not a usable Ed25519 public key: ${(err as Error).message}`)
  }
  return { jwk: pub, kid: await calculateJwkThumbprint(pub) }
}

async function signingKeyFrom (jwk: JWK): Promise<SigningKey> {
  if (jwk.kty !== 'OKP' || jwk.crv !== 'Ed25519' || typeof jwk.d !== 'string' || typeof jwk.x !== 'string') throw new InvalidConfigError('a signing key must be a private Ed25519 JWK')
  const { jwk: publicJwk, kid } = await publicKeyFrom(jwk)
  return { privateJwk: { kty: 'OKP', crv: 'Ed25519', x: jwk.x, d: jwk.d }, publicJwk, kid }
}

/** Reads a private key file (JWK JSON), or creates one (mode 0600) when `create` and it is missing. */
export async function loadSigningKey (path: string, o: { create?: boolean } = {}): Promise<SigningKey & { created: boolean }> {
  let text: string
  try {
    text = await readFile(path, 'utf8')
  } catch (err) {
    if ((err as { code?: string }).code !== 'ENOENT' || o.create !== true) throw new InvalidConfigError(`cannot read key file ${path}: ${(err as Error).message}`)
    const key = await generateSigningKey()
    await writeFile(path, JSON.stringify(key.privateJwk) + '\n', { mode: 0o600, flag: 'wx' })
    await chmod(path, 0o600)
    return { ...key, created: true }
  }
  let jwk: JWK
  try { jwk = JSON.parse(text) as JWK } catch { throw new InvalidConfigError(`key file ${path} is not JSON`) }
  return { ...await signingKeyFrom(jwk), created: false }
}

// ── issuing ─────────────────────────────────────────────────────────────────────────────────

async function sign (key: SigningKey, claims: Record<string, unknown>, ttlSeconds: number): Promise<string> {
  if (!Number.isFinite(ttlSeconds) || ttlSeconds <= 0) throw new BadRequestError('token lifetime must be a positive number of seconds')
  const now = Math.floor(Date.now() / 1000)
  return await new SignJWT({ ...claims, jti: typeof claims.jti === 'string' ? claims.jti : randomUUID() })
    .setProtectedHeader({ alg: 'EdDSA', kid: key.kid, typ: 'JWT' })
    .setIssuedAt(now)
    .setExpirationTime(now + Math.ceil(ttlSeconds))
    .sign(await importJWK(key.privateJwk, 'EdDSA'))
}

export interface AccessGrant { locker: string, ops: TokenOp[], objects: ObjectScope, ttlSeconds: number, jti?: string }

export async function issueAccessToken (key: SigningKey, grant: AccessGrant): Promise<string> {
  const claims = { use: 'access', locker: parseLockerName(grant.locker), ops: grant.ops, objects: grant.objects, jti: grant.jti }
  const checked = accessSchema.omit({ exp: true, iat: true, jti: true }).safeParse(claims)
  if (!checked.success) throw new BadRequestError(`bad access grant: ${checked.error.issues.map(i => i.message).join('; ')}`)
  return await sign(key, claims, grant.ttlSeconds)
}

export interface ResourceGrant { sizeMax?: number, bwWeight?: number, bwMax?: number, bwMin?: number, connSlots?: number, app?: string, ttlSeconds: number }

export async function issueResourceToken (key: SigningKey, accessToken: string, grant: ResourceGrant): Promise<string> {
  const claims = { use: 'resource', sizeMax: grant.sizeMax, bwWeight: grant.bwWeight ?? 1, bwMax: grant.bwMax, bwMin: grant.bwMin, connSlots: grant.connSlots, app: grant.app ?? 'default', ath: accessTokenHash(accessToken) }
  const checked = resourceSchema.omit({ exp: true, iat: true, jti: true }).safeParse(claims)
  if (!checked.success) throw new BadRequestError(`bad resource grant: ${checked.error.issues.map(i => i.message).join('; ')}`)
  return await sign(key, claims, grant.ttlSeconds)
}

/** A short-lived token signed with the provider's admin key, for `POST /v1/lockers`. */
export async function issueAdminToken (key: SigningKey, ttlSeconds = 300): Promise<string> {
  return await sign(key, { use: 'admin' }, ttlSeconds)
}

// ── verifying ───────────────────────────────────────────────────────────────────────────────

export interface TokenNeed {
  locker: string
  op: TokenOp
  /** the object asked for, if any */
  oid?: string
  /** its sequence number, if it has one (range tokens) */
  seq?: number
}

export interface VerifierOptions {
  /** the public keys registered for a locker, by kid */
  keys: (locker: string) => ReadonlyMap<string, JWK>
  /** whether a token id has been revoked */
  revoked: (jti: string) => boolean
  /** verified tokens remembered; default 10,000 */
  cacheSize?: number
  /** seconds of clock skew tolerated; default 5 */
  clockTolerance?: number
}

interface Cached { claims: AccessClaims | ResourceClaims, kid: string, locker: string, use: 'access' | 'resource' }

export class TokenVerifier {
  private readonly cache = new Map<string, Cached>()
  private readonly cacheSize: number
  private readonly tolerance: number

  constructor (private readonly o: VerifierOptions) {
    this.cacheSize = o.cacheSize ?? 10000
    this.tolerance = o.clockTolerance ?? 5
  }

  /** Forget cached verifications (a key was added or removed). */
  forget (): void { this.cache.clear() }

  /** Signature (a key registered for `locker`), then shape. Cached by token string. */
  private async verified (token: string, locker: string, use: 'access' | 'resource'): Promise<Cached> {
    const hit = this.cache.get(token)
    if (hit !== undefined && hit.locker === locker && hit.use === use && this.o.keys(locker).has(hit.kid)) {
      // Re-inserted: the map's order is its recency, the first entry the one to evict.
      this.cache.delete(token)
      this.cache.set(token, hit)
      return hit
    }
    if (token.length > 16 * 1024) throw new TokenInvalidError('token too long')
    let kid: string | undefined
    let claimed: unknown
    try {
      const header = decodeProtectedHeader(token)
      if (header.alg !== 'EdDSA') throw new Error(`alg ${String(header.alg)} is not EdDSA`)
      kid = header.kid
      claimed = decodeJwt(token).locker
    } catch (err) {
      throw new TokenInvalidError(`malformed token: ${(err as Error).message}`)
    }
    // Resource tokens carry no locker: they are checked against the locker of the request.
    if (use === 'access' && claimed !== locker) throw new TokenScopeError(`token is for locker ${String(claimed)}, not ${locker}`)
    const keys = this.o.keys(locker)
    const key = kid !== undefined ? keys.get(kid) : undefined
    if (key === undefined) throw new TokenInvalidError('token is not signed by a key registered for this locker')
    let payload: unknown
    try {
      payload = (await jwtVerify(token, await importJWK(key, 'EdDSA'), { algorithms: ['EdDSA'], clockTolerance: this.tolerance })).payload
    } catch (err) {
      const code = (err as { code?: string }).code
      if (code === 'ERR_JWT_EXPIRED') throw new TokenExpiredError('token has expired')
      throw new TokenInvalidError(`token does not verify: ${(err as Error).message}`)
    }
    const parsed = (use === 'access' ? accessSchema : resourceSchema).safeParse(payload)
    if (!parsed.success) throw new TokenInvalidError(`not a ${use} token: ${parsed.error.issues.map(i => `${i.path.join('.')}: ${i.message}`).join('; ')}`)
    const entry: Cached = { claims: parsed.data as AccessClaims | ResourceClaims, kid: kid!, locker, use }
    if (this.cache.size >= this.cacheSize) this.cache.delete(this.cache.keys().next().value!)
    this.cache.set(token, entry)
    return entry
  }

  private live (claims: { exp: number, jti: string }): void {
    if (claims.exp + this.tolerance < Date.now() / 1000) throw new TokenExpiredError('token has expired')
    if (this.o.revoked(claims.jti)) throw new TokenRevokedError('token has been revoked')
  }

  /** The access token's claims, if it grants `need`; a coded 401/403 otherwise. */
  async access (token: string | undefined, need: TokenNeed): Promise<AccessClaims> {
    if (token === undefined || token === '') throw new TokenMissingError('this request needs an access token (Authorization: Bearer …)')
    const { claims } = await this.verified(token, need.locker, 'access')
    const c = claims as AccessClaims
    this.live(c)
    if (!c.ops.includes(need.op)) throw new TokenScopeError(`token does not allow ${need.op}`)
    if (need.oid !== undefined && !covers(c.objects, need.oid, need.seq)) throw new TokenScopeError(`token does not cover object ${need.oid}`)
    return c
  }

  /**
   * The resource token's claims (undefined when none was sent: the locker's defaults apply). It
   * must be signed for this locker, live, and bound to `accessToken`.
   */
  async resource (token: string | undefined, accessToken: string, locker: string): Promise<ResourceClaims | undefined> {
    if (token === undefined || token === '') return undefined
    const { claims } = await this.verified(token, locker, 'resource')
    const c = claims as ResourceClaims
    this.live(c)
    if (c.ath !== accessTokenHash(accessToken)) throw new TokenUnlinkedError('resource token is bound to another access token')
    return c
  }
}

/** Whether a scope covers an object (with its sequence number, for range scopes). */
export function covers (scope: ObjectScope, oid: string, seq: number | undefined): boolean {
  if (scope === 'all') return true
  if ('oids' in scope) return scope.oids.includes(oid)
  return seq !== undefined && seq >= scope.seq[0] && seq <= scope.seq[1]
}

/** A verifier for admin tokens: one provider key, no cache (creating lockers is rare). */
export async function verifyAdminToken (token: string | undefined, admin: JWK): Promise<void> {
  if (token === undefined || token === '') throw new TokenMissingError('this request needs the provider admin token')
  try {
    const { payload } = await jwtVerify(token, await importJWK(admin, 'EdDSA'), { algorithms: ['EdDSA'], clockTolerance: 5 })
    if (payload.use !== 'admin') throw new Error('not an admin token')
  } catch (err) {
    if ((err as { code?: string }).code === 'ERR_JWT_EXPIRED') throw new TokenExpiredError('admin token has expired')
    throw new TokenInvalidError(`admin token does not verify: ${(err as Error).message}`)
  }
}
