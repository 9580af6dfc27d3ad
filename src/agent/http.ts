/**
 * What every Berth HTTP server shares: errors as `{error: {code, message}}` with the status
 * from the error catalogue, client-level errors (oversized headers, garbage) answered in the
 * same shape, listen-address parsing, Range answers and client-gone signals.
 */
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyServerOptions } from 'fastify'
import type { Socket } from 'node:net'
import { BerthError, InvalidConfigError, toBerthError } from '../core/errors.ts'
import { parseRange, type ByteRange } from '../core/range.ts'

export function errorBody (err: BerthError): string {
  return JSON.stringify({ error: { code: err.code, message: err.message } })
}

export function createHttpServer (options: FastifyServerOptions & { logger?: unknown } = {}): FastifyInstance {
  const app = Fastify({
    logger: false,
    bodyLimit: 1024 * 1024,
    // Long enough that a malformed name reaches the handler and gets its own error code.
    routerOptions: { maxParamLength: 1024 },
    // Errors fastify raises before a handler runs (bad URL, over-long parameter) get our shape too.
    frameworkErrors (error: Error & { statusCode?: number, code?: string }, _request: unknown, reply: { code: (n: number) => { type: (t: string) => { send: (b: string) => void } } }) {
      const status = error.statusCode ?? 400
      reply.code(status).type('application/json').send(errorBody(new BerthError(status === 414 ? 'ERR_URI_TOO_LONG' : 'ERR_BAD_REQUEST', error.message, status)))
    },
    // Node's default header limit (16 KiB) stands; what exceeds it is answered below with a code.
    clientErrorHandler (err: Error & { code?: string }, socket: Socket) {
      const tooLarge = err.code === 'HPE_HEADER_OVERFLOW'
      const body = errorBody(new BerthError(tooLarge ? 'ERR_HEADER_TOO_LARGE' : 'ERR_BAD_REQUEST', tooLarge ? 'request headers too large' : 'malformed HTTP request', tooLarge ? 431 : 400))
      if (socket.writable) {
        socket.end(`HTTP/1.1 ${tooLarge ? '431 Request Header Fields Too Large' : '400 Bad Request'}\r\nContent-Type: application/json\r\nContent-Length: ${Buffer.byteLength(body)}\r\nConnection: close\r\n\r\n${body}`)
      } else socket.destroy()
    },
    ...options
  } as FastifyServerOptions)
  app.setErrorHandler((error, _request, reply) => {
    const err = toBerthError(error)
    if (reply.sent || reply.raw.headersSent) { reply.raw.destroy(err); return }
    // Out of resources (429/503): when to come back.
    const retryAfter = (err as { retryAfter?: unknown }).retryAfter
    if (typeof retryAfter === 'number') void reply.header('retry-after', String(Math.max(1, Math.ceil(retryAfter))))
    void reply.code(err.status).type('application/json').send(errorBody(err))
  })
  app.setNotFoundHandler((request, reply) => {
    void reply.code(404).type('application/json').send(errorBody(new BerthError('ERR_NOT_FOUND', `no route ${request.method} ${request.url.slice(0, 100)}`, 404)))
  })
  return app
}

export interface ListenAddress { host: string, port: number }

/** `host:port`, `:port`, `port` or `[v6]:port`. */
export function parseListen (text: string, defaultHost = '127.0.0.1'): ListenAddress {
  const m = /^(?:\[([^\]]+)\]|([^:]*))?:?(\d{1,5})$/.exec(text.trim())
  if (m === null) throw new InvalidConfigError(`bad listen address ${JSON.stringify(text)} (host:port)`)
  const host = m[1] ?? (m[2] !== undefined && m[2] !== '' ? m[2] : defaultHost)
  const port = Number(m[3])
  if (port > 65535) throw new InvalidConfigError(`port out of range in ${JSON.stringify(text)}`)
  return { host, port }
}

export function urlOf (address: ListenAddress, scheme = 'http'): string {
  const host = address.host.includes(':') ? `[${address.host}]` : address.host
  return `${scheme}://${host}:${address.port}`
}

/** Listens and returns the address actually bound (port 0 → the chosen port). */
export async function listen (app: FastifyInstance, address: ListenAddress): Promise<ListenAddress> {
  await app.listen({ host: address.host, port: address.port })
  const a = app.server.address()
  if (a === null || typeof a === 'string') return address
  return { host: address.host, port: a.port }
}

// parseRange, plus the "Content-Range: bytes */SIZE" that RFC 9110 asks of a 416.
export function rangeOf (header: string | undefined, size: number, reply: FastifyReply): ByteRange | undefined {
  try {
    return parseRange(header, size)
  } catch (err) {
    reply.header('content-range', `bytes */${size}`)
    throw err
  }
}

/** A signal that fires when the client goes away before the answer is complete. */
export function abortOnClose (reply: FastifyReply): AbortSignal {
  const controller = new AbortController()
  reply.raw.once('close', () => { if (!reply.raw.writableFinished) controller.abort() })
  return controller.signal
}
