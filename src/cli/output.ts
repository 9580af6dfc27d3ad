/**
 * What every command shares: where the agent is, how results and failures are printed, and the
 * progress bar. Data may go to stdout, so progress and errors always go to stderr.
 */
import { SingleBar } from 'cli-progress'
import { BerthError, exitCodeFor, toBerthError } from '../core/errors.ts'
import { DEFAULT_AGENT_URL } from '../sdk/agent-client.ts'

export class UsageError extends BerthError {
  constructor (message: string) { super('ERR_USAGE', message, 400) }
}

export interface JsonOption { json?: boolean }

/** `--agent`, else `$BERTH_AGENT`, else the default local agent. */
export function agentUrl (option: string | undefined): string {
  if (option !== undefined && option !== '') return option
  const env = process.env.BERTH_AGENT
  return env !== undefined && env !== '' ? env : DEFAULT_AGENT_URL
}

export function printJson (value: unknown): void {
  process.stdout.write(JSON.stringify(value) + '\n')
}

export function printLines (...lines: string[]): void {
  process.stdout.write(lines.map(l => l + '\n').join(''))
}

/**
 * One line on stderr (`berth: CODE: message`), whatever went wrong; with --json the same error
 * as an object on stdout too, so a script reading stdout never has to parse stderr.
 * Returns the exit code.
 */
export function reportError (err: unknown, json: boolean): number {
  const e = toBerthError(explainNetworkError(err))
  const message = e.message.replace(/\s*\n\s*/g, ' ').trim()
  process.stderr.write(`berth: ${e.code}: ${message}\n`)
  const exitCode = exitCodeFor(e)
  if (json) printJson({ error: { ...extraFields(e), code: e.code, message, exitCode } })
  return exitCode
}

const UNREACHABLE = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'EHOSTUNREACH', 'ENETUNREACH', 'ECONNRESET', 'UND_ERR_SOCKET', 'UND_ERR_CONNECT_TIMEOUT'])

/** The commonest failure — no agent where we looked — deserves words, not a socket error. */
function explainNetworkError (err: unknown): unknown {
  // The SDK's own client wraps the socket error (ERR_SOURCE, with the socket error as cause).
  const raw = err instanceof BerthError && (err.cause as { syscall?: string } | undefined)?.syscall === 'connect' ? err.cause : err
  const e = raw as { code?: string, message?: string, address?: string, port?: number }
  if (raw instanceof BerthError || e?.code === undefined || !UNREACHABLE.has(e.code)) return err
  const where = e.address !== undefined ? ` ${e.address}${e.port !== undefined ? `:${e.port}` : ''}` : ''
  return new BerthError('ERR_UNREACHABLE', `cannot reach the agent${where} (${e.code}); is it running? (berth start / berth agent, or --agent URL / $BERTH_AGENT)`, 502, { cause: raw })
}

/** Own enumerable fields of an error subclass (e.g. a remote exit code) belong in its JSON. */
function extraFields (e: BerthError): Record<string, unknown> {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(e)) {
    if (k !== 'code' && k !== 'status' && k !== 'name' && typeof v !== 'object' && typeof v !== 'function') out[k] = v
  }
  return out
}

export function formatBytes (n: number): string {
  if (!Number.isFinite(n)) return '?'
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB']
  let i = 0
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++ }
  return i === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 2 : 1)} ${units[i]}`
}

export interface Progress {
  /** false when nothing is drawn (not a terminal, or --json) */
  readonly active: boolean
  update (bytes: number): void
  stop (): void
}

const NO_PROGRESS: Progress = { active: false, update () {}, stop () {} }

/**
 * A progress bar on stderr when it is a terminal and the output is for humans; otherwise a
 * no-op, so pipes, logs and --json output carry nothing extra. An unknown total shows a counter.
 */
export function progressBar (label: string, total: number | undefined, o: JsonOption = {}): Progress {
  if (o.json === true || process.stderr.isTTY !== true) return NO_PROGRESS
  const known = total !== undefined && Number.isFinite(total) && total > 0
  const started = Date.now()
  const bar = new SingleBar({
    stream: process.stderr,
    format: known
      ? `${label} [{bar}] {percentage}% {done} / {size}  {rate}`
      : `${label} {done}  {rate}`,
    hideCursor: true,
    clearOnComplete: true,
    barsize: 30
  })
  const payload = (bytes: number): Record<string, string> => {
    const seconds = (Date.now() - started) / 1000
    return { done: formatBytes(bytes), size: formatBytes(total ?? NaN), rate: seconds > 0 ? `${formatBytes(bytes / seconds)}/s` : '' }
  }
  bar.start(known ? total : 1, 0, payload(0))
  let stopped = false
  return {
    active: true,
    update (bytes) { if (!stopped) bar.update(known ? bytes : 0, payload(bytes)) },
    stop () { if (!stopped) { stopped = true; bar.stop() } }
  }
}

/**
 * Wraps a command's action: a thrown error becomes the one-line report and the exit code.
 * Commander calls actions with (...arguments, options, command).
 */
export function action<A extends unknown[]> (fn: (...args: A) => Promise<void>): (...args: A) => Promise<void> {
  return async (...args: A) => {
    const options = args[args.length - 2] as JsonOption | undefined
    try {
      await fn(...args)
    } catch (err) {
      // A reader that went away (`berth get … | head`) is not an error worth a message.
      if ((err as { code?: string })?.code === 'EPIPE') { process.exitCode = 141; return }
      process.exitCode = reportError(err, options?.json === true)
    }
  }
}

export function collect (value: string, previous: string[] = []): string[] {
  return [...previous, value]
}

/** Resolves on the first SIGINT or SIGTERM; a second one exits at once. */
export async function untilSignal (): Promise<NodeJS.Signals> {
  return await new Promise(resolve => {
    const first = (signal: NodeJS.Signals): void => {
      process.off('SIGINT', first)
      process.off('SIGTERM', first)
      const again = (): void => process.exit(130)
      process.once('SIGINT', again)
      process.once('SIGTERM', again)
      resolve(signal)
    }
    process.on('SIGINT', first)
    process.on('SIGTERM', first)
  })
}
