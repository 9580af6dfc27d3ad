import { test } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { BERTH_BIN, firstJsonLine, runBerth, stopper } from '../interop/_berth-cli.ts'

test('berth overlay: two nodes join through --bootstrap, stop on SIGTERM', async (t) => {
  const first = spawn(process.execPath, [BERTH_BIN, 'overlay', '--json'], { stdio: ['ignore', 'pipe', 'pipe'] })
  let err1 = ''
  first.stderr.setEncoding('utf8').on('data', (s: string) => { err1 += s })
  const stop1 = stopper(first)
  try {
    const t0 = Date.now()
    const a = await firstJsonLine(first, () => err1) as { peerId: string, multiaddrs: string[] }
    t.diagnostic(`first node up in ${Date.now() - t0} ms`)
    assert.match(a.peerId, /^12D3Koo/)
    assert.ok(a.multiaddrs.length > 0 && a.multiaddrs.every(m => m.startsWith('/ip4/127.0.0.1/tcp/') && m.endsWith(`/p2p/${a.peerId}`)))

    const second = spawn(process.execPath, [BERTH_BIN, 'overlay', '--json', '--bootstrap', a.multiaddrs[0]], { stdio: ['ignore', 'pipe', 'pipe'] })
    let err2 = ''
    second.stderr.setEncoding('utf8').on('data', (s: string) => { err2 += s })
    const stop2 = stopper(second)
    try {
      const b = await firstJsonLine(second, () => err2) as { peerId: string, peers: number }
      assert.notEqual(b.peerId, a.peerId)
      assert.ok(b.peers >= 1, 'joined through the bootstrap node')
    } finally {
      assert.equal(await stop2(), 0, err2)
    }
  } finally {
    assert.equal(await stop1(), 0, err1)
  }
})

test('berth overlay: a bad multiaddr is a usage error', async () => {
  const r = await runBerth(['overlay', '--bootstrap', 'not-a-multiaddr'])
  assert.equal(r.code, 2, r.stderr)
  assert.match(r.stderr, /ERR_INVALID_CONFIG/)
})
