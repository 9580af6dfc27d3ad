/**
 * The outside anchors: nginx (sendfile) serving the data file, a throw-away sshd for scp and
 * rsync, and the commands timed against them. Servers run in the foreground as children of the
 * harness, with generated configs in a temporary directory, and die with it.
 */
import { existsSync } from 'node:fs'
import { mkdir, writeFile, readFile, rm, chmod } from 'node:fs/promises'
import { join, dirname, basename } from 'node:path'
import { freePort, run, runPipe, start, stop, waitForPort, which, type RunResult, type Started, describeFailure, devNull } from './proc.ts'

/** Installs Debian packages for missing programs (apt-get update only if the first try fails). */
export async function ensurePrograms (need: Array<{ prog: string, pkg: string }>, log: (s: string) => void): Promise<string[]> {
  const missing = []
  for (const n of need) if (await which(n.prog) === undefined) missing.push(n)
  if (missing.length === 0) return []
  const pkgs = [...new Set(missing.map(m => m.pkg))]
  if (process.getuid?.() !== 0 || await which('apt-get') === undefined) return missing.map(m => `${m.prog} missing (install ${m.pkg})`)
  log(`installing ${pkgs.join(' ')} with apt-get`)
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' }
  let r = await run('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], { env, timeoutMs: 600000 })
  if (r.code !== 0) {
    log('apt-get install failed; running apt-get update and retrying')
    await run('apt-get', ['update'], { env, timeoutMs: 600000 })
    r = await run('apt-get', ['install', '-y', '--no-install-recommends', ...pkgs], { env, timeoutMs: 600000 })
  }
  const still = []
  for (const n of missing) if (await which(n.prog) === undefined) still.push(`${n.prog} missing: apt-get install ${n.pkg} failed: ${r.stderr.trim().split('\n').slice(-2).join(' | ')}`)
  return still
}

export interface Nginx { port: number, url: string, proc: Started, stop: () => Promise<void> }

/**
 * nginx in the foreground serving `file`'s directory on 127.0.0.1 (sendfile on, no access log).
 * `workerConnections` (default 64) raises the connection limit of its one worker, and its
 * descriptor limit with it (the locker bench opens thousands of connections at once).
 */
/** `accessLog`: a file nginx logs each request to (combined format: status and body bytes sent); default none. */
export async function startNginx (file: string, dir: string, o: { workerConnections?: number, accessLog?: string } = {}): Promise<Nginx> {
  const workerConnections = o.workerConnections ?? 64
  await mkdir(dir, { recursive: true })
  const port = await freePort()
  const conf = join(dir, 'nginx.conf')
  const root = dirname(file)
  // As root, workers would run as nobody; keep them as root so they can read the data wherever it is.
  const user = process.getuid?.() === 0 ? 'user root;\n' : ''
  await writeFile(conf, `${user}daemon off;
worker_processes 1;
${workerConnections > 64 ? `worker_rlimit_nofile ${2 * workerConnections + 64};\n` : ''}pid ${join(dir, 'nginx.pid')};
error_log ${join(dir, 'nginx-error.log')};
events { worker_connections ${workerConnections}; }
http {
  client_body_temp_path ${join(dir, 'body')};
  proxy_temp_path ${join(dir, 'proxy')};
  fastcgi_temp_path ${join(dir, 'fastcgi')};
  uwsgi_temp_path ${join(dir, 'uwsgi')};
  scgi_temp_path ${join(dir, 'scgi')};
  types { application/octet-stream bin; }
  default_type application/octet-stream;
  server {
    listen 127.0.0.1:${port};
    root ${root};
    sendfile on;
    tcp_nopush on;
    access_log ${o.accessLog ?? 'off'};
  }
}
`)
  const proc = start('nginx', ['-e', join(dir, 'nginx-error.log'), '-p', dir, '-c', conf])
  await waitForPort(port, proc, 'nginx')
  return { port, url: `http://127.0.0.1:${port}/${encodeURIComponent(basename(file))}`, proc, stop: async () => { await stop(proc) } }
}

export interface Sshd {
  port: number, key: string, dir: string, proc: Started
  /** identity and host-key options shared by ssh, scp and rsync's -e */
  opts: string[]
  /** ssh's arguments up to the destination: -p PORT + opts */
  sshArgs: string[]
  stop: () => Promise<void>
}

/** A temporary sshd on a free loopback port, with generated host and client keys (run as root). */
export async function startSshd (dir: string): Promise<Sshd> {
  await mkdir(dir, { recursive: true })
  const port = await freePort()
  const hostKey = join(dir, 'host_ed25519')
  const key = join(dir, 'client_ed25519')
  for (const k of [hostKey, key]) {
    await rm(k, { force: true }); await rm(k + '.pub', { force: true })
    const r = await run('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', k])
    if (r.code !== 0) throw new Error(describeFailure('ssh-keygen', ['-f', k], r))
  }
  const auth = join(dir, 'authorized_keys')
  await writeFile(auth, await readFile(key + '.pub'))
  await chmod(auth, 0o600)
  const sftp = ['/usr/lib/openssh/sftp-server', '/usr/libexec/openssh/sftp-server', '/usr/lib/ssh/sftp-server'].find(p => existsSync(p)) ?? 'internal-sftp'
  const conf = join(dir, 'sshd_config')
  await writeFile(conf, `Port ${port}
ListenAddress 127.0.0.1
HostKey ${hostKey}
PermitRootLogin yes
PubkeyAuthentication yes
AuthorizedKeysFile ${auth}
PasswordAuthentication no
KbdInteractiveAuthentication no
StrictModes no
UsePAM no
PidFile ${join(dir, 'sshd.pid')}
Subsystem sftp ${sftp}
`)
  // sshd wants its privilege-separation directory.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 }).catch(() => {})
  const proc = start('/usr/sbin/sshd', ['-D', '-e', '-p', String(port), '-f', conf])
  await waitForPort(port, proc, 'sshd')
  const opts = ['-i', key, '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'LogLevel=ERROR', '-o', 'BatchMode=yes']
  const sshArgs = ['-p', String(port), ...opts]
  // One login to be sure it works before anything is timed.
  const probe = await run('ssh', [...sshArgs, 'root@127.0.0.1', 'true'], { timeoutMs: 20000 })
  if (probe.code !== 0) throw new Error(`ssh login to the temporary sshd failed: ${describeFailure('ssh', [...sshArgs, 'root@127.0.0.1', 'true'], probe)} — sshd: ${proc.stderr().trim().slice(-500)}`)
  return { port, key, dir, proc, opts, sshArgs, stop: async () => { await stop(proc) } }
}


export interface Timed { ms: number, ok: boolean, error?: string, detail?: string }

function timed (cmd: string, args: readonly string[], r: RunResult, check?: (r: RunResult) => string | undefined): Timed {
  if (r.code !== 0 || r.timedOut) return { ms: r.ms, ok: false, error: describeFailure(cmd, args, r) }
  const bad = check?.(r)
  if (bad !== undefined) return { ms: r.ms, ok: false, error: `\`${[cmd, ...args].join(' ')}\`: ${bad}` }
  return { ms: r.ms, ok: true }
}

/** `openssl dgst -sha256 FILE`; checks the digest when one is expected. */
export async function opensslDgst (file: string, expectHex?: string): Promise<Timed & { hex?: string }> {
  const args = ['dgst', '-sha256', '-r', file]
  const r = await run('openssl', args, { timeoutMs: 600000 })
  const hex = r.stdout.trim().split(/\s+/)[0]
  return { ...timed('openssl', args, r, () => expectHex !== undefined && hex !== expectHex ? `digest ${hex} ≠ expected ${expectHex}` : undefined), hex }
}

/** `curl -s URL | openssl dgst -sha256`: a verified download; the digest is checked. */
export async function curlVerified (url: string, expectHex: string): Promise<Timed> {
  const a: [string, string[]] = ['curl', ['-s', '--fail', '-o', '-', url]]
  const b: [string, string[]] = ['openssl', ['dgst', '-sha256', '-r']]
  const r = await runPipe(a, b, { timeoutMs: 600000 })
  const label = `${a[0]} ${a[1].join(' ')} | ${b[0]} ${b[1].join(' ')}`
  if (r.codeA !== 0) return { ms: r.ms, ok: false, error: `\`${label}\`: curl exit ${r.codeA}: ${r.stderrA.trim().slice(-300)}` }
  if (r.code !== 0) return { ms: r.ms, ok: false, error: `\`${label}\`: openssl exit ${r.code}: ${r.stderr.trim().slice(-300)}` }
  const hex = r.stdout.trim().split(/\s+/)[0]
  if (hex !== expectHex) return { ms: r.ms, ok: false, error: `\`${label}\`: digest ${hex} ≠ expected ${expectHex}` }
  return { ms: r.ms, ok: true }
}

/** `curl -s URL -o /dev/null`: the raw loopback HTTP rate (context only, nothing verified). */
export async function curlRaw (url: string): Promise<Timed> {
  const args = ['-s', '--fail', '-o', '/dev/null', url]
  return timed('curl', args, await run('curl', args, { timeoutMs: 600000 }))
}

export async function scp (s: Sshd, file: string, dest: string): Promise<Timed> {
  await rm(dest, { force: true })
  const args = ['-q', '-P', String(s.port), ...s.opts, file, `root@127.0.0.1:${dest}`]
  const r = await run('scp', args, { timeoutMs: 600000 })
  return timed('scp', args, r)
}

export async function rsync (s: Sshd, file: string, dest: string): Promise<Timed> {
  await rm(dest, { force: true })
  const e = ['ssh', ...s.sshArgs].join(' ')
  const args = ['--whole-file', '-e', e, file, `root@127.0.0.1:${dest}`]
  const r = await run('rsync', args, { timeoutMs: 600000 })
  return timed('rsync', args, r)
}

/** `dd … conv=fsync`: what writing the data durably to this disk costs (context for stores). */
export async function ddFsync (file: string, dest: string): Promise<Timed> {
  await rm(dest, { force: true })
  const args = [`if=${file}`, `of=${dest}`, 'bs=4M', 'conv=fsync', 'status=none']
  const r = await run('dd', args, { timeoutMs: 600000 })
  await rm(dest, { force: true })
  return timed('dd', args, r)
}

export { devNull }
