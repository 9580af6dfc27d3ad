/**
 * What `berth cp` hands to ssh: the destination parsed safely, and a remote command line whose
 * every word reaches the remote berth exactly as given — whatever quotes, spaces or `$` it holds.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { spawnSync } from 'node:child_process'
import { parseRemoteTarget, remoteGetCommand, shellQuote } from '../../src/apps/cp.ts'

describe('cp arguments', () => {
  it('parses [USER@]HOST:PATH, with [v6] hosts', () => {
    assert.deepEqual(parseRemoteTarget('host:/tmp/x'), { host: 'host', path: '/tmp/x' })
    assert.deepEqual(parseRemoteTarget('alice@host.example:rel/x y'), { host: 'alice@host.example', path: 'rel/x y' })
    assert.deepEqual(parseRemoteTarget('root@[::1]:/d/f'), { host: 'root@::1', path: '/d/f' })
    assert.deepEqual(parseRemoteTarget('h:a:b'), { host: 'h', path: 'a:b' })
  })

  it('refuses what is not a remote file, and hosts ssh would read as options', () => {
    for (const bad of ['/local/path', 'host:', 'host:-', '-oProxyCommand=touch /tmp/pwned:x', 'user@-x:y', '@host:x', '']) {
      assert.throws(() => parseRemoteTarget(bad), { code: 'ERR_USAGE' }, bad)
    }
  })

  it('quotes words so a POSIX shell gives them back unchanged', () => {
    const words = ['plain', '', 'two words', "it's", '$HOME', '`id`', '$(id)', 'a"b', '\\n', 'x;y|z&', '*', '~/x', 'new\nline', "''"]
    const script = 'for w in "$@"; do printf "%s\\0" "$w"; done'
    const r = spawnSync('/bin/sh', ['-c', `set -- ${words.map(shellQuote).join(' ')}; ${script}`], { encoding: 'utf8' })
    assert.equal(r.status, 0, r.stderr)
    assert.deepEqual(r.stdout.split('\0').slice(0, -1), words)
  })

  it('builds the remote get: berth command verbatim, the rest quoted; ~/ means home', () => {
    const hints = [{ uri: 'berth://10.0.0.1:4651', priority: 0, weight: 1 }, { uri: 'berth://b:1', priority: 1, weight: 5 }]
    assert.equal(
      remoteGetCommand('node /opt/berth/bin/berth.js', 'bafkreiabc', hints, "~/my file's", 'http://127.0.0.1:4650'),
      "node /opt/berth/bin/berth.js get bafkreiabc --hint berth://10.0.0.1:4651 --hint 'berth://b:1;priority=1;weight=5' -o 'my file'\\''s' --json --agent http://127.0.0.1:4650"
    )
  })
})
