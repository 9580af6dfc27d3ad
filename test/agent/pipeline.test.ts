/** The plugin pipeline as a config composes it: which plugin takes which hint. */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { buildPipeline, PluginSpecSchema } from '../../src/agent/pipeline.ts'
import { PluginRegistry } from '../../src/agent/plugin.ts'
import { parseHint } from '../../src/core/hints.ts'

describe('plugin pipeline', () => {
  it('the default is one multipath plugin serving every hint scheme', async () => {
    const registry = new PluginRegistry(buildPipeline(undefined))
    try {
      for (const h of ['berth://10.0.0.1:4651', 'http://mirror.example/x', 'file:///media/usb', 'locker://isp.example:4660/bob']) {
        assert.equal(registry.for(parseHint(h)).name, 'multipath', h)
      }
    } finally { await registry.close() }
  })

  it('a multipath whose paths match other hosts passes a hint on to the next plugin naming its scheme', async () => {
    const specs = [
      { type: 'multipath', paths: [{ type: 'peer', localAddress: '10.0.1.1', match: 'berth://10.0.1.' }, { type: 'peer', localAddress: '10.0.2.1', match: 'berth://10.0.2.' }] },
      { type: 'peer' }
    ].map(s => PluginSpecSchema.parse(s))
    const registry = new PluginRegistry(buildPipeline(specs))
    try {
      assert.equal(registry.for(parseHint('berth://10.0.2.7:4651')).name, 'multipath')
      assert.equal(registry.for(parseHint('berth://127.0.0.1:4651')).name, 'peer')
      assert.equal(registry.has(parseHint('http://mirror.example/x')), false)
      assert.throws(() => registry.for(parseHint('http://mirror.example/x')), (err: Error & { code?: string }) => err.code === 'ERR_UNSUPPORTED_SCHEME')
    } finally { await registry.close() }
  })

  it('refuses specs it cannot build', () => {
    for (const bad of [
      { type: 'multipath', paths: [] },
      { type: 'multipath', perPath: 0, paths: [{ type: 'peer' }] },
      { type: 'peer', localAddress: 'not-an-address' },
      { type: 'locker', mine: { uri: 'http://not-a-locker', token: 't' } },
      { type: 'carrier-pigeon' }
    ]) assert.equal(PluginSpecSchema.safeParse(bad).success, false, JSON.stringify(bad))
  })
})

describe('peer plugin bound to a local address', () => {
  it('both its manifest and its chunk connections leave from that address', async () => {
    const { createServer } = await import('node:http')
    const { PeerPlugin } = await import('../../src/agent/plugins/peer.ts')
    const seen: string[] = []
    const server = createServer((req, res) => {
      seen.push(`${req.method ?? ''} ${req.socket.remoteAddress ?? ''}`)
      req.resume()
      if (req.method === 'POST') { res.writeHead(200, { 'content-type': 'application/vnd.berth.chunks' }); res.end(); return }
      res.writeHead(404, { 'content-type': 'application/json' })
      res.end(JSON.stringify({ error: { code: 'ERR_NOT_FOUND', message: 'not here' } }))
    })
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve))
    const port = (server.address() as { port: number }).port
    const plugin = new PeerPlugin({ localAddress: '127.0.0.9' })
    try {
      const hint = parseHint(`berth://127.0.0.1:${port}`)
      const oid = 'bafkreihdwdcefgh4dqkjv67uzcmw7ojee6xedzdetojuzjevtenxquvyku'
      await assert.rejects(plugin.manifest(oid, hint, { signal: AbortSignal.timeout(5000) }))
      const d = { cid: oid, offset: 0, length: 1 }
      for await (const r of plugin.chunks([d], hint, { signal: AbortSignal.timeout(5000) })) assert.equal(r.bytes, undefined)
      assert.deepEqual(seen, ['GET 127.0.0.9', 'POST 127.0.0.9'])
    } finally {
      await plugin.close()
      server.close()
    }
  })
})
