import type { IncomingMessage, ServerResponse } from 'node:http'
import type { ConnectionTracker } from '../engine/tracker.js'

/**
 * A readiness probe's answer: 503 from the moment `drain()` is called (its delay included),
 * 200 before. A load balancer (Kubernetes readiness probe, an AWS target group health check)
 * then stops sending new connections while the instance still serves.
 */
export const READY_BODY = '{"status":"ready"}'
export const DRAINING_BODY = '{"status":"draining"}'
const HEADERS = {
  'Content-Type': 'application/json; charset=utf-8',
  // A probe's answer is about this instant: a cache in between must not keep it.
  'Cache-Control': 'no-store',
} as const

/** Status and body of a readiness probe for `tracker`. */
export function readinessState(tracker: ConnectionTracker): { status: 200 | 503; body: string } {
  return tracker.draining ? { status: 503, body: DRAINING_BODY } : { status: 200, body: READY_BODY }
}

/** A `node:http` (and Express) handler for a readiness route: 503 while draining, 200 otherwise. */
export function readinessHandler(
  tracker: ConnectionTracker,
): (req: IncomingMessage, res: ServerResponse) => void {
  return (_req, res) => {
    const { status, body } = readinessState(tracker)
    res.writeHead(status, { ...HEADERS, 'Content-Length': Buffer.byteLength(body) })
    res.end(body)
  }
}

export { HEADERS as READINESS_HEADERS }
