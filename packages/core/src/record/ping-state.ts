/**
 * What a PING check keeps: an HTTP/2 session's `SessionFacts`, a WebSocket's
 * `WebSocketFacts` (websocket-facts.ts). Both are made on use, never on every record.
 */
export interface PingState {
  pingCheckAt: number
  pingSentAt: number
  lastReadBytes: number
  lastReadAt: number
  pingRtt: number | null
}
