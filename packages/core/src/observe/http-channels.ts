import diagnosticsChannel from 'node:diagnostics_channel'

/**
 * Node's own HTTP server channels. `request.start` is published after a
 * request head is parsed and before the server emits 'request', so the tracker
 * sees every request before the application can answer it, without adding a
 * 'request' listener (which would run after the app's). They are process-wide:
 * one subscription is shared by every attached server, counted by reference.
 */
export interface HttpServerMessage {
  request: import('node:http').IncomingMessage
  response: import('node:http').ServerResponse
  socket: import('node:net').Socket
  server: import('node:http').Server
}

type Handler = (message: HttpServerMessage) => void

let subscribers = 0
let onStart: Handler | null = null
let onFinish: Handler | null = null

export function subscribeHttp(start: Handler, finish: Handler): void {
  if (subscribers++ > 0) return
  onStart = start
  onFinish = finish
  diagnosticsChannel.subscribe('http.server.request.start', start as (m: unknown) => void)
  diagnosticsChannel.subscribe('http.server.response.finish', finish as (m: unknown) => void)
}

export function unsubscribeHttp(): void {
  if (subscribers === 0 || --subscribers > 0) return
  if (onStart !== null)
    diagnosticsChannel.unsubscribe('http.server.request.start', onStart as (m: unknown) => void)
  if (onFinish !== null)
    diagnosticsChannel.unsubscribe('http.server.response.finish', onFinish as (m: unknown) => void)
  onStart = null
  onFinish = null
}
