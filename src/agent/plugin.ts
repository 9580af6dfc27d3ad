/**
 * Transfer plugins find and move bytes; they never decide what is true. The agent core verifies
 * every chunk against its cid and the object against its OID, so a new plugin cannot weaken
 * integrity. A plugin serves the hint schemes it names; cancelling is aborting the signal.
 */
import type { Descriptor } from '../core/chunker/types.ts'
import type { Hint } from '../core/hints.ts'
import type { ChunkStore } from '../store/types.ts'
import { UnsupportedSchemeError } from '../core/errors.ts'
import { readManifest } from '../core/wire.ts'

export interface PluginCallOptions {
  signal: AbortSignal
  /**
   * Where to put received chunk bytes, when the plugin can choose: the core hands out shared
   * memory so verification on the hash workers needs no further copy.
   */
  alloc?: (length: number) => Uint8Array
  /**
   * Opportunistic sources (portable storage): rather than saying a chunk is missing, wait for it
   * to turn up until the signal aborts. Set by the multipath plugin, which asks such a source
   * for everything at once and cancels what the network brought first.
   */
  patient?: boolean
  /**
   * SAILOR's urgency: an urgent get falls back at once to the next source (ultimately the peer
   * itself); a non-urgent one may be held until the next schedule time while lockers are busy
   * or down. Default true.
   */
  urgent?: boolean
  /**
   * The same object for every call of one get: multi-source plugins keep what they learnt
   * during the get (a path that lied or failed) on it, across the core's batches.
   */
  session?: object
  /** the object the chunks belong to (a locker serves whole objects by range, not chunks by cid) */
  oid?: string
}

export interface ManifestStream {
  size: number
  chunks: number
  /** descriptors in offset order, as the source produces them */
  descriptors: AsyncIterable<Descriptor>
}

export interface ChunkResult {
  descriptor: Descriptor
  /** undefined: the source does not have this chunk */
  bytes: Uint8Array | undefined
  /**
   * Multi-source plugins: the core calls this when the bytes fail verification, so that only the
   * path that sent them is dropped (and the chunk asked again) rather than the whole plugin.
   */
  reject?: (err: Error) => void
  /** the sub-plugin that brought the bytes, for metrics (multi-source plugins) */
  via?: string
}

export interface TransferPlugin {
  readonly name: string
  /** URI schemes with the colon, e.g. ['berth:'] */
  readonly schemes: readonly string[]
  manifest (oid: string, hint: Hint, o: PluginCallOptions): Promise<ManifestStream>
  /** Results in any order; a wanted chunk the source lacks comes back with `bytes: undefined`. */
  chunks (wanted: readonly Descriptor[], hint: Hint, o: PluginCallOptions): AsyncIterable<ChunkResult>
  /** whether it has a way to this hint (default: every hint of its schemes) */
  serves? (hint: Hint): boolean
  /**
   * Pushing plugins (DOT's register_push): told of every object put on this agent, e.g. to copy
   * it to a portable disk or upload it to the owner's locker. Work runs in the background (close
   * stops it); the hints returned are added to the put's answer.
   */
  objectAdded? (object: AddedObject, store: ChunkStore): Hint[]
  /** hints this plugin adds to every get (a configured portable disk) */
  readonly standingHints?: readonly Hint[]
  /**
   * Asked for everything at once and answering as chunks turn up (DOT's opportunistic
   * sub-plugins: portable storage), rather than in small batches like a network source.
   */
  readonly opportunistic?: boolean
  close? (): Promise<void>
}

export interface AddedObject { oid: string, size: number, chunks: number }

/**
 * A plugin that chooses among several sources itself (multipath): the core hands it every hint
 * of a get that it serves, as one source, and it spreads, borrows and falls back among them.
 * Its results carry `reject` so a bad path is dropped, not the group.
 */
export interface SourceGroupPlugin {
  readonly name: string
  readonly schemes: readonly string[]
  readonly group: true
  manifest (oid: string, hints: readonly Hint[], o: PluginCallOptions): Promise<ManifestStream>
  chunks (wanted: readonly Descriptor[], hints: readonly Hint[], o: PluginCallOptions): AsyncIterable<ChunkResult>
  /** whether it has a way to this hint (default: every hint of its schemes) */
  serves? (hint: Hint): boolean
  /**
   * How the core should batch for these hints: a plugin that spreads batches over several paths
   * wants more, smaller ones, so a slow path holds up little. Undefined: the core's defaults.
   */
  batching? (hints: readonly Hint[]): { batchBytes: number, parallel: number } | undefined
  objectAdded? (object: AddedObject, store: ChunkStore): Hint[]
  readonly standingHints?: readonly Hint[]
  close? (): Promise<void>
}

export type AnyPlugin = TransferPlugin | SourceGroupPlugin

export function isGroup (p: AnyPlugin): p is SourceGroupPlugin {
  return (p as SourceGroupPlugin).group === true
}

/**
 * A manifest answer's body (NDJSON, see core/wire.ts) as a ManifestStream, checked against the
 * OID; a bad one frees its connection now rather than at the body timeout.
 */
export async function manifestFromBody (body: AsyncIterable<Uint8Array> & { destroy: () => unknown }, oid: string): Promise<ManifestStream> {
  try {
    const { head, descriptors } = await readManifest(body, oid)
    return { size: head.size, chunks: head.chunks, descriptors }
  } catch (err) {
    body.destroy()
    throw err
  }
}

/**
 * The agent's plugin pipeline: chooses the plugin for a hint by its URI scheme (the first
 * plugin that names the scheme and takes the hint), and tells every pushing plugin of new objects.
 */
export class PluginRegistry {
  constructor (readonly plugins: readonly AnyPlugin[] = []) {}

  for (hint: Hint): AnyPlugin {
    const scheme = hint.uri.slice(0, hint.uri.indexOf(':') + 1)
    // The first plugin naming the scheme that takes this hint (a multipath whose paths all
    // `match` other hosts passes it on).
    const p = this.plugins.find(p => p.schemes.includes(scheme) && (p.serves?.(hint) ?? true))
    if (p === undefined) throw new UnsupportedSchemeError(`no transfer plugin serves ${scheme} hints${this.plugins.some(p => p.schemes.includes(scheme)) ? ' like this one' : ''} here`)
    return p
  }

  has (hint: Hint): boolean {
    const scheme = hint.uri.slice(0, hint.uri.indexOf(':') + 1)
    return this.plugins.some(p => p.schemes.includes(scheme) && (p.serves?.(hint) ?? true))
  }

  /** Hints every get may use besides its own (configured portable disks). */
  standingHints (): Hint[] {
    return this.plugins.flatMap(p => p.standingHints ?? [])
  }

  /** A new object was put: pushing plugins start their copies; their hints are returned. */
  objectAdded (object: AddedObject, store: ChunkStore): Hint[] {
    const hints: Hint[] = []
    for (const p of this.plugins) if (p.objectAdded !== undefined) hints.push(...p.objectAdded(object, store))
    return hints
  }

  async close (): Promise<void> {
    await Promise.allSettled(this.plugins.map(async p => await p.close?.()))
  }
}
