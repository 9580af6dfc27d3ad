/**
 * DiskStore throughput: 1 GiB written through putBlock (4 MiB blocks of 256 KiB chunks) and
 * committed, then read back with getMany (which verifies every chunk). Hashing for the write
 * side is done before the clock starts; reads must hash, that is the contract.
 *
 * The anchor, measured in the same run on the same disk: plain positional writes of the same
 * blocks plus one fdatasync; plain reads of that file, and the same reads hashed per 256 KiB
 * on the main thread (what verification costs on one core).
 *
 * Usage: node --import tsx bench/store.ts [GiB]
 *        (BERTH_BENCH_DIR chooses the disk, BERTH_BENCH_REPEAT the runs; the median is printed)
 */
import { createHash, randomFillSync } from 'node:crypto'
import { mkdtemp, open, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { sharedHashPool } from '../src/core/hash-pool.ts'
import { cidFromDigest } from '../src/core/naming.ts'
import { openDiskStore } from '../src/store/index.ts'
import type { BlockSlice, Descriptor } from '../src/store/types.ts'

const BLOCK = 4 * 1024 * 1024
const CHUNK = 256 * 1024
const total = Math.round(Number(process.argv[2] ?? 1) * 1024 * 1024 * 1024 / BLOCK) * BLOCK
const REPEAT = Number(process.env.BERTH_BENCH_REPEAT ?? 3)
const pool = sharedHashPool()

interface Block { bytes: Uint8Array, slices: BlockSlice[] }

async function makeData (): Promise<{ blocks: Block[], descriptors: Descriptor[], oid: string }> {
  const blocks: Block[] = []
  const descriptors: Descriptor[] = []
  const whole = createHash('sha256')
  const ends = Array.from({ length: BLOCK / CHUNK }, (_, i) => (i + 1) * CHUNK)
  for (let offset = 0; offset < total; offset += BLOCK) {
    const bytes = randomFillSync(new Uint8Array(new SharedArrayBuffer(BLOCK)))
    whole.update(bytes)
    const digests = await pool.digestSlices(bytes, ends)
    const slices = digests.map((digest, i) => ({ cid: cidFromDigest(digest), start: i * CHUNK, length: CHUNK }))
    for (const slice of slices) descriptors.push({ cid: slice.cid, offset: offset + slice.start, length: CHUNK })
    blocks.push({ bytes, slices })
  }
  return { blocks, descriptors, oid: cidFromDigest(whole.digest()) }
}

const rate = (bytes: number, ms: number): string => `${(bytes / 1e6 / (ms / 1000)).toFixed(0)} MB/s`

async function time (work: () => Promise<void>): Promise<number> {
  const start = performance.now()
  await work()
  return performance.now() - start
}

interface Timings { write: number, read: number, commit?: number, hashedRead?: number }

async function anchor (dir: string, blocks: Block[]): Promise<Timings> {
  const path = join(dir, 'anchor.bin')
  const file = await open(path, 'w+')
  try {
    const write = await time(async () => {
      for (let i = 0; i < blocks.length; i++) await file.write(blocks[i].bytes, 0, BLOCK, i * BLOCK)
      await file.datasync()
    })
    const into = new Uint8Array(new SharedArrayBuffer(8 * 1024 * 1024))
    const read = await time(async () => {
      for (let at = 0; at < total; at += into.byteLength) await file.read(into, 0, into.byteLength, at)
    })
    // What a verified read costs with one core hashing: the store spreads it over the pool.
    const hashedRead = await time(async () => {
      for (let at = 0; at < total; at += into.byteLength) {
        await file.read(into, 0, into.byteLength, at)
        for (let chunk = 0; chunk < into.byteLength; chunk += CHUNK) createHash('sha256').update(into.subarray(chunk, chunk + CHUNK)).digest()
      }
    })
    return { write, read, hashedRead }
  } finally {
    await file.close()
    await rm(path)
  }
}

async function storeRun (dir: string, fsync: boolean, data: Awaited<ReturnType<typeof makeData>>): Promise<Timings> {
  const store = await openDiskStore({ dir, fsync, pool })
  try {
    let commit = 0
    const write = await time(async () => {
      const writer = store.openWriter()
      for (const block of data.blocks) await writer.putBlock(block.bytes, block.slices)
      commit = await time(async () => { await writer.commit(data.oid, data.descriptors) })
    })
    const read = await time(async () => {
      let bytes = 0
      for await (const chunk of store.getMany(data.descriptors.map(d => d.cid))) bytes += chunk.bytes.byteLength
      if (bytes !== total) throw new Error(`read ${bytes} of ${total} bytes`)
    })
    return { write, read, commit }
  } finally {
    await store.close()
    await rm(dir, { recursive: true, force: true })
  }
}

const median = (values: number[]): number => values.slice().sort((a, b) => a - b)[Math.floor(values.length / 2)]

function report (what: string, runs: Timings[]): void {
  const write = median(runs.map(r => r.write))
  const read = median(runs.map(r => r.read))
  const extra = runs[0].commit !== undefined
    ? `  (commit ${median(runs.map(r => r.commit!)).toFixed(0)} ms)`
    : `  (read + sha-256 on one core ${rate(total, median(runs.map(r => r.hashedRead!)))})`
  console.log(`${what.padEnd(28)} write ${rate(total, write).padStart(10)}   read ${rate(total, read).padStart(10)}${extra}`)
}

const base = await mkdtemp(join(process.env.BERTH_BENCH_DIR ?? tmpdir(), 'berth-bench-store-'))
try {
  console.log(`DiskStore: ${total / 1024 / 1024} MiB in ${BLOCK / 1024 / 1024} MiB blocks of ${CHUNK / 1024} KiB chunks, ` +
    `median of ${REPEAT} runs, in ${base}`)
  const data = await makeData()
  // The first large write of a process runs slower on this kind of VM disk: keep it off the books.
  await anchor(base, data.blocks)
  const runs: Record<'anchor' | 'durable' | 'cached', Timings[]> = { anchor: [], durable: [], cached: [] }
  for (let i = 0; i < REPEAT; i++) {
    runs.anchor.push(await anchor(base, data.blocks))
    runs.durable.push(await storeRun(join(base, 'fsync'), true, data))
    runs.cached.push(await storeRun(join(base, 'no-fsync'), false, data))
  }
  report('anchor (write+fdatasync)', runs.anchor)
  report('store, fsync on', runs.durable)
  report('store, fsync off', runs.cached)
  const speed = (of: Timings[], key: 'write' | 'read' | 'hashedRead'): number => median(of.map(r => r[key]!))
  const ratio = (anchorMs: number, storeMs: number): string => `${(anchorMs / storeMs).toFixed(2)}×`
  console.log(`store speed ÷ anchor speed: write ${ratio(speed(runs.anchor, 'write'), speed(runs.durable, 'write'))} (fsync on), ` +
    `${ratio(speed(runs.anchor, 'write'), speed(runs.cached, 'write'))} (fsync off); ` +
    `verified read ${ratio(speed(runs.anchor, 'hashedRead'), speed(runs.durable, 'read'))} of read + sha-256 on one core`)
} finally {
  await rm(base, { recursive: true, force: true })
  await pool.close()
}
