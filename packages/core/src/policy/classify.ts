import type { Socket } from 'node:net'
import type { ConnectionRecord } from '../record/record.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import type { LiveState } from '../vocab/states.js'

/** Error codes that mean the peer or the network tore the connection down (client and server alike). */
export const RESET_CODES: ReadonlySet<string> = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
])

/**
 * nghttp2 errors (nghttp2.h) that mean the peer broke HTTP/2: Node destroys the session with
 * `ERR_HTTP2_ERROR` and the nghttp2 code in `errno`. Like a malformed HTTP/1 message (`HPE_*`),
 * they are `invalid_request` (Kestrel reports each as its own protocol error type, e.g.
 * `invalid_handshake`, `invalid_frame_length`, never as `other_error`). The other codes
 * (out of memory, a failed callback, internal errors) stay `error`.
 */
const H2_PEER_ERRNOS = new Set([
  -505, // NGHTTP2_ERR_PROTO (measured: WINDOW_UPDATE of 0, SETTINGS on a stream)
  -506, // NGHTTP2_ERR_INVALID_FRAME
  -518, // NGHTTP2_ERR_INVALID_HEADER_BLOCK
  -522, // NGHTTP2_ERR_FRAME_SIZE_ERROR
  -523, // NGHTTP2_ERR_HEADER_COMP
  -524, // NGHTTP2_ERR_FLOW_CONTROL
  -531, // NGHTTP2_ERR_HTTP_HEADER
  -532, // NGHTTP2_ERR_HTTP_MESSAGING
  -536, // NGHTTP2_ERR_SETTINGS_EXPECTED
  -537, // NGHTTP2_ERR_TOO_MANY_SETTINGS
  -903, // NGHTTP2_ERR_BAD_CLIENT_MAGIC (measured: a bad client preface)
  -904, // NGHTTP2_ERR_FLOODED (measured: a PING flood)
  -905, // NGHTTP2_ERR_TOO_MANY_CONTINUATIONS (measured: a CONTINUATION flood)
])
/** Node's own codes for an HTTP/2 peer past its limits (lib/internal/errors.js). */
const H2_PEER_CODES = new Set([
  'ERR_HTTP2_TOO_MANY_INVALID_FRAMES',
  'ERR_HTTP2_TOO_MANY_CUSTOM_SETTINGS',
])

/**
 * The reason for a close nobody on our side timed: read from the first error
 * the connection saw, whether the peer sent FIN, and how the last response
 * ended. Called once, at close, only when no deadline or cap already decided.
 */
export function classifyClose(rec: ConnectionRecord): CloseReason {
  const err = rec.error as (Error & { code?: unknown }) | null
  if (err !== null) {
    const code = typeof err.code === 'string' ? err.code : ''
    if (code === 'ERR_TLS_HANDSHAKE_TIMEOUT') return 'tls_handshake_timeout'
    // Node's own header/request timer; only fires if someone re-enabled it.
    if (code === 'ERR_HTTP_REQUEST_TIMEOUT') return 'request_headers_timeout'
    if (code.startsWith('HPE_')) return 'invalid_request'
    if (
      (code === 'ERR_HTTP2_ERROR' &&
        H2_PEER_ERRNOS.has((err as { errno?: unknown }).errno as number)) ||
      H2_PEER_CODES.has(code)
    ) {
      return 'invalid_request'
    }
    const beforeHandshake = rec.secure && rec.establishedAtClock < 0
    if (beforeHandshake) {
      // Node reports a peer that hung up mid-handshake as ECONNRESET "socket hang up".
      if (code === 'ECONNRESET' && err.message === 'socket hang up') return 'client_closed'
      if (RESET_CODES.has(code)) return 'connection_reset'
      return 'tls_handshake_failed'
    }
    if (RESET_CODES.has(code)) return 'connection_reset'
    return 'error'
  }
  if (rec.peerEnded || rec.closeIntent === 'client') return 'client_closed'
  // Before the handshake completes only the peer (or our own deadline, which
  // sets its reason first) ends a TLS connection; Node emits no 'end' there.
  if (rec.secure && rec.establishedAtClock < 0) return 'client_closed'
  return 'server_closed'
}

type EndState = Socket & { readonly errored?: Error | null; _readableState?: { ended?: boolean } }

/**
 * Reads, at close, what classifying needs: the error the socket was destroyed
 * with (`errored`, the first error of the stream) and whether the peer sent
 * FIN (the readable side ended). Read here rather than from 'error' and 'end'
 * listeners on every socket, which cost memory per connection.
 */
export function readEndState(rec: ConnectionRecord): void {
  const http = rec.httpSocket as EndState | null
  const raw = rec.rawSocket as EndState | null
  if (rec.error === null) rec.error = http?.errored ?? raw?.errored ?? null
  if (!rec.peerEnded && http?._readableState?.ended === true) rec.peerEnded = true
}

type WriteCounts = Socket & { _bytesDispatched?: unknown; _pendingData?: unknown }

/**
 * The socket's `bytesWritten` as it closes. Node's getter copies the stream's write buffer on
 * every read (`writableBuffer`, an array slice: ~0.1k instructions a connection, Node 26) to add
 * what is still queued; with nothing queued or pending, which is how a connection normally
 * ends, its count is `_bytesDispatched` alone, read directly. Anything else: the getter.
 */
function bytesWrittenAtClose(raw: WriteCounts): number {
  const dispatched = raw._bytesDispatched
  if (typeof dispatched === 'number' && raw.writableLength === 0 && raw._pendingData == null)
    return dispatched
  return raw.bytesWritten ?? 0
}

/**
 * Writes a closing connection's close facts on its record: its one reason (ours if we cut it,
 * else what the socket's end tells), the error code behind it, the state it closed in, its
 * final wire bytes, when it closed (`epochOffset` + `now`, clock ms) and its duration.
 * Returns the reason.
 */
export function settleClose(rec: ConnectionRecord, now: number, epochOffset: number): CloseReason {
  readEndState(rec)
  // Written straight into the close facts: one lookup, not a setter per fact.
  const facts = rec.closeFacts()
  const pending = facts.pendingReason
  const reason = pending ?? classifyClose(rec)
  // An error after our own cut is its echo (the peer sees a reset), not its cause.
  const code = pending === null ? (facts.error as { code?: unknown } | null)?.code : undefined
  facts.errorCode = typeof code === 'string' ? code : null
  facts.stateAtClose = rec.state as LiveState
  const raw = rec.rawSocket
  if (raw !== null) {
    facts.bytesRead = raw.bytesRead
    facts.bytesWritten = bytesWrittenAtClose(raw)
  }
  facts.closeReason = reason
  facts.closedAt = epochOffset + now
  facts.duration = now - rec.openedAtClock
  return reason
}
