import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Http2Session, ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { streamGuardOf } from '../observe/http2.js'
import { bindServer } from '../observe/server.js'
import type { BindingSink, ServerBinding } from '../observe/sink.js'
import { adoptSettings, type FrameworkSettings, type ServerSetting } from '../options/adopt.js'
import {
  type ConnectionTrackerOptions,
  type OverridableRequest,
  type RequestOverrides,
  type ResolvedOptions,
  ResolvedRequestOverrides,
  resolveOptions,
  resolveRequestOverrides,
} from '../options/options.js'
import { Admission } from '../policy/admission.js'
import { settleClose } from '../policy/classify.js'
import {
  openFileLimit,
  Pressure,
  type PressureSnapshot,
  processConnections,
} from '../policy/pressure.js'
import {
  checkRates,
  connectionProgress,
  rateCheckAt,
  scheduleRateCheck,
  setBodyRate,
  setResponseRate,
  startRates,
  stopRates,
} from '../policy/rates.js'
import { overrideStream, type StreamCutReason, type StreamGuard } from '../policy/streams.js'
import {
  type ClockBase,
  ConnectionRecord,
  type DeadlineKind,
  type TlsInfo,
} from '../record/record.js'
import { monotonicClock } from '../time/clock.js'
import { DeadlineQueue, earliest, NEVER } from '../time/deadline-queue.js'
import { closeChannel, drainChannel, openChannel, transitionChannel } from '../vocab/channels.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import { TrackerClosedError } from '../vocab/errors.js'
import { type ConnectionState, type LiveState, liveStateIndex } from '../vocab/states.js'
import { kRecord } from '../vocab/symbols.js'
import { SETTING_NOT_ADOPTED, SETTING_REPLACED } from '../vocab/warnings.js'
import type { Core } from './core.js'
import { closeAfterResponse, cutConnection, rotateConnection } from './cut.js'
import {
  Drain,
  type DrainOptions,
  type DrainPhase,
  type DrainResult,
  resolveDrainOptions,
} from './drain.js'
import { liveConnections, pressureAdmit, shed } from './pressure-hooks.js'
import { RecordList } from './record-list.js'
import {
  cutStream,
  sessionPingAcked,
  sessionStarted,
  streamClosed,
  streamOpened,
} from './session-lifecycle.js'
import { startSweeper, sweepDue } from './sweep.js'
import { safeEmit, type TrackerFace } from './tracker-events.js'
import {
  closeWebSocketForDrain,
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
 * The state machine behind a `ConnectionTracker`: the only writer of tracker state. It holds
 * the live records, the deadline heap and the counts; the bindings (observe/) report Node's
 * events to it through `BindingSink`, the sweep and the other engine modules work on it
 * through `Core`, and the public tracker (tracker.ts) forwards its API here. Events are
 * emitted on the public tracker (`face`), so listeners see the object they subscribed to.
 */
export class Engine implements BindingSink, Core {
  /** The public tracker: what events are emitted on and channels publish. */
  readonly face: TrackerFace
  /**
   * The options as resolved at construction, with the timeouts the application set on the
   * first server attached adopted (`options.sources` says where each value came from).
   */
  readonly options: ResolvedOptions
  readonly #clock: ResolvedOptions['clock']
  /** Clock ms → epoch ms. */
  readonly #clockBase: ClockBase
  /** The live connections, in accept order. */
  readonly records = new RecordList()
  /** The sweeper's deadline heap. */
  readonly queue = new DeadlineQueue<ConnectionRecord>()
  /** TLS connections accepted with no byte yet: polled so `handshaking` shows when bytes flow. */
  readonly awaitingBytes = new Set<ConnectionRecord>()
  readonly #bindings = new Map<object, ServerBinding>()
  /** Live connections per state, indexed as LIVE_STATES. */
  readonly #counts = [0, 0, 0, 0, 0]
  readonly #closedByReason: Partial<Record<CloseReason, number>> = {}
  #sweeper: NodeJS.Timeout | null = null
  #stopped = false
  /** Set when Node's parser did not report a request's first byte: fall back to polling idle connections. */
  pollIdle = false
  /** */
  readonly admission: Admission
  #drain: Drain | null = null
  /** Null when the `pressure` option is off. */
  readonly pressure: Pressure | null
  /** Pressure's way of closing: its own reason counts the connection out at once. */
  readonly victim = (rec: ConnectionRecord, reason: CloseReason): void => {
    if (reason === 'shed_under_pressure') shed(this, rec)
    else cutConnection(this, rec, reason)
  }
  /** While idle connections are polled (no parser hook), bytes since the last response are a request. */
  readonly idleBytesMoved = (rec: ConnectionRecord): boolean =>
    this.pollIdle &&
    rec.session === null &&
    rec.httpSocket !== null &&
    rec.httpSocket.bytesRead !== this.idleBytes(rec)
  /**
   * Polling fallback only: the HTTP socket's bytesRead when each record last became idle.
   * Beside the records, not in them: with the parser hook (every supported Node) no record
   * needs the field.
   */
  readonly #bytesAtIdle = new WeakMap<ConnectionRecord, number>()
  /** */
  markIdleBytes(rec: ConnectionRecord): void {
    this.#bytesAtIdle.set(rec, rec.httpSocket?.bytesRead ?? 0)
  }
  /** */
  idleBytes(rec: ConnectionRecord): number {
    return this.#bytesAtIdle.get(rec) ?? 0
  }
  /**
   * While an adopted requestTimeout (Node's meaning: receiving the request) is in
   * force: the records whose request in flight got its own from a route or a request override,
   * which keeps connguard's meaning (to the response's end). Touched only in that mode.
   */
  readonly ownRequestTimeout = new WeakSet<ConnectionRecord>()
  /** Requests without a body in flight since the last sweep (see `#follow`); duplicates are harmless. */
  readonly #pendingRates: ConnectionRecord[] = []
  /**
   * Records whose keep-alive request began or ended since they were last settled (see
   * `settle`), each listed once until then.
   */
  readonly #unsettled: ConnectionRecord[] = []
  /**
   * Whether a keep-alive request's state, times and deadlines may wait for the next settle:
   * on Node's clock only (a clock of the application's, in tests, gets exact transitions, as
   * the sweep's reading of Node's list does), with the parser hooked (the polling fallback
   * compares bytes at each idle), and while nothing listens to transitions.
   */
  #settleLaterClock: boolean
  /**
   * Set for good once 'transition' gets a listener on the public tracker (tracker.ts): its
   * listeners see every transition as it happens, so no request's waits for a settle.
   */
  transitionListened = false
  /** Live WebSocket upgrades (what `maxUpgradedConnections` caps). */
  webSockets = 0
  /** The WebSocket servers linked by `watchWebSockets`, each with its unlink. */
  readonly #webSocketLinks = new Set<() => void>()
  /**
   * Set for good once 'open', 'transition' or 'close' gets a listener on the public tracker
   * (its 'newListener' listener sets it, tracker.ts): until then the request path (two
   * transitions a request) and the accept and close paths skip `listenerCount`, which cost
   * ~145 instructions a call (callgrind, Node 26).
   */
  mayListen = false
  /** HTTP/2: how the sweep's stream checks reset a stream. */
  readonly onStreamFailed = (g: StreamGuard, reason: StreamCutReason): void =>
    cutStream(this, g, reason)

  constructor(face: TrackerFace, options?: ConnectionTrackerOptions) {
    this.face = face
    this.options = resolveOptions(options)
    this.admission = new Admission(this.options)
    const p = this.options.pressure
    // The open-file limit is read once, here: changing it at run time is rare, and reading
    // /proc on every sweep is not free.
    this.pressure =
      p === null ? null : new Pressure(p, this.options.maxConnections, openFileLimit())
    this.#clock = this.options.clock
    this.#settleLaterClock = this.#clock === monotonicClock
    this.#clockBase = {
      epochOffset: Date.now() - this.now(),
      maxConnectionAge: this.options.maxConnectionAge,
      clock: this.#clock,
    }
  }

  /** `close()` was called. */
  get stopped(): boolean {
    return this.#stopped
  }

  /** See `ConnectionTracker.draining`. */
  get draining(): boolean {
    return this.#drain !== null
  }

  /** See `ConnectionTracker.drainPhase`. */
  get drainPhase(): DrainPhase | null {
    return this.#drain?.phase ?? null
  }

  /** Guards `server`; `framework` says which of its settings a framework (Fastify) made. */
  attach(server: object, framework: FrameworkSettings | undefined): void {
    if (this.#stopped) throw new TrackerClosedError()
    if (this.#bindings.has(server)) return
    const binding = bindServer(this, server, framework)
    this.#bindings.set(server, binding)
    if (this.#sweeper === null) {
      this.#sweeper = startSweeper(this)
    }
  }

  /** See `ConnectionTracker.watchWebSockets`. */
  watchWebSockets(wss: WebSocketServerLike): () => void {
    if (this.#stopped) throw new TrackerClosedError()
    return linkWebSocketServer(this, wss, this.#webSocketLinks)
  }

  /** See `ConnectionTracker.watchWebSocket`. */
  watchWebSocket(ws: WebSocketLike, source?: IncomingMessage | Socket): boolean {
    if (this.#stopped) return false
    return linkWebSocket(this, ws, source)
  }

  /** See `ConnectionTracker.snapshot`. */
  snapshot(): Snapshot {
    this.settleAll()
    const c = this.#counts
    return {
      total: this.records.size,
      new: c[0] as number,
      handshaking: c[1] as number,
      idle: c[2] as number,
      active: c[3] as number,
      upgraded: c[4] as number,
      closedByReason: { ...this.#closedByReason },
      pressure: this.pressure?.snapshot(liveConnections(this)) ?? null,
    }
  }

  /** See `ConnectionTracker.connections`. */
  connections(): IterableIterator<ConnectionRecord> {
    this.settleAll()
    return this.records.values()
  }

  /** See `ConnectionTracker.recordOf`. */
  recordOf(target: Socket | IncomingMessage): ConnectionRecord | undefined {
    const socket = (target as IncomingMessage).socket ?? target
    const rec = (socket as unknown as { [kRecord]?: ConnectionRecord })[kRecord]
    return rec !== undefined && rec.state !== 'closed' && this.records.has(rec) ? rec : undefined
  }

  /** See `ConnectionTracker.overrideRequest`. */
  overrideRequest(
    req: OverridableRequest,
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
        this.now(),
      )
      this.reschedule(rec)
      return true
    }
    const rec = this.recordOf(req as IncomingMessage)
    if (rec?.unsettled === true) this.#settle(rec, this.now())
    if (rec === undefined || rec.state !== 'active') return false
    if (resolved.requestTimeout !== undefined) {
      rec.requestDeadlineAt =
        resolved.requestTimeout === 0 ? NEVER : rec.requestStartedAt + resolved.requestTimeout
      if (this.options.requestTimeoutUntil === 'received') this.ownRequestTimeout.add(rec)
    }
    if (rec.req === req) {
      const now = this.now()
      // A request without a body whose windows wait for the next sweep gets them now.
      if (rec.rates === null) this.#takeWindows(rec, false, now)
      if (resolved.minBodyRate !== undefined)
        setBodyRate(rec, connectionProgress, resolved.minBodyRate, now)
      if (resolved.minResponseRate !== undefined) setResponseRate(rec, resolved.minResponseRate)
      scheduleRateCheck(rec, now)
    }
    this.reschedule(rec)
    return true
  }

  /** See `ConnectionTracker.drain`. */
  drain(options?: DrainOptions): Promise<DrainResult> {
    const resolved = resolveDrainOptions(options)
    if (this.#drain !== null) return this.#drain.done
    const drain = new Drain(resolved)
    this.#drain = drain
    if (this.#stopped) {
      drain.settle(0, true)
      return drain.done
    }
    if (resolved.delay > 0) this.#emitDrain('delay')
    drain.startAfterDelay(() => this.#startClosing(drain))
    return drain.done
  }

  /** See `ConnectionTracker.drainClosing`. */
  drainClosing(): Promise<void> {
    return this.#drain?.closing ?? Promise.resolve()
  }

  #startClosing(drain: Drain): void {
    if (this.#stopped || drain.phase !== 'delay') return
    drain.beginClosing()
    for (const binding of this.#bindings.values()) binding.drainStarted()
    this.#emitDrain('closing')
    const now = this.now()
    this.settleAll(now)
    for (const rec of [...this.records]) this.#drainConnection(drain, rec, now)
    drain.arm(() => {
      for (const rec of [...this.records]) {
        drain.forced(rec)
        cutConnection(this, rec, 'app_shutdown_timeout')
      }
    })
    this.#settleDrain(this.records.size)
  }

  /** One connection enters the closing phase: busy ones finish, idle ones get the grace. */
  #drainConnection(drain: Drain, rec: ConnectionRecord, now: number): void {
    drain.wait(rec)
    if (rec.pendingReason !== null) return
    // A linked WebSocket gets a close frame (1001) and is waited for; any other upgraded
    // connection is the application's to end (the timeout cuts it).
    if (rec.state === 'upgraded') {
      closeWebSocketForDrain(rec)
      return
    }
    rotateConnection(rec, 'app_shutdown')
    // New, handshaking or idle: the grace (HTTP/2 sessions got GOAWAY; it bounds one whose
    // PING goes unanswered; a TLS connection that completes its handshake gets it anew).
    if (rec.state !== 'active') this.drainGrace(rec, now)
  }

  /**
   * A connection closing under the drain is idle: it closes once it stayed idle
   * for the grace (or earlier, by a deadline already due sooner), `app_shutdown`.
   */
  drainGrace(rec: ConnectionRecord, now: number): void {
    const grace = this.#drain?.options.idleGrace ?? 0
    if (grace === 0) {
      cutConnection(this, rec, 'app_shutdown')
      return
    }
    const at = now + grace
    if (rec.phaseDeadlineAt !== NEVER && rec.phaseDeadlineAt <= at) return
    rec.phaseReason = 'keep_alive_timeout'
    rec.phaseDeadlineAt = at
    this.reschedule(rec)
  }

  #settleDrain(live: number, force = false): void {
    const drain = this.#drain
    if (drain === null || drain.phase === 'done') return
    if (!drain.settle(live, force)) return
    for (const binding of this.#bindings.values()) binding.drainEnded()
    this.#emitDrain('done')
  }

  #emitDrain(phase: DrainPhase): void {
    if (this.face.listenerCount('drain') > 0) safeEmit(this.face, 'drain', phase)
    if (drainChannel.hasSubscribers) drainChannel.publish({ phase, tracker: this.face })
  }

  /** See `ConnectionTracker.sweep`. */
  sweep(now: number = this.now()): number {
    return sweepDue(this, now, INFINITY, false)
  }

  /**
   * One slice of a sweep, as the sweeper runs it: stops at `until` (wall ms)
   * and returns -1 when more is due. Called through the engine object so that a profiler or a
   * benchmark can wrap it.
   */
  sweepSlice(now: number, until: number, continued: boolean): number {
    return sweepDue(this, now, until, continued)
  }

  /** See `ConnectionTracker.close`. */
  close(): void {
    if (this.#stopped) return
    this.#stopped = true
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
    for (const rec of this.records) {
      if (rec.rawSocket?.destroyed === true || rec.httpSocket?.destroyed === true) this.closed(rec)
    }
    for (const rec of this.records) {
      rec.binding?.release(rec)
      if (rec.state === 'upgraded') releaseWebSocket(rec)
    }
    this.webSockets = 0
    processConnections.live -= liveConnections(this)
    this.pressure?.close()
    this.records.clear()
    this.queue.clear()
    this.awaitingBytes.clear()
    // No sweep runs any more: the lists it would have emptied must not keep records alive.
    this.#unsettled.length = 0
    this.#pendingRates.length = 0
    this.#counts.fill(0)
  }

  // ---- lifecycle, called by the server bindings --------------------------------

  /**
   * Before a server's timers are aligned: its own settings become the defaults of
   * their options (the first server only), and what is replaced or not adopted is warned about.
   */
  adopt(settings: readonly ServerSetting[]): void {
    const { options, replaced, notAdopted } = adoptSettings(
      this.options,
      settings,
      this.#bindings.size === 0,
    )
    ;(this as { options: ResolvedOptions }).options = options
    if (replaced.length > 0) SETTING_REPLACED.emit(replaced.join('; '))
    if (notAdopted.length > 0) SETTING_NOT_ADOPTED.emit(notAdopted.join('; '))
  }

  /** A connection was accepted. */
  open(rawSocket: Socket, secure: boolean, binding: ServerBinding): ConnectionRecord {
    const now = this.now()
    const rec = new ConnectionRecord(
      rawSocket,
      secure,
      now,
      this.#clockBase,
      binding.listenEnd(),
      this.endsWanted(),
    )
    rec.binding = binding
    this.records.add(rec)
    ;(this.#counts[0] as number)++
    processConnections.live++
    const p = this.pressure
    if (p !== null && p.perIp !== null) p.countAddress(rec, 1)
    const o = this.options
    // A new record is in no queue and has no other due time yet (the age deadline follows):
    // its first deadline goes straight into the queue.
    let armed: boolean
    if (secure) {
      armed = armPhase(rec, 'tls_handshake_timeout', o.handshakeTimeout, now)
      this.awaitingBytes.add(rec)
    } else {
      rec.establishedAtClock = now
      rec.httpSocket = rawSocket
      armed = armPhase(rec, 'request_headers_timeout', o.headersTimeout, now)
    }
    if (armed) this.queue.schedule(rec, rec.phaseDeadlineAt)
    // The record armed its age deadline from the clock base (accept + maxConnectionAge).
    if (o.maxConnectionAge > 0) this.reschedule(rec)
    // From here `open` calls out only where a listener, a cap or pressure has something to
    // do. Not for the calls' own cost: V8 inlines a function's callees up to a budget of
    // bytecode (920 bytes), smallest first, among the calls it has seen run; with the caps' and
    // pressure's calls taken on every accept, the record's constructor (188 bytes, the largest)
    // was left out, and each accept went through the generic construct stub (~0.3k
    // instructions, Node 26).
    if (this.mayListen || openChannel.hasSubscribers) this.#emit('open', rec, openChannel)
    const live = liveConnections(this)
    const full = p?.over(live) === true
    let refused: CloseReason | null = null
    let handshaking = 0
    if (full || this.admission.capped) {
      handshaking = (this.#counts[0] as number) + (this.#counts[1] as number)
      // A first request left to the settle keeps its connection counted `new`: the caps that
      // read states read them settled, when they may refuse or displace (not on every accept).
      if (o.maxHandshakes > 0 && handshaking > o.maxHandshakes && this.#unsettled.length > 0) {
        this.settleAll(now)
        handshaking = (this.#counts[0] as number) + (this.#counts[1] as number)
      }
      refused = this.admission.admit(rec, live, handshaking, full)
    }
    // Pressure decides on a connection refused for the connection cap (it may displace an idle
    // one instead: states as they are now), and on every one while its per-address share is on.
    if (p !== null && (refused !== null || (p.perIp !== null && p.fair))) {
      if (refused === 'max_concurrent_connections_exceeded' && p.options.displace)
        this.settleAll(now)
      refused = pressureAdmit(this, p, rec, refused, handshaking, now)
    }
    if (refused !== null) this.victim(rec, refused)
    // Accepted while closing (the listening socket is still open): served, with `Connection: close`.
    else if (this.#drain?.phase === 'closing') this.#drainConnection(this.#drain, rec, now)
    return rec
  }

  /** The TLS handshake completed. */
  established(rec: ConnectionRecord, httpSocket: Socket, tls: TlsInfo): void {
    if (rec.state === 'closed') return
    const now = this.now()
    this.awaitingBytes.delete(rec)
    rec.establishedAtClock = now
    rec.httpSocket = httpSocket
    rec.tls = tls
    this.setPhase(rec, 'request_headers_timeout', this.options.headersTimeout, now)
    this.transition(rec, 'idle', now)
    // Accepted while a drain was closing: the grace runs from here (HTTP/2: from its GOAWAY).
    if (rec.rotateReason === 'app_shutdown' && rec.h2 === null && this.#drain?.phase === 'closing')
      this.drainGrace(rec, now)
  }

  /** The first byte of a request arrived. */
  requestBegin(rec: ConnectionRecord, now: number = this.now()): void {
    // Heads are parsed one at a time: while one is being read, a second report
    // of a begin (the sweep's bytesRead poll, then the per-read hook) is the same request.
    if (rec.state === 'closed' || rec.state === 'upgraded' || rec.readingHead) return
    if (rec.unsettled) this.#settle(rec, now)
    this.#begin(rec, now, true)
  }

  /**
   * A request begins: counted in flight, its request deadline, → `active`. `headPending`: its
   * head is still arriving, so the header deadline runs (the first request's from
   * establishment, a later one's from now); a head that began and ended in one read arms none
   * (`requestHead` would clear it at once), and the heap key moves only for the request
   * deadline.
   */
  #begin(rec: ConnectionRecord, now: number, headPending: boolean): void {
    const inFlight = rec.messageBegun()
    const o = this.options
    if (rec.timeToFirstRequest === null) {
      rec.timeToFirstRequest = now - rec.establishedAtClock
      // The first request's head deadline runs from establishment, already set.
      if (headPending && rec.phaseReason !== 'request_headers_timeout') {
        armPhase(rec, 'request_headers_timeout', o.headersTimeout, rec.establishedAtClock)
      }
    } else if (headPending) {
      armPhase(rec, 'request_headers_timeout', o.headersTimeout, now)
    }
    let at = headPending ? rec.phaseDeadlineAt : NEVER
    if (inFlight === 1) {
      this.#startRequest(rec, now)
      at = earliest(at, rec.requestDeadlineAt)
    }
    this.#rescheduleFor(rec, at)
    this.transition(rec, 'active', now)
  }

  /** A request head was parsed. */
  requestHead(rec: ConnectionRecord, req: IncomingMessage, res: ServerResponse): boolean {
    if (rec.state === 'closed') return false
    // The request before it ended unreported: found here if its response finished.
    if (rec.endUnreported) this.#findEnd(rec)
    const body = hasBodyHeaders(req.rawHeaders)
    const o = this.options
    if (
      !body &&
      rec.res === null &&
      rec.inFlight === 0 &&
      !rec.sawMessageBegin &&
      rec.rotateReason === null &&
      (o.maxRequestsPerConnection === 0 || rec.requests + 1 < o.maxRequestsPerConnection) &&
      this.#settleLater()
    ) {
      // A request without a body, its head whole in one read: counted and followed; its state
      // and keep-alive deadline wait for the next settle, and its end is found there or at the
      // next head (see `settleAll`). A connection's first request reads the clock (its time to
      // first request, and its start: the request deadline and the state's time run from here);
      // a later one starts at the settle.
      if (rec.requests === 0) {
        const now = this.now()
        rec.timeToFirstRequest = now - rec.establishedAtClock
        this.#startHeadComplete(rec, now, true)
      }
      if (rec.beginUnsettled()) this.#unsettled.push(rec)
      rec.requests++
      rec.httpVersion = httpVersionOf(req)
      rec.res = res
      return false
    }
    const now = this.now()
    if (rec.unsettled) this.#settle(rec, now)
    // The head arrived whole in one read (the common case): it begins here. A head that took
    // more than one read began at its first (`requestBegin`).
    if (!rec.sawMessageBegin) this.#begin(rec, now, false)
    rec.sawMessageBegin = false
    rec.readingHead = false
    rec.requests++
    rec.httpVersion = httpVersionOf(req)
    armPhase(rec, null, 0, 0)
    if (o.maxRequestsPerConnection > 0 && rec.requests >= o.maxRequestsPerConnection) {
      rec.rotateReason ??= 'max_requests_per_connection'
    }
    if (rec.res === null) {
      // Rates and rotation follow the oldest request in flight (pipelined ones wait behind it).
      // The head cleared the header deadline (a key left early is harmless): only a rate
      // check can be due sooner than the key.
      this.#follow(rec, res, body, now)
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
    return true
  }

  /**
   * The request in flight's end is unreported (see `requestHead`): if its response finished
   * and the connection stays open, it ends here without a clock read, settled later; one
   * that closes the connection, or a connection rotating, ends the exact way now.
   */
  #findEnd(rec: ConnectionRecord): void {
    const res = rec.res
    const last = res === null ? null : (rec.binding as ServerBinding).finishedResponse(res)
    if (last === undefined) return
    if (last === null && rec.rotateReason === null) {
      rec.endUnsettled()
      rec.res = null
      stopRates(rec)
      return
    }
    this.#settle(rec, this.now())
  }

  /** A connection's parser could not be hooked: from now on idle connections are polled. */
  unhooked(): void {
    if (this.pollIdle) return
    this.settleAll()
    this.pollIdle = true
    this.#settleLaterClock = false
    for (const other of this.records) this.markIdleBytes(other)
  }

  /** The engine runs on Node's monotonic clock (see `BindingSink.nodeClock`). */
  get nodeClock(): boolean {
    return this.#clock === monotonicClock
  }

  /** `sweepHeads`' time and count, read by its two callbacks (made once, not per sweep). */
  #headsNow = 0
  #headsCut = 0
  readonly #headBegun = (rec: ConnectionRecord): void => this.requestBegin(rec, this.#headsNow)
  readonly #headExpired = (rec: ConnectionRecord): void => {
    if (rec.state === 'closed' || rec.state === 'upgraded' || rec.session !== null) return
    cutConnection(this, rec, 'request_headers_timeout')
    this.#headsCut++
  }

  /**
   * HTTP/1 heads after a connection's first, from Node's list once a sweep: a head begun on an
   * idle connection makes it `active` (its header deadline is Node's, from its first byte, and
   * the heap's from now stands behind it), and a head arriving past `headersTimeout` is cut.
   * Before the heap's due records, so a keep-alive deadline never cuts a head on its way.
   * Node's list runs on Node's clock: with a clock of the application's (tests) heads are seen
   * by the parser hook and the heap alone, so both agree on what time it is.
   */
  sweepHeads(now: number): number {
    if (!this.nodeClock) return 0
    this.#headsNow = now
    this.#headsCut = 0
    const timeout = this.options.headersTimeout
    for (const binding of this.#bindings.values()) {
      binding.sweepHeads(timeout, this.#headBegun, this.#headExpired)
    }
    return this.#headsCut
  }

  /**
   * `res` answers the oldest request in flight: rates and rotation follow it. A request with
   * a body takes its rate windows now (one clock read); one without waits for the next sweep.
   */
  #follow(rec: ConnectionRecord, res: ServerResponse, body: boolean, now: number): void {
    rec.res = res
    if (body) {
      this.#takeWindows(rec, true, now)
      this.#rescheduleFor(rec, rateCheckAt(rec))
    } else if (this.options.minResponseRate.bytesPerSecond > 0) {
      // No body: only the response rate can apply, and its window opens only once response
      // bytes wait for the client, which no request that ends within a sweep ever does. The
      // next sweep starts its windows if it is still in flight (`startPendingRates`).
      this.#pendingRates.push(rec)
    }
  }

  /** `rec`'s request in flight takes its rate windows (from the pool), starting at `now`. */
  #takeWindows(rec: ConnectionRecord, hasBody: boolean, now: number): void {
    const o = this.options
    startRates(rec, connectionProgress, hasBody, o.minBodyRate, o.minResponseRate, now)
  }

  /**
   * Requests settle in batches. A request without a body whose head came whole in one read,
   * on a connection with nothing pipelined or rotating, is counted when its head comes, without
   * a transition (and without a clock read, but for a connection's first request: its time to
   * first request and its start are read at its head), and nothing reports its end: no 'finish'
   * listener, no `http.server.response.finish` subscription (Node's publish of it alone cost
   * ~0.45k instructions a Fastify request on Node 26; the two clock reads and two transitions
   * of the exact path ~0.5k more, against a target of 3% of ~38k). Its end is found by reading
   * the response (`finishedResponse`) at the next head on the connection or here. What they
   * changed is settled here, at the start of every sweep slice and whenever something reads or
   * decides on states (`snapshot()`, `connections()`, a drain, pressure, an override, the
   * record's close, a request that takes the exact path): a request in flight makes the
   * connection `active` with its request deadline from now (a response not finished by then
   * gets a 'finish' listener: its end is reported from there, as on the exact path), and a
   * finished one ends now, the exact way (`#end`: `idle`, its keep-alive deadline from now, or
   * the close after it). So those transitions, their times and the deadlines they start are up
   * to one sweep late, never early, and a request that began and ended between two settles
   * counts as idle time; counts stay exact.
   */
  settleAll(now?: number, until = Number.POSITIVE_INFINITY): boolean {
    const list = this.#unsettled
    if (list.length === 0) return true
    const at = now ?? this.now()
    for (let i = 0; i < list.length; i++) {
      // A sweep slice stops at `until` (wall ms, read every 64 records): at 50,000 connections
      // each with a request since the last sweep, settling them took 15–29 ms (bench/sweep.mjs).
      if ((i & 63) === 63 && until !== Number.POSITIVE_INFINITY && performance.now() >= until) {
        list.copyWithin(0, i)
        list.length -= i
        return false
      }
      const rec = list[i] as ConnectionRecord
      if (rec.unsettled) this.#settle(rec, at)
    }
    list.length = 0
    return true
  }

  /**
   * Applies what `rec`'s unreported requests changed, at `now`. `closing`: the record is about
   * to close (`closed`): only what its close reports is applied (state, times, counts, how the
   * last response ended), not what a live connection needs next (a deadline, a heap move, a
   * rate window, a 'finish' listener).
   */
  #settle(rec: ConnectionRecord, now: number, closing = false): void {
    const begun = rec.takeUnsettled()
    const state = rec.state
    if (state === 'closed' || state === 'upgraded') {
      rec.endReported()
      return
    }
    const unreported = rec.endUnreported
    const res = rec.res
    const binding = rec.binding as ServerBinding
    // Whether the request whose end nothing reports has finished (undefined: still in flight).
    const last = !unreported || res === null ? null : binding.finishedResponse(res)
    if (begun && rec.inFlight > 0) {
      // A connection's first request started at its head (`requestHead`); a later one now.
      const first = rec.requests === 1
      if (!first) this.#startHeadComplete(rec, now, !closing)
      this.transition(rec, 'active', first ? rec.requestStartedAt : now)
      // Its response rate, as for a request without a body on the exact path (`#follow`,
      // `startPendingRates`): from the first sweep that finds it in flight.
      if (
        !closing &&
        last === undefined &&
        res !== null &&
        rec.rates === null &&
        this.options.minResponseRate.bytesPerSecond > 0
      )
        this.#openResponseWindow(rec, now)
    }
    if (unreported) {
      rec.endReported()
      // Still in flight: from now on its end is reported, as the exact path's is (at a close,
      // it closes active).
      if (last === undefined) {
        if (!closing) binding.reportEnd(res as ServerResponse)
      } else this.#end(rec, last, now, closing)
      return
    }
    // Its end was found at the next head (`#findEnd`): it ends here.
    if (rec.inFlight === 0) this.#end(rec, null, now, closing)
  }

  /**
   * A request whose head is complete starts at `now`: its absolute limit runs from here and the
   * header deadline is off (a heap key left early is harmless); `reschedule`: the key moves
   * up to the request deadline if that is sooner (not for a record about to close).
   */
  #startHeadComplete(rec: ConnectionRecord, now: number, reschedule: boolean): void {
    this.#startRequest(rec, now)
    armPhase(rec, null, 0, 0)
    if (reschedule) this.#rescheduleFor(rec, rec.requestDeadlineAt)
  }

  /** The oldest request in flight starts now: its absolute limit runs from here. */
  #startRequest(rec: ConnectionRecord, now: number): void {
    const o = this.options
    rec.requestStartedAt = now
    rec.requestDeadlineAt = o.requestTimeout === 0 ? NEVER : now + o.requestTimeout
    if (o.requestTimeoutUntil === 'received') this.ownRequestTimeout.delete(rec)
  }

  /** A request without a body still in flight at a sweep: its response rate window opens. */
  #openResponseWindow(rec: ConnectionRecord, now: number): void {
    this.#takeWindows(rec, false, now)
    checkRates(rec, now, this.options.sweepInterval)
    this.#rescheduleFor(rec, rateCheckAt(rec))
  }

  /** Whether keep-alive requests may wait for the next settle (see `#settleLaterClock`). */
  #settleLater(): boolean {
    return this.#settleLaterClock && !this.transitionListened && !transitionChannel.hasSubscribers
  }

  /**
   * The rate windows of requests without a body still in flight (see `#follow`), checked at
   * once: a response already waiting for its client opens its window now. Entries whose
   * request ended (or whose next request is the one in flight: it starts here too) are
   * passed over.
   */
  startPendingRates(now: number): void {
    const pending = this.#pendingRates
    for (let i = 0; i < pending.length; i++) {
      const rec = pending[i] as ConnectionRecord
      if (rec.res === null || rec.rates !== null || rec.state === 'closed') continue
      this.#openResponseWindow(rec, now)
    }
    pending.length = 0
  }

  /** A response finished while its request body is still arriving: `responseEnd` follows when it ends. */
  responseSent(rec: ConnectionRecord, last: 'client' | 'server' | null): void {
    if (last !== null) rec.closeIntent = last
  }

  /** A request is done (response finished, body read); `last` says who ends the connection after it, if anyone. */
  responseEnd(rec: ConnectionRecord, last: 'client' | 'server' | null): void {
    if (rec.state === 'closed') return
    const now = this.now()
    if (rec.unsettled) this.#settle(rec, now)
    this.#end(rec, last, now)
  }

  /**
   * `responseEnd` at `now`; also a settled request's end (see `settleAll`). `closing`: settled
   * by the record's close (`#settle`), so a connection that is gone gets no keep-alive deadline
   * or heap move (a rotating one does: it ends the whole way, its reason from the rotation).
   */
  #end(
    rec: ConnectionRecord,
    last: 'client' | 'server' | null,
    now: number,
    closing = false,
  ): void {
    if (rec.inFlight > 0) rec.inFlight--
    if (last !== null) rec.closeIntent = last
    // The connection closes after this response: the last moment its ends can be read.
    if (last !== null || rec.rotateReason !== null) this.keepEnds(rec)
    // Node closes after this response even with requests pipelined behind it.
    if (last !== null && rec.rotateReason !== null) rec.pendingReason ??= rec.rotateReason
    rec.res = null
    stopRates(rec)
    if (rec.inFlight > 0) {
      // Pipelined: the next request's absolute limit runs from now, and its response is the
      // one rates and rotation follow (unless its head is still arriving: `requestHead`).
      this.#startRequest(rec, now)
      const next = pipelined.get(rec)?.shift()
      if (next !== undefined) this.#follow(rec, next, hasBodyHeaders(next.req.rawHeaders), now)
      this.reschedule(rec)
      return
    }
    rec.requestDeadlineAt = NEVER
    if (!closing || rec.rotateReason !== null) {
      // Only the polling fallback compares bytes read while idle.
      if (this.pollIdle) this.markIdleBytes(rec)
      // The keep-alive deadline also bounds a rotated connection whose client never takes the close.
      armPhase(rec, 'keep_alive_timeout', this.options.keepAliveTimeout, now)
      this.#rescheduleFor(rec, rec.phaseDeadlineAt)
    }
    this.transition(rec, 'idle', now)
    if (rec.rotateReason !== null) {
      // A drain: a response that still promised keep-alive (pipelined ahead of the drain)
      // leaves the client free to send the next request now: the idle grace serves it.
      if (last === null && rec.rotateReason === 'app_shutdown' && this.#drain !== null) {
        this.drainGrace(rec, now)
        return
      }
      rec.pendingReason ??= rec.rotateReason
      rec.binding?.endAfterResponse(rec, last !== null)
    }
  }

  /**
   * The connection left HTTP (WebSocket, CONNECT): HTTP deadlines stop. A
   * WebSocket upgrade over `maxUpgradedConnections` is refused instead: returns the reason,
   * and the binding answers 503; it is cut two sweeps later if the peer has not gone.
   */
  upgraded(rec: ConnectionRecord, req?: IncomingMessage): CloseReason | null {
    if (rec.state === 'closed') return null
    const now = this.now()
    if (rec.unsettled) this.#settle(rec, now)
    // An upgrade's head gets no request-start message: it begins here if it came in one read.
    if (rec.session === null && !rec.sawMessageBegin) this.#begin(rec, now, false)
    const webSocket = isWebSocketUpgrade(req)
    const o = this.options
    if (webSocket && o.maxUpgradedConnections > 0 && this.webSockets >= o.maxUpgradedConnections) {
      return refuseUpgrade(this, rec, now)
    }
    rec.requests++
    rec.inFlight = 0
    rec.readingHead = false
    rec.requestDeadlineAt = NEVER
    this.setPhase(rec, null, 0, 0)
    this.reschedule(rec)
    this.transition(rec, 'upgraded', now)
    if (webSocket) {
      this.webSockets++
      webSocketUpgraded(rec, o.webSocket, now)
      this.reschedule(rec)
    }
    return null
  }

  /** The socket closed: finish the record with exactly one reason. */
  closed(rec: ConnectionRecord): void {
    if (rec.state === 'closed' || !this.records.has(rec)) return
    const now = this.now()
    if (rec.unsettled && !this.#settleOnlyRequest(rec, now)) this.#settle(rec, now, true)
    this.queue.remove(rec)
    // Only TLS connections wait for their first bytes (`open`).
    if (rec.secure) this.awaitingBytes.delete(rec)
    this.records.delete(rec)
    if (rec.state === 'upgraded' && webSocketFacts(rec) !== undefined) {
      this.webSockets--
      settleWebSocket(rec)
    }
    // Ends nobody asked for while the socket was open, for a close listener: Node's own
    // cache of them, if the application read them (no system call once the handle is gone).
    this.keepEnds(rec)
    const p = this.pressure
    // A shed connection was counted out when it was cut.
    if (p !== null && rec.pendingReason === 'shed_under_pressure') p.shedPending--
    else processConnections.live--
    if (p !== null && p.perIp !== null) p.countAddress(rec, -1)
    const reason = settleClose(rec, now, this.#clockBase.epochOffset)
    this.#closedByReason[reason] = (this.#closedByReason[reason] ?? 0) + 1
    this.transition(rec, 'closed', now)
    rec.rawSocket = null
    rec.httpSocket = null
    rec.binding = null
    rec.res = null
    rec.streams = null
    this.admission.release(rec)
    this.#drain?.closed(rec)
    if (this.mayListen || closeChannel.hasSubscribers) this.#emit('close', rec, closeChannel)
    // Only while draining; a call on every close took its share of the inlining budget (`open`).
    if (this.#drain !== null) this.#settleDrain(this.records.size)
  }

  /**
   * A closing connection whose one request was left to the settle and has finished (one
   * request per connection, the common case), settled in one step: its time before the request
   * and its `active` time, the request ended, how its response ended; what `#settle` and `#end`
   * leave, without the two transitions between them (−0.3k instructions a connection, Node 26),
   * so only while nothing watches transitions. False when it does not apply: `#settle` then.
   */
  #settleOnlyRequest(rec: ConnectionRecord, now: number): boolean {
    const from = rec.state
    const res = rec.res
    if (
      (from !== 'new' && from !== 'idle') ||
      res === null ||
      rec.requests !== 1 ||
      rec.inFlight !== 1 ||
      !rec.endUnreported ||
      rec.rotateReason !== null ||
      this.transitionListened ||
      transitionChannel.hasSubscribers
    )
      return false
    const last = (rec.binding as ServerBinding).finishedResponse(res)
    if (last === undefined) return false
    rec.takeUnsettled()
    rec.endReported()
    rec.inFlight = 0
    // Its ends are kept by `closed`, which follows at once.
    if (last !== null) rec.closeIntent = last
    rec.res = null
    rec.requestDeadlineAt = NEVER
    // `active` from its head, `idle` from now: the two transitions' bookkeeping, no events.
    this.#moveState(rec, from, 'active', rec.requestStartedAt)
    this.#moveState(rec, 'active', 'idle', now)
    return true
  }

  /** HTTP/2 (session-lifecycle.ts): the session started. */
  sessionStarted(
    rec: ConnectionRecord,
    session: Http2Session,
    httpSocket: Socket,
    tls: TlsInfo | null,
  ): void {
    sessionStarted(this, rec, session, httpSocket, tls)
  }

  /** HTTP/2: a stream opened. */
  streamOpened(rec: ConnectionRecord, stream: ServerHttp2Stream): StreamGuard | null {
    return streamOpened(this, rec, stream)
  }

  /** HTTP/2: a stream closed. */
  streamClosed(rec: ConnectionRecord, guard: StreamGuard): void {
    streamClosed(this, rec, guard)
  }

  /** HTTP/2: our PING was acknowledged. */
  sessionPingAcked(rec: ConnectionRecord, rtt: number): void {
    sessionPingAcked(this, rec, rtt)
  }

  // ---- internals, shared with sweep.ts, pressure-hooks.ts, session-lifecycle.ts ----

  /**
   * Whole milliseconds. Every time a record keeps is then a small integer, which
   * V8 stores in the field itself; a fractional time costs a 16-byte heap
   * number per field per record. A millisecond is far finer than any deadline.
   */
  now(): number {
    return Math.floor(this.#clock.now())
  }

  /** Sets the phase deadline and keeps the heap key at or before it. */
  setPhase(
    rec: ConnectionRecord,
    reason: DeadlineKind | null,
    timeout: number,
    from: number,
  ): void {
    if (armPhase(rec, reason, timeout, from)) this.reschedule(rec)
  }

  /**
   * Keeps the record's heap key at or before its earliest due time. A key
   * that is too early is harmless: the sweep pops the record, finds nothing
   * due and queues it again at its real time. So a deadline that moves later
   * (every keep-alive request moves the idle deadline later) leaves the heap
   * alone, and a request costs no heap move; only an earlier deadline moves
   * the entry up.
   */
  reschedule(rec: ConnectionRecord): void {
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
    if (at >= 0 && (rec.queueIndex < 0 || at < rec.deadlineAt)) this.queue.schedule(rec, at)
  }

  /**
   * The request path's `reschedule`: `at` is the earliest due time the caller changed. The key
   * of a queued record is at or before every other due time already, so only an earlier `at`
   * moves it; a record not queued gets the full computation.
   */
  #rescheduleFor(rec: ConnectionRecord, at: number): void {
    if (rec.queueIndex < 0) this.reschedule(rec)
    else if (at >= 0 && at < rec.deadlineAt) this.queue.schedule(rec, at)
  }

  /** */
  transition(rec: ConnectionRecord, to: ConnectionState, now: number): void {
    const from = rec.state
    if (from === to || from === 'closed') return
    this.#moveState(rec, from, to, now)
    if (this.mayListen && this.face.listenerCount('transition') > 0)
      safeEmit(this.face, 'transition', rec, from, to)
    if (transitionChannel.hasSubscribers)
      transitionChannel.publish({ record: rec, from, to, tracker: this.face })
  }

  /** A transition's bookkeeping, without its events: `from`'s time up to `now`, the counts. */
  #moveState(rec: ConnectionRecord, from: LiveState, to: ConnectionState, now: number): void {
    const i = liveStateIndex(from)
    rec.addDuration(i, now - rec.stateSince)
    ;(this.#counts[i] as number)--
    if (to !== 'closed') (this.#counts[liveStateIndex(to)] as number)++
    rec.stateSince = now
    rec.state = to
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
  endsWanted(): boolean {
    return (
      (this.mayListen &&
        (this.face.listenerCount('close') > 0 || this.face.listenerCount('transition') > 0)) ||
      closeChannel.hasSubscribers ||
      transitionChannel.hasSubscribers
    )
  }
  /** Reads `rec`'s ends now if something listens for closed records (see `endsWanted`). */
  keepEnds(rec: ConnectionRecord): void {
    if (this.endsWanted()) rec.readEndsOnce()
  }

  #emit(event: 'open' | 'close', rec: ConnectionRecord, channel: typeof openChannel): void {
    if (this.mayListen && this.face.listenerCount(event) > 0) safeEmit(this.face, event, rec)
    if (channel.hasSubscribers) channel.publish({ record: rec, tracker: this.face })
  }
}

/**
 * Sets the phase deadline; true when one is armed. Clearing one never needs the heap: a key
 * that is early is harmless (see `reschedule`). The request path calls this and then
 * reschedules once for all it changed.
 */
function armPhase(
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
