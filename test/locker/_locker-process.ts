/**
 * `berth locker serve` as its own process (for kill -9 tests), driven the way a provider does:
 * the admin key in a file, lockers created and tokens issued with the SDK and the tokens module.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { createCipheriv, createHash } from 'node:crypto'
import { join } from 'node:path'
import { cidFromDigest } from '../../src/core/naming.ts'
import { generateSigningKey, issueAccessToken, issueAdminToken, loadSigningKey, type SigningKey, type TokenOp } from '../../src/core/tokens.ts'
import { LockerClient, type LockerStatus, type TransferStatus } from '../../src/sdk/locker-client.ts'
import { BERTH_BIN, firstJsonLine, stopper } from '../interop/_berth-cli.ts'

export interface LockerProcess {
  url: string
  /** host:port, the same across restarts */
  listen: string
  client: LockerClient
  child: ChildProcess
  stderr: () => string
  /** SIGKILL, resolved once the process is gone */
  kill9: () => Promise<void>
  /** SIGTERM (clean stop), then the exit code */
  stop: () => Promise<number | null>
}

const running = new Set<ChildProcess>()

/** Every server process still alive (for an `after` hook that must not leave any behind). */
export function killAllStarted (): void {
  for (const c of running) c.kill('SIGKILL')
}

/** `node bin/berth.js locker serve --json --listen L --store DIR --admin-key FILE` as its own process. */
export async function startLockerProcess (o: { store: string, adminKey: string, listen?: string }): Promise<LockerProcess> {
  const args = ['locker', 'serve', '--json', '--listen', o.listen ?? '127.0.0.1:0', '--store', o.store, '--admin-key', o.adminKey, '--allow-private-places']
  const child = spawn(process.execPath, [BERTH_BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  child.once('exit', () => running.delete(child))
  let err = ''
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { err += s })
  const stderr = (): string => err
  const stop = stopper(child)
  const kill9 = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise(resolve => child.once('exit', resolve))
    child.kill('SIGKILL')
    await exited
  }
  try {
    const info = await firstJsonLine(child, stderr)
    if (typeof info.url !== 'string') throw new Error(`locker serve did not start: ${JSON.stringify(info)} ${stderr()}`)
    const url = info.url
    return { url, listen: new URL(url).host, client: new LockerClient(url), child, stderr, kill9, stop }
  } catch (e) {
    await kill9()
    throw e
  }
}

export interface ProcLocker {
  name: string
  key: SigningKey
  token: (ops?: TokenOp[]) => Promise<string>
}

/** The provider's admin key in a file (made here), as `--admin-key` takes it. */
export async function adminKeyFile (dir: string): Promise<{ path: string, key: SigningKey }> {
  const path = join(dir, 'admin.jwk')
  return { path, key: await loadSigningKey(path, { create: true }) }
}

/** Creates a locker with a fresh owner key; its tokens cover all its objects. */
export async function createLocker (client: LockerClient, admin: SigningKey, name: string, quota?: number): Promise<ProcLocker> {
  const key = await generateSigningKey()
  await client.createLocker(await issueAdminToken(admin), { name, key: key.publicJwk, quota })
  return {
    name,
    key,
    token: async (ops: TokenOp[] = ['read', 'write', 'delete', 'distribute', 'status', 'manage']) => await issueAccessToken(key, { locker: name, ops, objects: 'all', ttlSeconds: 600 })
  }
}

/** The status answer with what the SDK type leaves out: the distributes running. */
export type FullStatus = LockerStatus & { distributes: TransferStatus[] }

/**
 * Deterministic bytes made on the fly (AES-CTR of zeros keyed by `seed`), in blocks of `block`:
 * fast enough for hundreds of MiB, and never held in memory whole.
 */
export async function * generate (size: number, seed: string, block = 1024 * 1024): AsyncGenerator<Buffer> {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16)
  const cipher = createCipheriv('aes-128-ctr', key, Buffer.alloc(16))
  const zeros = Buffer.alloc(block)
  for (let at = 0; at < size; at += block) yield cipher.update(zeros.subarray(0, Math.min(block, size - at)))
}

/** Bytes `start`..`end` (inclusive) of what `generate(_, seed)` makes, without making those before. */
export function generatedRange (seed: string, start: number, end: number): Buffer {
  const key = createHash('sha256').update(seed).digest().subarray(0, 16)
  const iv = Buffer.alloc(16)
  iv.writeBigUInt64BE(BigInt(Math.floor(start / 16)), 8)
  const cipher = createCipheriv('aes-128-ctr', key, iv)
  const skip = start % 16
  return cipher.update(Buffer.alloc(skip + end - start + 1)).subarray(skip)
}

export async function generated (size: number, seed: string): Promise<Buffer> {
  const parts: Buffer[] = []
  for await (const b of generate(size, seed)) parts.push(b)
  return Buffer.concat(parts)
}

export async function oidOfGenerated (size: number, seed: string): Promise<string> {
  const h = createHash('sha256')
  for await (const b of generate(size, seed)) h.update(b)
  return cidFromDigest(h.digest())
}
