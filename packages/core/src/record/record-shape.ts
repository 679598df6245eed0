/**
 * The public shape of a connection record, shared by the server's `ConnectionRecord`
 * (this package) and the client's `ClientConnectionRecord` (@connguard/client): the
 * fields both fill in with the same names and meanings. The exporters' mapping
 * (measures.ts), JSON snapshots and anything else that reads records takes this
 * interface, so one implementation serves both sides and the exporters need no
 * dependency on the client package (nor its undici peer).
 *
 * Types only, plus two helpers that read public fields: nothing here is on a hot path.
 */
import type { CloseReason } from '../vocab/close-reasons.js'
import type { ConnectionState, LiveState } from '../vocab/states.js'
import type { StateDurations, TlsInfo } from './record.js'

/** What every connection record has, server or client side. Times: epoch ms; durations: ms. */
export interface ConnectionRecordLike {
  readonly id: number
  readonly remoteAddress: string | undefined
  readonly remotePort: number | undefined
  readonly localAddress: string | undefined
  readonly localPort: number | undefined
  /** True for TLS connections. */
  readonly secure: boolean
  readonly tls: TlsInfo | null
  /** `'1.1'`, `'1.0'`, `'2.0'` (server, from requests) or `'2'` (client, from ALPN); null before known. */
  readonly httpVersion: string | null
  readonly state: ConnectionState
  readonly openedAt: number
  /** Server: accept → TLS established. Client: TCP connected → TLS established. */
  readonly handshakeDuration: number | null
  /** Established → first request (received by a server, sent by a client). */
  readonly timeToFirstRequest: number | null
  readonly requests: number
  readonly stateDurations: Readonly<StateDurations>
  readonly closedAt: number | null
  /** Open → close: accept (server) or the start of the connect (client). */
  readonly duration: number | null
  readonly stateAtClose: LiveState | null
  readonly closeReason: CloseReason | null
  readonly errorCode: string | null
  readonly peakConcurrentStreams: number
  readonly pingRtt: number | null
  readonly bytesRead: number
  readonly bytesWritten: number
}

/** A client connection's record: the shared fields, and where it goes and how it got there. */
export interface ClientConnectionRecordLike extends ConnectionRecordLike {
  /** `https://host:port`: the server this connection talks to. */
  readonly origin: string
  /** Start → TCP connected; null if it never connected. */
  readonly connectDuration: number | null
  /** HTTP/2: liveness PINGs sent. */
  readonly pingsSent: number
}

/**
 * A client tracker as the exporters use it (@connguard/client's `ClientTracker`): its
 * records' events and the live records. `kind: 'client'` tells it apart from core's
 * `ConnectionTracker` by shape, so a second copy of either package still works.
 */
export interface ClientTrackerLike {
  readonly kind: 'client'
  on(event: 'close', listener: (rec: ClientConnectionRecordLike) => void): unknown
  off(event: 'close', listener: (rec: ClientConnectionRecordLike) => void): unknown
  connections(): Iterable<ClientConnectionRecordLike>
}

/** A client record: it has an origin; server records never do. */
export function isClientRecord(rec: ConnectionRecordLike): rec is ClientConnectionRecordLike {
  return typeof (rec as Partial<ClientConnectionRecordLike>).origin === 'string'
}

/** A client tracker, told apart by shape (see `ClientTrackerLike`). */
export function isClientTracker(tracker: unknown): tracker is ClientTrackerLike {
  const t = tracker as Partial<Record<string, unknown>> | null
  return (
    typeof t === 'object' &&
    t !== null &&
    t.kind === 'client' &&
    typeof t.on === 'function' &&
    typeof t.off === 'function' &&
    typeof t.connections === 'function'
  )
}

/** The shared public fields as a plain object, for logs and JSON; each record class adds its own. */
export function connectionRecordJSON(rec: ConnectionRecordLike): Record<string, unknown> {
  return {
    id: rec.id,
    remoteAddress: rec.remoteAddress,
    remotePort: rec.remotePort,
    localAddress: rec.localAddress,
    localPort: rec.localPort,
    secure: rec.secure,
    tls: rec.tls,
    httpVersion: rec.httpVersion,
    state: rec.state,
    openedAt: rec.openedAt,
    handshakeDuration: rec.handshakeDuration,
    timeToFirstRequest: rec.timeToFirstRequest,
    requests: rec.requests,
    bytesRead: rec.bytesRead,
    bytesWritten: rec.bytesWritten,
    stateDurations: { ...rec.stateDurations },
    closedAt: rec.closedAt,
    duration: rec.duration,
    stateAtClose: rec.stateAtClose,
    closeReason: rec.closeReason,
    errorCode: rec.errorCode,
    peakConcurrentStreams: rec.peakConcurrentStreams,
    pingRtt: rec.pingRtt,
  }
}
