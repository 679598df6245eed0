import { performance } from 'node:perf_hooks'
import { checkPing } from '../policy/ping.js'
import { checkRates, rateCheckAt } from '../policy/rates.js'
import { checkStreams, streamsDueAt } from '../policy/streams.js'
import type { ConnectionRecord } from '../record/record.js'
import { isDue, NEVER } from '../time/deadline-queue.js'
import type { Core } from './core.js'
import { cutConnection, rotateConnection } from './cut.js'
import { pressureSweep } from './pressure-hooks.js'
import { checkWebSocket } from './websocket.js'

/**
 * The sweep: everything due in the engine's deadline heap, the polls that are
 * O(connections) by design (TLS connections with no byte yet; idle connections
 * when the parser hook is missing; Node's list of HTTP/1 parsers reading a head),
 * and pressure's pass; and the sweeper that runs it every `sweepInterval`.
 */

const INFINITY = Number.POSITIVE_INFINITY
/** `sweepDue` stopped while settling keep-alive requests: the sweep proper has not begun. */
const SETTLING = -2
/** Longest stretch, in wall ms, one timed sweep runs before yielding to I/O. */
const SWEEP_SLICE_MS = 4

/**
 * Starts the engine's one sweeper (unref'd). Its sweeps run in slices: closing a
 * TLS connection costs ~0.1 ms of CPU (measured), so a sweep that finds hundreds of
 * stalled handshakes at once (an attack) would block the event loop for tens of ms
 * and every healthy request with it. After `SWEEP_SLICE_MS` the rest waits for the
 * next turn of the loop (`setImmediate`), behind the I/O that queued meanwhile.
 */
export function startSweeper(t: Core): NodeJS.Timeout {
  const slice = (continued: boolean): void => {
    if (t.stopped) return
    const cut = t.sweepSlice(t.now(), performance.now() + SWEEP_SLICE_MS, continued)
    if (cut === SETTLING) setImmediate(continued ? resume : restart).unref()
    else if (cut < 0) setImmediate(resume).unref()
  }
  const resume = (): void => slice(true)
  const restart = (): void => slice(false)
  const sweeper = setInterval(() => slice(false), t.options.sweepInterval)
  sweeper.unref()
  return sweeper
}

/**
 * Enforces what is due at `now`. Returns the count cut, or -1 when it stopped at
 * `until` (wall ms; `Infinity` does everything due at once) with more due (-2 while still
 * settling keep-alive requests, before the sweep proper began).
 * `continued`: this call goes on with a sweep an earlier slice left unfinished
 * (pressure's per-sweep cap counts over all its slices).
 */
export function sweepDue(t: Core, now: number, until: number, continued: boolean): number {
  // First the keep-alive requests since the last settle (every slice: I/O ran in between), so
  // nothing below reads a state or pops a deadline a request has since moved. Settling is
  // sliced too: the sweep proper begins once it is done (`SETTLING`).
  if (!t.settleAll(now, until)) return SETTLING
  const p = t.pressure
  if (p !== null && !continued) p.sweepCuts = 0
  if (t.awaitingBytes.size > 0) pollHandshakes(t, now)
  if (t.pollIdle) pollRequests(t, now)
  const queue = t.queue
  const o = t.options
  // Heads after a connection's first: Node's list knows which began and when (O(active) in
  // C++, once a sweep; no work per request).
  let cut = continued ? 0 : t.sweepHeads(now)
  if (!continued) t.startPendingRates(now)
  let handled = 0
  for (let rec = queue.popExpired(now); rec !== undefined; rec = queue.popExpired(now)) {
    // The wall clock is read every 8 entries: reading it costs more than most steps.
    if (until !== INFINITY && (++handled & 7) === 0 && performance.now() >= until) {
      queue.schedule(rec, rec.deadlineAt)
      return -1
    }
    if (!isDue(rec.requestDeadlineAt, now) && !isDue(rec.phaseDeadlineAt, now)) {
      // Not a deadline: connection age or a rate check.
      if (isDue(rec.ageDeadlineAt, now) && ageReached(t, rec)) {
        cut++
        continue
      }
      const h2 = rec.h2
      if (h2 !== null && isDue(h2.pingCheckAt, now)) {
        const step = checkPing(rec, h2, o, now)
        if (step === 'timeout') {
          cutConnection(t, rec, 'ping_timeout')
          cut++
          continue
        }
        if (step === 'send') rec.binding?.ping(rec)
      }
      if (rec.state === 'upgraded') {
        const reason = checkWebSocket(rec, o.webSocket, now)
        if (reason !== null) {
          cutConnection(t, rec, reason)
          cut++
          continue
        }
      }
      let failed = isDue(rateCheckAt(rec), now) ? checkRates(rec, now, o.sweepInterval) : null
      if (failed === null && isDue(streamsDueAt(rec), now)) {
        // HTTP/2: a stream that fails is reset on its own; the session is cut only when its
        // client takes no byte at all.
        failed = checkStreams(rec, now, o.sweepInterval, t.onStreamFailed)
      }
      if (failed !== null) {
        cutConnection(t, rec, failed)
        cut++
        continue
      }
      t.reschedule(rec)
      continue
    }
    const kind = isDue(rec.requestDeadlineAt, now) ? 'request_timeout' : rec.phaseReason
    if (kind === null) {
      // No phase deadline of its own: the grace of a session already cut (cut.ts). The
      // second cut carries the first one's reason, which is the connection's.
      cutConnection(t, rec, rec.pendingReason ?? 'server_closed')
      cut++
      continue
    }
    // Without the parser hook, a request whose first byte arrived since the
    // last poll is not idle. With it, bytes the hook did not report are not a
    // request (a stray CRLF between requests, which the parser skips).
    if (kind === 'keep_alive_timeout' && t.idleBytesMoved(rec)) {
      t.requestBegin(rec, now)
      continue
    }
    if (
      kind === 'request_timeout' &&
      o.requestTimeoutUntil === 'received' &&
      received(rec) &&
      !t.ownRequestTimeout.has(rec)
    ) {
      // Adopted from Node's or Fastify's requestTimeout, which bounds receiving the request:
      // it arrived whole in time, so its response may take as long as it takes (a route's or
      // a request's own requestTimeout keeps connguard's meaning).
      rec.requestDeadlineAt = NEVER
      t.reschedule(rec)
      continue
    }
    // A drain's idle grace is over: the connection closes for the shutdown, not for idling.
    cutConnection(
      t,
      rec,
      kind === 'keep_alive_timeout' && rec.rotateReason === 'app_shutdown' ? 'app_shutdown' : kind,
    )
    cut++
  }
  if (p !== null) {
    cut += pressureSweep(t, p, now, until)
    if (p.unfinished) return -1
  }
  return cut
}

/** The request in flight arrived whole, and no next one is being read (HTTP/1). */
function received(rec: ConnectionRecord): boolean {
  const req = rec.req
  return rec.session === null && req !== null && req.complete && !rec.readingHead
}

/** Rotates or cuts a connection past its age; true when it was cut now. */
function ageReached(t: Core, rec: ConnectionRecord): boolean {
  rec.ageDone()
  if (rec.state === 'active' || (rec.session !== null && rec.state === 'idle')) {
    rotateConnection(rec, 'max_connection_age')
    return false
  }
  // An upgraded connection (a WebSocket) is the application's to end.
  if (rec.state === 'upgraded') return false
  cutConnection(t, rec, 'max_connection_age')
  return true
}

/** TLS connections with no byte yet move to `handshaking` once bytes flow. */
function pollHandshakes(t: Core, now: number): void {
  const awaiting = t.awaitingBytes
  for (const rec of awaiting) {
    const raw = rec.rawSocket
    if (raw !== null && raw.bytesRead > 0) {
      awaiting.delete(rec)
      if (rec.state === 'new') t.transition(rec, 'handshaking', now)
    }
  }
}

/** Fallback when the parser hook is unavailable: O(idle) per sweep. */
function pollRequests(t: Core, now: number): void {
  for (const rec of t.records) {
    const socket = rec.httpSocket
    // HTTP/2 sessions read PING ACKs and SETTINGS while idle: never an HTTP/1 request.
    if (socket === null || rec.inFlight > 0 || rec.session !== null) continue
    if ((rec.state === 'idle' || rec.state === 'new') && socket.bytesRead !== t.idleBytes(rec)) {
      t.requestBegin(rec, now)
    }
  }
}
