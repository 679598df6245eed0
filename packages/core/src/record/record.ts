import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { Clock } from '../time/clock.js'
import { earliest, NEVER } from '../time/deadline-queue.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import type { ConnectionState, LiveState } from '../vocab/states.js'
import { type ListenEnd, type LocalEnd, readEnds } from './addresses.js'
import type { RateOwner, RateWindows } from './rate-windows.js'
import { type WebSocketInfo, webSocketInfo } from './websocket-facts.js'

/** What TLS negotiated, read once when the handshake completes. */
export interface TlsInfo {
  /** `TLSv1.3`, `TLSv1.2`, … */
  readonly protocol: string | null
  /** OpenSSL cipher name. */
  readonly cipher: string | null
  /** The ALPN protocol chosen (`http/1.1`, `h2`), or false when none was negotiated. */
  readonly alpnProtocol: string | false | null
  /** SNI host name the client asked for, if any. */
  readonly servername: string | null
  /** True when the session was resumed (no full handshake). */
  readonly resumed: boolean
}

/** Milliseconds spent in each live state; the current state counts up to now. */
export interface StateDurations {
  new: number
  handshaking: number
  idle: number
  active: number
  upgraded: number
}

/** Which deadline a connection is waiting on; see `ConnectionRecord.deadline`. */
export type DeadlineKind =
  | 'tls_handshake_timeout'
  | 'request_headers_timeout'
  | 'keep_alive_timeout'
  | 'request_timeout'
  | 'max_connection_age'

let nextId = 1

/**
 * What every record of one tracker shares: clock ms → epoch ms (epoch = clock +
 * `epochOffset`), and the connection age limit (0: none), so a record keeps
 * neither as a field of its own.
 */
export interface ClockBase {
  readonly epochOffset: number
  readonly maxConnectionAge: number
  /** The tracker's clock, for the time a live record has spent in its current state. */
  readonly clock?: Clock
}

// Bits of `ConnectionRecord._flags`: one small integer instead of a field each.
const SECURE = 1
const READING_HEAD = 2
const SAW_MESSAGE_BEGIN = 4
const AGE_ARMED = 8
const ENDS_READ = 16
// Bits 5–7: the phase deadline's reason, as an index of PHASE_KINDS.
const PHASE_SHIFT = 5
const PHASE_MASK = 7 << PHASE_SHIFT
// A keep-alive request began or ended since the engine last settled the record (engine.ts,
// `settle`); whether one of them was a request's begin; and whether the end of the request in
// flight is left for the engine to find (nothing reports it).
const UNSETTLED = 256
const BEGUN_UNSETTLED = 512
const END_UNREPORTED = 1024
// Bits 11 and up: requests in flight.
const IN_FLIGHT_SHIFT = 11
const LOW_BITS = (1 << IN_FLIGHT_SHIFT) - 1
const PHASE_KINDS: readonly (DeadlineKind | null)[] = [
  null,
  'tls_handshake_timeout',
  'request_headers_timeout',
  'keep_alive_timeout',
  'request_timeout',
  'max_connection_age',
]

/**
 * Position of `kind` in PHASE_KINDS. A switch on interned strings: the request path sets the phase
 * three times a request, and `PHASE_KINDS.indexOf` cost ~70 instructions a call (callgrind, Node 26).
 */
function phaseIndex(kind: DeadlineKind | null): number {
  switch (kind) {
    case null:
      return 0
    case 'tls_handshake_timeout':
      return 1
    case 'request_headers_timeout':
      return 2
    case 'keep_alive_timeout':
      return 3
    case 'request_timeout':
      return 4
    default:
      return 5
  }
}

/** Until a lazily read record reads its ends (never, if nobody asks while the socket is open). */
const UNREAD_LOCAL: LocalEnd = Object.freeze({ address: undefined, port: undefined })

/**
 * What an HTTP/2 connection's record keeps of its session: the session, its open streams,
 * the PING checks' state and the stream statistics. Created when the session starts, so an
 * HTTP/1 record carries one null field instead of nine.
 */
export class SessionFacts {
  /** Due time of the next PING check, clock ms. */
  pingCheckAt = NEVER
  /** When the PING in flight was sent, -1 when none. */
  pingSentAt = -1
  /** bytesRead at the last PING check, and when it last moved. */
  lastReadBytes = 0
  lastReadAt = 0
  peakConcurrentStreams = 0
  pingRtt: number | null = null
  streamCuts: Partial<Record<CloseReason, number>> | null = null
  readonly session: import('node:http2').Http2Session
  /** The open streams' guards and their shared state; null until the first stream. */
  streams: SessionStreams | null = null
  constructor(session: import('node:http2').Http2Session) {
    this.session = session
  }
}

/** One open stream of an HTTP/2 session: its limits and their windows. Allocated only for HTTP/2. */
export class StreamGuard implements RateOwner {
  readonly stream: ServerHttp2Stream
  readonly rec: ConnectionRecord
  /** Clock ms when the stream opened (its headers complete: when Node creates it). */
  readonly openedAtClock: number
  /** Due time of the stream's absolute `requestTimeout`. */
  requestDeadlineAt = NEVER
  /** The stream's rate windows (policy/rates.ts). */
  rates: RateWindows | null = null
  /** Response bytes credited to this stream so far (its own, and its share of the session's). */
  responseCredit = 0
  /** Its own response progress at the session's last tick. */
  ownAtTick = 0

  constructor(stream: ServerHttp2Stream, rec: ConnectionRecord, now: number) {
    this.stream = stream
    this.rec = rec
    this.openedAtClock = now
  }
}

/**
 * A session's open streams and what their checks share. Allocated with the
 * session's first stream, so an HTTP/1 record carries one null field for it.
 */
export class SessionStreams {
  readonly guards = new Set<StreamGuard>()
  /** The earliest due time over the open streams, clock ms (may be early, never late). */
  dueAt = NEVER
  /** Bytes the kernel had accepted on the connection at the last check. */
  acceptedAtTick: number

  constructor(acceptedAtTick: number) {
    this.acceptedAtTick = acceptedAtTick
  }
}

/**
 * What the engine asks of the binding of a connection's server (observe/server.ts implements
 * it). Declared here, with the record that holds it, so the record needs no binding module.
 */
export interface ConnectionBinding {
  /** Closes the connection for `reason` (the record already carries it). */
  cut(rec: ConnectionRecord, reason: CloseReason): void
  /**
   * After the last response of a connection that is to close (rotation,
   * drain): closes it once the response is flushed, unless Node already does
   * (`nodeCloses`: the response said `Connection: close`).
   */
  endAfterResponse(rec: ConnectionRecord, nodeCloses: boolean): void
  /** The local end every connection of the server has, when it listens on one address. */
  listenEnd(): ListenEnd | null
  /** HTTP/2: sends a PING. */
  ping(rec: ConnectionRecord): void
  /** HTTP/2: GOAWAY, let the streams in flight finish, then close. */
  goaway(rec: ConnectionRecord): void
  /** HTTP/2: resets one stream (RST_STREAM); the session goes on. */
  resetStream(guard: StreamGuard): void
  /** Removes what was added to a live connection, leaving it open. */
  release(rec: ConnectionRecord): void
}

/** The facts a connection's close settles, kept apart from the live record's fields. */
class CloseFacts {
  /** First error seen on the connection (set before the close when the error comes first). */
  error: Error | null = null
  /** The peer sent FIN. */
  peerEnded = false
  /** The last response ended the connection: 'client' asked for it, or the 'server' did. */
  closeIntent: 'client' | 'server' | null = null
  /** Close after the response in flight, for this reason (rotation, drain). */
  rotateReason: CloseReason | null = null
  /** Reason decided by us before we destroy the socket; wins over what follows. */
  pendingReason: CloseReason | null = null
  closedAt: number | null = null
  duration: number | null = null
  stateAtClose: LiveState | null = null
  closeReason: CloseReason | null = null
  errorCode: string | null = null
  bytesRead = 0
  bytesWritten = 0
}

/**
 * One connection, from accept to close. The tracker creates it, moves it
 * through states and fills it in; users read it (events, `connections()`).
 * Every field is set in the constructor so all records share one shape.
 * Times are epoch milliseconds; durations are milliseconds.
 * It fits the deadline queue's `Scheduled` shape structurally (checked where the
 * tracker queues it): an `implements` clause would name members `stripInternal`
 * removes from the published declarations, which then fail under `skipLibCheck: false`.
 */
export class ConnectionRecord {
  /** Unique within the process, increasing. */
  readonly id: number
  /** @internal */
  _remoteAddress: string | undefined = undefined
  /** @internal */
  _remotePort: number | undefined = undefined
  /** @internal The local end, shared by the records whose local end is the same. */
  _local: LocalEnd = UNREAD_LOCAL
  /** @internal SECURE, READING_HEAD, SAW_MESSAGE_BEGIN, AGE_ARMED, ENDS_READ, the phase reason, requests in flight. */
  _flags: number
  /** Negotiated TLS parameters; null until the handshake completes, and for plain connections. */
  tls: TlsInfo | null = null
  /** HTTP version of the last request head (`'1.1'`, `'1.0'`); null before the first. */
  httpVersion: string | null = null
  state: ConnectionState = 'new'
  /** @internal Clock ms → epoch ms, one object per tracker (an epoch ms per record is a boxed number). */
  readonly _clockBase: ClockBase
  /** Established → first byte of the first request; null if none came. */
  timeToFirstRequest: number | null = null
  /** Request heads received. */
  requests = 0
  /** @internal What only the close tells; null while open (an open record carries none of it). */
  closing: CloseFacts | null = null

  /** @internal The accepted TCP socket; for TLS, the TLSSocket's parent. Counts wire bytes. */
  rawSocket: Socket | null
  /** @internal The socket HTTP runs on: the raw socket, or the TLSSocket once established. */
  httpSocket: Socket | TLSSocket | null = null
  /** @internal How to cut and release this connection (its server's binding). */
  binding: ConnectionBinding | null = null
  /** @internal Clock ms at accept. */
  openedAtClock: number
  /** @internal Clock ms when the current state began. */
  stateSince: number
  // Ms spent in each live state. Five fields of whole ms stay small integers (no heap
  // number each), cheaper than an array (its own object and elements, ~120 B).
  /** @internal */
  msNew = 0
  /** @internal */
  msHandshaking = 0
  /** @internal */
  msIdle = 0
  /** @internal */
  msActive = 0
  // No field for `upgraded`: the state is left only by the close, so its time is what the
  // close's duration leaves over the others.
  /** @internal Clock ms when TLS completed (or accept, for plain); -1 before. */
  establishedAtClock = -1
  /** @internal Due time of the earliest deadline, clock ms (Scheduled). */
  deadlineAt = NEVER
  /** @internal Heap position (Scheduled). */
  queueIndex = -1
  /** @internal Due time of the phase deadline (handshake, headers, keep-alive). */
  phaseDeadlineAt = NEVER
  /** @internal Due time of the absolute request deadline. */
  requestDeadlineAt = NEVER
  /** @internal Clock ms of the current request's first byte. */
  requestStartedAt = -1
  /** @internal The response to the oldest request in flight (rates, rotation); its `req` is the request. */
  res: ServerResponse | null = null
  /** @internal Rate windows of the request in flight, with their next check; null while none is. */
  rates: RateWindows | null = null
  /** @internal HTTP/2: what the session's PING checks and streams left; null for HTTP/1. */
  h2: SessionFacts | null = null
  /** @internal The record before this one in its engine's list (engine/record-list.ts). */
  _prev: ConnectionRecord | null = null
  /** @internal The record after this one in its engine's list. */
  _next: ConnectionRecord | null = null

  /** @internal */
  constructor(
    rawSocket: Socket,
    secure: boolean,
    nowClock: number,
    nowEpoch: number | ClockBase,
    local: ListenEnd | null = null,
    readEndsNow = true,
  ) {
    this.id = nextId++
    this.rawSocket = rawSocket
    this._clockBase =
      typeof nowEpoch === 'number'
        ? { epochOffset: nowEpoch - nowClock, maxConnectionAge: 0 }
        : nowEpoch
    this._flags = (secure ? SECURE : 0) | (this._clockBase.maxConnectionAge > 0 ? AGE_ARMED : 0)
    this.openedAtClock = nowClock
    this.stateSince = nowClock
    if (readEndsNow) this.readEndsOnce(local)
  }

  /**
   * @internal Reads both ends once, from the raw socket (or Node's own cache of them, which
   * outlives the handle). Once the socket is gone there is nothing to read: they stay unset.
   */
  readEndsOnce(local: ListenEnd | null = this.binding?.listenEnd() ?? null): void {
    if ((this._flags & ENDS_READ) !== 0) return
    this._flags |= ENDS_READ
    const raw = this.rawSocket
    if (raw === null) return
    const e = readEnds(raw, local)
    this._remoteAddress = e.remoteAddress
    this._remotePort = e.remotePort
    this._local = e.local
  }

  /** The peer's address (see the README on when it is read). */
  get remoteAddress(): string | undefined {
    this.readEndsOnce()
    return this._remoteAddress
  }

  get remotePort(): number | undefined {
    this.readEndsOnce()
    return this._remotePort
  }

  get localAddress(): string | undefined {
    this.readEndsOnce()
    return this._local.address
  }

  get localPort(): number | undefined {
    this.readEndsOnce()
    return this._local.port
  }

  /** True for TLS connections. */
  get secure(): boolean {
    return (this._flags & SECURE) !== 0
  }

  /** @internal The reason the phase deadline closes with. */
  get phaseReason(): DeadlineKind | null {
    return PHASE_KINDS[(this._flags & PHASE_MASK) >> PHASE_SHIFT] ?? null
  }
  set phaseReason(kind: DeadlineKind | null) {
    this._flags = (this._flags & ~PHASE_MASK) | (phaseIndex(kind) << PHASE_SHIFT)
  }

  /** @internal Requests begun (first byte seen) and not yet answered. */
  get inFlight(): number {
    return this._flags >>> IN_FLIGHT_SHIFT
  }
  set inFlight(n: number) {
    this._flags = (this._flags & LOW_BITS) | (n << IN_FLIGHT_SHIFT)
  }

  /**
   * @internal A request began (its first read, or its head when that came in one read): its
   * head is being read, its begin is counted, and one more request is in flight, in one
   * write. Returns the requests in flight.
   */
  messageBegun(): number {
    const flags = this._flags + (1 << IN_FLIGHT_SHIFT)
    this._flags = flags | READING_HEAD | SAW_MESSAGE_BEGIN
    return flags >>> IN_FLIGHT_SHIFT
  }

  /**
   * @internal A keep-alive request began (its head came whole in one read) and is in flight,
   * counted in one write, its end left for the engine to find; its state, time and deadlines
   * wait for `settle`. True when the record was settled until now (the engine then lists it).
   */
  beginUnsettled(): boolean {
    const flags = this._flags
    this._flags = (flags + (1 << IN_FLIGHT_SHIFT)) | UNSETTLED | BEGUN_UNSETTLED | END_UNREPORTED
    return (flags & UNSETTLED) === 0
  }

  /**
   * @internal The one request in flight, whose end nothing reports, was found ended; its
   * state, time and keep-alive deadline wait for `settle`.
   */
  endUnsettled(): void {
    this._flags = (this._flags & LOW_BITS & ~END_UNREPORTED) | UNSETTLED
  }

  /** @internal The end of the request in flight is left for the engine to find. */
  get endUnreported(): boolean {
    return (this._flags & END_UNREPORTED) !== 0
  }

  /** @internal Its end is reported from now on (or it ended). */
  endReported(): void {
    this._flags &= ~END_UNREPORTED
  }

  /** @internal A request began or ended since the engine last settled the record. */
  get unsettled(): boolean {
    return (this._flags & UNSETTLED) !== 0
  }

  /**
   * @internal Clears both unsettled bits; true when a request began since the last settle (its
   * clocks start at the settle).
   */
  takeUnsettled(): boolean {
    const flags = this._flags
    this._flags = flags & ~(UNSETTLED | BEGUN_UNSETTLED)
    return (flags & BEGUN_UNSETTLED) !== 0
  }

  /** @internal A request's head is being received. */
  get readingHead(): boolean {
    return (this._flags & READING_HEAD) !== 0
  }
  set readingHead(value: boolean) {
    this._flags = value ? this._flags | READING_HEAD : this._flags & ~READING_HEAD
  }

  /** @internal The current request's begin was counted (by the per-read hook, or the sweep's poll). */
  get sawMessageBegin(): boolean {
    return (this._flags & SAW_MESSAGE_BEGIN) !== 0
  }
  set sawMessageBegin(value: boolean) {
    this._flags = value ? this._flags | SAW_MESSAGE_BEGIN : this._flags & ~SAW_MESSAGE_BEGIN
  }

  /**
   * @internal Due time of max connection age, clock ms: accept + the tracker's
   * `maxConnectionAge` until `ageDone()` (reached or cut), NEVER without one.
   */
  get ageDeadlineAt(): number {
    return (this._flags & AGE_ARMED) === 0
      ? NEVER
      : this.openedAtClock + this._clockBase.maxConnectionAge
  }

  /** @internal The age deadline no longer applies. */
  ageDone(): void {
    this._flags &= ~AGE_ARMED
  }

  /** @internal The oldest request in flight (rates, rotation); null while none is. */
  get req(): IncomingMessage | null {
    // Every Node ServerResponse carries its request; anything else reads as none.
    return this.res === null ? null : (this.res.req ?? null)
  }

  /** HTTP/2: most streams open at once. */
  get peakConcurrentStreams(): number {
    return this.h2?.peakConcurrentStreams ?? 0
  }

  /** HTTP/2: round-trip time of the last PING the tracker sent, ms; null before the first ACK. */
  get pingRtt(): number | null {
    return this.h2?.pingRtt ?? null
  }

  /**
   * HTTP/2: streams the guard reset (RST_STREAM) while the session went on,
   * counted by reason (`request_timeout`, `min_request_body_data_rate`,
   * `min_response_data_rate`); null until the first.
   */
  get streamCuts(): Partial<Record<CloseReason, number>> | null {
    return this.h2?.streamCuts ?? null
  }

  /**
   * WebSocket upgrades: when it was upgraded, pings sent, the last round trip, and the close
   * code and reason its library reported; null for any other connection. Kept beside the
   * record (websocket-facts.ts), so a plain HTTP record carries no field for it.
   */
  get webSocket(): WebSocketInfo | null {
    return webSocketInfo(this)
  }

  /** Accept → TLS established; null for plain connections and unfinished handshakes. */
  get handshakeDuration(): number | null {
    return this.secure && this.establishedAtClock >= 0
      ? this.establishedAtClock - this.openedAtClock
      : null
  }

  /** When the connection was accepted, epoch ms. */
  get openedAt(): number {
    return this._clockBase.epochOffset + this.openedAtClock
  }

  /** @internal The HTTP/2 session this connection carries, if any. */
  get session(): import('node:http2').Http2Session | null {
    return this.h2 === null ? null : this.h2.session
  }

  /** @internal HTTP/2: the open streams' guards and their shared state; null until the first stream. */
  get streams(): SessionStreams | null {
    return this.h2 === null ? null : this.h2.streams
  }
  set streams(value: SessionStreams | null) {
    if (this.h2 !== null) this.h2.streams = value
  }

  // Close-path facts: null or false on a healthy open connection, so they live in the
  // close facts, which a setter creates early in the rare case one is known before the close.
  /** @internal First error seen on the connection. */
  get error(): Error | null {
    return this.closing === null ? null : this.closing.error
  }
  set error(value: Error | null) {
    this.#closing().error = value
  }

  /** @internal Close after the response in flight, for this reason (rotation, drain). */
  get rotateReason(): CloseReason | null {
    return this.closing === null ? null : this.closing.rotateReason
  }
  set rotateReason(value: CloseReason | null) {
    this.#closing().rotateReason = value
  }

  /** @internal Reason decided by us before we destroy the socket; wins over what follows. */
  get pendingReason(): CloseReason | null {
    return this.closing === null ? null : this.closing.pendingReason
  }
  set pendingReason(value: CloseReason | null) {
    this.#closing().pendingReason = value
  }

  /** @internal The peer sent FIN. */
  get peerEnded(): boolean {
    return this.closing?.peerEnded === true
  }
  set peerEnded(value: boolean) {
    this.#closing().peerEnded = value
  }

  /** @internal The last response ended the connection: 'client' asked for it, or the 'server' did. */
  get closeIntent(): 'client' | 'server' | null {
    return this.closing === null ? null : this.closing.closeIntent
  }
  set closeIntent(value: 'client' | 'server' | null) {
    this.#closing().closeIntent = value
  }

  /** Bytes received on the wire (ciphertext for TLS, handshake included). */
  get bytesRead(): number {
    const raw = this.rawSocket
    return raw === null ? (this.closing?.bytesRead ?? 0) : raw.bytesRead
  }

  /** Bytes handed to the socket for sending, on the wire (ciphertext for TLS). */
  get bytesWritten(): number {
    const raw = this.rawSocket
    return raw === null ? (this.closing?.bytesWritten ?? 0) : (raw.bytesWritten ?? 0)
  }

  /** When it closed (epoch ms); null while open. */
  get closedAt(): number | null {
    return this.closing?.closedAt ?? null
  }
  set closedAt(value: number | null) {
    this.#closing().closedAt = value
  }

  /** Accept → close; null while open. */
  get duration(): number | null {
    return this.closing?.duration ?? null
  }
  set duration(value: number | null) {
    this.#closing().duration = value
  }

  /** The state the connection was in when it closed. */
  get stateAtClose(): LiveState | null {
    return this.closing?.stateAtClose ?? null
  }
  set stateAtClose(value: LiveState | null) {
    this.#closing().stateAtClose = value
  }

  /** Why it ended; exactly one per connection, null while open. */
  get closeReason(): CloseReason | null {
    return this.closing?.closeReason ?? null
  }
  set closeReason(value: CloseReason | null) {
    this.#closing().closeReason = value
  }

  /** The `code` of the error behind the close, when there was one (`ECONNRESET`, `HPE_INVALID_METHOD`, …). */
  get errorCode(): string | null {
    return this.closing?.errorCode ?? null
  }
  set errorCode(value: string | null) {
    this.#closing().errorCode = value
  }

  /** @internal Wire bytes, frozen at close. */
  get finalBytesRead(): number {
    return this.closing?.bytesRead ?? 0
  }
  set finalBytesRead(value: number) {
    this.#closing().bytesRead = value
  }

  /** @internal Wire bytes, frozen at close. */
  get finalBytesWritten(): number {
    return this.closing?.bytesWritten ?? 0
  }
  set finalBytesWritten(value: number) {
    this.#closing().bytesWritten = value
  }

  /** @internal The close facts, created if none yet: for the close, which writes them all. */
  closeFacts(): CloseFacts {
    return this.#closing()
  }

  #closing(): CloseFacts {
    this.closing ??= new CloseFacts()
    return this.closing
  }

  /** Time spent in each state, ms; while the connection is open, the current state counts up to now. */
  get stateDurations(): StateDurations {
    const d: StateDurations = {
      new: this.msNew,
      handshaking: this.msHandshaking,
      idle: this.msIdle,
      active: this.msActive,
      upgraded: 0,
    }
    const duration = this.closing?.duration ?? null
    if (duration !== null) {
      // The live states' times add up to the duration; the rest was spent upgraded.
      d.upgraded = duration - (d.new + d.handshaking + d.idle + d.active)
      return d
    }
    const clock = this._clockBase.clock
    if (this.state !== 'closed' && clock !== undefined) {
      // The transitions add a state's time only when it is left: the current one's runs on.
      const running = Math.max(0, Math.floor(clock.now()) - this.stateSince)
      d[this.state] += running
    }
    return d
  }

  /** @internal Adds `ms` to the time spent in the live state at index `i` of LIVE_STATES. */
  addDuration(i: number, ms: number): void {
    switch (i) {
      case 0:
        this.msNew += ms
        break
      case 1:
        this.msHandshaking += ms
        break
      case 2:
        this.msIdle += ms
        break
      case 3:
        this.msActive += ms
        break
      // Upgraded: derived at close (see stateDurations).
    }
  }

  /** Which deadline the connection waits on now, and when it is due (epoch ms); null when none. */
  get deadline(): { kind: DeadlineKind; at: number } | null {
    let kind = this.phaseReason
    let at = kind === null ? NEVER : this.phaseDeadlineAt
    if (earliest(at, this.requestDeadlineAt) !== at) {
      kind = 'request_timeout'
      at = this.requestDeadlineAt
    }
    if (earliest(at, this.ageDeadlineAt) !== at) {
      kind = 'max_connection_age'
      at = this.ageDeadlineAt
    }
    if (kind === null || at < 0) return null
    return { kind, at: this.openedAt + (at - this.openedAtClock) }
  }

  /** A plain snapshot of the public fields, for logs and JSON. */
  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      remoteAddress: this.remoteAddress,
      remotePort: this.remotePort,
      localAddress: this.localAddress,
      localPort: this.localPort,
      secure: this.secure,
      tls: this.tls,
      httpVersion: this.httpVersion,
      state: this.state,
      openedAt: this.openedAt,
      handshakeDuration: this.handshakeDuration,
      timeToFirstRequest: this.timeToFirstRequest,
      requests: this.requests,
      bytesRead: this.bytesRead,
      bytesWritten: this.bytesWritten,
      stateDurations: this.stateDurations,
      closedAt: this.closedAt,
      duration: this.duration,
      stateAtClose: this.stateAtClose,
      closeReason: this.closeReason,
      errorCode: this.errorCode,
      peakConcurrentStreams: this.peakConcurrentStreams,
      pingRtt: this.pingRtt,
      streamCuts: this.streamCuts === null ? null : { ...this.streamCuts },
      webSocket: this.webSocket,
    }
  }
}
