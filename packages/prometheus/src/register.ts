import type { ConnectionRecord, ConnectionTracker } from '@connguard/core'
import { measureConnection } from '@connguard/core'
import type { Registry } from 'prom-client'
import { AlreadyRegisteredError } from './errors.js'
import { PrometheusInstruments } from './instruments.js'
import { assertTracker, type PrometheusOptions, resolvePrometheusOptions } from './options.js'

/** Undoes a registration; idempotent. */
export type StopMetrics = () => void

/** The metric sets per registry and prefix, so trackers registered on one registry share one. */
const sets = new WeakMap<Registry, Map<string, PrometheusInstruments>>()

/**
 * Exposes `tracker`'s connections as Prometheus metrics on `options.registry` (default:
 * prom-client's global `register`). Gauges are read from `tracker.snapshot()` when scraped;
 * histograms and counters take each connection's record once, on 'close'. Nothing else
 * is subscribed: no per-request or per-transition work.
 *
 * Returns `stop()`: it removes the 'close' listener and, once no tracker feeds the set
 * any more, unregisters the metrics. Idempotent.
 */
export function registerPrometheus(
  tracker: ConnectionTracker,
  options?: PrometheusOptions,
): StopMetrics {
  assertTracker(tracker)
  const { registry, prefix } = resolvePrometheusOptions(options)
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
  const instruments = existing ?? new PrometheusInstruments(registry, prefix)
  prefixes.set(prefix, instruments)
  instruments.trackers.add(tracker)

  let warned = false
  const onClose = (rec: ConnectionRecord): void => {
    try {
      instruments.record(measureConnection(rec))
    } catch (err) {
      // A listener that throws is re-thrown by the tracker as an uncaught exception: a
      // metrics fault must not take the server down with it. Say so once.
      if (!warned) {
        warned = true
        process.emitWarning(
          `connguard: recording a closed connection's metrics failed: ${String(err)}`,
          'ConnguardWarning',
          'CONNGUARD_METRICS_FAILED',
        )
      }
    }
  }
  tracker.on('close', onClose)

  let stopped = false
  return () => {
    if (stopped) return
    stopped = true
    tracker.off('close', onClose)
    instruments.trackers.delete(tracker)
    if (instruments.trackers.size === 0) {
      if (prefixes.get(prefix) === instruments) prefixes.delete(prefix)
      if (instruments.isRegistered()) instruments.remove()
    }
  }
}
