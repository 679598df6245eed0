/**
 * Connection states. `new → handshaking → idle ⇄ active → closed`; plain HTTP
 * goes `new → active` on the first request byte; `upgraded` is a connection
 * handed to a WebSocket or CONNECT handler, where HTTP deadlines stop.
 */
export type ConnectionState = 'new' | 'handshaking' | 'idle' | 'active' | 'upgraded' | 'closed'

/** The states a live connection can be in (every state but `closed`). */
export const LIVE_STATES = ['new', 'handshaking', 'idle', 'active', 'upgraded'] as const
export type LiveState = (typeof LIVE_STATES)[number]

/**
 * Position of a live state in `LIVE_STATES`, for per-state counters kept in
 * arrays: a switch on interned strings is cheaper on the request path than a
 * property keyed by a variable string.
 */
export function liveStateIndex(state: LiveState): number {
  switch (state) {
    case 'new':
      return 0
    case 'handshaking':
      return 1
    case 'idle':
      return 2
    case 'active':
      return 3
    default:
      return 4
  }
}
