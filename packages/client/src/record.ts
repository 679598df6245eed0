import type { Socket } from 'node:net'
import type {
  CloseReason,
  ConnectionState,
  LiveState,
  StateDurations,
  TlsInfo,
} from '@connguard/core'
import { type ClientConnectionRecordLike, connectionRecordJSON } from '@connguard/core/internal'
import type { RequestSink } from './channels.js'

let nextId = 1

/**
 * One client connection, from the connector's call to close: the client-side
 * twin of `@connguard/core`'s `ConnectionRecord`. Both satisfy core's
 * `ConnectionRecordLike` (the same public field names and meanings: states, TLS,
 * requests, durations, close reason), so the exporters map both with one
 * mapping; this one adds `origin`, `connectDuration` and `pingsSent`
 * (`ClientConnectionRecordLike`). Every field is set in the constructor so all
 * records share one shape. Times are epoch milliseconds; durations are
 * milliseconds.
 */
export class ClientConnectionRecord implements ClientConnectionRecordLike {
  /** Unique among client records in the process, increasing (a separate sequence from server records). */
  readonly id: number
  /** Where the connection goes: `https://host:port`. */
  readonly origin: string
  /** The server's address and port, once connected. */
  remoteAddress: string | undefined = undefined
  remotePort: number | undefined = undefined
  /** This side's address and port, once connected. */
  localAddress: string | undefined = undefined
  localPort: number | undefined = undefined
  /** True for TLS connections. */
  readonly secure: boolean
  /** Negotiated TLS parameters; null until the handshake completes, and for plain connections. */
  tls: TlsInfo | null = null
  /** `'2'` for HTTP/2 (ALPN h2), `'1.1'` otherwise; null until established. */
  httpVersion: string | null = null
  /** `new` (TCP connecting) → `handshaking` (TLS) → `idle` ⇄ `active` (requests in flight) → `closed`. */
  state: ConnectionState = 'new'
  /** When the connection was started (the connector was called). */
  readonly openedAt: number
  /** Start → TCP connected; null if it never connected. */
  connectDuration: number | null = null
  /** TCP connected → TLS established; null for plain connections and unfinished handshakes. */
  handshakeDuration: number | null = null
  /** Established → first request sent; null if none was. */
  timeToFirstRequest: number | null = null
  /** Requests sent on this connection. */
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
  /** Start → close; null while open. */
  duration: number | null = null
  /** The state the connection was in when it closed. */
  stateAtClose: LiveState | null = null
  /** Why it ended; exactly one per connection, null while open. */
  closeReason: CloseReason | null = null
  /** The `code` of the error behind the close, when there was one (`CONNGUARD_ERR_PING_TIMEOUT`, `ECONNRESET`, `UND_ERR_HEADERS_TIMEOUT`, …). */
  errorCode: string | null = null
  /** HTTP/2: most requests in flight at once. */
  peakConcurrentStreams = 0
  /** HTTP/2: round-trip time of the last liveness PING, ms; null before the first ACK. */
  pingRtt: number | null = null
  /** HTTP/2: liveness PINGs sent. */
  pingsSent = 0

  /** @internal The tracker that owns this record. */
  owner: RequestSink | null = null
  /** @internal The socket undici got from the connector (a TLSSocket for https). */
  socket: Socket | null = null
  /** @internal The HTTP/2 session undici runs over `socket`, when PINGs are on. */
  session: import('node:http2').ClientHttp2Session | null = null
  /** @internal Clock ms at start. */
  openedAtClock: number
  /** @internal Clock ms when the current state began. */
  stateSince: number
  /** @internal Clock ms when TCP connected; -1 before. */
  connectedAtClock = -1
  /** @internal Clock ms when established (TLS done, or TCP for plain); -1 before. */
  establishedAtClock = -1
  /** @internal Requests sent and not yet finished. */
  inFlight = 0
  /** @internal Reason decided by us before we destroy the socket; wins over what follows. */
  pendingReason: CloseReason | null = null
  /** @internal First error the connection saw. */
  error: Error | null = null
  /** @internal The error of the last request that failed on this connection (abort reasons). */
  lastRequestError: unknown = null
  /** @internal The server sent FIN. */
  peerEnded = false
  /** @internal The server sent GOAWAY. */
  goaway = false
  /** @internal bytesRead at the last liveness check, and when it last moved (clock ms). */
  lastReadBytes = 0
  /** @internal */
  lastReadAt = 0
  /** @internal When the PING in flight was sent (clock ms), -1 when none. */
  pingSentAt = -1
  /** @internal Read silence when that PING was sent, ms. */
  pingSilence = 0
  /** @internal Bytes, frozen at close. */
  finalBytesRead = 0
  /** @internal */
  finalBytesWritten = 0

  /** @internal */
  constructor(origin: string, secure: boolean, nowClock: number, nowEpoch: number) {
    this.id = nextId++
    this.origin = origin
    this.secure = secure
    this.openedAt = nowEpoch
    this.openedAtClock = nowClock
    this.stateSince = nowClock
  }

  /**
   * Bytes received. For TLS these are plaintext bytes (undici's TLSSocket has
   * no separate TCP socket to count ciphertext on), unlike the server records'
   * wire bytes.
   */
  get bytesRead(): number {
    const s = this.socket
    return s === null ? this.finalBytesRead : s.bytesRead
  }

  /** Bytes handed to the socket for sending (plaintext for TLS). */
  get bytesWritten(): number {
    const s = this.socket
    return s === null ? this.finalBytesWritten : (s.bytesWritten ?? 0)
  }

  /** A plain snapshot of the public fields, for logs and JSON. */
  toJSON(): Record<string, unknown> {
    return {
      id: this.id,
      origin: this.origin,
      ...connectionRecordJSON(this),
      connectDuration: this.connectDuration,
      pingsSent: this.pingsSent,
    }
  }
}
