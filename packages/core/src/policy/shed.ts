import { performance } from 'node:perf_hooks'
import type { ResolvedOptions } from '../options/options.js'
import { acceptedBytes, bodyReadPaused, responseBlocked } from '../record/progress.js'
import type { ConnectionRecord, DeadlineKind } from '../record/record.js'
import { pingUnansweredSince } from '../record/websocket-facts.js'
import type { DeadlineQueue } from '../time/deadline-queue.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import type { Pressure } from './pressure.js'

/**
 * Whom pressure closes, and in which order (see docs/ARCHITECTURE.md, "Pressure"). Called
 * by the tracker once per sweep while the level is above 0, and at accept above the limit;
 * never when there is no pressure.
 *
 * Victims by class, each oldest first (the tracker's record set keeps accept order):
 *   0 unproductive — nothing produced yet: `new`, `handshaking`, established with no
 *     request yet, or a request head still arriving; a WebSocket whose peer has left a
 *     ping unanswered (websocket.ts);
 *   1 idle keep-alive — served before, no request now;
 *   2 slow — a request in progress whose client, not the application, holds it up (a body
 *     it is not sending, a response it is not reading), below `slowRate`.
 * A request in progress at a healthy rate, and an upgraded connection whose peer answers
 * its pings, are never shed.
 * No connection is cut before it has spent its phase's floor in that phase.
 */

export type Victim = (rec: ConnectionRecord, reason: CloseReason) => void

const UNPRODUCTIVE = 0
const IDLE = 1
const SPARED = -1
/** An active transfer's rate is judged over windows of at least this long: shorter ones see TCP's bursts, not the client. */
const SLOW_WINDOW_MS = 1_000
/** A rate mark older than this is stale (no scan measured it since): start a new window. */
const STALE_MARK_MS = 4 * SLOW_WINDOW_MS
/** Displacement without a spare candidate looks at this many of the oldest connections, no more. */
const DISPLACE_SCAN = 32
/** Closes between two reads of the wall clock when a pass is sliced: a TLS close costs ~0.1 ms, a read ~0.2 µs. */
const CLOSES_PER_CLOCK_READ = 4

/**
 * Where the window an active transfer's rate is judged over started: created the first
 * time a scan under pressure looks at the transfer (most connections never need one), and
 * kept beside the record rather than on it (a field on every record for a rare case).
 */
class ShedMark {
  /** Clock ms. */
  at: number
  /** Wire bytes (read + taken by the kernel) at `at`. */
  bytes: number
  /** The last completed window found the client below `slowRate`. */
  slow = false
  constructor(at: number, bytes: number) {
    this.at = at
    this.bytes = bytes
  }
}

const marks = new WeakMap<ConnectionRecord, ShedMark>()

/** When `rec` started producing nothing, clock ms; -1 when it is not unproductive. */
function unproductiveSince(rec: ConnectionRecord): number {
  switch (rec.state) {
    case 'new':
    case 'handshaking':
      return rec.openedAtClock
    case 'idle':
      return rec.requests === 0 && rec.inFlight === 0 ? rec.establishedAtClock : -1
    case 'active':
      if (!rec.readingHead) return -1
      return rec.requests === 0 ? rec.establishedAtClock : rec.requestStartedAt
    case 'upgraded':
      return pingUnansweredSince(rec)
    default:
      return -1
  }
}

/** Class 0 once it has been unproductive for its floor; -1 otherwise. */
function unproductive(rec: ConnectionRecord, now: number, p: Pressure): number {
  const since = unproductiveSince(rec)
  if (since < 0) return SPARED
  const f = p.options.floors
  const inHandshake = rec.secure && (rec.state === 'new' || rec.state === 'handshaking')
  return now - since >= (inHandshake ? f.handshakeTimeout : f.headersTimeout)
    ? UNPRODUCTIVE
    : SPARED
}

/** Class 0 or 1, or -1 (active, upgraded, or not yet past its floor). */
function classOf(rec: ConnectionRecord, now: number, p: Pressure): number {
  const c = unproductive(rec, now, p)
  if (c !== SPARED || unproductiveSince(rec) >= 0) return c
  if (rec.state === 'idle' && now - rec.stateSince >= p.options.floors.keepAliveTimeout) return IDLE
  return SPARED
}

/**
 * True when the client holds up the request in progress below `rate` bytes/s over the last
 * completed window. Time the application holds it up (not reading the body, nothing queued
 * for the client) does not count, as for the data rates.
 */
function slow(rec: ConnectionRecord, now: number, rate: number): boolean {
  const raw = rec.rawSocket
  if (raw === null || rec.state !== 'active' || rec.readingHead) return false
  const req = rec.req
  const clientBound =
    (rec.rates?.hasBody === true && req !== null && !req.complete && !bodyReadPaused(raw)) ||
    responseBlocked(raw)
  if (!clientBound) {
    marks.delete(rec)
    return false
  }
  const bytes = raw.bytesRead + acceptedBytes(raw)
  const mark = marks.get(rec)
  if (mark === undefined || now - mark.at > STALE_MARK_MS) {
    marks.set(rec, new ShedMark(now, bytes))
    return false
  }
  const elapsed = now - mark.at
  if (elapsed >= SLOW_WINDOW_MS) {
    mark.slow = (bytes - mark.bytes) * 1000 < rate * elapsed
    mark.at = now
    mark.bytes = bytes
  }
  return mark.slow
}

/** How far ahead of its normal deadline each phase closes at the current level, ms. */
function tightening(o: ResolvedOptions, p: Pressure): Record<DeadlineKind, number> {
  const f = p.options.floors
  const ahead = (base: number, floor: number): number =>
    base > floor ? (base - floor) * p.level : 0
  return {
    tls_handshake_timeout: ahead(o.handshakeTimeout, f.handshakeTimeout),
    request_headers_timeout: ahead(o.headersTimeout, f.headersTimeout),
    keep_alive_timeout: ahead(o.keepAliveTimeout, f.keepAliveTimeout),
    request_timeout: 0,
    max_connection_age: 0,
  }
}

/**
 * One sweep's work under pressure: closes connections past their shrunken deadlines (with
 * that deadline's reason), then sheds (`shed_under_pressure`) connections of addresses
 * over their share, then connections over the shed line, by class and age. At most
 * `maxShedPerSweep` closes in all, counted over the sweep's slices (`p.sweepCuts`).
 * `idleBytesMoved` is true while idle connections are polled for requests (the parser hook
 * is missing): bytes read since the last response are a request, not idleness. Returns how
 * many were closed. At `until` (wall ms) it stops and sets `p.unfinished`: the next slice
 * runs the pass again on fresh counts, so nothing is carried over.
 *
 * Bounded work: the shrunken deadlines are found in the deadline heap among the records
 * due within the largest shrink (O(those)); the record set is walked in accept order only
 * while shedding, and only until enough unproductive candidates are found.
 */
export function shedSweep(
  records: Iterable<ConnectionRecord>,
  queue: DeadlineQueue<ConnectionRecord>,
  now: number,
  o: ResolvedOptions,
  p: Pressure,
  idleBytesMoved: (rec: ConnectionRecord) => boolean,
  cut: Victim,
  until: number,
): number {
  const cap = p.options.maxShedPerSweep - p.sweepCuts
  /** True when no more may be closed in this slice: the cap is reached, or the slice's time is up. */
  const stop = (closed: number): boolean => {
    if (closed >= cap || p.unfinished) return true
    if (
      until !== Number.POSITIVE_INFINITY &&
      closed > 0 &&
      closed % CLOSES_PER_CLOCK_READ === 0 &&
      performance.now() >= until
    ) {
      p.unfinished = true
      return true
    }
    return false
  }
  const ahead = tightening(o, p)
  const most = Math.max(
    ahead.tls_handshake_timeout,
    ahead.request_headers_timeout,
    ahead.keep_alive_timeout,
  )
  const late =
    most > 0
      ? queue.dueBy(now + most, cap, (rec) => {
          const reason = rec.phaseReason
          if (rec.pendingReason !== null || reason === null) return false
          const a = ahead[reason]
          return (
            a > 0 &&
            rec.phaseDeadlineAt >= 0 &&
            rec.phaseDeadlineAt - now <= a &&
            !(reason === 'keep_alive_timeout' && idleBytesMoved(rec))
          )
        })
      : []
  let closed = 0
  for (const rec of late) {
    if (stop(closed)) break
    cut(rec, rec.phaseReason as CloseReason)
    closed++
  }
  // Addresses over their share, and by how much.
  let excess: Map<string, number> | null = null
  const share = p.ipShare()
  if (p.perIp !== null && share > 0) {
    for (const [ip, n] of p.perIp) {
      if (n <= share) continue
      excess ??= new Map()
      excess.set(ip, n - share)
    }
  }
  // A deadline closed frees a connection as much as a shed one.
  let quota = Math.max(0, p.quota - closed)
  if (stop(closed) || (quota === 0 && !p.unproductiveOnly && excess === null)) {
    p.spare = []
    return closed
  }
  /** Candidates by class; `over` holds those of addresses over their share. */
  const byClass: ConnectionRecord[][] = [[], []]
  const over: ConnectionRecord[][] = [[], []]
  // Enough unproductive ones to fill a sweep and leave spares for displacement.
  const keep = 2 * p.options.maxShedPerSweep
  for (const rec of records) {
    if (rec.pendingReason !== null || rec.state === 'closed') continue
    const c = classOf(rec, now, p)
    if (c === SPARED) continue
    const overShare = excess?.has(rec.remoteAddress ?? '') === true
    if (overShare && (over[c] as ConnectionRecord[]).length < keep)
      (over[c] as ConnectionRecord[]).push(rec)
    const list = byClass[c] as ConnectionRecord[]
    if (list.length < keep) list.push(rec)
    // The oldest unproductive ones outrank everything after them: stop once there are enough.
    if (excess === null && (byClass[UNPRODUCTIVE] as ConnectionRecord[]).length >= keep) break
  }
  if (excess !== null) {
    for (const list of over) {
      for (const rec of list) {
        if (stop(closed)) break
        const ip = rec.remoteAddress ?? ''
        const left = excess.get(ip) ?? 0
        if (left <= 0 || rec.pendingReason !== null) continue
        excess.set(ip, left - 1)
        cut(rec, 'shed_under_pressure')
        closed++
        quota--
      }
    }
  }
  // Event-loop delay or heap use alone sheds every unproductive connection past its floor,
  // and nothing else: idle and slow ones cost memory, not the CPU those signals measure.
  let allowance = p.unproductiveOnly ? Number.POSITIVE_INFINITY : quota
  for (const rec of byClass[UNPRODUCTIVE] as ConnectionRecord[]) {
    if (allowance <= 0 || stop(closed)) break
    if (rec.pendingReason !== null) continue
    cut(rec, 'shed_under_pressure')
    closed++
    quota--
    allowance--
  }
  for (const rec of byClass[IDLE] as ConnectionRecord[]) {
    if (quota <= 0 || stop(closed)) break
    if (rec.pendingReason !== null) continue
    cut(rec, 'shed_under_pressure')
    closed++
    quota--
  }
  if (quota > 0 && !stop(closed)) {
    closed += shedSlow(records, now, p, closed, Math.min(cap, closed + quota), stop, cut)
  }
  p.spare = (byClass[UNPRODUCTIVE] as ConnectionRecord[]).filter((r) => r.pendingReason === null)
  return closed
}

/** The last class: client-bound transfers below `slowRate`, oldest first. */
function shedSlow(
  records: Iterable<ConnectionRecord>,
  now: number,
  p: Pressure,
  before: number,
  upTo: number,
  stop: (closed: number) => boolean,
  cut: Victim,
): number {
  let closed = before
  const rate = p.options.slowRate
  for (const rec of records) {
    if (closed >= upTo || stop(closed)) break
    if (rec.pendingReason !== null || rec.state !== 'active') continue
    if (slow(rec, now, rate)) {
      cut(rec, 'shed_under_pressure')
      closed++
    }
  }
  return closed - before
}

/**
 * Above the limit at accept: the oldest connection that has been unproductive for its
 * floor, from the last scan's spares or else among the oldest few; null when there is none
 * (the new connection is refused instead).
 */
export function displacementVictim(
  records: Iterable<ConnectionRecord>,
  now: number,
  p: Pressure,
): ConnectionRecord | null {
  const spare = p.spare
  while (spare.length > 0) {
    const rec = spare.shift() as ConnectionRecord
    if (
      rec.pendingReason === null &&
      rec.state !== 'closed' &&
      unproductive(rec, now, p) === UNPRODUCTIVE
    )
      return rec
  }
  let looked = 0
  for (const rec of records) {
    if (looked++ >= DISPLACE_SCAN) break
    if (rec.pendingReason === null && unproductive(rec, now, p) === UNPRODUCTIVE) return rec
  }
  return null
}
