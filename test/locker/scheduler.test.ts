/**
 * The bandwidth scheduler (SAILOR's resource model): weighted, work-conserving shares at every
 * level of users → applications → flows, floors (with admission control), bwMax caps, aborts,
 * no banked credit after idling, and the cost of a grant with 2,000 flows. Every test but the
 * last runs on a virtual clock, so shares are exact and nothing depends on the machine's load;
 * the last one proves the real timers pace too.
 */
import { describe, it } from 'node:test'
import assert from 'node:assert/strict'
import { AbortedError, ClosedError, OverloadedError, type BerthError } from '../../src/core/errors.ts'
import { DEFAULT_QUANTUM, Scheduler, type Flow, type FlowSpec, type SchedulerOptions } from '../../src/locker/scheduler.ts'

const KiB = 1024
const MiB = 1024 * KiB
const GRANT = 64 * KiB
const C = 64 * MiB // bytes/s: 1,024 grants of 64 KiB per virtual second

/** Lets every pending promise continuation run (the flows' loops ask again). */
const settle = async (): Promise<void> => { await new Promise<void>(resolve => setImmediate(resolve)) }

/** A clock that moves only when told to; with a granularity, timers fire on its grid as real ones do on milliseconds. */
class VirtualClock {
  time = 0
  timersSet = 0
  private readonly timers: Array<{ at: number, fn: () => void }> = []
  constructor (private readonly granularityMs = 0) {}

  readonly now = (): number => this.time
  readonly setTimer = (fn: () => void, ms: number): unknown => {
    let at = this.time + ms
    if (this.granularityMs > 0) at = Math.ceil(at / this.granularityMs) * this.granularityMs
    const timer = { at, fn }
    this.timers.push(timer)
    this.timersSet++
    return timer
  }

  readonly clearTimer = (timer: unknown): void => {
    const i = this.timers.indexOf(timer as { at: number, fn: () => void })
    if (i >= 0) this.timers.splice(i, 1)
  }

  get pendingTimers (): number { return this.timers.length }

  /** Runs every timer due within `ms`, in order, letting the flows react after each. */
  async advance (ms: number): Promise<void> {
    const until = this.time + ms
    for (;;) {
      await settle()
      let next: { at: number, fn: () => void } | undefined
      for (const timer of this.timers) if (timer.at <= until && (next === undefined || timer.at < next.at)) next = timer
      if (next === undefined) break
      this.timers.splice(this.timers.indexOf(next), 1)
      this.time = Math.max(this.time, next.at)
      next.fn()
    }
    this.time = until
    await settle()
  }

  options (capacity: number, more: Partial<SchedulerOptions> = {}): SchedulerOptions {
    return { capacity, now: this.now, setTimer: this.setTimer, clearTimer: this.clearTimer, ...more }
  }
}

/** Keeps a flow always backlogged: it asks for `bytes` again as soon as it is granted. */
function saturate (flow: Flow, bytes = GRANT): { stop: () => void, done: Promise<void> } {
  let stopped = false
  const done = (async () => {
    while (!stopped) {
      try {
        await flow.acquire(bytes)
      } catch (err) {
        if ((err as BerthError).code === 'ERR_CLOSED') return
        throw err
      }
    }
  })()
  return { stop: () => { stopped = true }, done }
}

/** Opens flows per spec, keeps them all backlogged for `seconds` of virtual time, closes them; returns bytes/s per flow. */
async function run (clock: VirtualClock, scheduler: Scheduler, specs: FlowSpec[], seconds = 10): Promise<number[]> {
  const flows = specs.map(spec => scheduler.open(spec))
  const loops = flows.map(flow => saturate(flow))
  await clock.advance(seconds * 1000)
  const rates = flows.map(flow => flow.sent / seconds)
  for (const flow of flows) flow.close()
  await Promise.all(loops.map(async loop => { await loop.done }))
  return rates
}

function assertNear (actual: number, expected: number, tolerance: number, what: string): void {
  assert.ok(Math.abs(actual - expected) <= tolerance * expected,
    `${what}: ${(actual / MiB).toFixed(2)} MiB/s, expected ${(expected / MiB).toFixed(2)} MiB/s ± ${tolerance * 100}%`)
}

const sum = (values: number[]): number => values.reduce((a, b) => a + b, 0)

describe('bandwidth scheduler', () => {
  it('shares capacity between backlogged users by weight (1:2:3)', async () => {
    const clock = new VirtualClock()
    const scheduler = new Scheduler(clock.options(C))
    const flows = [1, 2, 3].map(w => scheduler.open({ user: `u${w}`, userWeight: w }))
    const loops = flows.map(flow => saturate(flow))
    await clock.advance(10_000)
    const rates = flows.map(flow => flow.sent / 10)
    assertNear(rates[0], C / 6, 0.05, 'weight 1')
    assertNear(rates[1], C * 2 / 6, 0.05, 'weight 2')
    assertNear(rates[2], C * 3 / 6, 0.05, 'weight 3')
    assert.ok(sum(rates) >= 0.95 * C, 'work-conserving')
    // never faster than the capacity, beyond the bucket it may start with
    assert.ok(sum(rates) * 10 <= C * 10 + C / 20 + 3 * GRANT)

    const snapshot = scheduler.snapshot()
    assert.equal(snapshot.capacity, C)
    assert.equal(snapshot.flows, 3)
    assertNear(snapshot.rate, C, 0.05, 'reported total rate')
    for (const [i, w] of [1, 2, 3].entries()) {
      const user = snapshot.users.find(u => u.user === `u${w}`)!
      assert.equal(user.weight, w)
      assert.equal(user.flows, 1)
      assertNear(user.rate, C * w / 6, 0.1, `reported rate of u${w}`)
      assert.deepEqual(user.apps.map(a => [a.app, a.flows]), [['default', 1]])
      assertNear(user.apps[0].rate, rates[i], 0.1, `reported app rate of u${w}`)
    }
    for (const flow of flows) flow.close()
    await Promise.all(loops.map(async loop => { await loop.done }))
    assert.equal(scheduler.snapshot().flows, 0)
    assert.equal(clock.pendingTimers, 0, 'an idle scheduler keeps no timer')
  })

  it('gives a lone user nearly all the capacity (work-conserving)', async () => {
    const clock = new VirtualClock()
    const rates = await run(clock, new Scheduler(clock.options(C)), [{ user: 'alone', userWeight: 0.01 }])
    assert.ok(rates[0] >= 0.95 * C, `lone user got ${(rates[0] / C * 100).toFixed(1)}% of capacity`)
  })

  it('shares between users by weight, not by how many flows each opens', async () => {
    const clock = new VirtualClock()
    const specs: FlowSpec[] = [...Array.from({ length: 10 }, () => ({ user: 'many' })), { user: 'one' }]
    const rates = await run(clock, new Scheduler(clock.options(C)), specs)
    assertNear(sum(rates.slice(0, 10)), C / 2, 0.05, 'user with 10 flows')
    assertNear(rates[10], C / 2, 0.05, 'user with 1 flow')
  })

  it('guarantees a user floor above its weighted share; the others split the rest by weight', async () => {
    const clock = new VirtualClock()
    const rates = await run(clock, new Scheduler(clock.options(C)), [
      { user: 'floored', userWeight: 1, userFloor: 0.3 * C },
      { user: 'b', userWeight: 10 },
      { user: 'c', userWeight: 10 }
    ])
    assert.ok(rates[0] >= 0.95 * 0.3 * C, `floored user got ${(rates[0] / C * 100).toFixed(1)}% of capacity`)
    // max(floor, weighted share), not floor + share: it gets its floor, no more
    assertNear(rates[0], 0.3 * C, 0.05, 'floored user')
    assertNear(rates[1], 0.35 * C, 0.05, 'b')
    assertNear(rates[2], 0.35 * C, 0.05, 'c')
    assert.ok(sum(rates) >= 0.95 * C)
  })

  it('guarantees a flow floor (bwMin) among heavier flows of the same application', async () => {
    const clock = new VirtualClock()
    const rates = await run(clock, new Scheduler(clock.options(C)), [
      { user: 'u', weight: 1, floor: 0.3 * C },
      { user: 'u', weight: 10 },
      { user: 'u', weight: 10 }
    ])
    assertNear(rates[0], 0.3 * C, 0.05, 'floored flow')
    assertNear(rates[1], 0.35 * C, 0.05, 'second flow')
    assertNear(rates[2], 0.35 * C, 0.05, 'third flow')
  })

  it('gives a floored entity its weighted share when that is larger (max, not sum)', async () => {
    const clock = new VirtualClock()
    const rates = await run(clock, new Scheduler(clock.options(C)), [
      { user: 'floored', userFloor: 0.1 * C },
      { user: 'other' }
    ])
    assertNear(rates[0], C / 2, 0.05, 'floored user')
    assertNear(rates[1], C / 2, 0.05, 'other user')
  })

  it('holds a flow to its bwMax and gives what it leaves to the others', async () => {
    const clock = new VirtualClock()
    const rates = await run(clock, new Scheduler(clock.options(C)), [
      { user: 'capped', userWeight: 10, max: 0.2 * C },
      { user: 'b' },
      { user: 'c' }
    ])
    assertNear(rates[0], 0.2 * C, 0.05, 'capped flow')
    assert.ok(rates[0] <= 0.2 * C * 1.01, 'the cap is not exceeded beyond its bucket')
    assertNear(rates[1], 0.4 * C, 0.05, 'b')
    assertNear(rates[2], 0.4 * C, 0.05, 'c')
    assert.ok(sum(rates) >= 0.95 * C, 'work-conserving')
  })

  it('splits a user by application weight, and an application by bwWeight', async () => {
    const clock = new VirtualClock()
    const rates = await run(clock, new Scheduler(clock.options(C)), [
      { user: 'u', app: 'backup', appWeight: 1 },
      { user: 'u', app: 'video', appWeight: 3, weight: 1 },
      { user: 'u', app: 'video', appWeight: 3, weight: 2 }
    ])
    assertNear(rates[0], C / 4, 0.05, 'app weight 1')
    assertNear(rates[1], C / 4, 0.05, 'app weight 3, flow weight 1')
    assertNear(rates[2], C / 2, 0.05, 'app weight 3, flow weight 2')
  })

  it('refuses floors that cannot be guaranteed, and frees a floor when its flow closes', () => {
    const clock = new VirtualClock()
    const capacity = 1_000_000
    const scheduler = new Scheduler(clock.options(capacity, { retryAfter: 3 }))
    const first = scheduler.open({ user: 'a', floor: 600_000 })
    assert.throws(() => scheduler.open({ user: 'b', floor: 500_000 }), (err: unknown) => {
      assert.ok(err instanceof OverloadedError)
      assert.equal(err.code, 'ERR_OVERLOADED')
      assert.equal(err.status, 503)
      assert.equal(err.retryAfter, 3)
      return true
    })
    // a user floor is reserved when the user's first flow opens
    assert.throws(() => scheduler.open({ user: 'b', userFloor: 500_000 }), OverloadedError)
    assert.deepEqual(scheduler.snapshot().users.map(u => u.user), ['a'], 'a refused user leaves nothing behind')
    const unfloored = scheduler.open({ user: 'b' })
    first.close()
    first.close() // idempotent
    assert.equal(scheduler.snapshot().reserved, 0)
    const second = scheduler.open({ user: 'b', floor: 500_000 })
    assert.equal(scheduler.snapshot().reserved, 500_000)
    second.close()
    unfloored.close()

    // flow floors nest inside their user's floor: the user reserves the larger of the two
    const u1 = scheduler.open({ user: 'u', userFloor: 500_000, floor: 200_000 })
    const u2 = scheduler.open({ user: 'u', userFloor: 500_000, floor: 200_000 })
    assert.equal(scheduler.snapshot().reserved, 500_000)
    const u3 = scheduler.open({ user: 'u', userFloor: 500_000, floor: 200_000 })
    assert.equal(scheduler.snapshot().reserved, 600_000)
    assert.throws(() => scheduler.open({ user: 'v', userFloor: 500_000 }), OverloadedError)
    u3.close()
    u2.close()
    assert.equal(scheduler.snapshot().reserved, 500_000)
    u1.close()
    assert.equal(scheduler.snapshot().reserved, 0)
    scheduler.open({ user: 'v', userFloor: 1_000_000 }).close()
  })

  it('rejects an aborted acquire with an AbortedError; the flow keeps working in order', async () => {
    const clock = new VirtualClock()
    const scheduler = new Scheduler(clock.options(MiB))
    const flow = scheduler.open({ user: 'u' })
    await flow.acquire(4 * MiB) // granted at once, 4 s of debt
    const order: string[] = []
    const controller = new AbortController()
    const aborted = flow.acquire(GRANT, controller.signal)
    const later = flow.acquire(GRANT).then(() => order.push('later'))
    controller.abort()
    await assert.rejects(aborted, (err: unknown) => err instanceof AbortedError && err.code === 'ERR_ABORTED')
    // a reason that is already a BerthError is the rejection itself
    const reason = new AbortedError('client went away')
    const withReason = new AbortController()
    const pending = flow.acquire(GRANT, withReason.signal)
    withReason.abort(reason)
    await assert.rejects(pending, (err: unknown) => err === reason)
    await assert.rejects(flow.acquire(GRANT, AbortSignal.abort()), AbortedError)

    const last = flow.acquire(GRANT).then(() => order.push('last'))
    // 4 MiB at 1 MiB/s, less the bucket the scheduler started with (128 KiB = 125 ms)
    await clock.advance(3_800)
    assert.deepEqual(order, [], 'still paying for the 4 MiB')
    await clock.advance(1_000)
    await Promise.all([later, last])
    assert.deepEqual(order, ['later', 'last'])
    assert.equal(flow.sent, 4 * MiB + 2 * GRANT, 'aborted acquires are not counted')

    const stranded = flow.acquire(4 * MiB).then(async () => await flow.acquire(GRANT))
    flow.close()
    await assert.rejects(stranded, ClosedError)
    await assert.rejects(flow.acquire(GRANT), ClosedError)
    assert.equal(clock.pendingTimers, 0)
  })

  it('banks no credit while idle: a returning flow gets its share, not a burst', async () => {
    const clock = new VirtualClock()
    const scheduler = new Scheduler(clock.options(C))
    const a = scheduler.open({ user: 'a' })
    const b = scheduler.open({ user: 'b' })
    let loopA = saturate(a)
    const loopB = saturate(b)
    await clock.advance(2_000)
    loopA.stop()
    await clock.advance(1) // its last request is granted
    await loopA.done
    await clock.advance(5_000) // b alone
    const aBefore = a.sent
    const bBefore = b.sent
    loopA = saturate(a)
    await clock.advance(500)
    const aGot = a.sent - aBefore
    const bGot = b.sent - bBefore
    const bucket = C / 20 + GRANT
    assert.ok(aGot <= C * 0.5 / 2 + bucket, `returning flow got ${(aGot / MiB).toFixed(1)} MiB in 0.5 s`)
    assertNear(aGot / 0.5, C / 2, 0.1, 'returning flow')
    assertNear(bGot / 0.5, C / 2, 0.1, 'steady flow')
    a.close()
    b.close()
    await Promise.all([loopA.done, loopB.done])

    // the whole scheduler idle for 5 s, then one flow: no more than the bucket beyond the rate
    await clock.advance(5_000)
    const c = scheduler.open({ user: 'c' })
    const loopC = saturate(c)
    await clock.advance(100)
    assert.ok(c.sent <= C * 0.1 + bucket, `after idling: ${(c.sent / MiB).toFixed(1)} MiB in 0.1 s`)
    c.close()
    await loopC.done
  })

  it('grants a request larger than the bucket at once, then makes the flow wait it off', async () => {
    const clock = new VirtualClock()
    const scheduler = new Scheduler(clock.options(MiB))
    const flow = scheduler.open({ user: 'u' })
    await flow.acquire(8 * MiB)
    let granted = false
    const next = flow.acquire(DEFAULT_QUANTUM).then(() => { granted = true })
    await clock.advance(7_800)
    assert.equal(granted, false)
    await clock.advance(300)
    await next
    assert.equal(granted, true)
    flow.close()
  })

  it('follows a capacity change', async () => {
    const clock = new VirtualClock()
    const scheduler = new Scheduler(clock.options(C / 2))
    const flow = scheduler.open({ user: 'u' })
    const loop = saturate(flow)
    await clock.advance(5_000)
    const halfway = flow.sent
    scheduler.setCapacity(C)
    await clock.advance(5_000)
    assertNear(halfway / 5, C / 2, 0.05, 'before')
    assertNear((flow.sent - halfway) / 5, C, 0.05, 'after')
    scheduler.close()
    await loop.done
    assert.throws(() => scheduler.open({ user: 'u' }), ClosedError)
  })

  it('does not pace with an infinite capacity (no timers), but still counts and still caps', async () => {
    const clock = new VirtualClock()
    const scheduler = new Scheduler(clock.options(Infinity))
    const flow = scheduler.open({ user: 'u', floor: 10 * MiB })
    for (let i = 0; i < 1000; i++) await flow.acquire(GRANT)
    assert.equal(flow.sent, 1000 * GRANT)
    assert.equal(clock.timersSet, 0)
    assert.ok(scheduler.snapshot().rate > 0)

    const capped = scheduler.open({ user: 'u', max: MiB })
    const loop = saturate(capped)
    await clock.advance(4_000)
    assert.ok(capped.sent <= 4 * MiB + MiB / 20 + GRANT, `capped flow sent ${(capped.sent / MiB).toFixed(2)} MiB in 4 s`)
    assert.ok(capped.sent >= 3.9 * MiB)
    scheduler.close()
    await loop.done
  })

  it('keeps a grant cheap with 2,000 backlogged flows (200,000 grants)', async (t) => {
    // 1 ms timer grid, as real timers: each wake-up grants ~100 flows at once
    const clock = new VirtualClock(1)
    const capacity = 100_000 * GRANT
    const scheduler = new Scheduler(clock.options(capacity))
    const specs: FlowSpec[] = []
    for (let u = 0; u < 20; u++) for (let a = 0; a < 2; a++) for (let f = 0; f < 50; f++) specs.push({ user: `user${u}`, app: `app${a}` })
    const flows = specs.map(spec => scheduler.open(spec))
    const started = process.cpuUsage()
    const loops = flows.map(flow => saturate(flow))
    await clock.advance(2_000)
    const cpu = process.cpuUsage(started)
    const cpuSeconds = (cpu.user + cpu.system) / 1e6
    const grants = sum(flows.map(f => f.sent)) / GRANT
    assert.ok(grants >= 200_000, `${grants} grants`)
    assert.ok(cpuSeconds < 2, `${grants} grants took ${cpuSeconds.toFixed(2)} s of CPU`)
    const mean = sum(flows.map(f => f.sent)) / flows.length
    for (const flow of flows) assertNear(flow.sent, mean, 0.1, 'one of 2,000 equal flows')
    t.diagnostic(`${grants} grants to 2,000 flows: ${cpuSeconds.toFixed(2)} s CPU (scheduler, promises and test loop)`)
    scheduler.close()
    await Promise.all(loops.map(async loop => { await loop.done }))
  })

  it('paces with the real clock and timers (20 MB/s, weights 1:2:3, 1.5 s)', async (t) => {
    const capacity = 20_000_000
    const scheduler = new Scheduler({ capacity })
    const flows = [1, 2, 3].map(weight => scheduler.open({ user: 'u', weight }))
    const started = performance.now()
    const loops = flows.map(flow => saturate(flow))
    await new Promise(resolve => setTimeout(resolve, 1500))
    const seconds = (performance.now() - started) / 1000
    const sent = flows.map(f => f.sent)
    scheduler.close()
    await Promise.all(loops.map(async loop => { await loop.done }))
    const total = sum(sent)
    t.diagnostic(`real clock: ${(total / seconds / 1e6).toFixed(1)} MB/s, shares ${sent.map(s => (s / total * 100).toFixed(1) + '%').join(' ')}`)
    for (const [i, weight] of [1, 2, 3].entries()) {
      const share = sent[i] / total
      assert.ok(Math.abs(share - weight / 6) <= 0.15, `weight ${weight}: ${(share * 100).toFixed(1)}% of bytes`)
    }
    assert.ok(total <= capacity * seconds + capacity / 20 + 3 * GRANT, `${total} bytes in ${seconds.toFixed(2)} s is above the capacity`)
    assert.ok(total >= 0.5 * capacity * seconds, `${total} bytes in ${seconds.toFixed(2)} s is far below the capacity`)
  })
})
