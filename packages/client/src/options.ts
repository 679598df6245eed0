import { type Clock, InvalidOptionError, UnknownOptionError } from '@connguard/core'
import {
  closestOptionName,
  validateClock,
  validateDuration,
  validateSweepInterval,
} from '@connguard/core/internal'
import type { Agent } from 'undici'

/**
 * Defaults, each with its unit and the reason for its value. All durations are
 * milliseconds; `0` or `false` switches a check off.
 */
/**
 * HTTP/2: a PING after 30 s without a byte from the server. Go's http2
 * `ReadIdleTimeout` is off by default (the seed article had to find it); gRPC
 * clients ping after 2 h. 30 s bounds what a dead pooled connection costs to
 * well under a minute while an idle session sends one 17-byte frame each way
 * per 30 s. Servers that police PINGs (gRPC's `permitKeepAliveTime`, 5 min)
 * need a longer value: set `readIdleTimeout` above their limit.
 */
export const DEFAULT_READ_IDLE_TIMEOUT = 30_000
/** 15 s for the PING's ACK, as Go's http2 `PingTimeout` default. */
export const DEFAULT_PING_TIMEOUT = 15_000
/**
 * TCP keepalive probes after 10 s of idle instead of undici's 60 s and Linux's
 * 2 h. It finds a peer whose kernel is gone or unreachable; it cannot find a
 * dead server behind a proxy or load balancer that is still up (the proxy's
 * kernel answers the probes), which is what the PING is for.
 */
export const DEFAULT_TCP_KEEP_ALIVE = 10_000
/** The sweeper's longest period: a PING goes out, and a missing ACK is found, at most this late. */
export const MAX_DEFAULT_SWEEP_INTERVAL = 250
/** ...and its shortest default period, so tiny test deadlines do not spin the loop. */
export const MIN_DEFAULT_SWEEP_INTERVAL = 10
/** Time source: `{ now(): number }` in ms, monotonic (core's `Clock`). */
export type ClientClock = Clock

/** What connguard adds to undici's Agent options. */
export interface ClientLivenessOptions {
  /** HTTP/2: send a PING after this much read silence on a connection, ms (default 30 s; `false` = off). */
  readIdleTimeout?: number | false
  /** HTTP/2: close the connection with `ping_timeout` when the PING's ACK takes longer, ms (default 15 s). */
  pingTimeout?: number | false
  /** TCP keepalive initial delay for every connection, ms (default 10 s; `false` leaves undici's 60 s). */
  tcpKeepAlive?: number | false
  /** How often PINGs are checked, ms (default: a quarter of the shorter of the two, within 10–250). */
  sweepInterval?: number
  /** Time source for tests: `{ now(): number }` in ms, monotonic. */
  clock?: ClientClock
}

/** `createDispatcher` options: connguard's, and any of undici's `Agent` options. */
export type ClientOptions = ClientLivenessOptions & Agent.Options

export interface ResolvedClientOptions {
  readonly readIdleTimeout: number
  readonly pingTimeout: number
  readonly tcpKeepAlive: number
  readonly sweepInterval: number
  readonly clock: ClientClock
}

/** connguard's own option names (the rest go to undici). */
export const OPTION_NAMES = [
  'readIdleTimeout',
  'pingTimeout',
  'tcpKeepAlive',
  'sweepInterval',
  'clock',
] as const satisfies readonly (keyof ClientLivenessOptions)[]

/**
 * Splits `options` into connguard's (validated, defaulted) and undici's (passed
 * on untouched; undici validates its own). A name that is none of connguard's
 * but within two edits of one (`readIdleTimout`) is a typo that would leave
 * liveness silently at its default: it throws `UnknownOptionError`.
 */
export function resolveClientOptions(options: ClientOptions | undefined = {}): {
  liveness: ResolvedClientOptions
  agent: Agent.Options
} {
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new InvalidOptionError('options', options, 'an object')
  }
  const agent: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) {
    if ((OPTION_NAMES as readonly string[]).includes(key)) continue
    if (closestOptionName(key, OPTION_NAMES) !== undefined)
      throw new UnknownOptionError(key, OPTION_NAMES)
    agent[key] = value
  }
  const connect = (options as { connect?: unknown }).connect
  if (connect != null && typeof connect !== 'function' && typeof connect !== 'object') {
    throw new InvalidOptionError(
      'connect',
      connect,
      "a connector function or undici's connect options object",
    )
  }
  // Core's validators: the same ranges and messages as the server's options.
  const readIdleTimeout = validateDuration(
    'readIdleTimeout',
    options.readIdleTimeout,
    DEFAULT_READ_IDLE_TIMEOUT,
  )
  const pingTimeout = validateDuration('pingTimeout', options.pingTimeout, DEFAULT_PING_TIMEOUT)
  return {
    liveness: {
      readIdleTimeout,
      pingTimeout,
      tcpKeepAlive: validateDuration('tcpKeepAlive', options.tcpKeepAlive, DEFAULT_TCP_KEEP_ALIVE),
      sweepInterval:
        options.sweepInterval === undefined
          ? defaultSweepInterval(readIdleTimeout, pingTimeout)
          : validateSweepInterval(options.sweepInterval),
      clock: validateClock(options.clock),
    },
    agent: agent as Agent.Options,
  }
}

/** A quarter of the shorter deadline, within 10–250 ms. */
function defaultSweepInterval(readIdle: number, ping: number): number {
  const shortest = Math.min(readIdle || Infinity, ping || Infinity)
  return Math.min(
    MAX_DEFAULT_SWEEP_INTERVAL,
    Math.max(MIN_DEFAULT_SWEEP_INTERVAL, Math.floor(shortest / 4)),
  )
}
