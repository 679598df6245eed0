import type { EventEmitter } from 'node:events'
import type { PressureSnapshot } from '../policy/pressure.js'
import type { StreamCutReason } from '../policy/streams.js'
import type { ConnectionRecord } from '../record/record.js'
import type { ConnectionState } from '../vocab/states.js'
import type { DrainPhase } from './drain.js'

export interface ConnectionTrackerEvents {
  open: [record: ConnectionRecord]
  transition: [record: ConnectionRecord, from: ConnectionState, to: ConnectionState]
  close: [record: ConnectionRecord]
  /** The pressure level moved by 0.05 or more, reached or left 0 or 1, or shedding started or stopped. */
  pressure: [state: PressureSnapshot]
  /** HTTP/2: the guard reset one stream of the session (RST_STREAM); the session goes on. */
  streamCut: [record: ConnectionRecord, reason: StreamCutReason, streamId: number]
  /** A drain entered a phase: `delay` (still serving, reported draining), `closing`, `done`. */
  drain: [phase: DrainPhase]
}

/** The public tracker as the engine sees it: where events go. */
export type TrackerFace = EventEmitter<ConnectionTrackerEvents>

/**
 * A listener that throws must not leave a record half-updated: every
 * bookkeeping step is done before emitting, and the error is re-thrown on
 * the next tick, where it surfaces as any uncaught exception would.
 */
export function safeEmit(
  t: TrackerFace,
  event: keyof ConnectionTrackerEvents,
  ...args: unknown[]
): void {
  // Each listener on its own: one that throws must not hide the event from the
  // listeners after it (exporters, the close log, the live view).
  for (const listener of t.rawListeners(event) as ((...a: unknown[]) => unknown)[]) {
    try {
      listener.apply(t, args)
    } catch (err) {
      process.nextTick(() => {
        throw err
      })
    }
  }
}
