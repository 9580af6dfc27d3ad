/**
 * Portable storage end to end (DOT §5.2): the sender's agent copies a put object to a directory
 * (the "disk"); the receiver's agent starts getting it over a slow link to the sender and, when
 * the disk turns up under the path its file:// hint names, takes the rest from the disk — the get
 * ends far sooner than the link alone could carry the object.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { mkdir, readdir, rename } from 'node:fs/promises'
import net from 'node:net'
import { join } from 'node:path'
import type { Agent } from '../../src/agent/agent.ts'
import { PortablePlugin, manifestPath, portableHint } from '../../src/agent/plugins/portable.ts'
import { AgentClient } from '../../src/sdk/agent-client.ts'
import { randomBytes, startAgent, tempDir } from './_helpers.ts'

const sleep = async (ms: number): Promise<void> => await new Promise(resolve => setTimeout(resolve, ms))

interface Proxy { port: number, bytes: () => number, close: () => Promise<void> }

/**
 * A TCP proxy whose answers (target → client) share one link paced to `rate` bytes/s, with
 * backpressure both ways; requests go through unpaced.
 */
async function throttledProxy (targetHost: string, targetPort: number, rate: number): Promise<Proxy> {
  const SLICE = 16 * 1024
  let clock = 0
  let total = 0
  const sockets = new Set<net.Socket>()
  const server = net.createServer(client => {
    const upstream = net.connect(targetPort, targetHost)
    sockets.add(client)
    sockets.add(upstream)
    const kill = (): void => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream) }
    client.on('error', kill)
    upstream.on('error', kill)
    client.on('close', kill)
    client.pipe(upstream)
    void (async () => {
      try {
        for await (const chunk of upstream as AsyncIterable<Buffer>) {
          for (let at = 0; at < chunk.length; at += SLICE) {
            const slice = chunk.subarray(at, at + SLICE)
            // The link is busy until `clock`: this slice leaves when its turn on it has passed.
            clock = Math.max(Date.now(), clock) + slice.length * 1000 / rate
            const wait = clock - Date.now()
            if (wait > 0) await sleep(wait)
            if (client.destroyed) return
            total += slice.length
            if (!client.write(slice)) {
              await new Promise<void>(resolve => {
                const done = (): void => { client.off('drain', done); client.off('close', done); resolve() }
                client.on('drain', done)
                client.on('close', done)
              })
            }
          }
        }
        client.end()
      } catch {
        kill()
      }
    })()
  })
  await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
  return {
    port: (server.address() as net.AddressInfo).port,
    bytes: () => total,
    close: async () => {
      for (const s of sockets) s.destroy()
      await new Promise<void>(resolve => server.close(() => resolve()))
    }
  }
}

describe('portable storage, end to end', () => {
  const RATE = 1_000_000
  const size = 24 * 1024 * 1024
  const data = randomBytes(size)
  const sha256 = createHash('sha256').update(data).digest()
  let sender: Agent, receiver: Agent
  let cs: AgentClient, cr: AgentClient
  let proxy: Proxy
  let portable: PortablePlugin
  const dirs: Array<{ dir: string, cleanup: () => Promise<void> }> = []
  let exportDir: string
  let disk: string

  before(async () => {
    const root = await tempDir('berth-portable-e2e-')
    dirs.push(root)
    exportDir = join(root.dir, 'export')
    await mkdir(exportDir)
    await mkdir(join(root.dir, 'mnt'))
    disk = join(root.dir, 'mnt', 'disk')
    portable = new PortablePlugin({ dir: exportDir, export: true })
    sender = await startAgent({ storeDir: join(root.dir, 'sender'), plugins: [portable] })
    receiver = await startAgent({ storeDir: join(root.dir, 'receiver'), allowedRoots: [root.dir] }) // file: hints only under allowed roots
    cs = new AgentClient(sender.url)
    cr = new AgentClient(receiver.url)
    const peer = new URL(sender.selfHint.uri)
    proxy = await throttledProxy(peer.hostname, Number(peer.port), RATE)
  })
  after(async () => {
    await cs?.close()
    await cr?.close()
    await proxy?.close()
    await sender?.stop()
    await receiver?.stop()
    for (const d of dirs) await d.cleanup()
  })

  it('a get over a slow link finishes from the disk once it turns up', { timeout: 120_000 }, async () => {
    const put = await cs.put({ bytes: data })
    assert.equal(put.size, size)
    assert.deepEqual(put.hints, [sender.selfHint], 'the export adds no hint (the disk\'s path elsewhere is unknown)')
    const t0 = Date.now()
    await portable.idle()
    console.log(`# export of ${size} bytes (${put.chunks} chunks) took ${Date.now() - t0} ms`)
    assert.ok((await readdir(exportDir)).includes(`${put.oid}.manifest`))
    assert.equal(manifestPath(exportDir, put.oid), join(exportDir, `${put.oid}.manifest`))

    const linkAlone = size / RATE * 1000
    const started = Date.now()
    const getting = (async () => {
      const { stream } = await cr.get(put.oid, { hints: [`berth://127.0.0.1:${proxy.port}`, portableHint(disk)] })
      const hash = createHash('sha256')
      let n = 0
      for await (const piece of stream) { hash.update(piece as Buffer); n += (piece as Buffer).length }
      return { n, digest: hash.digest() }
    })()
    let failed: unknown
    getting.catch(err => { failed = err })
    // Let about 2 MB come over the link, then the disk "arrives" under the hinted path.
    while (proxy.bytes() < 2_000_000 && failed === undefined) await sleep(20)
    const viaLinkBefore = proxy.bytes()
    const arrived = Date.now()
    await rename(exportDir, disk)
    const { n, digest } = await getting
    const done = Date.now()
    const total = done - started
    console.log(`# link alone would take ${linkAlone} ms; the disk arrived after ${arrived - started} ms (${viaLinkBefore} bytes over the link); ` +
      `the get finished ${done - arrived} ms later, ${total} ms in all, ${proxy.bytes()} bytes over the link`)
    assert.equal(n, size)
    assert.ok(digest.equals(sha256), 'the bytes are right')
    assert.ok(total < linkAlone / 3, `${total} ms is not well under the link's ${linkAlone} ms`)
    assert.ok(proxy.bytes() < size / 2, `${proxy.bytes()} bytes came over the link`)
  })
})
