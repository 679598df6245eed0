import { type Pressure, processConnections } from '../policy/pressure.js'
import { displacementVictim, shedSweep } from '../policy/shed.js'
import type { ConnectionRecord } from '../record/record.js'
import { pressureChannel } from '../vocab/channels.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import type { Core } from './core.js'
import { cutConnection } from './cut.js'
import { safeEmit } from './tracker-events.js'

/**
 * Where pressure (`pressure.ts`, `shed.ts`) meets the tracker: the live count it
 * measures, its say at accept, closing for it, and its pass once per sweep.
 */

/** Live connections, less those shed and waiting for their close (their descriptor is gone). */
export function liveConnections(t: Core): number {
  return t.records.size - (t.pressure?.shedPending ?? 0)
}

/**
 * Pressure's say at accept: an address over its share is refused; above the connection
 * limit, the oldest unproductive connection makes room, if there is one and no other
 * cap refuses the new connection anyway.
 */
export function pressureAdmit(
  t: Core,
  p: Pressure,
  rec: ConnectionRecord,
  refused: CloseReason | null,
  handshaking: number,
  now: number,
): CloseReason | null {
  const full = refused === 'max_concurrent_connections_exceeded'
  if ((refused === null || full) && p.perIp !== null && p.fair) {
    const share = p.ipShare()
    if (share > 0 && (p.perIp.get(rec.remoteAddress ?? '') ?? 0) > share)
      return 'shed_under_pressure'
  }
  if (!full || !p.options.displace) return refused
  const other = t.admission.recheck(rec, handshaking)
  if (other !== null) return other
  const victim = displacementVictim(t.records, now, p)
  if (victim === null) return refused
  shed(t, victim)
  return null
}

/** Closes `rec` for pressure and counts it out of the live connections at once. */
export function shed(t: Core, rec: ConnectionRecord): void {
  const fresh = rec.pendingReason === null
  cutConnection(t, rec, 'shed_under_pressure')
  if (fresh && rec.pendingReason === 'shed_under_pressure' && t.pressure !== null) {
    t.pressure.shedPending++
    processConnections.live--
  }
}

/** Once per sweep: the level, and while it is above 0, shrunken deadlines and shedding. */
export function pressureSweep(t: Core, p: Pressure, now: number, until: number): number {
  p.unfinished = false
  const live = liveConnections(t)
  if (p.update(now, live)) {
    const state = p.snapshot(live)
    if (t.face.listenerCount('pressure') > 0) safeEmit(t.face, 'pressure', state)
    if (pressureChannel.hasSubscribers) pressureChannel.publish({ ...state, tracker: t.face })
  }
  p.trackAddresses(t.records)
  if (p.level === 0 && p.perIp === null) {
    if (p.spare.length > 0) p.spare = []
    return 0
  }
  const closed = shedSweep(t.records, t.queue, now, t.options, p, t.idleBytesMoved, t.victim, until)
  p.sweepCuts += closed
  return closed
}
