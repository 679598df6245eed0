import {
  type ClientTrackerLike,
  type ConnectionMeasures,
  type OpenClientConnections,
  openClientConnections,
  TIME_BUCKETS,
} from '@connguard/core/internal'
import type {
  Attributes,
  Histogram,
  Meter,
  MeterProvider,
  ObservableResult,
  ObservableUpDownCounter,
} from '@opentelemetry/api'
import { ValueType } from '@opentelemetry/api'
import { METER_NAME } from './instruments.js'

/**
 * The client instruments: OpenTelemetry's HTTP client connection metrics under their
 * semantic-convention names (the HTTP metrics of the semantic conventions, status
 * "development"; .NET's System.Net.Http emits the same two), so dashboards built for
 * them read connguard's client connections too.
 */
export const CLIENT_INSTRUMENT_NAMES = Object.freeze({
  openConnections: 'http.client.open_connections',
  connectionDuration: 'http.client.connection.duration',
})

/**
 * The client instruments on one MeterProvider, fed by every client tracker registered
 * there (`dispatcher.tracker` of @connguard/client); created on the first one only.
 *
 * Attributes are the conventions' (`http.connection.state`, `server.address`,
 * `server.port`, `network.protocol.version`), plus on the duration connguard's close
 * reason: `connguard.close_reason` always, `error.type` for failures (as on the server
 * instruments). `network.peer.address` (recommended) is left out: behind DNS
 * round-robin it adds a series per resolved address. `url.scheme` is opt-in there and
 * left out too.
 */
export class OpenTelemetryClientInstruments {
  /** The client trackers feeding this set. */
  readonly trackers = new Set<ClientTrackerLike>()
  readonly #open: ObservableUpDownCounter
  readonly #observe: (result: ObservableResult) => void
  readonly #duration: Histogram

  constructor(provider: MeterProvider) {
    const meter: Meter = provider.getMeter(METER_NAME)
    this.#open = meter.createObservableUpDownCounter(CLIENT_INSTRUMENT_NAMES.openConnections, {
      description:
        'Number of outbound HTTP connections that are currently active or idle on the client.',
      unit: '{connection}',
      valueType: ValueType.INT,
    })
    const trackers = this.trackers
    const seen = new Map<string, OpenClientConnections>()
    // Read when collected: no work per connection event. Groups seen before and empty now
    // are observed as 0, so a series does not vanish while its pool is empty.
    this.#observe = (result) => {
      for (const group of openClientConnections(trackers, seen)) {
        const attributes: Attributes = {
          'http.connection.state': group.state,
          'server.address': group.serverAddress,
          'server.port': group.serverPort,
        }
        if (group.protocolVersion !== undefined) {
          attributes['network.protocol.version'] = group.protocolVersion
        }
        result.observe(group.count, attributes)
      }
    }
    this.#open.addCallback(this.#observe)
    this.#duration = meter.createHistogram(CLIENT_INSTRUMENT_NAMES.connectionDuration, {
      description:
        'The duration of the successfully established outbound HTTP connections, connect to close.',
      unit: 's',
      advice: { explicitBucketBoundaries: [...TIME_BUCKETS] },
    })
  }

  /** One closed client connection; those that never got established are not recorded. */
  record(m: ConnectionMeasures): void {
    if (!m.established) return
    const attributes: Attributes = { 'connguard.close_reason': m.reason }
    if (m.errorType !== undefined) attributes['error.type'] = m.errorType
    if (m.serverAddress !== undefined) attributes['server.address'] = m.serverAddress
    if (m.port !== undefined) attributes['server.port'] = m.port
    if (m.protocolVersion !== undefined) attributes['network.protocol.version'] = m.protocolVersion
    this.#duration.record(m.duration, attributes)
  }

  /** Stops the observable callback; the histogram stays in the provider (see the server set's `remove`). */
  remove(): void {
    this.#open.removeCallback(this.#observe)
  }
}
