/**
 * A real peer server that lies: it relays a genuine agent's peer API but flips a byte in some
 * of the chunks it sends (every chunk whose index in a batch satisfies `corrupt`). Used to prove
 * that the receiving agent catches and routes around bad sources.
 */
import Fastify from 'fastify'
import { request } from 'undici'
import { CHUNK_HEADER, MISSING, chunkFrameLength, readFrames } from '../../src/core/wire.ts'

export interface EvilPeer { url: string, hint: string, corrupted: number, close: () => Promise<void> }

export async function startEvilPeer (upstreamPeerUrl: string, corrupt: (n: number) => boolean): Promise<EvilPeer> {
  const app = Fastify()
  const state = { corrupted: 0 }
  let n = 0
  app.get('/v1/objects/:oid/manifest', async (req, reply) => {
    const res = await request(`${upstreamPeerUrl}/v1/objects/${(req.params as { oid: string }).oid}/manifest`)
    reply.code(res.statusCode).type(String(res.headers['content-type']))
    return await reply.send(res.body)
  })
  app.post('/v1/chunks', async (req, reply) => {
    const res = await request(`${upstreamPeerUrl}/v1/chunks`, { method: 'POST', body: JSON.stringify(req.body), headers: { 'content-type': 'application/json' } })
    reply.code(res.statusCode).type(String(res.headers['content-type']))
    async function * frames (): AsyncGenerator<Uint8Array> {
      for await (const f of readFrames(res.body, CHUNK_HEADER, chunkFrameLength)) {
        yield f.header
        if (f.payload === undefined || chunkFrameLength(f.header) === MISSING) continue
        const bytes = Buffer.from(f.payload)
        if (corrupt(n++)) { bytes[bytes.length >> 1] ^= 0xff; state.corrupted++ }
        yield bytes
      }
    }
    const { Readable } = await import('node:stream')
    return await reply.send(Readable.from(frames()))
  })
  await app.listen({ host: '127.0.0.1', port: 0 })
  const port = (app.server.address() as { port: number }).port
  return {
    url: `http://127.0.0.1:${port}`,
    hint: `berth://127.0.0.1:${port}`,
    get corrupted () { return state.corrupted },
    close: async () => { await app.close() }
  }
}
