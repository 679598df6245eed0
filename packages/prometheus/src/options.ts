import { type ConnectionTracker, InvalidOptionError, UnknownOptionError } from '@connguard/core'
import type { ClientTrackerLike } from '@connguard/core/internal'
import { register as globalRegistry, type Registry } from 'prom-client'

export interface PrometheusOptions {
  /** The registry to register the metrics on (default: prom-client's global `register`). */
  registry?: Registry
  /**
   * Prepended to every metric name (default `connguard_`). Only needed to keep two sets
   * apart on one registry; trackers registered with the same prefix share one set.
   */
  prefix?: string
}

export interface ResolvedPrometheusOptions {
  readonly registry: Registry
  readonly prefix: string
}

/** `connguard_active_connections`, … : the project's name, as Prometheus' naming guide asks. */
export const DEFAULT_PREFIX = 'connguard_'

const KNOWN_OPTIONS = ['registry', 'prefix']
/** Prometheus' metric name syntax (https://prometheus.io/docs/concepts/data_model/). */
const METRIC_NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/

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
export function resolvePrometheusOptions(options: unknown): ResolvedPrometheusOptions {
  if (options === undefined) return { registry: globalRegistry, prefix: DEFAULT_PREFIX }
  if (typeof options !== 'object' || options === null || Array.isArray(options)) {
    throw new InvalidOptionError('options', options, 'an object')
  }
  const o = options as Record<string, unknown>
  for (const key of Object.keys(o)) {
    if (!KNOWN_OPTIONS.includes(key)) {
      throw new UnknownOptionError(key, KNOWN_OPTIONS, 'registerPrometheus option')
    }
  }
  let registry = globalRegistry
  if (o.registry !== undefined) {
    const r = o.registry as Partial<Record<string, unknown>> | null
    if (
      typeof r !== 'object' ||
      r === null ||
      typeof r.registerMetric !== 'function' ||
      typeof r.getSingleMetric !== 'function' ||
      typeof r.removeSingleMetric !== 'function'
    ) {
      throw new InvalidOptionError('registry', o.registry, 'a prom-client Registry')
    }
    registry = o.registry as Registry
  }
  let prefix = DEFAULT_PREFIX
  if (o.prefix !== undefined) {
    // `x` stands for the rest of a name: the empty prefix is allowed, a leading digit is not.
    if (typeof o.prefix !== 'string' || !METRIC_NAME.test(`${o.prefix}x`)) {
      throw new InvalidOptionError(
        'prefix',
        o.prefix,
        'a string of letters, digits, "_" and ":" not starting with a digit',
      )
    }
    prefix = o.prefix
  }
  return { registry, prefix }
}
