/**
 * `berth distribute`: SAILOR's distribute primitive from the command line. The locker named by
 * --via comes to hold the object (from --src, or it has it already) and/or delivers it to --dst;
 * the command waits for the transfer to end (progress on a TTY), or with --no-wait returns its id.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import type { Command } from 'commander'
import { SingleBar } from 'cli-progress'
import { BerthError } from '../../core/errors.ts'
import { parseOid } from '../../core/naming.ts'
import { parseDuration } from '../../core/units.ts'
import type { Endpoint, LockerAuth, LockerClient, TransferStatus } from '../../sdk/locker-client.ts'
import { explainLockerError, LOCKER_URL_HELP, parseLockerUrl, TokenFiles } from '../lockers.ts'
import { action, formatBytes, printJson, printLines, reportError, type JsonOption, UsageError } from '../output.ts'

interface DistributeOptions extends JsonOption {
  via: string
  token: string
  resource?: string
  src?: string
  srcToken?: string
  srcResource?: string
  dst?: string
  dstToken?: string
  dstResource?: string
  ttl?: string
  wait: boolean
}

const SRC_SCHEMES = ['locker:', 'berth:', 'http:', 'https:']
/** how often a waited-for transfer is asked for its progress */
const POLL_MS = 250

export function registerDistribute (program: Command): void {
  program.command('distribute')
    .description('have a locker take an object from --src and/or deliver it to --dst (SAILOR\'s distribute); waits for the transfer to end')
    .argument('<oid>', 'the object\'s OID (bafkrei… or ni:///sha-256;…)')
    .requiredOption('--via <locker-url>', `the locker that runs the distribute: ${LOCKER_URL_HELP}`)
    .requiredOption('--token <file>', 'its access token (op "distribute"), as `berth token issue` prints it (- for stdin)')
    .option('--resource <file>', 'its resource token, if not on the second line of --token FILE')
    .option('--src <uri>', 'where the object comes from: locker://HOST:PORT/NAME, berth://HOST:PORT (an agent) or http(s)://… (absent: the via locker holds it already)')
    .option('--src-token <file>', 'access token for a locker:// --src (op "read")')
    .option('--src-resource <file>', 'resource token for a locker:// --src')
    .option('--dst <uri>', 'the locker to deliver to: locker://HOST:PORT/NAME (absent: the object stays in the via locker)')
    .option('--dst-token <file>', 'access token for --dst (op "write")')
    .option('--dst-resource <file>', 'resource token for --dst')
    .option('--ttl <duration>', 'how long the lockers keep the object, e.g. 90s, 15m, 1h, 30d (default: until deleted)')
    .option('--no-wait', 'print the transfer id as soon as the locker accepted the distribute')
    .option('--json', 'print the transfer as JSON (the final state; with --no-wait, the accepted one)')
    .addHelpText('after', `
How the via locker came to hold the object: held (it did already), link (from a locker of the
same server, no bytes moved), challenge (the bytes were on the server; src proved it has them),
joined (another transfer was bringing them), fetch (bytes taken from src). Delivered to dst:
sent (bytes pushed), link (dst's server holds the bytes; proved, no bytes moved), none.
Token files hold what \`berth token issue\` prints: the access token, and with --resource the
resource token on the next line (or its --json output). Ctrl-C stops waiting, not the transfer.

Examples:
  berth distribute OID --via locker://lockers.example:4660/alice --token alice.tok --src https://mirror.example/video.mp4
  berth distribute OID --via locker://127.0.0.1:4660/alice --token alice.tok \\
        --dst locker://far.example:4660/bob --dst-token bob.tok --ttl 1d`)
    .action(action(async (oidText: string, options: DistributeOptions) => {
      const oid = parseOid(oidText)
      const via = parseLockerUrl(options.via, '--via')
      if (options.src === undefined && options.dst === undefined) throw new UsageError('give --src, --dst or both (from where the via locker takes the object, to where it delivers it)')
      checkEndpointFlags('--src', options.src, options.srcToken, options.srcResource, SRC_SCHEMES)
      checkEndpointFlags('--dst', options.dst, options.dstToken, options.dstResource, ['locker:'])
      const ttl = options.ttl !== undefined ? parseDuration(options.ttl) : undefined
      const files = new TokenFiles()
      const auth = await files.tokens(options.token, '--token', options.resource)
      const src = await endpoint(files, '--src', options.src, options.srcToken, options.srcResource)
      const dst = await endpoint(files, '--dst', options.dst, options.dstToken, options.dstResource)

      const { LockerClient } = await import('../../sdk/locker-client.ts')
      const client = new LockerClient(via.server)
      const json = options.json === true
      let accepted: TransferStatus
      try {
        accepted = await client.distribute(via.name, { oid, src, dst, ttl }, auth)
      } catch (err) {
        throw explainLockerError(err, via.server)
      }
      if (!options.wait) {
        if (json) printJson(accepted)
        else {
          printLines(accepted.id)
          if (process.stderr.isTTY === true) process.stderr.write(`distribute ${accepted.id} accepted by ${via.uri}; its progress: GET ${via.server}/v1/lockers/${via.name}/transfers/${accepted.id}\n`)
        }
        return
      }

      // Ctrl-C stops the waiting; the distribute runs on in the locker.
      const stop = new AbortController()
      const onSignal = (): void => stop.abort()
      process.once('SIGINT', onSignal)
      process.once('SIGTERM', onSignal)
      const bar = transferBar(dst !== undefined, json)
      let final: TransferStatus
      try {
        final = await waitTransfer(client, via.name, accepted.id, { ...auth, signal: stop.signal }, t => bar.update(t))
      } catch (err) {
        if (stop.signal.aborted) {
          bar.stop()
          process.stderr.write(`berth: stopped waiting; distribute ${accepted.id} goes on in ${via.uri}\n`)
          process.exitCode = 130
          return
        }
        throw explainLockerError(err, via.server)
      } finally {
        bar.stop()
        process.off('SIGINT', onSignal)
        process.off('SIGTERM', onSignal)
      }

      if (final.state === 'failed') {
        const code = final.error?.code ?? 'ERR_DISTRIBUTE'
        // The transfer's own code and message; the exit code says what kind of failure it was.
        const status = code === 'ERR_HASH_MISMATCH' ? 409 : code === 'ERR_NOT_FOUND' ? 404 : 502
        const exitCode = reportError(new BerthError(code, `distribute ${final.id} failed: ${final.error?.message ?? 'no reason given'}`, status), false)
        if (json) printJson(final)
        process.exitCode = exitCode
        return
      }
      if (json) printJson(final)
      else printLines(summary(final, via.uri))
    }))
}

/**
 * Polls the transfer until it ends. (LockerClient.waitTransfer would do, but it adds an abort
 * listener to the signal per poll and never removes it: Node warns after ten polls.)
 */
async function waitTransfer (client: LockerClient, locker: string, id: string, auth: LockerAuth & { signal: AbortSignal }, onProgress: (t: TransferStatus) => void): Promise<TransferStatus> {
  for (;;) {
    const t = await client.transfer(locker, id, auth)
    onProgress(t)
    if (t.state !== 'running') return t
    await sleep(POLL_MS, undefined, { signal: auth.signal })
  }
}

/** Token flags belong to their endpoint, and a locker endpoint needs its token. */
function checkEndpointFlags (flag: string, uri: string | undefined, token: string | undefined, resource: string | undefined, schemes: string[]): void {
  if (uri === undefined) {
    if (token !== undefined || resource !== undefined) throw new UsageError(`${flag}-token and ${flag}-resource go with ${flag} URI`)
    return
  }
  let u: URL
  try { u = new URL(uri) } catch { throw new UsageError(`${flag} must be a URI, not ${JSON.stringify(uri)}`) }
  if (!schemes.includes(u.protocol)) {
    throw new UsageError(flag === '--dst'
      ? `${flag} must be a locker: locker://HOST:PORT/NAME (with ${flag}-token FILE)`
      : `${flag} must be locker://HOST:PORT/NAME, berth://HOST:PORT or http(s)://…, not ${u.protocol}`)
  }
  if (u.protocol === 'locker:') {
    parseLockerUrl(uri, flag)
    if (token === undefined) throw new UsageError(`${flag} ${uri} is a locker: give its access token with ${flag}-token FILE`)
  } else if (token !== undefined || resource !== undefined) {
    throw new UsageError(`${flag}-token and ${flag}-resource are for a locker:// ${flag}; ${u.protocol}// takes none`)
  }
}

/** The endpoint as the server takes it: a plain URI, or the URI with the tokens for it. */
async function endpoint (files: TokenFiles, flag: string, uri: string | undefined, token: string | undefined, resource: string | undefined): Promise<Endpoint | string | undefined> {
  if (uri === undefined) return undefined
  if (token === undefined) return uri
  return { uri, ...await files.tokens(token, `${flag}-token`, resource, `${flag}-resource`) }
}

/** One line: how the locker came to hold the object, what reached dst, bytes, seconds. */
export function summary (t: TransferStatus, via: string): string {
  const seconds = ((t.endedAt ?? Date.now()) - t.startedAt) / 1000
  const from = t.how === 'fetch' || t.how === 'link' || t.how === 'challenge' ? ` from ${t.src ?? '?'}` : ''
  const to = t.dst !== undefined ? `; delivered ${t.delivered} to ${t.dst}` : ''
  const size = t.size !== null ? formatBytes(t.size) : 'size unknown'
  return `${t.oid} in ${via}: ${t.how}${from}${to}; ${size}, ${formatBytes(t.bytesIn)} in, ${formatBytes(t.bytesOut)} out; ${seconds.toFixed(2)} s`
}

interface TransferBar { update (t: TransferStatus): void, stop (): void }

/**
 * Progress on stderr while the transfer runs, on a terminal only: the bar follows the bytes
 * delivered to dst once they move (else the bytes taken in), against the object's size.
 */
function transferBar (toDst: boolean, json: boolean): TransferBar {
  if (json || process.stderr.isTTY !== true) return { update () {}, stop () {} }
  let bar: SingleBar | undefined
  let stopped = false
  const started = Date.now()
  return {
    update (t) {
      if (stopped || t.state !== 'running') return
      // Bytes taken in until some are delivered (a dst on the same server only gets a link).
      const done = toDst && t.bytesOut > 0 ? t.bytesOut : t.bytesIn
      const total = t.size ?? 0
      const seconds = (Date.now() - started) / 1000
      const payload = {
        how: t.how,
        in: formatBytes(t.bytesIn),
        out: formatBytes(t.bytesOut),
        size: t.size !== null ? formatBytes(t.size) : '?',
        rate: seconds > 0 ? `${formatBytes(done / seconds)}/s` : ''
      }
      if (bar === undefined) {
        bar = new SingleBar({
          stream: process.stderr,
          format: 'distribute [{bar}] {percentage}% {how}: in {in}, out {out} of {size}  {rate}',
          hideCursor: true,
          clearOnComplete: true,
          barsize: 30
        })
        bar.start(Math.max(total, 1), 0, payload)
      }
      if (total > 0) bar.setTotal(total)
      bar.update(Math.min(done, Math.max(total, 1)), payload)
    },
    stop () { if (!stopped) { stopped = true; bar?.stop() } }
  }
}
