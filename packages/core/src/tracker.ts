import { EventEmitter } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { Admission } from './admission.js'
import { adoptSettings, type FrameworkSettings, type ServerSetting } from './adopt.js'
import { closeChannel, drainChannel, openChannel, transitionChannel } from './channels.js'
import { settleClose } from './classify.js'
import type { CloseReason } from './close-reasons.js'
import { closeAfterResponse, cutConnection, rotateConnection } from './cut.js'
import { DeadlineQueue, earliest, NEVER } from './deadline-queue.js'
import {
  Drain,
  type DrainOptions,
  type DrainPhase,
  type DrainResult,
  resolveDrainOptions,
} from './drain.js'
import { TrackerClosedError } from './errors.js'
import { bindServer, kRecord, type ServerBinding } from './http1.js'
import { streamGuardOf } from './http2.js'
import {
  type ConnectionTrackerOptions,
  type RequestOverrides,
  type ResolvedOptions,
  ResolvedRequestOverrides,
  resolveOptions,
  resolveRequestOverrides,
} from './options.js'
import { openFileLimit, Pressure, type PressureSnapshot, processConnections } from './pressure.js'
import { liveConnections, pressureAdmit, shed } from './pressure-hooks.js'
import {
  connectionProgress,
  rateCheckAt,
  scheduleRateCheck,
  setBodyRate,
  setResponseRate,
  startRates,
  stopRates,
} from './rates.js'
import { type ClockBase, ConnectionRecord, type DeadlineKind, type TlsInfo } from './record.js'
import { cutStream } from './session-lifecycle.js'
import { type ConnectionState, liveStateIndex } from './states.js'
import { overrideStream, type StreamCutReason, type StreamGuard } from './streams.js'
import { startSweeper, sweepDue } from './sweep.js'
import { type ConnectionTrackerEvents, safeEmit } from './tracker-events.js'
import { SETTING_NOT_ADOPTED, SETTING_REPLACED } from './warnings.js'
import {
  isWebSocketUpgrade,
  linkWebSocket,
  linkWebSocketServer,
  refuseUpgrade,
  releaseWebSocket,
  settleWebSocket,
  type WebSocketLike,
  type WebSocketServerLike,
  webSocketDueAt,
  webSocketFacts,
  webSocketUpgraded,
} from './websocket.js'

export type { ConnectionTrackerEvents }

const INFINITY = Number.POSITIVE_INFINITY

/**
 * Responses to pipelined requests, oldest first, waiting behind the one `rec.res` follows.
 * Beside the record, not in it: pipelining is rare, and a field costs every connection.
 */
const pipelined = new WeakMap<ConnectionRecord, ServerResponse[]>()

/** Live connections by state, and closes by reason since the tracker was created. */
export interface Snapshot {
  /** Live connections. */
  total: number
  new: number
  handshaking: number
  idle: number
  active: number
  upgraded: number
  /** Closed connections counted by close reason (only reasons seen appear). */
  closedByReason: Partial<Record<CloseReason, number>>
  /** The pressure level and its signals; null when the `pressure` option is off. */
  pressure: PressureSnapshot | null
}

/**
 * Tracks every connection of the servers it is attached to through its
 * states, enforces the phase deadlines with one sweeper, and reports each
 * connection's record on open, transition and close.
 */
export class ConnectionTracker extends EventEmitter<ConnectionTrackerEvents> {
  /**
   * The options as resolved at construction, with the timeouts the application set on the
   * first server attached adopted (`options.sources` says where each value came from).
   */
  readonly options: ResolvedOptions
  readonly #clock: ResolvedOptions['clock']
  /** Clock ms → epoch ms. */
  readonly #clockBase: ClockBase
  /** @internal The live connections, in accept order. */
  readonly _records = new Set<ConnectionRecord>()
  /** @internal The sweeper's deadline heap. */
  readonly _queue = new DeadlineQueue<ConnectionRecord>()
  /** @internal TLS connections accepted with no byte yet: polled so `handshaking` shows when bytes flow. */
  readonly _awaitingBytes = new Set<ConnectionRecord>()
  readonly #bindings = new Map<object, ServerBinding>()
  /** Live connections per state, indexed as LIVE_STATES. */
  readonly #counts = [0, 0, 0, 0, 0]
  readonly #closedByReason: Partial<Record<CloseReason, number>> = {}
  #sweeper: NodeJS.Timeout | null = null
  #closed = false
  /** @internal Set when Node's parser did not report a request's first byte: fall back to polling idle connections. */
  _pollIdle = false
  /** @internal */
  readonly _admission: Admission
  #drain: Drain | null = null
  /** @internal Null when the `pressure` option is off. */
  readonly _pressure: Pressure | null
  /** @internal Pressure's way of closing: its own reason counts the connection out at once. */
  readonly _victim = (rec: ConnectionRecord, reason: CloseReason): void => {
    if (reason === 'shed_under_pressure') shed(this, rec)
    else cutConnection(this, rec, reason)
  }
  /** @internal While idle connections are polled (no parser hook), bytes since the last response are a request. */
  readonly _idleBytesMoved = (rec: ConnectionRecord): boolean =>
    this._pollIdle &&
    rec.session === null &&
    rec.httpSocket !== null &&
    rec.httpSocket.bytesRead !== this._idleBytes(rec)
  /**
   * Polling fallback only: the HTTP socket's bytesRead when each record last became idle.
   * Beside the records, not in them: with the parser hook (every supported Node) no record
   * needs the field.
   */
  readonly #bytesAtIdle = new WeakMap<ConnectionRecord, number>()
  /** @internal */
  _markIdleBytes(rec: ConnectionRecord): void {
    this.#bytesAtIdle.set(rec, rec.httpSocket?.bytesRead ?? 0)
  }
  /** @internal */
  _idleBytes(rec: ConnectionRecord): number {
    return this.#bytesAtIdle.get(rec) ?? 0
  }
  /**
   * @internal While an adopted requestTimeout (Node's meaning: receiving the request) is in
   * force: the records whose request in flight got its own from a route or a request override,
   * which keeps connguard's meaning (to the response's end). Touched only in that mode.
   */
  readonly _ownRequestTimeout = new WeakSet<ConnectionRecord>()
  /** @internal Live WebSocket upgrades (what `maxUpgradedConnections` caps). */
  _webSockets = 0
  /** The WebSocket servers linked by `watchWebSockets`, each with its unlink. */
  readonly #webSocketLinks = new Set<() => void>()
  /**
   * Set for good once 'open', 'transition' or 'close' gets a listener: until then the request
   * path (two transitions a request) and the accept and close paths skip `listenerCount`,
   * which cost ~145 instructions a call (callgrind, Node 26).
   */
  #mayListen = false
  readonly #onNewListener = (event: string | symbol): void => {
    if (event === 'transition' || event === 'close' || event === 'open') this.#mayListen = true
  }
  /** @internal HTTP/2: how the sweep's stream checks reset a stream. */
  readonly _onStreamFailed = (g: StreamGuard, reason: StreamCutReason): void =>
    cutStream(this, g, reason)

  constructor(options?: ConnectionTrackerOptions) {
    super()
    ;(this as EventEmitter).on('newListener', this.#onNewListener)
    this.options = resolveOptions(options)
    this._admission = new Admission(this.options)
    const p = this.options.pressure
    // The open-file limit is read once, here: changing it at run time is rare, and reading
    // /proc on every sweep is not free.
    this._pressure =
      p === null ? null : new Pressure(p, this.options.maxConnections, openFileLimit())
    this.#clock = this.options.clock
    this.#clockBase = {
      epochOffset: Date.now() - this._now(),
      maxConnectionAge: this.options.maxConnectionAge,
      clock: this.#clock,
    }
  }

  get closed(): boolean {
    return this.#closed
  }

  /** As EventEmitter's; the tracker's own 'newListener' listener stays (see `#mayListen`). */
  override removeAllListeners(...args: Parameters<EventEmitter['removeAllListeners']>): this {
    ;(EventEmitter.prototype.removeAllListeners as (...a: unknown[]) => unknown).apply(this, args)
    const self = this as EventEmitter
    if (!self.listeners('newListener').includes(this.#onNewListener))
      self.on('newListener', this.#onNewListener)
    return this
  }

  /**
   * True from the moment `drain()` is called (its delay included) for good: a drained
   * server does not come back. What a readiness probe reports (see `readinessHandler`).
   */
  get draining(): boolean {
    return this.#drain !== null
  }

  /** Where the drain is (`delay`, `closing`, `done`), or null before `drain()`. */
  get drainPhase(): DrainPhase | null {
    return this.#drain?.phase ?? null
  }

  /**
   * Guards `server` (an `http.Server` or `https.Server`, listening or not)
   * from its next accepted connection on. Returns the tracker.
   */
  attach(server: object): this {
    return this._attach(server, undefined)
  }

  /** For the adapters (not a stable API): `attach`, told which of the server's settings a framework (Fastify) made. */
  _attach(server: object, framework: FrameworkSettings | undefined): this {
    if (this.#closed) throw new TrackerClosedError()
    if (this.#bindings.has(server)) return this
    const binding = bindServer(this, server, framework)
    this.#bindings.set(server, binding)
    if (this.#sweeper === null) {
      this.#sweeper = startSweeper(this)
    }
    return this
  }

  /**
   * Links a `ws` `WebSocketServer` (or anything with its `'connection'` event): each
   * WebSocket it accepts on a guarded server gets PING liveness through its own API (see
   * `webSocket` options). Returns a function that unlinks it; `close()` does too.
   */
  watchWebSockets(wss: WebSocketServerLike): () => void {
    if (this.#closed) throw new TrackerClosedError()
    return linkWebSocketServer(this, wss, this.#webSocketLinks)
  }

  /**
   * Links one WebSocket (`ws`'s, or any object with `ping()`, `terminate()`, `readyState`
   * and the `'pong'` event) to its connection; `source` is its upgrade request or socket.
   * False when that connection is not a WebSocket upgrade this tracker guards.
   */
  watchWebSocket(ws: WebSocketLike, source?: IncomingMessage | Socket): boolean {
    if (this.#closed) return false
    return linkWebSocket(this, ws, source)
  }

  /** Counts of live connections by state, and of closed ones by reason. */
  snapshot(): Snapshot {
    const c = this.#counts
    return {
      total: this._records.size,
      new: c[0] as number,
      handshaking: c[1] as number,
      idle: c[2] as number,
      active: c[3] as number,
      upgraded: c[4] as number,
      closedByReason: { ...this.#closedByReason },
      pressure: this._pressure?.snapshot(liveConnections(this)) ?? null,
    }
  }

  /** The live connections' records. */
  connections(): IterableIterator<ConnectionRecord> {
    return this._records.values()
  }

  /** The record of the connection a socket or request belongs to, while it is tracked. */
  recordOf(target: Socket | IncomingMessage): ConnectionRecord | undefined {
    const socket = (target as IncomingMessage).socket ?? target
    const rec = (socket as unknown as { [kRecord]?: ConnectionRecord })[kRecord]
    return rec !== undefined && rec.state !== 'closed' && this._records.has(rec) ? rec : undefined
  }

  /**
   * Changes the deadlines of the request in progress on `req`'s connection,
   * from inside a handler or a route's middleware. Plain overrides are
   * validated on every call; pass the result of `resolveRequestOverrides` to
   * validate once (the adapters do, per route). Returns false when `req`'s
   * connection is not tracked or has no request in progress. HTTP/2: pass the
   * compat request or the `ServerHttp2Stream`; the overrides apply to that
   * stream alone, its `requestTimeout` counted from when it opened.
   */
  overrideRequest(
    req:
      | IncomingMessage
      | import('node:http2').Http2ServerRequest
      | import('node:http2').ServerHttp2Stream,
    overrides: RequestOverrides | ResolvedRequestOverrides,
  ): boolean {
    const resolved = ResolvedRequestOverrides.is(overrides)
      ? overrides
      : resolveRequestOverrides(overrides, 'request override')
    const guard = streamGuardOf(req)
    if (guard !== undefined) {
      // HTTP/2: the limits of this stream alone, its requestTimeout from when it opened.
      const rec = guard.rec
      if (rec.state === 'closed' || rec.streams?.guards.has(guard) !== true) return false
      overrideStream(
        guard,
        resolved.requestTimeout,
        resolved.minBodyRate,
        resolved.minResponseRate,
        this._now(),
      )
      this._reschedule(rec)
      return true
    }
    const rec = this.recordOf(req as IncomingMessage)
    if (rec === undefined || rec.state !== 'active') return false
    if (resolved.requestTimeout !== undefined) {
      rec.requestDeadlineAt =
        resolved.requestTimeout === 0 ? NEVER : rec.requestStartedAt + resolved.requestTimeout
      if (this.options.requestTimeoutUntil === 'received') this._ownRequestTimeout.add(rec)
    }
    if (rec.req === req) {
      const now = this._now()
      if (resolved.minBodyRate !== undefined)
        setBodyRate(rec, connectionProgress, resolved.minBodyRate, now)
      if (resolved.minResponseRate !== undefined) setResponseRate(rec, resolved.minResponseRate)
      scheduleRateCheck(rec, now)
    }
    this._reschedule(rec)
    return true
  }

  /**
   * Graceful shutdown that loses no request. For `delay` ms (default 0) nothing changes but
   * `draining`, the 'drain' event and the readiness handler: the load balancer deregisters
   * the instance while it still serves. Then the closing phase: every HTTP/1 response whose
   * head is not out yet says `Connection: close`; a connection with a request in flight
   * finishes it (requests already pipelined behind it are answered) and closes; an idle
   * connection, whose last response promised keep-alive, closes only once it stayed idle
   * for `idleGrace` ms (default 1 s), so a request the client already sent is answered;
   * HTTP/2 sessions get GOAWAY with the last stream id 2^31 - 1, then, after a PING round
   * trip, the real one (RFC 9113 §6.8), and close once their streams end. Connections
   * accepted meanwhile are served the same way: closing the listening socket is
   * `server.close()`'s job (Fastify calls it after its preClose hooks). While closing,
   * `server.closeIdleConnections()` (which Node's `server.close()` calls) leaves idle
   * connections to the grace. Whatever is still open `timeout` ms after the closing phase
   * began (default 30 s; `false` waits for ever) is closed with `app_shutdown_timeout`.
   * Resolves once every connection is closed (or the tracker is), with counts per outcome.
   * A second call returns the same promise.
   */
  drain(options?: DrainOptions): Promise<DrainResult> {
    const resolved = resolveDrainOptions(options)
    if (this.#drain !== null) return this.#drain.done
    const drain = new Drain(resolved)
    this.#drain = drain
    if (this.#closed) {
      drain.settle(0, true)
      return drain.done
    }
    if (resolved.delay > 0) this.#emitDrain('delay')
    drain.startAfterDelay(() => this.#startClosing(drain))
    return drain.done
  }

  /** Resolves when the drain's closing phase begins, after its delay (at once when no drain runs). */
  drainClosing(): Promise<void> {
    return this.#drain?.closing ?? Promise.resolve()
  }

  #startClosing(drain: Drain): void {
    if (this.#closed || drain.phase !== 'delay') return
    drain.beginClosing()
    for (const binding of this.#bindings.values()) binding.drainStarted()
    this.#emitDrain('closing')
    const now = this._now()
    for (const rec of [...this._records]) this.#drainConnection(drain, rec, now)
    drain.arm(() => {
      for (const rec of [...this._records]) {
        drain.forced(rec)
        cutConnection(this, rec, 'app_shutdown_timeout')
      }
    })
    this.#settleDrain(this._records.size)
  }

  /** One connection enters the closing phase: busy ones finish, idle ones get the grace. */
  #drainConnection(drain: Drain, rec: ConnectionRecord, now: number): void {
    drain.wait(rec)
    // Already closing for a reason of its own; an upgraded connection is the application's to end.
    if (rec.pendingReason !== null || rec.state === 'upgraded') return
    rotateConnection(rec, 'app_shutdown')
    // New, handshaking or idle: the grace (HTTP/2 sessions got GOAWAY; it bounds one whose
    // PING goes unanswered; a TLS connection that completes its handshake gets it anew).
    if (rec.state !== 'active') this._drainGrace(rec, now)
  }

  /**
   * @internal A connection closing under the drain is idle: it closes once it stayed idle
   * for the grace (or earlier, by a deadline already due sooner), `app_shutdown`.
   */
  _drainGrace(rec: ConnectionRecord, now: number): void {
    const grace = this.#drain?.options.idleGrace ?? 0
    if (grace === 0) {
      cutConnection(this, rec, 'app_shutdown')
      return
    }
    const at = now + grace
    if (rec.phaseDeadlineAt !== NEVER && rec.phaseDeadlineAt <= at) return
    rec.phaseReason = 'keep_alive_timeout'
    rec.phaseDeadlineAt = at
    this._reschedule(rec)
  }

  #settleDrain(live: number, force = false): void {
    const drain = this.#drain
    if (drain === null || drain.phase === 'done') return
    if (!drain.settle(live, force)) return
    for (const binding of this.#bindings.values()) binding.drainEnded()
    this.#emitDrain('done')
  }

  #emitDrain(phase: DrainPhase): void {
    if (this.listenerCount('drain') > 0) safeEmit(this, 'drain', phase)
    if (drainChannel.hasSubscribers) drainChannel.publish({ phase, tracker: this })
  }

  /**
   * Enforces every deadline due at `now` (the clock's time by default) and
   * returns how many connections it cut. The sweeper calls this every
   * `sweepInterval`; tests with an injected clock call it directly.
   */
  sweep(now: number = this._now()): number {
    return sweepDue(this, now, INFINITY, false)
  }

  /**
   * @internal One slice of a sweep, as the sweeper runs it: stops at `until` (wall ms)
   * and returns -1 when more is due. Called through the tracker so that a profiler or a
   * benchmark can wrap it.
   */
  _sweepSlice(now: number, until: number, continued: boolean): number {
    return sweepDue(this, now, until, continued)
  }

  /**
   * Stops guarding: detaches from every server (restoring the timers it
   * changed), stops the sweeper and forgets live connections without closing
   * them. Idempotent.
   */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    if (this.#sweeper !== null) clearInterval(this.#sweeper)
    this.#sweeper = null
    // A drain still waiting settles now: nothing is tracked any more.
    this.#settleDrain(0, true)
    for (const binding of this.#bindings.values()) binding.detach()
    this.#bindings.clear()
    for (const unlink of [...this.#webSocketLinks]) unlink()
    // `server.close()` calls back before the 'close' events of the sockets it
    // just destroyed (Fastify's onClose runs in between): finish those records
    // now rather than drop them.
    for (const rec of this._records) {
      if (rec.rawSocket?.destroyed === true || rec.httpSocket?.destroyed === true) this._closed(rec)
    }
    for (const rec of this._records) {
      rec.binding?.release(rec)
      if (rec.state === 'upgraded') releaseWebSocket(rec)
    }
    this._webSockets = 0
    processConnections.live -= liveConnections(this)
    this._pressure?.close()
    this._records.clear()
    this._queue.clear()
    this._awaitingBytes.clear()
    this.#counts.fill(0)
  }

  // ---- lifecycle, called by the server bindings --------------------------------

  /**
   * @internal Before a server's timers are aligned: its own settings become the defaults of
   * their options (the first server only), and what is replaced or not adopted is warned about.
   */
  _adopt(settings: readonly ServerSetting[]): void {
    const { options, replaced, notAdopted } = adoptSettings(
      this.options,
      settings,
      this.#bindings.size === 0,
    )
    ;(this as { options: ResolvedOptions }).options = options
    if (replaced.length > 0) SETTING_REPLACED.emit(replaced.join('; '))
    if (notAdopted.length > 0) SETTING_NOT_ADOPTED.emit(notAdopted.join('; '))
  }

  /** @internal A connection was accepted. */
  _open(rawSocket: Socket, secure: boolean, binding: ServerBinding): ConnectionRecord {
    const now = this._now()
    const rec = new ConnectionRecord(
      rawSocket,
      secure,
      now,
      this.#clockBase,
      binding.listenEnd(),
      this._endsWanted(),
    )
    rec.binding = binding
    this._records.add(rec)
    ;(this.#counts[0] as number)++
    processConnections.live++
    const p = this._pressure
    if (p !== null && p.perIp !== null) p.countAddress(rec, 1)
    const o = this.options
    if (secure) {
      this._setPhase(rec, 'tls_handshake_timeout', o.handshakeTimeout, now)
      this._awaitingBytes.add(rec)
    } else {
      rec.establishedAtClock = now
      rec.httpSocket = rawSocket
      this._setPhase(rec, 'request_headers_timeout', o.headersTimeout, now)
    }
    // The record armed its age deadline from the clock base (accept + maxConnectionAge).
    if (o.maxConnectionAge > 0) this._reschedule(rec)
    this.#emit('open', rec, openChannel)
    const live = liveConnections(this)
    const handshaking = (this.#counts[0] as number) + (this.#counts[1] as number)
    let refused = this._admission.admit(rec, live, handshaking, p?.over(live) === true)
    if (p !== null) refused = pressureAdmit(this, p, rec, refused, handshaking, now)
    if (refused !== null) this._victim(rec, refused)
    // Accepted while closing (the listening socket is still open): served, with `Connection: close`.
    else if (this.#drain?.phase === 'closing') this.#drainConnection(this.#drain, rec, now)
    return rec
  }

  /** @internal The TLS handshake completed. */
  _established(rec: ConnectionRecord, httpSocket: Socket, tls: TlsInfo): void {
    if (rec.state === 'closed') return
    const now = this._now()
    this._awaitingBytes.delete(rec)
    rec.establishedAtClock = now
    rec.httpSocket = httpSocket
    rec.tls = tls
    this._setPhase(rec, 'request_headers_timeout', this.options.headersTimeout, now)
    this._transition(rec, 'idle', now)
    // Accepted while a drain was closing: the grace runs from here (HTTP/2: from its GOAWAY).
    if (rec.rotateReason === 'app_shutdown' && rec.h2 === null && this.#drain?.phase === 'closing')
      this._drainGrace(rec, now)
  }

  /** @internal The first byte of a request arrived. */
  _requestBegin(rec: ConnectionRecord, now: number = this._now()): void {
    // Heads are parsed one at a time: while one is being read, a second report
    // of a begin (the sweep's bytesRead check, then the parser hook) is the same request.
    if (rec.state === 'closed' || rec.state === 'upgraded' || rec.readingHead) return
    const inFlight = rec._messageBegun()
    if (inFlight === 1) rec.requestStartedAt = now
    if (rec.timeToFirstRequest === null) {
      // The first request's head deadline runs from establishment, already set.
      rec.timeToFirstRequest = now - rec.establishedAtClock
      if (rec.phaseReason !== 'request_headers_timeout') {
        setPhase(
          rec,
          'request_headers_timeout',
          this.options.headersTimeout,
          rec.establishedAtClock,
        )
      }
    } else {
      setPhase(rec, 'request_headers_timeout', this.options.headersTimeout, now)
    }
    if (inFlight === 1) {
      const t = this.options.requestTimeout
      rec.requestDeadlineAt = t === 0 ? NEVER : now + t
      if (this.options.requestTimeoutUntil === 'received') this._ownRequestTimeout.delete(rec)
    }
    this.#rescheduleFor(rec, earliest(rec.phaseDeadlineAt, rec.requestDeadlineAt))
    this._transition(rec, 'active', now)
  }

  /** @internal A request head was parsed. */
  _requestHead(rec: ConnectionRecord, req: IncomingMessage, res: ServerResponse): void {
    if (rec.state === 'closed') return
    if (!rec.sawMessageBegin) {
      // Node's parser did not report the first byte: count the request from
      // now and poll idle connections from here on (see ARCHITECTURE.md).
      if (!this._pollIdle) {
        this._pollIdle = true
        for (const other of this._records) this._markIdleBytes(other)
      }
      this._requestBegin(rec)
    }
    rec.sawMessageBegin = false
    rec.readingHead = false
    rec.requests++
    rec.httpVersion = httpVersionOf(req)
    setPhase(rec, null, 0, 0)
    const o = this.options
    if (o.maxRequestsPerConnection > 0 && rec.requests >= o.maxRequestsPerConnection) {
      rec.rotateReason ??= 'max_requests_per_connection'
    }
    if (rec.res === null) {
      // Rates and rotation follow the oldest request in flight (pipelined ones wait behind it).
      this.#follow(rec, res, rec.stateSince)
      // The head cleared the header deadline (a key left early is harmless): only the rate
      // check can be due sooner than the key.
      this.#rescheduleFor(rec, rateCheckAt(rec))
    } else {
      // Pipelined: its turn comes when the responses before it have ended.
      const queue = pipelined.get(rec)
      if (queue === undefined) pipelined.set(rec, [res])
      else queue.push(res)
    }
    // Rotation or drain decided: this response says `Connection: close` (the one before it
    // does not, if pipelined: Node would drop this one after a `Connection: close`).
    const rotate = rec.rotateReason
    if (rotate === 'app_shutdown') closeAfterResponse(rec, res)
    else if (rotate !== null) res.shouldKeepAlive = false
  }

  /**
   * `res` answers the oldest request in flight: rates and rotation follow it. A body
   * window starts now; without a body only the response window is scheduled, and a first
   * check a little early (`from`: the request's first byte) only restarts it, a clock read
   * saved per request (~0.2 µs on a VM without a fast clock source).
   */
  #follow(rec: ConnectionRecord, res: ServerResponse, from: number): void {
    rec.res = res
    const hasBody = hasBodyHeaders(res.req.rawHeaders)
    const o = this.options
    const now = hasBody ? this._now() : from
    startRates(rec, connectionProgress, hasBody, o.minBodyRate, o.minResponseRate, now)
  }

  /** @internal A response finished while its request body is still arriving: `_responseEnd` follows when it ends. */
  _responseSent(rec: ConnectionRecord, last: 'client' | 'server' | null): void {
    if (last !== null) rec.closeIntent = last
  }

  /** @internal A request is done (response finished, body read); `last` says who ends the connection after it, if anyone. */
  _responseEnd(rec: ConnectionRecord, last: 'client' | 'server' | null): void {
    if (rec.state === 'closed') return
    const now = this._now()
    if (rec.inFlight > 0) rec.inFlight--
    if (last !== null) rec.closeIntent = last
    // The connection closes after this response: the last moment its ends can be read.
    if (last !== null || rec.rotateReason !== null) this._keepEnds(rec)
    // Node closes after this response even with requests pipelined behind it.
    if (last !== null && rec.rotateReason !== null) rec.pendingReason ??= rec.rotateReason
    rec.res = null
    stopRates(rec)
    if (rec.inFlight > 0) {
      // Pipelined: the next request's absolute limit runs from now, and its response is the
      // one rates and rotation follow (unless its head is still arriving: `_requestHead`).
      const t = this.options.requestTimeout
      rec.requestStartedAt = now
      rec.requestDeadlineAt = t === 0 ? NEVER : now + t
      if (this.options.requestTimeoutUntil === 'received') this._ownRequestTimeout.delete(rec)
      const next = pipelined.get(rec)?.shift()
      if (next !== undefined) this.#follow(rec, next, now)
      this._reschedule(rec)
      return
    }
    rec.requestDeadlineAt = NEVER
    // Only the polling fallback compares bytes read while idle.
    if (this._pollIdle) this._markIdleBytes(rec)
    // The keep-alive deadline also bounds a rotated connection whose client never takes the close.
    setPhase(rec, 'keep_alive_timeout', this.options.keepAliveTimeout, now)
    this.#rescheduleFor(rec, rec.phaseDeadlineAt)
    this._transition(rec, 'idle', now)
    if (rec.rotateReason !== null) {
      // A drain: a response that still promised keep-alive (pipelined ahead of the drain)
      // leaves the client free to send the next request now: the idle grace serves it.
      if (last === null && rec.rotateReason === 'app_shutdown' && this.#drain !== null) {
        this._drainGrace(rec, now)
        return
      }
      rec.pendingReason ??= rec.rotateReason
      rec.binding?.endAfterResponse(rec, last !== null)
    }
  }

  /**
   * @internal The connection left HTTP (WebSocket, CONNECT): HTTP deadlines stop. A
   * WebSocket upgrade over `maxUpgradedConnections` is refused instead: returns the reason,
   * and the binding answers 503; it is cut two sweeps later if the peer has not gone.
   */
  _upgraded(rec: ConnectionRecord, req?: IncomingMessage): CloseReason | null {
    if (rec.state === 'closed') return null
    const now = this._now()
    const webSocket = isWebSocketUpgrade(req)
    const o = this.options
    if (webSocket && o.maxUpgradedConnections > 0 && this._webSockets >= o.maxUpgradedConnections) {
      return refuseUpgrade(this, rec, now)
    }
    rec.requests++
    rec.inFlight = 0
    rec.readingHead = false
    rec.requestDeadlineAt = NEVER
    this._setPhase(rec, null, 0, 0)
    this._reschedule(rec)
    this._transition(rec, 'upgraded', now)
    if (webSocket) {
      this._webSockets++
      webSocketUpgraded(rec, o.webSocket, now)
      this._reschedule(rec)
    }
    return null
  }

  /** @internal The socket closed: finish the record with exactly one reason. */
  _closed(rec: ConnectionRecord): void {
    if (rec.state === 'closed' || !this._records.has(rec)) return
    const now = this._now()
    this._queue.remove(rec)
    this._awaitingBytes.delete(rec)
    this._records.delete(rec)
    if (rec.state === 'upgraded' && webSocketFacts(rec) !== undefined) {
      this._webSockets--
      settleWebSocket(rec)
    }
    // Ends nobody asked for while the socket was open, for a close listener: Node's own
    // cache of them, if the application read them (no system call once the handle is gone).
    this._keepEnds(rec)
    const p = this._pressure
    // A shed connection was counted out when it was cut.
    if (p !== null && rec.pendingReason === 'shed_under_pressure') p.shedPending--
    else processConnections.live--
    if (p !== null && p.perIp !== null) p.countAddress(rec, -1)
    const reason = settleClose(rec, now, this.#clockBase.epochOffset)
    this.#closedByReason[reason] = (this.#closedByReason[reason] ?? 0) + 1
    this._transition(rec, 'closed', now)
    rec.rawSocket = null
    rec.httpSocket = null
    rec.binding = null
    rec.res = null
    rec.streams = null
    this._admission.release(rec)
    this.#drain?.closed(rec)
    this.#emit('close', rec, closeChannel)
    this.#settleDrain(this._records.size)
  }

  // ---- internals, shared with sweep.ts, pressure-hooks.ts, session-lifecycle.ts ----

  /**
   * @internal Whole milliseconds. Every time a record keeps is then a small integer, which
   * V8 stores in the field itself; a fractional time costs a 16-byte heap
   * number per field per record. A millisecond is far finer than any deadline.
   */
  _now(): number {
    return Math.floor(this.#clock.now())
  }

  /** @internal Sets the phase deadline and keeps the heap key at or before it. */
  _setPhase(
    rec: ConnectionRecord,
    reason: DeadlineKind | null,
    timeout: number,
    from: number,
  ): void {
    if (setPhase(rec, reason, timeout, from)) this._reschedule(rec)
  }

  /**
   * @internal Keeps the record's heap key at or before its earliest due time. A key
   * that is too early is harmless: the sweep pops the record, finds nothing
   * due and queues it again at its real time. So a deadline that moves later
   * (every keep-alive request moves the idle deadline later) leaves the heap
   * alone, and a request costs no heap move; only an earlier deadline moves
   * the entry up.
   */
  _reschedule(rec: ConnectionRecord): void {
    if (rec.state === 'closed') return
    let at = earliest(rec.phaseDeadlineAt, rec.requestDeadlineAt)
    at = earliest(at, rec.ageDeadlineAt)
    at = earliest(at, rateCheckAt(rec))
    // HTTP/2: the PING check and the earliest stream check, from the session facts read once.
    const h2 = rec.h2
    if (h2 !== null) {
      at = earliest(at, h2.pingCheckAt)
      if (h2.streams !== null) at = earliest(at, h2.streams.dueAt)
    }
    // A WebSocket's PING and idle checks, kept beside the record (websocket.ts).
    if (rec.state === 'upgraded') at = earliest(at, webSocketDueAt(rec))
    if (at >= 0 && (rec.queueIndex < 0 || at < rec.deadlineAt)) this._queue.schedule(rec, at)
  }

  /**
   * The request path's `_reschedule`: `at` is the earliest due time the caller changed. The key
   * of a queued record is at or before every other due time already, so only an earlier `at`
   * moves it; a record not queued gets the full computation.
   */
  #rescheduleFor(rec: ConnectionRecord, at: number): void {
    if (rec.queueIndex < 0) this._reschedule(rec)
    else if (at >= 0 && at < rec.deadlineAt) this._queue.schedule(rec, at)
  }

  /** @internal */
  _transition(rec: ConnectionRecord, to: ConnectionState, now: number): void {
    const from = rec.state
    if (from === to || from === 'closed') return
    const i = liveStateIndex(from)
    rec._addDuration(i, now - rec.stateSince)
    ;(this.#counts[i] as number)--
    if (to !== 'closed') (this.#counts[liveStateIndex(to)] as number)++
    rec.stateSince = now
    rec.state = to
    if (this.#mayListen && this.listenerCount('transition') > 0)
      safeEmit(this, 'transition', rec, from, to)
    if (transitionChannel.hasSubscribers)
      transitionChannel.publish({ record: rec, from, to, tracker: this })
  }

  /**
   * Whether a connection's two ends are read at accept. Reading the peer's address costs a
   * system call per connection (getpeername, ~1.6 µs on a small VM and ~5 µs in a busy
   * server's profile) that bare Node never makes unless the application asks, and once the
   * socket is closed (or reset by the peer) it can no longer be read. So the ends are read at
   * accept when something will want them from a closed record (a 'close' or 'transition'
   * listener or subscriber: the close log, the exporters); otherwise on first use while the
   * connection is open (per-address limits read them at accept, pressure's per-address share
   * when it comes into force), or as it ends if such a listener came since (our cut, the
   * peer's FIN, the end of the last response: the handle is still open then; a reset peer
   * leaves only what Node cached). A record's ends are read once, so the address a
   * connection was counted under is the one it is counted out of.
   * @internal
   */
  _endsWanted(): boolean {
    return (
      (this.#mayListen &&
        (this.listenerCount('close') > 0 || this.listenerCount('transition') > 0)) ||
      closeChannel.hasSubscribers ||
      transitionChannel.hasSubscribers
    )
  }
  /** @internal Reads `rec`'s ends now if something listens for closed records (see `_endsWanted`). */
  _keepEnds(rec: ConnectionRecord): void {
    if (this._endsWanted()) rec._readEnds()
  }

  #emit(event: 'open' | 'close', rec: ConnectionRecord, channel: typeof openChannel): void {
    if (this.#mayListen && this.listenerCount(event) > 0) safeEmit(this, event, rec)
    if (channel.hasSubscribers) channel.publish({ record: rec, tracker: this })
  }
}

/**
 * Sets the phase deadline; true when one is armed. Clearing one never needs the heap: a key
 * that is early is harmless (see `_reschedule`). The request path calls this and then
 * reschedules once for all it changed.
 */
function setPhase(
  rec: ConnectionRecord,
  reason: DeadlineKind | null,
  timeout: number,
  from: number,
): boolean {
  rec.phaseReason = reason
  const armed = reason !== null && timeout !== 0
  rec.phaseDeadlineAt = armed ? from + timeout : NEVER
  return armed
}

/**
 * The request announces a body: a Content-Length other than 0, or a Transfer-Encoding.
 * Read from `rawHeaders`, the array Node's parser hands over: `req.headers` is built from
 * it on first use, and a handler that never reads it (a plain GET in Fastify or node:http)
 * would otherwise pay for building it on every request, for the guard alone.
 */
function hasBodyHeaders(raw: string[]): boolean {
  let length: string | undefined
  let chunked = false
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i] as string
    // Only names of the two lengths are compared (and lower-cased: they arrive in any case).
    if (name.length === 14) {
      if (length === undefined && name.toLowerCase() === 'content-length') length = raw[i + 1]
    } else if (name.length === 17 && name.toLowerCase() === 'transfer-encoding') chunked = true
  }
  return length !== undefined ? length !== '0' : chunked
}

/** Node builds the version string per request: keep the common ones as shared literals. */
function httpVersionOf(req: IncomingMessage): string {
  const v = req.httpVersion
  return v === '1.1' ? '1.1' : v === '1.0' ? '1.0' : v
}
