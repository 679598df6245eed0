import diagnosticsChannel from 'node:diagnostics_channel'

/**
 * The tracker's events, also published on `node:diagnostics_channel` so APM
 * agents and loggers can observe every guarded server without a reference to
 * its tracker. Publishing happens only when a channel has subscribers.
 */
export const openChannel = diagnosticsChannel.channel('connguard:connection:open')
export const transitionChannel = diagnosticsChannel.channel('connguard:connection:transition')
export const closeChannel = diagnosticsChannel.channel('connguard:connection:close')
/** The tracker's `'pressure'` event: `{ ...PressureSnapshot, tracker }`. */
export const pressureChannel = diagnosticsChannel.channel('connguard:pressure')
/** The tracker's `'drain'` event: `{ phase, tracker }` as a drain enters `delay`, `closing`, `done`. */
export const drainChannel = diagnosticsChannel.channel('connguard:drain')
/** HTTP/2: one stream was reset by the guard while its session went on. */
export const streamCutChannel = diagnosticsChannel.channel('connguard:stream:cut')

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
