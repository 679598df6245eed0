import type { Socket } from 'node:net'
import type { CloseReason } from './close-reasons.js'
import type { ResolvedRate } from './options.js'
import { acceptedBytes, bodyReadPaused, responseBlocked } from './progress.js'
import type { ConnectionRecord } from './record.js'

/**
 * Minimum data rates, checked by the sweeper once per window (see
 * docs/ARCHITECTURE.md, "Data rates"). Pure bookkeeping on the record: the
 * tracker schedules the checks and cuts when one fails.
 */

const INFINITY = Number.POSITIVE_INFINITY

/** `bytes` over `elapsedMs` meets `rate`. */
export function meetsRate(bytes: number, rate: ResolvedRate, elapsedMs: number): boolean {
  return bytes * 1000 >= rate.bytesPerSecond * elapsedMs
}

/**
 * The rate windows of the request in flight. Allocated per request, dropped
 * when it ends: an idle keep-alive connection carries none of this.
 */
export class RateWindows {
  /** The current request's body rate (per-route overrides applied). */
  bodyRate: ResolvedRate
  /** The current request's response rate. */
  responseRate: ResolvedRate
  /** The request has a body (Content-Length > 0 or chunked). */
  readonly hasBody: boolean
  /** The last check found the server not reading the body. */
  bodyPaused = false
  /** Start of the body window (clock ms), -1 when no body is being measured. */
  bodyWindowAt: number
  /** Wire bytes read at the start of the body window. */
  bodyWindowBytes: number
  /** Start of the response window, -1 when nothing is queued. */
  responseWindowAt = -1
  /** Bytes the kernel had taken at the start of the response window. */
  responseWindowBytes = 0

  constructor(
    hasBody: boolean,
    bodyRate: ResolvedRate,
    responseRate: ResolvedRate,
    now: number,
    bytesRead: number,
  ) {
    this.hasBody = hasBody
    this.bodyRate = bodyRate
    this.responseRate = responseRate
    this.bodyWindowAt = hasBody && bodyRate.bytesPerSecond > 0 ? now : -1
    this.bodyWindowBytes = bytesRead
  }
}

/** Starts measuring a request's rates at its head: `bodyRate` applies only when it has a body. */
export function startRates(
  rec: ConnectionRecord,
  hasBody: boolean,
  bodyRate: ResolvedRate,
  responseRate: ResolvedRate,
  now: number,
): void {
  const measureBody = hasBody && bodyRate.bytesPerSecond > 0
  rec.rates = new RateWindows(
    hasBody,
    bodyRate,
    responseRate,
    now,
    measureBody ? (rec.rawSocket?.bytesRead ?? 0) : 0,
  )
  scheduleRateCheck(rec, now)
}

/** Stops measuring (the request is done). */
export function stopRates(rec: ConnectionRecord): void {
  rec.rates = null
  rec.rateCheckAt = INFINITY
}

/** Replaces the body rate of the request in flight: a new rate starts a fresh window from now. */
export function setBodyRate(rec: ConnectionRecord, rate: ResolvedRate, now: number): void {
  const r = rec.rates
  if (r === null) return
  r.bodyRate = rate
  const bodyLeft = r.hasBody && rec.req !== null && !rec.req.complete
  if (bodyLeft && rate.bytesPerSecond > 0) restartBodyWindow(rec, r, now)
  else r.bodyWindowAt = -1
}

/** Replaces the response rate of the request in flight. */
export function setResponseRate(rec: ConnectionRecord, rate: ResolvedRate): void {
  const r = rec.rates
  if (r === null) return
  r.responseRate = rate
  r.responseWindowAt = -1
}

/** Next check: one window of the shortest rate in force, while one is. */
export function scheduleRateCheck(rec: ConnectionRecord, now: number): void {
  const r = rec.rates
  if (r === null) {
    rec.rateCheckAt = INFINITY
    return
  }
  const body = r.bodyWindowAt >= 0 ? r.bodyRate.windowMs : INFINITY
  const response = r.responseRate.bytesPerSecond > 0 ? r.responseRate.windowMs : INFINITY
  rec.rateCheckAt = now + Math.min(body, response)
}

/**
 * Checks the windows that ended by `now`; returns the close reason if the
 * client fell below a rate. Time the server is not reading the body, or has
 * nothing queued for the client, restarts a window instead of counting.
 * While the body is paused the check comes back every `pausedRecheckMs`, so a
 * window restarts when reading resumes rather than when it would have ended.
 */
export function checkRates(
  rec: ConnectionRecord,
  now: number,
  pausedRecheckMs: number,
): CloseReason | null {
  rec.rateCheckAt = INFINITY
  const raw = rec.rawSocket
  const r = rec.rates
  if (raw === null || r === null) return null
  if (r.bodyWindowAt >= 0) {
    const req = rec.req
    if (req === null || req.complete) r.bodyWindowAt = -1
    else if (bodyReadPaused(raw)) {
      r.bodyPaused = true
      restartBodyWindow(rec, r, now)
    } else if (r.bodyPaused) {
      // Reading again: the client's window starts now.
      r.bodyPaused = false
      restartBodyWindow(rec, r, now)
    } else if (now - r.bodyWindowAt >= r.bodyRate.windowMs) {
      const got = raw.bytesRead - r.bodyWindowBytes
      if (!meetsRate(got, r.bodyRate, now - r.bodyWindowAt)) return 'min_request_body_data_rate'
      restartBodyWindow(rec, r, now)
    }
  }
  if (r.responseRate.bytesPerSecond > 0) {
    if (!responseBlocked(raw)) r.responseWindowAt = -1
    else if (r.responseWindowAt < 0) restartResponseWindow(r, raw, now)
    else if (now - r.responseWindowAt >= r.responseRate.windowMs) {
      const taken = acceptedBytes(raw) - r.responseWindowBytes
      if (!meetsRate(taken, r.responseRate, now - r.responseWindowAt)) {
        return 'min_response_data_rate'
      }
      restartResponseWindow(r, raw, now)
    }
  }
  scheduleRateCheck(rec, now)
  if (r.bodyPaused && r.bodyWindowAt >= 0) {
    rec.rateCheckAt = Math.min(rec.rateCheckAt, now + pausedRecheckMs)
  }
  return null
}

function restartBodyWindow(rec: ConnectionRecord, r: RateWindows, now: number): void {
  r.bodyWindowAt = now
  r.bodyWindowBytes = rec.rawSocket?.bytesRead ?? 0
}

function restartResponseWindow(r: RateWindows, raw: Socket, now: number): void {
  r.responseWindowAt = now
  r.responseWindowBytes = acceptedBytes(raw)
}
