/**
 * What the locker client commands (`berth distribute`, `berth status --locker`) share: where a
 * locker is (a URL naming server and locker together), the tokens read from files as
 * `berth token issue` writes them, and words for a locker server that is not there.
 */
import { readFile } from 'node:fs/promises'
import { text } from 'node:stream/consumers'
import { BerthError } from '../core/errors.ts'
import { UsageError } from './output.ts'

/** A locker as the CLI is told it: the server's base URL and the locker's name. */
export interface LockerRef { server: string, name: string, uri: string }

export const LOCKER_URL_HELP = 'locker://HOST:PORT/NAME (plain HTTP), or http(s)://HOST[:PORT][/PREFIX]/NAME'

const LOCKER_NAME = /^[a-z0-9][a-z0-9._-]{0,62}$/

/**
 * `locker://host:port/name` — the form hints and distributes use — or, for a server behind TLS
 * or a path prefix, `http(s)://host[:port][/prefix]/name` (a pasted `…/v1/lockers/name` works too).
 */
export function parseLockerUrl (value: string, flag: string): LockerRef {
  let u: URL
  try { u = new URL(value) } catch { throw new UsageError(`${flag} must be ${LOCKER_URL_HELP}, not ${JSON.stringify(value)}`) }
  if (!['locker:', 'http:', 'https:'].includes(u.protocol) || u.host === '') throw new UsageError(`${flag} must be ${LOCKER_URL_HELP}, not ${JSON.stringify(value)}`)
  if (u.search !== '' || u.hash !== '' || u.username !== '' || u.password !== '') throw new UsageError(`${flag}: no query, fragment or credentials in a locker URL (tokens go in files: --token FILE)`)
  const segments = u.pathname.split('/').filter(s => s !== '')
  const name = decodeURIComponent(segments.pop() ?? '')
  if (!LOCKER_NAME.test(name)) throw new UsageError(`${flag} must name a locker: ${LOCKER_URL_HELP} (a name is 1–63 of a-z 0-9 . _ -)`)
  if (segments.length >= 2 && segments[segments.length - 2] === 'v1' && segments[segments.length - 1] === 'lockers') segments.splice(-2)
  if (u.protocol === 'locker:' && segments.length > 0) throw new UsageError(`${flag}: a locker URI is locker://HOST:PORT/NAME (for a path prefix use http(s)://HOST/PREFIX/NAME)`)
  const scheme = u.protocol === 'https:' ? 'https:' : 'http:'
  const server = `${scheme}//${u.host}${segments.map(s => '/' + s).join('')}`
  return { server, name, uri: u.protocol === 'locker:' ? `locker://${u.host}/${name}` : value }
}

/** An access token and, when one was issued with it, its resource token. */
export interface Tokens { token: string, resource?: string }

const JWT = /^[\w-]+\.[\w-]+\.[\w-]+$/

/**
 * Token files: read once each; `-` is stdin, which can be read only once per command.
 */
export class TokenFiles {
  private stdinUsedBy: string | undefined

  private async read (file: string, flag: string): Promise<string> {
    if (file === '-') {
      if (this.stdinUsedBy !== undefined) throw new UsageError(`${flag} -: stdin is taken by ${this.stdinUsedBy} already`)
      this.stdinUsedBy = flag
      return await text(process.stdin)
    }
    try {
      return await readFile(file, 'utf8')
    } catch (err) {
      const e = err as { code?: string, message?: string }
      throw new UsageError(`cannot read ${flag} ${file}: ${e.code === 'ENOENT' ? 'no such file' : e.code ?? e.message}`)
    }
  }

  /**
   * The tokens in FILE, as `berth token issue` prints them: the access token on the first line
   * (and with --resource, the resource token on the second), or its --json `{access, resource}`.
   * `resourceFile` (a file holding just a resource token) overrides a resource token found there.
   */
  async tokens (file: string, flag: string, resourceFile?: string, resourceFlag = '--resource'): Promise<Tokens> {
    const found = parseTokens(await this.read(file, flag), `${flag} ${file}`)
    if (resourceFile !== undefined) {
      const r = parseTokens(await this.read(resourceFile, resourceFlag), `${resourceFlag} ${resourceFile}`)
      // A file with both (as issued with --resource) gives its resource token here.
      found.resource = r.resource ?? r.token
    }
    return found
  }
}

export function parseTokens (content: string, where: string): Tokens {
  const trimmed = content.trim()
  if (trimmed.startsWith('{')) {
    let j: { access?: unknown, resource?: unknown, token?: unknown }
    try { j = JSON.parse(trimmed) } catch { throw new UsageError(`${where}: not valid JSON`) }
    const token = j.access ?? j.token
    if (typeof token !== 'string' || !JWT.test(token)) throw new UsageError(`${where}: no access token ("access") in the JSON`)
    if (j.resource !== undefined && j.resource !== null && (typeof j.resource !== 'string' || !JWT.test(j.resource))) throw new UsageError(`${where}: "resource" is not a token`)
    return { token, resource: typeof j.resource === 'string' ? j.resource : undefined }
  }
  const lines = trimmed.split(/\r?\n/).map(l => l.trim().replace(/^Bearer\s+/i, '')).filter(l => l !== '')
  if (lines.length === 0) throw new UsageError(`${where} is empty: it should hold a token, as \`berth token issue\` prints it`)
  if (lines.length > 2 || !lines.every(l => JWT.test(l))) throw new UsageError(`${where} does not hold a token: expected the access token on one line (and the resource token on a second), as \`berth token issue\` prints them`)
  return { token: lines[0], resource: lines[1] }
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT'])

/** A locker server that is not there is said so (output.ts would blame the agent). */
export function explainLockerError (err: unknown, server: string): unknown {
  const e = err as { code?: string }
  if (err instanceof BerthError || e?.code === undefined || !UNREACHABLE.has(e.code)) return err
  // No `cause`: output.ts would take a socket error as the cause for an agent that is not there.
  return new BerthError('ERR_UNREACHABLE', `cannot reach the locker server ${server} (${e.code}); is it running? (berth locker serve / berth start)`, 502)
}
