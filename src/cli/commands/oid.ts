import { createHash } from 'node:crypto'
import { createReadStream } from 'node:fs'
import { stat } from 'node:fs/promises'
import type { Command } from 'commander'
import { cidFromDigest, toNi } from '../../core/naming.ts'
import { UsageError, action, printJson, printLines, type JsonOption } from '../output.ts'

interface OidOptions extends JsonOption { ni?: boolean }

export function registerOid (program: Command): void {
  program.command('oid')
    .description('print the OID of a file (or stdin); nothing is stored')
    .argument('<file>', 'the file, or - for stdin')
    .option('--ni', 'also print the RFC 6920 name (ni:///sha-256;…)')
    .option('--json', 'print {oid, size, ni?} as JSON')
    .action(action(async (file: string, options: OidOptions) => {
      if (file !== '-' && !(await stat(file)).isFile()) throw new UsageError(`${file} is not a regular file`)
      const source = file === '-' ? process.stdin : createReadStream(file, { highWaterMark: 1024 * 1024 })
      const hash = createHash('sha256')
      let size = 0
      for await (const piece of source as AsyncIterable<Buffer>) { hash.update(piece); size += piece.byteLength }
      const oid = cidFromDigest(hash.digest())
      const ni = options.ni === true ? toNi(oid) : undefined
      if (options.json === true) printJson({ oid, size, ...(ni !== undefined ? { ni } : {}) })
      else printLines(oid, ...(ni !== undefined ? [ni] : []))
    }))
}
