import { NEVER } from '../time/deadline-queue.js'
import type { PingState } from './ping-state.js'

/**
 * What a WebSocket upgrade keeps, beside its record (a WeakMap keyed by the record), so a
 * plain HTTP connection carries no field for it. Data only: engine/websocket.ts links the
 * library's socket and runs the checks.
 */

/** What the tracker uses of a WebSocket (`ws`'s WebSocket has it all). */
export interface WebSocketLike {
  readonly readyState: number
  ping(): void
  terminate(): void
  /** Starts the closing handshake (`ws`: `close(code, reason)`); a drain sends 1001 through it when present. */
  close?(code?: number, reason?: string): void
  // Listeners take `unknown` arguments: `ws`'s WebSocket declares `on` per event plus a
  // catch-all `(event: string | symbol, listener: (...args: any[]) => void)`, which this
  // matches (`never[]` would not: `any` is not assignable to `never`). Checked against
  // @types/ws in test/types/websocket.types.ts.
  on(event: 'pong' | 'close', listener: (...args: unknown[]) => void): unknown
  removeListener(event: 'pong' | 'close', listener: (...args: unknown[]) => void): unknown
}

/** A WebSocket's liveness facts, as records and logs show them. */
export interface WebSocketInfo {
  /** When the connection was upgraded, epoch ms. */
  upgradedAt: number
  /** A WebSocket library's socket is linked: pings run through it. */
  linked: boolean
  /** Pings the tracker sent. */
  pingsSent: number
  /** Round trip of the last ping answered, ms; null before the first pong. */
  pingRtt: number | null
  /** The close code the library reported (1000, 1001, 1006, …); null while open or when none. */
  closeCode: number | null
  /** The close reason the library reported; null when empty. */
  closeReason: string | null
}

export class WebSocketFacts implements PingState {
  pingCheckAt = NEVER
  pingSentAt = -1
  lastReadBytes = 0
  lastReadAt = 0
  pingRtt: number | null = null
  pingsSent = 0
  /** Clock ms of the upgrade. */
  readonly upgradedAtClock: number
  /** Idle deadline (no library linked): wire bytes both ways at the last look, and when they last moved. */
  idleBytes = 0
  idleSince = 0
  idleCheckAt = NEVER
  socket: WebSocketLike | null = null
  closeCode: number | null = null
  closeReason: string | null = null
  constructor(now: number) {
    this.upgradedAtClock = now
  }
}

const factsOf = new WeakMap<object, WebSocketFacts>()

/** The facts of a WebSocket connection; undefined for anything else. */
export function webSocketFacts(rec: object): WebSocketFacts | undefined {
  return factsOf.get(rec)
}

/** Keeps `f` beside `rec` (at its upgrade). */
export function setWebSocketFacts(rec: object, f: WebSocketFacts): void {
  factsOf.set(rec, f)
}

/** The public view of a record's WebSocket facts; null when it is not a WebSocket. */
export function webSocketInfo(rec: {
  readonly openedAt: number
  readonly openedAtClock: number
}): WebSocketInfo | null {
  const f = factsOf.get(rec)
  if (f === undefined) return null
  return {
    upgradedAt: rec.openedAt + (f.upgradedAtClock - rec.openedAtClock),
    linked: f.socket !== null,
    pingsSent: f.pingsSent,
    pingRtt: f.pingRtt,
    closeCode: f.closeCode,
    closeReason: f.closeReason,
  }
}

/**
 * When the ping in flight to `rec`'s peer was sent, clock ms; -1 when none is unanswered.
 * Pressure may shed a WebSocket whose pong is overdue by its floor; one that answers is
 * never a candidate.
 */
export function pingUnansweredSince(rec: object): number {
  const f = factsOf.get(rec)
  return f === undefined ? -1 : f.pingSentAt
}
