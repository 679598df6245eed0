import type { ConnectionRecord } from './record.js'

/** What `drain()` did, per outcome. */
export interface DrainResult {
  /** Closed at once: new, handshaking or idle (`app_shutdown`), and any accepted during the drain. */
  closedIdle: number
  /** Had a request in flight (or was upgraded) and ended before the timeout. */
  finished: number
  /** Still open at the timeout and closed with `app_shutdown_timeout`. */
  forced: number
}

/**
 * One graceful drain: which connections it waits for, its counts, its single
 * timer. The tracker decides what to close; this keeps the score and settles
 * the promise once no connection is left.
 */
export class Drain {
  readonly result: DrainResult = { closedIdle: 0, finished: 0, forced: 0 }
  readonly done: Promise<DrainResult>
  /** Connections with a request in flight (or upgraded) when the drain began. */
  readonly #pending = new Set<ConnectionRecord>()
  #timer: NodeJS.Timeout | null = null
  #resolve!: (result: DrainResult) => void

  constructor() {
    this.done = new Promise((resolve) => {
      this.#resolve = resolve
    })
  }

  /** `rec` is closed at once. */
  closedAtOnce(): void {
    this.result.closedIdle++
  }

  /** `rec` is let finish. */
  wait(rec: ConnectionRecord): void {
    this.#pending.add(rec)
  }

  /** Calls `force` once after `ms` (0: never). */
  arm(ms: number, force: () => void): void {
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
    if (this.#pending.delete(rec)) this.result.finished++
  }

  /** Resolves once `live` is 0. */
  settle(live: number): void {
    if (live > 0) return
    this.cancel()
    this.#resolve(this.result)
  }

  cancel(): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
  }
}
