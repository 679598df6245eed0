import { InvalidOptionError, UnknownOptionError } from '@connguard/core'
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
/** The longest duration accepted: 2^31 - 1 ms (about 24.8 days), the range of Node's timers. */
export const MAX_DURATION = 2_147_483_647
const MIN_SWEEP_INTERVAL = 1
const MAX_SWEEP_INTERVAL = 60_000

/** Time source: `{ now(): number }` in ms, monotonic. */
export interface ClientClock {
  now(): number
}

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

const OPTION_NAMES = [
  'readIdleTimeout',
  'pingTimeout',
  'tcpKeepAlive',
  'sweepInterval',
  'clock',
] as const satisfies readonly (keyof ClientLivenessOptions)[]

const monotonicClock: ClientClock = { now: () => performance.now() }

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
    if (nearOneOf(key, OPTION_NAMES)) throw new UnknownOptionError(key, OPTION_NAMES)
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
  const readIdleTimeout = duration(
    'readIdleTimeout',
    options.readIdleTimeout,
    DEFAULT_READ_IDLE_TIMEOUT,
  )
  const pingTimeout = duration('pingTimeout', options.pingTimeout, DEFAULT_PING_TIMEOUT)
  return {
    liveness: {
      readIdleTimeout,
      pingTimeout,
      tcpKeepAlive: duration('tcpKeepAlive', options.tcpKeepAlive, DEFAULT_TCP_KEEP_ALIVE),
      sweepInterval: sweepInterval(options.sweepInterval, readIdleTimeout, pingTimeout),
      clock: clock(options.clock),
    },
    agent: agent as Agent.Options,
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

function sweepInterval(value: unknown, readIdle: number, ping: number): number {
  if (value === undefined) {
    const shortest = Math.min(readIdle || Infinity, ping || Infinity)
    return Math.min(
      MAX_DEFAULT_SWEEP_INTERVAL,
      Math.max(MIN_DEFAULT_SWEEP_INTERVAL, Math.floor(shortest / 4)),
    )
  }
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

function clock(value: unknown): ClientClock {
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
  return value as ClientClock
}

/** True when `name` is within two edits of one of `known` (case-insensitive). */
function nearOneOf(name: string, known: readonly string[]): boolean {
  const lower = name.toLowerCase()
  return known.some((k) => editDistance(lower, k.toLowerCase()) <= 2)
}

function editDistance(a: string, b: string): number {
  if (Math.abs(a.length - b.length) > 2) return 3
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0] as number
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const above = row[j] as number
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      row[j] = Math.min(above + 1, (row[j - 1] as number) + 1, diagonal + cost)
      diagonal = above
    }
  }
  return row[b.length] as number
}
