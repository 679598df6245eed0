/**
 * Connection states. `new → handshaking → idle ⇄ active → closed`; plain HTTP
 * goes `new → active` on the first request byte; `upgraded` is a connection
 * handed to a WebSocket or CONNECT handler, where HTTP deadlines stop.
 */
export type ConnectionState = 'new' | 'handshaking' | 'idle' | 'active' | 'upgraded' | 'closed'

/** The states a live connection can be in (every state but `closed`). */
export const LIVE_STATES = ['new', 'handshaking', 'idle', 'active', 'upgraded'] as const
export type LiveState = (typeof LIVE_STATES)[number]
