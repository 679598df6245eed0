import type { ConnectionRecord, ConnectionTracker } from '@connguard/core'
import { measureConnection } from '@connguard/core'
import type { MeterProvider } from '@opentelemetry/api'
import { AlreadyRegisteredError } from './errors.js'
import { OpenTelemetryInstruments } from './instruments.js'
import { assertTracker, type OpenTelemetryOptions, resolveOpenTelemetryOptions } from './options.js'

/** Undoes a registration; idempotent. */
export type StopMetrics = () => void

/** The instrument sets per MeterProvider, so trackers registered on one provider share one. */
const sets = new WeakMap<MeterProvider, OpenTelemetryInstruments>()

/**
 * Records `tracker`'s connections with OpenTelemetry instruments on `options.meterProvider`
 * (default: the global MeterProvider). The observable instruments read
 * `tracker.snapshot()` when a reader collects; histograms and counters take each
 * connection's record once, on 'close'. Nothing else is subscribed: no per-request or
 * per-transition work.
 *
 * Returns `stop()`: it removes the 'close' listener and, once no tracker feeds the
 * provider's set any more, the observable callback. Idempotent.
 */
export function registerOpenTelemetry(
  tracker: ConnectionTracker,
  options?: OpenTelemetryOptions,
): StopMetrics {
  assertTracker(tracker)
  const { meterProvider } = resolveOpenTelemetryOptions(options)
  const existing = sets.get(meterProvider)
  if (existing?.trackers.has(tracker)) throw new AlreadyRegisteredError('this MeterProvider')
  const instruments = existing ?? new OpenTelemetryInstruments(meterProvider)
  sets.set(meterProvider, instruments)
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
      if (sets.get(meterProvider) === instruments) sets.delete(meterProvider)
      instruments.remove()
    }
  }
}
