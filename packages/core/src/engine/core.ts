import type { ResolvedOptions } from '../options/options.js'
import type { Admission } from '../policy/admission.js'
import type { Pressure } from '../policy/pressure.js'
import type { StreamCutReason } from '../policy/streams.js'
import type { ConnectionRecord, DeadlineKind, StreamGuard, TlsInfo } from '../record/record.js'
import type { DeadlineQueue } from '../time/deadline-queue.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import type { ConnectionState } from '../vocab/states.js'
import type { DrainPhase } from './drain.js'
import type { RecordList } from './record-list.js'
import type { TrackerFace } from './tracker-events.js'

/**
 * The engine as its own modules see it (cut, sweep, session lifecycle, pressure, WebSockets):
 * the state they read and the few moves they make. An interface, not the class, so that
 * engine.ts can import those modules without a cycle; `Engine` implements it.
 */
export interface Core {
  readonly options: ResolvedOptions
  /** The public tracker: events are emitted on it. */
  readonly face: TrackerFace
  /** `close()` was called. */
  readonly stopped: boolean
  /** Where a drain is (`delay`, `closing`, `done`), or null before one. */
  readonly drainPhase: DrainPhase | null
  /** The live connections, in accept order. */
  readonly records: RecordList
  /** The sweeper's deadline heap. */
  readonly queue: DeadlineQueue<ConnectionRecord>
  /** TLS connections accepted with no byte yet: polled so `handshaking` shows when bytes flow. */
  readonly awaitingBytes: Set<ConnectionRecord>
  /** Set when Node's parser did not report a request's first byte: idle connections are polled. */
  readonly pollIdle: boolean
  readonly admission: Admission
  /** Null when the `pressure` option is off. */
  readonly pressure: Pressure | null
  /**
   * While an adopted requestTimeout (Node's meaning) is in force: the records whose request
   * got its own from a route or an override (connguard's meaning).
   */
  readonly ownRequestTimeout: WeakSet<ConnectionRecord>
  /** Settles the keep-alive requests that began or ended since the last settle (engine.ts). */
  settleAll(now?: number, until?: number): boolean
  /** Rate windows for the requests without a body still in flight since the last sweep. */
  startPendingRates(now: number): void
  /** Live WebSocket upgrades (what `maxUpgradedConnections` caps). */
  webSockets: number
  /** Pressure's way of closing: its own reason counts the connection out at once. */
  readonly victim: (rec: ConnectionRecord, reason: CloseReason) => void
  /** HTTP/2: how the sweep's stream checks reset a stream. */
  readonly onStreamFailed: (g: StreamGuard, reason: StreamCutReason) => void
  /** While idle connections are polled, bytes since the last response are a request. */
  readonly idleBytesMoved: (rec: ConnectionRecord) => boolean
  /** The clock, in whole milliseconds. */
  now(): number
  /** Sets the phase deadline and keeps the heap key at or before it. */
  setPhase(rec: ConnectionRecord, reason: DeadlineKind | null, timeout: number, from: number): void
  /** Keeps the record's heap key at or before its earliest due time. */
  reschedule(rec: ConnectionRecord): void
  transition(rec: ConnectionRecord, to: ConnectionState, now: number): void
  /** The first byte of a request arrived (the polling fallback reports it from the sweep). */
  requestBegin(rec: ConnectionRecord, now?: number): void
  /** Cuts the HTTP/1 connections whose head has been arriving past `headersTimeout` (Node's list); the count. */
  sweepHeads(now: number): number
  /** The TLS handshake completed (HTTP/2 reports it with its session). */
  established(rec: ConnectionRecord, httpSocket: import('node:net').Socket, tls: TlsInfo): void
  /** Polling fallback: the HTTP socket's bytesRead when `rec` last became idle. */
  idleBytes(rec: ConnectionRecord): number
  /** Reads `rec`'s ends now if something listens for closed records. */
  keepEnds(rec: ConnectionRecord): void
  /** A connection closing under the drain is idle: it closes after the grace. */
  drainGrace(rec: ConnectionRecord, now: number): void
  /** One slice of a sweep: stops at `until` (wall ms) and returns -1 when more is due. */
  sweepSlice(now: number, until: number, continued: boolean): number
  /** The record of a socket or request, while tracked. */
  recordOf(
    target: import('node:net').Socket | import('node:http').IncomingMessage,
  ): ConnectionRecord | undefined
}
