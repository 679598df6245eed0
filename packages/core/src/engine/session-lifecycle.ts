import type { Http2Session, ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import { pingAcked, startPing } from '../policy/ping.js'
import {
  closeStream,
  openStream,
  type StreamCutReason,
  type StreamGuard,
} from '../policy/streams.js'
import { type ConnectionRecord, SessionFacts, type TlsInfo } from '../record/record.js'
import { streamCutChannel } from '../vocab/channels.js'
import type { Core } from './core.js'
import { rotateConnection } from './cut.js'
import { safeEmit } from './tracker-events.js'

/**
 * HTTP/2 on the engine's side: the session is the connection, a stream is a
 * request (`active` while one is open, `idle` while none is), PING ACKs, and a
 * stream cut on its own. The binding (`http2.ts`) calls these from Node's events.
 */

/**
 * An HTTP/2 session started on the connection (after TLS, or at accept for
 * h2c): it is established, and idle until its first stream.
 */
export function sessionStarted(
  t: Core,
  rec: ConnectionRecord,
  session: Http2Session,
  httpSocket: Socket,
  tls: TlsInfo | null,
): void {
  if (rec.state === 'closed') return
  const h2 = new SessionFacts(session)
  rec.h2 = h2
  rec.httpVersion = '2.0'
  if (tls !== null) t.established(rec, httpSocket, tls)
  else if (rec.httpSocket === null) rec.httpSocket = httpSocket
  const now = t.now()
  startPing(rec, h2, t.options, now)
  if (rec.state === 'new') {
    t.setPhase(rec, 'request_headers_timeout', t.options.headersTimeout, rec.establishedAtClock)
    t.transition(rec, 'idle', now)
  }
  t.reschedule(rec)
  // Accepted while a drain was closing: GOAWAY now, closed after the PING or the grace.
  if (rec.rotateReason === 'app_shutdown' && rec.pendingReason === null) {
    rotateConnection(rec, 'app_shutdown')
    t.drainGrace(rec, now)
  }
}

/** An HTTP/2 stream opened (its headers are complete); returns its guard. */
export function streamOpened(
  t: Core,
  rec: ConnectionRecord,
  stream: ServerHttp2Stream,
): StreamGuard | null {
  if (rec.state === 'closed') return null
  const now = t.now()
  const guard = openStream(rec, stream, t.options, now)
  rec.requests++
  rec.inFlight++
  const h2 = rec.h2
  if (h2 !== null && rec.inFlight > h2.peakConcurrentStreams)
    h2.peakConcurrentStreams = rec.inFlight
  if (rec.timeToFirstRequest === null) rec.timeToFirstRequest = now - rec.establishedAtClock
  const o = t.options
  if (o.maxRequestsPerConnection > 0 && rec.requests >= o.maxRequestsPerConnection) {
    rotateConnection(rec, 'max_requests_per_connection')
  }
  if (rec.inFlight === 1) {
    t.setPhase(rec, null, 0, 0)
    t.transition(rec, 'active', now)
  }
  t.reschedule(rec)
  return guard
}

/** An HTTP/2 stream closed. */
export function streamClosed(t: Core, rec: ConnectionRecord, guard: StreamGuard): void {
  closeStream(rec, guard)
  if (rec.state === 'closed' || rec.inFlight === 0) return
  rec.inFlight--
  if (rec.inFlight > 0 || rec.session?.destroyed === true) return
  if (rec.pendingReason !== null) {
    // A session draining after its GOAWAY has ended its last stream: idle, closed after the
    // grace (Node stops reading a session that sent GOAWAY once no stream is open, so the
    // PING's ACK is not read: see `goawaySession`). Streams torn down with a session we cut
    // keep its state.
    if (rec.pendingReason === 'app_shutdown' && rec.rotateReason === 'app_shutdown') {
      const at = t.now()
      t.transition(rec, 'idle', at)
      t.drainGrace(rec, at)
    }
    return
  }
  const now = t.now()
  t.setPhase(rec, 'keep_alive_timeout', t.options.keepAliveTimeout, now)
  t.transition(rec, 'idle', now)
}

/** The ACK of our PING came back. */
export function sessionPingAcked(t: Core, rec: ConnectionRecord, rtt: number): void {
  if (rec.state === 'closed') return
  if (rec.h2 !== null) pingAcked(rec, rec.h2, t.options, rtt, t.now())
  t.reschedule(rec)
}

/** One stream failed a limit: reset it, count it on the record, report it. */
export function cutStream(t: Core, g: StreamGuard, reason: StreamCutReason): void {
  const rec = g.rec
  if (rec.h2 === null) return
  rec.h2.streamCuts ??= {}
  const cuts = rec.h2.streamCuts
  cuts[reason] = (cuts[reason] ?? 0) + 1
  const streamId = g.stream.id ?? 0
  rec.binding?.resetStream(g)
  if (t.face.listenerCount('streamCut') > 0) safeEmit(t.face, 'streamCut', rec, reason, streamId)
  if (streamCutChannel.hasSubscribers)
    streamCutChannel.publish({ record: rec, reason, streamId, tracker: t.face })
}
