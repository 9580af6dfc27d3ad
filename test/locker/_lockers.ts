/** Real locker servers on loopback for tests: each with its own disk store, admin key and lockers. */
import { mkdtemp, rm } from 'node:fs/promises'
import { createServer, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { createLockerServer, type LockerServer, type LockerServerOptions } from '../../src/locker/server.ts'
import { generateSigningKey, issueAccessToken, issueAdminToken, issueResourceToken, type ResourceGrant, type SigningKey, type TokenOp } from '../../src/core/tokens.ts'
import { LockerClient } from '../../src/sdk/locker-client.ts'

export interface TestLocker {
  name: string
  server: LockerServer
  key: SigningKey
  client: LockerClient
  /** locker://host:port/name */
  uri: string
  token: (ops?: TokenOp[]) => Promise<string>
  /** an access token and a resource token bound to it */
  grant: (ops: TokenOp[], resource: Omit<ResourceGrant, 'ttlSeconds'>) => Promise<{ token: string, resource: string }>
}

export interface TestServer {
  server: LockerServer
  admin: SigningKey
  locker: (name: string, o?: { quota?: number, weight?: number, floor?: number }) => Promise<TestLocker>
}

export async function startLockerServers (n: number, o: Partial<LockerServerOptions> = {}): Promise<{ servers: TestServer[], stop: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'berth-lockers-'))
  const servers: TestServer[] = []
  for (let i = 0; i < n; i++) {
    const admin = await generateSigningKey()
    // Everything here is on loopback: the servers must reach each other and the test's origins.
    const server = await createLockerServer({ listen: '127.0.0.1:0', dir: join(dir, `s${i}`), adminKey: admin.publicJwk, allowPrivatePlaces: true, ...o })
    await server.start()
    const client = new LockerClient(server.url)
    servers.push({
      server,
      admin,
      async locker (name, lo = {}) {
        const key = await generateSigningKey()
        await client.createLocker(await issueAdminToken(admin), { name, key: key.publicJwk, quota: lo.quota, weight: lo.weight, ...(lo.floor !== undefined ? { floor: lo.floor } : {}) })
        const token = async (ops: TokenOp[] = ['read', 'write', 'delete', 'distribute', 'status', 'manage']): Promise<string> => await issueAccessToken(key, { locker: name, ops, objects: 'all', ttlSeconds: 600 })
        return {
          name,
          server,
          key,
          client,
          uri: `locker://${new URL(server.url).host}/${name}`,
          token,
          async grant (ops, resource) {
            const access = await token(ops)
            return { token: access, resource: await issueResourceToken(key, access, { ttlSeconds: 600, ...resource }) }
          }
        }
      }
    })
  }
  return {
    servers,
    async stop () {
      for (const s of servers) await s.server.stop()
      await rm(dir, { recursive: true, force: true })
    }
  }
}

/**
 * A plain HTTP origin serving one object (with Range), counting the body bytes it sent; `gate`
 * (when set) is awaited before each piece past `gateAt` bytes, so a test can hold the origin.
 */
export interface Origin { url: string, sent: number, requests: number, gateAt: number, gate: Promise<void> | undefined, close: () => Promise<void> }

export async function startOrigin (bytes: Buffer, o: { piece?: number } = {}): Promise<Origin> {
  const piece = o.piece ?? 256 * 1024
  const origin: Origin = { url: '', sent: 0, requests: 0, gateAt: Infinity, gate: undefined, close: async () => {} }
  const server: Server = createServer((req, res) => {
    origin.requests++
    let start = 0
    let end = bytes.length - 1
    const m = /^bytes=(\d+)-(\d*)$/.exec(req.headers.range ?? '')
    if (m !== null) {
      start = Number(m[1])
      end = m[2] !== '' ? Math.min(Number(m[2]), end) : end
      res.writeHead(206, { 'content-length': end - start + 1, 'content-range': `bytes ${start}-${end}/${bytes.length}` })
    } else {
      res.writeHead(200, { 'content-length': bytes.length, 'accept-ranges': 'bytes' })
    }
    void (async () => {
      for (let at = start; at <= end; at += piece) {
        if (origin.gate !== undefined && at >= origin.gateAt) await origin.gate
        const slice = bytes.subarray(at, Math.min(end + 1, at + piece))
        origin.sent += slice.length
        if (!res.write(slice)) await new Promise(resolve => res.once('drain', resolve))
        if (res.destroyed) return
      }
      res.end()
    })()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  const addr = server.address() as { port: number }
  origin.url = `http://127.0.0.1:${addr.port}/object`
  origin.close = async () => { server.closeAllConnections(); await new Promise(resolve => server.close(resolve)) }
  return origin
}
