import { type Clock, monotonicClock } from '../time/clock.js'
import { InvalidOptionError } from '../vocab/errors.js'
import { kResolved } from '../vocab/symbols.js'
import { type PressureOptions, type ResolvedPressure, resolvePressure } from './pressure-options.js'
import {
  assertPlainObject,
  count,
  duration,
  MAX_COUNT,
  MAX_DURATION,
  rejectUnknown,
} from './validate.js'
import {
  type ResolvedWebSocket,
  resolveWebSocket,
  type WebSocketOptions,
} from './websocket-options.js'

/** Where a resolved option's value came from. */
export type OptionSource = 'default' | 'connguard' | 'server' | 'fastify'

/**
 * Defaults, each with its unit and the reason for its value. All durations are
 * milliseconds; `0` or `false` switches a limit off.
 */
/** 10 s, as Kestrel: a real handshake takes one or two round trips, not seconds; Node's 120 s lets a stalled client hold a socket for two minutes. */
export const DEFAULT_HANDSHAKE_TIMEOUT = 10_000
/** 30 s, as Kestrel's RequestHeadersTimeout: generous for a slow mobile link, short enough to bound slowloris. */
export const DEFAULT_HEADERS_TIMEOUT = 30_000
/** 72 s, as Fastify: above the 60 s idle timeout of common load balancers (AWS ALB), so the proxy, not the server, closes an idle pooled connection and never sends into one that just closed. */
export const DEFAULT_KEEP_ALIVE_TIMEOUT = 72_000
/** Off: an absolute request limit cuts healthy long uploads and streams (nodejs/node#46574); slow clients are bounded by the data rates instead. */
export const DEFAULT_REQUEST_TIMEOUT = 0
/** 240 B/s after 5 s, as Kestrel's MinRequestBodyDataRate: any real client, even on 2G, beats it; a slow-body attacker (10 B every 500 ms) does not. */
export const DEFAULT_MIN_BODY_RATE: Readonly<DataRate> = Object.freeze({
  bytesPerSecond: 240,
  graceMs: 5_000,
})
/**
 * 240 B/s (Kestrel's MinResponseDataRate) over 30 s windows, not Kestrel's 5 s:
 * the kernel reports a slow reader's progress in steps of its send buffer
 * (measured ~1.4 MB on loopback with Linux's 4 MiB tcp_wmem), so a short
 * window mistakes a client reading 100 KB/s for one that stopped. 30 s finds a
 * client that stopped reading within a minute and spares readers above ~50 KB/s
 * even on such buffers; switch it off per route for slower consumers.
 */
export const DEFAULT_MIN_RESPONSE_RATE: Readonly<DataRate> = Object.freeze({
  bytesPerSecond: 240,
  graceMs: 30_000,
})
/**
 * HTTP/2: a PING after 60 s without a byte from the peer. Go's http2
 * ReadIdleTimeout and Kestrel's KeepAlivePingDelay are off by default and
 * gRPC's server pings every 2 h; an idle session is closed at the 72 s
 * keep-alive anyway, so the PING matters for sessions with a long stream open
 * to a peer whose route died: 60 s finds it within about 1.5 minutes.
 */
export const DEFAULT_PING_INTERVAL = 60_000
/** 20 s for the PING's ACK, as Kestrel's KeepAlivePingTimeout and gRPC's keepalive timeout. */
export const DEFAULT_PING_TIMEOUT = 20_000
/** 250 ms: a deadline closes at most this late; four light sweeps a second cost nothing measurable. */
export const DEFAULT_SWEEP_INTERVAL = 250
/** 30 s for `drain()`: a typical orchestrator's grace period (Kubernetes' terminationGracePeriodSeconds). */
export const DEFAULT_DRAIN_TIMEOUT = 30_000

export { MAX_DURATION }

const MIN_SWEEP_INTERVAL = 1
const MAX_SWEEP_INTERVAL = 60_000
/** A rate given without `graceMs` gets Kestrel's 5 s. */
const DEFAULT_RATE_GRACE = 5_000
/** A rate is checked over windows of its grace period, but never windows shorter than this. */
const MIN_RATE_WINDOW = 1_000

/** A minimum data rate: below `bytesPerSecond` once `graceMs` has passed, the connection is cut. */
export interface DataRate {
  /** Bytes per second the client must keep up, at least 1. */
  bytesPerSecond: number
  /** No enforcement for this long after the body or response begins, ms; also the window the rate is measured over (at least 1 s). */
  graceMs: number
}

export interface ConnectionTrackerOptions {
  /** Accept → TLS established, ms (default 10 s). Closes with `tls_handshake_timeout`. */
  handshakeTimeout?: number | false
  /** Head of the first request from connection established, and of later requests from their first byte, ms (default 30 s). Closes with `request_headers_timeout` (and a `408`). */
  headersTimeout?: number | false
  /** Idle after a response until the next request's first byte, ms (default 72 s). Closes with `keep_alive_timeout`. Also sets the `Keep-Alive: timeout=` header. */
  keepAliveTimeout?: number | false
  /** Optional absolute limit on one request, first byte → response finished, ms (default off). Closes with `request_timeout` (and a `408` if no response started). */
  requestTimeout?: number | false
  /** Minimum request body rate (default 240 B/s after 5 s). Time the application is not reading the body does not count. Closes with `min_request_body_data_rate`. */
  minBodyRate?: DataRate | false
  /** Minimum rate at which the client takes response bytes the application has queued (default 240 B/s over 30 s windows). Closes with `min_response_data_rate`. */
  minResponseRate?: DataRate | false
  /** Live connections at most (default off); one more is closed at accept with `max_concurrent_connections_exceeded`. */
  maxConnections?: number | false
  /** Live connections from one remote address at most (default off); `max_connections_per_ip_exceeded`. */
  maxConnectionsPerIp?: number | false
  /** Connections still in `new` or `handshaking` at most (default off); `max_concurrent_handshakes_exceeded`. */
  maxHandshakes?: number | false
  /** Rotate a connection this long after accept, ms (default off): the next response says `Connection: close`; an idle one is closed. `max_connection_age`. */
  maxConnectionAge?: number | false
  /** Requests served on one connection at most (default off): the last response says `Connection: close`. `max_requests_per_connection`. */
  maxRequestsPerConnection?: number | false
  /** HTTP/2: send a PING after this much read silence, ms (default 60 s). */
  pingInterval?: number | false
  /** HTTP/2: close the session with `ping_timeout` when the PING's ACK takes longer, ms (default 20 s). */
  pingTimeout?: number | false
  /** How often the sweeper checks deadlines, ms (default 250). A close is late by at most this much. */
  sweepInterval?: number
  /** Liveness of WebSocket upgrades: ping interval and timeout, an optional idle deadline, TCP keepalive; `false` switches it off. See `WebSocketOptions`. */
  webSocket?: WebSocketOptions | false
  /** Live WebSocket upgrades at most (default off), as Kestrel's MaxConcurrentUpgradedConnections: one more is answered 503 before its handshake, `max_concurrent_upgraded_connections_exceeded`. */
  maxUpgradedConnections?: number | false
  /**
   * What happens as the server nears its limits (default on; `false` switches it off):
   * deadlines shrink toward their floors, unproductive connections are shed oldest first
   * (`shed_under_pressure`), and a new connection above the limit displaces the oldest
   * unproductive one. Below 60% of every limit nothing changes. See `PressureOptions`.
   */
  pressure?: boolean | PressureOptions
  /** Time source for deadlines, for tests: `{ now(): number }` in ms, monotonic, never below 0. */
  clock?: Clock
}

/** A rate as the sweeper uses it; `bytesPerSecond` 0 = off. */
export interface ResolvedRate {
  readonly bytesPerSecond: number
  readonly graceMs: number
  /** The window the rate is measured over: `max(graceMs, 1 s)`. */
  readonly windowMs: number
}

/** Options as validated once at construction; hot paths read these and never re-check. */
export interface ResolvedOptions {
  readonly handshakeTimeout: number
  readonly headersTimeout: number
  readonly keepAliveTimeout: number
  readonly requestTimeout: number
  readonly minBodyRate: ResolvedRate
  readonly minResponseRate: ResolvedRate
  readonly maxConnections: number
  readonly maxConnectionsPerIp: number
  readonly maxHandshakes: number
  readonly maxConnectionAge: number
  readonly maxRequestsPerConnection: number
  readonly pingInterval: number
  readonly pingTimeout: number
  readonly sweepInterval: number
  readonly webSocket: ResolvedWebSocket
  readonly maxUpgradedConnections: number
  /** null: pressure switched off. */
  readonly pressure: ResolvedPressure | null
  readonly clock: Clock
  /**
   * What `requestTimeout` bounds: `'response'`, connguard's own (first byte → response
   * finished); `'received'` when it was adopted from Node's or Fastify's `requestTimeout`,
   * which bound receiving the request only (the response may take longer, as without the guard).
   */
  readonly requestTimeoutUntil: 'response' | 'received'
  /**
   * Where each option's value came from: `'default'`, `'connguard'` (given to connguard),
   * or adopted from the application's own setting: `'server'` (set on the Node server before
   * attach), `'fastify'` (a Fastify option). See README, "Migrating from Node, Fastify and
   * Express timeouts".
   */
  readonly sources: Readonly<Record<OptionName, OptionSource>>
}

/** The name of an option of `ConnectionTrackerOptions`. */
export type OptionName = (typeof OPTION_NAMES)[number]

/**
 * What `overrideRequest` takes: an HTTP/1 request, or for HTTP/2 the compat request or the
 * `ServerHttp2Stream` (the overrides then apply to that stream alone).
 */
export type OverridableRequest =
  | import('node:http').IncomingMessage
  | import('node:http2').Http2ServerRequest
  | import('node:http2').ServerHttp2Stream

/** What a route or a single request may change. */
export interface RequestOverrides {
  /** Absolute limit for this request, ms, or `false` for none. */
  requestTimeout?: number | false
  /** This request's minimum body rate, or `false` for none (an upload from a slow device, a long poll). */
  minBodyRate?: DataRate | false
  /** This request's minimum response rate, or `false` for none (a stream the client reads at its own pace). */
  minResponseRate?: DataRate | false
}

export const OFF_RATE: ResolvedRate = Object.freeze({ bytesPerSecond: 0, graceMs: 0, windowMs: 0 })

/**
 * Overrides validated once by `resolveRequestOverrides`, for adapters to apply
 * per request without checking them again. `undefined` leaves a limit as is.
 */
export class ResolvedRequestOverrides {
  readonly requestTimeout: number | undefined
  readonly minBodyRate: ResolvedRate | undefined
  readonly minResponseRate: ResolvedRate | undefined

  /** @internal */
  constructor(
    requestTimeout: number | undefined,
    minBodyRate: ResolvedRate | undefined,
    minResponseRate: ResolvedRate | undefined,
  ) {
    this.requestTimeout = requestTimeout
    this.minBodyRate = minBodyRate
    this.minResponseRate = minResponseRate
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
  'minBodyRate',
  'minResponseRate',
  'maxConnections',
  'maxConnectionsPerIp',
  'maxHandshakes',
  'maxConnectionAge',
  'maxRequestsPerConnection',
  'pingInterval',
  'pingTimeout',
  'sweepInterval',
  'webSocket',
  'maxUpgradedConnections',
  'pressure',
  'clock',
] as const satisfies readonly (keyof ConnectionTrackerOptions)[]

const OVERRIDE_NAMES = [
  'requestTimeout',
  'minBodyRate',
  'minResponseRate',
] as const satisfies readonly (keyof RequestOverrides)[]

export function resolveOptions(
  options: ConnectionTrackerOptions | undefined = {},
): ResolvedOptions {
  assertPlainObject('options', options)
  rejectUnknown(options, OPTION_NAMES, 'option')
  const sources = {} as Record<OptionName, OptionSource>
  for (const name of OPTION_NAMES)
    sources[name] = options[name] === undefined ? 'default' : 'connguard'
  const sweep = sweepInterval(options.sweepInterval)
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
    minBodyRate: rate('minBodyRate', options.minBodyRate, DEFAULT_MIN_BODY_RATE),
    minResponseRate: rate('minResponseRate', options.minResponseRate, DEFAULT_MIN_RESPONSE_RATE),
    maxConnections: count('maxConnections', options.maxConnections),
    maxConnectionsPerIp: count('maxConnectionsPerIp', options.maxConnectionsPerIp),
    maxHandshakes: count('maxHandshakes', options.maxHandshakes),
    maxConnectionAge: duration('maxConnectionAge', options.maxConnectionAge, 0),
    maxRequestsPerConnection: count('maxRequestsPerConnection', options.maxRequestsPerConnection),
    pingInterval: duration('pingInterval', options.pingInterval, DEFAULT_PING_INTERVAL),
    pingTimeout: duration('pingTimeout', options.pingTimeout, DEFAULT_PING_TIMEOUT),
    sweepInterval: sweep,
    webSocket: resolveWebSocket(options.webSocket, sweep),
    maxUpgradedConnections: count('maxUpgradedConnections', options.maxUpgradedConnections),
    pressure: resolvePressure(options.pressure),
    clock: clock(options.clock),
    requestTimeoutUntil: 'response',
    sources: Object.freeze(sources),
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
    overrides.minBodyRate === undefined
      ? undefined
      : rate('minBodyRate', overrides.minBodyRate, DEFAULT_MIN_BODY_RATE),
    overrides.minResponseRate === undefined
      ? undefined
      : rate('minResponseRate', overrides.minResponseRate, DEFAULT_MIN_RESPONSE_RATE),
  )
}

/** Validates `drain()`'s timeout. */
export function resolveDrainTimeout(value: unknown): number {
  return duration('timeout', value, DEFAULT_DRAIN_TIMEOUT)
}

function rate(name: string, value: unknown, fallback: Readonly<DataRate>): ResolvedRate {
  if (value === undefined) return withWindow(fallback.bytesPerSecond, fallback.graceMs)
  if (value === false) return OFF_RATE
  const allowed =
    '{ bytesPerSecond: a whole number ≥ 1, graceMs: a whole number of ms ≥ 0 }, or false'
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidOptionError(name, value, allowed)
  }
  rejectUnknown(value, ['bytesPerSecond', 'graceMs'], `${name} field`)
  const { bytesPerSecond, graceMs } = value as Record<string, unknown>
  if (
    typeof bytesPerSecond !== 'number' ||
    !Number.isInteger(bytesPerSecond) ||
    bytesPerSecond < 1 ||
    bytesPerSecond > MAX_COUNT
  ) {
    throw new InvalidOptionError(
      `${name}.bytesPerSecond`,
      bytesPerSecond,
      `a whole number from 1 to ${MAX_COUNT}`,
    )
  }
  return withWindow(bytesPerSecond, duration(`${name}.graceMs`, graceMs, DEFAULT_RATE_GRACE))
}

function withWindow(bytesPerSecond: number, graceMs: number): ResolvedRate {
  if (bytesPerSecond === 0) return OFF_RATE
  return Object.freeze({ bytesPerSecond, graceMs, windowMs: Math.max(graceMs, MIN_RATE_WINDOW) })
}

export function sweepInterval(value: unknown): number {
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

export function clock(value: unknown): Clock {
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
  // Due times are kept as whole ms with -1 for "none" (deadline-queue.ts): a clock must not
  // read below 0. Checked once, here: a monotonic clock that starts at 0 or later stays there.
  const first = (value as Clock).now()
  if (typeof first !== 'number' || !Number.isFinite(first) || first < 0) {
    throw new InvalidOptionError(
      'clock',
      first,
      'a now() that returns finite, non-negative milliseconds (its first reading was not)',
    )
  }
  return value as Clock
}
