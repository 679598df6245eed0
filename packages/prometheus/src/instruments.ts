import {
  CLOSE_REASONS,
  type ConnectionTracker,
  LIVE_STATES,
  STREAM_CUT_REASONS,
} from '@connguard/core'
import {
  activeTlsHandshakes,
  BYTE_BUCKETS,
  type ConnectionMeasures,
  liveStates,
  PHASES,
  pressureLevel,
  REJECT_REASONS,
  REQUEST_BUCKETS,
  TIME_BUCKETS,
} from '@connguard/core/internal'
import { Counter, Gauge, Histogram, type Registry } from 'prom-client'
import { MetricConflictError } from './errors.js'

type Labels = Record<string, string>

/**
 * Metric names without the prefix. Units are in the names, as Prometheus' naming guide
 * asks (`_seconds`, `_bytes`, counters end in `_total`); the OpenTelemetry names are
 * the same instruments in dotted form (docs/metrics.md maps one to the other).
 */
export const METRIC_NAMES = Object.freeze({
  activeConnections: 'active_connections',
  activeTlsHandshakes: 'active_tls_handshakes',
  upgradedConnections: 'upgraded_connections',
  connectionDuration: 'connection_duration_seconds',
  tlsHandshakeDuration: 'tls_handshake_duration_seconds',
  rejectedConnections: 'rejected_connections_total',
  connectionsClosed: 'connections_closed_total',
  connectionRequests: 'connection_requests',
  connectionBytes: 'connection_bytes',
  phaseDuration: 'connection_phase_duration_seconds',
  pressureLevel: 'pressure_level',
  streamCuts: 'http2_stream_cuts_total',
})

/**
 * One set of connguard metrics on one registry (per prefix), fed by every tracker
 * registered there: the gauges sum the trackers' snapshots when scraped, the histograms
 * and counters take each tracker's closed records. Sharing the set is what lets two
 * guarded servers in one process use the default registry, where two sets would collide
 * on their names.
 *
 * Labels are a fixed, small vocabulary (docs/metrics.md): close reasons, states and
 * phases are closed lists, protocol and TLS versions are mapped onto a few values, and
 * `port` is the server's listening port. No client address, ever.
 */
export class PrometheusInstruments {
  /** The trackers feeding this set. */
  readonly trackers = new Set<ConnectionTracker>()
  readonly #registry: Registry
  readonly #names: readonly string[]
  /** The first metric of the set, to tell whether the registry still holds it. */
  readonly #marker: Gauge<string>
  readonly #duration: Histogram<string>
  readonly #handshake: Histogram<string>
  readonly #rejected: Counter<string>
  readonly #closed: Counter<string>
  readonly #streamCuts: Counter<string>
  readonly #requests: Histogram<string>
  readonly #bytes: Histogram<string>
  readonly #phase: Histogram<string>

  constructor(registry: Registry, prefix: string) {
    const n = (name: string): string => prefix + name
    this.#registry = registry
    this.#names = Object.values(METRIC_NAMES).map(n)
    // Check every name before creating any, so a conflict leaves the registry untouched.
    for (const name of this.#names) {
      if (registry.getSingleMetric(name) !== undefined) throw new MetricConflictError(name)
    }
    const registers = [registry]
    const trackers = this.trackers

    // Gauges are computed when scraped (prom-client calls `collect()` first): no work at all
    // per connection event, and nothing to keep in step with the tracker.
    this.#marker = new Gauge({
      name: n(METRIC_NAMES.activeConnections),
      help: 'Live connections by state (new, handshaking, idle, active, upgraded).',
      labelNames: ['state'],
      registers,
      collect(this: Gauge<string>) {
        const states = liveStates(trackers)
        // Every state, zeros included: a series that only exists while non-zero breaks rate() and alerts.
        for (const state of LIVE_STATES) this.set({ state }, states[state])
      },
    })
    new Gauge({
      name: n(METRIC_NAMES.activeTlsHandshakes),
      help: 'TLS connections accepted whose handshake has not completed yet.',
      registers,
      collect(this: Gauge<string>) {
        this.set(activeTlsHandshakes(trackers))
      },
    })
    new Gauge({
      name: n(METRIC_NAMES.upgradedConnections),
      help: 'Connections currently upgraded (WebSocket, CONNECT), as Kestrel\'s kestrel.upgraded_connections; the same count as active_connections{state="upgraded"}.',
      registers,
      collect(this: Gauge<string>) {
        this.set(liveStates(trackers).upgraded)
      },
    })
    new Gauge({
      name: n(METRIC_NAMES.pressureLevel),
      help: 'Pressure level, 0 (none) to 1 (at the limit: deadlines at their floors); the highest over the trackers. Closes it causes: connections_closed_total{reason="shed_under_pressure"}.',
      registers,
      collect(this: Gauge<string>) {
        this.set(pressureLevel(trackers))
      },
    })
    this.#duration = new Histogram({
      name: n(METRIC_NAMES.connectionDuration),
      help: 'Connection lifetimes, accept to close, by close reason.',
      labelNames: ['reason', 'protocol_version', 'tls_version', 'port'],
      buckets: [...TIME_BUCKETS],
      registers,
    })
    this.#handshake = new Histogram({
      name: n(METRIC_NAMES.tlsHandshakeDuration),
      help: 'TLS handshakes, accept to established (tls_version), or to the close of one that never completed (reason).',
      labelNames: ['tls_version', 'reason', 'port'],
      buckets: [...TIME_BUCKETS],
      registers,
    })
    this.#rejected = new Counter({
      name: n(METRIC_NAMES.rejectedConnections),
      help: 'Connections closed at accept by a cap (maxConnections, maxConnectionsPerIp, maxHandshakes).',
      labelNames: ['reason'],
      registers,
    })
    this.#closed = new Counter({
      name: n(METRIC_NAMES.connectionsClosed),
      help: 'Closed connections by close reason.',
      labelNames: ['reason'],
      registers,
    })
    this.#streamCuts = new Counter({
      name: n(METRIC_NAMES.streamCuts),
      help: 'HTTP/2 streams reset by a per-stream limit (the session goes on), by reason; counted when the session closes.',
      labelNames: ['reason'],
      registers,
    })
    this.#requests = new Histogram({
      name: n(METRIC_NAMES.connectionRequests),
      help: 'Requests (HTTP/2: streams) per connection, counted at close; rejected connections excluded.',
      labelNames: ['protocol_version', 'port'],
      buckets: [...REQUEST_BUCKETS],
      registers,
    })
    this.#bytes = new Histogram({
      name: n(METRIC_NAMES.connectionBytes),
      help: 'Wire bytes per connection (TLS: ciphertext, handshake included), by direction (receive, transmit).',
      labelNames: ['direction', 'protocol_version', 'port'],
      buckets: [...BYTE_BUCKETS],
      registers,
    })
    this.#phase = new Histogram({
      name: n(METRIC_NAMES.phaseDuration),
      help: 'Time each connection spent per phase: handshake, first_request, request, keep_alive, upgraded.',
      labelNames: ['phase', 'protocol_version', 'port'],
      buckets: [...TIME_BUCKETS],
      registers,
    })
    // Counters start at 0 for every reason they can take: rate() cannot see the first
    // increment of a series that appears with it.
    for (const reason of CLOSE_REASONS) this.#closed.inc({ reason }, 0)
    for (const reason of REJECT_REASONS) this.#rejected.inc({ reason }, 0)
    for (const reason of STREAM_CUT_REASONS) this.#streamCuts.inc({ reason }, 0)
  }

  /** One closed connection. */
  record(m: ConnectionMeasures): void {
    const port = m.port === undefined ? undefined : String(m.port)
    // Label objects in a stable, readable order: what, then protocol, then where.
    const base: Labels = {}
    if (m.protocolVersion !== undefined) base.protocol_version = m.protocolVersion
    if (port !== undefined) base.port = port
    this.#closed.inc({ reason: m.reason })
    const duration: Labels = { reason: m.reason }
    if (m.protocolVersion !== undefined) duration.protocol_version = m.protocolVersion
    if (m.tlsVersion !== undefined) duration.tls_version = m.tlsVersion
    if (port !== undefined) duration.port = port
    this.#duration.observe(duration, m.duration)
    // A rejected connection never reached the application: it has no phases, requests or
    // bytes worth a sample, and a flood of them must not drown the served ones.
    if (m.rejected) {
      this.#rejected.inc({ reason: m.reason })
      return
    }
    if (m.handshake >= 0) {
      const handshake: Labels = m.handshakeFailed
        ? { reason: m.reason }
        : { tls_version: m.tlsVersion ?? 'other' }
      if (port !== undefined) handshake.port = port
      this.#handshake.observe(handshake, m.handshake)
    }
    if (m.streamCuts !== null) {
      for (const [reason, count] of Object.entries(m.streamCuts))
        this.#streamCuts.inc({ reason }, count)
    }
    this.#requests.observe(base, m.requests)
    this.#bytes.observe({ direction: 'receive', ...base }, m.bytesReceived)
    this.#bytes.observe({ direction: 'transmit', ...base }, m.bytesTransmitted)
    for (const phase of PHASES) {
      const seconds = m.phases[phase]
      if (seconds >= 0) this.#phase.observe({ phase, ...base }, seconds)
    }
  }

  /** The registry still holds this set (nobody cleared it). */
  isRegistered(): boolean {
    return this.#registry.getSingleMetric(this.#names[0] as string) === this.#marker
  }

  /** Unregisters every metric of the set. */
  remove(): void {
    for (const name of this.#names) this.#registry.removeSingleMetric(name)
  }
}
