import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Socket } from 'node:net'
import type { TLSSocket } from 'node:tls'
import type { CloseReason } from './close-reasons.js'
import type { Scheduled } from './deadline-queue.js'
import type { ServerBinding } from './http1.js'
import { OFF_RATE, type ResolvedRate } from './options.js'
import type { ConnectionState, LiveState } from './states.js'

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
 * One connection, from accept to close. The tracker creates it, moves it
 * through states and fills it in; users read it (events, `connections()`).
 * Every field is set in the constructor so all records share one shape.
 * Times are epoch milliseconds; durations are milliseconds.
 */
export class ConnectionRecord implements Scheduled {
  /** Unique within the process, increasing. */
  readonly id: number
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
  readonly localAddress: string | undefined
  readonly localPort: number | undefined
  /** True for TLS connections. */
  readonly secure: boolean
  /** Negotiated TLS parameters; null until the handshake completes, and for plain connections. */
  tls: TlsInfo | null = null
  /** HTTP version of the last request head (`'1.1'`, `'1.0'`); null before the first. */
  httpVersion: string | null = null
  state: ConnectionState = 'new'
  /** When the connection was accepted. */
  readonly openedAt: number
  /** Accept → TLS established; null for plain connections and unfinished handshakes. */
  handshakeDuration: number | null = null
  /** Established → first byte of the first request; null if none came. */
  timeToFirstRequest: number | null = null
  /** Request heads received. */
  requests = 0
  /** Time spent in each state. */
  readonly stateDurations: StateDurations = {
    new: 0,
    handshaking: 0,
    idle: 0,
    active: 0,
    upgraded: 0,
  }
  closedAt: number | null = null
  /** Accept → close; null while open. */
  duration: number | null = null
  /** The state the connection was in when it closed. */
  stateAtClose: LiveState | null = null
  /** Why it ended; exactly one per connection, null while open. */
  closeReason: CloseReason | null = null
  /** The `code` of the error behind the close, when there was one (`ECONNRESET`, `HPE_INVALID_METHOD`, …). */
  errorCode: string | null = null
  /** HTTP/2: most streams open at once. */
  peakConcurrentStreams = 0
  /** HTTP/2: round-trip time of the last PING the tracker sent, ms; null before the first ACK. */
  pingRtt: number | null = null

  /** @internal The accepted TCP socket; for TLS, the TLSSocket's parent. Counts wire bytes. */
  rawSocket: Socket | null
  /** @internal The socket HTTP runs on: the raw socket, or the TLSSocket once established. */
  httpSocket: Socket | TLSSocket | null = null
  /** @internal How to cut and release this connection (its server's binding). */
  binding: ServerBinding | null = null
  /** @internal Clock ms at accept. */
  openedAtClock: number
  /** @internal Clock ms when the current state began. */
  stateSince: number
  /** @internal Clock ms when TLS completed (or accept, for plain); -1 before. */
  establishedAtClock = -1
  /** @internal Due time of the earliest deadline, clock ms (Scheduled). */
  deadlineAt = Number.POSITIVE_INFINITY
  /** @internal Heap position (Scheduled). */
  queueIndex = -1
  /** @internal Due time of the phase deadline (handshake, headers, keep-alive). */
  phaseDeadlineAt = Number.POSITIVE_INFINITY
  /** @internal The reason the phase deadline closes with. */
  phaseReason: DeadlineKind | null = null
  /** @internal Due time of the absolute request deadline. */
  requestDeadlineAt = Number.POSITIVE_INFINITY
  /** @internal Clock ms of the current request's first byte. */
  requestStartedAt = -1
  /** @internal Requests begun (first byte seen) and not yet answered. */
  inFlight = 0
  /** @internal A request's head is being received. */
  readingHead = false
  /** @internal The parser hook saw the current request begin (checks the hook works). */
  sawMessageBegin = false
  /** @internal Reason decided by us before we destroy the socket; wins over what follows. */
  pendingReason: CloseReason | null = null
  /** @internal First error seen on the connection. */
  error: Error | null = null
  /** @internal The peer sent FIN. */
  peerEnded = false
  /** @internal The last response ended the connection: 'client' asked for it, or the 'server' did. */
  closeIntent: 'client' | 'server' | null = null
  /** @internal bytesRead of the HTTP socket when it last became idle (fallback detection). */
  bytesReadAtIdle = 0
  /** @internal The oldest request in flight and its response (rates, rotation). */
  req: IncomingMessage | null = null
  /** @internal */
  res: ServerResponse | null = null
  /** @internal The current request's body rate (per-route overrides applied). */
  bodyRate: ResolvedRate = OFF_RATE
  /** @internal The current request's response rate. */
  responseRate: ResolvedRate = OFF_RATE
  /** @internal Due time of the next rate check. */
  rateCheckAt = Number.POSITIVE_INFINITY
  /** @internal The request in flight has a body (Content-Length > 0 or chunked). */
  hasBody = false
  /** @internal The last rate check found the server not reading the body. */
  bodyPaused = false
  /** @internal Start of the body rate window (clock ms), -1 when no body is being measured. */
  bodyWindowAt = -1
  /** @internal bytesRead at the start of the body window. */
  bodyWindowBytes = 0
  /** @internal Start of the response rate window, -1 when nothing is queued. */
  responseWindowAt = -1
  /** @internal Bytes the kernel had taken at the start of the response window. */
  responseWindowBytes = 0
  /** @internal When the response grace ends (first byte queued + grace). */
  responseGraceEnd = -1
  /** @internal Due time of max connection age. */
  ageDeadlineAt = Number.POSITIVE_INFINITY
  /** @internal Close after the response in flight, for this reason (rotation, drain). */
  rotateReason: CloseReason | null = null
  /** @internal The HTTP/2 session this connection carries, if any. */
  session: import('node:http2').Http2Session | null = null
  /** @internal Due time of the next PING check (HTTP/2). */
  pingCheckAt = Number.POSITIVE_INFINITY
  /** @internal When the PING in flight was sent, -1 when none. */
  pingSentAt = -1
  /** @internal bytesRead at the last PING check, and when it last moved. */
  lastReadBytes = 0
  /** @internal */
  lastReadAt = 0
  /** @internal Wire bytes, frozen at close. */
  finalBytesRead = 0
  /** @internal Wire bytes, frozen at close. */
  finalBytesWritten = 0
  /** @internal Pressure: start of the window an active transfer's rate is judged over (clock ms), -1 when none. */
  shedMarkAt = -1
  /** @internal Pressure: wire bytes (read + taken by the kernel) at `shedMarkAt`. */
  shedMarkBytes = 0
  /** @internal Pressure: the last completed window found the client below `slowRate`. */
  shedSlow = false

  /** @internal */
  constructor(rawSocket: Socket, secure: boolean, nowClock: number, nowEpoch: number) {
    this.id = nextId++
    this.rawSocket = rawSocket
    this.secure = secure
    this.remoteAddress = rawSocket.remoteAddress
    this.remotePort = rawSocket.remotePort
    this.localAddress = rawSocket.localAddress
    this.localPort = rawSocket.localPort
    this.openedAt = nowEpoch
    this.openedAtClock = nowClock
    this.stateSince = nowClock
  }

  /** Bytes received on the wire (ciphertext for TLS, handshake included). */
  get bytesRead(): number {
    const raw = this.rawSocket
    return raw === null ? this.finalBytesRead : raw.bytesRead
  }

  /** Bytes handed to the socket for sending, on the wire (ciphertext for TLS). */
  get bytesWritten(): number {
    const raw = this.rawSocket
    return raw === null ? this.finalBytesWritten : (raw.bytesWritten ?? 0)
  }

  /** Which deadline the connection waits on now, and when it is due (epoch ms); null when none. */
  get deadline(): { kind: DeadlineKind; at: number } | null {
    let kind = this.phaseReason
    let at = this.phaseDeadlineAt
    if (this.requestDeadlineAt < at) {
      kind = 'request_timeout'
      at = this.requestDeadlineAt
    }
    if (this.ageDeadlineAt < at) {
      kind = 'max_connection_age'
      at = this.ageDeadlineAt
    }
    if (kind === null || at === Number.POSITIVE_INFINITY) return null
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
      stateDurations: { ...this.stateDurations },
      closedAt: this.closedAt,
      duration: this.duration,
      stateAtClose: this.stateAtClose,
      closeReason: this.closeReason,
      errorCode: this.errorCode,
      peakConcurrentStreams: this.peakConcurrentStreams,
      pingRtt: this.pingRtt,
    }
  }
}
