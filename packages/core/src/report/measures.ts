/**
 * What one closed connection contributes to the metrics, read from its record's public
 * fields once, at close: the instruments' values (seconds, counts, bytes) and their
 * low-cardinality attributes. Nothing here touches a socket or keeps state.
 *
 * The record is the source and the exporters map it: @connguard/prometheus and
 * @connguard/opentelemetry both read this one mapping, so they mean the same by every
 * instrument; docs/metrics.md states each meaning. Server records (`ConnectionRecord`)
 * and client records (@connguard/client's `ClientConnectionRecord`) go through the same
 * mapping: both satisfy `ConnectionRecordLike` (record-shape.ts), and the few places
 * where a client's life differs (it connects before it handshakes, waits for its first
 * request in `idle`, and names its server by origin) branch on `isClientRecord`.
 */

import type { ConnectionTracker, Snapshot } from '../engine/tracker.js'
import {
  type ClientTrackerLike,
  type ConnectionRecordLike,
  isClientRecord,
} from '../record/record-shape.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import type { LiveState } from '../vocab/states.js'

/** The caps checked at accept: a connection closed with one of these never reached the app. */
export const REJECT_REASONS: ReadonlySet<CloseReason> = new Set<CloseReason>([
  'max_concurrent_connections_exceeded',
  'max_connections_per_ip_exceeded',
  'max_concurrent_handshakes_exceeded',
])

/**
 * Ends that are not failures: the peer or the server closed after a normal exchange, a
 * graceful shutdown, a planned rotation. OpenTelemetry's `error.type` is left unset for
 * them, as Kestrel does ("error.type isn't set for non-error reasons", dotnet/aspnetcore
 * #56164), so an error-rate query over `connection.duration` does not count every
 * browser that hung up; `connguard.close_reason` always carries the reason.
 */
export const CLEAN_REASONS: ReadonlySet<CloseReason> = new Set<CloseReason>([
  'client_closed',
  'server_closed',
  'app_shutdown',
  'max_connection_age',
  'max_requests_per_connection',
])

/**
 * Bucket upper bounds for every time histogram, in seconds. 1–10 ms holds loopback and
 * same-region handshakes and first requests; 25–250 ms cross-region round trips; the
 * 10 s, 30 s and 60/120 s edges sit at connguard's default handshake (10 s), headers
 * (30 s) and keep-alive (72 s) deadlines, so a phase cut by one lands in the bucket right
 * above the edge and stands apart from those that completed; 300 s – 1 h keeps long-lived
 * pooled and upgraded connections out of +Inf. The 10 ms – 300 s span is the one ASP.NET
 * Core gives kestrel.connection.duration; connection phases need the ends added.
 */
export const TIME_BUCKETS: readonly number[] = Object.freeze([
  0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600,
])

/**
 * Requests per connection. `0` is its own bucket: connections that never sent a request
 * (pre-connects, scanners, silent clients) are the population the guard is about.
 */
export const REQUEST_BUCKETS: readonly number[] = Object.freeze([
  0, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 10_000,
])

/**
 * Wire bytes per connection and direction, powers of 4 from 256 B to 1 GiB: a TLS
 * handshake alone is 0.5–6 KB (the certificate chain), one small request or response
 * about 1 KB, so handshake-only, single-request, busy keep-alive and bulk-transfer
 * connections fall in different buckets.
 */
export const BYTE_BUCKETS: readonly number[] = Object.freeze([
  256, 1024, 4096, 16_384, 65_536, 262_144, 1_048_576, 4_194_304, 16_777_216, 67_108_864,
  268_435_456, 1_073_741_824,
])

/** The phases a connection's time is split into; see docs/metrics.md for each one's bounds. */
export const PHASES = ['handshake', 'first_request', 'request', 'keep_alive', 'upgraded'] as const
export type Phase = (typeof PHASES)[number]

/** What one closed connection contributes. Seconds for times; -1 = not recorded. */
export interface ConnectionMeasures {
  /** Whose record: a server's accepted connection, or a client's outbound one. */
  readonly side: 'server' | 'client'
  /**
   * The connection got as far as HTTP: server, not rejected and no failed handshake;
   * client, connected (and TLS established). OpenTelemetry's
   * `http.client.connection.duration` counts only these.
   */
  readonly established: boolean
  readonly reason: CloseReason
  /** Closed at accept by a cap: counted as rejected, and only in the duration and close counts. */
  readonly rejected: boolean
  /** OpenTelemetry `error.type`: the reason, unless it is a clean end (CLEAN_REASONS). */
  readonly errorType: CloseReason | undefined
  /** Accept → close. */
  readonly duration: number
  /** `1.0`, `1.1`, `2` (semconv network.protocol.version); from ALPN before any request; undefined when unknown. */
  readonly protocolVersion: string | undefined
  /** `1.2`, `1.3` (semconv tls.protocol.version); undefined for plain and failed handshakes. */
  readonly tlsVersion: string | undefined
  /** The server's port (semconv server.port): server side, the local port (undefined on a Unix socket); client side, the origin's. */
  readonly port: number | undefined
  /** Client side: the origin's host (semconv server.address). Server side: undefined (a Host header is the client's to choose). */
  readonly serverAddress: string | undefined
  readonly transport: 'tcp' | 'unix'
  /** TLS: accept → established, or → close when the handshake never completed; -1 otherwise. */
  readonly handshake: number
  /** The handshake did not complete (`handshake` then runs to the close). */
  readonly handshakeFailed: boolean
  readonly requests: number
  readonly bytesReceived: number
  readonly bytesTransmitted: number
  /** Seconds spent in each phase; -1 when the connection never was in it. */
  readonly phases: Readonly<Record<Phase, number>>
  /** HTTP/2: streams reset by a per-stream limit, by reason; null when none was (and for clients). */
  readonly streamCuts: Readonly<Partial<Record<CloseReason, number>>> | null
}

/** Node's `req.httpVersion` (and the tracker's `'2.0'`) → semconv network.protocol.version. */
const HTTP_VERSIONS = new Map([
  ['1.0', '1.0'],
  ['1.1', '1.1'],
  ['2.0', '2'],
  ['2', '2'],
])
const ALPN_VERSIONS = new Map([
  ['h2', '2'],
  ['http/1.1', '1.1'],
  ['http/1.0', '1.0'],
])
/** OpenSSL's protocol names → semconv tls.protocol.version (tls.protocol.name is "tls"). */
const TLS_VERSIONS = new Map([
  ['TLSv1.3', '1.3'],
  ['TLSv1.2', '1.2'],
  ['TLSv1.1', '1.1'],
  ['TLSv1', '1.0'],
])

/**
 * Unknown values collapse to `other`, never pass through: label values come from a fixed
 * set whatever a client sends, so no client can grow the number of series.
 */
function mapped(map: ReadonlyMap<string, string>, value: string): string {
  return map.get(value) ?? 'other'
}

/** Milliseconds → seconds (what the exporters record); a negative or zero span is 0. */
const seconds = (value: number): number => (value > 0 ? value / 1000 : 0)

/** An origin's host and port, as semconv server.address / server.port. */
export interface OriginParts {
  /** Host name or IP address, IPv6 without brackets. */
  readonly address: string
  /** The port, the scheme's default when the origin has none. */
  readonly port: number
  /** `http` or `https` (semconv url.scheme). */
  readonly scheme: string
}

const DEFAULT_PORTS: Readonly<Record<string, number>> = { 'http:': 80, 'https:': 443 }
/** Parsed origins. An application talks to a bounded set, but a crawler does not: capped. */
const origins = new Map<string, OriginParts>()
const MAX_CACHED_ORIGINS = 256

/** `https://[::1]:8443` → `{ address: '::1', port: 8443, scheme: 'https' }`; undefined if it does not parse. */
export function originParts(origin: string): OriginParts | undefined {
  let parts = origins.get(origin)
  if (parts !== undefined) return parts
  let url: URL
  try {
    url = new URL(origin)
  } catch {
    return undefined
  }
  const host = url.hostname
  parts = {
    address: host.startsWith('[') ? host.slice(1, -1) : host,
    port: url.port === '' ? (DEFAULT_PORTS[url.protocol] ?? 0) : Number(url.port),
    scheme: url.protocol.slice(0, -1),
  }
  if (origins.size >= MAX_CACHED_ORIGINS) origins.clear()
  origins.set(origin, parts)
  return parts
}

/** Reads a closed record, server or client. Called once per connection, from the tracker's 'close' event. */
export function measureConnection(rec: ConnectionRecordLike): ConnectionMeasures {
  const client = isClientRecord(rec)
  const reason = rec.closeReason ?? 'error'
  const sd = rec.stateDurations
  const duration = rec.duration ?? 0
  // Caps refuse accepted connections; a client is never refused that way.
  const rejected = !client && REJECT_REASONS.has(reason) && rec.stateAtClose === 'new'
  // A client's TCP connect comes first: a connect that failed is no failed handshake.
  const connected = !client || rec.connectDuration !== null
  const alpn = rec.tls?.alpnProtocol
  const protocolVersion =
    rec.httpVersion !== null
      ? mapped(HTTP_VERSIONS, rec.httpVersion)
      : typeof alpn === 'string'
        ? mapped(ALPN_VERSIONS, alpn)
        : undefined
  const tlsProtocol = rec.tls?.protocol
  const phases: Record<Phase, number> = {
    handshake: -1,
    first_request: -1,
    request: -1,
    keep_alive: -1,
    upgraded: -1,
  }
  let handshake = -1
  const handshakeFailed = rec.secure && connected && rec.handshakeDuration === null
  // A client is established once the connector handed undici the socket (httpVersion set).
  const established =
    !rejected && connected && !handshakeFailed && (!client || rec.httpVersion !== null)
  if (!rejected && connected) {
    // A TLS connection is in `new`/`handshaking` exactly until it is established, so
    // their sum is the handshake whether it completed (= handshakeDuration) or not.
    // A client's `new` is its TCP connect, not part of the handshake.
    if (rec.secure) {
      handshake = seconds(rec.handshakeDuration ?? (client ? 0 : sd.new) + sd.handshaking)
      phases.handshake = handshake
    }
    if (!handshakeFailed) {
      const first = rec.timeToFirstRequest
      // Open → established: accept → TLS done for a server, connect + TLS for a client.
      const setup = (client ? (rec.connectDuration ?? 0) : 0) + (rec.handshakeDuration ?? 0)
      // Established → first request; a connection that never sent one waited until its close.
      phases.first_request = seconds(first ?? duration - setup)
      if (sd.active > 0 || rec.requests > 0) phases.request = seconds(sd.active)
      if (first !== null) {
        // The wait for the first request is spent in `new` on a plain HTTP/1 server
        // connection (it goes new → active) and in `idle` after TLS, an h2c preface or
        // a client's connect; every other idle millisecond is a keep-alive gap, the
        // last one included (the gap a keep_alive_timeout or a hang-up ended).
        const idleBeforeFirst = Math.max(0, first - (rec.secure || client ? 0 : sd.new))
        const gaps = sd.idle - idleBeforeFirst
        if (gaps > 0 || rec.stateAtClose === 'idle') phases.keep_alive = seconds(gaps)
      }
      if (sd.upgraded > 0 || rec.stateAtClose === 'upgraded') phases.upgraded = seconds(sd.upgraded)
    }
  }
  const peer = client ? originParts(rec.origin) : undefined
  return {
    side: client ? 'client' : 'server',
    established,
    reason,
    rejected,
    errorType: CLEAN_REASONS.has(reason) ? undefined : reason,
    duration: seconds(duration),
    protocolVersion,
    tlsVersion:
      typeof tlsProtocol === 'string' && !handshakeFailed
        ? mapped(TLS_VERSIONS, tlsProtocol)
        : undefined,
    port: client ? peer?.port : rec.localPort,
    serverAddress: peer?.address,
    // Node reports no local port for a Unix domain socket (or a Windows pipe).
    transport: client || rec.localPort !== undefined ? 'tcp' : 'unix',
    handshake,
    handshakeFailed,
    requests: rec.requests,
    bytesReceived: rec.bytesRead,
    bytesTransmitted: rec.bytesWritten,
    phases,
    streamCuts: client
      ? null
      : ((rec as { streamCuts?: ConnectionMeasures['streamCuts'] }).streamCuts ?? null),
  }
}

/** Live connections per state, summed over `trackers`: `snapshot()` only, O(1) per tracker. */
export function liveStates(
  trackers: Iterable<Pick<ConnectionTracker, 'snapshot'>>,
): Record<LiveState, number> {
  const states: Record<LiveState, number> = {
    new: 0,
    handshaking: 0,
    idle: 0,
    active: 0,
    upgraded: 0,
  }
  for (const tracker of trackers) {
    const s: Snapshot = tracker.snapshot()
    states.new += s.new
    states.handshaking += s.handshaking
    states.idle += s.idle
    states.active += s.active
    states.upgraded += s.upgraded
  }
  return states
}

/**
 * TLS handshakes in progress, summed over `trackers`: connections in `handshaking` (a
 * state only TLS enters) plus secure ones still in `new` (accepted, no byte yet). Plain
 * HTTP waits for its first request in `new` too, so those are told apart by walking
 * `connections()`, and only when something is in `new`. Read at collection time.
 */
export function activeTlsHandshakes(
  trackers: Iterable<Pick<ConnectionTracker, 'snapshot' | 'connections'>>,
): number {
  let n = 0
  for (const tracker of trackers) {
    const s = tracker.snapshot()
    n += s.handshaking
    if (s.new > 0) {
      for (const rec of tracker.connections()) if (rec.secure && rec.state === 'new') n++
    }
  }
  return n
}

/** One group of OpenTelemetry's `http.client.open_connections`: established client connections alike in every attribute. */
export interface OpenClientConnections {
  /** semconv http.connection.state: `active` (a request in flight) or `idle`. */
  readonly state: 'active' | 'idle'
  /** The origin's host (semconv server.address). */
  readonly serverAddress: string
  /** The origin's port (semconv server.port). */
  readonly serverPort: number
  /** `1.1` or `2` (semconv network.protocol.version). */
  readonly protocolVersion: string | undefined
  /** How many are live now. */
  count: number
}

/**
 * Live established client connections, grouped by state, server address, port and
 * protocol, summed over `trackers`. Connections still connecting (`new`,
 * `handshaking`) are not counted: the semantic conventions' states are `active` and
 * `idle` only, and .NET counts a connection once it is established.
 *
 * `seen` is the caller's memory of every group reported before: a group with no
 * connection now is reported as 0 rather than left out, so its series stays
 * continuous while its pool is empty. It grows with the origins an application talks
 * to (two states and protocols each), never with the number of connections. Walks
 * `connections()`: client pools are small, and this runs only when metrics are collected.
 */
export function openClientConnections(
  trackers: Iterable<Pick<ClientTrackerLike, 'connections'>>,
  seen: Map<string, OpenClientConnections>,
): Iterable<OpenClientConnections> {
  for (const group of seen.values()) group.count = 0
  for (const tracker of trackers) {
    for (const rec of tracker.connections()) {
      const state = rec.state
      if (state !== 'active' && state !== 'idle') continue
      const peer = originParts(rec.origin)
      if (peer === undefined) continue
      const protocolVersion =
        rec.httpVersion === null ? undefined : mapped(HTTP_VERSIONS, rec.httpVersion)
      const where = `${protocolVersion} ${peer.port} ${peer.address}`
      let group = seen.get(`${state} ${where}`)
      if (group === undefined) {
        // Both states at once: an origin's `active` series exists before its first request.
        for (const s of ['active', 'idle'] as const) {
          seen.set(`${s} ${where}`, {
            state: s,
            serverAddress: peer.address,
            serverPort: peer.port,
            protocolVersion,
            count: 0,
          })
        }
        group = seen.get(`${state} ${where}`) as OpenClientConnections
      }
      group.count++
    }
  }
  return seen.values()
}

/**
 * The pressure level (0 … 1) over `trackers`: the highest, since each tracker's level is
 * already how close its own limits are. 0 for trackers with pressure off. Read at collection time.
 */
export function pressureLevel(trackers: Iterable<Pick<ConnectionTracker, 'snapshot'>>): number {
  let level = 0
  for (const tracker of trackers) level = Math.max(level, tracker.snapshot().pressure?.level ?? 0)
  return level
}
