/**
 * `berth cp` against a real OpenSSH server on loopback: control goes over ssh (the far side
 * runs `berth get`), data goes agent to agent. Two agents, separate processes and stores; the
 * "remote" one is the agent the ssh-run berth talks to.
 */
import { after, before, describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { type AgentProcess, BERTH_BIN, oidOf, pseudoRandom, runBerth, startAgentProcess } from './_berth-cli.ts'
import { ensureSshd, type Sshd, startSshd } from './_sshd.ts'

const unavailable = ensureSshd()
if (unavailable !== undefined) {
  console.error(`\n!!!!!!!! SKIPPING test/interop/ssh-cp.test.ts: ${unavailable} !!!!!!!!\n`)
}

describe('berth cp over a real sshd', { skip: unavailable !== undefined ? `SKIPPED: ${unavailable}` : false, timeout: 180_000 }, () => {
  let dir: string
  let sshd: Sshd | undefined
  let local: AgentProcess | undefined
  let remote: AgentProcess | undefined
  let sshOpts: string[]
  // PATH over ssh may not find node: the remote berth is this very node and checkout.
  const remoteBerth = `${process.execPath} ${BERTH_BIN}`

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-ssh-'))
    ;[sshd, local, remote] = await Promise.all([
      startSshd(join(dir, 'sshd')),
      startAgentProcess({ store: join(dir, 'local-store') }),
      startAgentProcess({ store: join(dir, 'remote-store') })
    ])
    sshOpts = sshd.clientArgs.map(a => `--ssh-opt=${a}`)
  })

  after(async () => {
    await Promise.allSettled([sshd?.stop(), local?.stop(), remote?.stop()])
    await rm(dir, { recursive: true, force: true })
  })

  function cpArgs (src: string, dst: string, extra: string[] = []): string[] {
    return ['cp', src, `root@127.0.0.1:${dst}`, '--agent', local!.url, ...sshOpts, '--remote-berth', remoteBerth, '--remote-agent', remote!.url, ...extra]
  }

  it('copies a file: identical bytes at the destination, pulled by the remote agent', async () => {
    const data = pseudoRandom(4 * 1024 * 1024 + 4321, 3)
    const src = join(dir, 'source file.bin')
    await writeFile(src, data)
    const dst = join(dir, "copy 'quoted' $HOME.bin")
    const r = await runBerth(cpArgs(src, dst))
    assert.equal(r.code, 0, r.stderr)
    assert.ok(r.stdout.toString().startsWith(`${oidOf(data)} → root@127.0.0.1:${dst}`), r.stdout.toString())
    assert.ok(data.equals(await readFile(dst)))

    // The bytes went into the remote agent's store: it holds the object now.
    const status = await runBerth(['status', '--json', '--agent', remote!.url])
    assert.ok(JSON.parse(status.stdout.toString()).objects.some((o: { oid: string }) => o.oid === oidOf(data)))
  })

  it('--json reports the copy; a destination ending in / keeps the file name', async () => {
    const data = pseudoRandom(1024 * 1024, 4)
    const src = join(dir, 'named.bin')
    await writeFile(src, data)
    const r = await runBerth(cpArgs(src, `${dir}/`, ['--json']))
    assert.equal(r.code, 0, r.stderr)
    const j = JSON.parse(r.stdout.toString())
    assert.equal(j.oid, oidOf(data))
    assert.equal(j.size, data.length)
    assert.equal(j.host, 'root@127.0.0.1')
    assert.equal(j.path, join(dir, 'named.bin'))
    assert.deepEqual(j.hints.map((h: { uri: string }) => h.uri), [local!.hint])
  })

  it('a bad remote directory fails with the remote reason, and leaves nothing behind', async () => {
    const src = join(dir, 'small.bin')
    await writeFile(src, pseudoRandom(100_000, 5))
    const missingDir = join(dir, 'no', 'such', 'dir')
    const r = await runBerth(cpArgs(src, join(missingDir, 'dst.bin')))
    assert.equal(r.code, 5, r.stderr)
    assert.match(r.stderr, /^berth: ERR_REMOTE: root@127\.0\.0\.1: remote berth get exited with 2: ERR_BAD_OUTPUT: .*does not exist\n$/)
    await assert.rejects(stat(missingDir), { code: 'ENOENT' })

    const j = await runBerth(cpArgs(src, join(missingDir, 'dst.bin'), ['--json']))
    assert.equal(j.code, 5)
    const e = JSON.parse(j.stdout.toString()).error
    assert.equal(e.code, 'ERR_REMOTE')
    assert.equal(e.remoteExitCode, 2)
    assert.equal(e.remoteCode, 'ERR_BAD_OUTPUT')
  })

  it('a remote berth that does not exist, and an unreachable host, are named as such', async () => {
    const src = join(dir, 'small.bin')
    const r = await runBerth(['cp', src, `root@127.0.0.1:${join(dir, 'x.bin')}`, '--agent', local!.url, ...sshOpts, '--remote-berth', '/nonexistent/berth'])
    assert.equal(r.code, 5)
    assert.match(r.stderr, /^berth: ERR_REMOTE: .*not found \(exit 127; set --remote-berth\)/)

    // ssh keeps the first -p it is given, so the port is swapped rather than appended.
    const portAt = sshd!.clientArgs.indexOf('-p')
    const closedPort = sshd!.clientArgs.map((a, i) => i === portAt + 1 ? '1' : a)
    const closed = await runBerth(['cp', src, `root@127.0.0.1:${join(dir, 'y.bin')}`, '--agent', local!.url, ...closedPort.map(a => `--ssh-opt=${a}`), '--remote-berth', remoteBerth])
    assert.equal(closed.code, 5)
    assert.match(closed.stderr, /^berth: ERR_REMOTE: root@127\.0\.0\.1: ssh failed \(exit 255\)/)
    assert.deepEqual((await readdir(dir)).filter(n => n === 'x.bin' || n === 'y.bin'), [])
  })
})
