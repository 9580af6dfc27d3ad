/**
 * The locker server's bandwidth scheduler: SAILOR's resource model for one bandwidth resource.
 *
 * A resource of capacity C bytes/s is shared in a tree: users (the locker's subscription weight,
 * optional floor) → applications of a user (weight per app) → flows (one per connection or
 * request: the resource token's bwWeight, optional floor bwMin, optional cap bwMax). Entity `a`
 * gets max(U_a, C·w_a / Σ_active w_b): its floor, or its weighted share among the siblings that
 * want to send now, whichever is larger — capped by bwMax, and work-conserving (what an idle or
 * capped entity leaves goes to the others).
 *
 * How (each rule's reason is beside its code):
 *  - One global pacer (a GCRA, i.e. a token bucket kept as one timestamp) releases bytes at C.
 *    Each time it allows a grant, the grant goes to one backlogged flow chosen below; a request
 *    larger than the bucket is still granted and the pacer goes into debt, so size cannot starve.
 *  - Floors first, like HTB's assured rate: every floored entity has its own pacer at its floor
 *    rate; the backlogged one whose pacer is furthest behind, if any is ready, gets the grant.
 *  - Otherwise weights: start-time fair queuing at every level. Each node keeps a virtual time
 *    (bytes received / weight); from the root down, the backlogged child with the least virtual
 *    time is taken. Children sit in a min-heap per parent, so a grant costs O(depth · log
 *    siblings), not a scan of all flows (a server may hold thousands).
 *  - bwMax: a capped flow has its own pacer at its cap and leaves the heaps while that is in
 *    debt; one timer (the earliest of the global pacer and the capped flows) wakes the scheduler.
 * Grants are charged to every pacer and virtual time on their path whichever rule chose them, so
 * floors and weights combine as max(), not as a sum.
 */
import { AbortedError, BadRequestError, BerthError, ClosedError, InvalidConfigError, OverloadedError } from '../core/errors.ts'

/** The grant size the server typically asks for (one socket write); sizes the default burst. */
export const DEFAULT_QUANTUM = 64 * 1024
/** How long the global pacer may save up when idle: absorbs late timers without bursting much. */
export const DEFAULT_BURST_SECONDS = 0.05
/** Retry-After for a flow refused by admission control: floors free up only as flows end. */
export const DEFAULT_RETRY_AFTER_SECONDS = 1
/** The application of a flow whose spec names none (as resource tokens do). */
export const DEFAULT_APP = 'default'
/** Time constant of the reported rates: "bytes/s over about the last second". */
export const RATE_TIME_CONSTANT_MS = 1000
/** An empty user or application is kept this long so its reported rate decays instead of vanishing. */
const IDLE_NODE_LINGER_MS = 10_000
/** Tolerance on clock comparisons: a virtual timer set for `t - now` ms may land an ulp early. */
const EPSILON_MS = 1e-6

export interface SchedulerOptions {
  /** bytes/s; Infinity = unpaced: acquire resolves at once (bwMax is still enforced) and bytes are still counted */
  capacity: number
  /** bytes the global pacer may save up while idle; default max(capacity · DEFAULT_BURST_SECONDS, 2 · DEFAULT_QUANTUM) */
  burst?: number
  /** Retry-After seconds on OverloadedError; default DEFAULT_RETRY_AFTER_SECONDS */
  retryAfter?: number
  /** ms clock; default performance.now (tests inject a virtual one) */
  now?: () => number
  /** default setTimeout, unref'd so a waiting flow never keeps the process alive */
  setTimer?: (fn: () => void, ms: number) => unknown
  clearTimer?: (timer: unknown) => void
}

export interface FlowSpec {
  /** the locker (SAILOR's user) */
  user: string
  /** the locker's subscription weight; default 1. The latest open() of a user sets it. */
  userWeight?: number
  /** bytes/s guaranteed to the user while any of its flows is open; default 0. The latest open() of a user sets it. */
  userFloor?: number
  /** default DEFAULT_APP */
  app?: string
  /** default 1; the latest open() of an app sets it */
  appWeight?: number
  /** the resource token's bwWeight; default 1 */
  weight?: number
  /** the resource token's bwMin, bytes/s; default 0 */
  floor?: number
  /** the resource token's bwMax, bytes/s; default Infinity */
  max?: number
}

export interface Flow {
  /**
   * Resolves when `bytes` may be sent. FIFO per flow. Rejects with the signal's reason (an
   * AbortedError unless the reason already is a BerthError) when aborted, with ClosedError when
   * the flow is closed first.
   */
  acquire: (bytes: number, signal?: AbortSignal) => Promise<void>
  /** Releases the flow's floor; pending acquires reject with ClosedError. Idempotent. */
  close: () => void
  /** bytes granted so far */
  readonly sent: number
  readonly closed: boolean
}

export interface AppSnapshot { app: string, weight: number, rate: number, flows: number }
export interface UserSnapshot { user: string, weight: number, floor: number, rate: number, flows: number, apps: AppSnapshot[] }
export interface SchedulerSnapshot {
  /** bytes/s */
  capacity: number
  /** bytes/s granted, over about the last second */
  rate: number
  /** bytes/s of floors promised to open flows and their users */
  reserved: number
  /** open flows */
  flows: number
  users: UserSnapshot[]
}

const ROOT = 0
const USER = 1
const APP = 2
const FLOW = 3

interface Waiter {
  bytes: number
  resolve: () => void
  reject: (err: unknown) => void
  signal: AbortSignal | undefined
  onAbort: (() => void) | undefined
}

/** A vertex of the sharing tree. Its fields are the state of the rules in the header. */
class Node {
  weight = 1
  /** bytes/s; 0 = none */
  floor = 0
  /** start-time fair queuing tag among its siblings: bytes received / weight, never behind the pack */
  vtime = 0
  /** as a parent: the start tag of its latest grant (SFQ's system virtual time), where a child that idled rejoins */
  vclock = 0
  /** as a parent: its children that have an eligible flow below, least vtime first */
  readonly backlog: NodeHeap | undefined
  siblingIndex = -1
  /** the floor pacer: ready when this is not after now */
  floorAt = 0
  floorIndex = -1
  /** the bwMax pacer (flows only) */
  capAt = 0
  throttleIndex = -1
  rate = 0
  rateAt = 0
  /** open flows below */
  flows = 0
  idleSince = 0
  /** as a user: the floors of its open flows, which nest inside the user's own floor */
  flowFloors = 0
  readonly children: Map<string, Node> | undefined

  constructor (readonly depth: number, readonly name: string, readonly parent: Node | undefined) {
    if (depth < FLOW) this.backlog = new NodeHeap('vtime', 'siblingIndex')
    if (depth < APP) this.children = new Map()
  }
}

type HeapKey = 'vtime' | 'floorAt' | 'capAt'
type HeapSlot = 'siblingIndex' | 'floorIndex' | 'throttleIndex'

/** A binary min-heap whose entries know their place, so a re-keyed or departing entry costs O(log n). */
class NodeHeap {
  private readonly items: Node[] = []
  constructor (private readonly key: HeapKey, private readonly slot: HeapSlot) {}

  get size (): number { return this.items.length }
  peek (): Node | undefined { return this.items[0] }

  push (node: Node): void {
    node[this.slot] = this.items.length
    this.items.push(node)
    this.up(this.items.length - 1)
  }

  remove (node: Node): void {
    const i = node[this.slot]
    if (i < 0) return
    node[this.slot] = -1
    const last = this.items.pop()!
    if (last === node) return
    this.items[i] = last
    last[this.slot] = i
    this.update(last)
  }

  /** After `node`'s key changed either way. */
  update (node: Node): void {
    const i = node[this.slot]
    if (i < 0) return
    if (i > 0 && node[this.key] < this.items[(i - 1) >> 1][this.key]) this.up(i)
    else this.down(i)
  }

  private up (i: number): void {
    const items = this.items
    const node = items[i]
    const key = node[this.key]
    while (i > 0) {
      const p = (i - 1) >> 1
      if (items[p][this.key] <= key) break
      items[i] = items[p]
      items[i][this.slot] = i
      i = p
    }
    items[i] = node
    node[this.slot] = i
  }

  private down (i: number): void {
    const items = this.items
    const n = items.length
    const node = items[i]
    const key = node[this.key]
    for (;;) {
      let c = 2 * i + 1
      if (c >= n) break
      if (c + 1 < n && items[c + 1][this.key] < items[c][this.key]) c++
      if (items[c][this.key] >= key) break
      items[i] = items[c]
      items[i][this.slot] = i
      i = c
    }
    items[i] = node
    node[this.slot] = i
  }
}

class FlowNode extends Node implements Flow {
  sent = 0
  closed = false
  readonly queue: Waiter[] = []
  constructor (private readonly engine: Engine, app: Node, readonly max: number, readonly reservedFloor: number) {
    super(FLOW, '', app)
  }

  acquire (bytes: number, signal?: AbortSignal): Promise<void> {
    if (this.closed) return Promise.reject(new ClosedError('bandwidth flow closed'))
    if (!(Number.isFinite(bytes) && bytes >= 0)) return Promise.reject(new BadRequestError(`cannot acquire ${bytes} bytes`))
    if (signal?.aborted === true) return Promise.reject(abortReason(signal))
    return this.engine.request(this, bytes, signal)
  }

  close (): void { this.engine.closeFlow(this) }
}

const RESOLVED = Promise.resolve()

function abortReason (signal: AbortSignal): BerthError {
  const reason: unknown = signal.reason
  return reason instanceof BerthError ? reason : new AbortedError('bandwidth wait aborted', { cause: reason })
}

function defaultSetTimer (fn: () => void, ms: number): unknown {
  // Ceil: a timer that fires early finds the pacer still in debt and only costs a wake-up.
  const timer = setTimeout(fn, Math.ceil(ms))
  timer.unref()
  return timer
}

class Engine {
  capacity = Infinity
  private paced = false
  /** how far the pacers may lag the clock: the credit an idle entity may save up */
  private windowMs = DEFAULT_BURST_SECONDS * 1000
  private globalAt = -Infinity
  readonly root = new Node(ROOT, '', undefined)
  private readonly floors = new NodeHeap('floorAt', 'floorIndex')
  private readonly throttled = new NodeHeap('capAt', 'throttleIndex')
  reserved = 0
  readonly open = new Set<FlowNode>()
  private timer: unknown = undefined
  private timerAt = Infinity
  private opensSincePrune = 0
  private stopped = false
  private readonly retryAfter: number
  readonly now: () => number
  private readonly setTimer: (fn: () => void, ms: number) => unknown
  private readonly clearTimer: (timer: unknown) => void
  private readonly onTimer = (): void => { this.timer = undefined; this.timerAt = Infinity; this.dispatch() }

  constructor (private readonly options: SchedulerOptions) {
    this.now = options.now ?? (() => performance.now())
    this.setTimer = options.setTimer ?? defaultSetTimer
    this.clearTimer = options.clearTimer ?? ((timer) => { clearTimeout(timer as NodeJS.Timeout) })
    this.retryAfter = options.retryAfter ?? DEFAULT_RETRY_AFTER_SECONDS
    if (!(this.retryAfter > 0 && Number.isFinite(this.retryAfter))) throw new InvalidConfigError(`scheduler retryAfter must be a positive number of seconds, not ${this.retryAfter}`)
    if (options.burst !== undefined && !(options.burst > 0 && Number.isFinite(options.burst))) throw new InvalidConfigError(`scheduler burst must be a positive number of bytes, not ${options.burst}`)
    this.setCapacity(options.capacity)
  }

  setCapacity (capacity: number): void {
    if (!(capacity > 0)) throw new InvalidConfigError(`scheduler capacity must be positive bytes/s or Infinity, not ${capacity}`)
    this.capacity = capacity
    this.paced = Number.isFinite(capacity)
    const burst = this.options.burst ?? Math.max(capacity * DEFAULT_BURST_SECONDS, 2 * DEFAULT_QUANTUM)
    this.windowMs = this.paced ? burst / capacity * 1000 : DEFAULT_BURST_SECONDS * 1000
    // Floors already admitted stay: refusing them now would break a promise mid-transfer. Only
    // new floors are refused until enough close.
    this.dispatch()
  }

  openFlow (spec: FlowSpec): FlowNode {
    if (this.stopped) throw new ClosedError('bandwidth scheduler closed')
    if (typeof spec?.user !== 'string') throw new BadRequestError('a flow needs a user')
    const userWeight = positive('userWeight', spec.userWeight)
    const appWeight = positive('appWeight', spec.appWeight)
    const weight = positive('weight', spec.weight)
    const userFloor = nonNegative('userFloor', spec.userFloor)
    const max = spec.max ?? Infinity
    if (!(max > 0)) throw new BadRequestError(`flow max must be positive bytes/s, not ${max}`)
    // A floor above the flow's own cap could never be used; reserving it would waste capacity.
    const floor = Math.min(nonNegative('floor', spec.floor), max)
    const appName = spec.app ?? DEFAULT_APP

    let user = this.root.children!.get(spec.user)
    const userIsNew = user === undefined
    user ??= new Node(USER, spec.user, this.root)
    // A user's guarantee covers its flows' floors when they fit in it: max, not sum.
    const before = user.flows > 0 ? Math.max(user.floor, user.flowFloors) : 0
    const after = Math.max(userFloor, user.flowFloors + floor)
    const reserved = this.reserved - before + after
    if (reserved > this.capacity * (1 + 1e-9)) {
      throw new OverloadedError(`bandwidth floors: ${Math.round(this.reserved)} of ${Math.round(this.capacity)} bytes/s are promised; ${Math.round(after - before)} more cannot be guaranteed`, this.retryAfter)
    }
    if (userIsNew) this.root.children!.set(spec.user, user)
    let app = user.children!.get(appName)
    if (app === undefined) { app = new Node(APP, appName, user); user.children!.set(appName, app) }

    this.reserved = reserved
    user.weight = userWeight
    this.setFloor(user, userFloor)
    user.flowFloors += floor
    user.flows++
    app.weight = appWeight
    app.flows++
    const flow = new FlowNode(this, app, max, floor)
    flow.weight = weight
    flow.floor = floor
    this.open.add(flow)
    if (++this.opensSincePrune >= 1024) this.prune(this.now())
    return flow
  }

  closeFlow (flow: FlowNode): void {
    if (flow.closed) return
    flow.closed = true
    const err = new ClosedError('bandwidth flow closed')
    for (const waiter of flow.queue.splice(0)) this.settle(waiter, err)
    this.leave(flow)
    this.schedule(this.now()) // no timer left behind for a scheduler with nothing to do
    const app = flow.parent!
    const user = app.parent!
    const before = Math.max(user.floor, user.flowFloors)
    user.flowFloors -= flow.reservedFloor
    user.flows--
    app.flows--
    const now = this.now()
    if (app.flows === 0) app.idleSince = now
    if (user.flows === 0) { user.idleSince = now; user.flowFloors = 0 }
    const after = user.flows > 0 ? Math.max(user.floor, user.flowFloors) : 0
    this.open.delete(flow)
    // Re-zero when nothing is open so rounding cannot creep into a refusal.
    this.reserved = this.open.size === 0 ? 0 : Math.max(0, this.reserved - before + after)
  }

  stop (): void {
    this.stopped = true
    for (const flow of [...this.open]) this.closeFlow(flow)
    this.cancelTimer()
  }

  request (flow: FlowNode, bytes: number, signal: AbortSignal | undefined): Promise<void> {
    if (!this.paced && flow.max === Infinity && flow.queue.length === 0) {
      // Unpaced: nothing to order, so no queue, heap or timer; only the counters.
      flow.sent += bytes
      const now = this.now()
      for (let n: Node | undefined = flow.parent; n !== undefined; n = n.parent) recordRate(n, bytes, now)
      return RESOLVED
    }
    return new Promise<void>((resolve, reject) => {
      const waiter: Waiter = { bytes, resolve, reject, signal, onAbort: undefined }
      if (signal !== undefined) {
        waiter.onAbort = () => { this.abandon(flow, waiter, abortReason(signal)) }
        signal.addEventListener('abort', waiter.onAbort, { once: true })
      }
      flow.queue.push(waiter)
      if (flow.queue.length === 1) {
        if (flow.capAt - this.now() > EPSILON_MS) this.throttled.push(flow)
        else this.join(flow)
      }
      this.dispatch()
    })
  }

  private abandon (flow: FlowNode, waiter: Waiter, err: unknown): void {
    const i = flow.queue.indexOf(waiter)
    if (i < 0) return
    flow.queue.splice(i, 1)
    this.settle(waiter, err)
    if (flow.queue.length === 0) { this.leave(flow); this.schedule(this.now()) }
  }

  private settle (waiter: Waiter, err?: unknown): void {
    if (waiter.onAbort !== undefined) waiter.signal!.removeEventListener('abort', waiter.onAbort)
    if (err === undefined) waiter.resolve()
    else waiter.reject(err)
  }

  /** Grants what the pacers allow now, then sleeps until the next pacer is ready. */
  dispatch (): void {
    const now = this.now()
    for (let flow = this.throttled.peek(); flow !== undefined && flow.capAt - now <= EPSILON_MS; flow = this.throttled.peek()) {
      this.throttled.remove(flow)
      this.join(flow as FlowNode)
    }
    const backlog = this.root.backlog!
    while (backlog.size > 0 && (!this.paced || this.globalAt - now <= EPSILON_MS)) {
      const floored = this.floors.peek()
      const owed = floored !== undefined && floored.floorAt - now <= EPSILON_MS ? floored : undefined
      let node: Node = owed ?? this.root
      while (node.depth < FLOW) node = node.backlog!.peek()!
      this.grant(node as FlowNode, now, owed)
    }
    this.schedule(now)
  }

  private grant (flow: FlowNode, now: number, owed: Node | undefined): void {
    const waiter = flow.queue.shift()!
    const bytes = waiter.bytes
    this.charge(flow, bytes, now, owed)
    // Debt allowed: a request bigger than the bucket is granted and paid for afterwards.
    if (this.paced) this.globalAt = Math.max(this.globalAt, now - this.windowMs) + bytes / this.capacity * 1000
    if (flow.max !== Infinity) flow.capAt = Math.max(flow.capAt, now - this.windowMs) + bytes / flow.max * 1000
    flow.sent += bytes
    this.settle(waiter)
    if (flow.queue.length === 0) this.leave(flow)
    else if (flow.capAt - now > EPSILON_MS) { this.leave(flow); this.throttled.push(flow) }
  }

  /** Bills `bytes` to the flow and every ancestor: virtual times, floor pacers, rates. */
  private charge (flow: FlowNode, bytes: number, now: number, owed: Node | undefined): void {
    let node: Node = flow
    for (let parent = node.parent; parent !== undefined; node = parent, parent = node.parent) {
      // A node served by its floor can be ahead of its siblings' virtual times. It is billed as
      // if it started from the least of them: it got that floor because its weighted share was
      // smaller, and a lead it would have to pay back later, after its floor is gone, would
      // starve it for as long as the floor had lasted. (For a weighted pick, node is the least.)
      const least = parent.backlog!.peek()!.vtime
      const start = node.vtime < least ? node.vtime : least
      node.vtime = start + bytes / node.weight
      if (start > parent.vclock) parent.vclock = start
      parent.backlog!.update(node)
      if (node.floor > 0) {
        const due = Math.max(node.floorAt, now - this.windowMs) + bytes / node.floor * 1000
        // Bytes it got by weight count toward its floor too (max, not sum) — but only up to one
        // grant ahead of now, so a long spell of plenty does not leave it without a floor later.
        node.floorAt = node === owed ? due : Math.max(node.floorAt, Math.min(due, now + bytes / node.floor * 1000))
        this.floors.update(node)
      }
      if (node.depth < FLOW) recordRate(node, bytes, now)
    }
    recordRate(this.root, bytes, now)
  }

  /** The flow has an eligible request: it and its idle ancestors enter their parents' heaps. */
  private join (flow: FlowNode): void {
    let node: Node = flow
    for (let parent = node.parent; parent !== undefined; node = parent, parent = node.parent) {
      const heap = parent.backlog!
      const wasIdle = heap.size === 0
      // Idle time banks no credit: rejoin no earlier than the start tag of the parent's latest
      // grant, so a returning entity gets its share from now on, not a catch-up burst. That tag,
      // not the least virtual time of those still waiting, because a flow that was granted and
      // asks again at once was the least: bumping it to the next one's tag would tax every
      // flow with a single request in flight, the heavier the weight the more.
      if (node.vtime < parent.vclock) node.vtime = parent.vclock
      heap.push(node)
      if (node.floor > 0) this.floors.push(node)
      if (!wasIdle) return
    }
  }

  /** The flow has no eligible request: it leaves, and so does every ancestor left empty. */
  private leave (flow: FlowNode): void {
    if (flow.throttleIndex >= 0) { this.throttled.remove(flow); return }
    if (flow.siblingIndex < 0) return
    let node: Node = flow
    for (let parent = node.parent; parent !== undefined; node = parent, parent = node.parent) {
      parent.backlog!.remove(node)
      this.floors.remove(node)
      if (parent.backlog!.size > 0) return
    }
  }

  private setFloor (node: Node, floor: number): void {
    if (node.floor === floor) return
    node.floor = floor
    if (floor === 0) this.floors.remove(node)
    else if (node.floorIndex < 0 && node.siblingIndex >= 0) this.floors.push(node)
  }

  private schedule (now: number): void {
    let next = this.paced && this.root.backlog!.size > 0 ? this.globalAt : Infinity
    const capped = this.throttled.peek()
    if (capped !== undefined && capped.capAt < next) next = capped.capAt
    if (next === Infinity) { this.cancelTimer(); return }
    if (this.timer !== undefined && this.timerAt <= next) return
    this.cancelTimer()
    this.timerAt = next
    this.timer = this.setTimer(this.onTimer, Math.max(0, next - now))
  }

  private cancelTimer (): void {
    if (this.timer === undefined) return
    this.clearTimer(this.timer)
    this.timer = undefined
    this.timerAt = Infinity
  }

  /** Forgets users and apps that have had no flow for a while (locker and app names are unbounded). */
  prune (now: number): void {
    this.opensSincePrune = 0
    for (const [name, user] of this.root.children!) {
      for (const [appName, app] of user.children!) {
        if (app.flows === 0 && now - app.idleSince > IDLE_NODE_LINGER_MS) user.children!.delete(appName)
      }
      if (user.flows === 0 && now - user.idleSince > IDLE_NODE_LINGER_MS) this.root.children!.delete(name)
    }
  }
}

/** Exponentially weighted rate: bytes/s over about RATE_TIME_CONSTANT_MS, updated per grant. */
function recordRate (node: Node, bytes: number, now: number): void {
  node.rate = currentRate(node, now) + bytes * 1000 / RATE_TIME_CONSTANT_MS
  node.rateAt = now
}

function currentRate (node: Node, now: number): number {
  return now > node.rateAt ? node.rate * Math.exp((node.rateAt - now) / RATE_TIME_CONSTANT_MS) : node.rate
}

function positive (name: string, value: number | undefined): number {
  if (value === undefined) return 1
  if (!(value > 0 && Number.isFinite(value))) throw new BadRequestError(`flow ${name} must be a positive number, not ${value}`)
  return value
}

function nonNegative (name: string, value: number | undefined): number {
  if (value === undefined) return 0
  if (!(value >= 0 && Number.isFinite(value))) throw new BadRequestError(`flow ${name} must be a non-negative number of bytes/s, not ${value}`)
  return value
}

/** Hierarchical weighted bandwidth scheduler for one resource (e.g. a locker server's uplink). */
export class Scheduler {
  readonly #engine: Engine

  constructor (options: SchedulerOptions) {
    this.#engine = new Engine(options)
  }

  get capacity (): number { return this.#engine.capacity }

  /**
   * Admission control: throws OverloadedError (503, `retryAfter` seconds) when the flow's floor —
   * and its user's floor, when the user has no open flow yet — cannot be guaranteed beside the
   * floors already promised. Close the flow when its transfer ends, or its floor stays reserved.
   */
  open (spec: FlowSpec): Flow {
    return this.#engine.openFlow(spec)
  }

  /** Takes effect for the next grant. Floors already admitted are kept even if they no longer fit. */
  setCapacity (bytesPerSecond: number): void {
    this.#engine.setCapacity(bytesPerSecond)
  }

  /** Rates (bytes/s over about the last second) and open flows per user and per application, for a status endpoint. */
  snapshot (): SchedulerSnapshot {
    const engine = this.#engine
    const now = engine.now()
    engine.prune(now)
    const users: UserSnapshot[] = []
    for (const user of engine.root.children!.values()) {
      const apps: AppSnapshot[] = []
      for (const app of user.children!.values()) apps.push({ app: app.name, weight: app.weight, rate: currentRate(app, now), flows: app.flows })
      users.push({ user: user.name, weight: user.weight, floor: user.floor, rate: currentRate(user, now), flows: user.flows, apps })
    }
    return { capacity: engine.capacity, rate: currentRate(engine.root, now), reserved: engine.reserved, flows: engine.open.size, users }
  }

  /** Closes every flow (their pending acquires reject with ClosedError) and refuses new ones. */
  close (): void {
    this.#engine.stop()
  }
}

/**
 * A transfer's side of a flow: grants are asked for ahead of the bytes that use them, several at
 * once, so the flow stays backlogged while the transfer reads its next piece and while the
 * scheduler hands out a burst (timers fire late on a busy server, and the grants that piled up
 * go out in one dispatch). A flow with a single request queued leaves the scheduler each time it
 * is served and rejoins at its parent's current virtual time, losing its place: measured over
 * real sockets, the heaviest of three users weighted 1:2:3 then got 48% instead of 50%.
 */
export class Pacer {
  private credit = 0
  private outstanding = 0
  private need = 0
  private failure: unknown
  private waiter: (() => void) | undefined

  private readonly quantum: number
  private readonly ahead: number

  /** `total`: the bytes the transfer will take, when known — no more than that is asked for ahead. */
  constructor (private readonly flow: Flow, private readonly signal?: AbortSignal, total?: number) {
    this.quantum = Math.max(1, Math.min(DEFAULT_QUANTUM, total ?? DEFAULT_QUANTUM))
    this.ahead = Math.max(1, Math.min(8 * DEFAULT_QUANTUM, total ?? 8 * DEFAULT_QUANTUM))
    this.left = total ?? Infinity
    this.ask()
  }

  /** bytes the transfer has still to take (Infinity: unknown) */
  private left: number

  private ask (): void {
    while (this.failure === undefined && this.credit + this.outstanding * this.quantum < Math.min(Math.max(this.ahead, this.need), Math.max(this.left, this.need))) {
      this.outstanding++
      this.flow.acquire(this.quantum, this.signal).then(() => {
        this.outstanding--
        this.credit += this.quantum
        this.ask()
        this.wake()
      }, (err: unknown) => {
        // Closing the flow at the end of a transfer rejects the grants asked ahead: kept, not thrown.
        this.outstanding--
        this.failure ??= err
        this.wake()
      })
    }
  }

  private wake (): void {
    const w = this.waiter
    this.waiter = undefined
    w?.()
  }

  /** Resolves once `bytes` may be sent. */
  async take (bytes: number): Promise<void> {
    while (this.credit < bytes) {
      if (this.failure !== undefined) throw this.failure
      this.need = bytes
      this.ask()
      await new Promise<void>(resolve => { this.waiter = resolve })
    }
    this.need = 0
    this.credit -= bytes
    this.left -= bytes
    this.ask()
  }
}
