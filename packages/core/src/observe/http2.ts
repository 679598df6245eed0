import type { Http2Session, ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import { responseBlocked } from '../record/progress.js'
import type { ConnectionRecord, StreamGuard, TlsInfo } from '../record/record.js'
import { readTlsInfo } from '../record/tls-info.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import { kSessionRecord, kStreamGuard } from '../vocab/symbols.js'
import { type BindingSink, sinkOf } from './sink.js'

/**
 * HTTP/2 sessions: the session is the connection, its streams are its
 * requests. Every close goes through the session (GOAWAY, close, destroy):
 * writing to or ending the TLS socket under a live Http2Session aborts the
 * process with a native assertion (node_http2.cc, OnStreamAfterWrite) on
 * Node 20, 22 and 24 alike.
 */

/** RST_STREAM error code CANCEL (RFC 9113 §7): the stream is no longer needed. (A literal: node:http2 stays unloaded for HTTP/1-only servers.) */
const NGHTTP2_CANCEL = 0x8
type MarkedSession = Http2Session & { [kSessionRecord]?: ConnectionRecord }
type MarkedStream = ServerHttp2Stream & { [kStreamGuard]?: StreamGuard }

/** The guard of an HTTP/2 stream, or of the stream behind a compat request (`req.stream`), while it is open. */
export function streamGuardOf(target: object): StreamGuard | undefined {
  const stream = (target as { stream?: MarkedStream }).stream ?? (target as MarkedStream)
  return typeof stream === 'object' && stream !== null ? stream[kStreamGuard] : undefined
}

/** What Node's session socket proxy gives access to (reads and bound methods only). */
type SocketView = Socket & {
  _parent?: Socket | null
  alpnProtocol?: string | false
  servername?: string | false
  getProtocol?: () => string | null
  getCipher?: () => { name?: string } | undefined
  isSessionReused?: () => boolean
}

/** The connection a new session runs on: the raw socket behind the session's socket proxy. */
export function rawSocketOf(session: Http2Session): Socket {
  const view = session.socket as SocketView
  return view._parent ?? view
}

/** Wires a session to its record; the engine takes it from there. */
export function bindSession(sink: BindingSink, rec: ConnectionRecord, session: Http2Session): void {
  const marked = session as MarkedSession
  marked[kSessionRecord] = rec
  // First in line: the stream is guarded before the application (and a route's overrides) sees it.
  session.prependListener('stream', onStream)
  session.on('error', onSessionError)
  session.on('goaway', onGoaway)
  const view = session.socket as SocketView
  const tls: TlsInfo | null = view._parent != null ? readTlsInfo(view) : null
  // Never write to it: all closing goes through the session.
  sink.sessionStarted(rec, session, rec.rawSocket as Socket, tls)
}

function onStream(this: MarkedSession, stream: ServerHttp2Stream): void {
  const rec = this[kSessionRecord]
  if (rec === undefined) return
  const sink = sinkOf(rec)
  if (sink === undefined) return
  const guard = sink.streamOpened(rec, stream)
  if (guard === null) return
  ;(stream as MarkedStream)[kStreamGuard] = guard
  // A stream closes once: `on`, not `once`, spares a wrapper per stream.
  stream.on('close', onStreamClose)
}

function onStreamClose(this: MarkedStream): void {
  const guard = this[kStreamGuard]
  if (guard === undefined) return
  // Cleared, not deleted: `delete` would move every stream to a slow dictionary shape.
  this[kStreamGuard] = undefined
  sinkOf(guard.rec)?.streamClosed(guard.rec, guard)
}

/**
 * Resets one stream (RST_STREAM, CANCEL: the server gives up on it); the
 * session and its other streams go on. Unlike a graceful close, a reset is
 * sent at once, even with response bytes queued behind a closed window.
 */
export function resetStream(guard: StreamGuard): void {
  const stream = guard.stream
  if (!stream.closed && !stream.destroyed) stream.close(NGHTTP2_CANCEL)
}

function onSessionError(this: MarkedSession, err: Error): void {
  const rec = this[kSessionRecord]
  if (rec !== undefined && rec.error === null) rec.error = err
}

/** The peer said GOAWAY: it is leaving. */
function onGoaway(this: MarkedSession): void {
  const rec = this[kSessionRecord]
  if (rec !== undefined) rec.closeIntent = 'client'
}

/** Sends a PING; its ACK reports the round trip. */
export function pingSession(rec: ConnectionRecord): void {
  const session = rec.session
  if (session === null || session.destroyed || session.closed) return
  try {
    session.ping((err, duration) => {
      if (err == null) sinkOf(rec)?.sessionPingAcked(rec, duration)
    })
  } catch {
    // Too many PINGs outstanding, or the session is going: the timeout decides.
  }
}

/** The largest stream id (2^31 - 1): a GOAWAY with it refuses no stream. */
const MAX_STREAM_ID = 2 ** 31 - 1
/** GOAWAY error code NO_ERROR (RFC 9113 §7): a graceful shutdown. */
const NGHTTP2_NO_ERROR = 0

/**
 * Graceful GOAWAY as RFC 9113 §6.8 describes it: first with the last stream id 2^31 - 1, so
 * the client stops opening streams and fails none it has open, and a PING. The second GOAWAY,
 * with the last stream processed, is Node's `close()`, sent by the drain once the session has
 * had no open stream for the idle grace (`drainGrace`).
 *
 * What Node makes of the first one (measured on Node 20, 24 and 26; docs/deploy.md): Node's
 * `goaway()` is nghttp2's `nghttp2_submit_goaway`, not its shutdown notice, so once it is
 * written nghttp2 marks the session GOAWAY-sent and ignores every stream the client opens
 * after that, whatever id it named (`session_allow_incoming_new_stream`), and, once no stream
 * is open, wants no more input, so Node stops reading the socket (`MaybeStopReading`): the
 * PING's ACK is never read. A request the client sent before it read the GOAWAY is therefore
 * never processed, and the second GOAWAY makes the client fail it with REFUSED_STREAM (safe to
 * retry). No `node:http2` API sends the notice that would avoid it. The first GOAWAY still
 * fails no stream the client has open; a single `close()` names the last stream processed
 * (0 on a session that has processed none, Node 20 and 22), failing at once every stream in
 * flight to the server. Used by a drain only.
 */
export function goawaySession(rec: ConnectionRecord): void {
  const session = rec.session
  if (session === null || session.closed || session.destroyed) return
  // Rotation (age, request count) closes in one step, as before: it has no drain grace.
  if (rec.rotateReason !== 'app_shutdown') {
    session.close()
    return
  }
  // Before its SETTINGS exchange a session cannot send a PING (Node's `connecting` check
  // fails it at once): its GOAWAY waits for the session to be up.
  if (session.connecting) {
    session.once('connect', () => goawaySession(rec))
    return
  }
  // Node 24's `server.close()` calls `close()` on every session (closeAllSessions): the
  // one-step GOAWAY this avoids. Until the drain closes it, the session's own property
  // shadows the prototype's; `cutSession` and `releaseSession` remove it.
  ;(session as ClosableSession).close = closeDeferredToDrain
  try {
    session.goaway(NGHTTP2_NO_ERROR, MAX_STREAM_ID)
    session.ping(ignorePingResult)
  } catch {
    // Too many PINGs outstanding, or the session is going: the grace or the timeout decides.
  }
}

function ignorePingResult(): void {}

type ClosableSession = { close: (callback?: () => void) => void }

/** A draining session's `close()` for callers other than the drain: it closes when the drain does. */
function closeDeferredToDrain(this: Http2Session, callback?: () => void): void {
  if (typeof callback === 'function') this.once('close', callback)
}

/** Gives a session its own `close()` back (see `goawaySession`). */
function undeferClose(session: Http2Session): void {
  if ((session as ClosableSession).close === closeDeferredToDrain) {
    delete (session as { close?: unknown }).close
  }
}

/** Reasons for which the peer is not expected to take a GOAWAY (dead, or out of time). */
const DESTROY: ReadonlySet<CloseReason> = new Set<CloseReason>([
  'ping_timeout',
  'app_shutdown_timeout',
  // Cut per session only when the client takes no byte at all: a GOAWAY would wait behind the rest.
  'min_response_data_rate',
])

/** Closes the session for `reason`: GOAWAY and close where the peer can hear it, destroy where not. */
export function cutSession(rec: ConnectionRecord, reason: CloseReason): void {
  const session = rec.session as Http2Session
  const raw = rec.rawSocket
  undeferClose(session)
  if (session.destroyed) {
    // Node destroyed the session but left its socket open (see the tracker's grace after a
    // GOAWAY): no session is left to close it through, and destroying the raw socket is safe.
    raw?.destroy()
    return
  }
  if (reason === 'min_response_data_rate' && raw !== null && responseBlocked(raw)) {
    // As for HTTP/1: a plain close would queue the FIN behind what the kernel still holds for
    // a client that reads nothing. Resetting the raw socket under the session is safe (only
    // writing to or ending the TLS socket is not).
    if (typeof raw.resetAndDestroy === 'function') raw.resetAndDestroy()
  }
  if (DESTROY.has(reason) || session.closed) session.destroy()
  else session.close()
}

/** Removes what was added to a live session, leaving it open. */
export function releaseSession(rec: ConnectionRecord): void {
  const session = rec.session as MarkedSession | null
  if (session === null) return
  session.removeListener('stream', onStream)
  session.removeListener('error', onSessionError)
  session.removeListener('goaway', onGoaway)
  undeferClose(session)
  delete session[kSessionRecord]
  for (const guard of rec.streams?.guards ?? []) {
    guard.stream.removeListener('close', onStreamClose)
    ;(guard.stream as MarkedStream)[kStreamGuard] = undefined
  }
  rec.streams = null
}
