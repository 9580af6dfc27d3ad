/**
 * `berth locker serve`, `berth locker create` and `berth token issue` as a user runs them: the
 * real binary as separate processes, the SDK's LockerClient on the wire.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, stat } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { text } from 'node:stream/consumers'
import { BERTH_BIN, firstJsonLine, oidOf, runBerth, stopper } from '../interop/_berth-cli.ts'
import { LockerClient } from '../../src/sdk/locker-client.ts'
import { BerthError } from '../../src/core/errors.ts'

describe('berth locker and berth token', async () => {
  let dir: string
  let stop: () => Promise<number | null>
  let url: string
  let adminKey: string
  let err = ''

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-cli-locker-'))
    const child = spawn(process.execPath, [BERTH_BIN, 'locker', 'serve', '--json', '--listen', '127.0.0.1:0', '--store', join(dir, 'server')], { stdio: ['ignore', 'pipe', 'pipe'] })
    child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s })
    stop = stopper(child)
    const info = await firstJsonLine(child, () => err) as { url: string, adminKey: string }
    url = info.url
    adminKey = info.adminKey
  })
  after(async () => {
    assert.equal(await stop(), 0, err)
    await rm(dir, { recursive: true, force: true })
  })

  it('serve makes the admin key (0600); create makes the owner key and the locker; issued tokens work', async () => {
    assert.equal((await stat(adminKey)).mode & 0o777, 0o600)
    const ownerKey = join(dir, 'alice.jwk')
    const created = await runBerth(['locker', 'create', 'alice', '--server', url, '--admin-key', adminKey, '--owner-key', ownerKey, '--quota', '64m', '--json'])
    assert.equal(created.code, 0, created.stderr)
    assert.equal(JSON.parse(created.stdout.toString()).quota, 64 * 2 ** 20)
    assert.equal((await stat(ownerKey)).mode & 0o777, 0o600)

    const issued = await runBerth(['token', 'issue', '--locker', 'alice', '--key', ownerKey, '--ops', 'read,write,delete,status', '--ttl', '10m', '--resource', '--size-max', '1m', '--app', 'cli-test', '--json'])
    assert.equal(issued.code, 0, issued.stderr)
    const { access, resource } = JSON.parse(issued.stdout.toString()) as { access: string, resource: string }

    const lockers = new LockerClient(url)
    const bytes = randomBytes(200 * 1024)
    const oid = oidOf(bytes)
    const put = await lockers.put('alice', oid, bytes, { token: access, resource, ttl: 600 })
    assert.equal(put.size, bytes.byteLength)
    const { stream, size, length } = await lockers.get('alice', oid, { token: access, range: { start: 10, end: 19 } })
    assert.equal(size, bytes.byteLength)
    assert.equal(length, 10)
    assert.equal(await text(stream), bytes.subarray(10, 20).toString())
    const status = await lockers.status('alice', { token: access })
    assert.equal(status.used, bytes.byteLength)
    assert.equal(status.objects, 1)
    // sizeMax of the resource token holds.
    const big = randomBytes(2 * 1024 * 1024)
    await assert.rejects(lockers.put('alice', oidOf(big), big, { token: access, resource }), (e: unknown) => e instanceof BerthError && e.code === 'ERR_TOO_LARGE')
    await lockers.delete('alice', oid, { token: access })
    assert.equal(await lockers.head('alice', oid, { token: access }), undefined)
    // Structured logs on stderr: a JSON line per request, with its route, locker, status and error code.
    const lines = err.split('\n').filter(l => l.startsWith('{')).map(l => JSON.parse(l) as { msg: string, route?: string, locker?: string, status?: number, code?: string })
    assert.ok(lines.some(l => l.msg === 'locker server listening'))
    assert.ok(lines.some(l => l.msg === 'request' && l.route === '/v1/lockers/:locker/objects/:oid' && l.locker === 'alice' && l.status === 206))
    assert.ok(lines.some(l => l.msg === 'request' && l.status === 413 && l.code === 'ERR_TOO_LARGE'))
  })

  it('bad input is refused with a usage error and no token', async () => {
    const ownerKey = join(dir, 'bob.jwk')
    const made = await runBerth(['locker', 'create', 'bob', '--server', url, '--admin-key', adminKey, '--owner-key', ownerKey])
    assert.equal(made.code, 0, made.stderr)
    for (const args of [
      ['--ops', 'read,fly'],
      ['--ttl', 'forever'],
      ['--all', '--seq', '1-2'],
      ['--seq', 'a-b'],
      ['--objects', 'not-an-oid']
    ]) {
      const r = await runBerth(['token', 'issue', '--locker', 'bob', '--key', ownerKey, ...args])
      assert.notEqual(r.code, 0, args.join(' '))
      assert.equal(r.stdout.length, 0)
      assert.match(r.stderr, /^berth: ERR_/)
    }
    const wrongAdmin = await runBerth(['locker', 'create', 'carol', '--server', url, '--admin-key', ownerKey, '--owner-key', join(dir, 'carol.jwk')])
    assert.notEqual(wrongAdmin.code, 0)
    assert.match(wrongAdmin.stderr, /ERR_TOKEN_INVALID/)
  })
})
