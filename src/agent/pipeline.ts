/**
 * The agent's plugin pipeline, composed from its config file (DOT §4.4): a list of plugin specs,
 * the first to name a hint scheme serving it. A `multipath` spec wraps sub-plugin specs, e.g.
 *
 *   { "plugins": [ { "type": "multipath", "perPath": 10, "paths": [
 *       { "type": "peer", "localAddress": "10.0.1.1", "match": "berth://10.0.1." },
 *       { "type": "peer", "localAddress": "10.0.2.1", "match": "berth://10.0.2." },
 *       { "type": "http" }, { "type": "portable", "dir": "/media/usb" },
 *       { "type": "locker", "mine": { "uri": "locker://isp:4660/bob", "token": "…" } } ] } ] }
 *
 * Without a `plugins` list the agent runs DEFAULT_PIPELINE: one multipath plugin over every kind,
 * so hints of several kinds work together in one get.
 */
import { isIP } from 'node:net'
import { z } from 'zod'
import type { AnyPlugin, TransferPlugin } from './plugin.ts'
import { HttpPlugin } from './plugins/http.ts'
import { MultipathPlugin } from './plugins/multipath.ts'
import { PeerPlugin } from './plugins/peer.ts'
import { PortablePlugin } from './plugins/portable.ts'
import { LockerPlugin } from './plugins/locker.ts'

const match = z.string().min(1).max(2048).optional()
const timeoutMs = z.number().int().min(100).max(3_600_000).optional()
const connections = z.number().int().min(1).max(64).optional()

const PeerSpec = z.strictObject({ type: z.literal('peer'), localAddress: z.string().refine(a => isIP(a) !== 0, 'an IP address of this host').optional(), connections, timeoutMs, match })
const HttpSpec = z.strictObject({ type: z.literal('http'), connections, timeoutMs, match })
const PortableSpec = z.strictObject({
  type: z.literal('portable'),
  dir: z.string().min(1).optional(),
  export: z.boolean().optional(),
  pollMs: z.number().int().min(10).max(3_600_000).optional(),
  watch: z.boolean().optional(),
  match
})

const credential = {
  uri: z.string().regex(/^locker:\/\/[^/]+\/[^/]+$/, 'locker://host:port/<locker>'),
  token: z.string().min(1).max(16384),
  resource: z.string().min(1).max(16384).optional()
}
const LockerSpec = z.strictObject({
  type: z.literal('locker'),
  /** the owner's locker: puts are uploaded there, gets relay through it */
  mine: z.strictObject({ ...credential, ttl: z.number().int().min(1).optional() }).optional(),
  /** read tokens for other users' lockers */
  credentials: z.array(z.strictObject(credential)).max(1024).optional(),
  timeoutMs,
  holdMs: z.number().int().min(10).max(3_600_000).optional(),
  downMs: z.number().int().min(0).max(3_600_000).optional(),
  uploads: z.number().int().min(1).max(64).optional(),
  connections,
  match
})

export type LeafSpec = z.infer<typeof PeerSpec> | z.infer<typeof HttpSpec> | z.infer<typeof PortableSpec> | z.infer<typeof LockerSpec>
const LeafSpec = z.discriminatedUnion('type', [PeerSpec, HttpSpec, PortableSpec, LockerSpec])

const MultipathSpec = z.strictObject({
  type: z.literal('multipath'),
  perPath: z.number().int().min(1).max(1024).optional(),
  borrow: z.boolean().optional(),
  paths: z.array(LeafSpec).min(1).max(64)
})

export const PluginSpecSchema = z.discriminatedUnion('type', [PeerSpec, HttpSpec, PortableSpec, LockerSpec, MultipathSpec])
export type PluginSpec = z.infer<typeof PluginSpecSchema>

export const DEFAULT_PIPELINE: readonly PluginSpec[] = [
  { type: 'multipath', paths: [{ type: 'peer' }, { type: 'http' }, { type: 'portable' }, { type: 'locker' }] }
]

export interface PipelineContext {
  /** bind the default peer plugin's connections to this address */
  localAddress?: string
}

function leaf (spec: LeafSpec, ctx: PipelineContext): TransferPlugin {
  switch (spec.type) {
    case 'peer': return new PeerPlugin({ localAddress: spec.localAddress ?? ctx.localAddress, connections: spec.connections, timeoutMs: spec.timeoutMs })
    case 'http': return new HttpPlugin({ connections: spec.connections, timeoutMs: spec.timeoutMs })
    case 'locker': return new LockerPlugin({ mine: spec.mine, credentials: spec.credentials, timeoutMs: spec.timeoutMs, holdMs: spec.holdMs, downMs: spec.downMs, uploads: spec.uploads, connections: spec.connections })
    case 'portable': return new PortablePlugin({ dir: spec.dir, export: spec.export, pollMs: spec.pollMs, watch: spec.watch })
  }
}

/** Plugins from specs (already validated by PluginSpecSchema); undefined → the default pipeline. */
export function buildPipeline (specs: readonly PluginSpec[] | undefined, ctx: PipelineContext = {}): AnyPlugin[] {
  return (specs ?? DEFAULT_PIPELINE).map(spec => {
    if (spec.type !== 'multipath') return leaf(spec, ctx)
    return new MultipathPlugin({
      perPath: spec.perPath,
      borrow: spec.borrow,
      paths: spec.paths.map(p => ({ plugin: leaf(p, ctx), match: p.match }))
    })
  })
}
