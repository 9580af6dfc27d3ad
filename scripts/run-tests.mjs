// Node 20's test runner neither expands globs nor finds .ts files: list them here.
// Usage: node scripts/run-tests.mjs [dir-or-file ...]   (default: all of test/)
import { readdirSync, statSync } from 'node:fs'
import { join } from 'node:path'
import { spawnSync } from 'node:child_process'

function collect (path, out) {
  if (statSync(path).isDirectory()) {
    for (const name of readdirSync(path).sort()) {
      if (name === 'fixtures' || name.startsWith('_')) continue
      collect(join(path, name), out)
    }
  } else if (path.endsWith('.test.ts')) out.push(path)
  return out
}

const roots = process.argv.slice(2)
// The whole suite starts with the type-check: `tsc --noEmit` under strict is part of "green".
if (roots.length === 0) {
  const tsc = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '--noEmit', '-p', '.'], { stdio: 'inherit' })
  if (tsc.status !== 0) { console.error('tsc --noEmit failed'); process.exit(tsc.status ?? 1) }
  console.log('tsc --noEmit: clean')
}
const files = (roots.length ? roots : ['test']).flatMap(r => collect(r, []))
if (files.length === 0) { console.error('no test files found'); process.exit(1) }
const concurrency = process.env.BERTH_TEST_CONCURRENCY ?? '2'
const r = spawnSync(process.execPath, ['--import', 'tsx', '--test', `--test-concurrency=${concurrency}`, ...files], { stdio: 'inherit' })
process.exit(r.status ?? 1)
