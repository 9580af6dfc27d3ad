/**
 * The FrameClient against a real TCP server that writes raw HTTP/1.1 responses: every way a
 * server may legally split, frame and end a response, and the ways a broken one fails.
 */
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { FrameClient, type Frame } from '../../src/agent/plugins/frame-client.ts'
import { HttpStatusError } from '../../src/core/http-client.ts'
import { MISSING } from '../../src/core/wire.ts'
import { MAX_CHUNK } from '../../src/core/chunker/types.ts'

interface Served { connections: number, requests: number, close: () => Promise<void>, port: number }

/** A server whose every request is answered by `respond(socket, index)`. */
async function serve (respond: (socket: net.Socket, index: number) => void | Promise<void>): Promise<Served> {
  const state = { connections: 0, requests: 0 }
  const sockets = new Set<net.Socket>()
  const server = net.createServer(socket => {
    state.connections++
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
    let pending = Buffer.alloc(0)
    socket.on('data', d => {
      pending = Buffer.concat([pending, d])
      // One request = head + Content-Length body.
      while (true) {
        const end = pending.indexOf('\r\n\r\n')
        if (end < 0) return
        const length = Number(/content-length: (\d+)/i.exec(pending.toString('latin1', 0, end))?.[1] ?? 0)
        if (pending.byteLength < end + 4 + length) return
        pending = pending.subarray(end + 4 + length)
        void respond(socket, state.requests++)
      }
    })
    socket.on('error', () => {})
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    get connections () { return state.connections },
    get requests () { return state.requests },
    port: (server.address() as net.AddressInfo).port,
    close: async () => { for (const s of sockets) s.destroy(); await new Promise(resolve => server.close(resolve)) }
  }
}

function frame (payload: Uint8Array | undefined): Buffer {
  const header = Buffer.alloc(36)
  randomBytes(32).copy(header)
  header.writeUInt32BE(payload === undefined ? MISSING : payload.byteLength, 32)
  return payload === undefined ? header : Buffer.concat([header, payload])
}

function chunked (body: Buffer, pieces: number[], ext = ''): Buffer {
  const parts: Buffer[] = []
  let at = 0
  for (const n of pieces) {
    if (at >= body.byteLength) break
    const piece = body.subarray(at, at + n)
    parts.push(Buffer.from(`${piece.byteLength.toString(16)}${ext}\r\n`), piece, Buffer.from('\r\n'))
    at += piece.byteLength
  }
  if (at < body.byteLength) parts.push(Buffer.from(`${(body.byteLength - at).toString(16)}\r\n`), body.subarray(at), Buffer.from('\r\n'))
  return Buffer.concat(parts)
}

/** Writes `bytes` in pieces of `step` bytes, each in its own TCP write, with a pause between some. */
async function dribble (socket: net.Socket, bytes: Buffer, step: number): Promise<void> {
  for (let at = 0; at < bytes.byteLength; at += step) {
    socket.write(bytes.subarray(at, at + step))
    if ((at / step) % 64 === 0) await new Promise(resolve => setImmediate(resolve))
  }
}

async function collect (client: FrameClient, signal?: AbortSignal): Promise<Frame[]> {
  const out: Frame[] = []
  // The arena stand-in: one shared buffer, as the transfer gives.
  const arena = new Uint8Array(new SharedArrayBuffer(4 * 1024 * 1024))
  let used = 0
  const alloc = (n: number): Uint8Array => { if (used + n > arena.byteLength) return new Uint8Array(n); const v = arena.subarray(used, used + n); used += n; return v }
  for await (const f of client.post({ path: '/v1/chunks', contentType: 'application/json', body: Buffer.from('{"cids":[]}'), alloc, signal })) out.push({ header: f.header, payload: f.payload === undefined ? undefined : Buffer.from(f.payload) })
  return out
}

const payloads = [randomBytes(300_000), randomBytes(1), randomBytes(65_536), Buffer.alloc(0)]
const frames = [frame(payloads[0]), frame(undefined), frame(payloads[1]), frame(payloads[2]), frame(payloads[3])]
const body = Buffer.concat(frames)

function assertFrames (got: Frame[]): void {
  assert.equal(got.length, 5)
  assert.deepEqual(got[0].payload, payloads[0])
  assert.equal(got[1].payload, undefined)
  assert.equal(got[1].header.readUInt32BE(32), MISSING)
  assert.deepEqual(got[2].payload, payloads[1])
  assert.deepEqual(got[3].payload, payloads[2])
  assert.equal(got[4].payload?.byteLength, 0)
  for (let i = 0; i < 5; i++) assert.deepEqual(got[i].header, frames[i].subarray(0, 36))
}

describe('FrameClient', () => {
  const servers: Served[] = []
  after(async () => { for (const s of servers) await s.close() })
  async function server (respond: (socket: net.Socket, index: number) => void | Promise<void>): Promise<{ served: Served, client: FrameClient }> {
    const served = await serve(respond)
    servers.push(served)
    return { served, client: new FrameClient('127.0.0.1', served.port, { timeoutMs: 2000 }) }
  }

  it('reads a chunked response split at every byte, and reuses the connection', async () => {
    const { served, client } = await server(async socket => {
      await dribble(socket, Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n'), chunked(body, [36, 7, 100_000, 1, 3]), Buffer.from('0\r\n\r\n')]), 1)
    })
    assertFrames(await collect(client))
    assertFrames(await collect(client))
    assert.equal(served.connections, 1)
    await client.close()
  })

  it('reads Content-Length bodies, chunk extensions and trailers', async () => {
    const { client } = await server(async (socket, i) => {
      if (i === 0) socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\nContent-Length: ${body.byteLength}\r\n\r\n`), body]))
      else await dribble(socket, Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-Other: 1\r\n\r\n'), chunked(body, [50_000, 50_000], ';name=value'), Buffer.from('0\r\nX-Trailer: yes\r\n\r\n')]), 4093)
    })
    assertFrames(await collect(client))
    assertFrames(await collect(client))
    await client.close()
  })

  it('turns an error status into HttpStatusError with the remote code', async () => {
    const { client } = await server(socket => {
      const json = JSON.stringify({ error: { code: 'ERR_NOT_FOUND', message: 'nope' } })
      socket.write(`HTTP/1.1 404 Not Found\r\ncontent-type: application/json\r\ncontent-length: ${json.length}\r\n\r\n${json}`)
    })
    await assert.rejects(collect(client), (err: unknown) => err instanceof HttpStatusError && err.statusCode === 404 && err.remoteCode === 'ERR_NOT_FOUND' && err.code === 'ERR_SOURCE')
    await client.close()
  })

  for (const [title, response, message] of [
    ['a connection closed inside a frame', Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${body.byteLength}\r\n\r\n`), body.subarray(0, 1000)]), /closed the connection/],
    ['a chunked body that ends inside a frame', Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n'), chunked(body.subarray(0, 50), [50]), Buffer.from('0\r\n\r\n')]), /inside a frame/],
    ['a frame over the chunk limit', Buffer.concat([Buffer.from('HTTP/1.1 200 OK\r\ncontent-length: 36\r\n\r\n'), (() => { const h = Buffer.alloc(36); h.writeUInt32BE(MAX_CHUNK + 1, 32); return h })()]), /exceeds the chunk limit/],
    ['a garbage status line', Buffer.from('HTTP/9 what\r\n\r\n'), /no HTTP status line/],
    ['a malformed chunk size', Buffer.from('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\nzz\r\n'), /malformed chunk size/],
    ['a body with no length', Buffer.from('HTTP/1.1 200 OK\r\n\r\n'), /neither Content-Length nor chunked/],
    ['a huge head', Buffer.from('HTTP/1.1 200 OK\r\n' + 'x-pad: ' + 'a'.repeat(20_000) + '\r\n\r\n'), /head is too large/]
  ] as const) {
    it(`fails with ERR_SOURCE on ${title}`, async () => {
      const { client } = await server(socket => { socket.end(response) })
      await assert.rejects(collect(client), (err: Error & { code?: string }) => err.code === 'ERR_SOURCE' && message.test(err.message))
      await client.close()
    })
  }

  it('does not reuse a connection that sent bytes past the response', async () => {
    const { served, client } = await server(socket => {
      socket.write(Buffer.concat([Buffer.from(`HTTP/1.1 200 OK\r\ncontent-length: ${body.byteLength}\r\n\r\n`), body, Buffer.from('junk')]))
    })
    assertFrames(await collect(client))
    assertFrames(await collect(client))
    assert.equal(served.connections, 2)
    await client.close()
  })

  it('stops on abort and on a silent peer', async () => {
    const { client } = await server(socket => { socket.write('HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n') })
    const controller = new AbortController()
    setTimeout(() => controller.abort(), 50)
    await assert.rejects(collect(client, controller.signal), { code: 'ERR_ABORTED' })
    const silent = new FrameClient('127.0.0.1', servers[servers.length - 1].port, { timeoutMs: 200 })
    await assert.rejects(collect(silent), (err: Error & { code?: string }) => err.code === 'ERR_SOURCE' && /sent nothing/.test(err.message))
    await client.close()
    await silent.close()
  })

  it('fails with ERR_SOURCE when nothing listens', async () => {
    const { served, client } = await server(() => {})
    await served.close()
    await assert.rejects(collect(client), { code: 'ERR_SOURCE' })
    await client.close()
  })
})
