import type { ResolvedOptions } from './options.js'
import type { ConnectionRecord } from './record.js'

/**
 * HTTP/2 PING liveness (the client-side lesson of Go's ReadIdleTimeout +
 * PingTimeout, applied to the server): an idle-looking session to a peer whose
 * route died is found only by a PING, and Node's `session.ping()` has no
 * timeout of its own. Read silence is judged from the raw socket's bytesRead,
 * sampled every quarter of `pingInterval`, so a PING goes out between 1 and
 * 1.25 × pingInterval after the last byte read; no ACK within pingTimeout cuts
 * the session with `ping_timeout`.
 */

export type PingStep = 'send' | 'timeout' | null

/** Starts watching a session from `now`. */
export function startPing(rec: ConnectionRecord, o: ResolvedOptions, now: number): void {
  if (o.pingInterval === 0) return
  rec.lastReadBytes = rec.rawSocket?.bytesRead ?? 0
  rec.lastReadAt = now
  rec.pingSentAt = -1
  rec.pingCheckAt = now + checkEvery(o)
}

/** What is due at `now`: send a PING, give up on one, or nothing (next check scheduled). */
export function checkPing(rec: ConnectionRecord, o: ResolvedOptions, now: number): PingStep {
  const bytes = rec.rawSocket?.bytesRead ?? rec.lastReadBytes
  if (bytes !== rec.lastReadBytes) {
    rec.lastReadBytes = bytes
    rec.lastReadAt = now
  }
  if (rec.pingSentAt >= 0) {
    if (o.pingTimeout > 0 && now - rec.pingSentAt >= o.pingTimeout) return 'timeout'
    rec.pingCheckAt = o.pingTimeout > 0 ? rec.pingSentAt + o.pingTimeout : Number.POSITIVE_INFINITY
    return null
  }
  if (now - rec.lastReadAt >= o.pingInterval) {
    rec.pingSentAt = now
    rec.pingCheckAt = o.pingTimeout > 0 ? now + o.pingTimeout : Number.POSITIVE_INFINITY
    return 'send'
  }
  rec.pingCheckAt = now + checkEvery(o)
  return null
}

/** The ACK came back after `rtt` ms. */
export function pingAcked(
  rec: ConnectionRecord,
  o: ResolvedOptions,
  rtt: number,
  now: number,
): void {
  rec.pingRtt = rtt
  rec.pingSentAt = -1
  rec.lastReadBytes = rec.rawSocket?.bytesRead ?? rec.lastReadBytes
  rec.lastReadAt = now
  rec.pingCheckAt = now + checkEvery(o)
}

function checkEvery(o: ResolvedOptions): number {
  return Math.max(o.pingInterval / 4, o.sweepInterval)
}
