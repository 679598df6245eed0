import type { ResolvedRate } from '../options/options.js'
import { acceptedBytes, bodyReadPaused, responseBlocked } from '../record/progress.js'
import { type RateOwner, RateWindows } from '../record/rate-windows.js'
import type { ConnectionRecord } from '../record/record.js'
import { earliest, NEVER } from '../time/deadline-queue.js'
import type { CloseReason } from '../vocab/close-reasons.js'

/**
 * Minimum data rates, checked by the sweeper once per window (see
 * docs/ARCHITECTURE.md, "Data rates"). Pure bookkeeping: the tracker
 * schedules the checks and cuts when one fails. The same windows serve an
 * HTTP/1 connection's request (its record; progress read from the raw socket)
 * and an HTTP/2 stream (streams.ts; progress read from the stream), each
 * through its own `RateProgress`.
 */

export { type RateOwner, RateWindows }

const INFINITY = Number.POSITIVE_INFINITY

/** `bytes` over `elapsedMs` meets `rate`. */
export function meetsRate(bytes: number, rate: ResolvedRate, elapsedMs: number): boolean {
  return bytes * 1000 >= rate.bytesPerSecond * elapsedMs
}

/**
 * Windows of requests that ended, for the next request heads (every tracker shares them).
 * Bounded: past POOL_MAX requests in flight at once, the extra windows are left to the GC.
 * Only `stopRates` fills it, when the owner drops its windows for good.
 */
const pool: RateWindows[] = []
const POOL_MAX = 256

/** Due time of `o`'s next rate check, clock ms; NEVER when none. */
export function rateCheckAt(o: RateOwner): number {
  const r = o.rates
  return r === null ? NEVER : r.checkAt
}

/** Where an owner's progress is read; one shared object per kind, no closure per request. */
export interface RateProgress<O extends RateOwner> {
  /** The whole body has arrived (or the request is gone). */
  bodyDone(o: O): boolean
  /** The server is not taking the body: time that does not count against the client. */
  bodyPaused(o: O): boolean
  /** Body bytes received so far. */
  bodyBytes(o: O): number
  /** Response bytes wait for the client; otherwise the time does not count. */
  responseWaiting(o: O): boolean
  /** Response bytes the client has taken so far. */
  responseBytes(o: O): number
}

/** Starts measuring a request's rates at its head: `bodyRate` applies only when it has a body. */
export function startRates<O extends RateOwner>(
  o: O,
  p: RateProgress<O>,
  hasBody: boolean,
  bodyRate: ResolvedRate,
  responseRate: ResolvedRate,
  now: number,
): void {
  const measureBody = hasBody && bodyRate.bytesPerSecond > 0
  const bytes = measureBody ? p.bodyBytes(o) : 0
  const reused = pool.pop()
  o.rates =
    reused === undefined
      ? new RateWindows(hasBody, bodyRate, responseRate, now, bytes)
      : reused.reset(hasBody, bodyRate, responseRate, now, bytes)
  scheduleRateCheck(o, now)
}

/** Stops measuring (the request is done); its windows go back to the pool. */
export function stopRates(o: RateOwner): void {
  const r = o.rates
  if (r === null) return
  o.rates = null
  if (pool.length < POOL_MAX) pool.push(r)
}

/** Replaces the body rate of the request in flight: a new rate starts a fresh window from now. */
export function setBodyRate<O extends RateOwner>(
  o: O,
  p: RateProgress<O>,
  rate: ResolvedRate,
  now: number,
): void {
  const r = o.rates
  if (r === null) return
  r.bodyRate = rate
  if (r.hasBody && !p.bodyDone(o) && rate.bytesPerSecond > 0) restartBodyWindow(o, p, r, now)
  else r.bodyWindowAt = -1
}

/** Replaces the response rate of the request in flight. */
export function setResponseRate(o: RateOwner, rate: ResolvedRate): void {
  const r = o.rates
  if (r === null) return
  r.responseRate = rate
  r.responseWindowAt = -1
}

/** Next check: one window of the shortest rate in force, while one is. */
export function scheduleRateCheck(o: RateOwner, now: number): void {
  const r = o.rates
  if (r === null) return
  const body = r.bodyWindowAt >= 0 ? r.bodyRate.windowMs : INFINITY
  const response = r.responseRate.bytesPerSecond > 0 ? r.responseRate.windowMs : INFINITY
  const window = Math.min(body, response)
  r.checkAt = window === INFINITY ? NEVER : now + window
}

/**
 * Checks the windows that ended by `now`; returns the close reason if the
 * client fell below a rate. Time the server is not reading the body, or has
 * nothing queued for the client, restarts a window instead of counting.
 * While the body is paused the check comes back every `pausedRecheckMs`, so a
 * window restarts when reading resumes rather than when it would have ended.
 */
export function checkRateWindows<O extends RateOwner>(
  o: O,
  p: RateProgress<O>,
  now: number,
  pausedRecheckMs: number,
): CloseReason | null {
  const r = o.rates
  if (r === null) return null
  r.checkAt = NEVER
  if (r.bodyWindowAt >= 0) {
    if (p.bodyDone(o)) r.bodyWindowAt = -1
    else if (p.bodyPaused(o)) {
      r.bodyPaused = true
      restartBodyWindow(o, p, r, now)
    } else if (r.bodyPaused) {
      // Reading again: the client's window starts now.
      r.bodyPaused = false
      restartBodyWindow(o, p, r, now)
    } else if (now - r.bodyWindowAt >= r.bodyRate.windowMs) {
      const got = p.bodyBytes(o) - r.bodyWindowBytes
      if (!meetsRate(got, r.bodyRate, now - r.bodyWindowAt)) return 'min_request_body_data_rate'
      restartBodyWindow(o, p, r, now)
    }
  }
  if (r.responseRate.bytesPerSecond > 0) {
    if (!p.responseWaiting(o)) r.responseWindowAt = -1
    else if (r.responseWindowAt < 0) restartResponseWindow(o, p, r, now)
    else if (now - r.responseWindowAt >= r.responseRate.windowMs) {
      const taken = p.responseBytes(o) - r.responseWindowBytes
      if (!meetsRate(taken, r.responseRate, now - r.responseWindowAt)) {
        return 'min_response_data_rate'
      }
      restartResponseWindow(o, p, r, now)
    }
  }
  scheduleRateCheck(o, now)
  if (r.bodyPaused && r.bodyWindowAt >= 0) {
    r.checkAt = earliest(r.checkAt, now + pausedRecheckMs)
  }
  return null
}

function restartBodyWindow<O extends RateOwner>(
  o: O,
  p: RateProgress<O>,
  r: RateWindows,
  now: number,
): void {
  r.bodyWindowAt = now
  r.bodyWindowBytes = p.bodyBytes(o)
}

function restartResponseWindow<O extends RateOwner>(
  o: O,
  p: RateProgress<O>,
  r: RateWindows,
  now: number,
): void {
  r.responseWindowAt = now
  r.responseWindowBytes = p.responseBytes(o)
}

/**
 * An HTTP/1 connection's progress, from the counters libuv keeps on its raw
 * socket: body bytes are wire bytes read, response bytes those the kernel
 * accepted; `_handle.reading === false` means Node stopped reading because the
 * application is not consuming the body.
 */
export const connectionProgress: RateProgress<ConnectionRecord> = {
  bodyDone: (rec) => rec.req === null || rec.req.complete,
  bodyPaused: (rec) => rec.rawSocket !== null && bodyReadPaused(rec.rawSocket),
  bodyBytes: (rec) => rec.rawSocket?.bytesRead ?? 0,
  responseWaiting: (rec) => rec.rawSocket !== null && responseBlocked(rec.rawSocket),
  responseBytes: (rec) => (rec.rawSocket === null ? 0 : acceptedBytes(rec.rawSocket)),
}

/** The rate check of an HTTP/1 connection's request in flight. */
export function checkRates(
  rec: ConnectionRecord,
  now: number,
  pausedRecheckMs: number,
): CloseReason | null {
  if (rec.rawSocket === null) {
    if (rec.rates !== null) rec.rates.checkAt = NEVER
    return null
  }
  return checkRateWindows(rec, connectionProgress, now, pausedRecheckMs)
}
