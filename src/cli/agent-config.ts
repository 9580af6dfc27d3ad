/** The agent's settings, from flags or a `--config` JSON file, checked before anything listens. */
import { readFile } from 'node:fs/promises'
import { dirname, resolve } from 'node:path'
import { z } from 'zod'
import type { AgentOptions } from '../agent/agent.ts'
import { parseChunkerSpec } from '../core/chunker/index.ts'
import { InvalidConfigError, toBerthError } from '../core/errors.ts'
import { parseHint } from '../core/hints.ts'
import { type PluginSpec, PluginSpecSchema } from '../agent/pipeline.ts'

/** `--config FILE`: the same settings as the flags, in JSON; flags win over the file. */
export const AgentConfigSchema = z.strictObject({
  listen: z.string().optional(),
  peerListen: z.string().optional(),
  advertise: z.string().optional(),
  store: z.string().optional(),
  allowPath: z.array(z.string()).optional(),
  chunker: z.string().optional(),
  /** the plugin pipeline (DOT §4.4; see src/agent/pipeline.ts); absent: the default */
  plugins: z.array(PluginSpecSchema).min(1).max(64).optional(),
  /** run an overlay node in the agent's process (DHT hints for hint-less gets, announcements) */
  overlay: z.strictObject({
    listen: z.union([z.string(), z.array(z.string()).max(16)]).optional(),
    bootstrap: z.array(z.string()).max(64).optional()
  }).optional()
})
export type AgentConfig = z.infer<typeof AgentConfigSchema>

export async function readAgentConfig (file: string): Promise<AgentConfig> {
  let text: string
  try {
    text = await readFile(file, 'utf8')
  } catch (err) {
    throw new InvalidConfigError(`cannot read config ${file}: ${(err as Error).message}`)
  }
  let data: unknown
  try {
    data = JSON.parse(text)
  } catch (err) {
    throw new InvalidConfigError(`config ${file} is not JSON: ${(err as Error).message}`)
  }
  const parsed = AgentConfigSchema.safeParse(data)
  if (!parsed.success) {
    const issues = parsed.error.issues.map(i => `${i.path.length > 0 ? i.path.join('.') : '(top)'}: ${i.message}`).join('; ')
    throw new InvalidConfigError(`config ${file}: ${issues}`)
  }
  // Paths in a config file are relative to the file, not to wherever the agent was started.
  const base = dirname(resolve(file))
  const c = parsed.data
  return {
    ...c,
    ...(c.store !== undefined ? { store: resolve(base, c.store) } : {}),
    ...(c.allowPath !== undefined ? { allowPath: c.allowPath.map(p => resolve(base, p)) } : {}),
    ...(c.plugins !== undefined ? { plugins: c.plugins.map(p => withDirs(p, base)) } : {})
  }
}

/** A portable disk's directory in a config file is relative to the file too. */
function withDirs (spec: PluginSpec, base: string): PluginSpec {
  if (spec.type === 'multipath') return { ...spec, paths: spec.paths.map(p => p.type === 'portable' && p.dir !== undefined ? { ...p, dir: resolve(base, p.dir) } : p) }
  return spec.type === 'portable' && spec.dir !== undefined ? { ...spec, dir: resolve(base, spec.dir) } : spec
}

/** Checks every setting before anything listens, so a typo is ERR_INVALID_CONFIG, exit 2. */
export async function agentOptionsFrom (c: AgentConfig): Promise<AgentOptions> {
  const { parseListen } = await import('../agent/http.ts')
  const options: AgentOptions = { processMetrics: true }
  if (c.listen !== undefined) { parseListen(c.listen); options.listen = c.listen }
  if (c.peerListen !== undefined) { parseListen(c.peerListen); options.peerListen = c.peerListen }
  if (c.advertise !== undefined) {
    try { parseHint(`berth://${c.advertise}`) } catch (err) {
      throw new InvalidConfigError(`bad --advertise ${JSON.stringify(c.advertise)} (HOST:PORT): ${toBerthError(err).message}`)
    }
    options.advertise = c.advertise
  }
  if (c.store !== undefined) options.storeDir = resolve(c.store)
  if (c.allowPath !== undefined && c.allowPath.length > 0) options.allowedRoots = c.allowPath.map(p => resolve(p))
  if (c.chunker !== undefined) options.chunker = parseChunkerSpec(c.chunker)
  if (c.plugins !== undefined) {
    // Built once here, so what only a plugin can judge (a locker URI's port, export without a
    // directory) is a config error before anything listens; the agent builds its own.
    const { buildPipeline } = await import('../agent/pipeline.ts')
    try {
      await Promise.allSettled(buildPipeline(c.plugins).map(async p => await p.close?.()))
    } catch (err) {
      throw new InvalidConfigError(`plugins: ${toBerthError(err).message}`)
    }
    options.pipeline = c.plugins
  }
  return options
}

/**
 * The overlay node a daemon runs beside its agent (`--overlay-listen`, `--bootstrap`, or the
 * config file's `overlay`), created but not started; undefined when none is configured. A bad
 * multiaddr is ERR_INVALID_CONFIG here, before anything listens.
 */
export async function overlayNodeFrom (c: AgentConfig['overlay']): Promise<import('../overlay/registry.ts').OverlayNode | undefined> {
  if (c === undefined) return undefined
  const { createOverlayNode } = await import('../overlay/registry.ts')
  return await createOverlayNode({ listen: c.listen, bootstrap: c.bootstrap })
}
