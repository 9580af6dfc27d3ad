/**
 * Kills a process writing to a disk store at random moments, then checks what a reopen finds:
 * every listed object was committed and is whole (each chunk verifies, the bytes hash to the
 * OID), every commit that returned is still there, reference counts add up, and gc runs.
 */
import { it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { createHash, randomInt } from 'node:crypto'
import { mkdtemp, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { cidFromDigest } from '../../src/core/naming.ts'
import { openDiskStore } from '../../src/store/index.ts'
import { collect } from './compliance.ts'

const WRITER = fileURLToPath(new URL('./_crash-writer.ts', import.meta.url))
const ROUNDS = 6

/** Runs the writer until `ready`, lets it work for a while, SIGKILLs it; returns what it printed. */
async function runAndKill (dir: string, workMs: number): Promise<string[]> {
  const child = spawn(process.execPath, ['--import', 'tsx', WRITER, dir], { stdio: ['ignore', 'pipe', 'inherit'] })
  let output = ''
  child.stdout.setEncoding('utf8')
  child.stdout.on('data', (text: string) => {
    if (output.length === 0 && text.length > 0) setTimeout(() => child.kill('SIGKILL'), workMs)
    output += text
  })
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>(resolve => child.on('close', (c, s) => resolve([c, s])))
  assert.equal(signal, 'SIGKILL', `writer ended on its own (exit ${String(code)}):\n${output.slice(-2000)}`)
  const lines = output.split('\n')
  assert.equal(lines[0], 'ready', `writer did not start:\n${output.slice(0, 2000)}`)
  // the last line may have been cut by the kill
  return lines.slice(1, -1)
}

it(`a disk store survives ${ROUNDS} kill -9s of its writer`, { timeout: 180_000 }, async () => {
  const dir = await mkdtemp(join(tmpdir(), 'berth-disk-crash-'))
  try {
    const committed = new Set<string>()
    const loose = new Set<string>()
    let steps = 0
    for (let round = 0; round < ROUNDS; round++) {
      const lines = await runAndKill(dir, randomInt(300, 1500))
      steps += lines.length
      let committing: string | undefined
      let releasing: string | undefined
      for (const line of lines) {
        const [what, phase, name] = line.split(' ')
        if (what === 'commit') {
          committing = phase === 'begin' ? name : undefined
          if (phase === 'done') committed.add(name)
        } else if (what === 'release') {
          releasing = phase === 'begin' ? name : undefined
          if (phase === 'done') committed.delete(name)
        } else if (what === 'put' && phase === 'begin') {
          loose.add(name)
        }
      }

      const store = await openDiskStore({ dir, packSize: 4 * 1024 * 1024 })
      try {
        const listed = new Set((await collect(store.objects())).map(info => info.oid))
        for (const oid of listed) {
          assert.ok(committed.has(oid) || oid === committing, `round ${round}: ${oid} is listed but was never committed`)
        }
        for (const oid of committed) {
          assert.ok(listed.has(oid) || oid === releasing, `round ${round}: ${oid} was committed but is gone`)
        }
        // The in-flight commit or release went one way or the other; from now on the store says which.
        committed.clear()
        for (const oid of listed) committed.add(oid)

        const distinct = new Map<string, number>()
        for (const oid of listed) {
          const info = (await store.stat(oid))!
          const descriptors = await collect(store.manifest(oid))
          const whole = createHash('sha256')
          let size = 0
          for await (const { bytes } of store.getMany(descriptors.map(d => d.cid))) {
            whole.update(bytes)
            size += bytes.byteLength
          }
          assert.equal(cidFromDigest(whole.digest()), oid, `round ${round}: ${oid} does not reassemble`)
          assert.equal(size, info.size)
          for (const d of descriptors) distinct.set(d.cid, d.length)
        }
        // A loose chunk may or may not have made it; if it is there, it must be intact.
        for (const cid of loose) if (await store.has(cid)) await store.get(cid)

        await store.gc()
        const usage = await store.usage()
        assert.equal(usage.objects, listed.size)
        assert.equal(usage.chunks, distinct.size, `round ${round}: chunks left after gc do not match the manifests`)
        assert.equal(usage.bytes, [...distinct.values()].reduce((sum, length) => sum + length, 0))
      } finally {
        await store.close()
      }
    }
    assert.ok(steps > ROUNDS * 5, `the writer did too little to test anything (${steps} steps)`)
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
})
