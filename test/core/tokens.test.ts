/**
 * Access and resource tokens: what is accepted, and that every kind of bad token is refused
 * with its code — including a 10,000-token barrage of forged, expired, tampered, wrong-locker,
 * wrong-operation, wrong-object, revoked and unlinked tokens (issue 3: 0 accepted).
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { importJWK, SignJWT } from 'jose'
import {
  accessTokenHash, generateSigningKey, issueAccessToken, issueAdminToken, issueResourceToken, loadSigningKey,
  type SigningKey, TokenVerifier, verifyAdminToken
} from '../../src/core/tokens.ts'
import { BerthError } from '../../src/core/errors.ts'

const OID_A = 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'
const OID_B = 'bafkreidgvpkjawlxz6sffxzwgooowe5yt7i6wsyg236mfoks77nywkptdq'

function verifierFor (keys: Record<string, SigningKey>, revoked = new Set<string>()): TokenVerifier {
  return new TokenVerifier({
    keys: locker => keys[locker] !== undefined ? new Map([[keys[locker].kid, keys[locker].publicJwk]]) : new Map(),
    revoked: jti => revoked.has(jti)
  })
}

async function refused (p: Promise<unknown>, code: string): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof BerthError && err.code === code, `expected ${code}`)
}

/** Signs arbitrary claims with `key` (for tokens the issuing helpers would refuse to make). */
async function raw (key: SigningKey, claims: Record<string, unknown>, header: Record<string, unknown> = {}): Promise<string> {
  return await new SignJWT(claims).setProtectedHeader({ alg: 'EdDSA', kid: key.kid, ...header }).sign(await importJWK(key.privateJwk, 'EdDSA'))
}

describe('tokens', async () => {
  const owner = await generateSigningKey()
  const other = await generateSigningKey()
  const now = (): number => Math.floor(Date.now() / 1000)

  it('accepts a live access token for what it grants, and refuses what it does not', async () => {
    const v = verifierFor({ alice: owner })
    const t = await issueAccessToken(owner, { locker: 'alice', ops: ['read'], objects: { oids: [OID_A] }, ttlSeconds: 60 })
    const claims = await v.access(t, { locker: 'alice', op: 'read', oid: OID_A })
    assert.equal(claims.locker, 'alice')
    await refused(v.access(t, { locker: 'alice', op: 'write', oid: OID_A }), 'ERR_TOKEN_SCOPE')
    await refused(v.access(t, { locker: 'alice', op: 'read', oid: OID_B }), 'ERR_TOKEN_SCOPE')
    await refused(v.access(undefined, { locker: 'alice', op: 'read', oid: OID_A }), 'ERR_TOKEN_MISSING')
  })

  it('a range token covers the objects whose sequence number lies in its range', async () => {
    const v = verifierFor({ live: owner })
    const t = await issueAccessToken(owner, { locker: 'live', ops: ['read'], objects: { seq: [10, 20] }, ttlSeconds: 60 })
    await v.access(t, { locker: 'live', op: 'read', oid: OID_A, seq: 10 })
    await v.access(t, { locker: 'live', op: 'read', oid: OID_A, seq: 20 })
    await refused(v.access(t, { locker: 'live', op: 'read', oid: OID_A, seq: 21 }), 'ERR_TOKEN_SCOPE')
    await refused(v.access(t, { locker: 'live', op: 'read', oid: OID_A }), 'ERR_TOKEN_SCOPE')
  })

  it('a resource token counts only with the access token it is bound to', async () => {
    const v = verifierFor({ alice: owner })
    const a1 = await issueAccessToken(owner, { locker: 'alice', ops: ['read'], objects: 'all', ttlSeconds: 60 })
    const a2 = await issueAccessToken(owner, { locker: 'alice', ops: ['read'], objects: 'all', ttlSeconds: 60 })
    const r1 = await issueResourceToken(owner, a1, { bwWeight: 3, bwMax: 1e6, app: 'video', ttlSeconds: 60 })
    const claims = await v.resource(r1, a1, 'alice')
    assert.equal(claims?.bwWeight, 3)
    assert.equal(claims?.ath, accessTokenHash(a1))
    await refused(v.resource(r1, a2, 'alice'), 'ERR_TOKEN_UNLINKED')
    assert.equal(await v.resource(undefined, a1, 'alice'), undefined)
    // An access token is not a resource token, nor the other way round.
    await refused(v.resource(a1, a1, 'alice'), 'ERR_TOKEN_INVALID')
    await refused(v.access(r1, { locker: 'alice', op: 'read' }), 'ERR_TOKEN_SCOPE')
  })

  it('revocation takes effect on a token already verified (and cached)', async () => {
    const revoked = new Set<string>()
    const v = verifierFor({ alice: owner }, revoked)
    const t = await issueAccessToken(owner, { locker: 'alice', ops: ['read'], objects: 'all', ttlSeconds: 60, jti: 'revoke-me-1' })
    await v.access(t, { locker: 'alice', op: 'read', oid: OID_A })
    revoked.add('revoke-me-1')
    await refused(v.access(t, { locker: 'alice', op: 'read', oid: OID_A }), 'ERR_TOKEN_REVOKED')
  })

  it('a cached token stops verifying when its key is no longer registered', async () => {
    const keys: Record<string, SigningKey> = { alice: owner }
    const v = verifierFor(keys)
    const t = await issueAccessToken(owner, { locker: 'alice', ops: ['read'], objects: 'all', ttlSeconds: 60 })
    await v.access(t, { locker: 'alice', op: 'read' })
    keys.alice = other
    await refused(v.access(t, { locker: 'alice', op: 'read' }), 'ERR_TOKEN_INVALID')
  })

  it('admin tokens verify only with the admin key', async () => {
    const admin = await generateSigningKey()
    await verifyAdminToken(await issueAdminToken(admin), admin.publicJwk)
    await refused(verifyAdminToken(await issueAdminToken(other), admin.publicJwk), 'ERR_TOKEN_INVALID')
    await refused(verifyAdminToken(await issueAccessToken(admin, { locker: 'x', ops: ['read'], objects: 'all', ttlSeconds: 60 }), admin.publicJwk), 'ERR_TOKEN_INVALID')
    await refused(verifyAdminToken(undefined, admin.publicJwk), 'ERR_TOKEN_MISSING')
  })

  it('key files are made with mode 0600 and read back', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'berth-keys-'))
    try {
      const path = join(dir, 'owner.jwk')
      const made = await loadSigningKey(path, { create: true })
      assert.equal(made.created, true)
      assert.equal((await stat(path)).mode & 0o777, 0o600)
      const again = await loadSigningKey(path)
      assert.equal(again.kid, made.kid)
      assert.equal(again.created, false)
      assert.ok(JSON.parse(await readFile(path, 'utf8')).d)
      await refused(loadSigningKey(join(dir, 'missing.jwk')), 'ERR_INVALID_CONFIG')
    } finally {
      await rm(dir, { recursive: true, force: true })
    }
  })

  it('10,000 forged, expired, tampered, wrong-locker, wrong-op, wrong-object, revoked and unlinked tokens: none accepted', async () => {
    const revoked = new Set<string>()
    const v = verifierFor({ alice: owner, bob: other }, revoked)
    const need = { locker: 'alice', op: 'read' as const, oid: OID_A }
    const good = await issueAccessToken(owner, { locker: 'alice', ops: ['read'], objects: { oids: [OID_A] }, ttlSeconds: 600 })
    await v.access(good, need)
    const forger = await generateSigningKey()
    const kinds: Array<{ name: string, make: (i: number) => Promise<() => Promise<unknown>> }> = [
      // Signed by a key not registered for alice (with alice's kid, or its own).
      { name: 'forged', make: async (i) => { const t = await raw({ ...forger, kid: i % 2 === 0 ? owner.kid : forger.kid }, { use: 'access', locker: 'alice', ops: ['read'], objects: 'all', exp: now() + 600, iat: now(), jti: `forged-${i}` }); return async () => await v.access(t, need) } },
      { name: 'expired', make: async (i) => { const t = await raw(owner, { use: 'access', locker: 'alice', ops: ['read'], objects: 'all', exp: now() - 60 - i, iat: now() - 3600, jti: `expired-${i}` }); return async () => await v.access(t, need) } },
      // A valid token with one character of its payload or signature changed.
      {
        name: 'tampered',
        make: async (i) => {
          const [h, p, s] = good.split('.')
          const flip = (x: string, at: number): string => x.slice(0, at) + (x[at] === 'A' ? 'B' : 'A') + x.slice(at + 1)
          const t = i % 2 === 0 ? `${h}.${flip(p, i % p.length)}.${s}` : `${h}.${p}.${flip(s, i % (s.length - 1))}`
          return async () => await v.access(t, need)
        }
      },
      { name: 'wrong-locker', make: async (i) => { const t = await issueAccessToken(other, { locker: 'bob', ops: ['read'], objects: 'all', ttlSeconds: 600, jti: `bob-${i}` }); return async () => await v.access(t, need) } },
      { name: 'wrong-op', make: async (i) => { const t = await issueAccessToken(owner, { locker: 'alice', ops: ['write', 'delete', 'status'], objects: 'all', ttlSeconds: 600, jti: `op-${i}` }); return async () => await v.access(t, need) } },
      { name: 'wrong-object', make: async (i) => { const t = await issueAccessToken(owner, { locker: 'alice', ops: ['read'], objects: i % 2 === 0 ? { oids: [OID_B] } : { seq: [0, 100] }, ttlSeconds: 600, jti: `obj-${i}` }); return async () => await v.access(t, need) } },
      { name: 'revoked', make: async (i) => { const jti = `revoked-${i}`; revoked.add(jti); const t = await issueAccessToken(owner, { locker: 'alice', ops: ['read'], objects: 'all', ttlSeconds: 600, jti }); return async () => await v.access(t, need) } },
      { name: 'unlinked', make: async (i) => { const other = await issueAccessToken(owner, { locker: 'alice', ops: ['read'], objects: 'all', ttlSeconds: 600, jti: `ath-${i}` }); const r = await issueResourceToken(owner, other, { ttlSeconds: 600 }); return async () => await v.resource(r, good, 'alice') } }
    ]
    const accepted: string[] = []
    const perKind = Math.ceil(10000 / kinds.length)
    let tried = 0
    for (const kind of kinds) {
      for (let i = 0; i < perKind; i++) {
        const attempt = await kind.make(i)
        tried++
        try {
          await attempt()
          accepted.push(`${kind.name} #${i}`)
        } catch (err) {
          assert.ok(err instanceof BerthError && [401, 403].includes(err.status), `${kind.name} #${i}: ${String(err)}`)
        }
      }
    }
    assert.ok(tried >= 10000)
    assert.deepEqual(accepted, [])
    // The good token still works after all that.
    await v.access(good, need)
  })
})

