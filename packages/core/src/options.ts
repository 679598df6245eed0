import { type Clock, monotonicClock } from './clock.js'
import { InvalidOptionError, UnknownOptionError } from './errors.js'

/**
 * Defaults, each with its unit and the reason for its value. All durations are
 * milliseconds; `0` or `false` switches a deadline off.
 */
/** 10 s, as Kestrel: a real handshake takes one or two round trips, not seconds; Node's 120 s lets a stalled client hold a socket for two minutes. */
export const DEFAULT_HANDSHAKE_TIMEOUT = 10_000
/** 30 s, as Kestrel's RequestHeadersTimeout: generous for a slow mobile link, short enough to bound slowloris. */
export const DEFAULT_HEADERS_TIMEOUT = 30_000
/** 72 s, as Fastify: above the 60 s idle timeout of common load balancers (AWS ALB), so the proxy, not the server, closes an idle pooled connection and never sends into one that just closed. */
export const DEFAULT_KEEP_ALIVE_TIMEOUT = 72_000
/** Off: an absolute request limit cuts healthy long uploads and streams (nodejs/node#46574); slow clients are bounded per phase instead. */
export const DEFAULT_REQUEST_TIMEOUT = 0
/** 250 ms: a deadline closes at most this late; four light sweeps a second cost nothing measurable. */
export const DEFAULT_SWEEP_INTERVAL = 250

/** The longest deadline accepted: 2^31 - 1 ms (about 24.8 days), the range of Node's timers. */
export const MAX_DURATION = 2_147_483_647
const MIN_SWEEP_INTERVAL = 1
const MAX_SWEEP_INTERVAL = 60_000

export interface ConnectionTrackerOptions {
  /** Accept → TLS established, ms (default 10 s). Closes with `tls_handshake_timeout`. */
  handshakeTimeout?: number | false
  /** Head of the first request from connection established, and of later requests from their first byte, ms (default 30 s). Closes with `request_headers_timeout` (and a `408`). */
  headersTimeout?: number | false
  /** Idle after a response until the next request's first byte, ms (default 72 s). Closes with `keep_alive_timeout`. Also sets the `Keep-Alive: timeout=` header. */
  keepAliveTimeout?: number | false
  /** Optional absolute limit on one request, first byte → response finished, ms (default off). Closes with `request_timeout` (and a `408` if no response started). */
  requestTimeout?: number | false
  /** How often the sweeper checks deadlines, ms (default 250). A close is late by at most this much. */
  sweepInterval?: number
  /** Time source for deadlines, for tests: `{ now(): number }` in ms, monotonic. */
  clock?: Clock
}

/** Options as validated once at construction; hot paths read these and never re-check. */
export interface ResolvedOptions {
  readonly handshakeTimeout: number
  readonly headersTimeout: number
  readonly keepAliveTimeout: number
  readonly requestTimeout: number
  readonly sweepInterval: number
  readonly clock: Clock
}

/** What a route or a single request may change. */
export interface RequestOverrides {
  /** Absolute limit for this request, ms, or `false` for none. */
  requestTimeout?: number | false
}

const kResolved = Symbol.for('connguard.resolvedOverrides')

/**
 * Overrides validated once by `resolveRequestOverrides`, for adapters to apply
 * per request without checking them again. `undefined` leaves a deadline as is.
 */
export class ResolvedRequestOverrides {
  readonly requestTimeout: number | undefined

  /** @internal */
  constructor(requestTimeout: number | undefined) {
    this.requestTimeout = requestTimeout
    Object.freeze(this)
  }

  /** True for resolved overrides from any copy of this module (ESM and CJS builds alike). */
  static is(value: unknown): value is ResolvedRequestOverrides {
    return (
      typeof value === 'object' &&
      value !== null &&
      (value as Record<symbol, unknown>)[kResolved] === true
    )
  }

  /** @internal */
  get [kResolved](): true {
    return true
  }
}

const OPTION_NAMES = [
  'handshakeTimeout',
  'headersTimeout',
  'keepAliveTimeout',
  'requestTimeout',
  'sweepInterval',
  'clock',
] as const satisfies readonly (keyof ConnectionTrackerOptions)[]

const OVERRIDE_NAMES = ['requestTimeout'] as const satisfies readonly (keyof RequestOverrides)[]

export function resolveOptions(
  options: ConnectionTrackerOptions | undefined = {},
): ResolvedOptions {
  assertPlainObject('options', options)
  rejectUnknown(options, OPTION_NAMES, 'option')
  return {
    handshakeTimeout: duration(
      'handshakeTimeout',
      options.handshakeTimeout,
      DEFAULT_HANDSHAKE_TIMEOUT,
    ),
    headersTimeout: duration('headersTimeout', options.headersTimeout, DEFAULT_HEADERS_TIMEOUT),
    keepAliveTimeout: duration(
      'keepAliveTimeout',
      options.keepAliveTimeout,
      DEFAULT_KEEP_ALIVE_TIMEOUT,
    ),
    requestTimeout: duration('requestTimeout', options.requestTimeout, DEFAULT_REQUEST_TIMEOUT),
    sweepInterval: sweepInterval(options.sweepInterval),
    clock: clock(options.clock),
  }
}

/** Validates a route's or a request's overrides once (at route registration, not per request). */
export function resolveRequestOverrides(
  overrides: RequestOverrides,
  where = 'route option',
): ResolvedRequestOverrides {
  assertPlainObject(where, overrides)
  rejectUnknown(overrides, OVERRIDE_NAMES, where)
  return new ResolvedRequestOverrides(
    overrides.requestTimeout === undefined
      ? undefined
      : duration('requestTimeout', overrides.requestTimeout, 0),
  )
}

function assertPlainObject(name: string, value: unknown): asserts value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidOptionError(name, value, 'an object')
  }
}

function rejectUnknown(given: object, known: readonly string[], where: string): void {
  for (const key of Object.keys(given)) {
    if (!known.includes(key)) throw new UnknownOptionError(key, known, where)
  }
}

function duration(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (value === false) return 0
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_DURATION) {
    throw new InvalidOptionError(
      name,
      value,
      `a whole number of milliseconds from 0 to ${MAX_DURATION}, or false (0 and false switch it off)`,
    )
  }
  return value
}

function sweepInterval(value: unknown): number {
  if (value === undefined) return DEFAULT_SWEEP_INTERVAL
  if (
    typeof value !== 'number' ||
    !Number.isInteger(value) ||
    value < MIN_SWEEP_INTERVAL ||
    value > MAX_SWEEP_INTERVAL
  ) {
    throw new InvalidOptionError(
      'sweepInterval',
      value,
      `a whole number of milliseconds from ${MIN_SWEEP_INTERVAL} to ${MAX_SWEEP_INTERVAL}`,
    )
  }
  return value
}

function clock(value: unknown): Clock {
  if (value === undefined) return monotonicClock
  if (
    value === null ||
    typeof value !== 'object' ||
    typeof (value as { now?: unknown }).now !== 'function'
  ) {
    throw new InvalidOptionError(
      'clock',
      value,
      'an object with a now() method returning milliseconds',
    )
  }
  return value as Clock
}
