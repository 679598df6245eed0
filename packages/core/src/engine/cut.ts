import type { ServerResponse } from 'node:http'
import type { ConnectionRecord } from '../record/record.js'
import { NEVER } from '../time/deadline-queue.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import type { Core } from './core.js'
import { terminateWebSocket } from './websocket.js'

/**
 * How the tracker ends a connection: at once (`cutConnection`), or after the
 * response in flight (`rotateConnection`). Either way the reason is written on
 * the record first, so it wins over whatever error the close then causes.
 */

/**
 * A session cut with GOAWAY gets two sweeps to flush it and close before it is destroyed:
 * enough for the frame to leave, short enough that a stalled header block holds nothing.
 */
const SESSION_CLOSE_GRACE_SWEEPS = 2

/** Cuts now: the reason first, then the binding closes the connection. */
export function cutConnection(t: Core, rec: ConnectionRecord, reason: CloseReason): void {
  // A session sent GOAWAY (a WebSocket its close frame) for rotation or drain is still
  // open: a later cut (the drain timeout, a dead peer) is what actually ends it.
  if (
    (rec.session !== null || rec.state === 'upgraded') &&
    rec.pendingReason !== null &&
    rec.pendingReason === rec.rotateReason
  ) {
    rec.pendingReason = reason
  } else {
    rec.pendingReason ??= reason
  }
  rec.phaseDeadlineAt = NEVER
  rec.requestDeadlineAt = NEVER
  rec.ageDone()
  if (rec.rates !== null) rec.rates.checkAt = NEVER
  if (rec.h2 !== null) rec.h2.pingCheckAt = NEVER
  if (rec.streams !== null) rec.streams.dueAt = NEVER
  t.queue.remove(rec)
  t.awaitingBytes.delete(rec)
  // Last chance to read the ends for a close listener that came after the accept.
  t.keepEnds(rec)
  // A WebSocket ends through its library first, which then reports the close (1006).
  if (rec.state === 'upgraded') terminateWebSocket(rec)
  rec.binding?.cut(rec, reason)
  const raw = rec.rawSocket
  if (rec.session !== null && raw !== null && !raw.destroyed) {
    // GOAWAY waits for streams only nghttp2 knows of (a header block that never ends), and
    // a session Node destroys after our GOAWAY may leave its socket open (it ends it and
    // waits for the peer, measured under TLS with HPACK garbage and a peer that reset):
    // if the connection is still there a moment later, the next cut destroys it.
    rec.phaseDeadlineAt = t.now() + SESSION_CLOSE_GRACE_SWEEPS * t.options.sweepInterval
    t.queue.schedule(rec, rec.phaseDeadlineAt)
  }
}

/**
 * Close after the response in flight: it says `Connection: close` if its head is not out yet
 * and no request is pipelined behind it (then the last one says it, see `closeAfterResponse`).
 */
export function rotateConnection(rec: ConnectionRecord, reason: CloseReason): void {
  rec.rotateReason ??= reason
  if (rec.session !== null) {
    // HTTP/2: GOAWAY; streams in flight finish, no new one starts, then it closes.
    rec.pendingReason ??= reason
    rec.binding?.goaway(rec)
    return
  }
  const res = rec.res
  if (res === null || res.headersSent) return
  // A drain: not while a request is pipelined behind it (the newest one will say it). Node
  // itself answers requests pipelined past `maxRequestsPerSocket`.
  if (reason !== 'app_shutdown') res.shouldKeepAlive = false
  else if (rec.inFlight <= 1) closeAfterResponse(rec, res)
}

/**
 * The response each closing connection was given `Connection: close` on, while its head is
 * not out: rotation and drain only, never the request path of a connection that stays.
 */
const closeMarked = new WeakMap<ConnectionRecord, ServerResponse>()

/**
 * `res` is the last response of `rec`: it says `Connection: close`. Node ends the connection
 * after a response that says so and drops the requests pipelined behind it, unanswered
 * (`_http_server.js`, resOnFinish): so a response marked before a pipelined request arrived
 * is given its keep-alive back, if its head is not out yet, and the newest one carries the close.
 */
export function closeAfterResponse(rec: ConnectionRecord, res: ServerResponse): void {
  const before = closeMarked.get(rec)
  if (before !== undefined && before !== res && !before.headersSent) before.shouldKeepAlive = true
  if (res.shouldKeepAlive) {
    res.shouldKeepAlive = false
    closeMarked.set(rec, res)
  } else closeMarked.delete(rec)
}
