import {
  type ClientTrackerLike,
  type ConnectionMeasures,
  type OpenClientConnections,
  openClientConnections,
  TIME_BUCKETS,
} from '@connguard/core/internal'
import { Gauge, Histogram, type Registry } from 'prom-client'
import { MetricConflictError } from './errors.js'

type Labels = Record<string, string>

/**
 * Client metric names without the prefix: OpenTelemetry's `http.client.open_connections`
 * and `http.client.connection.duration` as Prometheus spells them (dots to `_`, the
 * unit `_seconds` appended), so `connguard_http_client_open_connections`.
 */
export const CLIENT_METRIC_NAMES = Object.freeze({
  openConnections: 'http_client_open_connections',
  connectionDuration: 'http_client_connection_duration_seconds',
})

/**
 * The client metrics on one registry (per prefix), fed by every client tracker registered
 * there (`dispatcher.tracker` of @connguard/client). Created on the first client tracker
 * only, so a server-only application exposes no client metric and the reverse.
 *
 * Labels: `state` (`active`, `idle`), `server_address` and `server_port` (the origin the
 * application chose to call, not anything a peer sends), `protocol_version`, and on the
 * duration `reason`, the close reason.
 */
export class PrometheusClientInstruments {
  /** The client trackers feeding this set. */
  readonly trackers = new Set<ClientTrackerLike>()
  readonly #registry: Registry
  readonly #names: readonly string[]
  readonly #marker: Gauge<string>
  readonly #duration: Histogram<string>

  constructor(registry: Registry, prefix: string) {
    const n = (name: string): string => prefix + name
    this.#registry = registry
    this.#names = Object.values(CLIENT_METRIC_NAMES).map(n)
    for (const name of this.#names) {
      if (registry.getSingleMetric(name) !== undefined) throw new MetricConflictError(name)
    }
    const registers = [registry]
    const trackers = this.trackers
    const seen = new Map<string, OpenClientConnections>()
    this.#marker = new Gauge({
      name: n(CLIENT_METRIC_NAMES.openConnections),
      help: 'Established outbound HTTP connections by state (active: a request in flight; idle), server address, port and protocol.',
      labelNames: ['state', 'server_address', 'server_port', 'protocol_version'],
      registers,
      // Read when scraped: no work per connection event. Groups seen before and empty now
      // are set to 0, not dropped, so a series does not vanish while its pool is empty.
      collect(this: Gauge<string>) {
        for (const group of openClientConnections(trackers, seen)) {
          const labels: Labels = {
            state: group.state,
            server_address: group.serverAddress,
            server_port: String(group.serverPort),
          }
          if (group.protocolVersion !== undefined) labels.protocol_version = group.protocolVersion
          this.set(labels, group.count)
        }
      },
    })
    this.#duration = new Histogram({
      name: n(CLIENT_METRIC_NAMES.connectionDuration),
      help: 'Lifetimes of established outbound HTTP connections, connect to close, by close reason (ping_timeout: a dead connection closed by connguard).',
      labelNames: ['reason', 'server_address', 'server_port', 'protocol_version'],
      buckets: [...TIME_BUCKETS],
      registers,
    })
  }

  /** One closed client connection; those that never got established are not counted. */
  record(m: ConnectionMeasures): void {
    if (!m.established) return
    const labels: Labels = { reason: m.reason }
    if (m.serverAddress !== undefined) labels.server_address = m.serverAddress
    if (m.port !== undefined) labels.server_port = String(m.port)
    if (m.protocolVersion !== undefined) labels.protocol_version = m.protocolVersion
    this.#duration.observe(labels, m.duration)
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
