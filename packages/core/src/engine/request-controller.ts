import type { IncomingMessage } from 'node:http'
import type { RequestOverrides, ResolvedRequestOverrides } from '../options/options.js'
import type { ConnectionRecord } from '../record/record.js'
import type { ConnectionTracker } from './tracker.js'

/**
 * A handler's view of its own connection, as Go's ResponseController: read
 * the connection's record, or change this request's limits (an upload
 * handler that learns from the body that it will be slow). The adapters
 * expose it as `request.connguard` (Fastify) and `req.connguard` (Express),
 * created only when a handler reads it.
 */
export class RequestController {
  readonly #tracker: ConnectionTracker
  readonly #req: IncomingMessage

  constructor(tracker: ConnectionTracker, req: IncomingMessage) {
    this.#tracker = tracker
    this.#req = req
  }

  /** The record of this request's connection, while it is tracked. */
  get record(): ConnectionRecord | undefined {
    return this.#tracker.recordOf(this.#req)
  }

  /**
   * Changes this request's `requestTimeout`, `minBodyRate` or
   * `minResponseRate` (`false` switches one off). Returns false when the
   * connection is not tracked or the request is no longer in progress.
   * Throws a ConnguardError for invalid values.
   */
  override(overrides: RequestOverrides | ResolvedRequestOverrides): boolean {
    return this.#tracker.overrideRequest(this.#req, overrides)
  }
}
