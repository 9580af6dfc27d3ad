import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { readFileSync } from 'node:fs'
import { cdcCutter, createChunker, DEFAULT_CDC, DEFAULT_FIXED, fixedCutter, GEAR, parseChunkerSpec, type ChunkerSpec } from '../../src/core/chunker/index.ts'
import { chunkerCompliance, pseudoRandomBytes, type VectorFile } from './chunker-compliance.ts'

const vectors = JSON.parse(readFileSync(new URL('../fixtures/chunker-vectors.json', import.meta.url), 'utf8')) as VectorFile

chunkerCompliance({
  name: 'fixed',
  specs: ['fixed', 'fixed:1000'],
  vectors,
  checkLengths (spec, lengths) {
    const size = (spec as { size?: number }).size ?? DEFAULT_FIXED.size
    lengths.forEach((length, i) => {
      if (i < lengths.length - 1) assert.equal(length, size, `chunk ${i}`)
      else assert.ok(length > 0 && length <= size, `last chunk ${length}`)
    })
  }
})

chunkerCompliance({
  name: 'cdc',
  specs: ['cdc', 'cdc:1k:4k:16k'],
  vectors,
  checkLengths (spec, lengths) {
    const { min, max } = { ...DEFAULT_CDC, ...(spec as ChunkerSpec & { min?: number, max?: number }) }
    lengths.forEach((length, i) => {
      if (i < lengths.length - 1) assert.ok(length >= min && length <= max, `chunk ${i}: ${length} not in [${min}, ${max}]`)
      else assert.ok(length > 0 && length <= max, `last chunk ${length}`)
    })
  }
})

/**
 * The gear loop as first written: plain, obviously FastCDC. The optimised cutter must cut exactly
 * where this does, on any data and any parameters.
 */
function referenceCdcCuts (data: Uint8Array, min: number, avg: number, max: number): number[] {
  const topMask = (bits: number): number => bits <= 0 ? 0 : (~0 << (32 - bits)) >>> 0
  const bits = Math.round(Math.log2(avg))
  const maskHard = topMask(bits + 2) | 0
  const maskEasy = topMask(bits - 2) | 0
  const cuts: number[] = []
  let start = 0
  while (start < data.length) {
    const available = data.length - start
    let length = available
    if (available > min) {
      const stop = start + Math.min(available, max)
      const normal = Math.min(start + avg, stop)
      let h = 0
      let i = start + min
      length = stop - start
      for (; i < stop; i++) {
        h = ((h << 1) + GEAR[data[i]]) | 0
        if ((h & (i < normal ? maskHard : maskEasy)) === 0) { length = i + 1 - start; break }
      }
    }
    start += length
    cuts.push(start)
  }
  return cuts
}

function cdcCuts (data: Uint8Array, params: { min: number, avg: number, max: number }): number[] {
  const cutter = cdcCutter(params)
  const cuts: number[] = []
  for (let start = 0; start < data.length;) {
    start += cutter.next(data, start, data.length, true)
    cuts.push(start)
  }
  return cuts
}

describe('cdc cutter', () => {
  const random = pseudoRandomBytes(77, 2_000_000)
  const lowEntropy = random.map((b, i) => (i % 4096 < 3000 ? 0 : b & 3))
  const inputs: Array<[string, Uint8Array]> = [
    ['random', random],
    ['zeros', new Uint8Array(700_000)],
    ['0xff', new Uint8Array(700_000).fill(0xff)],
    ['repeating 251-byte pattern', new Uint8Array(600_000).map((_, i) => random[i % 251])],
    ['mostly zeros, two-bit noise', lowEntropy]
  ]
  const params = [
    DEFAULT_CDC,
    { min: 1024, avg: 4096, max: 16384 },
    { min: 64, avg: 100, max: 65 * 2 },
    { min: 100, avg: 1000, max: 5000 },
    { min: 2048, avg: 3000, max: 1 << 20 },
    { min: 64 * 1024, avg: 1 << 20, max: 4 << 20 }
  ]

  for (const p of params) {
    it(`cuts where the reference gear loop cuts (${p.min}/${p.avg}/${p.max})`, () => {
      for (const [label, data] of inputs) assert.deepEqual(cdcCuts(data, p), referenceCdcCuts(data, p.min, p.avg, p.max), label)
    })
  }

  it('cuts where the reference does on views at any byte alignment (word loads) and on Buffers', () => {
    const p = { min: 1024, avg: 4096, max: 16384 }
    for (let misalign = 0; misalign < 4; misalign++) {
      const backing = new Uint8Array(new SharedArrayBuffer(random.length + 8))
      const view = backing.subarray(misalign, misalign + 500_000)
      view.set(random.subarray(0, 500_000))
      assert.deepEqual(cdcCuts(view, p), referenceCdcCuts(view, p.min, p.avg, p.max), `byteOffset ${misalign}`)
      const buffer = Buffer.from(random.buffer, misalign, 500_000)
      assert.deepEqual(cdcCuts(buffer, p), referenceCdcCuts(buffer, p.min, p.avg, p.max), `Buffer at ${misalign}`)
    }
  })

  it('cuts where the reference does on many small random cases (loop heads and tails)', () => {
    let seed = 1
    const rand = (n: number): number => { seed = (Math.imul(seed, 1103515245) + 12345) >>> 0; return (seed >>> 8) % n }
    for (let round = 0; round < 400; round++) {
      const min = 64 + rand(64)
      const avg = min + 1 + rand(300)
      const max = avg + 1 + rand(600)
      const offset = rand(8)
      const data = pseudoRandomBytes(round + 1, offset + rand(5000)).subarray(offset)
      // Low-entropy stretches make the easy mask matter too.
      if (round % 3 === 0) data.fill(0, rand(data.length + 1))
      assert.deepEqual(cdcCuts(data, { min, avg, max }), referenceCdcCuts(data, min, avg, max), `round ${round}: ${min}/${avg}/${max}, ${data.length} bytes at ${offset}`)
    }
  })

  it('asks for more data until a whole max-sized window is there, unless the input ended', () => {
    const cutter = cdcCutter({ min: 1024, avg: 4096, max: 16384 })
    const data = pseudoRandomBytes(9, 20_000)
    assert.equal(cutter.next(data, 0, 16_383, false), 0)
    assert.ok(cutter.next(data, 0, 16_384, false) > 0)
    assert.equal(cutter.next(data, 100, 100 + 1024, false), 0)
    assert.equal(cutter.next(data, 100, 100 + 1024, true), 1024)
    assert.equal(cutter.next(data, 5, 6, true), 1)
  })

  it('depends only on the bytes from the chunk start: the same cut at any position in a buffer', () => {
    const p = { min: 1024, avg: 4096, max: 16384 }
    const data = pseudoRandomBytes(10, 40_000)
    const cutter = cdcCutter(p)
    const direct = cutter.next(data, 0, data.length, false)
    const shifted = new Uint8Array(data.length + 333)
    shifted.set(data, 333)
    assert.equal(cutter.next(shifted, 333, shifted.length, false), direct)
  })

  it('uses the fixed gear table (changing it would move every boundary ever computed)', () => {
    assert.equal(GEAR.length, 256)
    assert.equal(new Set(GEAR).size, 256)
    // Pinned from the table as first released (sha256 of "berth-gear-v1:<i>", first 4 bytes).
    assert.deepEqual(Array.from(GEAR.subarray(0, 4)), [1291890406, 2110993093, -2003350854, -2110476380])
    assert.equal(GEAR.reduce((sum, g) => (Math.imul(sum, 31) + g) | 0, 0), -106410187)
  })
})

describe('fixed cutter', () => {
  it('cuts every size bytes and the rest at the end', () => {
    const cutter = fixedCutter(100)
    const data = new Uint8Array(250)
    assert.equal(cutter.next(data, 0, 250, false), 100)
    assert.equal(cutter.next(data, 200, 250, false), 0)
    assert.equal(cutter.next(data, 200, 250, true), 50)
  })
})

describe('chunker specs', () => {
  it('parses the spellings the CLI takes', () => {
    assert.deepEqual(parseChunkerSpec('cdc'), { kind: 'cdc', ...DEFAULT_CDC })
    assert.deepEqual(parseChunkerSpec('cdc:16k:64k:256k'), { kind: 'cdc', min: 16384, avg: 65536, max: 262144 })
    assert.deepEqual(parseChunkerSpec('fixed'), { kind: 'fixed', size: DEFAULT_FIXED.size })
    assert.deepEqual(parseChunkerSpec('fixed:1m'), { kind: 'fixed', size: 1 << 20 })
    assert.deepEqual(parseChunkerSpec('fixed:65536'), { kind: 'fixed', size: 65536 })
  })

  const bad: unknown[] = [
    '', 'rabin', 'cdc:1k', 'cdc:1k:4k', 'cdc:1k:4k:16k:64k', 'cdc:4k:1k:16k', 'cdc:1k:16k:4k', 'cdc:4k:4k:16k',
    'cdc:1:4k:16k', 'cdc:1k:4k:1g', 'cdc:1x:4k:16k', 'fixed:0', 'fixed:10', 'fixed:32m', 'fixed:-1', 'fixed:1.5k',
    'fixed:1k:2k', 'fixed:', 'FIXED', 'x'.repeat(65), 42, null, undefined
  ]
  for (const text of bad) {
    it(`refuses ${JSON.stringify(text)} with ERR_INVALID_CONFIG`, () => {
      assert.throws(() => parseChunkerSpec(text as string), { code: 'ERR_INVALID_CONFIG' })
    })
  }

  it('refuses bad specs given as objects too', () => {
    assert.throws(() => createChunker({ kind: 'cdc', min: 10 }), { code: 'ERR_INVALID_CONFIG' })
    assert.throws(() => createChunker({ kind: 'cdc', min: 1.5, avg: 4096, max: 16384 }), { code: 'ERR_INVALID_CONFIG' })
    assert.throws(() => createChunker({ kind: 'fixed', size: 2 ** 30 }), { code: 'ERR_INVALID_CONFIG' })
    assert.throws(() => createChunker({ kind: 'bogus' } as unknown as ChunkerSpec), { code: 'ERR_INVALID_CONFIG' })
  })
})
