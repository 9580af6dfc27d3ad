/**
 * Every failure in Berth is a BerthError with a stable `code`. Callers match on the code,
 * never on the message. HTTP statuses and CLI exit codes are mapped here, in one place.
 */
export class BerthError extends Error {
  readonly code: string
  readonly status: number
  constructor (code: string, message: string, status = 500, options?: { cause?: unknown }) {
    super(message, options)
    this.code = code
    this.status = status
    this.name = new.target.name
  }

  toJSON (): { code: string, message: string } {
    return { code: this.code, message: this.message }
  }
}

const define = (code: string, status: number) =>
  class extends BerthError {
    static readonly code = code
    constructor (message: string, options?: { cause?: unknown }) { super(code, message, status, options) }
  }

export class InvalidOidError extends define('ERR_INVALID_OID', 400) {}
export class InvalidCidError extends define('ERR_INVALID_CID', 400) {}
export class InvalidHintError extends define('ERR_INVALID_HINT', 400) {}
export class InvalidRangeError extends define('ERR_INVALID_RANGE', 416) {}
export class BadRequestError extends define('ERR_BAD_REQUEST', 400) {}
export class InvalidConfigError extends define('ERR_INVALID_CONFIG', 400) {}
export class TruncatedError extends define('ERR_TRUNCATED', 400) {}
export class PathNotAllowedError extends define('ERR_PATH_NOT_ALLOWED', 403) {}
export class NotFoundError extends define('ERR_NOT_FOUND', 404) {}
export class HashMismatchError extends define('ERR_HASH_MISMATCH', 409) {}
export class TooLargeError extends define('ERR_TOO_LARGE', 413) {}
/** The request's Accept header admits none of the media types the resource answers with (406). */
export class NotAcceptableError extends define('ERR_NOT_ACCEPTABLE', 406) {}
/** A request body in a media type the resource does not accept (415). */
export class UnsupportedMediaTypeError extends define('ERR_UNSUPPORTED_MEDIA_TYPE', 415) {}
/** A resource that exists but not for this method (405; the answer lists the allowed ones). */
export class MethodNotAllowedError extends define('ERR_METHOD_NOT_ALLOWED', 405) {}
export class UnsupportedSchemeError extends define('ERR_UNSUPPORTED_SCHEME', 400) {}
/** Every source was tried and none delivered; `errors` says why each failed. */
export class NoSourceError extends BerthError {
  static readonly code = 'ERR_NO_SOURCE'
  readonly errors: unknown[]
  constructor (message: string, errors: unknown[] = []) {
    // When every failure was the same integrity failure, surface that code: it is what the user must know.
    const codes = new Set(errors.map(e => (e as { code?: string })?.code))
    const code = codes.size === 1 && codes.has('ERR_HASH_MISMATCH') ? 'ERR_HASH_MISMATCH' : 'ERR_NO_SOURCE'
    super(code, message + (errors.length ? ': ' + errors.map(e => (e as Error)?.message ?? String(e)).join('; ') : ''), code === 'ERR_HASH_MISMATCH' ? 409 : 502)
    this.errors = errors
  }
}
export class SourceError extends define('ERR_SOURCE', 502) {}
export class AbortedError extends define('ERR_ABORTED', 499) {}
export class StoreError extends define('ERR_STORE', 500) {}
export class ClosedError extends define('ERR_CLOSED', 503) {}
/** No token where one is needed (401). */
export class TokenMissingError extends define('ERR_TOKEN_MISSING', 401) {}
/** Malformed, forged or tampered token: its signature does not verify with a registered key (401). */
export class TokenInvalidError extends define('ERR_TOKEN_INVALID', 401) {}
export class TokenExpiredError extends define('ERR_TOKEN_EXPIRED', 401) {}
export class TokenRevokedError extends define('ERR_TOKEN_REVOKED', 401) {}
/** A valid token that does not cover this locker, operation or object (403). */
export class TokenScopeError extends define('ERR_TOKEN_SCOPE', 403) {}
/** A resource token not bound (`ath`) to the access token it came with (403). */
export class TokenUnlinkedError extends define('ERR_TOKEN_UNLINKED', 403) {}
export class QuotaExceededError extends define('ERR_QUOTA', 413) {}
export class ConflictError extends define('ERR_CONFLICT', 409) {}
/** A distribute source or destination this server will not contact (loopback, private, link-local) (403). */
export class PlaceNotAllowedError extends define('ERR_PLACE_NOT_ALLOWED', 403) {}
/** A wrong, stale or reused answer to a proof-of-possession challenge (403). */
export class ProofError extends define('ERR_PROOF', 403) {}
/** A resource token's connection slots are all in use (429, with Retry-After). */
export class SlotsExhaustedError extends define('ERR_SLOTS', 429) {
  /** seconds a client should wait before trying again (sent as Retry-After) */
  readonly retryAfter = 1
}
/** Admission control: the bandwidth floors already promised leave no room for this one (503, with Retry-After). */
export class OverloadedError extends define('ERR_OVERLOADED', 503) {
  /** seconds a client should wait before trying again (sent as Retry-After) */
  readonly retryAfter: number
  constructor (message: string, retryAfter = 1, options?: { cause?: unknown }) {
    super(message, options)
    this.retryAfter = retryAfter
  }
}

/**
 * An ALTO request refused (RFC 7285 §8.5.2), on the server and as a client sees it: `altoCode`
 * is the protocol's code (E_SYNTAX, E_MISSING_FIELD, E_INVALID_FIELD_TYPE, E_INVALID_FIELD_VALUE),
 * `field` the JSON path at fault and `value` what was there (400).
 */
export class AltoRequestError extends BerthError {
  static readonly code = 'ERR_ALTO_REQUEST'
  readonly altoCode: string
  readonly field: string | undefined
  readonly value: unknown
  constructor (altoCode: string, message: string, o: { field?: string, value?: unknown, cause?: unknown } = {}) {
    super('ERR_ALTO_REQUEST', message, 400, { cause: o.cause })
    this.altoCode = altoCode
    this.field = o.field
    this.value = o.value
  }
}

/** Turns anything thrown into a BerthError so every API answers with a code. */
export function toBerthError (err: unknown): BerthError {
  if (err instanceof BerthError) return err
  const e = err as { name?: string, code?: string, message?: string, statusCode?: number }
  if (e?.name === 'AbortError' || e?.code === 'ABORT_ERR') return new AbortedError(e.message ?? 'aborted', { cause: err })
  if (e?.code === 'ENOENT') return new NotFoundError(e.message ?? 'not found', { cause: err })
  if (e?.code === 'EACCES' || e?.code === 'EPERM') return new PathNotAllowedError(e.message ?? 'permission denied', { cause: err })
  // fastify's own errors (body too large, bad content type, bad JSON) carry a statusCode
  if (typeof e?.statusCode === 'number' && e.statusCode >= 400 && e.statusCode < 500) {
    const code = e.statusCode === 413 ? 'ERR_TOO_LARGE' : 'ERR_BAD_REQUEST'
    return new BerthError(code, e.message ?? 'bad request', e.statusCode, { cause: err })
  }
  return new BerthError('ERR_INTERNAL', e?.message ?? String(err), 500, { cause: err })
}

/** CLI exit codes: 1 generic, 2 usage/bad input, 3 not found, 4 integrity, 5 source/network. */
export function exitCodeFor (err: BerthError): number {
  if (err.code === 'ERR_HASH_MISMATCH') return 4
  if (err.status === 404) return 3
  if (err.status >= 400 && err.status < 500) return 2
  if (err.status === 502 || err.status === 504) return 5
  return 1
}

/** Throws the signal's reason as an AbortedError when it has fired. */
export function throwIfAborted (signal?: AbortSignal): void {
  if (signal?.aborted === true) throw new AbortedError('operation aborted', { cause: signal.reason })
}
