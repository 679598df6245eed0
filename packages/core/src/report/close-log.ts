import type { ConnectionTracker } from '../engine/tracker.js'
import { assertPlainObject, rejectUnknown } from '../options/validate.js'
import type { ConnectionRecord } from '../record/record.js'
import type { WebSocketInfo } from '../record/websocket-facts.js'
import { CLOSE_REASONS, type CloseReason } from '../vocab/close-reasons.js'
import { InvalidOptionError } from '../vocab/errors.js'
import type { LiveState } from '../vocab/states.js'
import { BAD_LOG_LEVEL } from '../vocab/warnings.js'

/** pino's level names; `silent` logs nothing. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const
export type LogLevel = (typeof LOG_LEVELS)[number]

/** What `logCloses` needs of a logger: pino's `logger[level](obj, msg)`; pino, Fastify's `app.log` and bunyan fit. */
export type CloseLogger = {
  [L in Exclude<LogLevel, 'silent'>]?: (obj: object, msg?: string) => void
}

export interface CloseLogOptions {
  /** The level per close reason, over the defaults (`'silent'` drops a reason's lines). */
  levels?: Partial<Record<CloseReason, LogLevel>>
  /**
   * Picks the level for one record, after `levels`: return a level, or
   * undefined to keep the one `levels` and the defaults chose (passed in).
   */
  level?: (record: ConnectionRecord, level: LogLevel) => LogLevel | undefined
}

/**
 * One closed connection, as logged: flat fields, durations in whole ms (HAProxy
 * style: Th handshake, Tf wait for the first request, Ti idle, Ta active, Tt total).
 */
export interface CloseLogLine {
  connId: number
  remoteAddress: string | null
  remotePort: number | null
  localPort: number | null
  /** `'1.1'`, `'1.0'`, `'2.0'`; null when no request came. */
  httpVersion: string | null
  /** `'TLSv1.3'`, …; null for plain connections and unfinished handshakes. */
  tlsVersion: string | null
  /** ALPN protocol (`'h2'`, `'http/1.1'`); null when none. */
  alpn: string | null
  reason: CloseReason
  stateAtClose: LiveState | null
  /** `ECONNRESET`, `HPE_INVALID_METHOD`, …; null when no error was behind the close. */
  errorCode: string | null
  /** Th: accept → TLS established; null for plain connections and unfinished handshakes. */
  handshakeMs: number | null
  /** Tf: established → first byte of the first request; null when none came. */
  firstRequestMs: number | null
  /** Ti: total time idle (between requests; before the first one too, under TLS). */
  idleMs: number
  /** Ta: total time with a request in progress. */
  activeMs: number
  /** Time handed to a WebSocket/CONNECT handler. */
  upgradedMs: number
  /** Tt: accept → close. */
  durationMs: number
  requests: number
  /** Wire bytes (ciphertext under TLS, handshake included). */
  bytesRead: number
  bytesWritten: number
  /** HTTP/2: most streams open at once; 0 for HTTP/1. */
  peakConcurrentStreams: number
  /** HTTP/2: streams the guard reset while the session went on, by reason; null when none. */
  streamCuts: Partial<Record<CloseReason, number>> | null
  /** WebSocket: upgrade time, pings sent, last RTT, the library's close code and reason; null for anything else. */
  webSocket: WebSocketInfo | null
}

/**
 * Default level per reason. Cuts the guard decided (deadlines, rates, caps,
 * rotation, shutdown) are what an operator tunes: `info`. A peer hanging up is
 * ordinary traffic, one line per connection: `debug`. A protocol or socket
 * error is worth a look: `warn`.
 */
export const DEFAULT_CLOSE_LOG_LEVELS: Readonly<Record<CloseReason, LogLevel>> = Object.freeze({
  tls_handshake_timeout: 'info',
  tls_handshake_failed: 'warn',
  request_headers_timeout: 'info',
  keep_alive_timeout: 'info',
  min_request_body_data_rate: 'info',
  min_response_data_rate: 'info',
  request_timeout: 'info',
  ping_timeout: 'info',
  upgrade_idle_timeout: 'info',
  connect_timeout: 'info',
  max_connection_age: 'info',
  max_requests_per_connection: 'info',
  max_concurrent_connections_exceeded: 'info',
  max_connections_per_ip_exceeded: 'info',
  max_concurrent_handshakes_exceeded: 'info',
  max_concurrent_upgraded_connections_exceeded: 'info',
  app_shutdown: 'info',
  app_shutdown_timeout: 'info',
  shed_under_pressure: 'info',
  invalid_request: 'warn',
  client_closed: 'debug',
  connection_reset: 'debug',
  server_closed: 'info',
  error: 'warn',
})

const OPTION_NAMES = ['levels', 'level'] as const satisfies readonly (keyof CloseLogOptions)[]

let warnedBadLevel = false

/**
 * Writes one structured line per closed connection of `tracker` to `logger`
 * (`logger[level](line, msg)`, as pino), at a level chosen by close reason.
 * Options are validated here (InvalidOptionError / UnknownOptionError).
 * Returns a function that stops logging; idempotent.
 */
export function logCloses(
  tracker: ConnectionTracker,
  logger: CloseLogger,
  options: CloseLogOptions = {},
): () => void {
  const { levels, pick } = resolveCloseLogOptions(options, 'closeLog')
  assertLogger(logger, levels)
  const onClose = (rec: ConnectionRecord): void => {
    const reason = rec.closeReason ?? 'error'
    let level = levels[reason]
    if (pick !== null) {
      const chosen = pick(rec, level)
      if (chosen !== undefined) level = checkedLevel(chosen, level)
    }
    if (level === 'silent') return
    const write = logger[level]
    if (typeof write !== 'function') return
    const line = closeLogLine(rec)
    write.call(logger, line, closeLogMessage(line))
  }
  tracker.on('close', onClose)
  let stopped = false
  return () => {
    if (stopped) return
    stopped = true
    tracker.off('close', onClose)
  }
}

/** The levels per reason and the picker, validated; for adapters that validate at registration. */
export function resolveCloseLogOptions(
  options: unknown,
  where = 'closeLog',
): {
  levels: Readonly<Record<CloseReason, LogLevel>>
  pick: NonNullable<CloseLogOptions['level']> | null
} {
  assertPlainObject(where, options, 'an object { levels?, level? }')
  rejectUnknown(options, OPTION_NAMES, `${where} option`)
  const { levels: given, level: pick } = options as CloseLogOptions
  const levels: Record<CloseReason, LogLevel> = { ...DEFAULT_CLOSE_LOG_LEVELS }
  if (given !== undefined) {
    assertPlainObject(`${where}.levels`, given, 'an object mapping close reasons to log levels')
    rejectUnknown(given, CLOSE_REASONS, `${where}.levels close reason`)
    for (const [reason, level] of Object.entries(given)) {
      if (!isLevel(level)) {
        throw new InvalidOptionError(
          `${where}.levels.${reason}`,
          level,
          `one of ${LOG_LEVELS.join(', ')}`,
        )
      }
      levels[reason as CloseReason] = level
    }
  }
  if (pick !== undefined && typeof pick !== 'function') {
    throw new InvalidOptionError(
      `${where}.level`,
      pick,
      'a function (record, level) => level | undefined',
    )
  }
  return { levels: Object.freeze(levels), pick: pick ?? null }
}

/** The structured line for a closed record. */
export function closeLogLine(rec: ConnectionRecord): CloseLogLine {
  const d = rec.stateDurations
  const tls = rec.tls
  return {
    connId: rec.id,
    remoteAddress: rec.remoteAddress ?? null,
    remotePort: rec.remotePort ?? null,
    localPort: rec.localPort ?? null,
    httpVersion: rec.httpVersion,
    tlsVersion: tls?.protocol ?? null,
    alpn: typeof tls?.alpnProtocol === 'string' ? tls.alpnProtocol : null,
    reason: rec.closeReason ?? 'error',
    stateAtClose: rec.stateAtClose,
    errorCode: rec.errorCode,
    handshakeMs: wholeMs(rec.handshakeDuration),
    firstRequestMs: wholeMs(rec.timeToFirstRequest),
    idleMs: Math.round(d.idle),
    activeMs: Math.round(d.active),
    upgradedMs: Math.round(d.upgraded),
    durationMs: Math.round(rec.duration ?? 0),
    requests: rec.requests,
    bytesRead: rec.bytesRead,
    bytesWritten: rec.bytesWritten,
    peakConcurrentStreams: rec.peakConcurrentStreams,
    streamCuts: rec.streamCuts === null ? null : { ...rec.streamCuts },
    webSocket: rec.webSocket,
  }
}

/**
 * The human half of the line, HAProxy-like:
 * `connection 7 closed: keep_alive_timeout in idle Th=- Tf=2 Ti=1001 Ta=4 Tt=1008 req=1 in=78 out=131`
 */
export function closeLogMessage(line: CloseLogLine): string {
  const dash = (v: number | null) => (v === null ? '-' : String(v))
  return (
    `connection ${line.connId} closed: ${line.reason} in ${line.stateAtClose ?? '-'}` +
    (line.errorCode === null ? '' : ` (${line.errorCode})`) +
    ` Th=${dash(line.handshakeMs)} Tf=${dash(line.firstRequestMs)} Ti=${line.idleMs}` +
    ` Ta=${line.activeMs} Tt=${line.durationMs} req=${line.requests}` +
    ` in=${line.bytesRead} out=${line.bytesWritten}` +
    (line.webSocket === null ? '' : webSocketPart(line.webSocket))
  )
}

/** ` ws=1006 pings=3 rtt=2`: the library's close code, pings sent, the last round trip. */
function webSocketPart(ws: WebSocketInfo): string {
  return (
    ` ws=${ws.closeCode ?? '-'} pings=${ws.pingsSent}` +
    (ws.pingRtt === null ? '' : ` rtt=${ws.pingRtt}`)
  )
}

/** Whole milliseconds for the log line. */
function wholeMs(value: number | null): number | null {
  return value === null ? null : Math.round(value)
}

function isLevel(value: unknown): value is LogLevel {
  return typeof value === 'string' && (LOG_LEVELS as readonly string[]).includes(value)
}

/** A level the picker returned at close time: a bad one falls back (and warns once), never throws into the tracker. */
function checkedLevel(chosen: unknown, fallback: LogLevel): LogLevel {
  if (isLevel(chosen)) return chosen
  if (!warnedBadLevel) {
    warnedBadLevel = true
    BAD_LOG_LEVEL.emit(String(chosen), LOG_LEVELS.join(', '), fallback)
  }
  return fallback
}

function assertLogger(logger: unknown, levels: Readonly<Record<CloseReason, LogLevel>>): void {
  const used = new Set(Object.values(levels))
  used.delete('silent')
  const missing =
    logger === null || typeof logger !== 'object'
      ? ['info']
      : [...used, 'info'].filter(
          (l) => typeof (logger as Record<string, unknown>)[l] !== 'function',
        )
  if (missing.length > 0) {
    throw new InvalidOptionError(
      'logger',
      logger === null || typeof logger !== 'object' ? logger : `a logger without ${missing[0]}()`,
      `a pino-compatible logger: an object with a method per level used (${[...used].join(', ')})`,
    )
  }
}
