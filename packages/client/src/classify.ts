import type { CloseReason } from '@connguard/core'
import { RESET_CODES } from '@connguard/core/internal'
import type { ClientConnectionRecord } from './record.js'

/** undici's request timers: it destroys the socket when one fires (HTTP/1.1). */
const REQUEST_TIMEOUT_CODES = new Set(['UND_ERR_HEADERS_TIMEOUT', 'UND_ERR_BODY_TIMEOUT'])

/**
 * The reason for a close connguard did not decide itself, seen from the client:
 * `server_closed` = the server ended it (FIN, GOAWAY, `Connection: close`);
 * `client_closed` = this side ended it (a request aborted, the pool let it go);
 * `keep_alive_timeout` = undici closed it after its keep-alive idle time;
 * `connect_timeout` = undici's `connectTimeout` hit before TCP connected;
 * `request_timeout` = a request on it timed out (undici's headers/body timeout,
 * or an abort whose reason is a `TimeoutError`) and undici took it out of the
 * pool; `app_shutdown` = the dispatcher was closed or destroyed.
 */
export function classifyClientClose(
  rec: ClientConnectionRecord,
  shuttingDown: boolean,
): CloseReason {
  const err = rec.error as (Error & { code?: unknown }) | null
  const code = err !== null && typeof err.code === 'string' ? err.code : ''
  if (rec.establishedAtClock < 0) {
    // undici's connectTimeout: during TCP connect, or during TLS (the same timer).
    if (code === 'UND_ERR_CONNECT_TIMEOUT') {
      return rec.state === 'handshaking' ? 'tls_handshake_timeout' : 'connect_timeout'
    }
    if (RESET_CODES.has(code) || (err === null && rec.peerEnded)) return 'connection_reset'
    if (rec.state === 'handshaking' && err !== null) return 'tls_handshake_failed'
    if (shuttingDown) return 'app_shutdown'
    return err === null ? 'client_closed' : 'error'
  }
  if (err !== null) {
    if (REQUEST_TIMEOUT_CODES.has(code)) return 'request_timeout'
    if (RESET_CODES.has(code)) return 'connection_reset'
    if (code === 'UND_ERR_INFO') {
      if (err.message === 'socket idle timeout') return 'keep_alive_timeout'
      if (err.message === 'aborted') {
        const reason = rec.lastRequestError as { name?: unknown } | null
        return reason?.name === 'TimeoutError' ? 'request_timeout' : 'client_closed'
      }
      // 'reset': the response said `Connection: close` (or the request asked for it).
      if (err.message === 'reset') return 'server_closed'
    }
    // undici's Client or Pool let the connection go (closed, destroyed, or dropped from the pool).
    if (code === 'UND_ERR_CLOSED' || code === 'UND_ERR_DESTROYED') {
      return shuttingDown ? 'app_shutdown' : 'client_closed'
    }
    // "other side closed", or a GOAWAY.
    if (code === 'UND_ERR_SOCKET') return 'server_closed'
  }
  if (rec.goaway || rec.peerEnded) return 'server_closed'
  if (shuttingDown) return 'app_shutdown'
  return err === null ? 'client_closed' : 'error'
}
