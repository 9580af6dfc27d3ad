/**
 * libp2p 3 calls `Promise.withResolvers` (Node 22). On Node 20 this module supplies it; import it
 * before anything from libp2p (registry.ts does, first).
 */
const P = Promise as unknown as { withResolvers?: <T>() => { promise: Promise<T>, resolve: (v: T | PromiseLike<T>) => void, reject: (e?: unknown) => void } }
if (typeof P.withResolvers !== 'function') {
  P.withResolvers = <T>() => { let resolve!: (v: T | PromiseLike<T>) => void; let reject!: (e?: unknown) => void; const promise = new Promise<T>((res, rej) => { resolve = res; reject = rej }); return { promise, resolve, reject } }
}
export {}
