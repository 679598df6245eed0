/**
 * Shared by the adapter integration tests (express.test.ts, node-http.test.ts): the timing
 * bounds every deadline is checked against, a collector of the tracker's close records, and
 * a per-file table of measured close times (printed when CONNGUARD_TIMINGS=1).
 *
 * Bounds, never exact instants: a connection must close no earlier than `deadline - 20 ms`
 * (clock skew between where the client and the server start counting) and no later than
 * `deadline + sweepInterval + 800 ms` (one sweep late at most, plus event-loop lag on a
 * loaded 2-core machine: a 520 ms stall was seen with the load average at 7 on 2 cores; the
 * same margin as helpers/records.ts).
 */
import type { Socket } from 'node:net'
import type { ConnectionRecord, ConnectionTracker } from '@connguard/core'
import { expect } from 'vitest'

/** The sweep interval every integration test uses. */
export const SWEEP = 50
/** How early a close may look from the client's side: both ends start their clocks apart. */
export const EARLY_MARGIN = 20
/**
 * The same for a duration the client measured (`what` starting with "client"): it starts its
 * clock when it sees the phase begin (a response parsed, TLS established), which on a loaded
 * machine lags the server's start by a stall of this process (23 ms over EARLY_MARGIN was
 * seen with both cores busy). The record's own durations keep EARLY_MARGIN.
 */
export const CLIENT_EARLY_MARGIN = 100
/** Event-loop lag allowed on top of one sweep interval. */
export const LATE_MARGIN = 800

/**
 * Assert `measuredMs` (a client- or server-side duration) lies within a deadline's bounds.
 * A `what` starting with "client" marks a client-side measurement (CLIENT_EARLY_MARGIN).
 */
export function expectDeadline(measuredMs: number, deadlineMs: number, what: string): void {
  const early = what.startsWith('client') ? CLIENT_EARLY_MARGIN : EARLY_MARGIN
  expect(measuredMs, `${what}: closed too early`).toBeGreaterThanOrEqual(deadlineMs - early)
  expect(measuredMs, `${what}: closed too late`).toBeLessThanOrEqual(
    deadlineMs + SWEEP + LATE_MARGIN,
  )
}

/** Collects a tracker's close records, in order, and lets a test wait for the next ones. */
export class CloseLog {
  readonly records: ConnectionRecord[] = []
  readonly #waiters = new Set<() => void>()
  /** How many records `next()` has handed out. */
  #taken = 0

  constructor(tracker: ConnectionTracker) {
    tracker.on('close', (record) => {
      this.records.push(record)
      for (const wake of this.#waiters) wake()
    })
  }

  /** Resolve with the `n`-th close record (1-based) once it exists; reject after `timeoutMs`. */
  nth(n: number, timeoutMs = 3_000): Promise<ConnectionRecord> {
    return new Promise((resolve, reject) => {
      const check = () => {
        const record = this.records[n - 1]
        if (record === undefined) return
        clearTimeout(timer)
        this.#waiters.delete(check)
        resolve(record)
      }
      const timer = setTimeout(() => {
        this.#waiters.delete(check)
        reject(
          new Error(`no close record #${n} within ${timeoutMs} ms (have ${this.records.length})`),
        )
      }, timeoutMs)
      this.#waiters.add(check)
      check()
    })
  }

  /** The records so far, in short, for assertion messages. */
  describe(): string {
    return `close records: ${JSON.stringify(
      this.records.map((r) => ({
        reason: r.closeReason,
        stateAtClose: r.stateAtClose,
        requests: r.requests,
        errorCode: r.errorCode,
        duration: r.duration === null ? null : Math.round(r.duration),
        handshakeDuration: r.handshakeDuration === null ? null : Math.round(r.handshakeDuration),
      })),
    )}`
  }

  /** The first close record `next()` has not returned yet (waiting for it if need be). */
  next(timeoutMs?: number): Promise<ConnectionRecord> {
    this.#taken++
    return this.nth(this.#taken, timeoutMs)
  }
}

/** One row of the timing table a test file prints at the end with CONNGUARD_TIMINGS=1. */
export interface TimingRow {
  suite: string
  scenario: string
  /** The deadline under test, ms; null where the point is that nothing closed. */
  deadlineMs: number | null
  /** Measured from the client, ms. */
  clientMs: number
  /** The record's duration (accept → close), ms, or null. */
  serverMs: number | null
  reason: string | null
}

export function printTimings(rows: TimingRow[]): void {
  if (process.env.CONNGUARD_TIMINGS !== '1' || rows.length === 0) return
  const lines = rows.map(
    (r) =>
      `| ${r.suite} | ${r.scenario} | ${r.deadlineMs ?? '—'} | ${Math.round(r.clientMs)} | ${
        r.serverMs === null ? '—' : Math.round(r.serverMs)
      } | ${r.reason ?? '—'} |`,
  )
  console.log(
    [
      '| suite | scenario | deadline ms | client ms | server ms | reason |',
      '|---|---|---|---|---|---|',
      ...lines,
    ].join('\n'),
  )
}

/** Every raw socket a server accepts, so a test can destroy what is left before closing it. */
export function trackSockets(server: {
  on(event: 'connection', listener: (socket: Socket) => void): unknown
}): Set<Socket> {
  const sockets = new Set<Socket>()
  server.on('connection', (socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  return sockets
}

export const sleep = (ms: number): Promise<void> =>
  new Promise((resolve) => setTimeout(resolve, ms))
