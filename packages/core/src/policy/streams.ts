import type { ServerHttp2Stream } from 'node:http2'
import type { ResolvedOptions, ResolvedRate } from '../options/options.js'
import { acceptedBytes, responseBlocked } from '../record/progress.js'
import { type ConnectionRecord, SessionStreams, StreamGuard } from '../record/record.js'
import { earliest, isDue, NEVER } from '../time/deadline-queue.js'
import type { CloseReason } from '../vocab/close-reasons.js'
import { NO_H2_STREAM_HANDLE } from '../vocab/warnings.js'
import {
  checkRateWindows,
  type RateOwner,
  type RateProgress,
  type RateWindows,
  rateCheckAt,
  scheduleRateCheck,
  setBodyRate,
  setResponseRate,
  startRates,
} from './rates.js'

/**
 * Per-stream limits of an HTTP/2 session: `requestTimeout` and the two data
 * rates, for each open stream on its own (see docs/ARCHITECTURE.md, "HTTP/2
 * streams"). The sweeper still holds one heap entry per connection: its
 * `SessionStreams.dueAt` is the earliest due time over its streams, and a
 * stream that fails is reset (RST_STREAM) while its siblings go on.
 *
 * Progress is read from what Node already keeps per stream, never from a
 * per-chunk listener (measured on Node 20, 22 and 24, h2c and TLS):
 * - body: the stream's StreamBase handle counts every DATA byte it hands to
 *   JavaScript (`bytesRead`), whether or not the application reads;
 * - body not read by the application: Node stops acknowledging the bytes, so
 *   the client's stream window closes (`stream.state.localWindowSize` 0) or the
 *   readable buffer is full. A client with no window is not slow;
 * - response: the handle's `bytesWritten` counts what the application wrote,
 *   the stream's `bufferSize` what Node has not yet handed to the socket. That
 *   moves only when a whole write completes: a single 1 MB `end(buffer)` shows
 *   no progress until its last byte leaves, however fast the client reads. So
 *   the session's progress on the wire (bytes the kernel accepted) is shared
 *   out too: each waiting stream is credited its own visible progress plus an
 *   equal share of the rest. The credits of a session add up to what its
 *   client actually took, so holding k streams open costs a client k times the
 *   rate, as k HTTP/1 connections would.
 */

export { SessionStreams, StreamGuard }

/** The close reasons a single stream is reset with. */
export const STREAM_CUT_REASONS = [
  'request_timeout',
  'min_request_body_data_rate',
  'min_response_data_rate',
] as const
export type StreamCutReason = (typeof STREAM_CUT_REASONS)[number]

/** The counters Node's StreamBase handle of an Http2Stream keeps. */
type StreamHandle = { bytesRead?: number; bytesWritten?: number } | undefined
type Readable = { _readableState?: { ended?: boolean } }

/** Node keeps a stream's handle under a private symbol; found by name on the first stream. */
let kHandle: symbol | null | undefined

function handleOf(stream: ServerHttp2Stream): StreamHandle {
  if (kHandle === undefined) {
    kHandle = Object.getOwnPropertySymbols(stream).find((s) => s.description === 'kHandle') ?? null
    if (kHandle === null) {
      NO_H2_STREAM_HANDLE.emit()
    }
  }
  return kHandle === null ? undefined : (stream as unknown as Record<symbol, StreamHandle>)[kHandle]
}

/** The due time of a record's stream checks. */
export function streamsDueAt(rec: ConnectionRecord): number {
  return rec.streams === null ? NEVER : rec.streams.dueAt
}

/** The stream's own response progress: bytes the application wrote that Node has handed on. */
function ownResponseBytes(g: StreamGuard): number {
  const stream = g.stream
  const h = handleOf(stream)
  if (h === undefined) return 0
  // bufferSize is Node's queue (writes not yet completed) plus the Writable's buffer.
  return (h.bytesWritten ?? 0) + stream.writableLength - stream.bufferSize
}

export const streamProgress: RateProgress<StreamGuard> = {
  bodyDone: (g) =>
    g.stream.destroyed || (g.stream as unknown as Readable)._readableState?.ended === true,
  bodyPaused: (g) => {
    const stream = g.stream
    return (
      stream.readableLength >= stream.readableHighWaterMark ||
      // Node 22+ buffers up to 64 KiB, as much as the initial window: the window closes first.
      stream.state.localWindowSize === 0
    )
  },
  bodyBytes: (g) => handleOf(g.stream)?.bytesRead ?? 0,
  responseWaiting: (g) => !g.stream.destroyed && g.stream.bufferSize > 0,
  responseBytes: (g) => g.responseCredit,
}

/** Starts guarding a stream that just opened; returns its guard, already counted in the session's due time. */
export function openStream(
  rec: ConnectionRecord,
  stream: ServerHttp2Stream,
  o: ResolvedOptions,
  now: number,
): StreamGuard {
  const g = new StreamGuard(stream, rec, now)
  // An adopted Node/Fastify requestTimeout ('received') is HTTP/1's: Node never applied it to streams.
  if (o.requestTimeout > 0 && o.requestTimeoutUntil === 'response')
    g.requestDeadlineAt = now + o.requestTimeout
  startRates(g, streamProgress, !stream.endAfterHeaders, o.minBodyRate, o.minResponseRate, now)
  let streams = rec.streams
  if (streams === null) {
    streams = new SessionStreams(rec.rawSocket === null ? 0 : acceptedBytes(rec.rawSocket))
    rec.streams = streams
  }
  streams.guards.add(g)
  noteDue(streams, g)
  return g
}

/** Applies a handler's or a route's overrides to one stream. */
export function overrideStream(
  g: StreamGuard,
  requestTimeout: number | undefined,
  bodyRate: ResolvedRate | undefined,
  responseRate: ResolvedRate | undefined,
  now: number,
): void {
  if (requestTimeout !== undefined) {
    g.requestDeadlineAt = requestTimeout === 0 ? NEVER : g.openedAtClock + requestTimeout
  }
  if (bodyRate !== undefined) setBodyRate(g, streamProgress, bodyRate, now)
  if (responseRate !== undefined) setResponseRate(g, responseRate)
  scheduleRateCheck(g, now)
  // A later due time leaves the session's earlier one stale: that check only finds nothing due.
  if (g.rec.streams !== null) noteDue(g.rec.streams, g)
}

function noteDue(streams: SessionStreams, g: StreamGuard): void {
  streams.dueAt = earliest(streams.dueAt, guardDueAt(g))
}

/** A stream's earliest due time: its request deadline or its next rate check. */
function guardDueAt(g: StreamGuard): number {
  return earliest(g.requestDeadlineAt, rateCheckAt(g))
}

/**
 * Checks every stream of `rec` due at `now`: each that fails is taken out of
 * the session's set and handed to `cut`. Returns a reason to cut the whole
 * session instead: a response rate failed while the connection itself is not
 * taking bytes (the client reads nothing at all, so a RST_STREAM could not
 * reach it either).
 */
export function checkStreams(
  rec: ConnectionRecord,
  now: number,
  pausedRecheckMs: number,
  cut: (g: StreamGuard, reason: StreamCutReason) => void,
): CloseReason | null {
  const streams = rec.streams
  if (streams === null) return null
  streams.dueAt = NEVER
  if (rec.rawSocket === null) return null
  tickResponses(streams, rec.rawSocket)
  let due = NEVER
  for (const g of streams.guards) {
    let reason: StreamCutReason | null = null
    if (isDue(g.requestDeadlineAt, now)) reason = 'request_timeout'
    else if (isDue(rateCheckAt(g), now)) {
      reason = checkRateWindows(g, streamProgress, now, pausedRecheckMs) as StreamCutReason | null
    }
    if (reason === 'min_response_data_rate' && responseBlocked(rec.rawSocket)) return reason
    if (reason !== null) {
      streams.guards.delete(g)
      cut(g, reason)
      continue
    }
    due = earliest(due, guardDueAt(g))
  }
  streams.dueAt = due
  return null
}

/**
 * Credits the response progress since the last tick to the streams whose
 * response waits for the client: each its own, and an equal share of what
 * the session sent beyond that (a write still in progress, frames).
 */
function tickResponses(
  streams: SessionStreams,
  raw: NonNullable<ConnectionRecord['rawSocket']>,
): void {
  const accepted = acceptedBytes(raw)
  const sent = accepted - streams.acceptedAtTick
  streams.acceptedAtTick = accepted
  let waiting = 0
  let own = 0
  for (const g of streams.guards) {
    const bytes = ownResponseBytes(g)
    const delta = bytes - g.ownAtTick
    g.ownAtTick = bytes
    if (!responseWindowOpen(g)) continue
    g.responseCredit += delta
    own += delta
    waiting++
  }
  if (waiting === 0 || sent <= own) return
  const share = (sent - own) / waiting
  for (const g of streams.guards) if (responseWindowOpen(g)) g.responseCredit += share
}

const responseWindowOpen = (g: StreamGuard): boolean => (g.rates?.responseWindowAt ?? -1) >= 0

/** The stream closed: it no longer counts. */
export function closeStream(rec: ConnectionRecord, g: StreamGuard): void {
  rec.streams?.guards.delete(g)
}
