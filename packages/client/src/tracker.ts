import type { Channel } from 'node:diagnostics_channel'
import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { CloseReason, ConnectionState, LiveState } from '@connguard/core'
import type { ClientTrackerLike } from '@connguard/core/internal'
import {
  clientCloseChannel,
  clientOpenChannel,
  clientTransitionChannel,
  kClientRecord,
  type MarkedSocket,
  subscribeRequests,
  unsubscribeRequests,
  watchSocket,
} from './channels.js'
import { classifyClientClose } from './classify.js'
import { PingTimeoutError } from './errors.js'
import type { ResolvedClientOptions } from './options.js'
import { pingAcked, pingStep, sendPing, sessionOf } from './ping.js'
import { ClientConnectionRecord } from './record.js'
import { guardSession } from './session.js'

/** Live client connections by state, and closes by reason since the tracker was created. */
export interface ClientSnapshot {
  total: number
  new: number
  handshaking: number
  idle: number
  active: number
  /** Always 0 for now: upgraded (WebSocket, CONNECT) connections count as active. */
  upgraded: number
  closedByReason: Partial<Record<CloseReason, number>>
}

export interface ClientTrackerEvents {
  open: [record: ClientConnectionRecord]
  transition: [record: ClientConnectionRecord, from: ConnectionState, to: ConnectionState]
  close: [record: ClientConnectionRecord]
}

/**
 * The connections of one connguard dispatcher: their states and records, with
 * the same events and snapshot as core's `ConnectionTracker`, and the HTTP/2
 * liveness check (ping.ts). One unref'd sweeper, running only while an HTTP/2
 * session is watched: a PING after `readIdleTimeout` ms of read silence, and a
 * PING without ACK for `pingTimeout` ms destroys the connection with a
 * `PingTimeoutError` (`ping_timeout`). undici then connects afresh for
 * the next request. Client pools hold few connections, so a sweep visits every
 * watched one (O(n)) rather than keeping a deadline heap as core does.
 */
// Not `implements RequestSink`: its members are internal, stripped from the published
// declarations, where the clause would then fail under `skipLibCheck: false`. The
// records' `owner: RequestSink` assignment checks the shape instead.
export class ClientTracker extends EventEmitter<ClientTrackerEvents> implements ClientTrackerLike {
  /** Tells a client tracker from core's `ConnectionTracker` (the exporters take both). */
  readonly kind = 'client' as const
  readonly options: ResolvedClientOptions
  readonly #clock: ResolvedClientOptions['clock']
  readonly #epochOffset: number
  readonly #records = new Set<ClientConnectionRecord>()
  /** HTTP/2 connections whose read silence is watched. */
  readonly #watched = new Set<ClientConnectionRecord>()
  readonly #counts: Record<LiveState, number> = {
    new: 0,
    handshaking: 0,
    idle: 0,
    active: 0,
    upgraded: 0,
  }
  readonly #closedByReason: Partial<Record<CloseReason, number>> = {}
  #sweeper: NodeJS.Timeout | null = null
  #closed = false
  #shuttingDown = false
  /** Subscribed to undici's request channels (from the first connection on). */
  #subscribed = false

  /** @internal Use `createDispatcher()`; its `tracker` is one of these. */
  constructor(options: ResolvedClientOptions) {
    super()
    this.options = options
    this.#clock = options.clock
    this.#epochOffset = Date.now() - this.#clock.now()
  }

  get closed(): boolean {
    return this.#closed
  }

  /** Counts of live connections by state, and of closed ones by reason. */
  snapshot(): ClientSnapshot {
    const c = this.#counts
    return {
      total: this.#records.size,
      new: c.new,
      handshaking: c.handshaking,
      idle: c.idle,
      active: c.active,
      upgraded: c.upgraded,
      closedByReason: { ...this.#closedByReason },
    }
  }

  /** The live connections' records. */
  connections(): IterableIterator<ClientConnectionRecord> {
    return this.#records.values()
  }

  /**
   * Tracks a `node:http2` client session and watches it with the same PING liveness as
   * the dispatcher's connections: no ACK within `pingTimeout` → the session is destroyed
   * with `PingTimeoutError` (reason `ping_timeout`). `authority` is the URL given to
   * `http2.connect()`. Returns the session's record. See session.ts.
   */
  guardSession(
    session: import('node:http2').ClientHttp2Session,
    authority: string | URL,
  ): ClientConnectionRecord {
    return guardSession(this, session, authority)
  }

  /**
   * Sends due PINGs and closes connections whose PING went unanswered, at
   * `now` (the clock's time by default); returns how many it closed. The
   * sweeper calls this; tests with an injected clock may call it directly.
   */
  sweep(now: number = this.#clock.now()): number {
    const { readIdleTimeout, pingTimeout } = this.options
    let cut = 0
    for (const rec of this.#watched) {
      const socket = rec.socket as Socket
      const session = rec.session
      if (session === null || socket.destroyed) continue
      const step = pingStep(rec, socket, readIdleTimeout, pingTimeout, now)
      if (step === 'send') sendPing(session, (rtt) => this.#pingAcked(rec, rtt))
      else if (step === 'timeout') {
        this.#pingTimedOut(rec)
        cut++
      }
    }
    return cut
  }

  /**
   * Stops watching: the sweeper stops, records are forgotten (their sockets
   * stay as they are). The dispatcher calls it once its connections are
   * closed. Idempotent.
   */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#stopSweeper()
    this.#watched.clear()
    // undici may resolve close() before the 'close' events of the sockets it
    // just destroyed: finish those records now rather than drop them.
    for (const rec of [...this.#records]) {
      if (rec.socket?.destroyed === true) this._closed(rec)
    }
    for (const rec of this.#records) {
      rec.owner = null
      if (rec.socket !== null) delete (rec.socket as MarkedSocket)[kClientRecord]
    }
    this.#records.clear()
    for (const state of Object.keys(this.#counts) as LiveState[]) this.#counts[state] = 0
    if (this.#subscribed) unsubscribeRequests()
    this.#subscribed = false
  }

  // ---- lifecycle, called by the connector and undici's channels -----------------

  /** @internal The dispatcher is closing: closes from now on are `app_shutdown`. */
  _shutdown(): void {
    this.#shuttingDown = true
  }

  /** @internal The connector was called for `origin`. */
  _connecting(origin: string, secure: boolean): ClientConnectionRecord {
    const now = this.#clock.now()
    const rec = new ClientConnectionRecord(origin, secure, now, this.#epochOffset + now)
    if (this.#closed) return rec
    if (!this.#subscribed) {
      subscribeRequests()
      this.#subscribed = true
    }
    rec.owner = this
    this.#records.add(rec)
    this.#counts.new++
    this.#emit('open', rec, clientOpenChannel)
    return rec
  }

  /** @internal The connector created the socket (before it connects). */
  _socket(rec: ClientConnectionRecord, socket: Socket): void {
    if (rec.socket !== null || rec.state === 'closed') return
    rec.socket = socket
    ;(socket as MarkedSocket)[kClientRecord] = rec
    watchSocket(socket)
  }

  /** @internal TCP connected. */
  _tcpConnected(rec: ClientConnectionRecord): void {
    if (rec.state !== 'new') return
    const now = this.#clock.now()
    rec.connectedAtClock = now
    rec.connectDuration = now - rec.openedAtClock
    const socket = rec.socket
    if (socket !== null) {
      rec.localAddress = socket.localAddress
      rec.localPort = socket.localPort
      rec.remoteAddress = socket.remoteAddress
      rec.remotePort = socket.remotePort
    }
    if (rec.secure) this.#transition(rec, 'handshaking', now)
  }

  /** @internal The connector called back with `socket`, ready for HTTP (TLS done). */
  _established(rec: ClientConnectionRecord, socket: Socket): void {
    if (rec.state === 'closed') return
    this._socket(rec, socket)
    if (rec.connectedAtClock < 0) this._tcpConnected(rec)
    const now = this.#clock.now()
    rec.establishedAtClock = now
    const tls = socket as TLSSocket
    const h2 = tls.alpnProtocol === 'h2'
    rec.httpVersion = h2 ? '2' : '1.1'
    if (rec.secure) {
      rec.handshakeDuration = now - rec.connectedAtClock
      rec.tls = {
        protocol: tls.getProtocol?.() ?? null,
        cipher: tls.getCipher?.()?.name ?? null,
        alpnProtocol: tls.alpnProtocol ?? false,
        servername: typeof tls.servername === 'string' ? tls.servername : null,
        resumed: tls.isSessionReused?.() ?? false,
      }
    }
    this.#transition(rec, 'idle', now)
  }

  /** @internal undici has taken the socket: for HTTP/2, its session now exists. */
  _handedOver(rec: ClientConnectionRecord, socket: Socket): void {
    if (rec.state === 'closed' || rec.httpVersion !== '2' || this.#closed) return
    if (this.options.readIdleTimeout === 0) return
    const session = sessionOf(socket)
    if (session === null) return
    this._watch(rec, session)
  }

  /** @internal Watches `rec`'s HTTP/2 `session` for read silence (PINGs), from now on. */
  _watch(rec: ClientConnectionRecord, session: import('node:http2').ClientHttp2Session): void {
    if (rec.state === 'closed' || this.#closed || this.options.readIdleTimeout === 0) return
    rec.session = session
    session.once('goaway', () => {
      rec.goaway = true
    })
    rec.lastReadBytes = rec.socket?.bytesRead ?? 0
    rec.lastReadAt = this.#clock.now()
    this.#watched.add(rec)
    if (this.#sweeper === null) {
      this.#sweeper = setInterval(() => this.sweep(), this.options.sweepInterval)
      this.#sweeper.unref()
    }
  }

  /** @internal The connector failed (connect error, TLS failure, connect timeout). */
  _connectFailed(rec: ClientConnectionRecord, err: Error): void {
    rec.error ??= err
    this._closed(rec)
  }

  /** @internal A request went out on the connection. */
  _requestStart(rec: ClientConnectionRecord): void {
    if (rec.state === 'closed') return
    const now = this.#clock.now()
    rec.requests++
    rec.inFlight++
    if (rec.inFlight > rec.peakConcurrentStreams) rec.peakConcurrentStreams = rec.inFlight
    if (rec.timeToFirstRequest === null && rec.establishedAtClock >= 0) {
      rec.timeToFirstRequest = now - rec.establishedAtClock
    }
    if (rec.state !== 'active') this.#transition(rec, 'active', now)
  }

  /** @internal A request on the connection finished or failed. */
  _requestEnd(rec: ClientConnectionRecord, error: unknown): void {
    if (error !== null) rec.lastRequestError = error
    if (rec.state === 'closed') return
    if (rec.inFlight > 0) rec.inFlight--
    if (rec.inFlight > 0 || rec.state !== 'active') return
    // A request failing because its connection is being destroyed does not make
    // the connection idle: it closes in the state it was in. undici errors an
    // HTTP/1.1 request (abort, timeout) just before it destroys the socket, so
    // a failure is looked at again once that has happened.
    if (rec.socket?.destroyed === true) return
    if (error !== null) queueMicrotask(() => this.#idleIfAlive(rec))
    else this.#transition(rec, 'idle', this.#clock.now())
  }

  /** @internal */
  _socketError(rec: ClientConnectionRecord, err: Error): void {
    rec.error ??= err
  }

  /** @internal */
  _peerEnded(rec: ClientConnectionRecord): void {
    rec.peerEnded = true
  }

  /** @internal The socket closed, or the connector failed without one. Idempotent. */
  _closed(rec: ClientConnectionRecord): void {
    if (rec.state === 'closed') return
    const now = this.#clock.now()
    const from = rec.state as LiveState
    rec.stateDurations[from] += now - rec.stateSince
    rec.stateAtClose = from
    const socket = rec.socket
    if (socket !== null) {
      rec.finalBytesRead = socket.bytesRead
      rec.finalBytesWritten = socket.bytesWritten ?? 0
    }
    rec.closeReason = rec.pendingReason ?? classifyClientClose(rec, this.#shuttingDown)
    const code = (rec.error as { code?: unknown } | null)?.code
    rec.errorCode = typeof code === 'string' ? code : null
    rec.closedAt = this.#epochOffset + now
    rec.duration = now - rec.openedAtClock
    rec.state = 'closed'
    rec.stateSince = now
    rec.socket = null
    rec.session = null
    if (!this.#records.delete(rec)) return
    this.#counts[from]--
    this.#closedByReason[rec.closeReason] = (this.#closedByReason[rec.closeReason] ?? 0) + 1
    if (this.#watched.delete(rec) && this.#watched.size === 0) this.#stopSweeper()
    this.#emit('transition', rec, clientTransitionChannel, from, 'closed')
    this.#emit('close', rec, clientCloseChannel)
  }

  // ---- internals ----------------------------------------------------------------

  #idleIfAlive(rec: ClientConnectionRecord): void {
    if (rec.state !== 'active' || rec.inFlight > 0 || rec.socket?.destroyed !== false) return
    this.#transition(rec, 'idle', this.#clock.now())
  }

  #pingAcked(rec: ClientConnectionRecord, rtt: number): void {
    if (rec.state !== 'closed') pingAcked(rec, rtt, this.#clock.now())
  }

  /** No ACK: the route is dead. Destroying the socket (as undici itself does) fails what is in flight on it with the error, and undici connects afresh for the next request. */
  #pingTimedOut(rec: ClientConnectionRecord): void {
    const socket = rec.socket
    if (socket === null) return
    const err = new PingTimeoutError(rec.origin, rec.pingSilence, this.options.pingTimeout)
    rec.pendingReason ??= 'ping_timeout'
    rec.error ??= err
    this.#watched.delete(rec)
    // Through the socket, never a write: writing to a TLS socket under a live
    // Http2Session aborts the process (see DESIGN.md); destroy() is what undici
    // itself does, and its socket 'close' handler then tears down the session.
    socket.destroy(err)
  }

  #stopSweeper(): void {
    if (this.#sweeper !== null) clearInterval(this.#sweeper)
    this.#sweeper = null
  }

  #transition(rec: ClientConnectionRecord, to: LiveState, now: number): void {
    const from = rec.state as LiveState
    if (from === to) return
    rec.stateDurations[from] += now - rec.stateSince
    rec.stateSince = now
    rec.state = to
    if (this.#records.has(rec)) {
      this.#counts[from]--
      this.#counts[to]++
    }
    this.#emit('transition', rec, clientTransitionChannel, from, to)
  }

  #emit(
    event: 'open' | 'close' | 'transition',
    rec: ClientConnectionRecord,
    channel: Channel,
    from?: ConnectionState,
    to?: ConnectionState,
  ): void {
    if (event === 'transition')
      this.emit('transition', rec, from as ConnectionState, to as ConnectionState)
    else this.emit(event, rec)
    if (channel.hasSubscribers) {
      channel.publish(event === 'transition' ? { record: rec, from, to } : { record: rec })
    }
  }
}
