/**
 * The portal's configuration file (JSON), for `berth portal serve --config FILE`:
 *
 * ```json
 * { "listen": "127.0.0.1:4680", "alto": "http://127.0.0.1:4670", "replicas": 2,
 *   "lockers": [ { "name": "east", "url": "http://127.1.0.1:4660", "locker": "pub", "ownerKeyFile": "east-owner.jwk" },
 *                { "name": "west", "url": "http://127.2.0.1:4660", "locker": "pub", "ownerKey": { "kty": "OKP", … } } ] }
 * ```
 * Key files are read relative to the configuration file; the key is the locker owner's private
 * JWK (what `berth locker create --owner-key` made).
 */
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import type { JWK } from 'jose'
import { z } from 'zod'
import { InvalidConfigError } from '../../core/errors.ts'
import { loadSigningKey } from '../../core/tokens.ts'
import type { PortalOptions } from './server.ts'

const lockerSchema = z.object({
  name: z.string().min(1).max(100).optional(),
  url: z.string().url(),
  locker: z.string().min(1),
  ownerKey: z.record(z.string(), z.unknown()).optional(),
  ownerKeyFile: z.string().min(1).optional(),
  address: z.string().optional()
}).strict().refine(l => (l.ownerKey === undefined) !== (l.ownerKeyFile === undefined), { message: 'give ownerKey or ownerKeyFile (one of them)' })

const configSchema = z.object({
  listen: z.string().optional(),
  alto: z.string().url(),
  lockers: z.array(lockerSchema).min(1),
  replicas: z.number().int().positive().optional(),
  demand: z.record(z.string(), z.number().nonnegative()).optional(),
  tokenTtl: z.number().positive().optional(),
  probeTimeoutMs: z.number().positive().optional(),
  publicUrl: z.string().url().optional(),
  trustProxy: z.boolean().optional(),
  spoolDir: z.string().optional()
}).strict()

export async function loadPortalConfig (file: string): Promise<PortalOptions> {
  let raw: unknown
  try {
    raw = JSON.parse(await readFile(file, 'utf8'))
  } catch (err) {
    throw new InvalidConfigError(`cannot read portal config ${file}: ${(err as Error).message}`)
  }
  const parsed = configSchema.safeParse(raw)
  if (!parsed.success) throw new InvalidConfigError(`portal config ${file}: ${parsed.error.issues.map(i => `${i.path.join('.') || 'config'}: ${i.message}`).join('; ')}`)
  const c = parsed.data
  const base = dirname(resolve(file))
  const lockers = await Promise.all(c.lockers.map(async l => ({
    name: l.name,
    url: l.url,
    locker: l.locker,
    address: l.address,
    ownerKey: l.ownerKeyFile !== undefined ? await loadSigningKey(resolve(base, l.ownerKeyFile)) : l.ownerKey as JWK
  })))
  return { ...c, spoolDir: c.spoolDir !== undefined ? resolve(base, c.spoolDir) : undefined, lockers }
}
