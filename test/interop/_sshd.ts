/**
 * A throwaway OpenSSH server on loopback: its own host key, one client key, config and pid file
 * in a temp dir; nothing of the machine's own ssh setup is read or changed (beyond the
 * privilege-separation directory sshd insists on).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdir, writeFile, chmod, copyFile } from 'node:fs/promises'
import { join } from 'node:path'
import { freePort } from './_berth-cli.ts'
import { ensurePackages } from './_apt.ts'

const SSHD = '/usr/sbin/sshd'

/** Installs openssh-server when missing. Returns why it is unavailable, or undefined when it is there. */
export function ensureSshd (): string | undefined {
  return ensurePackages([SSHD, '/usr/bin/ssh', '/usr/bin/ssh-keygen'], ['openssh-server', 'openssh-client'])
}

export interface Sshd {
  port: number
  /** ssh client arguments that reach this server as root with the generated key */
  clientArgs: string[]
  stop: () => Promise<void>
  log: () => string
}

function keygen (path: string, type: string): void {
  const r = spawnSync('ssh-keygen', ['-q', '-t', type, '-N', '', '-f', path], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`ssh-keygen failed: ${r.stderr}`)
}

export async function startSshd (dir: string): Promise<Sshd> {
  await mkdir(dir, { recursive: true })
  // sshd refuses to start without its privilege-separation directory.
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 })
  const hostKey = join(dir, 'host_ed25519')
  const clientKey = join(dir, 'client_ed25519')
  keygen(hostKey, 'ed25519')
  keygen(clientKey, 'ed25519')
  const authorized = join(dir, 'authorized_keys')
  await copyFile(`${clientKey}.pub`, authorized)
  await chmod(authorized, 0o600)
  const port = await freePort()
  const config = join(dir, 'sshd_config')
  await writeFile(config, [
    `Port ${port}`,
    'ListenAddress 127.0.0.1',
    `HostKey ${hostKey}`,
    `PidFile ${join(dir, 'sshd.pid')}`,
    'PermitRootLogin yes',
    'PubkeyAuthentication yes',
    'PasswordAuthentication no',
    'KbdInteractiveAuthentication no',
    `AuthorizedKeysFile ${authorized}`,
    'StrictModes no',
    'UsePAM no',
    'LogLevel ERROR',
    ''
  ].join('\n'))
  const child: ChildProcess = spawn(SSHD, ['-D', '-e', '-p', String(port), '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] })
  let log = ''
  child.stderr!.setEncoding('utf8').on('data', (s: string) => { log += s })
  const clientArgs = ['-i', clientKey, '-p', String(port), '-o', 'StrictHostKeyChecking=no', '-o', 'UserKnownHostsFile=/dev/null', '-o', 'BatchMode=yes', '-o', 'LogLevel=ERROR', '-o', 'ConnectTimeout=10']
  const stop = async (): Promise<void> => {
    if (child.exitCode !== null || child.signalCode !== null) return
    const exited = new Promise<void>(resolve => child.once('exit', () => resolve()))
    child.kill('SIGTERM')
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(timer)
  }
  // Ready when a real login works (the port alone may be open before the key is loaded).
  const deadline = Date.now() + 20_000
  for (;;) {
    if (child.exitCode !== null) throw new Error(`sshd exited with ${child.exitCode}: ${log}`)
    const r = spawnSync('ssh', [...clientArgs, 'root@127.0.0.1', 'true'], { encoding: 'utf8', timeout: 15_000 })
    if (r.status === 0) break
    if (Date.now() > deadline) { await stop(); throw new Error(`sshd on port ${port} never accepted a login: ${r.stderr} ${log}`) }
    await new Promise(resolve => setTimeout(resolve, 200))
  }
  return { port, clientArgs, stop, log: () => log }
}
