import { open, rename, rm, stat } from 'node:fs/promises'
import { basename, dirname, join, resolve } from 'node:path'
import { Option, type Command } from 'commander'
import { BerthError, TruncatedError } from '../../core/errors.ts'
import { type Hint, parseHint } from '../../core/hints.ts'
import { parseOid } from '../../core/naming.ts'
import { AgentClient } from '../../sdk/agent-client.ts'
import { UsageError, action, agentUrl, collect, formatBytes, printJson, progressBar, type JsonOption, type Progress } from '../output.ts'

interface GetOptions extends JsonOption { hint?: string[], output?: string, agent?: string, order?: 'ordered' | 'any', urgent?: boolean }

export function registerGet (program: Command): void {
  program.command('get')
    .description('fetch an object by its OID: the agent pulls it from the hints (or its store) and verifies it')
    .argument('<oid>', 'the object\'s OID (bafkrei… or ni:///sha-256;…)')
    .option('--hint <uri>', 'where the object may be pulled from, e.g. berth://host:port (repeatable)', collect)
    .option('-o, --output <file>', 'write to FILE, created only once the whole object verified (- or absent: stdout)')
    .option('--agent <url>', 'the agent\'s local API (default $BERTH_AGENT or http://127.0.0.1:4650)')
    .addOption(new Option('--order <order>', 'any: write chunks at their offsets as they arrive (needs -o FILE)').choices(['ordered', 'any']))
    .option('--no-urgent', 'may wait for busy or down lockers rather than fall back to the peer itself (SAILOR)')
    .option('--json', 'print {oid, size, path} as JSON (needs -o FILE)')
    .action(action(async (oidText: string, options: GetOptions) => {
      const oid = parseOid(oidText)
      const hints = (options.hint ?? []).map(h => parseHint(h))
      const toStdout = options.output === undefined || options.output === '-'
      if (toStdout && options.order === 'any') throw new UsageError('--order any writes at offsets, so it needs -o FILE')
      if (toStdout && options.json === true) throw new UsageError('--json needs -o FILE: stdout carries the object')
      const client = new AgentClient(agentUrl(options.agent))
      let bar: Progress | undefined
      try {
        if (toStdout) {
          // Straight from the socket to fd 1 (see AgentClient.getToFd).
          await client.getToFd(oid, 1, { hints, urgent: options.urgent, onProgress: (n, total) => { bar ??= progressBar('get', total, options); bar.update(n) } })
          return
        }
        const path = resolve(options.output!)
        await checkOutputPath(path)
        let size: number
        if (options.order === 'any') {
          bar = progressBar('get', undefined, options)
          ;({ size } = await getAnyOrderToFile(client, oid, path, hints, bar))
        } else {
          ({ size } = await client.getToFile(oid, path, {
            hints,
            urgent: options.urgent,
            onProgress: (n, total) => { bar ??= progressBar('get', total, options); bar.update(n) }
          }))
        }
        bar?.stop()
        if (options.json === true) printJson({ oid, size, path })
        else if (process.stderr.isTTY === true) process.stderr.write(`${oid} → ${path} (${formatBytes(size)})\n`)
      } finally {
        bar?.stop()
        await client.close()
      }
    }))
}

/** Fails before any transfer starts when the result could not be put at `path`. */
async function checkOutputPath (path: string): Promise<void> {
  const dir = await stat(dirname(path)).catch(() => undefined)
  if (dir === undefined || !dir.isDirectory()) throw new BerthError('ERR_BAD_OUTPUT', `cannot write ${path}: directory ${dirname(path)} does not exist`, 400)
  if ((await stat(path).catch(() => undefined))?.isDirectory() === true) throw new BerthError('ERR_BAD_OUTPUT', `cannot write ${path}: it is a directory`, 400)
}

/**
 * Chunks land at their offsets as the agent verifies them, in any order, in a temporary file
 * beside the target; the rename happens only after the agent ended the stream cleanly — which
 * it does only once the whole object hashed to its OID — so a failure leaves nothing at `path`.
 */
async function getAnyOrderToFile (client: AgentClient, oid: string, path: string, hints: Hint[], bar: Progress): Promise<{ size: number }> {
  const temp = join(dirname(path), `.${basename(path)}.berth-${process.pid}-${Date.now()}.part`)
  const file = await open(temp, 'w')
  let renamed = false
  try {
    let received = 0
    let end = 0
    for await (const { offset, bytes } of client.getAnyOrder(oid, { hints })) {
      let done = 0
      while (done < bytes.byteLength) {
        const { bytesWritten } = await file.write(bytes, done, bytes.byteLength - done, offset + done)
        done += bytesWritten
      }
      received += bytes.byteLength
      end = Math.max(end, offset + bytes.byteLength)
      bar.update(received)
    }
    // Frames never overlap, so a hole would show as fewer bytes than the furthest end.
    if (received !== end) throw new TruncatedError(`got ${received} bytes covering ${end}`)
    await file.close()
    await rename(temp, path)
    renamed = true
    return { size: end }
  } finally {
    if (!renamed) {
      await file.close().catch(() => {})
      await rm(temp, { force: true })
    }
  }
}
