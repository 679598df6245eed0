import { EventEmitter } from 'node:events'
import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { Admission } from './admission.js'
import {
  closeChannel,
  openChannel,
  pressureChannel,
  streamCutChannel,
  transitionChannel,
} from './channels.js'
import { classifyClose, readEndState } from './classify.js'
import type { CloseReason } from './close-reasons.js'
import { DeadlineQueue } from './deadline-queue.js'
import { Drain, type DrainResult } from './drain.js'
import { TrackerClosedError } from './errors.js'
import { bindServer, kRecord, type ServerBinding } from './http1.js'
import { streamGuardOf } from './http2.js'
import {
  type ConnectionTrackerOptions,
  type RequestOverrides,
  type ResolvedOptions,
  ResolvedRequestOverrides,
  resolveDrainTimeout,
  resolveOptions,
  resolveRequestOverrides,
} from './options.js'
import { checkPing, pingAcked, startPing } from './ping.js'
import { openFileLimit, Pressure, type PressureSnapshot, processConnections } from './pressure.js'
import {
  checkRates,
  connectionProgress,
  scheduleRateCheck,
  setBodyRate,
  setResponseRate,
  startRates,
  stopRates,
} from './rates.js'
import { ConnectionRecord, type DeadlineKind, type TlsInfo } from './record.js'
import { displacementVictim, shedSweep } from './shed.js'
import { type ConnectionState, type LiveState, liveStateIndex } from './states.js'
import {
  checkStreams,
  closeStream,
  openStream,
  overrideStream,
  type StreamCutReason,
  type StreamGuard,
  streamsDueAt,
} from './streams.js'

const INFINITY = Number.POSITIVE_INFINITY
/**
 * A session cut with GOAWAY gets two sweeps to flush it and close before it is destroyed:
 * enough for the frame to leave, short enough that a stalled header block holds nothing.
 */
const SESSION_CLOSE_GRACE_SWEEPS = 2
/** Longest stretch, in wall ms, one timed sweep runs before yielding to I/O. */
const SWEEP_SLICE_MS = 4

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

export interface ConnectionTrackerEvents {
  open: [record: ConnectionRecord]
  transition: [record: ConnectionRecord, from: ConnectionState, to: ConnectionState]
  close: [record: ConnectionRecord]
  /** The pressure level moved by 0.05 or more, reached or left 0 or 1, or shedding started or stopped. */
  pressure: [state: PressureSnapshot]
  /** HTTP/2: the guard reset one stream of the session (RST_STREAM); the session goes on. */
  streamCut: [record: ConnectionRecord, reason: StreamCutReason, streamId: number]
}

/**
 * Tracks every connection of the servers it is attached to through its
 * states, enforces the phase deadlines with one sweeper, and reports each
 * connection's record on open, transition and close.
 */
export class ConnectionTracker extends EventEmitter<ConnectionTrackerEvents> {
  /** The options as resolved at construction. */
  readonly options: ResolvedOptions
  readonly #clock: ResolvedOptions['clock']
  /** Clock ms → epoch ms. */
  readonly #epochOffset: number
  readonly #records = new Set<ConnectionRecord>()
  readonly #queue = new DeadlineQueue<ConnectionRecord>()
  /** TLS connections accepted with no byte yet: polled so `handshaking` shows when bytes flow. */
  readonly #awaitingBytes = new Set<ConnectionRecord>()
  readonly #bindings = new Map<object, ServerBinding>()
  /** Live connections per state, indexed as LIVE_STATES. */
  readonly #counts = [0, 0, 0, 0, 0]
  readonly #closedByReason: Partial<Record<CloseReason, number>> = {}
  #sweeper: NodeJS.Timeout | null = null
  #closed = false
  /** Set when Node's parser did not report a request's first byte: fall back to polling idle connections. */
  #pollIdle = false
  readonly #admission: Admission
  #drain: Drain | null = null
  /** Null when the `pressure` option is off. */
  readonly #pressure: Pressure | null
  /** Pressure's way of closing: its own reason counts the connection out at once. */
  readonly #victim = (rec: ConnectionRecord, reason: CloseReason): void => {
    if (reason === 'shed_under_pressure') this.#shed(rec)
    else this.#cut(rec, reason)
  }
  /** While idle connections are polled (no parser hook), bytes since the last response are a request. */
  readonly #idleBytesMoved = (rec: ConnectionRecord): boolean =>
    this.#pollIdle &&
    rec.session === null &&
    rec.httpSocket !== null &&
    rec.httpSocket.bytesRead !== rec.bytesReadAtIdle
  readonly #onStreamFailed = (g: StreamGuard, reason: StreamCutReason) => this.#cutStream(g, reason)

  constructor(options?: ConnectionTrackerOptions) {
    super()
    this.options = resolveOptions(options)
    this.#admission = new Admission(this.options)
    const p = this.options.pressure
    // The open-file limit is read once, here: changing it at run time is rare, and reading
    // /proc on every sweep is not free.
    this.#pressure =
      p === null ? null : new Pressure(p, this.options.maxConnections, openFileLimit())
    this.#clock = this.options.clock
    this.#epochOffset = Date.now() - this.#now()
  }

  get closed(): boolean {
    return this.#closed
  }

  /**
   * Guards `server` (an `http.Server` or `https.Server`, listening or not)
   * from its next accepted connection on. Returns the tracker.
   */
  attach(server: object): this {
    if (this.#closed) throw new TrackerClosedError()
    if (this.#bindings.has(server)) return this
    const binding = bindServer(this, server)
    this.#bindings.set(server, binding)
    if (this.#sweeper === null) {
      this.#sweeper = setInterval(() => this.#timedSweep(), this.options.sweepInterval)
      this.#sweeper.unref()
    }
    return this
  }

  /** Counts of live connections by state, and of closed ones by reason. */
  snapshot(): Snapshot {
    const c = this.#counts
    return {
      total: this.#records.size,
      new: c[0] as number,
      handshaking: c[1] as number,
      idle: c[2] as number,
      active: c[3] as number,
      upgraded: c[4] as number,
      closedByReason: { ...this.#closedByReason },
      pressure: this.#pressure?.snapshot(this.#live()) ?? null,
    }
  }

  /** The live connections' records. */
  connections(): IterableIterator<ConnectionRecord> {
    return this.#records.values()
  }

  /** The record of the connection a socket or request belongs to, while it is tracked. */
  recordOf(target: Socket | IncomingMessage): ConnectionRecord | undefined {
    const socket = (target as IncomingMessage).socket ?? target
    const rec = (socket as unknown as { [kRecord]?: ConnectionRecord })[kRecord]
    return rec !== undefined && rec.state !== 'closed' && this.#records.has(rec) ? rec : undefined
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
        this.#now(),
      )
      this.#reschedule(rec)
      return true
    }
    const rec = this.recordOf(req as IncomingMessage)
    if (rec === undefined || rec.state !== 'active') return false
    if (resolved.requestTimeout !== undefined) {
      rec.requestDeadlineAt =
        resolved.requestTimeout === 0 ? INFINITY : rec.requestStartedAt + resolved.requestTimeout
    }
    if (rec.req === req) {
      const now = this.#now()
      if (resolved.minBodyRate !== undefined)
        setBodyRate(rec, connectionProgress, resolved.minBodyRate, now)
      if (resolved.minResponseRate !== undefined) setResponseRate(rec, resolved.minResponseRate)
      scheduleRateCheck(rec, now)
    }
    this.#reschedule(rec)
    return true
  }

  /**
   * Graceful shutdown of every guarded connection: new, handshaking and idle
   * ones close at once (`app_shutdown`); those with a request in flight finish
   * it, answered with `Connection: close`, then close; whatever is still open
   * after `timeout` ms (default 30 s; `false` waits for ever) is closed with
   * `app_shutdown_timeout`. Connections accepted from now on are closed at
   * accept. Call `server.close()` too, so nothing new is accepted. Resolves
   * once every connection is closed, with counts per outcome.
   */
  drain({ timeout }: { timeout?: number | false } = {}): Promise<DrainResult> {
    const ms = resolveDrainTimeout(timeout)
    if (this.#drain !== null) return this.#drain.done
    const drain = new Drain()
    this.#drain = drain
    for (const rec of [...this.#records]) {
      if (rec.state === 'active' || rec.state === 'upgraded') {
        drain.wait(rec)
        if (rec.state === 'active') this.#rotate(rec, 'app_shutdown')
      } else {
        drain.closedAtOnce()
        this.#cut(rec, 'app_shutdown')
      }
    }
    drain.arm(ms, () => {
      for (const rec of [...this.#records]) {
        drain.forced(rec)
        this.#cut(rec, 'app_shutdown_timeout')
      }
    })
    drain.settle(this.#records.size)
    return drain.done
  }

  /**
   * Enforces every deadline due at `now` (the clock's time by default) and
   * returns how many connections it cut. The sweeper calls this every
   * `sweepInterval`; tests with an injected clock call it directly.
   */
  sweep(now: number = this.#now()): number {
    return this.#sweep(now, INFINITY)
  }

  /**
   * The sweeper's own sweep, in slices: closing a TLS connection costs ~0.1 ms
   * of CPU (measured), so a sweep that finds hundreds of stalled handshakes at
   * once (an attack) would block the event loop for tens of ms and every
   * healthy request with it. After `SWEEP_SLICE_MS` the rest waits for the next
   * turn of the loop (`setImmediate`), behind the I/O that queued meanwhile.
   */
  #timedSweep(): void {
    if (this.#closed) return
    if (this.#sweep(this.#now(), performance.now() + SWEEP_SLICE_MS) < 0) {
      setImmediate(this.#nextSlice).unref()
    }
  }

  readonly #nextSlice = (): void => this.#timedSweep()

  /** Returns the count cut, or -1 when it stopped at `until` (wall ms) with more due. */
  #sweep(now: number, until: number): number {
    if (this.#awaitingBytes.size > 0) this.#pollHandshakes(now)
    if (this.#pollIdle) this.#pollRequests(now)
    let cut = 0
    let handled = 0
    for (
      let rec = this.#queue.popExpired(now);
      rec !== undefined;
      rec = this.#queue.popExpired(now)
    ) {
      // The wall clock is read every 8 entries: reading it costs more than most steps.
      if (until !== INFINITY && (++handled & 7) === 0 && performance.now() >= until) {
        this.#queue.schedule(rec, rec.deadlineAt)
        return -1
      }
      if (rec.requestDeadlineAt > now && rec.phaseDeadlineAt > now) {
        // Not a deadline: connection age or a rate check.
        if (rec.ageDeadlineAt <= now) this.#ageReached(rec)
        if (rec.pingCheckAt <= now) {
          const step = checkPing(rec, this.options, now)
          if (step === 'timeout') {
            this.#cut(rec, 'ping_timeout')
            cut++
            continue
          }
          if (step === 'send') rec.binding?.ping(rec)
        }
        let failed =
          rec.rateCheckAt <= now ? checkRates(rec, now, this.options.sweepInterval) : null
        if (failed === null && streamsDueAt(rec) <= now) {
          // HTTP/2: a stream that fails is reset on its own; the session is cut only when its
          // client takes no byte at all.
          failed = checkStreams(rec, now, this.options.sweepInterval, this.#onStreamFailed)
        }
        if (failed !== null) {
          this.#cut(rec, failed)
          cut++
          continue
        }
        this.#reschedule(rec)
        continue
      }
      const kind: DeadlineKind =
        rec.requestDeadlineAt <= now ? 'request_timeout' : (rec.phaseReason as DeadlineKind)
      // Without the parser hook, a request whose first byte arrived since the
      // last poll is not idle. With it, bytes the hook did not report are not a
      // request (a stray CRLF between requests, which the parser skips).
      if (
        kind === 'keep_alive_timeout' &&
        this.#pollIdle &&
        rec.session === null &&
        rec.httpSocket !== null &&
        rec.httpSocket.bytesRead !== rec.bytesReadAtIdle
      ) {
        this._requestBegin(rec, now)
        continue
      }
      this.#cut(rec, kind)
      cut++
    }
    if (this.#pressure !== null) cut += this.#pressureSweep(this.#pressure, now)
    return cut
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
    this.#drain?.settle(0)
    for (const binding of this.#bindings.values()) binding.detach()
    this.#bindings.clear()
    // `server.close()` calls back before the 'close' events of the sockets it
    // just destroyed (Fastify's onClose runs in between): finish those records
    // now rather than drop them.
    for (const rec of this.#records) {
      if (rec.rawSocket?.destroyed === true || rec.httpSocket?.destroyed === true) this._closed(rec)
    }
    for (const rec of this.#records) rec.binding?.release(rec)
    processConnections.live -= this.#live()
    this.#pressure?.close()
    this.#records.clear()
    this.#queue.clear()
    this.#awaitingBytes.clear()
    this.#counts.fill(0)
  }

  // ---- lifecycle, called by the server bindings --------------------------------

  /** @internal A connection was accepted. */
  _open(rawSocket: Socket, secure: boolean, binding: ServerBinding): ConnectionRecord {
    const now = this.#now()
    const rec = new ConnectionRecord(
      rawSocket,
      secure,
      now,
      this.#epochOffset + now,
      binding.listenEnd(),
    )
    rec.binding = binding
    this.#records.add(rec)
    ;(this.#counts[0] as number)++
    processConnections.live++
    const p = this.#pressure
    if (p !== null && p.perIp !== null) p.countAddress(rec, 1)
    const o = this.options
    if (secure) {
      this.#setPhase(rec, 'tls_handshake_timeout', o.handshakeTimeout, now)
      this.#awaitingBytes.add(rec)
    } else {
      rec.establishedAtClock = now
      rec.httpSocket = rawSocket
      this.#setPhase(rec, 'request_headers_timeout', o.headersTimeout, now)
    }
    if (o.maxConnectionAge > 0) {
      rec.ageDeadlineAt = now + o.maxConnectionAge
      this.#reschedule(rec)
    }
    this.#emit('open', rec, openChannel)
    let refused: CloseReason | null
    if (this.#drain !== null) refused = 'app_shutdown'
    else {
      const live = this.#live()
      const handshaking = (this.#counts[0] as number) + (this.#counts[1] as number)
      refused = this.#admission.admit(rec, live, handshaking, p?.over(live) === true)
      if (p !== null) refused = this.#pressureAdmit(p, rec, refused, handshaking, now)
    }
    if (refused !== null) {
      if (refused === 'app_shutdown') this.#drain?.closedAtOnce()
      this.#victim(rec, refused)
    }
    return rec
  }

  /** @internal The TLS handshake completed. */
  _established(rec: ConnectionRecord, httpSocket: Socket, tls: TlsInfo): void {
    if (rec.state === 'closed') return
    const now = this.#now()
    this.#awaitingBytes.delete(rec)
    rec.establishedAtClock = now
    rec.handshakeDuration = now - rec.openedAtClock
    rec.httpSocket = httpSocket
    rec.tls = tls
    this.#setPhase(rec, 'request_headers_timeout', this.options.headersTimeout, now)
    this.#transition(rec, 'idle', now)
  }

  /** @internal The first byte of a request arrived. */
  _requestBegin(rec: ConnectionRecord, now: number = this.#now()): void {
    // Heads are parsed one at a time: while one is being read, a second report
    // of a begin (the sweep's bytesRead check, then the parser hook) is the same request.
    if (rec.state === 'closed' || rec.state === 'upgraded' || rec.readingHead) return
    rec.sawMessageBegin = true
    rec.inFlight++
    rec.readingHead = true
    if (rec.inFlight === 1) rec.requestStartedAt = now
    if (rec.timeToFirstRequest === null) {
      // The first request's head deadline runs from establishment, already set.
      rec.timeToFirstRequest = now - rec.establishedAtClock
      if (rec.phaseReason !== 'request_headers_timeout') {
        this.#setPhase(
          rec,
          'request_headers_timeout',
          this.options.headersTimeout,
          rec.establishedAtClock,
        )
      }
    } else {
      this.#setPhase(rec, 'request_headers_timeout', this.options.headersTimeout, now)
    }
    if (rec.inFlight === 1) {
      const t = this.options.requestTimeout
      rec.requestDeadlineAt = t === 0 ? INFINITY : now + t
    }
    this.#reschedule(rec)
    this.#transition(rec, 'active', now)
  }

  /** @internal A request head was parsed. */
  _requestHead(rec: ConnectionRecord, req: IncomingMessage, res: ServerResponse): void {
    if (rec.state === 'closed') return
    if (!rec.sawMessageBegin) {
      // Node's parser did not report the first byte: count the request from
      // now and poll idle connections from here on (see ARCHITECTURE.md).
      if (!this.#pollIdle) {
        this.#pollIdle = true
        for (const other of this.#records) other.bytesReadAtIdle = other.httpSocket?.bytesRead ?? 0
      }
      this._requestBegin(rec)
    }
    rec.sawMessageBegin = false
    rec.readingHead = false
    rec.requests++
    rec.httpVersion = httpVersionOf(req)
    this.#setPhase(rec, null, 0, 0)
    const o = this.options
    if (o.maxRequestsPerConnection > 0 && rec.requests >= o.maxRequestsPerConnection) {
      rec.rotateReason ??= 'max_requests_per_connection'
    }
    if (rec.req === null) {
      // Rates and rotation follow the oldest request in flight (pipelined ones wait behind it).
      rec.req = req
      rec.res = res
      const headers = req.headers
      const length = headers['content-length']
      const hasBody =
        length !== undefined ? length !== '0' : headers['transfer-encoding'] !== undefined
      // A body window starts now. Without a body only the response window is scheduled,
      // and a first check a little early (from the request's first byte) only restarts it:
      // a clock read saved per request (~0.2 µs on a VM without a fast clock source).
      const now = hasBody ? this.#now() : rec.stateSince
      startRates(rec, connectionProgress, hasBody, o.minBodyRate, o.minResponseRate, now)
    }
    // Rotation or drain decided: this response says `Connection: close`.
    if (rec.rotateReason !== null) res.shouldKeepAlive = false
    this.#reschedule(rec)
  }

  /** @internal A response finished while its request body is still arriving: `_responseEnd` follows when it ends. */
  _responseSent(rec: ConnectionRecord, last: 'client' | 'server' | null): void {
    if (last !== null) rec.closeIntent = last
  }

  /** @internal A request is done (response finished, body read); `last` says who ends the connection after it, if anyone. */
  _responseEnd(rec: ConnectionRecord, last: 'client' | 'server' | null): void {
    if (rec.state === 'closed') return
    const now = this.#now()
    if (rec.inFlight > 0) rec.inFlight--
    if (last !== null) rec.closeIntent = last
    // Node closes after this response even with requests pipelined behind it.
    if (last !== null && rec.rotateReason !== null) rec.pendingReason ??= rec.rotateReason
    if (rec.inFlight > 0) {
      // Pipelined: the next request's absolute limit runs from now.
      const t = this.options.requestTimeout
      rec.requestStartedAt = now
      rec.requestDeadlineAt = t === 0 ? INFINITY : now + t
      this.#reschedule(rec)
      return
    }
    rec.requestDeadlineAt = INFINITY
    rec.req = null
    rec.res = null
    stopRates(rec)
    // Only the polling fallback compares bytes read while idle.
    if (this.#pollIdle) rec.bytesReadAtIdle = rec.httpSocket?.bytesRead ?? 0
    // The keep-alive deadline also bounds a rotated connection whose client never takes the close.
    this.#setPhase(rec, 'keep_alive_timeout', this.options.keepAliveTimeout, now)
    this.#reschedule(rec)
    this.#transition(rec, 'idle', now)
    if (rec.rotateReason !== null) {
      rec.pendingReason ??= rec.rotateReason
      rec.binding?.endAfterResponse(rec, last !== null)
    }
  }

  /**
   * @internal An HTTP/2 session started on the connection (after TLS, or at
   * accept for h2c): it is established, and idle until its first stream.
   */
  _sessionStarted(
    rec: ConnectionRecord,
    session: import('node:http2').Http2Session,
    httpSocket: Socket,
    tls: TlsInfo | null,
  ): void {
    if (rec.state === 'closed') return
    rec.session = session
    rec.httpVersion = '2.0'
    if (tls !== null) this._established(rec, httpSocket, tls)
    else if (rec.httpSocket === null) rec.httpSocket = httpSocket
    const now = this.#now()
    startPing(rec, this.options, now)
    if (rec.state === 'new') {
      this.#setPhase(
        rec,
        'request_headers_timeout',
        this.options.headersTimeout,
        rec.establishedAtClock,
      )
      this.#transition(rec, 'idle', now)
    }
    this.#reschedule(rec)
  }

  /** @internal An HTTP/2 stream opened (its headers are complete); returns its guard. */
  _streamOpened(
    rec: ConnectionRecord,
    stream: import('node:http2').ServerHttp2Stream,
  ): StreamGuard | null {
    if (rec.state === 'closed') return null
    const now = this.#now()
    const guard = openStream(rec, stream, this.options, now)
    rec.requests++
    rec.inFlight++
    if (rec.inFlight > rec.peakConcurrentStreams) rec.peakConcurrentStreams = rec.inFlight
    if (rec.timeToFirstRequest === null) rec.timeToFirstRequest = now - rec.establishedAtClock
    const o = this.options
    if (o.maxRequestsPerConnection > 0 && rec.requests >= o.maxRequestsPerConnection) {
      this.#rotate(rec, 'max_requests_per_connection')
    }
    if (rec.inFlight === 1) {
      this.#setPhase(rec, null, 0, 0)
      this.#transition(rec, 'active', now)
    }
    this.#reschedule(rec)
    return guard
  }

  /** @internal An HTTP/2 stream closed. */
  _streamClosed(rec: ConnectionRecord, guard: StreamGuard): void {
    closeStream(rec, guard)
    if (rec.state === 'closed' || rec.inFlight === 0) return
    rec.inFlight--
    // Streams torn down with a session we cut, or that died: the record keeps its state.
    if (rec.inFlight > 0 || rec.pendingReason !== null || rec.session?.destroyed === true) return
    const now = this.#now()
    this.#setPhase(rec, 'keep_alive_timeout', this.options.keepAliveTimeout, now)
    this.#transition(rec, 'idle', now)
  }

  /** @internal The ACK of our PING came back. */
  _pingAcked(rec: ConnectionRecord, rtt: number): void {
    if (rec.state === 'closed') return
    pingAcked(rec, this.options, rtt, this.#now())
    this.#reschedule(rec)
  }

  /** @internal The connection left HTTP (WebSocket, CONNECT): HTTP deadlines stop. */
  _upgraded(rec: ConnectionRecord): void {
    if (rec.state === 'closed') return
    const now = this.#now()
    rec.requests++
    rec.inFlight = 0
    rec.readingHead = false
    rec.requestDeadlineAt = INFINITY
    this.#setPhase(rec, null, 0, 0)
    this.#reschedule(rec)
    this.#transition(rec, 'upgraded', now)
  }

  /** @internal The socket closed: finish the record with exactly one reason. */
  _closed(rec: ConnectionRecord): void {
    if (rec.state === 'closed' || !this.#records.has(rec)) return
    const now = this.#now()
    this.#queue.remove(rec)
    this.#awaitingBytes.delete(rec)
    this.#records.delete(rec)
    readEndState(rec)
    const p = this.#pressure
    // A shed connection was counted out when it was cut.
    if (p !== null && rec.pendingReason === 'shed_under_pressure') p.shedPending--
    else processConnections.live--
    if (p !== null && p.perIp !== null) p.countAddress(rec, -1)
    const reason = rec.pendingReason ?? classifyClose(rec)
    // An error after our own cut is its echo (the peer sees a reset), not its cause.
    const code =
      rec.pendingReason === null ? (rec.error as { code?: unknown } | null)?.code : undefined
    rec.errorCode = typeof code === 'string' ? code : null
    rec.stateAtClose = rec.state as LiveState
    const raw = rec.rawSocket
    if (raw !== null) {
      rec.finalBytesRead = raw.bytesRead
      rec.finalBytesWritten = raw.bytesWritten ?? 0
    }
    rec.closeReason = reason
    rec.closedAt = this.#epochOffset + now
    rec.duration = now - rec.openedAtClock
    this.#closedByReason[reason] = (this.#closedByReason[reason] ?? 0) + 1
    this.#transition(rec, 'closed', now)
    rec.rawSocket = null
    rec.httpSocket = null
    rec.binding = null
    rec.req = null
    rec.res = null
    rec.streams = null
    this.#admission.release(rec)
    this.#drain?.closed(rec)
    this.#emit('close', rec, closeChannel)
    this.#drain?.settle(this.#records.size)
  }

  // ---- internals ------------------------------------------------------------

  /**
   * Whole milliseconds. Every time a record keeps is then a small integer, which
   * V8 stores in the field itself; a fractional time costs a 16-byte heap
   * number per field per record. A millisecond is far finer than any deadline.
   */
  #now(): number {
    return Math.floor(this.#clock.now())
  }

  /** Live connections, less those shed and waiting for their close (their descriptor is gone). */
  #live(): number {
    return this.#records.size - (this.#pressure?.shedPending ?? 0)
  }

  /**
   * Pressure's say at accept: an address over its share is refused; above the connection
   * limit, the oldest unproductive connection makes room, if there is one and no other
   * cap refuses the new connection anyway.
   */
  #pressureAdmit(
    p: Pressure,
    rec: ConnectionRecord,
    refused: CloseReason | null,
    handshaking: number,
    now: number,
  ): CloseReason | null {
    const full = refused === 'max_concurrent_connections_exceeded'
    if ((refused === null || full) && p.perIp !== null && p.fair) {
      const share = p.ipShare()
      if (share > 0 && (p.perIp.get(rec.remoteAddress ?? '') ?? 0) > share)
        return 'shed_under_pressure'
    }
    if (!full || !p.options.displace) return refused
    const other = this.#admission.recheck(rec, handshaking)
    if (other !== null) return other
    const victim = displacementVictim(this.#records, now, p)
    if (victim === null) return refused
    this.#shed(victim)
    return null
  }

  /** Closes `rec` for pressure and counts it out of the live connections at once. */
  #shed(rec: ConnectionRecord): void {
    const fresh = rec.pendingReason === null
    this.#cut(rec, 'shed_under_pressure')
    if (fresh && rec.pendingReason === 'shed_under_pressure' && this.#pressure !== null) {
      this.#pressure.shedPending++
      processConnections.live--
    }
  }

  /** Once per sweep: the level, and while it is above 0, shrunken deadlines and shedding. */
  #pressureSweep(p: Pressure, now: number): number {
    const live = this.#live()
    if (p.update(now, live)) {
      const state = p.snapshot(live)
      if (this.listenerCount('pressure') > 0) this.#safeEmit('pressure', state)
      if (pressureChannel.hasSubscribers) pressureChannel.publish({ ...state, tracker: this })
    }
    p.trackAddresses(this.#records)
    if (p.level === 0 && p.perIp === null) {
      if (p.spare.length > 0) p.spare = []
      return 0
    }
    return shedSweep(
      this.#records,
      this.#queue,
      now,
      this.options,
      p,
      this.#idleBytesMoved,
      this.#victim,
    )
  }

  #setPhase(
    rec: ConnectionRecord,
    reason: DeadlineKind | null,
    timeout: number,
    from: number,
  ): void {
    rec.phaseReason = reason
    rec.phaseDeadlineAt = reason === null || timeout === 0 ? INFINITY : from + timeout
    this.#reschedule(rec)
  }

  /**
   * Keeps the record's heap key at or before its earliest due time. A key
   * that is too early is harmless: the sweep pops the record, finds nothing
   * due and queues it again at its real time. So a deadline that moves later
   * (every keep-alive request moves the idle deadline later) leaves the heap
   * alone, and a request costs no heap move; only an earlier deadline moves
   * the entry up.
   */
  #reschedule(rec: ConnectionRecord): void {
    if (rec.state === 'closed') return
    const at = Math.min(
      rec.pingCheckAt,
      rec.phaseDeadlineAt,
      rec.requestDeadlineAt,
      rec.ageDeadlineAt,
      rec.rateCheckAt,
      streamsDueAt(rec),
    )
    if (rec.queueIndex < 0 ? at !== INFINITY : at < rec.deadlineAt) this.#queue.schedule(rec, at)
  }

  #transition(rec: ConnectionRecord, to: ConnectionState, now: number): void {
    const from = rec.state
    if (from === to || from === 'closed') return
    const i = liveStateIndex(from)
    ;(rec.durations[i] as number) += now - rec.stateSince
    ;(this.#counts[i] as number)--
    if (to !== 'closed') (this.#counts[liveStateIndex(to)] as number)++
    rec.stateSince = now
    rec.state = to
    if (this.listenerCount('transition') > 0) this.#safeEmit('transition', rec, from, to)
    if (transitionChannel.hasSubscribers)
      transitionChannel.publish({ record: rec, from, to, tracker: this })
  }

  #cut(rec: ConnectionRecord, reason: CloseReason): void {
    // A session sent GOAWAY for rotation or drain is still open: a later cut
    // (the drain timeout, a dead peer) is what actually ends it.
    if (
      rec.session !== null &&
      rec.pendingReason !== null &&
      rec.pendingReason === rec.rotateReason
    ) {
      rec.pendingReason = reason
    } else {
      rec.pendingReason ??= reason
    }
    rec.phaseDeadlineAt = INFINITY
    rec.requestDeadlineAt = INFINITY
    rec.ageDeadlineAt = INFINITY
    rec.rateCheckAt = INFINITY
    rec.pingCheckAt = INFINITY
    if (rec.streams !== null) rec.streams.dueAt = INFINITY
    this.#queue.remove(rec)
    this.#awaitingBytes.delete(rec)
    rec.binding?.cut(rec, reason)
    const raw = rec.rawSocket
    if (rec.session !== null && raw !== null && !raw.destroyed) {
      // GOAWAY waits for streams only nghttp2 knows of (a header block that never ends), and
      // a session Node destroys after our GOAWAY may leave its socket open (it ends it and
      // waits for the peer, measured under TLS with HPACK garbage and a peer that reset):
      // if the connection is still there a moment later, the next cut destroys it.
      rec.phaseDeadlineAt = this.#now() + SESSION_CLOSE_GRACE_SWEEPS * this.options.sweepInterval
      this.#queue.schedule(rec, rec.phaseDeadlineAt)
    }
  }

  /** HTTP/2: one stream failed a limit: reset it, count it on the record, report it. */
  #cutStream(g: StreamGuard, reason: StreamCutReason): void {
    const rec = g.rec
    rec.streamCuts ??= {}
    const cuts = rec.streamCuts
    cuts[reason] = (cuts[reason] ?? 0) + 1
    const streamId = g.stream.id ?? 0
    rec.binding?.resetStream(g)
    if (this.listenerCount('streamCut') > 0) this.#safeEmit('streamCut', rec, reason, streamId)
    if (streamCutChannel.hasSubscribers)
      streamCutChannel.publish({ record: rec, reason, streamId, tracker: this })
  }

  /** Close after the response in flight: it says `Connection: close` if its head is not out yet. */
  #rotate(rec: ConnectionRecord, reason: CloseReason): void {
    rec.rotateReason ??= reason
    if (rec.session !== null) {
      // HTTP/2: GOAWAY; streams in flight finish, no new one starts, then it closes.
      rec.pendingReason ??= reason
      rec.binding?.goaway(rec)
      return
    }
    const res = rec.res
    if (res !== null && !res.headersSent) res.shouldKeepAlive = false
  }

  #ageReached(rec: ConnectionRecord): void {
    rec.ageDeadlineAt = INFINITY
    if (rec.state === 'active' || (rec.session !== null && rec.state === 'idle')) {
      this.#rotate(rec, 'max_connection_age')
    }
    // An upgraded connection (a WebSocket) is the application's to end.
    else if (rec.state !== 'upgraded') this.#cut(rec, 'max_connection_age')
  }

  #pollHandshakes(now: number): void {
    for (const rec of this.#awaitingBytes) {
      const raw = rec.rawSocket
      if (raw !== null && raw.bytesRead > 0) {
        this.#awaitingBytes.delete(rec)
        if (rec.state === 'new') this.#transition(rec, 'handshaking', now)
      }
    }
  }

  /** Fallback when the parser hook is unavailable: O(idle) per sweep. */
  #pollRequests(now: number): void {
    for (const rec of this.#records) {
      const socket = rec.httpSocket
      // HTTP/2 sessions read PING ACKs and SETTINGS while idle: never an HTTP/1 request.
      if (socket === null || rec.inFlight > 0 || rec.session !== null) continue
      if (
        (rec.state === 'idle' || rec.state === 'new') &&
        socket.bytesRead !== rec.bytesReadAtIdle
      ) {
        this._requestBegin(rec, now)
      }
    }
  }

  #emit(event: 'open' | 'close', rec: ConnectionRecord, channel: typeof openChannel): void {
    if (this.listenerCount(event) > 0) this.#safeEmit(event, rec)
    if (channel.hasSubscribers) channel.publish({ record: rec, tracker: this })
  }

  /**
   * A listener that throws must not leave a record half-updated: every
   * bookkeeping step is done before emitting, and the error is re-thrown on
   * the next tick, where it surfaces as any uncaught exception would.
   */
  #safeEmit(event: keyof ConnectionTrackerEvents, ...args: unknown[]): void {
    // Each listener on its own: one that throws must not hide the event from the
    // listeners after it (exporters, the close log, the live view).
    for (const listener of this.rawListeners(event) as ((...a: unknown[]) => unknown)[]) {
      try {
        listener.apply(this, args)
      } catch (err) {
        process.nextTick(() => {
          throw err
        })
      }
    }
  }
}

/** Node builds the version string per request: keep the common ones as shared literals. */
function httpVersionOf(req: IncomingMessage): string {
  const v = req.httpVersion
  return v === '1.1' ? '1.1' : v === '1.0' ? '1.0' : v
}
