import { DEFAULT_DRAIN_TIMEOUT } from '../options/options.js'
import { assertPlainObject, duration, rejectUnknown } from '../options/validate.js'
import type { ConnectionRecord } from '../record/record.js'

/** What `drain()` did, per outcome. */
export interface DrainResult {
  /** Closed without serving a request during the drain: idle for the whole idle grace (`app_shutdown`). */
  closedIdle: number
  /** Served what it had in flight (or what arrived in the grace) and closed before the timeout. */
  finished: number
  /** Still open at the timeout and closed with `app_shutdown_timeout`. */
  forced: number
}

/**
 * Where a drain is: `delay` (still serving normally, reported draining so a load balancer
 * deregisters the instance), `closing` (every response says `Connection: close`, HTTP/2
 * sessions get GOAWAY, idle connections close after the idle grace), `done` (no connection
 * left, or the tracker closed).
 */
export type DrainPhase = 'delay' | 'closing' | 'done'

/** `drain()`'s options. */
export interface DrainOptions {
  /**
   * Whatever is still open this many ms after the closing phase began is closed with
   * `app_shutdown_timeout` (default 30 s; `false` waits for ever).
   */
  timeout?: number | false
  /**
   * Keep serving normally for this many ms first, while `tracker.draining` is true and the
   * readiness handler answers 503: the time a load balancer needs to stop sending new
   * connections (default 0).
   */
  delay?: number | false
  /**
   * Once closing, an idle HTTP/1 connection (its last response promised keep-alive) is closed
   * only after this many ms without a request, so a request the client already sent is served
   * (with `Connection: close`) instead of reset; an HTTP/2 session gets its final GOAWAY this
   * long after its last stream ended (default 1 s; `0`/`false`: at once).
   */
  idleGrace?: number | false
}

/** The options as validated once. */
export interface ResolvedDrainOptions {
  timeout: number
  delay: number
  idleGrace: number
}

/**
 * 1 s of idle grace. A request the client wrote just before it saw the close takes one
 * round trip to arrive: well under 300 ms across continents, a few ms inside a region. The
 * rest is margin for a paused client (a GC, a busy event loop) and for the sweep, which cuts
 * up to one `sweepInterval` (≤ 250 ms) late. It is also the floor of Node's own idle timer
 * buffer past `keepAliveTimeout`, the margin Node gives a client racing its keep-alive close.
 * Longer holds a shutdown back for connections the client does not use; a drain of a busy
 * server is bounded by its longest request anyway.
 */
export const DEFAULT_DRAIN_IDLE_GRACE = 1_000

const DRAIN_OPTION_NAMES = ['timeout', 'delay', 'idleGrace'] as const

/** Validates `drain()`'s options (typed errors naming the option). */
export function resolveDrainOptions(
  options: unknown,
  where = 'drain() option',
): ResolvedDrainOptions {
  if (options === undefined) options = {}
  assertPlainObject(where, options)
  rejectUnknown(options, DRAIN_OPTION_NAMES, where)
  return {
    timeout: duration('timeout', options.timeout, DEFAULT_DRAIN_TIMEOUT),
    delay: duration('delay', options.delay, 0),
    idleGrace: duration('idleGrace', options.idleGrace, DEFAULT_DRAIN_IDLE_GRACE),
  }
}

/**
 * One graceful drain: its phase, which connections it waits for, its counts, its two
 * timers (the delay, the timeout). The tracker decides what to close; this keeps the score
 * and settles the promise once no connection is left.
 */
export class Drain {
  readonly result: DrainResult = { closedIdle: 0, finished: 0, forced: 0 }
  readonly done: Promise<DrainResult>
  readonly options: ResolvedDrainOptions
  /** Resolves when the closing phase begins (after the delay). */
  readonly closing: Promise<void>
  phase: DrainPhase = 'delay'
  /** Connections closing during the drain, with their request count when it began waiting on them. */
  readonly #pending = new Map<ConnectionRecord, number>()
  #timer: NodeJS.Timeout | null = null
  #resolve!: (result: DrainResult) => void
  #closingResolve!: () => void

  constructor(options: ResolvedDrainOptions) {
    this.options = options
    this.done = new Promise((resolve) => {
      this.#resolve = resolve
    })
    this.closing = new Promise((resolve) => {
      this.#closingResolve = resolve
    })
  }

  /** Calls `start` after the delay (at once without one). */
  startAfterDelay(start: () => void): void {
    if (this.options.delay === 0) {
      start()
      return
    }
    this.#timer = setTimeout(() => {
      this.#timer = null
      start()
    }, this.options.delay)
  }

  /** The closing phase begins. */
  beginClosing(): void {
    this.phase = 'closing'
    this.#closingResolve()
  }

  /** `rec` is closing under this drain. One busy now counts as finished when it closes. */
  wait(rec: ConnectionRecord): void {
    if (this.#pending.has(rec)) return
    const busy = rec.state === 'active' || rec.state === 'upgraded'
    this.#pending.set(rec, busy ? -1 : rec.requests)
  }

  /** Calls `force` once after the timeout (0: never). */
  arm(force: () => void): void {
    const ms = this.options.timeout
    if (ms > 0) {
      this.#timer = setTimeout(() => {
        this.#timer = null
        force()
      }, ms)
    }
  }

  /** `rec` is being closed by the timeout. */
  forced(rec: ConnectionRecord): void {
    if (this.#pending.delete(rec)) this.result.forced++
  }

  /** `rec` closed. */
  closed(rec: ConnectionRecord): void {
    const before = this.#pending.get(rec)
    if (before === undefined) return
    this.#pending.delete(rec)
    // Served something during the drain (or was busy when it began).
    if (rec.requests > before) this.result.finished++
    else this.result.closedIdle++
  }

  /** Resolves once closing and `live` is 0 (or at once with `force`: the tracker closed); true when it did now. */
  settle(live: number, force = false): boolean {
    if (this.phase === 'done' || (!force && (live > 0 || this.phase !== 'closing'))) return false
    this.cancel()
    this.phase = 'done'
    this.#closingResolve()
    this.#resolve(this.result)
    return true
  }

  cancel(): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
  }
}
