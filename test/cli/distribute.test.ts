/**
 * `berth distribute` and `berth status --locker` as a user runs them: the real binary as its own
 * process, against a real locker server (in this process) and a plain HTTP origin.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { buffer } from 'node:stream/consumers'
import { BERTH_BIN, freePort, oidOf, runBerth } from '../interop/_berth-cli.ts'
import { type Origin, startLockerServers, startOrigin, type TestLocker } from '../locker/_lockers.ts'
import type { TransferStatus } from '../../src/sdk/locker-client.ts'

describe('berth distribute and berth status --locker', { timeout: 180_000 }, () => {
  let dir: string
  let stopServers: () => Promise<void>
  let alice: TestLocker
  let bob: TestLocker
  let carol: TestLocker
  let origin: Origin
  const tok: Record<string, string> = {}
  const held = randomBytes(300 * 1024)
  const heldOid = oidOf(held)
  const remote = randomBytes(1536 * 1024 + 77)
  const remoteOid = oidOf(remote)

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-cli-distribute-'))
    const { servers, stop } = await startLockerServers(1)
    stopServers = stop
    ;[alice, bob, carol] = await Promise.all(['alice', 'bob', 'carol'].map(async n => await servers[0].locker(n)))
    for (const l of [alice, bob, carol]) {
      tok[l.name] = join(dir, `${l.name}.tok`)
      await writeFile(tok[l.name], (await l.token()) + '\n')
    }
    await alice.client.put('alice', heldOid, held, { token: await alice.token() })
    origin = await startOrigin(remote, { piece: 64 * 1024 })
  })

  after(async () => {
    await origin?.close()
    await stopServers?.()
    await rm(dir, { recursive: true, force: true })
  })

  it('answers --help with the syntax', async () => {
    for (const cmd of [['distribute'], ['status']]) {
      const r = await runBerth([...cmd, '--help'])
      assert.equal(r.code, 0, r.stderr)
      assert.match(r.stdout.toString(), /--json/)
      assert.match(r.stdout.toString(), /locker:\/\/HOST:PORT\/NAME/)
    }
  })

  it('from one locker to another on the same server: a link, no bytes moved', async () => {
    const r = await runBerth(['distribute', heldOid, '--via', bob.uri, '--token', tok.bob, '--src', alice.uri, '--src-token', tok.alice])
    assert.equal(r.code, 0, r.stderr)
    const line = r.stdout.toString()
    assert.equal(line.trim().split('\n').length, 1, line)
    assert.match(line, new RegExp(`^${heldOid} in ${bob.uri}: link from ${alice.uri}; `))
    assert.match(line, /0 B in, 0 B out; [\d.]+ s$/m)
    assert.equal((await bob.client.head('bob', heldOid, { token: await bob.token() }))?.size, held.length)

    // Delivered to dst the same way (dst's token travels with the distribute); --json: the transfer.
    const d = await runBerth(['distribute', heldOid, '--via', alice.uri, '--token', tok.alice, '--dst', carol.uri, '--dst-token', tok.carol, '--ttl', '1h', '--json'])
    assert.equal(d.code, 0, d.stderr)
    const t = JSON.parse(d.stdout.toString()) as TransferStatus
    assert.equal(t.state, 'done')
    assert.equal(t.how, 'held')
    assert.equal(t.delivered, 'link')
    assert.equal(t.dst, carol.uri)
    const status = await carol.client.status('carol', { token: await carol.token() })
    const expires = status.list.find(o => o.oid === heldOid)?.expiresAt
    assert.ok(expires !== null && expires !== undefined && expires > Date.now() + 3500_000 && expires <= Date.now() + 3600_000, String(expires))
  })

  it('from an HTTP origin into a locker: fetched, the bytes verified by a GET', async () => {
    const r = await runBerth(['distribute', remoteOid, '--via', bob.uri, '--token', tok.bob, '--src', origin.url, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const t = JSON.parse(r.stdout.toString()) as TransferStatus
    assert.equal(t.state, 'done')
    assert.equal(t.how, 'fetch')
    assert.equal(t.delivered, 'none')
    assert.equal(t.size, remote.length)
    assert.equal(t.bytesIn, remote.length)
    const got = await bob.client.get('bob', remoteOid, { token: await bob.token() })
    assert.ok((await buffer(got.stream)).equals(remote))
  })

  it('--no-wait prints the transfer as soon as it is accepted', async () => {
    const r = await runBerth(['distribute', remoteOid, '--via', carol.uri, '--token', tok.carol, '--src', bob.uri, '--src-token', tok.bob, '--no-wait', '--json'])
    assert.equal(r.code, 0, r.stderr)
    const accepted = JSON.parse(r.stdout.toString()) as TransferStatus
    assert.match(accepted.id, /^[\w-]{8,}$/)
    assert.equal(accepted.oid, remoteOid)
    const final = await carol.client.waitTransfer('carol', accepted.id, { token: await carol.token(), intervalMs: 50 })
    assert.equal(final.state, 'done', JSON.stringify(final.error))
    assert.equal(final.how, 'link')

    // Human: the id alone on stdout.
    const h = await runBerth(['distribute', heldOid, '--via', carol.uri, '--token', tok.carol, '--src', alice.uri, '--src-token', tok.alice, '--no-wait'])
    assert.equal(h.code, 0, h.stderr)
    assert.match(h.stdout.toString(), /^[\w-]{8,}\n$/)
  })

  it('a transfer that fails exits non-zero with its error code and message', async () => {
    const port = await freePort()
    const lost = randomBytes(1000)
    const r = await runBerth(['distribute', oidOf(lost), '--via', alice.uri, '--token', tok.alice, '--src', `http://127.0.0.1:${port}/lost`])
    assert.equal(r.code, 5, r.stderr)
    assert.equal(r.stdout.toString(), '')
    assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
    assert.match(r.stderr, /^berth: ERR_SOURCE: distribute [\w-]+ failed: source http:\/\/127\.0\.0\.1:\d+\/lost/)

    const j = await runBerth(['distribute', oidOf(lost), '--via', alice.uri, '--token', tok.alice, '--src', `http://127.0.0.1:${port}/lost`, '--json'])
    assert.equal(j.code, 5, j.stderr)
    const t = JSON.parse(j.stdout.toString()) as TransferStatus
    assert.equal(t.state, 'failed')
    assert.equal(t.error?.code, 'ERR_SOURCE')

    // A locker server that is not there is said so.
    const down = await runBerth(['distribute', heldOid, '--via', `locker://127.0.0.1:${port}/alice`, '--token', tok.alice, '--src', origin.url])
    assert.equal(down.code, 5, down.stderr)
    assert.match(down.stderr, /^berth: ERR_UNREACHABLE: cannot reach the locker server http:\/\/127\.0\.0\.1:\d+ /)
    // Refused by the locker (here: a token of another locker): its code, exit 2.
    await writeFile(join(dir, 'bad.tok'), (await bob.token()) + '\n')
    const denied = await runBerth(['distribute', heldOid, '--via', alice.uri, '--token', join(dir, 'bad.tok'), '--src', origin.url])
    assert.equal(denied.code, 2, denied.stderr)
    assert.match(denied.stderr, /^berth: ERR_TOKEN_\w+: /)
  })

  it('bad arguments are usage errors (exit 2, one line), before anything is sent', async () => {
    await writeFile(join(dir, 'junk.tok'), 'not a token\n')
    const via = ['--via', alice.uri, '--token', tok.alice]
    const cases: Array<[string[], RegExp]> = [
      [['distribute', heldOid, '--token', tok.alice, '--src', origin.url], /ERR_USAGE: .*--via/],
      [['distribute', heldOid, '--via', alice.uri, '--src', origin.url], /ERR_USAGE: .*--token/],
      [['distribute', heldOid, ...via], /ERR_USAGE: give --src, --dst or both/],
      [['distribute', heldOid, '--via', 'ftp://x/alice', '--token', tok.alice, '--src', origin.url], /ERR_USAGE: --via must be locker:/],
      [['distribute', heldOid, '--via', 'locker://127.0.0.1:1/', '--token', tok.alice, '--src', origin.url], /ERR_USAGE: --via must name a locker/],
      [['distribute', heldOid, ...via, '--dst', origin.url], /ERR_USAGE: --dst must be a locker/],
      [['distribute', heldOid, ...via, '--src', 'ftp://x/y'], /ERR_USAGE: --src must be/],
      [['distribute', heldOid, ...via, '--src', bob.uri], /ERR_USAGE: --src .* is a locker: give its access token with --src-token/],
      [['distribute', heldOid, ...via, '--src', origin.url, '--src-token', tok.bob], /ERR_USAGE: --src-token and --src-resource are for a locker/],
      [['distribute', heldOid, ...via, '--src', origin.url, '--dst-token', tok.bob], /ERR_USAGE: --dst-token and --dst-resource go with --dst/],
      [['distribute', heldOid, ...via, '--src', origin.url, '--ttl', 'forever'], /ERR_INVALID_CONFIG: bad duration/],
      [['distribute', 'not-an-oid', ...via, '--src', origin.url], /ERR_INVALID_OID/],
      [['distribute', heldOid, '--via', alice.uri, '--token', join(dir, 'missing.tok'), '--src', origin.url], /ERR_USAGE: cannot read --token .*missing\.tok: no such file/],
      [['distribute', heldOid, '--via', alice.uri, '--token', join(dir, 'junk.tok'), '--src', origin.url], /ERR_USAGE: --token .*junk\.tok does not hold a token/],
      [['distribute', heldOid, '--via', alice.uri, '--token', '-', '--src', bob.uri, '--src-token', '-'], /ERR_USAGE: --src-token -: stdin is taken by --token/],
      [['status', '--locker', alice.uri], /ERR_USAGE: --locker needs --token/],
      [['status', '--token', tok.alice], /ERR_USAGE: --token and --resource go with --locker/],
      [['status', '--locker', alice.uri, '--agent', 'http://127.0.0.1:1', '--token', tok.alice], /ERR_USAGE: give --agent or --locker/]
    ]
    for (const [args, pattern] of cases) {
      const r = await runBerth(args, { input: Buffer.from(await alice.token()) })
      assert.equal(r.code, 2, `berth ${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, pattern, `berth ${args.join(' ')}`)
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
    }
  })

  it('status --locker: objects, bytes used of the quota, transfers (JSON and a table)', async () => {
    const r = await runBerth(['status', '--locker', bob.uri, '--token', tok.bob, '--json'])
    assert.equal(r.code, 0, r.stderr)
    const s = JSON.parse(r.stdout.toString()) as { server: string, locker: string, objects: number, used: number, quota: number, reserved: number, transfers: unknown[], distributes: unknown[], list: Array<{ oid: string, size: number }> }
    assert.equal(s.server, bob.server.url)
    assert.equal(s.locker, 'bob')
    assert.equal(s.objects, 2)
    assert.equal(s.used, held.length + remote.length)
    assert.ok(s.quota > s.used)
    assert.equal(s.reserved, 0)
    assert.deepEqual(s.transfers, [])
    assert.deepEqual(s.distributes, [])
    assert.deepEqual(s.list.map(o => o.oid).sort(), [heldOid, remoteOid].sort())

    // The token from stdin, the server as an http:// URL; --limit cuts the list.
    const h = await runBerth(['status', '--locker', `${bob.server.url}/v1/lockers/bob`, '--token', '-', '--limit', '1'], { input: Buffer.from(await bob.token()) })
    assert.equal(h.code, 0, h.stderr)
    const out = h.stdout.toString()
    assert.match(out, /^locker\s+bob on http:\/\/127\.0\.0\.1:\d+$/m)
    assert.match(out, /^objects\s+2$/m)
    assert.match(out, /^used\s+1\.\d+ MiB of 10\.0 GiB/m)
    assert.match(out, /… and 1 more \(--limit N\)/)
    assert.ok(out.includes(heldOid), out)

    const port = await freePort()
    const down = await runBerth(['status', '--locker', `locker://127.0.0.1:${port}/bob`, '--token', tok.bob])
    assert.equal(down.code, 5, down.stderr)
    assert.match(down.stderr, /^berth: ERR_UNREACHABLE: cannot reach the locker server/)
  })

  it('a reader that goes away ends the output quietly (no EPIPE trace)', async () => {
    const child = spawn(process.execPath, [BERTH_BIN, '--help'], { stdio: ['ignore', 'pipe', 'pipe'] })
    child.stdout.destroy()
    let err = ''
    child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s })
    const code = await new Promise<number | null>(resolve => child.once('close', c => resolve(c)))
    assert.equal(err, '')
    assert.ok(code === 141 || code === 0, String(code))
  })
})
