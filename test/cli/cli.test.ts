/**
 * The `berth` command as a user runs it: real processes, two agents with their own stores and
 * ports, files on disk, exit codes and stderr lines.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawn } from 'node:child_process'
import { mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { toNi } from '../../src/core/naming.ts'
import {
  type AgentProcess, BERTH_BIN, firstJsonLine, freePort, oidOf, pseudoRandom, runBerth, startAgentProcess, stopper
} from '../interop/_berth-cli.ts'

const SIZE = 3 * 1024 * 1024 + 12345

describe('berth CLI', { timeout: 180_000 }, () => {
  let dir: string
  let a: AgentProcess
  let b: AgentProcess
  let file: string
  let data: Buffer
  let oid: string

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-cli-'))
    data = pseudoRandom(SIZE, 7)
    oid = oidOf(data)
    file = join(dir, 'data.bin')
    await writeFile(file, data)
    // One agent on ports picked beforehand (as a user types them), one on port 0 (it reports them).
    const [listen, peer] = [await freePort(), await freePort()]
    ;[a, b] = await Promise.all([
      startAgentProcess({ store: join(dir, 'store-a'), listen: `127.0.0.1:${listen}`, peerListen: `127.0.0.1:${peer}` }),
      startAgentProcess({ store: join(dir, 'store-b') })
    ])
    assert.equal(a.url, `http://127.0.0.1:${listen}`)
    assert.equal(a.hint, `berth://127.0.0.1:${peer}`)
  })

  after(async () => {
    const codes = await Promise.all([a?.stop(), b?.stop()])
    await rm(dir, { recursive: true, force: true })
    // A clean stop on SIGTERM is part of the contract.
    assert.deepEqual(codes, [0, 0], `agents did not stop cleanly: ${a?.stderr()} ${b?.stderr()}`)
  })

  it('every command answers --help with exit 0', async () => {
    for (const cmd of [[], ['start'], ['agent'], ['oid'], ['put'], ['get'], ['status'], ['cp']]) {
      const r = await runBerth([...cmd, '--help'])
      assert.equal(r.code, 0, `berth ${cmd.join(' ')} --help: ${r.stderr}`)
      assert.match(r.stdout.toString(), /Usage: berth/)
      if (cmd.length > 0) assert.match(r.stdout.toString(), /--json/)
    }
  })

  it('put prints the OID then the hints; oid agrees and stores nothing', async () => {
    const put = await runBerth(['put', file, '--agent', a.url])
    assert.equal(put.code, 0, put.stderr)
    assert.equal(put.stderr, '')
    assert.deepEqual(put.stdout.toString().trim().split('\n'), [oid, a.hint])

    const o = await runBerth(['oid', file, '--ni'])
    assert.equal(o.code, 0, o.stderr)
    assert.deepEqual(o.stdout.toString().trim().split('\n'), [oid, toNi(oid)])

    const j = await runBerth(['oid', '-', '--json'], { input: data })
    assert.deepEqual(JSON.parse(j.stdout.toString()), { oid, size: SIZE })
  })

  it('get on another agent with the printed hint gives identical bytes (-o FILE and stdout)', async () => {
    const out = join(dir, 'copy.bin')
    const r = await runBerth(['get', oid, '--hint', a.hint, '--agent', b.url, '-o', out, '--json'])
    assert.equal(r.code, 0, r.stderr)
    assert.deepEqual(JSON.parse(r.stdout.toString()), { oid, size: SIZE, path: out })
    assert.ok(data.equals(await readFile(out)))

    const s = await runBerth(['get', oid, '--agent', b.url])
    assert.equal(s.code, 0, s.stderr)
    assert.ok(data.equals(s.stdout))
    // Nothing but the object was left beside the output.
    assert.deepEqual((await readdir(dir)).filter(n => n.endsWith('.part')), [])
  })

  it('put --json from stdin with a chunker: parses, names the object by its bytes', async () => {
    // Fresh bytes: an object already stored keeps the manifest it was first stored with.
    const fresh = pseudoRandom(SIZE, 8)
    const r = await runBerth(['put', '-', '--json', '--agent', a.url, '--chunker', 'fixed:64k'], { input: fresh })
    assert.equal(r.code, 0, r.stderr)
    const j = JSON.parse(r.stdout.toString())
    assert.equal(j.oid, oidOf(fresh))
    assert.equal(j.size, SIZE)
    assert.equal(j.chunks, Math.ceil(SIZE / 65536))
    assert.deepEqual(j.hints.map((h: { uri: string }) => h.uri), [a.hint])
  })

  it('get --order any -o FILE writes chunks at their offsets: identical bytes', async () => {
    // A fresh object, so the bytes really travel agent to agent out of order.
    const other = pseudoRandom(2 * 1024 * 1024 + 777, 99)
    const otherFile = join(dir, 'other.bin')
    await writeFile(otherFile, other)
    const put = await runBerth(['put', otherFile, '--json', '--agent', a.url])
    assert.equal(put.code, 0, put.stderr)
    const { oid: otherOid } = JSON.parse(put.stdout.toString())
    const out = join(dir, 'other-copy.bin')
    const r = await runBerth(['get', otherOid, '--hint', a.hint, '--agent', b.url, '--order', 'any', '-o', out, '--json'])
    assert.equal(r.code, 0, r.stderr)
    assert.equal(JSON.parse(r.stdout.toString()).size, other.length)
    assert.ok(other.equals(await readFile(out)))
  })

  it('get of an unknown OID without hints: exit 3, ERR_NOT_FOUND, no output file', async () => {
    const unknown = oidOf(Buffer.from('never stored anywhere'))
    const out = join(dir, 'missing.bin')
    const r = await runBerth(['get', unknown, '--agent', b.url, '-o', out])
    assert.equal(r.code, 3)
    assert.match(r.stderr, /^berth: ERR_NOT_FOUND: .+\n$/)
    assert.equal(r.stdout.length, 0)
    await assert.rejects(stat(out), { code: 'ENOENT' })
    assert.deepEqual((await readdir(dir)).filter(n => n.includes('missing')), [])

    const j = await runBerth(['get', unknown, '--agent', b.url, '-o', out, '--json'])
    assert.equal(j.code, 3)
    assert.equal(JSON.parse(j.stdout.toString()).error.code, 'ERR_NOT_FOUND')
  })

  it('bad input: exit 2 with a one-line reason', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['get', 'not-an-oid', '--agent', b.url], /^berth: ERR_INVALID_OID: /],
      [['get', oid, '--hint', 'ftp://x', '--agent', b.url], /^berth: ERR_INVALID_HINT: /],
      [['get', oid, '--order', 'any', '--agent', b.url], /^berth: ERR_USAGE: .*-o FILE/],
      [['get', oid, '--order', 'sideways', '-o', join(dir, 'x')], /^berth: ERR_USAGE: /],
      [['get', oid, '-o', join(dir, 'no-such-dir', 'x'), '--agent', b.url], /^berth: ERR_BAD_OUTPUT: /],
      [['put', file, '--chunker', 'rabin', '--agent', a.url], /^berth: ERR_INVALID_CONFIG: /],
      [['put', dir, '--agent', a.url], /^berth: ERR_USAGE: .*not a regular file/],
      [['put'], /^berth: ERR_USAGE: missing required argument/],
      [['frobnicate'], /^berth: ERR_USAGE: unknown command/],
      [['cp', file, 'no-colon-here'], /^berth: ERR_USAGE: destination must be/]
    ]
    for (const [args, pattern] of cases) {
      const r = await runBerth(args)
      assert.equal(r.code, 2, `berth ${args.join(' ')}: ${r.stderr}`)
      assert.match(r.stderr, pattern)
      assert.equal(r.stderr.trim().split('\n').length, 1, r.stderr)
    }
  })

  it('a missing file is exit 3; an agent that is not there is exit 5', async () => {
    const missing = await runBerth(['put', join(dir, 'nope'), '--agent', a.url])
    assert.equal(missing.code, 3)
    assert.match(missing.stderr, /^berth: ERR_NOT_FOUND: /)
    const port = await freePort()
    const down = await runBerth(['status', '--agent', `http://127.0.0.1:${port}`])
    assert.equal(down.code, 5)
    assert.match(down.stderr, /^berth: ERR_UNREACHABLE: cannot reach the agent/)
  })

  it('status --json shows objects, usage and transfers; BERTH_AGENT picks the agent', async () => {
    const r = await runBerth(['status', '--json'], { env: { BERTH_AGENT: b.url } })
    assert.equal(r.code, 0, r.stderr)
    const s = JSON.parse(r.stdout.toString())
    assert.equal(s.agent.url, b.url)
    assert.ok(s.usage.objects >= 2)
    assert.ok(s.usage.bytes >= SIZE)
    assert.ok(Array.isArray(s.transfers))
    assert.ok(s.objects.some((o: { oid: string }) => o.oid === oid))

    const human = await runBerth(['status', '--agent', b.url])
    assert.equal(human.code, 0, human.stderr)
    assert.match(human.stdout.toString(), /objects\s+\d+/)
    assert.ok(human.stdout.toString().includes(oid))
  })

  it('agent --config: a bad file is ERR_INVALID_CONFIG, a good one is used', async () => {
    const bad = join(dir, 'bad.json')
    await writeFile(bad, JSON.stringify({ listen: '127.0.0.1:0', color: 'blue' }))
    const r = await runBerth(['agent', '--config', bad])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /^berth: ERR_INVALID_CONFIG: .*color/)

    const good = join(dir, 'good.json')
    await writeFile(good, JSON.stringify({ listen: '127.0.0.1:0', peerListen: '127.0.0.1:0', store: 'store-config', advertise: 'example.test:9999' }))
    const agent = await startAgentProcess({ extra: ['--config', good] })
    try {
      assert.equal(agent.hint, 'berth://example.test:9999')
      // A relative store path is taken relative to the config file.
      assert.ok((await stat(join(dir, 'store-config'))).isDirectory())
    } finally {
      assert.equal(await agent.stop(), 0)
    }
  })

  it('agent --config plugins: the pipeline is composed from the file; a bad plugin spec is ERR_INVALID_CONFIG', async () => {
    const bad = join(dir, 'bad-plugins.json')
    await writeFile(bad, JSON.stringify({ plugins: [{ type: 'multipath', paths: [{ type: 'carrier-pigeon' }] }] }))
    const r = await runBerth(['agent', '--config', bad])
    assert.equal(r.code, 2)
    assert.match(r.stderr, /^berth: ERR_INVALID_CONFIG: .*plugins/)
    const noPaths = join(dir, 'no-paths.json')
    await writeFile(noPaths, JSON.stringify({ plugins: [{ type: 'multipath', perPath: 0, paths: [] }] }))
    assert.equal((await runBerth(['agent', '--config', noPaths])).code, 2)

    const good = join(dir, 'plugins.json')
    await writeFile(good, JSON.stringify({ plugins: [{ type: 'multipath', perPath: 4, borrow: false, paths: [{ type: 'peer' }, { type: 'portable', dir: 'usb' }] }] }))
    await mkdir(join(dir, 'usb'), { recursive: true })
    const agent = await startAgentProcess({ extra: ['--config', good] })
    try {
      const status = await (await fetch(`${agent.url}/v1/status`)).json() as { plugins: Array<{ name: string }> }
      assert.deepEqual(status.plugins.map(p => p.name), ['multipath'])
      // The portable disk (relative to the config file) is searched by a get with no hint at all.
      const res = await fetch(`${agent.url}/v1/objects/${oidOf(Buffer.from('on no disk'))}`)
      const body = await res.json() as { error: { code: string, message: string } }
      assert.equal(res.status, 502, JSON.stringify(body))
      assert.equal(body.error.code, 'ERR_NO_SOURCE')
      assert.match(body.error.message, /usb/)
    } finally {
      assert.equal(await agent.stop(), 0)
    }
  })

  it('start runs a node with its store under --dir and stops cleanly on SIGTERM', async () => {
    const home = join(dir, 'node')
    const child = spawn(process.execPath, [BERTH_BIN, 'start', '--json', '--dir', home, '--listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', '--locker-listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let err = ''
    child.stderr.setEncoding('utf8').on('data', (s: string) => { err += s })
    const stop = stopper(child)
    try {
      const info = await firstJsonLine(child, () => err) as { dir: string, agent: { url: string, hint: string }, locker: { url: string, name: string, ownerKey: string } }
      assert.equal(info.dir, home)
      // The locker server runs beside the agent, with a locker for this user and its owner key.
      const issued = await runBerth(['token', 'issue', '--locker', info.locker.name, '--key', info.locker.ownerKey, '--ops', 'status'])
      assert.equal(issued.code, 0, issued.stderr)
      const status = await fetch(`${info.locker.url}/v1/lockers/${info.locker.name}/status`, { headers: { authorization: `Bearer ${issued.stdout.toString().trim()}` } })
      assert.equal(status.status, 200)
      assert.equal(((await status.json()) as { locker: string }).locker, info.locker.name)
      const put = await runBerth(['put', file, '--agent', info.agent.url])
      assert.equal(put.code, 0, put.stderr)
      assert.equal(put.stdout.toString().split('\n')[0], oid)
      assert.ok((await stat(join(home, 'agent'))).isDirectory())
    } finally {
      assert.equal(await stop(), 0, err)
    }

    // Without --json a person gets the URLs and something to try.
    const human = spawn(process.execPath, [BERTH_BIN, 'start', '--dir', home, '--listen', '127.0.0.1:0', '--peer-listen', '127.0.0.1:0', '--locker-listen', '127.0.0.1:0'], { stdio: ['ignore', 'pipe', 'pipe'] })
    let text = ''
    await new Promise<void>((resolve, reject) => {
      human.stdout.setEncoding('utf8').on('data', (s: string) => { text += s; if (text.includes('berth get OID')) resolve() })
      human.once('exit', () => reject(new Error('start exited early')))
    })
    assert.equal(await stopper(human)(), 0)
    assert.match(text, /agent\s+http:\/\/127\.0\.0\.1:\d+/)
    assert.match(text, /try:\n\s+berth put FILE/)
  })
})
