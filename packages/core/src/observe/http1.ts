import type http from 'node:http'
import type { Socket } from 'node:net'
import { responseBlocked } from '../record/progress.js'
import type { ConnectionRecord } from '../record/record.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import { kRecord } from '../vocab/symbols.js'
import type { HttpServerMessage } from './http-channels.js'
import { sinkOf } from './sink.js'

/**
 * HTTP/1 on a guarded connection: Node's request cycle turned into sink calls (the parser's
 * message-begin hook, the request-start and response-finish channels), and the HTTP/1 ends
 * of a connection the engine closes (a 408 or a reset, the close after a last response, the
 * 503 to an upgrade over the cap). The server's own events are server.ts's; HTTP/2's are
 * http2.ts's, organised the same way.
 */

/**
 * Index of the message-begin callback on Node's HTTP parser (`kOnMessageBegin`
 * in src/node_http_parser.cc, 0 since Node 12; `_http_common.js` resets it per
 * connection). The server leaves it unset; the C++ parser calls it with the
 * parser as `this` when a request's first byte is parsed. That is how the
 * tracker learns that a keep-alive connection started a request, in O(1) per
 * request and without a per-chunk listener. If a Node version stops calling
 * it, the tracker notices at the next request head and falls back to polling.
 */
const kOnMessageBegin = 0

/** Node's own reply to a request that timed out before its response began. */
const REQUEST_TIMEOUT_RESPONSE = Buffer.from(
  'HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n\r\n',
  'latin1',
)

/** The answer to a WebSocket upgrade over `maxUpgradedConnections` (RFC 9110 §15.6.4). */
const SERVICE_UNAVAILABLE_RESPONSE = Buffer.from(
  'HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n',
  'latin1',
)

/** Deadlines after which a request that got no response yet is answered 408, as Node does. */
const ANSWER_408: ReadonlySet<CloseReason> = new Set<CloseReason>([
  'request_headers_timeout',
  'request_timeout',
  'min_request_body_data_rate',
])

type Marked = { [kRecord]?: ConnectionRecord }
type ParserLike = { socket: Socket | null; [kOnMessageBegin]?: unknown }

function onMessageBegin(this: ParserLike): void {
  const rec = (this.socket as (Socket & Marked) | null)?.[kRecord]
  if (rec !== undefined) sinkOf(rec)?.requestBegin(rec)
}

export function onRequestStart(message: HttpServerMessage): void {
  const rec = (message.socket as Socket & Marked)[kRecord]
  if (rec !== undefined) sinkOf(rec)?.requestHead(rec, message.request, message.response)
}
export function onResponseFinish(message: HttpServerMessage): void {
  const rec = (message.socket as Socket & Marked)[kRecord]
  // Node emits 'finish' even for a response whose socket we destroyed mid-write:
  // the record keeps the state it was cut in.
  if (rec === undefined || rec.pendingReason !== null || message.socket.destroyed) return
  const res = message.response as http.ServerResponse & { _last?: boolean }
  // `_last` is Node's "close after this response"; `shouldKeepAlive` false
  // means the client asked for it (Connection: close, HTTP/1.0).
  const last = res._last === true ? (res.shouldKeepAlive ? 'server' : 'client') : null
  const req = message.request
  if (!req.complete && !req.destroyed) {
    // Answered before the body was read (an early 401, a 413): Node goes on
    // reading the body to keep the connection usable, so it is not idle
    // until the body ends.
    sinkOf(rec)?.responseSent(rec, last)
    req.once('end', onBodyEndAfterResponse)
    return
  }
  sinkOf(rec)?.responseEnd(rec, last)
}
function onBodyEndAfterResponse(this: http.IncomingMessage): void {
  const rec = (this.socket as (Socket & Marked) | null)?.[kRecord]
  if (rec !== undefined) sinkOf(rec)?.responseEnd(rec, null)
}

/** Hooks the parser of a new HTTP/1 connection (see `kOnMessageBegin`). */
export function hookParser(socket: Socket): void {
  const parser = (socket as unknown as { parser?: ParserLike | null }).parser
  if (parser != null && parser[kOnMessageBegin] == null) parser[kOnMessageBegin] = onMessageBegin
}

/** Takes the hook off a connection the engine stops guarding. */
export function unhookParser(socket: Socket): void {
  const parser = (socket as unknown as { parser?: ParserLike | null }).parser
  if (parser != null && parser[kOnMessageBegin] === onMessageBegin) parser[kOnMessageBegin] = null
}

/** A WebSocket upgrade over `maxUpgradedConnections`: 503 before any handshake byte. */
export function refuseUpgrade(socket: Socket): void {
  socket.end(SERVICE_UNAVAILABLE_RESPONSE)
}

/**
 * Closes an HTTP/1 connection for `reason` (the record already carries it): a reset when the
 * client is not reading, else a 408 where Node would answer one (through `handOver`, the
 * application's 'clientError' listeners, when it has any), then the socket is destroyed.
 */
export function cutHttp1(
  rec: ConnectionRecord,
  reason: CloseReason,
  handOver: (socket: Socket, reason: CloseReason) => boolean,
): void {
  const socket = rec.httpSocket
  const raw = rec.rawSocket
  if (socket === null) {
    raw?.destroy()
    return
  }
  if (raw !== null && (reason === 'min_response_data_rate' || responseBlocked(raw))) {
    // The kernel still holds response bytes for a client that is not reading: a plain close
    // queues the FIN behind them and the orphaned socket goes on feeding the slow reader
    // (measured with slowhttptest -X: the attacker never saw the close, ~3.7 MB of kernel
    // memory per socket). A reset ends it at once.
    if (typeof raw.resetAndDestroy === 'function') raw.resetAndDestroy()
    else raw.destroy()
    return
  }
  if (ANSWER_408.has(reason) && socket.writable) {
    const res = (socket as unknown as { _httpMessage?: http.ServerResponse | null })._httpMessage
    // As Node: answer 408 only where no response byte has gone out yet, through the
    // application's 'clientError' listeners when it has any (Fastify's clientErrorHandler).
    if (res == null || !res.headersSent) {
      if (handOver(socket, reason)) return
      socket.write(REQUEST_TIMEOUT_RESPONSE)
    }
  }
  socket.destroy()
}

/** After the last response of a connection that is to close: flush, then close (unless Node does). */
export function endAfterResponse(rec: ConnectionRecord, nodeCloses: boolean): void {
  const socket = rec.httpSocket as (Socket & { destroySoon?: () => void }) | null
  if (nodeCloses || socket === null) return
  // Flush what the response wrote, then close (what Node does for `Connection: close`).
  if (typeof socket.destroySoon === 'function') socket.destroySoon()
  else socket.end()
}
