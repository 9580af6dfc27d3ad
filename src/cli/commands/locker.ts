/**
 * `berth locker serve`, `berth locker create` and `berth token issue`: running a locker server,
 * creating lockers on it with the provider's admin key, and issuing tokens offline with a
 * locker owner's key.
 */
import { mkdir, readFile } from 'node:fs/promises'
import { z } from 'zod'
import { join, resolve } from 'node:path'
import type { Command } from 'commander'
import { BadRequestError, toBerthError } from '../../core/errors.ts'
import { parseDuration, parseSize } from '../../core/units.ts'
import { type Part, stopOnSignal, startParts } from '../daemon.ts'
import { action, printJson, printLines, type JsonOption, UsageError } from '../output.ts'

interface ServeOptions extends JsonOption { listen: string, store?: string, adminKey?: string, logLevel: string, allowPrivatePlaces?: boolean, egress?: string, ingress?: string, connections?: string, storage?: string, cache?: string }
interface CreateOptions extends JsonOption { server: string, adminKey: string, ownerKey: string, weight?: string, quota?: string, floor?: string }
interface IssueOptions extends JsonOption {
  server?: string
  locker: string
  key: string
  ops: string
  objects?: string
  all?: boolean
  seq?: string
  ttl: string
  sizeMax?: string
  bwWeight?: string
  bwMax?: string
  bwMin?: string
  connSlots?: string
  app?: string
  resource?: boolean
}

function positive (name: string, value: string | undefined): number | undefined {
  if (value === undefined) return undefined
  const n = Number(value)
  if (!Number.isFinite(n) || n <= 0) throw new UsageError(`${name} must be a positive number`)
  return n
}

const LOG_LEVELS = ['debug', 'info', 'warn', 'error', 'silent']

const cacheFile = z.object({
  lockers: z.array(z.string()).optional(),
  upstreams: z.array(z.object({ uri: z.string(), token: z.string(), resource: z.string().optional() }).strict()).optional(),
  ttl: z.number().positive().optional(),
  fresh: z.number().nonnegative().optional(),
  alto: z.string().url().optional(),
  from: z.string().optional()
}).strict()

/** `--cache FILE`: the server's pull-through cache settings (tokens live in the file, not on the command line). */
async function readCacheFile (file: string): Promise<z.infer<typeof cacheFile>> {
  let json: unknown
  try { json = JSON.parse(await readFile(resolve(file), 'utf8')) } catch (err) { throw new UsageError(`--cache ${file}: ${toBerthError(err).message}`) }
  const parsed = cacheFile.safeParse(json)
  if (!parsed.success) throw new UsageError(`--cache ${file}: ${parsed.error.issues.map(i => `${i.path.join('.') || 'file'}: ${i.message}`).join('; ')}`)
  return parsed.data
}

/** The locker server's structured log: JSON lines on stderr (stdout carries the command's own output). */
export async function lockerLogger (level: string): Promise<import('pino').Logger> {
  if (!LOG_LEVELS.includes(level)) throw new UsageError(`--log-level must be one of ${LOG_LEVELS.join(', ')}`)
  const { pino } = await import('pino')
  return pino({ level, base: { service: 'berth-locker' } }, pino.destination(2))
}

export function registerLocker (program: Command): void {
  const locker = program.command('locker').description('locker servers: storage inside the network, one locker per user or publisher')

  locker.command('serve')
    .description('run a locker server (the admin key is made if missing)')
    .option('--listen <addr>', 'HTTP API address, HOST:PORT (port 0: any free port)', '127.0.0.1:4660')
    .option('--store <dir>', 'keep lockers and objects in DIR (default: in memory)')
    .option('--admin-key <file>', 'the provider admin key (private JWK; default DIR/admin.jwk, or ./admin.jwk)')
    .option('--egress <bytes/s>', 'outgoing bandwidth the lockers share, e.g. 100m (default: unlimited)')
    .option('--ingress <bytes/s>', 'incoming bandwidth the lockers share (default: unlimited)')
    .option('--connections <n>', 'transfers at once (default 4096)')
    .option('--storage <bytes>', 'storage the lockers\' quotas may add up to, e.g. 2t (default: unlimited)')
    .option('--allow-private-places', 'let distributes reach loopback, private and link-local addresses (single-host setups; off: tenants cannot make the server reach what sits behind it)')
    .option('--log-level <level>', 'structured logs (JSON lines, pino) on stderr: debug, info, warn, error or silent', 'info')
    .option('--cache <file>', 'pull-through caching: a JSON file {lockers?, upstreams?: [{uri: "locker://host:port/name", token}], ttl?, fresh?, alto?, from?} (see README)')
    .option('--json', 'print {url, store, adminKey} as one JSON line once listening')
    .action(action(async (options: ServeOptions) => {
      const { loadSigningKey } = await import('../../core/tokens.ts')
      const keyPath = resolve(options.adminKey ?? join(options.store ?? '.', 'admin.jwk'))
      // The default key file lives in the store directory, which may not exist yet.
      if (options.store !== undefined) await mkdir(options.store, { recursive: true })
      const admin = await loadSigningKey(keyPath, { create: true })
      const signals = stopOnSignal(options.json === true)
      const { createLockerServer } = await import('../../locker/server.ts')
      const capacity = {
        egress: options.egress !== undefined ? parseSize(options.egress) : undefined,
        ingress: options.ingress !== undefined ? parseSize(options.ingress) : undefined,
        connections: positive('--connections', options.connections),
        storage: options.storage !== undefined ? parseSize(options.storage) : undefined
      }
      const logger = await lockerLogger(options.logLevel)
      const cache = options.cache !== undefined ? await readCacheFile(options.cache) : undefined
      const server = await createLockerServer({ listen: options.listen, dir: options.store !== undefined ? resolve(options.store) : undefined, adminKey: admin.publicJwk, capacity, logger, allowPrivatePlaces: options.allowPrivatePlaces === true, cache })
      const parts: Part[] = [{ name: 'locker server', start: async () => await server.start(), stop: async () => await server.stop() }]
      await startParts(parts)
      const store = options.store !== undefined ? resolve(options.store) : 'memory'
      if (options.json === true) printJson({ url: server.url, store, adminKey: keyPath })
      else {
        printLines(
          'berth locker server running',
          `  API        ${server.url}`,
          `  admin key  ${keyPath}${admin.created ? ' (made now: keep it safe, it creates lockers)' : ''}`,
          `  store      ${store === 'memory' ? 'memory (gone when the server stops; --store DIR keeps it)' : store}`,
          'next:',
          `  berth locker create NAME --server ${server.url} --admin-key ${keyPath} --owner-key NAME.jwk`
        )
      }
      await signals.serve(parts)
    }))

  locker.command('create <name>')
    .description('create a locker on a server (the owner key is made if missing; its public half is registered)')
    .requiredOption('--server <url>', 'the locker server')
    .requiredOption('--admin-key <file>', 'the provider admin key (private JWK)')
    .requiredOption('--owner-key <file>', "the locker owner's key (private JWK; made if missing)")
    .option('--weight <w>', 'subscription weight (default 1)')
    .option('--quota <bytes>', 'storage quota, e.g. 10g (default: the server\'s)')
    .option('--floor <bytes/s>', 'bandwidth guaranteed to the locker while it transfers, e.g. 5m (default: none)')
    .option('--json', 'print the created locker as JSON')
    .action(action(async (name: string, options: CreateOptions) => {
      const { loadSigningKey, issueAdminToken } = await import('../../core/tokens.ts')
      const admin = await loadSigningKey(options.adminKey)
      const owner = await loadSigningKey(options.ownerKey, { create: true })
      const { LockerClient } = await import('../../sdk/locker-client.ts')
      const created = await new LockerClient(options.server).createLocker(await issueAdminToken(admin), {
        name, key: owner.publicJwk, weight: positive('--weight', options.weight), quota: options.quota !== undefined ? parseSize(options.quota) : undefined, floor: options.floor !== undefined ? parseSize(options.floor) : undefined
      })
      if (options.json === true) printJson({ ...created, ownerKey: resolve(options.ownerKey) })
      else printLines(`locker ${created.name} created on ${options.server} (quota ${created.quota} bytes, weight ${created.weight})`, `  owner key ${resolve(options.ownerKey)}${owner.created ? ' (made now)' : ''}`)
    }))

  program.command('token')
    .description('tokens for lockers')
    .command('issue')
    .description("issue an access token (and with --resource, its resource token) with a locker owner's key, offline")
    .option('--server <url>', 'the locker server the token is for (not contacted: tokens are made offline)')
    .requiredOption('--locker <name>', 'the locker')
    .requiredOption('--key <file>', "the locker owner's key (private JWK)")
    .option('--ops <list>', 'operations: read,write,delete,distribute,status,manage', 'read')
    .option('--objects <oids>', 'the objects covered, comma-separated OIDs')
    .option('--all', 'all the locker\'s objects (default when neither --objects nor --seq is given)')
    .option('--seq <from-to>', 'objects stored with a sequence number in this range (live streams)')
    .option('--ttl <duration>', 'lifetime, e.g. 90s, 15m, 1h, 30d', '1h')
    .option('--resource', 'also issue a resource token bound to the access token')
    .option('--size-max <bytes>', 'resource: largest upload, e.g. 100m')
    .option('--bw-weight <w>', 'resource: bandwidth weight among the application\'s tokens (default 1)')
    .option('--bw-max <bytes/s>', 'resource: bandwidth cap, e.g. 10m')
    .option('--bw-min <bytes/s>', 'resource: guaranteed bandwidth while transferring (refused with 503 when the server cannot)')
    .option('--conn-slots <n>', 'resource: concurrent connections')
    .option('--app <name>', 'resource: the application (default "default")')
    .option('--json', 'print {access, resource?, jti, exp} as JSON')
    .action(action(async (options: IssueOptions) => {
      const { loadSigningKey, issueAccessToken, issueResourceToken, TOKEN_OPS } = await import('../../core/tokens.ts')
      const ops = options.ops.split(',').map(s => s.trim()).filter(s => s !== '')
      for (const op of ops) if (!(TOKEN_OPS as readonly string[]).includes(op)) throw new UsageError(`unknown operation ${op} (one of ${TOKEN_OPS.join(', ')})`)
      const scopes = [options.objects !== undefined, options.all === true, options.seq !== undefined].filter(Boolean).length
      if (scopes > 1) throw new UsageError('give one of --objects, --all, --seq')
      let objects: 'all' | { oids: string[] } | { seq: [number, number] } = 'all'
      if (options.objects !== undefined) {
        const { parseOid } = await import('../../core/naming.ts')
        objects = { oids: options.objects.split(',').map(s => parseOid(s.trim())) }
      } else if (options.seq !== undefined) {
        const m = /^(\d+)-(\d+)$/.exec(options.seq)
        if (m === null) throw new UsageError('--seq must be FROM-TO, e.g. 100-200')
        objects = { seq: [Number(m[1]), Number(m[2])] }
      }
      const key = await loadSigningKey(options.key)
      const ttlSeconds = parseDuration(options.ttl)
      let access: string
      try {
        access = await issueAccessToken(key, { locker: options.locker, ops: ops as typeof TOKEN_OPS[number][], objects, ttlSeconds })
      } catch (err) {
        throw new BadRequestError(toBerthError(err).message)
      }
      const resource = options.resource === true
        ? await issueResourceToken(key, access, {
          ttlSeconds,
          sizeMax: options.sizeMax !== undefined ? parseSize(options.sizeMax) : undefined,
          bwWeight: positive('--bw-weight', options.bwWeight),
          bwMax: options.bwMax !== undefined ? parseSize(options.bwMax) : undefined,
          bwMin: options.bwMin !== undefined ? parseSize(options.bwMin) : undefined,
          connSlots: positive('--conn-slots', options.connSlots),
          app: options.app
        })
        : undefined
      if (options.json === true) printJson({ access, resource })
      else printLines(access, ...(resource !== undefined ? [resource] : []))
    }))
}
