import type { Socket } from 'node:net'
import type { CloseReason } from './close-reasons.js'
import type { ConnectionRecord } from './record.js'

/** Error codes that mean the peer or the network tore the connection down. */
const RESET_CODES = new Set([
  'ECONNRESET',
  'EPIPE',
  'ECONNABORTED',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
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
