// Bundles the CLI so `berth` starts in ~0.25 s instead of compiling TypeScript on every run.
// Dependencies stay external (loaded from node_modules as usual). Each build goes to its own
// folder and is published by renaming dist/current into place, so processes starting while
// another rebuilds never see a half-written bundle.
import { buildSync, stop } from 'esbuild'
import { readdirSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'

export const root = fileURLToPath(new URL('..', import.meta.url))
export const pointer = root + 'dist/current'

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
    packages: 'external',
    sourcemap: 'inline',
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
