import { performance } from 'node:perf_hooks'

/**
 * The tracker's only time source. Deadlines use a monotonic clock so a wall
 * clock step (NTP, suspend) cannot cut or spare a connection; tests inject a
 * manual clock and call `tracker.sweep()` instead of sleeping.
 */
export interface Clock {
  /** Milliseconds, monotonic, any origin at or after 0 (due times use -1 for "none"). */
  now(): number
}

export const monotonicClock: Clock = { now: () => performance.now() }
