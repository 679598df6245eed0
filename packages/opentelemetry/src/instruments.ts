import { type ConnectionTracker, LIVE_STATES } from '@connguard/core'
import {
  activeTlsHandshakes,
  BYTE_BUCKETS,
  type ConnectionMeasures,
  liveStates,
  PHASES,
  pressureLevel,
  REQUEST_BUCKETS,
  TIME_BUCKETS,
} from '@connguard/core/internal'
import {
  type Attributes,
  type BatchObservableCallback,
  type Counter,
  type Histogram,
  type Meter,
  type MeterProvider,
  type ObservableGauge,
  type ObservableUpDownCounter,
  ValueType,
} from '@opentelemetry/api'

/** The instrumentation scope: the meter every instrument belongs to. */
export const METER_NAME = '@connguard/opentelemetry'

/**
 * Instrument names: Kestrel's stable set (`kestrel.*`, OpenTelemetry semantic conventions
 * for Kestrel) under `connguard.`, plus the per-connection instruments no server model
 * has. Prometheus' names are the same in snake_case with units (docs/metrics.md).
 */
export const INSTRUMENT_NAMES = Object.freeze({
  activeConnections: 'connguard.active_connections',
  activeTlsHandshakes: 'connguard.active_tls_handshakes',
  upgradedConnections: 'connguard.upgraded_connections',
  connectionDuration: 'connguard.connection.duration',
  tlsHandshakeDuration: 'connguard.tls_handshake.duration',
  rejectedConnections: 'connguard.rejected_connections',
  connectionRequests: 'connguard.connection.requests',
  connectionBytes: 'connguard.connection.bytes',
  phaseDuration: 'connguard.connection.phase.duration',
  pressureLevel: 'connguard.pressure.level',
  streamCuts: 'connguard.http2.stream_cuts',
})

/**
 * connguard's instruments on one MeterProvider, fed by every tracker registered there.
 * Two trackers sharing one set matters for the observable instruments: two callbacks
 * observing the same attributes would overwrite each other, one callback sums them.
 *
 * Attributes are the semantic conventions' where one exists (error.type,
 * network.protocol.name/version, network.transport, network.io.direction, server.port,
 * tls.protocol.version), else `connguard.*`; all from fixed, small vocabularies. No client
 * address, ever: one series per client would be unbounded.
 */
export class OpenTelemetryInstruments {
  /** The trackers feeding this set. */
  readonly trackers = new Set<ConnectionTracker>()
  readonly #meter: Meter
  readonly #activeConnections: ObservableUpDownCounter
  readonly #activeTlsHandshakes: ObservableUpDownCounter
  readonly #upgradedConnections: ObservableUpDownCounter
  readonly #pressureLevel: ObservableGauge
  readonly #observe: BatchObservableCallback
  readonly #duration: Histogram
  readonly #handshake: Histogram
  readonly #rejected: Counter
  readonly #streamCuts: Counter
  readonly #requests: Histogram
  readonly #bytes: Histogram
  readonly #phase: Histogram

  constructor(provider: MeterProvider) {
    const meter = provider.getMeter(METER_NAME)
    this.#meter = meter
    // Observable UpDownCounters, as Kestrel's UpDownCounters but read when collected: no
    // work per connection event. Summing across states gives Kestrel's total.
    const active = meter.createObservableUpDownCounter(INSTRUMENT_NAMES.activeConnections, {
      description: 'Number of connections that are currently live on the server, by state.',
      unit: '{connection}',
      valueType: ValueType.INT,
    })
    const handshakes = meter.createObservableUpDownCounter(INSTRUMENT_NAMES.activeTlsHandshakes, {
      description: 'Number of TLS handshakes that are currently in progress on the server.',
      unit: '{handshake}',
      valueType: ValueType.INT,
    })
    // Kestrel's kestrel.upgraded_connections under our prefix.
    const upgraded = meter.createObservableUpDownCounter(INSTRUMENT_NAMES.upgradedConnections, {
      description: 'Number of connections that are currently upgraded (WebSockets).',
      unit: '{connection}',
      valueType: ValueType.INT,
    })
    const pressure = meter.createObservableGauge(INSTRUMENT_NAMES.pressureLevel, {
      description:
        'Pressure level, 0 (none) to 1 (at the limit: deadlines at their floors); the highest over the trackers.',
      unit: '1',
      valueType: ValueType.DOUBLE,
    })
    this.#activeConnections = active
    this.#activeTlsHandshakes = handshakes
    this.#upgradedConnections = upgraded
    this.#pressureLevel = pressure
    const trackers = this.trackers
    this.#observe = (result) => {
      result.observe(pressure, pressureLevel(trackers))
      const states = liveStates(trackers)
      // Every state, zeros included, so each series is continuous.
      for (const state of LIVE_STATES) {
        result.observe(active, states[state], { 'connguard.connection.state': state })
      }
      result.observe(handshakes, activeTlsHandshakes(trackers))
      result.observe(upgraded, states.upgraded)
    }
    meter.addBatchObservableCallback(this.#observe, [active, handshakes, upgraded, pressure])

    const time = { explicitBucketBoundaries: [...TIME_BUCKETS] }
    this.#duration = meter.createHistogram(INSTRUMENT_NAMES.connectionDuration, {
      description: 'The duration of connections on the server, accept to close.',
      unit: 's',
      advice: time,
    })
    this.#handshake = meter.createHistogram(INSTRUMENT_NAMES.tlsHandshakeDuration, {
      description:
        'The duration of TLS handshakes on the server: accept to established, or to the close of one that never completed (with error.type).',
      unit: 's',
      advice: time,
    })
    this.#rejected = meter.createCounter(INSTRUMENT_NAMES.rejectedConnections, {
      description:
        'Number of connections closed at accept because a cap was reached (maxConnections, maxConnectionsPerIp, maxHandshakes).',
      unit: '{connection}',
      valueType: ValueType.INT,
    })
    this.#streamCuts = meter.createCounter(INSTRUMENT_NAMES.streamCuts, {
      description:
        'Number of HTTP/2 streams reset by a per-stream limit while the session went on (connguard.close_reason), added when the session closes.',
      unit: '{stream}',
      valueType: ValueType.INT,
    })
    this.#requests = meter.createHistogram(INSTRUMENT_NAMES.connectionRequests, {
      description: 'Requests (HTTP/2: streams) per connection, recorded at close.',
      unit: '{request}',
      valueType: ValueType.INT,
      advice: { explicitBucketBoundaries: [...REQUEST_BUCKETS] },
    })
    this.#bytes = meter.createHistogram(INSTRUMENT_NAMES.connectionBytes, {
      description:
        'Bytes per connection on the wire (TLS: ciphertext, handshake included), by network.io.direction.',
      unit: 'By',
      valueType: ValueType.INT,
      advice: { explicitBucketBoundaries: [...BYTE_BUCKETS] },
    })
    this.#phase = meter.createHistogram(INSTRUMENT_NAMES.phaseDuration, {
      description:
        'Time each connection spent per phase (connguard.phase: handshake, first_request, request, keep_alive, upgraded), recorded at close.',
      unit: 's',
      advice: time,
    })
  }

  /** One closed connection. */
  record(m: ConnectionMeasures): void {
    const where: Attributes = { 'network.transport': m.transport }
    if (m.port !== undefined) where['server.port'] = m.port
    const base: Attributes = { ...where }
    if (m.protocolVersion !== undefined) {
      base['network.protocol.name'] = 'http'
      base['network.protocol.version'] = m.protocolVersion
    }
    // `connguard.close_reason` always; `error.type` only for failures (see CLEAN_REASONS).
    const duration: Attributes = { ...base, 'connguard.close_reason': m.reason }
    if (m.errorType !== undefined) duration['error.type'] = m.errorType
    if (m.tlsVersion !== undefined) duration['tls.protocol.version'] = m.tlsVersion
    this.#duration.record(m.duration, duration)
    // A rejected connection never reached the application: it has no phases, requests or
    // bytes worth a sample, and a flood of them must not drown the served ones.
    if (m.rejected) {
      this.#rejected.add(1, { ...where, 'error.type': m.reason })
      return
    }
    if (m.handshake >= 0) {
      const handshake: Attributes = { ...where }
      // As Kestrel: error.type for a handshake that failed, whatever ended it.
      if (m.handshakeFailed) handshake['error.type'] = m.reason
      else handshake['tls.protocol.version'] = m.tlsVersion ?? 'other'
      this.#handshake.record(m.handshake, handshake)
    }
    if (m.streamCuts !== null) {
      for (const [reason, count] of Object.entries(m.streamCuts)) {
        this.#streamCuts.add(count, { ...where, 'connguard.close_reason': reason })
      }
    }
    this.#requests.record(m.requests, base)
    this.#bytes.record(m.bytesReceived, { ...base, 'network.io.direction': 'receive' })
    this.#bytes.record(m.bytesTransmitted, { ...base, 'network.io.direction': 'transmit' })
    for (const phase of PHASES) {
      const seconds = m.phases[phase]
      if (seconds >= 0) this.#phase.record(seconds, { ...base, 'connguard.phase': phase })
    }
  }

  /**
   * Stops the observable instruments' callback. The API has no way to delete an
   * instrument: the histograms stay in the MeterProvider (a cumulative exporter keeps
   * reporting their last totals) but receive nothing more.
   */
  remove(): void {
    this.#meter.removeBatchObservableCallback(this.#observe, [
      this.#activeConnections,
      this.#activeTlsHandshakes,
      this.#upgradedConnections,
      this.#pressureLevel,
    ])
  }
}
