/**
 * Child process for disk-crash.test.ts: works a disk store in a loop until it is killed.
 * Usage: node --import tsx test/store/_crash-writer.ts DIR
 *
 * Each step is announced on stdout before it starts (`… begin`) and after it returned
 * (`… done`); writes to a pipe are synchronous on Linux, so a line printed is a line the parent
 * will read, however abruptly this process dies.
 */
import { createCipheriv, randomBytes, randomInt } from 'node:crypto'
import { openDiskStore } from '../../src/store/index.ts'
import { cidOf, collect, objectOf } from './compliance.ts'

const dir = process.argv[2]
const say = (line: string): void => { process.stdout.write(line + '\n') }

// Chunks every run knows (an AES-CTR keystream per index), so objects share chunks across
// objects and across restarts.
const SHARED = Array.from({ length: 24 }, (_, i) => createCipheriv('aes-128-ctr', Buffer.alloc(16, i), Buffer.alloc(16)).update(Buffer.alloc(64 * 1024)))

const store = await openDiskStore({ dir, packSize: 4 * 1024 * 1024 })
const live = (await collect(store.objects())).map(info => info.oid)
say('ready')

while (true) {
  const dice = randomInt(100)
  if (dice < 65) {
    const pieces: Uint8Array[] = []
    for (let n = randomInt(0, 40); n > 0; n--) pieces.push(randomInt(3) === 0 ? SHARED[randomInt(SHARED.length)] : randomBytes(randomInt(1, 96 * 1024)))
    const object = objectOf(pieces)
    const writer = store.openWriter()
    // blocks of up to ~1 MiB, as the chunking pipeline hands them over
    for (let first = 0; first < object.slices.length;) {
      let last = first + 1
      while (last < object.slices.length && object.slices[last].start + object.slices[last].length - object.slices[first].start < 1024 * 1024) last++
      await writer.putBlock(object.bytes, object.slices.slice(first, last))
      first = last
    }
    if (randomInt(10) === 0) {
      await writer.abort()
      continue
    }
    say(`commit begin ${object.oid}`)
    await writer.commit(object.oid, object.descriptors)
    say(`commit done ${object.oid}`)
    live.push(object.oid)
  } else if (dice < 85 && live.length > 0) {
    const oid = live.splice(randomInt(live.length), 1)[0]
    say(`release begin ${oid}`)
    await store.release(oid)
    say(`release done ${oid}`)
  } else if (dice < 93) {
    say('gc begin')
    await store.gc()
    say('gc done')
  } else {
    const bytes = randomBytes(randomInt(1, 200_000))
    say(`put begin ${cidOf(bytes)}`)
    await store.put(cidOf(bytes), bytes)
    say(`put done ${cidOf(bytes)}`)
  }
}
