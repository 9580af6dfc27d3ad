/** Chunk and object stores: the contract, its implementations, one way to open any of them, and a read cache for any of them. */
import { InvalidConfigError } from '../core/errors.ts'
import type { HashPool } from '../core/hash-pool.ts'
import { openDiskStore } from './disk.ts'
import { createMemoryStore } from './memory.ts'
import type { ChunkStore } from './types.ts'

export type * from './types.ts'
export { MemoryStore, createMemoryStore } from './memory.ts'
export { DiskStore, openDiskStore, DEFAULT_PACK_SIZE, type DiskStoreOptions } from './disk.ts'
export { CachedStore, cachedStore, DEFAULT_CACHE_BYTES, type CacheOptions, type CacheStats } from './cache.ts'

export interface StoreOptions {
  kind: 'memory' | 'disk'
  /** where a disk store keeps its packs and index; required for 'disk' */
  dir?: string
  /** hashes reads for verification (disk); default: the process's shared pool */
  pool?: HashPool
  /** disk: flush to stable storage before a commit returns; default true */
  fsync?: boolean
}

export async function openStore (options: StoreOptions): Promise<ChunkStore> {
  switch (options.kind) {
    case 'memory':
      return createMemoryStore()
    case 'disk':
      if (options.dir === undefined) throw new InvalidConfigError('a disk store needs a directory (dir)')
      return await openDiskStore({ dir: options.dir, pool: options.pool, fsync: options.fsync })
    default:
      throw new InvalidConfigError(`unknown store kind ${JSON.stringify((options as { kind?: unknown }).kind)}`)
  }
}
