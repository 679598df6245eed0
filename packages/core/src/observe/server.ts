import http from 'node:http'
import type { Http2Session } from 'node:http2'
import https from 'node:https'
import type { Socket } from 'node:net'
import tls, { type TLSSocket } from 'node:tls'
import { type FrameworkSettings, handshakeKeyOf, readServerSettings } from '../options/adopt.js'
import { MAX_DURATION, type ResolvedOptions } from '../options/options.js'
import { type ListenEnd, listenEnd } from '../record/addresses.js'
import type { ConnectionRecord, StreamGuard } from '../record/record.js'
import { readTlsInfo } from '../record/tls-info.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import {
  AlreadyAttachedError,
  RequestTimeoutError,
  UnsupportedServerError,
} from '../vocab/errors.js'
import { kRecord, kTracker } from '../vocab/symbols.js'
import { KEEP_ALIVE_BUFFER_REPLACED } from '../vocab/warnings.js'
import { subscribeHttp, unsubscribeHttp } from './http-channels.js'
import {
  type ConnectionsList,
  connectionsListOf,
  cutHttp1,
  endAfterResponse,
  finishedResponse,
  hookParser,
  onRequestStart,
  refuseUpgrade,
  reportEnd,
  sweepHeads,
  unhookParser,
} from './http1.js'
import {
  bindSession,
  cutSession,
  goawaySession,
  pingSession,
  rawSocketOf,
  releaseSession,
  resetStream,
} from './http2.js'
import { type BindingSink, type ServerBinding, sinkOf } from './sink.js'

/**
 * A guarded server: what every connection of it shares whatever its protocol (the accept,
 * the TLS handshake's end, the raw socket's close and errors, Node's timers on the server),
 * with the protocol's own part in http1.ts and http2.ts.
 */

type Marked = { [kRecord]?: ConnectionRecord }
type TrackedServer = (http.Server | https.Server) & {
  [kTracker]?: BindingSink
  /** Node 24.6+ and 22 (nodejs/node#59243); not in Node 20 or its types. */
  keepAliveTimeoutBuffer?: number
}

/** `node:http2` servers (their classes are not exported): h2c, and TLS with or without HTTP/1.1 fallback. */
function isHttp2Server(server: object): boolean {
  const name = (server as { constructor?: { name?: string } }).constructor?.name
  return (
    (name === 'Http2Server' || name === 'Http2SecureServer') &&
    typeof (server as { listen?: unknown }).listen === 'function'
  )
}

export function bindServer(
  sink: BindingSink,
  server: object,
  framework?: FrameworkSettings,
): ServerBinding {
  const h2 = server !== null && typeof server === 'object' && isHttp2Server(server)
  const secure = server instanceof https.Server || (h2 && server instanceof tls.Server)
  if (!h2 && !secure && !(server instanceof http.Server)) {
    const name = (server as { constructor?: { name?: string } })?.constructor?.name ?? typeof server
    throw new UnsupportedServerError(
      `expected a node:http, node:https or node:http2 server, got ${name}`,
    )
  }
  const owner = (server as TrackedServer)[kTracker]
  if (owner !== undefined && owner !== sink) throw new AlreadyAttachedError()
  // Adopt, never override: the application's own timeouts become the guard's defaults.
  sink.adopt(readServerSettings(server, framework))
  return new HttpServerBinding(sink, server as TrackedServer, secure, h2)
}

// Socket listeners are shared functions (`this` is the socket): no closure per connection.
function onRawClose(this: Socket & Marked): void {
  const rec = this[kRecord]
  if (rec !== undefined) sinkOf(rec)?.closed(rec)
}
/**
 * A guarded socket's own `emit`: its 'close' reaches the tracker once the socket's listeners
 * have run, even when one throws. Not a 'close' listener: Node already listens for 'close'
 * on every server socket and adds a listener per request, so a second permanent listener
 * makes an array that V8 grows to 19 slots on the first request (~200 B a connection,
 * measured) and puts a push and a splice on every request. The prototype's `emit` is looked
 * up on each call, so a later patch of it (an APM agent) still runs.
 */
function emitTracked(this: Socket & Marked, event: string | symbol): boolean {
  try {
    // biome-ignore lint/complexity/noArguments: forwards every argument without copying them
    return Reflect.apply((Object.getPrototypeOf(this) as Socket).emit, this, arguments)
  } finally {
    if (event === 'close') onRawClose.call(this)
    else if (event === 'end' || event === 'finish' || event === 'timeout') onEnding(this)
  }
}
/**
 * The connection is ending (the peer's FIN, our last bytes sent, Node's socket timeout) and
 * its handle is still open: the last moment its ends can be read, for a close listener that
 * came after the accept (see the engine's `endsWanted`).
 */
function onEnding(socket: Socket & Marked): void {
  const rec = socket[kRecord]
  if (rec !== undefined) sinkOf(rec)?.keepEnds(rec)
}
function onSocketError(this: Socket & Marked, err: Error): void {
  const rec = this[kRecord]
  if (rec !== undefined && rec.error === null) rec.error = err
}
function onSocketEnd(this: Socket & Marked): void {
  const rec = this[kRecord]
  if (rec !== undefined) rec.peerEnded = true
}
/**
 * The binding of one guarded server, whatever its protocols: the server's own events
 * (accept, TLS, upgrade, HTTP/2 session), its timers, and the engine's requests on a
 * connection, handed to the protocol that carries it (http1.ts, http2.ts).
 */
class HttpServerBinding implements ServerBinding {
  readonly sink: BindingSink
  readonly #server: TrackedServer
  readonly #secure: boolean
  readonly #h2: boolean
  readonly #onSession = (session: Http2Session) => this.#session(session)
  readonly #saved: {
    maxRequestsPerSocket: number | null | undefined
    headersTimeout: number
    requestTimeout: number
    keepAliveTimeout: number
    keepAliveTimeoutBuffer: number | undefined
    handshake: unknown
  }
  /** What Node's `keepAliveTimeout` and `keepAliveTimeoutBuffer` are set to while attached. */
  readonly #nodeKeepAlive: { timeout: number; buffer: number | undefined }
  readonly #handshakeKey: symbol | undefined
  readonly #onConnection = (socket: Socket) => this.#accept(socket)
  /** The server's listening end (see `listenEnd`); undefined until read after each 'listening'. */
  #listenEnd: ListenEnd | null | undefined = undefined
  /**
   * Node's connections list of this server: read at attach and at 'listening' (Node creates
   * it then, in a listener of its own that runs before ours), not per sweep. An HTTP/2 server
   * has none: its HTTP/1.1 fallback connections get the engine's polls.
   */
  #connections: ConnectionsList | null = null
  /**
   * `#connections` read and the engine on Node's clock (see `BindingSink.headsListed`): a field
   * set where either changes, not a getter, as the parser's per-read hook reads it.
   */
  headsListed = false
  readonly #onListening = () => {
    this.#listenEnd = undefined
    this.#setConnections(this.#connections ?? connectionsListOf(this.#server))
  }
  #setConnections(list: ConnectionsList | null): void {
    this.#connections = list
    this.headsListed = list !== null && this.sink.nodeClock
  }
  readonly #onSecure = (socket: TLSSocket) => this.#secureConnection(socket)
  readonly #onTlsClientError = (err: Error, socket: TLSSocket) => this.#tlsClientError(err, socket)
  readonly #onUpgrade = (req: http.IncomingMessage, socket: Socket) => this.#upgrade(req, socket)
  readonly #onClientError = (err: Error, socket: Socket & Marked) => {
    // Our own timeout, handed to the application's listeners: the record has its reason.
    if (!(err instanceof RequestTimeoutError)) onSocketError.call(socket, err)
  }
  /**
   * Server events whose mere listener count changes what Node does: with an
   * 'upgrade' listener Node hands `Upgrade:` requests over instead of serving
   * them; with a 'clientError' listener it no longer answers 400/408 itself.
   * Ours is present exactly while the application has one, first in line.
   */
  // biome-ignore lint/suspicious/noExplicitAny: EventEmitter listener signature
  readonly #shadowed = new Map<string, (...args: any[]) => void>([
    ['upgrade', this.#onUpgrade],
    ['connect', this.#onUpgrade],
    // With an application clientError listener (Fastify has one), parse and
    // read errors reach only that listener, never the socket's 'error' event.
    ['clientError', this.#onClientError],
  ])
  readonly #onNewListener = (event: string | symbol, listener: unknown) =>
    this.#listenerAdded(event, listener)
  readonly #onRemoveListener = (event: string | symbol) => this.#listenerRemoved(event)

  constructor(sink: BindingSink, server: TrackedServer, secure: boolean, h2: boolean) {
    this.sink = sink
    this.#server = server
    this.#secure = secure
    this.#h2 = h2
    this.#setConnections(connectionsListOf(server))
    // tls.Server keeps its handshake timeout under a private symbol; the
    // TLSSocket of each connection reads it at accept.
    this.#handshakeKey = handshakeKeyOf(server)
    this.#saved = {
      headersTimeout: server.headersTimeout,
      requestTimeout: server.requestTimeout,
      keepAliveTimeout: server.keepAliveTimeout,
      keepAliveTimeoutBuffer: server.keepAliveTimeoutBuffer,
      maxRequestsPerSocket: server.maxRequestsPerSocket,
      handshake:
        this.#handshakeKey === undefined
          ? undefined
          : (server as unknown as Record<symbol, unknown>)[this.#handshakeKey],
    }
    this.#nodeKeepAlive = nodeKeepAlive(
      sink.options,
      typeof server.keepAliveTimeoutBuffer === 'number',
    )
    const buffer = server.keepAliveTimeoutBuffer
    if (typeof buffer === 'number' && buffer > NODE_KEEP_ALIVE_BUFFER) {
      // Node held idle connections this long past the advertised timeout; the guard closes at
      // the timeout itself. Not adoptable (the header would then promise more): said instead.
      // A shorter buffer (0: close as advertised) is what the guard does, one sweep late at most.
      KEEP_ALIVE_BUFFER_REPLACED.emit(buffer, sink.options.keepAliveTimeout)
    }
    this.#alignTimers()
    server[kTracker] = sink
    if (h2) {
      // An h2c session is created inside Node's own 'connection' listener: ours must run first.
      server.prependListener('connection', this.#onConnection)
      server.on('session', this.#onSession)
    } else {
      server.on('connection', this.#onConnection)
    }
    if (secure) {
      server.on('secureConnection', this.#onSecure)
      server.on('tlsClientError', this.#onTlsClientError)
    }
    for (const [event, listener] of this.#shadowed) {
      if (server.listenerCount(event) > 0) server.prependListener(event, listener)
    }
    server.on('listening', this.#onListening)
    server.on('newListener', this.#onNewListener)
    server.on('removeListener', this.#onRemoveListener)
    subscribeHttp(onRequestStart)
  }

  /**
   * The guard's deadlines are the ones in force. Node's header and request
   * timers (checked every 30 s, and `requestTimeout` cuts healthy uploads) and
   * its TLS handshake timer are switched off; `keepAliveTimeout` is set to the
   * guard's so the `Keep-Alive: timeout=` header matches the enforced idle
   * deadline. Node's own idle timer fires `keepAliveTimeoutBuffer` after that
   * (1 s by default; fixed at 1 s on Node 20): where the buffer can be set, it
   * is set one sweep interval longer, so Node's timer never fires before ours.
   */
  #alignTimers(): void {
    const server = this.#server
    const o = this.sink.options
    // HTTP/2 servers have these only with HTTP/1.1 fallback (allowHTTP1).
    if (typeof server.headersTimeout === 'number') server.headersTimeout = 0
    if (typeof server.requestTimeout === 'number') server.requestTimeout = 0
    if (typeof server.keepAliveTimeout === 'number' || !this.#h2) {
      const { timeout, buffer } = this.#nodeKeepAlive
      if (buffer !== undefined) server.keepAliveTimeoutBuffer = buffer
      server.keepAliveTimeout = timeout
    }
    if (this.#handshakeKey !== undefined)
      (server as unknown as Record<symbol, unknown>)[this.#handshakeKey] = 0
    // Node answers requests pipelined past the limit with 503 instead of running them (RFC 9112 §9.6).
    if (o.maxRequestsPerConnection > 0) server.maxRequestsPerSocket = o.maxRequestsPerConnection
  }

  /**
   * Node's `server.close()` calls `closeIdleConnections()`, which destroys every idle
   * connection at once: the client's next request, already on the wire, gets ECONNRESET
   * (measured: 12 failed requests over 3 drains of a plain Node server). While a drain
   * closes, the server's own property shadows the prototype's: idle connections are closed
   * by the drain's idle grace instead. Node 18.2+; HTTP/2 servers have no such method.
   */
  drainStarted(): void {
    const server = this.#server as TrackedServer & { closeIdleConnections?: () => void }
    if (
      typeof server.closeIdleConnections !== 'function' ||
      Object.hasOwn(server, 'closeIdleConnections')
    )
      return
    server.closeIdleConnections = closeIdleConnectionsDuringDrain
  }

  drainEnded(): void {
    const server = this.#server as { closeIdleConnections?: () => void }
    if (server.closeIdleConnections === closeIdleConnectionsDuringDrain)
      delete server.closeIdleConnections
  }

  detach(): void {
    const server = this.#server
    this.drainEnded()
    server.removeListener('connection', this.#onConnection)
    server.removeListener('session', this.#onSession)
    server.removeListener('secureConnection', this.#onSecure)
    server.removeListener('tlsClientError', this.#onTlsClientError)
    server.removeListener('listening', this.#onListening)
    server.removeListener('newListener', this.#onNewListener)
    server.removeListener('removeListener', this.#onRemoveListener)
    for (const [event, listener] of this.#shadowed) server.removeListener(event, listener)
    if (server[kTracker] === this.sink) delete server[kTracker]
    // Restore what we changed, unless someone changed it since.
    const saved = this.#saved
    if (server.headersTimeout === 0) server.headersTimeout = saved.headersTimeout
    if (server.requestTimeout === 0) server.requestTimeout = saved.requestTimeout
    const ours = this.#nodeKeepAlive
    if (server.keepAliveTimeout === ours.timeout) {
      if (saved.keepAliveTimeout === undefined)
        delete (server as { keepAliveTimeout?: number }).keepAliveTimeout
      else server.keepAliveTimeout = saved.keepAliveTimeout
    }
    if (ours.buffer !== undefined && server.keepAliveTimeoutBuffer === ours.buffer) {
      server.keepAliveTimeoutBuffer = saved.keepAliveTimeoutBuffer
    }
    const maxRequests = this.sink.options.maxRequestsPerConnection
    if (maxRequests > 0 && server.maxRequestsPerSocket === maxRequests) {
      server.maxRequestsPerSocket = saved.maxRequestsPerSocket as number
    }
    const key = this.#handshakeKey
    if (key !== undefined && (server as unknown as Record<symbol, unknown>)[key] === 0) {
      ;(server as unknown as Record<symbol, unknown>)[key] = saved.handshake
    }
    unsubscribeHttp()
  }

  #accept(raw: Socket & Marked): void {
    if (raw[kRecord] !== undefined) return
    const rec = this.sink.open(raw, this.#secure, this)
    raw[kRecord] = rec
    // No listener per connection: its close comes through `emitTracked`, and the error
    // and the peer's FIN are read from the socket when it closes (`_closed`). Each
    // listener added to a socket Node already listens on costs an array (~100–200 B).
    raw.emit = emitTracked
    if (!this.#secure && !hookParser(raw)) this.sink.unhooked()
  }

  #secureConnection(socket: TLSSocket & Marked): void {
    const raw = (socket as unknown as { _parent?: Socket & Marked })._parent
    const rec = raw?.[kRecord]
    if (rec === undefined || rec.state === 'closed') return
    if (rec.session !== null) {
      // An h2 session was set up already, inside Node's listener (which runs before this
      // one). Under TLS only the TLSSocket sees the peer's FIN: listen for it, nothing more
      // (never write to a socket under a live session).
      socket[kRecord] = rec
      socket.on('end', onSocketEnd)
      // The session's error reaches the TLS socket first: listening is safe, writing is not.
      socket.on('error', onSocketError)
      rec.httpSocket = socket
      return
    }
    socket[kRecord] = rec
    if (!hookParser(socket)) this.sink.unhooked()
    this.sink.established(rec, socket, readTlsInfo(socket))
  }

  #tlsClientError(err: Error, socket: TLSSocket): void {
    const raw = (socket as unknown as { _parent?: Socket & Marked })._parent
    const rec = raw?.[kRecord]
    if (rec !== undefined && rec.error === null) rec.error = err
  }

  #upgrade(req: http.IncomingMessage, socket: Socket & Marked): void {
    const rec = socket[kRecord]
    // Over `maxUpgradedConnections`: 503 before any handshake byte. Our listener runs first;
    // the application's then finds the socket no longer writable (`ws` destroys it).
    if (rec !== undefined && this.sink.upgraded(rec, req) !== null && socket.writable) {
      refuseUpgrade(socket)
    }
  }

  #session(session: Http2Session): void {
    const raw = rawSocketOf(session) as Socket & Marked
    let rec = raw[kRecord]
    if (rec === undefined) {
      this.#accept(raw)
      rec = raw[kRecord]
    }
    if (rec === undefined || rec.state === 'closed' || rec.pendingReason !== null) return
    bindSession(this.sink, rec, session)
  }

  listenEnd(): ListenEnd | null {
    if (this.#listenEnd === undefined) this.#listenEnd = listenEnd(this.#server)
    return this.#listenEnd
  }

  ping(rec: ConnectionRecord): void {
    pingSession(rec)
  }

  goaway(rec: ConnectionRecord): void {
    goawaySession(rec)
  }

  resetStream(guard: StreamGuard): void {
    resetStream(guard)
  }

  cut(rec: ConnectionRecord, reason: CloseReason): void {
    if (rec.session !== null) cutSession(rec, reason)
    else cutHttp1(rec, reason, this.#handOver)
  }

  /** HTTP/1: a timeout for the application's 'clientError' listeners (see `#clientError`). */
  readonly #handOver = (socket: Socket, reason: CloseReason): boolean =>
    this.#clientError(socket, reason)

  /**
   * Hands a timeout to the application's 'clientError' listeners as Node hands its own
   * (`socketOnError` in _http_server.js: an error with code ERR_HTTP_REQUEST_TIMEOUT, Node's
   * own error listener taken off the socket first so a listener's `socket.destroy(err)` is not
   * reported twice). False when the application has none: the guard answers 408 itself. A
   * listener need not close the socket: whatever it wrote is flushed, then the socket closes.
   */
  #clientError(socket: Socket, reason: CloseReason): boolean {
    const server = this.#server
    const ours = this.#onClientError
    if (!server.listeners('clientError').some((l) => l !== ours)) return false
    for (const l of socket.listeners('error')) {
      if ((l as { name?: string }).name === 'socketOnError')
        socket.removeListener('error', l as (err: Error) => void)
    }
    // A listener's socket.destroy(err) emits 'error': something must listen, as Node's noop does.
    if (socket.listenerCount('error') === 0) socket.on('error', noop)
    try {
      server.emit('clientError', new RequestTimeoutError(reason), socket)
    } catch (err) {
      // A listener that throws must not stop the sweep; it surfaces as Node's would, uncaught.
      process.nextTick(() => {
        throw err
      })
    }
    if (!socket.destroyed) (socket as Socket & { destroySoon(): void }).destroySoon()
    return true
  }

  endAfterResponse(rec: ConnectionRecord, nodeCloses: boolean): void {
    endAfterResponse(rec, nodeCloses)
  }

  finishedResponse(res: http.ServerResponse): 'client' | 'server' | null | undefined {
    return finishedResponse(res)
  }

  reportEnd(res: http.ServerResponse): void {
    reportEnd(res)
  }

  sweepHeads(
    headersTimeout: number,
    begun: (rec: ConnectionRecord) => void,
    expired: (rec: ConnectionRecord) => void,
  ): void {
    if (this.#connections !== null) sweepHeads(this.#connections, headersTimeout, begun, expired)
  }

  release(rec: ConnectionRecord): void {
    releaseSession(rec)
    for (const socket of [rec.rawSocket, rec.httpSocket] as ((Socket & Marked) | null)[]) {
      if (socket === null) continue
      // Assigned, not deleted: deleting an own property turns the socket into a slow
      // dictionary-mode object. The prototype's `emit` behaves as before.
      if (socket.emit === emitTracked) socket.emit = (Object.getPrototypeOf(socket) as Socket).emit
      socket.removeListener('error', onSocketError)
      socket.removeListener('end', onSocketEnd)
      unhookParser(socket)
      delete socket[kRecord]
    }
    rec.binding = null
  }

  /** Keeps our shadow listener present exactly while the application has one. */
  #listenerAdded(event: string | symbol, listener: unknown): void {
    if (typeof event !== 'string') return
    const ours = this.#shadowed.get(event)
    if (ours === undefined || listener === ours) return
    const server = this.#server
    // 'newListener' runs before the application's listener is added: ours comes first.
    if (!server.listeners(event).includes(ours)) server.prependListener(event, ours)
  }

  #listenerRemoved(event: string | symbol): void {
    if (typeof event !== 'string') return
    const ours = this.#shadowed.get(event)
    if (ours === undefined) return
    const server = this.#server
    const listeners = server.listeners(event)
    if (listeners.length === 1 && listeners[0] === ours) server.removeListener(event, ours)
  }
}

/** A draining server's `closeIdleConnections`: the drain's idle grace closes them (see `drainStarted`). */
function closeIdleConnectionsDuringDrain(): void {}

/** Node's idle timer runs this long past `keepAliveTimeout`: its default buffer, fixed on Node 20. */
const NODE_KEEP_ALIVE_BUFFER = 1_000

/**
 * Node's `keepAliveTimeout` (it also makes the `Keep-Alive: timeout=` header) and, where the
 * server has one, its `keepAliveTimeoutBuffer` while attached. Node arms its own idle timer at
 * keepAliveTimeout + buffer after each response; the guard closes an idle connection at
 * keepAliveTimeout, late by at most two sweeps (a keep-alive request's end is settled by the next
 * sweep, engine.ts `settle`, and its deadline popped by a sweep). Measured (Node 22.23, 24.21): a
 * server made with `keepAliveTimeoutBuffer: 0` closed at the keep-alive timeout before the sweep
 * could, and the record said `server_closed`. So the buffer becomes two sweep intervals + Node's
 * own 1 s. Node 20 has no such property: its buffer is 1 s, enough for the default sweepInterval
 * (250 ms) and any below 500 ms.
 * Past 2^31 - 1 ms a timer overflows and Node warns on every response.
 */
function nodeKeepAlive(
  o: ResolvedOptions,
  settable: boolean,
): { timeout: number; buffer: number | undefined } {
  const buffer = settable ? 2 * o.sweepInterval + NODE_KEEP_ALIVE_BUFFER : undefined
  return {
    timeout: Math.min(o.keepAliveTimeout, MAX_DURATION - (buffer ?? NODE_KEEP_ALIVE_BUFFER)),
    buffer,
  }
}

function noop(): void {}
