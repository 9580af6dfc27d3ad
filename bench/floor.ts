/**
 * The floor of a verified agent→agent get on this machine: a program that does only the work
 * issue 2 asks of one, in Node, with none of Berth's protocol, index, scheduling or CLI.
 * `npm run bench` times it beside Berth and the curl | openssl anchor, so the figures say how much
 * of Berth's time is the required work itself.
 *
 *   sender PORT FILE              TCP server. Per connection: reads FILE in 4 MiB blocks (page
 *                                 cache, as a store read would), sha-256s every 64 KiB slice on
 *                                 two worker threads (the sender verifies what it serves) and
 *                                 writes the block to the socket, up to 4 blocks ahead.
 *   receiver PORT SENDER_PORT DIR HTTP server. Per `GET /?sha=HEX`: pulls the stream from the
 *                                 sender into 4 MiB shared blocks, sha-256s every 64 KiB slice
 *                                 (chunk verification) and the whole stream (OID verification)
 *                                 on two workers, writes each block with O_DIRECT to DIR/object
 *                                 (the store, no fsync: Berth stores fetched copies so too) and
 *                                 sends it to the client; a digest other than HEX destroys the
 *                                 response, so the client sees a failure.
 *
 * Both print `ready` on stdout once listening. Slices are fixed 64 KiB where Berth's default cdc
 * chunks average 64 KiB: the same number of hash calls, without a chunker (the receiver of a get
 * does not chunk). Nothing here is Berth's code: it is the yardstick, kept as simple as it can be.
 */
import { closeSync, constants, ftruncateSync, openSync, readSync, writeSync } from 'node:fs'
import { createServer as createHttpServer } from 'node:http'
import { connect, createServer } from 'node:net'
import { join } from 'node:path'
import { Worker } from 'node:worker_threads'

const BLOCK = 4 * 1024 * 1024
const SLICE = 64 * 1024
const RING = 8
const AHEAD = 4
const PAGE = 4096

const WORKER = `
const { parentPort } = require('node:worker_threads')
const { createHash } = require('node:crypto')
let whole
parentPort.on('message', (m) => {
  if (m.op === 'final') { parentPort.postMessage({ id: m.id, hex: whole.digest('hex') }); whole = undefined; return }
  const b = Buffer.from(m.buf, m.off, m.len)
  if (m.op === 'slices') for (let i = 0; i < m.len; i += ${SLICE}) createHash('sha256').update(b.subarray(i, i + ${SLICE})).digest()
  else (whole ??= createHash('sha256')).update(b)
  parentPort.postMessage({ id: m.id })
})`

class Workers {
  private readonly workers: Worker[]
  private readonly waiting = new Map<number, (hex?: string) => void>()
  private next = 0
  constructor (n: number) {
    this.workers = Array.from({ length: n }, () => {
      const w = new Worker(WORKER, { eval: true })
      w.on('message', (m: { id: number, hex?: string }) => { this.waiting.get(m.id)?.(m.hex); this.waiting.delete(m.id) })
      return w
    })
  }

  call (i: number, op: 'slices' | 'update' | 'final', block?: { buf: SharedArrayBuffer, off: number }, len = 0): Promise<string | undefined> {
    const id = ++this.next
    return new Promise(resolve => {
      this.waiting.set(id, resolve)
      this.workers[i].postMessage({ id, op, buf: block?.buf, off: block?.off ?? 0, len })
    })
  }
}

interface Block { buf: SharedArrayBuffer, off: number }

/** Blocks whose usable part starts on a 512-byte boundary (O_DIRECT), found by probing a write. */
function alignedBlocks (dir: string): Block[] {
  const probe = openSync(join(dir, 'probe'), constants.O_WRONLY | constants.O_CREAT | constants.O_DIRECT)
  try {
    return Array.from({ length: RING }, () => {
      const buf = new SharedArrayBuffer(BLOCK + 2 * PAGE)
      for (let off = 0; off < PAGE; off += 16) {
        try { writeSync(probe, new Uint8Array(buf, off, PAGE), 0, PAGE, 0); return { buf, off } } catch {}
      }
      throw new Error('no O_DIRECT-aligned offset found')
    })
  } finally { closeSync(probe) }
}

function sender (port: number, file: string): void {
  const workers = new Workers(2)
  createServer(socket => {
    // Per connection: a connection that only checks the port is open must not share blocks.
    const ring: Block[] = Array.from({ length: RING }, () => ({ buf: new SharedArrayBuffer(BLOCK), off: 0 }))
    let closed = false
    socket.on('close', () => { closed = true })
    const fd = openSync(file, 'r')
    let at = 0
    let k = 0
    let eof = false
    // Read and hash the next block: the promise gives its bytes once both are done.
    const prepare = (): Promise<Uint8Array> => {
      const block = ring[k % RING]
      const bytes = new Uint8Array(block.buf, 0, BLOCK)
      const n = readSync(fd, bytes, 0, BLOCK, at)
      at += n
      if (n < BLOCK) eof = true
      return workers.call(k++ % 2, 'slices', block, n).then(() => bytes.subarray(0, n))
    }
    void (async () => {
      const ahead: Array<Promise<Uint8Array>> = []
      while (!eof && ahead.length < AHEAD) ahead.push(prepare())
      while (ahead.length > 0) {
        const bytes = await ahead.shift()!
        if (closed) { await Promise.all(ahead); break }
        if (!eof) ahead.push(prepare())
        if (bytes.byteLength > 0) await new Promise(resolve => socket.write(bytes, resolve))
      }
      closeSync(fd)
      socket.end()
    })()
    socket.on('error', () => {})
  }).listen(port, '127.0.0.1', () => console.log('ready'))
}

function receiver (port: number, senderPort: number, dir: string): void {
  const workers = new Workers(2)
  createHttpServer((req, res) => {
    const ring = alignedBlocks(dir)
    const expected = new URL(req.url ?? '/', 'http://x').searchParams.get('sha') ?? ''
    const store = openSync(join(dir, 'object'), constants.O_WRONLY | constants.O_CREAT | constants.O_TRUNC | constants.O_DIRECT)
    res.writeHead(200, { 'content-type': 'application/octet-stream' })
    let k = 0
    let fill = 0
    let stored = 0
    let queued = 0
    let chain: Promise<unknown> = Promise.resolve()
    // Hashing starts as soon as a block is full; storing and sending keep stream order.
    const finish = (block: Block, n: number): void => {
      const hashed = Promise.all([workers.call(0, 'slices', block, n), workers.call(1, 'update', block, n)])
      queued++
      chain = chain.then(async () => {
        await hashed
        const bytes = new Uint8Array(block.buf, block.off, n)
        writeSync(store, new Uint8Array(block.buf, block.off, Math.ceil(n / PAGE) * PAGE), 0, Math.ceil(n / PAGE) * PAGE, stored)
        stored += n
        await new Promise(resolve => res.write(bytes, resolve))
        if (--queued < RING - 2) pull.resume()
      })
    }
    const pull = connect({
      port: senderPort,
      host: '127.0.0.1',
      onread: {
        buffer: () => new Uint8Array(ring[k % RING].buf, ring[k % RING].off + fill, BLOCK - fill),
        callback: (n: number): boolean => {
          fill += n
          if (fill < BLOCK) return true
          finish(ring[k++ % RING], BLOCK)
          fill = 0
          // Never read into a block that is still being hashed, stored or sent.
          if (queued >= RING - 2) { pull.pause(); return false }
          return true
        }
      }
    })
    pull.on('end', () => {
      if (fill > 0) finish(ring[k % RING], fill)
      void chain.then(async () => {
        ftruncateSync(store, stored)
        closeSync(store)
        const hex = await workers.call(1, 'final')
        if (hex === expected) res.end()
        else {
          console.error(`floor receiver: digest ${hex ?? ''} is not ${expected}`)
          res.destroy()
        }
      })
    })
    pull.on('error', err => res.destroy(err))
  }).listen(port, '127.0.0.1', () => console.log('ready'))
}

const [role, ...args] = process.argv.slice(2)
if (role === 'sender' && args.length === 2) sender(Number(args[0]), args[1])
else if (role === 'receiver' && args.length === 3) receiver(Number(args[0]), Number(args[1]), args[2])
else {
  console.error('usage: floor.ts sender PORT FILE | receiver PORT SENDER_PORT DIR')
  process.exit(2)
}
