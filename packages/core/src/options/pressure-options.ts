import { InvalidOptionError } from '../vocab/errors.js'
import { assertPlainObject, duration, MAX_COUNT, rejectUnknown } from './validate.js'

/**
 * Defaults of the `pressure` option, each with its reason. Pressure is on by default: it
 * does nothing until the server nears a limit (below `start` of it, connguard behaves
 * exactly as without it), and it is the only thing that keeps a server answering when
 * unproductive connections arrive faster than any fixed deadline can clear them
 * (300 new connections a second held for a 10 s header deadline are 3,000 descriptors).
 */
/** 0.6: below 60% of a limit nothing changes, so a server in its normal range never notices; from there deadlines shrink gradually rather than all at once. */
export const DEFAULT_PRESSURE_START = 0.6
/** 0.8: shedding starts with a fifth of the limit still free, room for the connections that arrive during the next sweep (300/s is 75 per 250 ms sweep). */
export const DEFAULT_PRESSURE_SHED_ABOVE = 0.8
/**
 * 1 s: what each phase deadline shrinks to at full pressure, and the least time any
 * connection gets in a phase before pressure may cut it. A real TLS handshake is two round
 * trips and a real request head one packet: 1 s holds a mobile link with a 300 ms round
 * trip; an attacker gets a tenth of the default handshake deadline and a thirtieth of the
 * header one.
 */
export const DEFAULT_PRESSURE_FLOOR = 1_000
/** 100 closes per sweep (400/s at the default 250 ms sweep): above the 200–300 connections/s of the attacks measured, and at ~100 µs per TLS cut, a stall of at most ~10 ms per sweep. */
export const DEFAULT_MAX_SHED_PER_SWEEP = 100
/** 1 KiB/s: an active transfer slower than this is "slow" when choosing whom to shed; 4× Kestrel's 240 B/s floor, far below any real upload or download (a weak 3G link moves 10+ KB/s). */
export const DEFAULT_SLOW_RATE = 1_024

/** Where the connection limit pressure is measured against comes from. */
export type PressureLimitSource = 'pressure.limit' | 'maxConnections' | 'open files'

export interface PressureFloors {
  /** ms, default 1 s. */
  handshakeTimeout?: number
  /** ms, default 1 s. */
  headersTimeout?: number
  /** ms, default 1 s. */
  keepAliveTimeout?: number
}

/**
 * What the tracker does as the server nears its limits; see README "Under attack" and
 * docs/ARCHITECTURE.md "Pressure". All fractions are of "full pressure" on each signal.
 */
export interface PressureOptions {
  /**
   * Live connections at full pressure, and the most kept open: above it a new connection
   * displaces the oldest unproductive one or is refused. Default: `maxConnections` when set,
   * else the process's open-file soft limit less a tenth (at least 64 descriptors kept for
   * the application), read once from /proc/self/limits (Linux); elsewhere no connection signal.
   */
  limit?: number
  /** Event-loop delay (p99 over the last second, ms) that counts as full pressure; default off. */
  eventLoopDelay?: number | false
  /** V8 heap in use, as a fraction of its limit, that counts as full pressure (0–1]; default off. */
  heapUsed?: number | false
  /** Fraction of full pressure where the level starts to rise above 0 (default 0.6). */
  start?: number
  /** Fraction of full pressure above which connections are shed, oldest unproductive first (default 0.8). */
  shedAbove?: number
  /** What each phase deadline shrinks to at full pressure (default 1 s each). */
  floors?: PressureFloors
  /** At most this many connections closed by pressure per sweep (default 100). */
  maxShedPerSweep?: number
  /** Under pressure, one remote address keeps at most this fraction of `limit` (default off: behind a proxy every client has the proxy's address). */
  perIpShare?: number | false
  /** An active transfer slower than this (bytes/s, client-bound) may be shed, after the unproductive and idle ones (default 1 KiB/s). */
  slowRate?: number
  /** Above `limit`, a new connection displaces the oldest unproductive one instead of being refused (default true). */
  displace?: boolean
}

/** `pressure` as validated once; 0 switches a signal or feature off. */
export interface ResolvedPressure {
  /** 0: not given (maxConnections or the open-file limit decide). */
  readonly limit: number
  readonly eventLoopDelay: number
  readonly heapUsed: number
  readonly start: number
  readonly shedAbove: number
  readonly floors: {
    readonly handshakeTimeout: number
    readonly headersTimeout: number
    readonly keepAliveTimeout: number
  }
  readonly maxShedPerSweep: number
  readonly perIpShare: number
  readonly slowRate: number
  readonly displace: boolean
}

const PRESSURE_NAMES = [
  'limit',
  'eventLoopDelay',
  'heapUsed',
  'start',
  'shedAbove',
  'floors',
  'maxShedPerSweep',
  'perIpShare',
  'slowRate',
  'displace',
] as const satisfies readonly (keyof PressureOptions)[]

const FLOOR_NAMES = [
  'handshakeTimeout',
  'headersTimeout',
  'keepAliveTimeout',
] as const satisfies readonly (keyof PressureFloors)[]

/** `undefined` and `true`: on with the defaults; `false`: off (null). */
export function resolvePressure(value: unknown): ResolvedPressure | null {
  if (value === false) return null
  const given = value === undefined || value === true ? {} : value
  assertPlainObject('pressure', given)
  rejectUnknown(given, PRESSURE_NAMES, 'pressure option')
  const o = given as PressureOptions
  const start = fraction('pressure.start', o.start, DEFAULT_PRESSURE_START, true)
  const shedAbove = fraction('pressure.shedAbove', o.shedAbove, DEFAULT_PRESSURE_SHED_ABOVE)
  if (shedAbove <= start) {
    throw new InvalidOptionError(
      'pressure.shedAbove',
      shedAbove,
      `a fraction above pressure.start (${start}): shedding starts after the deadlines begin to shrink`,
    )
  }
  return Object.freeze({
    limit: positive('pressure.limit', o.limit, 0),
    eventLoopDelay:
      o.eventLoopDelay === false ? 0 : positive('pressure.eventLoopDelay', o.eventLoopDelay, 0),
    heapUsed: o.heapUsed === false ? 0 : fraction('pressure.heapUsed', o.heapUsed, 0),
    start,
    shedAbove,
    floors: floors(o.floors),
    maxShedPerSweep: positive(
      'pressure.maxShedPerSweep',
      o.maxShedPerSweep,
      DEFAULT_MAX_SHED_PER_SWEEP,
    ),
    perIpShare: o.perIpShare === false ? 0 : fraction('pressure.perIpShare', o.perIpShare, 0),
    slowRate: positive('pressure.slowRate', o.slowRate, DEFAULT_SLOW_RATE),
    displace: flag('pressure.displace', o.displace, true),
  })
}

function floors(value: unknown): ResolvedPressure['floors'] {
  const given = value === undefined ? {} : value
  assertPlainObject('pressure.floors', given)
  rejectUnknown(given, FLOOR_NAMES, 'pressure.floors field')
  const f = given as PressureFloors
  const one = (name: (typeof FLOOR_NAMES)[number]): number => {
    const ms = duration(`pressure.floors.${name}`, f[name], DEFAULT_PRESSURE_FLOOR)
    if (ms === 0) {
      throw new InvalidOptionError(
        `pressure.floors.${name}`,
        f[name],
        'a whole number of milliseconds ≥ 1 (the least a deadline shrinks to)',
      )
    }
    return ms
  }
  return Object.freeze({
    handshakeTimeout: one('handshakeTimeout'),
    headersTimeout: one('headersTimeout'),
    keepAliveTimeout: one('keepAliveTimeout'),
  })
}

/** A whole number ≥ 1, or `fallback` when not given. */
function positive(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 1 || value > MAX_COUNT) {
    throw new InvalidOptionError(name, value, `a whole number from 1 to ${MAX_COUNT}`)
  }
  return value
}

/** A fraction in (0, 1], or [0, 1) for `start`; `fallback` when not given. */
function fraction(name: string, value: unknown, fallback: number, isStart = false): number {
  if (value === undefined) return fallback
  const ok =
    typeof value === 'number' &&
    Number.isFinite(value) &&
    (isStart ? value >= 0 && value < 1 : value > 0 && value <= 1)
  if (!ok) {
    throw new InvalidOptionError(
      name,
      value,
      isStart ? 'a fraction from 0 up to (not including) 1' : 'a fraction above 0, at most 1',
    )
  }
  return value as number
}

function flag(name: string, value: unknown, fallback: boolean): boolean {
  if (value === undefined) return fallback
  if (typeof value !== 'boolean') throw new InvalidOptionError(name, value, 'true or false')
  return value
}
