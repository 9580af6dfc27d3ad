/**
 * cp (DOT's gcp): copy a file to another host with control over ssh and data agent-to-agent.
 * The file is put into the local agent; ssh then runs `berth get OID --hint …` on the far host,
 * whose agent pulls the chunks straight from ours. ssh carries a few hundred bytes of command,
 * never the data.
 */
import { spawn } from 'node:child_process'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import { basename } from 'node:path'
import { BerthError } from '../core/errors.ts'
import { type Hint, formatHint } from '../core/hints.ts'
import { type AgentClient, type PutInput, type PutResult, isLoopback, isLoopbackHost } from '../sdk/agent-client.ts'

/** A failure on the far side: ssh could not connect, or the remote `berth get` failed. */
export class RemoteError extends BerthError {
  readonly host: string
  readonly remoteExitCode: number | null
  /** the remote berth's error code, when it said one */
  readonly remoteCode: string | undefined
  constructor (host: string, exitCode: number | null, remoteCode: string | undefined, message: string) {
    super('ERR_REMOTE', message, 502)
    this.host = host
    this.remoteExitCode = exitCode
    this.remoteCode = remoteCode
  }
}

export class CpUsageError extends BerthError {
  constructor (message: string) { super('ERR_USAGE', message, 400) }
}

export interface RemoteTarget {
  /** what ssh is given: `host` or `user@host` (IPv6 brackets removed) */
  host: string
  path: string
}

/** Parses `[user@]host:path`, with `[v6addr]` for IPv6 hosts. */
export function parseRemoteTarget (text: string): RemoteTarget {
  const m = /^(?:([^@:/\s]+)@)?(?:\[([0-9A-Fa-f:.%\w]+)\]|([^@:/\s[\]]+)):(.*)$/s.exec(text)
  if (m === null) throw new CpUsageError(`destination must be [USER@]HOST:PATH, got ${JSON.stringify(text.slice(0, 200))}`)
  const [, user, v6, name, path] = m
  const host = v6 ?? name
  // A host that starts with '-' would be read by ssh as an option.
  if (host.startsWith('-') || (user ?? '').startsWith('-')) throw new CpUsageError(`bad host ${JSON.stringify(host)}`)
  if (path === '' || path === '-') throw new CpUsageError('destination path must name a file on the remote host')
  return { host: user !== undefined ? `${user}@${host}` : host, path }
}

/** POSIX shell quoting: one word, no expansion of anything inside. */
export function shellQuote (word: string): string {
  if (/^[A-Za-z0-9_./:=@%+,-]+$/.test(word)) return word
  return `'${word.replace(/'/g, "'\\''")}'`
}

/**
 * What to hand the agent for a local file: its path when the agent runs on this host (it reads
 * the file itself, no copy through the API), else the bytes — a remote agent would otherwise
 * read a same-named file of its own host.
 */
export function localPutInput (file: string, agentUrl: string, onBytes?: (n: number) => void): PutInput {
  if (isLoopback(agentUrl) && onBytes === undefined) return { path: file }
  const stream = createReadStream(file)
  if (onBytes === undefined) return { stream }
  return {
    stream: (async function * () {
      let n = 0
      for await (const piece of stream as AsyncIterable<Buffer>) { n += piece.byteLength; onBytes(n); yield piece }
    })()
  }
}

export interface CpOptions {
  /** the local agent */
  client: AgentClient
  src: string
  /** `[user@]host:path` */
  dst: string
  /** ssh program and its own arguments, split on whitespace (no shell); default "ssh" */
  ssh?: string
  /** extra ssh arguments, one per entry */
  sshOpts?: string[]
  /** the berth command on the remote host: a shell fragment, inserted as given; default "berth" */
  remoteBerth?: string
  /** the agent the remote berth should use (its --agent) */
  remoteAgent?: string
  chunker?: string
  signal?: AbortSignal
  onWarning?: (message: string) => void
  /** bytes read from SRC so far, when the put goes through this process */
  onPutProgress?: (bytes: number) => void
}

export interface CpResult {
  oid: string
  size: number
  chunks: number
  hints: Hint[]
  host: string
  path: string
}

/** The command line the remote shell runs. Every argument but the user's berth command is quoted. */
export function remoteGetCommand (remoteBerth: string, oid: string, hints: readonly Hint[], path: string, remoteAgent?: string): string {
  // A leading ~/ means the home directory, which is where ssh commands start anyway.
  const remotePath = path.startsWith('~/') ? path.slice(2) : path
  const words = ['get', oid, ...hints.flatMap(h => ['--hint', formatHint(h)]), '-o', remotePath, '--json']
  if (remoteAgent !== undefined) words.push('--agent', remoteAgent)
  return `${remoteBerth} ${words.map(shellQuote).join(' ')}`
}

export async function cp (o: CpOptions): Promise<CpResult> {
  const target = parseRemoteTarget(o.dst)
  if (target.path.endsWith('/')) {
    if (o.src === '-') throw new CpUsageError('copying stdin needs a destination file name, not a directory')
    target.path += basename(o.src)
  }
  const sshWords = (o.ssh ?? 'ssh').trim().split(/\s+/)
  if (sshWords[0] === '') throw new CpUsageError('--ssh must name a program')

  let put: PutResult
  if (o.src === '-') {
    put = await o.client.put({ stream: process.stdin }, { chunker: o.chunker, signal: o.signal })
  } else {
    const info = await stat(o.src)
    if (!info.isFile()) throw new CpUsageError(`${o.src} is not a regular file`)
    put = await o.client.put(localPutInput(o.src, o.client.url, o.onPutProgress), { chunker: o.chunker, signal: o.signal })
  }
  if (!isLoopbackHost(target.host)) {
    for (const h of put.hints) {
      const u = new URL(h.uri)
      if (u.hostname === 'localhost' || u.hostname === '[::1]' || /^127\./.test(u.hostname)) {
        o.onWarning?.(`the local agent advertises ${h.uri}, which ${target.host} cannot reach; run it with --advertise HOST:PORT (and --peer-listen on a reachable address)`)
      }
    }
  }

  const command = remoteGetCommand(o.remoteBerth ?? 'berth', put.oid, put.hints, target.path, o.remoteAgent)
  const args = [...sshWords.slice(1), ...(o.sshOpts ?? []), '--', target.host, command]
  const { code, stdout, stderr } = await run(sshWords[0], args, o.signal)
  if (code !== 0) throw remoteFailure(target.host, code, stdout, stderr)
  let reply: { oid?: unknown, size?: unknown } = {}
  try { reply = JSON.parse(stdout.trim().split('\n').pop() ?? '') } catch {}
  if (reply.oid !== put.oid) {
    throw new RemoteError(target.host, code, undefined, `${target.host}: the remote berth get exited 0 but did not confirm ${put.oid} (is --remote-berth a berth command?)`)
  }
  return { oid: put.oid, size: put.size, chunks: put.chunks, hints: put.hints, host: target.host, path: target.path }
}

function remoteFailure (host: string, code: number | null, stdout: string, stderr: string): RemoteError {
  // The remote berth ran with --json: its error object on stdout is the most precise account.
  for (const line of stdout.trim().split('\n').reverse()) {
    try {
      const e = JSON.parse(line).error
      if (typeof e?.code === 'string') return new RemoteError(host, code, e.code, `${host}: remote berth get exited with ${code}: ${e.code}: ${String(e.message)}`)
    } catch {}
  }
  const lines = stderr.split('\n').map(l => l.trim()).filter(l => l !== '')
  const berthLine = [...lines].reverse().find(l => l.startsWith('berth: '))
  const last = berthLine ?? lines.at(-1) ?? '(no message)'
  const remoteCode = /^berth: (ERR_[A-Z_]+):/.exec(last)?.[1]
  let what = `remote command exited with ${code}`
  if (code === 255 && berthLine === undefined) what = `ssh failed (exit 255)`
  else if (code === 127) what = 'remote berth command not found (exit 127; set --remote-berth)'
  return new RemoteError(host, code, remoteCode, `${host}: ${what}: ${last}`)
}

const MAX_CAPTURE = 64 * 1024

async function run (program: string, args: string[], signal?: AbortSignal): Promise<{ code: number | null, stdout: string, stderr: string }> {
  return await new Promise((resolve, reject) => {
    const child = spawn(program, args, { stdio: ['ignore', 'pipe', 'pipe'], signal })
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => { if (stdout.length < MAX_CAPTURE) stdout += s })
    child.stderr.setEncoding('utf8').on('data', (s: string) => { stderr = (stderr + s).slice(-MAX_CAPTURE) })
    child.once('error', (err: Error & { code?: string }) => {
      if (err.code === 'ENOENT') reject(new BerthError('ERR_SSH', `cannot run ${JSON.stringify(program)}: not found (set --ssh)`, 500))
      else reject(err)
    })
    child.once('close', (code, sig) => resolve({ code: code ?? (sig !== null ? 128 : null), stdout, stderr }))
  })
}
