import diagnosticsChannel from 'node:diagnostics_channel'

/**
 * Node's own HTTP server channel `http.server.request.start`: published after a request head
 * is parsed and before the server emits 'request' (also for the requests Node answers itself:
 * 400 without Host, 417, 503 past maxRequestsPerSocket), so the tracker sees every request
 * before the application can answer it, without adding a 'request' listener (which would run
 * after the app's). Process-wide: one subscription is shared by every attached server,
 * counted by reference. A response's end is not taken from `http.server.response.finish`:
 * Node's publish of it cost ~0.45k instructions a Fastify keep-alive request on Node 26
 * (callgrind), for every response of every server; the requests whose end the engine wants
 * get a 'finish' listener instead (http1.ts), and the others' is found (engine.ts `settleAll`).
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

export function subscribeHttp(start: Handler): void {
  if (subscribers++ > 0) return
  onStart = start
  diagnosticsChannel.subscribe('http.server.request.start', start as (m: unknown) => void)
}

export function unsubscribeHttp(): void {
  if (subscribers === 0 || --subscribers > 0) return
  if (onStart !== null)
    diagnosticsChannel.unsubscribe('http.server.request.start', onStart as (m: unknown) => void)
  onStart = null
}
