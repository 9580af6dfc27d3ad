/**
 * Transfer plugins find and move bytes; they never decide what is true. The agent core verifies
 * every chunk against its cid and the object against its OID, so a new plugin cannot weaken
 * integrity. A plugin serves the hint schemes it names; cancelling is aborting the signal.
 */
import type { Descriptor } from '../core/chunker/types.ts'
import type { Hint } from '../core/hints.ts'
import { UnsupportedSchemeError } from '../core/errors.ts'
import { readManifest } from '../core/wire.ts'

export interface PluginCallOptions {
  signal: AbortSignal
  /**
   * Where to put received chunk bytes, when the plugin can choose: the core hands out shared
   * memory so verification on the hash workers needs no further copy.
   */
  alloc?: (length: number) => Uint8Array
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
}

export interface TransferPlugin {
  readonly name: string
  /** URI schemes with the colon, e.g. ['berth:'] */
  readonly schemes: readonly string[]
  manifest (oid: string, hint: Hint, o: PluginCallOptions): Promise<ManifestStream>
  /** Results in any order; a wanted chunk the source lacks comes back with `bytes: undefined`. */
  chunks (wanted: readonly Descriptor[], hint: Hint, o: PluginCallOptions): AsyncIterable<ChunkResult>
  close? (): Promise<void>
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

/** Chooses the plugin for a hint by its URI scheme. */
export class PluginRegistry {
  private readonly bySchemes = new Map<string, TransferPlugin>()
  constructor (plugins: readonly TransferPlugin[] = []) { for (const p of plugins) this.add(p) }

  add (plugin: TransferPlugin): void {
    for (const s of plugin.schemes) this.bySchemes.set(s, plugin)
  }

  for (hint: Hint): TransferPlugin {
    const scheme = hint.uri.slice(0, hint.uri.indexOf(':') + 1)
    const p = this.bySchemes.get(scheme)
    if (p === undefined) throw new UnsupportedSchemeError(`no transfer plugin serves ${scheme} hints here`)
    return p
  }

  has (hint: Hint): boolean {
    return this.bySchemes.has(hint.uri.slice(0, hint.uri.indexOf(':') + 1))
  }

  async close (): Promise<void> {
    await Promise.allSettled([...new Set(this.bySchemes.values())].map(async p => await p.close?.()))
  }
}
