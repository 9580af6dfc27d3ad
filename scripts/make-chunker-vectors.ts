/**
 * Writes test/fixtures/chunker-vectors.json: the chunks every Berth implementation must cut from
 * a few seeded inputs. Cut points come from running each cutter over the whole input at once
 * (not through the streaming pipeline) and names from multiformats' own sha2-256, so the vectors
 * check the pipeline and the naming code rather than repeat them.
 *
 * Regenerate only on purpose: a changed vector means every stored chunk boundary moves.
 *   node --import tsx scripts/make-chunker-vectors.ts [--check]
 */
import { readFileSync, writeFileSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { createChunker, parseChunkerSpec } from '../src/core/chunker/index.ts'
import { independentCid, pseudoRandomBytes, type VectorCase, type VectorFile } from '../test/core/chunker-compliance.ts'

const INPUTS: VectorFile['inputs'] = {
  empty: { seed: 1, size: 0 },
  one: { seed: 2, size: 1 },
  small: { seed: 3, size: 1000 },
  medium: { seed: 4, size: 300 * 1024 },
  large: { seed: 5, size: 3 * 1024 * 1024 }
}
const SPECS = ['cdc', 'cdc:1k:4k:16k', 'fixed', 'fixed:1000']

async function build (): Promise<VectorFile> {
  const cases: VectorCase[] = []
  for (const [input, { seed, size }] of Object.entries(INPUTS)) {
    const bytes = pseudoRandomBytes(seed, size)
    for (const spec of SPECS) {
      const { cutter } = createChunker(parseChunkerSpec(spec))
      const chunks: VectorCase['chunks'] = []
      for (let start = 0; start < size;) {
        const length = cutter.next(bytes, start, size, true)
        if (length <= 0) throw new Error(`${spec} returned ${length} at ${start} with final input`)
        chunks.push([start, length, await independentCid(bytes.subarray(start, start + length))])
        start += length
      }
      cases.push({ input, spec, chunks, oid: await independentCid(bytes) })
    }
  }
  return { generator: 'scripts/make-chunker-vectors.ts (xorshift32 input, little-endian)', inputs: INPUTS, cases }
}

/** One chunk per line: reviewable diffs, and a changed boundary is easy to spot. */
function format (file: VectorFile): string {
  const cases = file.cases.map(c =>
    `    {"input": ${JSON.stringify(c.input)}, "spec": ${JSON.stringify(c.spec)}, "oid": ${JSON.stringify(c.oid)}, "chunks": [` +
    (c.chunks.length === 0 ? '' : '\n' + c.chunks.map(t => `      ${JSON.stringify(t)}`).join(',\n') + '\n    ') + ']}')
  return `{\n  "generator": ${JSON.stringify(file.generator)},\n  "inputs": ${JSON.stringify(file.inputs)},\n  "cases": [\n${cases.join(',\n')}\n  ]\n}\n`
}

const target = fileURLToPath(new URL('../test/fixtures/chunker-vectors.json', import.meta.url))
const text = format(await build())
JSON.parse(text)
if (process.argv.includes('--check')) {
  const same = readFileSync(target, 'utf8') === text
  console.log(same ? 'vectors unchanged' : 'VECTORS DIFFER from the committed file')
  process.exit(same ? 0 : 1)
}
writeFileSync(target, text)
console.log(`wrote ${target}`)
