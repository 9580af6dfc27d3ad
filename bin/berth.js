#!/usr/bin/env node
// Runs the CLI from its bundle (fast start), rebuilding the bundle first when any source file
// is newer; falls back to running the TypeScript through tsx if bundling is not possible.
import { readFileSync, readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'
import { setFlagsFromString } from 'node:v8'

// The long-running servers (`agent`, `start`, `locker serve`, `alto serve`) run differently from the
// short-lived client commands.
const [command, subcommand] = process.argv.slice(2)
const daemon = command === 'agent' || command === 'start' || command === 'overlay' || ((command === 'locker' || command === 'alto') && subcommand === 'serve')

// Short-lived client commands: undici's HTTP parser is WebAssembly, which V8 would also compile
// with its optimizing tier in the background, and a process waits for that at exit (~75 ms per
// command, measured). The baseline compiler alone is plenty for a handful of requests. The
// daemons keep the optimizing tier: they parse for hours.
if (!daemon) setFlagsFromString('--liftoff-only')
// Daemons: V8 otherwise lets the heap grow to ~3x its live data between full collections, and a
// transfer allocates fast. Measured on a 4 GiB get: receiver peak RSS 270 → 192 MB, same speed.
if (daemon) setFlagsFromString('--optimize-for-size')

// A reader that went away (`berth --help | head`, `berth status | head -1`): a client command has
// nothing left to say, so it ends quietly with the shell's "killed by SIGPIPE" code (as an action
// does on EPIPE); a daemon keeps serving, its stdout was only for the lines it printed at start.
process.stdout.on('error', err => {
  if (err.code !== 'EPIPE') throw err
  if (!daemon) process.exit(141)
})

const root = fileURLToPath(new URL('..', import.meta.url))
const pointer = join(root, 'dist', 'current')

function newest (dir) {
  let t = 0
  for (const e of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, e.name)
    t = Math.max(t, e.isDirectory() ? newest(p) : statSync(p).mtimeMs)
  }
  return t
}

let bundle
try {
  let built = 0
  try { built = statSync(pointer).mtimeMs } catch {}
  if (built >= newest(join(root, 'src'))) bundle = join(root, 'dist', readFileSync(pointer, 'utf8').trim(), 'berth.mjs')
  else bundle = (await import('../scripts/build.mjs')).build()
} catch {
  bundle = undefined
}
if (bundle !== undefined) {
  await import(pathToFileURL(bundle).href)
} else {
  const { register } = await import('tsx/esm/api')
  register()
  await import('../src/cli/main.ts')
}
