import { ConnguardError } from '@connguard/core'

/**
 * This tracker already feeds these metrics: a second registration would count every
 * connection twice. Call the first registration's `stop()` first.
 */
export class AlreadyRegisteredError extends ConnguardError {
  constructor(where: string) {
    super(
      'CONNGUARD_ERR_ALREADY_REGISTERED',
      `connguard: this tracker is already registered on ${where}; call the stop() it returned first`,
    )
  }
}

/**
 * The registry already holds a metric with one of connguard's names that connguard did not
 * create (another library, or a hand-made one): use another `prefix` or registry.
 */
export class MetricConflictError extends ConnguardError {
  readonly metric: string

  constructor(metric: string) {
    super(
      'CONNGUARD_ERR_METRIC_CONFLICT',
      `connguard: the registry already has a metric named "${metric}" that connguard did not register; pass another "prefix" or "registry"`,
    )
    this.metric = metric
  }
}
