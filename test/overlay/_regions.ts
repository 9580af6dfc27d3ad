/**
 * Three ALTO regions on loopback for portal tests: an ALTO server over the three-regions fixture
 * and, in each region, a locker server on `<block>.0.1` holding a locker `pub` with its own
 * owner key.
 */
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { createAltoServer, type AltoServer } from '../../src/overlay/alto/server.ts'
import { loadTopology } from '../../src/overlay/alto/topology.ts'
import { createLockerServer, type LockerServer } from '../../src/locker/server.ts'
import { generateSigningKey, issueAdminToken, type SigningKey } from '../../src/core/tokens.ts'
import { LockerClient } from '../../src/sdk/locker-client.ts'

export const FIXTURE = fileURLToPath(new URL('../fixtures/alto-three-regions.json', import.meta.url))
export const REGIONS = { east: '127.1', west: '127.2', south: '127.3' } as const
export type Region = keyof typeof REGIONS

export interface Regions {
  alto: AltoServer
  servers: Record<Region, LockerServer>
  keys: Record<Region, SigningKey>
  /** the portal's `lockers` config for these servers */
  lockers: () => Array<{ name: string, url: string, locker: string, ownerKey: SigningKey['privateJwk'] }>
  stop: () => Promise<void>
}

const MiB = 1024 * 1024

/** `overloaded`: that region's locker has a floor above what its server may send, so admission refuses every GET (503). */
export async function startRegions (dir: string, o: { overloaded?: Region } = {}): Promise<Regions> {
  const alto = await createAltoServer({ listen: '127.0.0.1:0', topology: await loadTopology(FIXTURE) })
  await alto.start()
  const servers = {} as Record<Region, LockerServer>
  const keys = {} as Record<Region, SigningKey>
  for (const region of Object.keys(REGIONS) as Region[]) {
    const admin = await generateSigningKey()
    const overloaded = o.overloaded === region
    const server = await createLockerServer({
      listen: `${REGIONS[region]}.0.1:0`,
      dir: join(dir, region),
      adminKey: admin.publicJwk,
      allowPrivatePlaces: true,
      ...(overloaded ? { capacity: { egress: MiB } } : {})
    })
    await server.start()
    keys[region] = await generateSigningKey()
    await new LockerClient(server.url).createLocker(await issueAdminToken(admin), { name: 'pub', key: keys[region].publicJwk, ...(overloaded ? { floor: 2 * MiB } : {}) })
    servers[region] = server
  }
  return {
    alto,
    servers,
    keys,
    lockers: () => (Object.keys(REGIONS) as Region[]).map(region => ({ name: region, url: servers[region].url, locker: 'pub', ownerKey: keys[region].privateJwk })),
    async stop () {
      for (const s of Object.values(servers)) await s.stop().catch(() => {})
      await alto.stop()
    }
  }
}
