/**
 * The locker server's own metadata, in SQLite beside the chunk store: lockers, the keys their
 * owners sign tokens with, which objects each locker holds (with size, sequence number and
 * expiry), application weights and revoked token ids.
 *
 * Object bytes live once in the server's ChunkStore; a row here is one locker's reference. A
 * locker's usage is the sum of its rows' sizes, computed, never kept as a counter that a crash
 * could leave wrong.
 */
import Database from 'better-sqlite3'
import type { JWK } from 'jose'
import { ConflictError, NotFoundError } from '../core/errors.ts'

export interface LockerRow {
  name: string
  weight: number
  quota: number
  /** bytes/s guaranteed to the locker's transfers while it has any (0: none) */
  floor: number
  createdAt: number
}
export interface HeldObject { oid: string, size: number, seq: number | null, expiresAt: number | null, createdAt: number }

const SCHEMA = `
CREATE TABLE IF NOT EXISTS lockers (name TEXT PRIMARY KEY, weight REAL NOT NULL, quota INTEGER NOT NULL, created INTEGER NOT NULL, floor REAL NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS locker_keys (locker TEXT NOT NULL, kid TEXT NOT NULL, jwk TEXT NOT NULL, PRIMARY KEY (locker, kid));
CREATE TABLE IF NOT EXISTS objects (locker TEXT NOT NULL, oid TEXT NOT NULL, size INTEGER NOT NULL, seq INTEGER,
  expires INTEGER, created INTEGER NOT NULL, PRIMARY KEY (locker, oid));
CREATE INDEX IF NOT EXISTS objects_by_oid ON objects (oid);
CREATE INDEX IF NOT EXISTS objects_by_expiry ON objects (expires) WHERE expires IS NOT NULL;
CREATE TABLE IF NOT EXISTS app_weights (locker TEXT NOT NULL, app TEXT NOT NULL, weight REAL NOT NULL, PRIMARY KEY (locker, app));
CREATE TABLE IF NOT EXISTS revoked (jti TEXT PRIMARY KEY, until INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS foreign_objects (locker TEXT NOT NULL, url TEXT NOT NULL, oid TEXT NOT NULL, etag TEXT, modified TEXT,
  checked INTEGER NOT NULL, PRIMARY KEY (locker, url));
`

/** A foreign resource a cache locker fetched: the OID it named the bytes with, and the origin's validators. */
export interface ForeignRow { locker: string, url: string, oid: string, etag: string | null, modified: string | null, checked: number }

export class LockerDb {
  private readonly db: Database.Database
  /** keys per locker, kept in memory: every request needs them */
  private readonly keyCache = new Map<string, Map<string, JWK>>()
  private readonly revokedIds = new Set<string>()

  constructor (path: string) {
    this.db = new Database(path)
    this.db.pragma('journal_mode = WAL')
    // Every change here is a commit the client was told about: durable.
    this.db.pragma('synchronous = FULL')
    this.db.exec(SCHEMA)
    // Databases made before lockers had floors gain the column (0: no floor).
    const columns = (this.db.prepare('PRAGMA table_info(lockers)').all() as Array<{ name: string }>).map(c => c.name)
    if (!columns.includes('floor')) this.db.exec('ALTER TABLE lockers ADD COLUMN floor REAL NOT NULL DEFAULT 0')
    for (const r of this.db.prepare('SELECT locker, kid, jwk FROM locker_keys').all() as Array<{ locker: string, kid: string, jwk: string }>) {
      this.keysOf(r.locker).set(r.kid, JSON.parse(r.jwk) as JWK)
    }
    this.db.prepare('DELETE FROM revoked WHERE until < ?').run(Math.floor(Date.now() / 1000))
    for (const r of this.db.prepare('SELECT jti FROM revoked').all() as Array<{ jti: string }>) this.revokedIds.add(r.jti)
  }

  private keysOf (locker: string): Map<string, JWK> {
    let m = this.keyCache.get(locker)
    if (m === undefined) { m = new Map(); this.keyCache.set(locker, m) }
    return m
  }

  createLocker (l: { name: string, weight: number, quota: number, floor: number, key: { jwk: JWK, kid: string } }): LockerRow {
    const created = Date.now()
    try {
      this.db.transaction(() => {
        this.db.prepare('INSERT INTO lockers (name, weight, quota, floor, created) VALUES (?, ?, ?, ?, ?)').run(l.name, l.weight, l.quota, l.floor, created)
        this.db.prepare('INSERT INTO locker_keys (locker, kid, jwk) VALUES (?, ?, ?)').run(l.name, l.key.kid, JSON.stringify(l.key.jwk))
      })()
    } catch (err) {
      if ((err as { code?: string }).code === 'SQLITE_CONSTRAINT_PRIMARYKEY') throw new ConflictError(`locker ${l.name} exists already`)
      throw err
    }
    this.keysOf(l.name).set(l.key.kid, l.key.jwk)
    return { name: l.name, weight: l.weight, quota: l.quota, floor: l.floor, createdAt: created }
  }

  locker (name: string): LockerRow | undefined {
    const r = this.db.prepare('SELECT name, weight, quota, floor, created FROM lockers WHERE name = ?').get(name) as { name: string, weight: number, quota: number, floor: number, created: number } | undefined
    return r === undefined ? undefined : { name: r.name, weight: r.weight, quota: r.quota, floor: r.floor, createdAt: r.created }
  }

  mustLocker (name: string): LockerRow {
    const l = this.locker(name)
    if (l === undefined) throw new NotFoundError(`no locker ${name} on this server`)
    return l
  }

  keys (locker: string): ReadonlyMap<string, JWK> {
    return this.keyCache.get(locker) ?? new Map()
  }

  /** One locker's reference to an object, if it holds one (expired or not: callers decide). */
  held (locker: string, oid: string): HeldObject | undefined {
    const r = this.db.prepare('SELECT oid, size, seq, expires, created FROM objects WHERE locker = ? AND oid = ?').get(locker, oid) as { oid: string, size: number, seq: number | null, expires: number | null, created: number } | undefined
    return r === undefined ? undefined : { oid: r.oid, size: r.size, seq: r.seq, expiresAt: r.expires, createdAt: r.created }
  }

  /** Adds (or renews: new expiry and sequence number) a locker's reference. Returns whether it is new. */
  hold (locker: string, o: { oid: string, size: number, seq: number | null, expiresAt: number | null }): boolean {
    const existing = this.held(locker, o.oid)
    if (existing !== undefined) {
      this.db.prepare('UPDATE objects SET seq = ?, expires = ? WHERE locker = ? AND oid = ?').run(o.seq, o.expiresAt, locker, o.oid)
      return false
    }
    this.db.prepare('INSERT INTO objects (locker, oid, size, seq, expires, created) VALUES (?, ?, ?, ?, ?, ?)').run(locker, o.oid, o.size, o.seq, o.expiresAt, Date.now())
    return true
  }

  /** Drops a locker's reference; returns how many lockers still hold the object, or -1 if this one did not. */
  drop (locker: string, oid: string): number {
    const removed = this.db.prepare('DELETE FROM objects WHERE locker = ? AND oid = ?').run(locker, oid).changes
    if (removed === 0) return -1
    return this.holders(oid)
  }

  holders (oid: string): number {
    return (this.db.prepare('SELECT COUNT(*) AS n FROM objects WHERE oid = ?').get(oid) as { n: number }).n
  }

  usage (locker: string): { objects: number, bytes: number } {
    const r = this.db.prepare('SELECT COUNT(*) AS n, COALESCE(SUM(size), 0) AS bytes FROM objects WHERE locker = ?').get(locker) as { n: number, bytes: number }
    return { objects: r.n, bytes: r.bytes }
  }

  list (locker: string, limit: number): HeldObject[] {
    return (this.db.prepare('SELECT oid, size, seq, expires, created FROM objects WHERE locker = ? ORDER BY created LIMIT ?').all(locker, limit) as Array<{ oid: string, size: number, seq: number | null, expires: number | null, created: number }>)
      .map(r => ({ oid: r.oid, size: r.size, seq: r.seq, expiresAt: r.expires, createdAt: r.created }))
  }

  /** References whose TTL has run out (ms since epoch). */
  expired (now: number, limit = 1000): Array<{ locker: string, oid: string }> {
    return this.db.prepare('SELECT locker, oid FROM objects WHERE expires IS NOT NULL AND expires <= ? LIMIT ?').all(now, limit) as Array<{ locker: string, oid: string }>
  }

  /** Every OID some locker holds (for reconciling with the store after a crash). */
  heldOids (): Set<string> {
    return new Set((this.db.prepare('SELECT DISTINCT oid FROM objects').all() as Array<{ oid: string }>).map(r => r.oid))
  }

  /** Sum of every locker's quota: the storage the server has promised. */
  promised (): number {
    return (this.db.prepare('SELECT COALESCE(SUM(quota), 0) AS q FROM lockers').get() as { q: number }).q
  }

  appWeights (locker: string): Array<{ app: string, weight: number }> {
    return this.db.prepare('SELECT app, weight FROM app_weights WHERE locker = ? ORDER BY app').all(locker) as Array<{ app: string, weight: number }>
  }

  appWeight (locker: string, app: string): number {
    const r = this.db.prepare('SELECT weight FROM app_weights WHERE locker = ? AND app = ?').get(locker, app) as { weight: number } | undefined
    return r?.weight ?? 1
  }

  setAppWeight (locker: string, app: string, weight: number): void {
    this.db.prepare('INSERT INTO app_weights (locker, app, weight) VALUES (?, ?, ?) ON CONFLICT (locker, app) DO UPDATE SET weight = excluded.weight').run(locker, app, weight)
  }

  /** Revokes a token id until `until` (seconds since epoch: the token's own expiry is enough). */
  revoke (jti: string, until: number): void {
    this.db.prepare('INSERT INTO revoked (jti, until) VALUES (?, ?) ON CONFLICT (jti) DO UPDATE SET until = MAX(until, excluded.until)').run(jti, until)
    this.revokedIds.add(jti)
  }

  isRevoked (jti: string): boolean {
    return this.revokedIds.has(jti)
  }

  /** What a cache locker remembers of a foreign URL (undefined: never fetched). */
  foreign (locker: string, url: string): ForeignRow | undefined {
    return this.db.prepare('SELECT locker, url, oid, etag, modified, checked FROM foreign_objects WHERE locker = ? AND url = ?').get(locker, url) as ForeignRow | undefined
  }

  setForeign (r: ForeignRow): void {
    this.db.prepare('INSERT OR REPLACE INTO foreign_objects (locker, url, oid, etag, modified, checked) VALUES (?, ?, ?, ?, ?, ?)').run(r.locker, r.url, r.oid, r.etag, r.modified, r.checked)
  }

  close (): void {
    this.db.close()
  }
}
