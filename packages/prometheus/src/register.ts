import type { ConnectionTracker } from '@connguard/core'
import {
  type ClientTrackerLike,
  type ClosingTracker,
  type ConnectionMeasures,
  feedClosedRecords,
  isClientTracker,
} from '@connguard/core/internal'
import type { Registry } from 'prom-client'
import { PrometheusClientInstruments } from './client-instruments.js'
import { AlreadyRegisteredError } from './errors.js'
import { PrometheusInstruments } from './instruments.js'
import { assertTracker, type PrometheusOptions, resolvePrometheusOptions } from './options.js'

/** Undoes a registration; idempotent. */
export type StopMetrics = () => void

/** What register needs of a metric set, server or client. */
interface MetricSet {
  readonly trackers: Set<unknown>
  record(m: ConnectionMeasures): void
  isRegistered(): boolean
  remove(): void
}
type SetsByPrefix<S> = WeakMap<Registry, Map<string, S>>

/** The metric sets per registry and prefix, so trackers registered on one registry share one. */
const serverSets: SetsByPrefix<PrometheusInstruments> = new WeakMap()
const clientSets: SetsByPrefix<PrometheusClientInstruments> = new WeakMap()

/**
 * Exposes a tracker's connections as Prometheus metrics on `options.registry` (default:
 * prom-client's global `register`).
 *
 * - a server's `ConnectionTracker` (core; Fastify's `app.connguard`, Express'
 *   `guard.tracker`) feeds the `connguard_*` connection metrics;
 * - a client tracker (`dispatcher.tracker` of @connguard/client) feeds
 *   `connguard_http_client_open_connections` and
 *   `connguard_http_client_connection_duration_seconds`.
 *
 * Gauges are read from the tracker when scraped; histograms and counters take each
 * connection's record once, on 'close'. Nothing else is subscribed: no per-request or
 * per-transition work.
 *
 * Returns `stop()`: it removes the 'close' listener and, once no tracker feeds the set
 * any more, unregisters the metrics. Idempotent.
 */
export function registerPrometheus(
  tracker: ConnectionTracker | ClientTrackerLike,
  options?: PrometheusOptions,
): StopMetrics {
  assertTracker(tracker)
  const { registry, prefix } = resolvePrometheusOptions(options)
  if (isClientTracker(tracker)) {
    return feed(clientSets, registry, prefix, tracker, tracker, () => {
      return new PrometheusClientInstruments(registry, prefix)
    })
  }
  return feed(serverSets, registry, prefix, tracker, tracker as unknown as ClosingTracker, () => {
    return new PrometheusInstruments(registry, prefix)
  })
}

function feed<S extends MetricSet>(
  sets: SetsByPrefix<S>,
  registry: Registry,
  prefix: string,
  tracker: object,
  events: ClosingTracker,
  create: () => S,
): StopMetrics {
  let byPrefix = sets.get(registry)
  if (byPrefix === undefined) {
    byPrefix = new Map()
    sets.set(registry, byPrefix)
  }
  const prefixes = byPrefix
  let existing = prefixes.get(prefix)
  // `registry.clear()` or `removeSingleMetric()` behind our back: that set is gone.
  if (existing !== undefined && !existing.isRegistered()) existing = undefined
  if (existing?.trackers.has(tracker)) throw new AlreadyRegisteredError('this prom-client registry')
  const instruments = existing ?? create()
  prefixes.set(prefix, instruments)
  instruments.trackers.add(tracker)

  const unfeed = feedClosedRecords(events, (m) => instruments.record(m))

  let stopped = false
  return () => {
    if (stopped) return
    stopped = true
    unfeed()
    instruments.trackers.delete(tracker)
    if (instruments.trackers.size === 0) {
      if (prefixes.get(prefix) === instruments) prefixes.delete(prefix)
      if (instruments.isRegistered()) instruments.remove()
    }
  }
}
