/** The two limits and the sweep's resolution (HTTP/2: the tracker's options; WebSocket: `webSocket`'s). */
export interface PingLimits {
  readonly pingInterval: number
  readonly pingTimeout: number
  readonly sweepInterval: number
}
