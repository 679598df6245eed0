import type { PingLimits } from '../options/ping-limits.js'
import type { PingState } from '../record/ping-state.js'
import type { ConnectionRecord } from '../record/record.js'
import { NEVER } from '../time/deadline-queue.js'

/**
 * HTTP/2 PING liveness (the client-side lesson of Go's ReadIdleTimeout +
 * PingTimeout, applied to the server): an idle-looking session to a peer whose
 * route died is found only by a PING, and Node's `session.ping()` has no
 * timeout of its own. Read silence is judged from the raw socket's bytesRead,
 * sampled every quarter of `pingInterval`, so a PING goes out between 1 and
 * 1.25 × pingInterval after the last byte read; no ACK within pingTimeout cuts
 * the session with `ping_timeout`.
 */

export type { PingLimits, PingState }

export type PingStep = 'send' | 'timeout' | null

/** Starts watching a session from `now`. */
export function startPing(rec: ConnectionRecord, h2: PingState, o: PingLimits, now: number): void {
  if (o.pingInterval === 0) return
  h2.lastReadBytes = rec.rawSocket?.bytesRead ?? 0
  h2.lastReadAt = now
  h2.pingSentAt = -1
  h2.pingCheckAt = now + checkEvery(o)
}

/** What is due at `now`: send a PING, give up on one, or nothing (next check scheduled). */
export function checkPing(
  rec: ConnectionRecord,
  h2: PingState,
  o: PingLimits,
  now: number,
): PingStep {
  const bytes = rec.rawSocket?.bytesRead ?? h2.lastReadBytes
  if (bytes !== h2.lastReadBytes) {
    h2.lastReadBytes = bytes
    h2.lastReadAt = now
  }
  if (h2.pingSentAt >= 0) {
    if (o.pingTimeout > 0 && now - h2.pingSentAt >= o.pingTimeout) return 'timeout'
    h2.pingCheckAt = o.pingTimeout > 0 ? h2.pingSentAt + o.pingTimeout : NEVER
    return null
  }
  if (now - h2.lastReadAt >= o.pingInterval) {
    h2.pingSentAt = now
    h2.pingCheckAt = o.pingTimeout > 0 ? now + o.pingTimeout : NEVER
    return 'send'
  }
  h2.pingCheckAt = now + checkEvery(o)
  return null
}

/** The ACK came back after `rtt` ms. */
export function pingAcked(
  rec: ConnectionRecord,
  h2: PingState,
  o: PingLimits,
  rtt: number,
  now: number,
): void {
  h2.pingRtt = rtt
  h2.pingSentAt = -1
  h2.lastReadBytes = rec.rawSocket?.bytesRead ?? h2.lastReadBytes
  h2.lastReadAt = now
  h2.pingCheckAt = now + checkEvery(o)
}

/** Whole ms: a fractional due time would box the record's heap key (see "Deadlines" in ARCHITECTURE.md). */
function checkEvery(o: PingLimits): number {
  return Math.max(Math.floor(o.pingInterval / 4), o.sweepInterval)
}
