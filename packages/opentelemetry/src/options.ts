import { type ConnectionTracker, InvalidOptionError, UnknownOptionError } from '@connguard/core'
import type { ClientTrackerLike } from '@connguard/core/internal'
import { type MeterProvider, metrics } from '@opentelemetry/api'

export interface OpenTelemetryOptions {
  /**
   * Where the instruments are created (default: the global one, `metrics.getMeterProvider()`,
   * read at registration: register after the SDK has set it, or the instruments are no-ops).
   */
  meterProvider?: MeterProvider
}

export interface ResolvedOpenTelemetryOptions {
  readonly meterProvider: MeterProvider
}

const KNOWN_OPTIONS = ['meterProvider']

/**
 * The tracker is checked by shape, not `instanceof`: an application may load
 * @connguard/core twice (ESM and CJS, or two versions), and any copy's tracker works.
 * A server's `ConnectionTracker` or a client tracker (@connguard/client's
 * `dispatcher.tracker`, which also has these methods, and `kind: 'client'`).
 */
export function assertTracker(
  tracker: unknown,
): asserts tracker is ConnectionTracker | ClientTrackerLike {
  const t = tracker as Partial<Record<string, unknown>> | null
  if (
    typeof t !== 'object' ||
    t === null ||
    typeof t.on !== 'function' ||
    typeof t.off !== 'function' ||
    typeof t.snapshot !== 'function' ||
    typeof t.connections !== 'function'
  ) {
    throw new InvalidOptionError(
      'tracker',
      tracker,
      "a ConnectionTracker from @connguard/core or a dispatcher's tracker from @connguard/client",
    )
  }
}

/** Validates and defaults the options once, at registration. */
export function resolveOpenTelemetryOptions(options: unknown): ResolvedOpenTelemetryOptions {
  if (options === undefined) return { meterProvider: metrics.getMeterProvider() }
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidOptionError('options', options, 'an object')
  }
  const o = options as Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (!KNOWN_OPTIONS.includes(key)) {
      throw new UnknownOptionError(key, KNOWN_OPTIONS, 'registerOpenTelemetry option')
    }
  }
  if (o.meterProvider === undefined) return { meterProvider: metrics.getMeterProvider() }
  const p = o.meterProvider as Partial<Record<string, unknown>> | null
  if (typeof p !== 'object' || p === null || typeof p.getMeter !== 'function') {
    throw new InvalidOptionError(
      'meterProvider',
      o.meterProvider,
      'an OpenTelemetry MeterProvider (an object with getMeter())',
    )
  }
  return { meterProvider: o.meterProvider as MeterProvider }
}
