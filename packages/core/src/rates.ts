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

/** Starts measuring a request's rates at its head: `bodyRate` applies only when it has a body. */
export function startRates(
  rec: ConnectionRecord,
  hasBody: boolean,
  bodyRate: ResolvedRate,
  responseRate: ResolvedRate,
  now: number,
): void {
  rec.hasBody = hasBody
  rec.bodyPaused = false
  rec.bodyRate = bodyRate
  rec.bodyWindowAt = hasBody && bodyRate.bytesPerSecond > 0 ? now : -1
  rec.bodyWindowBytes = rec.rawSocket?.bytesRead ?? 0
  rec.responseRate = responseRate
  rec.responseWindowAt = -1
  scheduleRateCheck(rec, now)
}

/** Stops measuring (the request is done). */
export function stopRates(rec: ConnectionRecord): void {
  rec.hasBody = false
  rec.bodyPaused = false
  rec.bodyWindowAt = -1
  rec.responseWindowAt = -1
  rec.rateCheckAt = INFINITY
}

/** Replaces the body rate of the request in flight: a new rate starts a fresh window from now. */
export function setBodyRate(rec: ConnectionRecord, rate: ResolvedRate, now: number): void {
  rec.bodyRate = rate
  const bodyLeft = rec.hasBody && rec.req !== null && !rec.req.complete
  if (bodyLeft && rate.bytesPerSecond > 0) restartBodyWindow(rec, now)
  else rec.bodyWindowAt = -1
}

/** Replaces the response rate of the request in flight. */
export function setResponseRate(rec: ConnectionRecord, rate: ResolvedRate): void {
  rec.responseRate = rate
  rec.responseWindowAt = -1
}

/** Next check: one window of the shortest rate in force, while one is. */
export function scheduleRateCheck(rec: ConnectionRecord, now: number): void {
  const body = rec.bodyWindowAt >= 0 ? rec.bodyRate.windowMs : INFINITY
  const response = rec.responseRate.bytesPerSecond > 0 ? rec.responseRate.windowMs : INFINITY
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
  if (raw === null) return null
  if (rec.bodyWindowAt >= 0) {
    const req = rec.req
    if (req === null || req.complete) rec.bodyWindowAt = -1
    else if (bodyReadPaused(raw)) {
      rec.bodyPaused = true
      restartBodyWindow(rec, now)
    } else if (rec.bodyPaused) {
      // Reading again: the client's window starts now.
      rec.bodyPaused = false
      restartBodyWindow(rec, now)
    } else if (now - rec.bodyWindowAt >= rec.bodyRate.windowMs) {
      const got = raw.bytesRead - rec.bodyWindowBytes
      if (!meetsRate(got, rec.bodyRate, now - rec.bodyWindowAt)) return 'min_request_body_data_rate'
      restartBodyWindow(rec, now)
    }
  }
  if (rec.responseRate.bytesPerSecond > 0) {
    if (!responseBlocked(raw)) rec.responseWindowAt = -1
    else if (rec.responseWindowAt < 0) restartResponseWindow(rec, raw, now)
    else if (now - rec.responseWindowAt >= rec.responseRate.windowMs) {
      const taken = acceptedBytes(raw) - rec.responseWindowBytes
      if (!meetsRate(taken, rec.responseRate, now - rec.responseWindowAt)) {
        return 'min_response_data_rate'
      }
      restartResponseWindow(rec, raw, now)
    }
  }
  scheduleRateCheck(rec, now)
  if (rec.bodyPaused && rec.bodyWindowAt >= 0) {
    rec.rateCheckAt = Math.min(rec.rateCheckAt, now + pausedRecheckMs)
  }
  return null
}

function restartBodyWindow(rec: ConnectionRecord, now: number): void {
  rec.bodyWindowAt = now
  rec.bodyWindowBytes = rec.rawSocket?.bytesRead ?? 0
}

function restartResponseWindow(rec: ConnectionRecord, raw: Socket, now: number): void {
  rec.responseWindowAt = now
  rec.responseWindowBytes = acceptedBytes(raw)
}
