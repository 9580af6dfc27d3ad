/**
 * Outside programs for interop tests: installed with apt-get when missing (we are root on the
 * test machines); when that is impossible the caller skips with the reason returned here.
 */
import { spawnSync } from 'node:child_process'
import { existsSync } from 'node:fs'

/** Installs `packages` unless every path in `needs` exists. Returns why they are unavailable, or undefined. */
export function ensurePackages (needs: readonly string[], packages: readonly string[]): string | undefined {
  if (needs.every(p => existsSync(p))) return undefined
  const install = (): boolean => spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...packages], { stdio: 'ignore', env: { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }, timeout: 300_000 }).status === 0
  if (!install()) {
    spawnSync('apt-get', ['update'], { stdio: 'ignore', timeout: 300_000 })
    if (!install()) return `${packages.join(', ')} not installed and \`apt-get install -y ${packages.join(' ')}\` failed (not root, or no package mirror)`
  }
  const missing = needs.filter(p => !existsSync(p))
  return missing.length === 0 ? undefined : `apt-get installed ${packages.join(', ')} but ${missing.join(', ')} still missing`
}
