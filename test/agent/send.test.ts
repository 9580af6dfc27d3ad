/**
 * sendPieces corks the connection and flushes per MiB, or when the producer has nothing more
 * ready this turn: bytes of a slow producer must reach the client at once, not wait for a MiB.
 * Real fastify server, real socket, raw client.
 */
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { createHttpServer, listen, parseListen } from '../../src/agent/http.ts'
import { sendPieces, type SendPiece } from '../../src/agent/send.ts'

/** A one-shot gate: `wait()` resolves once `open()` has been called. */
function gate (): { wait: () => Promise<void>, open: () => void } {
  let open!: () => void
  const opened = new Promise<void>(resolve => { open = resolve })
  return { wait: async () => await opened, open }
}

describe('sendPieces', async () => {
  let counted = 0
  let produce: () => AsyncGenerator<SendPiece> = async function * () {}
  let length = 0
  let released = 0
  const app = createHttpServer()
  app.get('/pieces', async (_request, reply) => {
    await sendPieces(reply, 200, { 'content-type': 'application/octet-stream', 'content-length': String(length) }, produce(), { count: n => { counted += n } })
  })
  const address = await listen(app, parseListen('127.0.0.1:0'))
  after(async () => { await app.close() })

  /** Raw GET; calls `onBody(total)` as body bytes arrive; resolves with the whole body. */
  function get (onBody: (total: number) => void): Promise<Buffer> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(address.port, '127.0.0.1')
      socket.write('GET /pieces HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n')
      const parts: Buffer[] = []
      let received = 0
      let headEnd = -1
      socket.on('data', (d: Buffer) => {
        parts.push(d)
        received += d.byteLength
        if (headEnd < 0) headEnd = Buffer.concat(parts).indexOf('\r\n\r\n')
        if (headEnd >= 0) onBody(received - headEnd - 4)
      })
      socket.on('end', () => {
        const all = Buffer.concat(parts)
        resolve(all.subarray(all.indexOf('\r\n\r\n') + 4))
      })
      socket.on('error', reject)
    })
  }

  it('sends what a stalled producer has made so far, though it is far below the flush size', { timeout: 10000 }, async () => {
    const more = gate()
    const first = Buffer.alloc(1000, 1)
    const second = Buffer.alloc(2000, 2)
    produce = async function * () {
      yield { bytes: first, release: () => { released++ } }
      yield { bytes: first, release: () => { released++ } }
      // The producer stalls until the client has seen both pieces: corked bytes that waited for
      // a full MiB would never arrive, and this test would time out.
      await more.wait()
      yield { bytes: second, release: () => { released++ } }
    }
    released = 0
    length = 4000
    const body = await get(total => { if (total >= 2000) more.open() })
    assert.equal(body.byteLength, 4000)
    assert.deepEqual(body, Buffer.concat([first, first, second]))
    assert.equal(released, 3)
  })

  it('sends many pieces in order, coalesced, and releases each once', async () => {
    const pieces = Array.from({ length: 300 }, (_, i) => Buffer.alloc(64 * 1024, i % 251))
    produce = async function * () {
      for (const bytes of pieces) yield { bytes, release: () => { released++ } }
    }
    released = 0
    length = pieces.length * 64 * 1024
    const body = await get(() => {})
    // equals, not deepEqual: a failing deepEqual of 20 MB would build a diff of it.
    assert.equal(body.byteLength, length)
    assert.ok(body.equals(Buffer.concat(pieces)), 'the body is the pieces in order')
    assert.equal(released, pieces.length)
    assert.equal(counted, length + 4000, 'every byte sent was counted, in both answers')
  })
})
