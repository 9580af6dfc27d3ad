/**
 * AgentClient's bulk path (getToFd / getToFile) against a raw TCP "agent" that misbehaves the
 * ways a real one can: an error answer, a response cut off after some bytes (what the agent does
 * when the object fails verification mid-way), and a good answer split into small pieces.
 */
import { describe, it, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { randomBytes } from 'node:crypto'
import { mkdtemp, readdir, readFile, rm, open } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { AgentClient } from '../../src/sdk/agent-client.ts'

const OID = 'bafkreidjeewkkidwdvnkt7bl5nxsl4ujahkrf5sdnd2u5uf2hlbmppamxe'

async function fakeAgent (answer: (socket: net.Socket) => void): Promise<{ url: string, close: () => Promise<void> }> {
  const sockets = new Set<net.Socket>()
  const server = net.createServer(socket => {
    sockets.add(socket)
    socket.on('error', () => {})
    let head = ''
    socket.on('data', d => {
      head += d.toString('latin1')
      if (head.includes('\r\n\r\n')) { head = ''; answer(socket) }
    })
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    url: `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`,
    close: async () => { for (const s of sockets) s.destroy(); await new Promise(resolve => server.close(resolve)) }
  }
}

describe('AgentClient.getToFd / getToFile', () => {
  const cleanups: Array<() => Promise<void>> = []
  after(async () => { for (const c of cleanups) await c() })
  async function dir (): Promise<string> {
    const d = await mkdtemp(join(tmpdir(), 'berth-sdk-'))
    cleanups.push(async () => await rm(d, { recursive: true, force: true }))
    return d
  }

  it('writes the whole body, however the agent splits it, and reports size and progress', async () => {
    const body = randomBytes(3 * 1024 * 1024 + 17)
    const agent = await fakeAgent(socket => {
      socket.write(`HTTP/1.1 200 OK\r\ncontent-length: ${body.byteLength}\r\nberth-size: ${body.byteLength}\r\n\r\n`)
      for (let at = 0; at < body.byteLength; at += 70_001) socket.write(body.subarray(at, at + 70_001))
    })
    cleanups.push(agent.close)
    const client = new AgentClient(agent.url)
    const path = join(await dir(), 'out')
    let progress = 0
    const { size } = await client.getToFile(OID, path, { onProgress: n => { progress = n } })
    assert.equal(size, body.byteLength)
    assert.equal(progress, body.byteLength)
    assert.deepEqual(await readFile(path), body)
    await client.close()
  })

  it('an error answer becomes a BerthError with the agent\'s code, and leaves no file', async () => {
    const agent = await fakeAgent(socket => {
      const json = JSON.stringify({ error: { code: 'ERR_HASH_MISMATCH', message: 'every source lied' } })
      socket.write(`HTTP/1.1 409 Conflict\r\ncontent-type: application/json\r\ncontent-length: ${json.length}\r\n\r\n${json}`)
    })
    cleanups.push(agent.close)
    const client = new AgentClient(agent.url)
    const d = await dir()
    await assert.rejects(client.getToFile(OID, join(d, 'out')), { code: 'ERR_HASH_MISMATCH', message: 'every source lied' })
    assert.deepEqual(await readdir(d), [])
    await client.close()
  })

  it('a response cut off mid-body is ERR_TRUNCATED, and leaves no file', async () => {
    const agent = await fakeAgent(socket => {
      socket.write('HTTP/1.1 200 OK\r\ncontent-length: 100000\r\n\r\n')
      socket.end(randomBytes(40_000))
    })
    cleanups.push(agent.close)
    const client = new AgentClient(agent.url)
    const d = await dir()
    await assert.rejects(client.getToFile(OID, join(d, 'out')), { code: 'ERR_TRUNCATED' })
    assert.deepEqual(await readdir(d), [])
    // Straight to a descriptor: the same error; what was written stays (the caller's fd).
    const file = await open(join(d, 'fd'), 'w')
    await assert.rejects(client.getToFd(OID, file.fd), { code: 'ERR_TRUNCATED' })
    await file.close()
    assert.equal((await readFile(join(d, 'fd'))).byteLength, 40_000)
    await client.close()
  })

  it('an agent that is not there fails with ERR_SOURCE, its cause the refused connection', async () => {
    const agent = await fakeAgent(() => {})
    await agent.close()
    const client = new AgentClient(agent.url)
    await assert.rejects(client.getToFd(OID, 1), (err: Error & { code?: string, cause?: { code?: string } }) => err.code === 'ERR_SOURCE' && err.cause?.code === 'ECONNREFUSED')
    await client.close()
  })
})
