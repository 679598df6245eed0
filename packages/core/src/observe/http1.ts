import type http from 'node:http'
import type { Socket } from 'node:net'
import { responseBlocked } from '../record/progress.js'
import type { ConnectionRecord } from '../record/record.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import { kRecord } from '../vocab/symbols.js'
import type { HttpServerMessage } from './http-channels.js'
import { type ServerBinding, sinkOf } from './sink.js'

/**
 * HTTP/1 on a guarded connection: Node's request cycle turned into sink calls (the parser's
 * per-read hook, the request-start channel, a response's 'finish' where the engine wants it,
 * Node's connections list),
 * and the HTTP/1 ends
 * of a connection the engine closes (a 408 or a reset, the close after a last response, the
 * 503 to an upgrade over the cap). The server's own events are server.ts's; HTTP/2's are
 * http2.ts's, organised the same way.
 */

/**
 * Indexes of two callbacks on Node's HTTP parser (src/node_http_parser.cc; the same since
 * Node 12): `kOnMessageBegin` (0), which Node leaves unset and the C++ parser calls when a
 * request's first byte is parsed, and `kOnExecute` (5), Node's own callback after each read
 * of a socket whose bytes the parser takes in C++ (`parser.consume`: every TCP and TLS socket
 * of an http or https server). Both are called with the parser as `this`.
 *
 * A consumed socket's parser is hooked at `kOnExecute` until its first request head: after
 * Node's callback, a read that left an idle connection idle began a head that has not arrived
 * whole (a slow one, or a trickle), and the engine is told its first byte came
 * (`requestBegin`). A head that arrives whole in a read begins and completes there, and
 * `requestHead` counts both. Once a request head has come, Node's own callback is put back
 * where Node's connections list is read on Node's clock (`headsListed`): a later head is seen
 * by the sweep (`sweepHeads`), so a keep-alive request pays no JS call a read (~0.2k
 * instructions a Fastify keep-alive request saved on Node 26, callgrind). The message-begin
 * hook did the same with one C++-to-JS callback a request (~900 instructions of Node's
 * callback scope).
 * A parser fed from JS (a socket Node does not consume) keeps the message-begin hook.
 */
const kOnMessageBegin = 0
const kOnExecute = 5
/** Node's own `kOnExecute` callback of a hooked parser (a bound function per connection). */
const kNodeOnExecute = Symbol('connguard.nodeOnExecute')
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
type ParserLike = {
  socket: Socket | null
  _consumed?: boolean
  [kOnMessageBegin]?: unknown
  [kOnExecute]?: unknown
  [kNodeOnExecute]?: (ret: unknown) => unknown
}

function onMessageBegin(this: ParserLike): void {
  const rec = (this.socket as (Socket & Marked) | null)?.[kRecord]
  if (rec !== undefined) sinkOf(rec)?.requestBegin(rec)
}

function onExecute(this: ParserLike, ret: unknown): unknown {
  const result = (this[kNodeOnExecute] as (ret: unknown) => unknown)(ret)
  const socket = this.socket as (Socket & Marked) | null
  const rec = socket?.[kRecord]
  if (rec !== undefined && rec.requests > 0 && (rec.binding as ServerBinding | null)?.headsListed) {
    // A head came: the next ones are the sweep's (Node's list). Node's callback alone from now.
    this[kOnExecute] = this[kNodeOnExecute]
    return result
  }
  // Bytes that left an idle connection idle: a head began and is still arriving. Not when
  // the read was one or two bytes: a stray CRLF between requests, which the parser skips
  // (RFC 9112 §2.2), is not a request; a head trickled a byte or two a read is still bounded,
  // by Node's list (`sweepHeads`). (A parse error was handled by Node's callback: the
  // socket is destroyed by then.)
  if (
    rec !== undefined &&
    typeof ret === 'number' &&
    ret > 2 &&
    rec.inFlight === 0 &&
    (rec.state === 'idle' || rec.state === 'new') &&
    !(socket as Socket).destroyed
  ) {
    sinkOf(rec)?.requestBegin(rec)
  }
  return result
}

export function onRequestStart(message: HttpServerMessage): void {
  const rec = (message.socket as Socket & Marked)[kRecord]
  if (rec === undefined) return
  const res = message.response
  // Published before Node adds its own 'finish' listener: ours runs first, socket attached.
  if (sinkOf(rec)?.requestHead(rec, message.request, res) === true) reportEnd(res)
}

type Response = http.ServerResponse & { _last?: boolean }

/** Who ends the connection after `res`: `_last` is Node's "close after this response". */
function lastOf(res: Response): 'client' | 'server' | null {
  // `shouldKeepAlive` false means the client asked for it (Connection: close, HTTP/1.0).
  return res._last === true ? (res.shouldKeepAlive ? 'server' : 'client') : null
}

/**
 * Whether `res` finished with its request read whole (undefined while not), and who ends the
 * connection after it: how the engine finds the end of a request whose end nothing reports.
 */
export function finishedResponse(res: Response): 'client' | 'server' | null | undefined {
  return res.writableFinished && res.req.complete ? lastOf(res) : undefined
}

/** `responseEnd` for `res` when it finishes (a shared listener: nothing allocated per request). */
export function reportEnd(res: http.ServerResponse): void {
  res.on('finish', onResponseFinish)
}

function onResponseFinish(this: Response): void {
  const req = this.req
  // Node detaches the socket from the response in its own 'finish' listener, which runs
  // before one added after the head: the request keeps it.
  const socket = req.socket as (Socket & Marked) | null
  const rec = socket?.[kRecord]
  // Node emits 'finish' even for a response whose socket we destroyed mid-write:
  // the record keeps the state it was cut in.
  if (rec === undefined || rec.pendingReason !== null || (socket as Socket).destroyed) return
  const last = lastOf(this)
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

/**
 * Hooks the parser of a new HTTP/1 connection (see `kOnExecute`); false when the socket has
 * no parser to hook (the engine then polls idle connections for a request's first byte).
 */
export function hookParser(socket: Socket): boolean {
  const parser = (socket as unknown as { parser?: ParserLike | null }).parser
  if (parser == null) return false
  const node = parser[kOnExecute]
  if (parser._consumed === true && typeof node === 'function') {
    if (node !== onExecute) {
      parser[kNodeOnExecute] = node as (ret: unknown) => unknown
      parser[kOnExecute] = onExecute
    }
  } else if (parser[kOnMessageBegin] == null) parser[kOnMessageBegin] = onMessageBegin
  return true
}

/** Takes the hook off a connection the engine stops guarding. */
export function unhookParser(socket: Socket): void {
  const parser = (socket as unknown as { parser?: ParserLike | null }).parser
  if (parser == null) return
  if (parser[kOnExecute] === onExecute) parser[kOnExecute] = parser[kNodeOnExecute]
  if (parser[kOnMessageBegin] === onMessageBegin) parser[kOnMessageBegin] = null
}

/**
 * Node's list of a server's HTTP/1 parsers (`server[Symbol(http.server.connections)]`, since
 * Node 18.14): each parser's message start is kept in C++, and `expired(headersTimeout,
 * requestTimeout)` returns the parsers whose head or request ran past them, taking them off
 * its list of active ones. Node's own check uses it every 30 s; with its timeouts at 0
 * (aligned to the guard's) Node's check finds nothing.
 */
export interface ConnectionsList {
  active(): ParserLike[]
  expired(headersTimeout: number, requestTimeout: number): ParserLike[]
}

/** The server's connections list, if this Node keeps one. */
export function connectionsListOf(server: object): ConnectionsList | null {
  for (const key of Object.getOwnPropertySymbols(server)) {
    if (key.description !== 'http.server.connections') continue
    const list = (server as Record<symbol, unknown>)[key] as ConnectionsList | undefined
    return typeof list?.expired === 'function' && typeof list.active === 'function' ? list : null
  }
  return null
}

/**
 * Node's list, once a sweep. First the connections idle after a response whose parser is
 * reading a message again (`active()`): their next head has begun, and the engine is told
 * (`begun`) up to one sweep after its first byte. Then the records whose current head has been
 * arriving for `headersTimeout` ms or more (`expired()`), by Node's own clock from that first
 * byte: a later head, or one begun behind a response the client had not yet read. C++ walks
 * the parsers reading a message (or accepted and silent: their records have no request yet,
 * and are left to the hook and the heap): O(active), no JS per request.
 */
export function sweepHeads(
  list: ConnectionsList,
  headersTimeout: number,
  begun: (rec: ConnectionRecord) => void,
  expired: (rec: ConnectionRecord) => void,
): void {
  const active = list.active()
  for (let i = 0; i < active.length; i++) {
    const rec = ((active[i] as ParserLike).socket as (Socket & Marked) | null)?.[kRecord]
    if (rec !== undefined && rec.requests > 0 && rec.state === 'idle' && rec.session === null)
      begun(rec)
  }
  if (headersTimeout === 0) return
  const parsers = list.expired(headersTimeout, 0)
  for (let i = 0; i < parsers.length; i++) {
    const rec = ((parsers[i] as ParserLike).socket as (Socket & Marked) | null)?.[kRecord]
    if (rec !== undefined) expired(rec)
  }
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
