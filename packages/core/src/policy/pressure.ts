import { readFileSync } from 'node:fs'
import { type IntervalHistogram, monitorEventLoopDelay } from 'node:perf_hooks'
import { getHeapStatistics } from 'node:v8'
import type { PressureLimitSource, ResolvedPressure } from '../options/pressure-options.js'
import type { ConnectionRecord } from '../record/record.js'

/**
 * The pressure signal and its level (see docs/ARCHITECTURE.md, "Pressure"). The tracker
 * calls `update()` once per sweep; everything else here is read on the paths that need it
 * (accept, the shedding scan, `snapshot()`). Nothing runs per request.
 *
 * Each signal is a utilization: live connections / the connection limit, event-loop delay /
 * `eventLoopDelay`, heap in use / `heapUsed` of the heap limit. The level is the highest of
 * them mapped from [start, 1] onto [0, 1].
 */

/** Descriptors kept for the application when the limit comes from the open-file limit: a tenth, at least this many. */
const MIN_FILE_HEADROOM = 64
const FILE_HEADROOM_SHARE = 0.1
/** Event-loop delay and heap use are sampled at most once a second: both are process-wide and move slowly. */
const SAMPLE_EVERY_MS = 1_000
/** Resolution of the event-loop delay histogram, ms: fine enough for delays of tens of ms, cheap (one timer). */
const LOOP_DELAY_RESOLUTION = 10
/** An event is emitted when the level moves by at least this much (or crosses 0, 1, or starts or stops shedding). */
const LEVEL_STEP = 0.05
/**
 * The per-address share stays in force this long after the level was last above 0: shedding
 * an address down to its share lowers the level, and without this it would be free to
 * grow back until the level rose again, over and over.
 */
const SHARE_LINGER_MS = 10_000

/**
 * Live connections counted across every tracker in the process (this copy of the module),
 * less those already shed and waiting for their close event: the open-file limit is the
 * process's, not one server's.
 */
export const processConnections = { live: 0 }

/** The process's open-file soft limit (Linux `/proc/self/limits`); null where unknown or unlimited. */
export function openFileLimit(read: () => string = readLimits): number | null {
  try {
    const line = read()
      .split('\n')
      .find((l) => l.startsWith('Max open files'))
    const soft = line?.slice('Max open files'.length).trim().split(/\s+/)[0]
    const n = Number(soft)
    return soft !== undefined && Number.isInteger(n) && n > 0 ? n : null
  } catch {
    return null
  }
}

function readLimits(): string {
  return readFileSync('/proc/self/limits', 'utf8')
}

/** Connections allowed under an open-file limit: the limit less a tenth, at least 64 kept. */
export function connectionLimitFromFiles(files: number): number {
  return Math.max(0, files - Math.max(MIN_FILE_HEADROOM, Math.ceil(files * FILE_HEADROOM_SHARE)))
}

/** The pressure part of `tracker.snapshot()` and of the `'pressure'` event. */
export interface PressureSnapshot {
  /** 0 (none) … 1 (full): how far deadlines have shrunk toward their floors. */
  level: number
  /** Connections are being shed (a signal is above `shedAbove`). */
  shedding: boolean
  /** Live connections counted against `limit` (for the open-file limit: the whole process's). */
  connections: number
  /** The connection limit; null when there is no connection signal. */
  limit: number | null
  /** Where `limit` comes from. */
  limitSource: PressureLimitSource | null
  /** Event-loop delay, p99 over the last second, ms; null when that signal is off. */
  eventLoopDelay: number | null
  /** V8 heap in use as a fraction of its limit; null when that signal is off. */
  heapUsed: number | null
}

export class Pressure {
  readonly options: ResolvedPressure
  /** Connections at full pressure; 0 = no connection signal. */
  readonly limit: number
  readonly source: PressureLimitSource | null
  /** 0 … 1. */
  level = 0
  /** Connections over the shed line this sweep (connection signal). */
  quota = 0
  /** Event-loop delay or heap use is above the shed line: shed unproductive connections. */
  unproductiveOnly = false
  /** Records this tracker cut with `shed_under_pressure` whose close has not come yet. */
  shedPending = 0
  /** Closes pressure made in the current sweep, over all its slices: `maxShedPerSweep` caps this. */
  sweepCuts = 0
  /** The last pass stopped at its slice's end with more to close: the sweep goes on next turn. */
  unfinished = false
  /** Connections per remote address, kept only while under pressure with `perIpShare` set. */
  perIp: Map<string, number> | null = null
  /** Unproductive connections the last scan found and did not cut: displacement takes from here. */
  spare: ConnectionRecord[] = []
  #delay: IntervalHistogram | null = null
  #sampledAt = Number.NEGATIVE_INFINITY
  #delayMs = 0
  #heap = 0
  #emittedLevel = 0
  #emittedShedding = false
  /** Clock ms when the level was last above 0. */
  #pressedAt = Number.NEGATIVE_INFINITY
  /** The per-address share is in force (`perIpShare` set, and pressure now or lately). */
  fair = false

  constructor(options: ResolvedPressure, maxConnections: number, files: number | null) {
    this.options = options
    if (options.limit > 0) {
      this.limit = options.limit
      this.source = 'pressure.limit'
    } else if (maxConnections > 0) {
      this.limit = maxConnections
      this.source = 'maxConnections'
    } else if (files !== null && connectionLimitFromFiles(files) > 0) {
      this.limit = connectionLimitFromFiles(files)
      this.source = 'open files'
    } else {
      this.limit = 0
      this.source = null
    }
    if (options.eventLoopDelay > 0) {
      this.#delay = monitorEventLoopDelay({ resolution: LOOP_DELAY_RESOLUTION })
      this.#delay.enable()
    }
  }

  /** The count compared with `limit`: the process's for the open-file limit, else this tracker's. */
  counted(trackerLive: number): number {
    return this.source === 'open files' ? processConnections.live : trackerLive
  }

  /** Above the limit: a new connection must displace another or be refused. */
  over(trackerLive: number): boolean {
    return this.limit > 0 && this.counted(trackerLive) > this.limit
  }

  /** Connections one address may keep under pressure; 0 = no per-address share. */
  ipShare(): number {
    const share = this.options.perIpShare
    return share > 0 && this.limit > 0 ? Math.max(1, Math.floor(share * this.limit)) : 0
  }

  /**
   * Recomputes the level from the signals; `trackerLive` = this tracker's live connections
   * not already shed. Returns true when the change is worth an event.
   */
  update(now: number, trackerLive: number): boolean {
    const o = this.options
    if ((this.#delay !== null || o.heapUsed > 0) && now - this.#sampledAt >= SAMPLE_EVERY_MS) {
      this.#sampledAt = now
      if (this.#delay !== null) {
        this.#delayMs = this.#delay.count > 0 ? this.#delay.percentile(99) / 1e6 : 0
        this.#delay.reset()
      }
      if (o.heapUsed > 0) {
        const h = getHeapStatistics()
        this.#heap = h.used_heap_size / h.heap_size_limit
      }
    }
    const live = this.counted(trackerLive)
    const connections = this.limit > 0 ? live / this.limit : 0
    let other = 0
    if (o.eventLoopDelay > 0) other = this.#delayMs / o.eventLoopDelay
    if (o.heapUsed > 0) other = Math.max(other, this.#heap / o.heapUsed)
    const u = Math.max(connections, other)
    this.level = u <= o.start ? 0 : Math.min(1, (u - o.start) / (1 - o.start))
    if (this.level > 0) this.#pressedAt = now
    this.fair = this.ipShare() > 0 && now - this.#pressedAt < SHARE_LINGER_MS
    // Shed down to the shed line, counted in this tracker's connections.
    this.quota = this.limit > 0 ? Math.max(0, Math.ceil(live - o.shedAbove * this.limit)) : 0
    this.quota = Math.min(this.quota, trackerLive)
    this.unproductiveOnly = other > o.shedAbove
    const shedding = this.shedding
    const changed =
      Math.abs(this.level - this.#emittedLevel) >= LEVEL_STEP ||
      (this.level === 0) !== (this.#emittedLevel === 0) ||
      (this.level === 1) !== (this.#emittedLevel === 1) ||
      shedding !== this.#emittedShedding
    if (changed) {
      this.#emittedLevel = this.level
      this.#emittedShedding = shedding
    }
    return changed
  }

  get shedding(): boolean {
    return this.quota > 0 || this.unproductiveOnly
  }

  snapshot(trackerLive: number): PressureSnapshot {
    return {
      level: this.level,
      shedding: this.shedding,
      connections: this.counted(trackerLive),
      limit: this.limit > 0 ? this.limit : null,
      limitSource: this.source,
      eventLoopDelay: this.#delay !== null ? this.#delayMs : null,
      heapUsed: this.options.heapUsed > 0 ? this.#heap : null,
    }
  }

  /** Starts counting per address (from the live records) or stops, as the share comes and goes. */
  trackAddresses(records: Iterable<ConnectionRecord>): void {
    const want = this.fair
    if (want && this.perIp === null) {
      const map = new Map<string, number>()
      for (const rec of records) {
        const ip = rec.remoteAddress ?? ''
        map.set(ip, (map.get(ip) ?? 0) + 1)
      }
      this.perIp = map
    } else if (!want && this.perIp !== null) {
      this.perIp = null
    }
  }

  /** Counts a connection in (1) or out (-1) of its address; returns its address's count. */
  countAddress(rec: ConnectionRecord, delta: 1 | -1): number {
    const map = this.perIp
    if (map === null) return 0
    const ip = rec.remoteAddress ?? ''
    const n = (map.get(ip) ?? 0) + delta
    if (n > 0) map.set(ip, n)
    else map.delete(ip)
    return n
  }

  close(): void {
    this.#delay?.disable()
    this.#delay = null
    this.perIp = null
    this.spare = []
  }
}
