// Bundles the CLI so `berth` starts in ~0.25 s instead of compiling TypeScript on every run.
// The pure-JS dependencies every command loads are bundled in: loading undici's ~80 CommonJS
// files one by one from node_modules took ~100 ms of each CLI run. The rest (native
// better-sqlite3, and what only the daemons load) stays external. Each build goes to its own
// folder and is published by renaming dist/current into place, so processes starting while
// another rebuilds never see a half-written bundle.
import { buildSync, stop } from 'esbuild'
import { readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export const root = fileURLToPath(new URL('..', import.meta.url))
export const pointer = root + 'dist/current'

/** Loaded from node_modules, not bundled: native code, and modules only the daemons need. */
const EXTERNAL = ['better-sqlite3', 'fastify', 'pino', 'prom-client', 'esbuild', 'tsx']

export function build () {
  const name = `build-${Date.now()}-${process.pid}`
  buildSync({
    entryPoints: [root + 'src/cli/main.ts'],
    outdir: root + 'dist/' + name,
    entryNames: 'berth',
    // Split so that modules only some commands need (the daemons: fastify, prom-client) load
    // only when those commands run.
    splitting: true,
    outExtension: { '.js': '.mjs' },
    bundle: true,
    platform: 'node',
    format: 'esm',
    target: 'node20',
    external: EXTERNAL,
    // Bundled CommonJS (undici) calls require() for Node's built-ins; ESM has no require of its own.
    banner: { js: "import { createRequire as __berthRequire } from 'node:module'; const require = __berthRequire(import.meta.url);" },
    // Linked, not inline: an inline map with the bundled dependencies would be parsed on every start.
    sourcemap: 'linked',
    logLevel: 'error'
  })
  // The build may leave esbuild's helper process running; the CLI must not carry it along.
  stop()
  writeFileSync(`${pointer}.${process.pid}`, name)
  renameSync(`${pointer}.${process.pid}`, pointer)
  // Old builds: gone after a minute (a process may still be loading one).
  for (const e of readdirSync(root + 'dist')) {
    if (e.startsWith('build-') && e !== name && Date.now() - statSync(root + 'dist/' + e).mtimeMs > 60_000) rmSync(root + 'dist/' + e, { recursive: true, force: true })
  }
  return root + 'dist/' + name + '/berth.mjs'
}

if (process.argv[1] === fileURLToPath(import.meta.url)) build()
