import type { ConnectionTracker, Snapshot } from '../engine/tracker.js'
import { assertPlainObject, rejectUnknown } from '../options/validate.js'
import type { ConnectionRecord, DeadlineKind } from '../record/record.js'
import type { WebSocketInfo } from '../record/websocket-facts.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import { InvalidOptionError } from '../vocab/errors.js'
import type { ConnectionState, LiveState } from '../vocab/states.js'
import { HTML_HEADERS, renderPage } from './live-view-page.js'

/** 100 closes: a minute of churn on a quiet service, a screenful on the page. */
export const DEFAULT_RECENT_CLOSES = 100
/** 500 rows: the page stays readable and the JSON small (~100 KB) when polled every second. */
export const DEFAULT_LIST_LIMIT = 500
const MAX_LIMIT = 100_000

export interface LiveViewOptions {
  /** Closes kept for the view (a ring buffer), newest first; 0 keeps none. Default 100. */
  recentCloses?: number
  /** Live connections listed at most, oldest first (the rest are counted). Default 500. */
  listLimit?: number
}

/** One live connection, as the view lists it. */
export interface LiveConnection {
  id: number
  state: ConnectionState
  /** Since accept, ms. */
  ageMs: number
  /** The deadline it waits on now, and ms left (0 when due and about to be cut); null when none. */
  deadline: { kind: DeadlineKind; msLeft: number } | null
  requests: number
  bytesRead: number
  bytesWritten: number
  remoteAddress: string | null
  remotePort: number | null
  /** `'1.1'`, `'2.0'`; null before the first request. */
  httpVersion: string | null
  secure: boolean
  tlsVersion: string | null
  /** WebSocket upgrades: pings sent, last RTT, …; null for anything else. */
  webSocket: WebSocketInfo | null
}

/** One recent close. */
export interface RecentClose {
  id: number
  /** Epoch ms. */
  closedAt: number
  reason: CloseReason
  stateAtClose: LiveState | null
  errorCode: string | null
  durationMs: number
  requests: number
  bytesRead: number
  bytesWritten: number
  remoteAddress: string | null
  remotePort: number | null
  httpVersion: string | null
  secure: boolean
  /** WebSocket upgrades: pings sent, last RTT, the library's close code and reason; null for anything else. */
  webSocket: WebSocketInfo | null
}

export interface LiveViewData {
  /** Epoch ms when this was generated. */
  generatedAt: number
  /** `tracker.snapshot()`: live counts by state, closes by reason since start. */
  snapshot: Snapshot
  /** Live connections, oldest first, at most `listLimit`. */
  connections: LiveConnection[]
  /** True when more connections are live than listed (`snapshot.total` has them all). */
  truncated: boolean
  /** The last closes seen while the view existed, newest first. */
  recentCloses: RecentClose[]
  /** `recentCloses` counted by reason. */
  recentClosesByReason: Partial<Record<CloseReason, number>>
}

const OPTION_NAMES = [
  'recentCloses',
  'listLimit',
] as const satisfies readonly (keyof LiveViewOptions)[]

/**
 * An operator's view of a tracker's live connections: `json()` for an
 * endpoint, `html(basePath)` for a page polling `<basePath>/json`. Keeps the
 * last closes in a ring buffer fed by the tracker's 'close' event while the
 * view exists; `close()` stops that. It exposes remote addresses and traffic:
 * serve it only behind authentication.
 */
export class LiveView {
  readonly #tracker: ConnectionTracker
  readonly #listLimit: number
  readonly #ring: (RecentClose | undefined)[]
  /** Next slot to write. */
  #head = 0
  #closed = false
  readonly #onClose = (rec: ConnectionRecord): void => {
    const ring = this.#ring
    if (ring.length === 0) return
    ring[this.#head] = recentClose(rec)
    this.#head = (this.#head + 1) % ring.length
  }

  constructor(tracker: ConnectionTracker, options: LiveViewOptions = {}) {
    const resolved = resolveLiveViewOptions(options)
    this.#tracker = tracker
    this.#listLimit = resolved.listLimit
    this.#ring = new Array<RecentClose | undefined>(resolved.recentCloses).fill(undefined)
    tracker.on('close', this.#onClose)
  }

  /** The snapshot, the live connections and the recent closes. */
  json(): LiveViewData {
    const now = Date.now()
    const connections: LiveConnection[] = []
    let truncated = false
    for (const rec of this.#tracker.connections()) {
      if (connections.length >= this.#listLimit) {
        truncated = true
        break
      }
      connections.push(liveConnection(rec, now))
    }
    const recent: RecentClose[] = []
    const byReason: Partial<Record<CloseReason, number>> = {}
    const ring = this.#ring
    for (let i = 1; i <= ring.length; i++) {
      const entry = ring[(this.#head - i + ring.length) % ring.length]
      if (entry === undefined) break
      recent.push(entry)
      byReason[entry.reason] = (byReason[entry.reason] ?? 0) + 1
    }
    return {
      generatedAt: now,
      snapshot: this.#tracker.snapshot(),
      connections,
      truncated,
      recentCloses: recent,
      recentClosesByReason: byReason,
    }
  }

  /** A self-contained page (no external assets) that polls `<basePath>/json` every second. */
  html(basePath: string): string {
    return renderPage(basePath)
  }

  /**
   * Response headers for `html()` or `json()`: no caching, no framing, no
   * sniffing, and for the page a Content-Security-Policy that allows only its
   * own inline script and style and fetches to its own origin.
   */
  headers(kind: 'html' | 'json'): Record<string, string> {
    return kind === 'html' ? HTML_HEADERS : JSON_HEADERS
  }

  /** Stops recording closes; the view keeps answering with what it has. Idempotent. */
  close(): void {
    if (this.#closed) return
    this.#closed = true
    this.#tracker.off('close', this.#onClose)
  }
}

/** `new LiveView(tracker, options)`. */
export function liveView(tracker: ConnectionTracker, options?: LiveViewOptions): LiveView {
  return new LiveView(tracker, options)
}

/** Validates live-view options; `where` names them in errors (`liveView`, a plugin option). */
export function resolveLiveViewOptions(
  options: unknown,
  where = 'liveView',
  extra: readonly string[] = [],
): Required<LiveViewOptions> {
  assertPlainObject(where, options, 'an object { recentCloses?, listLimit? }')
  rejectUnknown(options, [...extra, ...OPTION_NAMES], `${where} option`)
  const { recentCloses, listLimit } = options as LiveViewOptions
  return {
    recentCloses: limit(`${where}.recentCloses`, recentCloses, DEFAULT_RECENT_CLOSES, 0),
    listLimit: limit(`${where}.listLimit`, listLimit, DEFAULT_LIST_LIMIT, 1),
  }
}

function limit(name: string, value: unknown, fallback: number, min: number): number {
  if (value === undefined) return fallback
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > MAX_LIMIT) {
    throw new InvalidOptionError(name, value, `a whole number from ${min} to ${MAX_LIMIT}`)
  }
  return value
}

function liveConnection(rec: ConnectionRecord, now: number): LiveConnection {
  const deadline = rec.deadline
  return {
    id: rec.id,
    state: rec.state,
    ageMs: Math.max(0, Math.round(now - rec.openedAt)),
    deadline:
      deadline === null
        ? null
        : { kind: deadline.kind, msLeft: Math.max(0, Math.round(deadline.at - now)) },
    requests: rec.requests,
    bytesRead: rec.bytesRead,
    bytesWritten: rec.bytesWritten,
    remoteAddress: rec.remoteAddress ?? null,
    remotePort: rec.remotePort ?? null,
    httpVersion: rec.httpVersion,
    secure: rec.secure,
    tlsVersion: rec.tls?.protocol ?? null,
    webSocket: rec.webSocket,
  }
}

function recentClose(rec: ConnectionRecord): RecentClose {
  return {
    id: rec.id,
    closedAt: Math.round(rec.closedAt ?? Date.now()),
    reason: rec.closeReason ?? 'error',
    stateAtClose: rec.stateAtClose,
    errorCode: rec.errorCode,
    durationMs: Math.round(rec.duration ?? 0),
    requests: rec.requests,
    bytesRead: rec.bytesRead,
    bytesWritten: rec.bytesWritten,
    remoteAddress: rec.remoteAddress ?? null,
    remotePort: rec.remotePort ?? null,
    httpVersion: rec.httpVersion,
    secure: rec.secure,
    webSocket: rec.webSocket,
  }
}

const JSON_HEADERS: Record<string, string> = Object.freeze({
  'content-type': 'application/json; charset=utf-8',
  'cache-control': 'no-store',
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'no-referrer',
}) as Record<string, string>
