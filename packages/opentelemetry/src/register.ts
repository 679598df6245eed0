import type { ConnectionTracker } from '@connguard/core'
import {
  type ClientTrackerLike,
  type ClosingTracker,
  type ConnectionMeasures,
  feedClosedRecords,
  isClientTracker,
} from '@connguard/core/internal'
import type { MeterProvider } from '@opentelemetry/api'
import { OpenTelemetryClientInstruments } from './client-instruments.js'
import { AlreadyRegisteredError } from './errors.js'
import { OpenTelemetryInstruments } from './instruments.js'
import { assertTracker, type OpenTelemetryOptions, resolveOpenTelemetryOptions } from './options.js'

/** Undoes a registration; idempotent. */
export type StopMetrics = () => void

/** What register needs of an instrument set, server or client. */
interface InstrumentSet {
  readonly trackers: Set<unknown>
  record(m: ConnectionMeasures): void
  remove(): void
}

/** The instrument sets per MeterProvider, so trackers registered on one provider share one. */
const serverSets = new WeakMap<MeterProvider, OpenTelemetryInstruments>()
const clientSets = new WeakMap<MeterProvider, OpenTelemetryClientInstruments>()

/**
 * Records a tracker's connections with OpenTelemetry instruments on
 * `options.meterProvider` (default: the global MeterProvider).
 *
 * - a server's `ConnectionTracker` (core; Fastify's `app.connguard`, Express'
 *   `guard.tracker`) feeds the `connguard.*` connection instruments;
 * - a client tracker (`dispatcher.tracker` of @connguard/client) feeds
 *   `http.client.open_connections` and `http.client.connection.duration`.
 *
 * The observable instruments read the tracker when a reader collects; histograms and
 * counters take each connection's record once, on 'close'. Nothing else is subscribed:
 * no per-request or per-transition work.
 *
 * Returns `stop()`: it removes the 'close' listener and, once no tracker feeds the
 * provider's set any more, the observable callback. Idempotent.
 */
export function registerOpenTelemetry(
  tracker: ConnectionTracker | ClientTrackerLike,
  options?: OpenTelemetryOptions,
): StopMetrics {
  assertTracker(tracker)
  const { meterProvider } = resolveOpenTelemetryOptions(options)
  if (isClientTracker(tracker)) {
    return feed(clientSets, meterProvider, tracker, tracker, () => {
      return new OpenTelemetryClientInstruments(meterProvider)
    })
  }
  return feed(serverSets, meterProvider, tracker, tracker as unknown as ClosingTracker, () => {
    return new OpenTelemetryInstruments(meterProvider)
  })
}

function feed<S extends InstrumentSet>(
  sets: WeakMap<MeterProvider, S>,
  meterProvider: MeterProvider,
  tracker: object,
  events: ClosingTracker,
  create: () => S,
): StopMetrics {
  const existing = sets.get(meterProvider)
  if (existing?.trackers.has(tracker)) throw new AlreadyRegisteredError('this MeterProvider')
  const instruments = existing ?? create()
  sets.set(meterProvider, instruments)
  instruments.trackers.add(tracker)

  const unfeed = feedClosedRecords(events, (m) => instruments.record(m))

  let stopped = false
  return () => {
    if (stopped) return
    stopped = true
    unfeed()
    instruments.trackers.delete(tracker)
    if (instruments.trackers.size === 0) {
      if (sets.get(meterProvider) === instruments) sets.delete(meterProvider)
      instruments.remove()
    }
  }
}
