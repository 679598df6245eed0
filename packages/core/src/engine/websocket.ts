import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { ResolvedWebSocket } from '../options/websocket-options.js'
import { checkPing, pingAcked, startPing } from '../policy/ping.js'
import type { ConnectionRecord } from '../record/record.js'
import {
  pingUnansweredSince,
  setWebSocketFacts,
  WebSocketFacts,
  type WebSocketInfo,
  type WebSocketLike,
  webSocketFacts,
  webSocketInfo,
} from '../record/websocket-facts.js'
import { NEVER } from '../time/deadline-queue.js'
import { UnsupportedWebSocketError } from '../vocab/errors.js'
import type { Core } from './core.js'

/**
 * WebSocket liveness (README "WebSockets"). `ws`, the library under @fastify/websocket and
 * most Express setups, leaves heartbeats to every application; a WebSocket whose peer
 * vanished (a phone asleep, a NAT that forgot the flow) stays open until TCP notices,
 * hours later. The tracker already owns the connection's raw socket and one sweeper: a
 * linked WebSocket gets a ping through its own library after `pingInterval` of read
 * silence (the raw socket's `bytesRead`, as HTTP/2's PING check), and is terminated with
 * `ping_timeout` when no pong came within `pingTimeout`. No timer per connection, and no
 * dependency on `ws`: the socket object the application already has is duck-typed.
 *
 * What a WebSocket keeps lives in a `WebSocketFacts` made at its upgrade and kept beside
 * the record (a WeakMap), so a plain HTTP connection carries no field for it.
 */

/** What a `WebSocketServer` (`ws`) offers for linking: its `'connection'` event and its clients. */
export interface WebSocketServerLike {
  on(event: 'connection', listener: (ws: WebSocketLike, req: IncomingMessage) => void): unknown
  removeListener(
    event: 'connection',
    listener: (ws: WebSocketLike, req: IncomingMessage) => void,
  ): unknown
  readonly clients?: Iterable<WebSocketLike>
}

export {
  pingUnansweredSince,
  type WebSocketFacts,
  type WebSocketInfo,
  type WebSocketLike,
  webSocketFacts,
  webSocketInfo,
}

/** `ws`'s readyState OPEN. */
const OPEN = 1
/** `ws`'s readyState CLOSING: a close frame went out, the library finishes the handshake. */
const CLOSING = 2
/** RFC 6455 §7.4.1: 1001, an endpoint "going away", such as a server going down. */
const GOING_AWAY = 1001
/** RFC 6455 §5.5: a close frame's reason is at most 123 bytes; more would be a bug, not data. */
const MAX_REASON = 123

/** A linked WebSocket → its connection's record (for its 'pong' and 'close'). */
const recordOfSocket = new WeakMap<object, ConnectionRecord>()
/** A linked WebSocket → the engine guarding its connection (for its 'pong'). */
const coreOfSocket = new WeakMap<object, Core>()

/** True for an `Upgrade: websocket` request (RFC 6455 §4.1: the token is case-insensitive). */
export function isWebSocketUpgrade(req: IncomingMessage | undefined): boolean {
  const upgrade = req?.headers?.upgrade
  return typeof upgrade === 'string' && upgrade.toLowerCase() === 'websocket'
}

/**
 * A WebSocket upgrade was handed to the application: its facts, TCP keepalive, and the
 * idle deadline while no library is linked.
 */
export function webSocketUpgraded(
  rec: ConnectionRecord,
  o: ResolvedWebSocket,
  now: number,
): WebSocketFacts {
  const f = new WebSocketFacts(now)
  setWebSocketFacts(rec, f)
  const raw = rec.rawSocket
  if (raw !== null && o.tcpKeepAlive > 0 && typeof raw.setKeepAlive === 'function') {
    raw.setKeepAlive(true, o.tcpKeepAlive)
  }
  if (o.idleTimeout > 0) {
    f.idleBytes = wireBytes(raw)
    f.idleSince = now
    f.idleCheckAt = now + idleCheckEvery(o)
  }
  return f
}

/**
 * A WebSocket upgrade over `maxUpgradedConnections`: the reason goes on the record (the
 * binding answers 503 and ends the socket) and, should the peer keep its end open, a phase
 * deadline two sweeps out destroys it. The record never leaves `active`.
 */
export function refuseUpgrade(
  t: Core,
  rec: ConnectionRecord,
  now: number,
): 'max_concurrent_upgraded_connections_exceeded' {
  const reason = 'max_concurrent_upgraded_connections_exceeded'
  rec.pendingReason ??= reason
  t.keepEnds(rec)
  rec.requestDeadlineAt = NEVER
  rec.phaseReason = null
  rec.phaseDeadlineAt = now + 2 * t.options.sweepInterval
  t.queue.schedule(rec, rec.phaseDeadlineAt)
  return reason
}

/** The earliest of a WebSocket's checks, NEVER when none (read by `reschedule`). */
export function webSocketDueAt(rec: ConnectionRecord): number {
  const f = webSocketFacts(rec)
  if (f === undefined) return NEVER
  const a = f.pingCheckAt
  const b = f.idleCheckAt
  return a < 0 ? b : b < 0 ? a : Math.min(a, b)
}

/**
 * The sweep's check of an upgraded connection: a ping to send, a pong overdue, or the idle
 * deadline. Returns the close reason when the connection is to be cut.
 */
export function checkWebSocket(
  rec: ConnectionRecord,
  o: ResolvedWebSocket,
  now: number,
): 'ping_timeout' | 'upgrade_idle_timeout' | null {
  const f = webSocketFacts(rec)
  if (f === undefined) return null
  if (f.pingCheckAt >= 0 && f.pingCheckAt <= now) {
    const socket = f.socket
    if (socket === null || socket.readyState !== OPEN) {
      // Closing: the library and the socket's close finish it.
      f.pingCheckAt = NEVER
    } else {
      const step = checkPing(rec, f, o, now)
      if (step === 'timeout') return 'ping_timeout'
      if (step === 'send') {
        f.pingsSent++
        try {
          socket.ping()
        } catch {
          // `ws` throws only while CONNECTING (excluded above); a failed send is a pong
          // that never comes, which the timeout handles.
        }
      }
    }
  }
  if (f.idleCheckAt >= 0 && f.idleCheckAt <= now) {
    if (f.socket !== null) f.idleCheckAt = NEVER
    else {
      const bytes = wireBytes(rec.rawSocket)
      if (bytes !== f.idleBytes) {
        f.idleBytes = bytes
        f.idleSince = now
      } else if (now - f.idleSince >= o.idleTimeout) return 'upgrade_idle_timeout'
      f.idleCheckAt = Math.min(now + idleCheckEvery(o), f.idleSince + o.idleTimeout)
    }
  }
  return null
}

/**
 * Links a library's WebSocket to the connection it runs on. `source`: the upgrade request
 * (`ws`'s `'connection'` passes it) or the socket; without one, `ws`'s own `_socket`.
 * Returns false when the connection is not a tracked WebSocket upgrade (a `ws` client, a
 * socket another tracker guards, a WebSocket over HTTP/2): nothing is added then.
 */
export function linkWebSocket(
  t: Core,
  ws: WebSocketLike,
  source?: IncomingMessage | Socket,
): boolean {
  if (!isWebSocketLike(ws)) {
    throw new UnsupportedWebSocketError(
      'expected a WebSocket with ping(), terminate(), readyState and on() (as ws has)',
    )
  }
  const target = source ?? (ws as { _socket?: Socket })._socket
  if (target == null || typeof target !== 'object') return false
  const rec = t.recordOf(target)
  if (rec === undefined || rec.state !== 'upgraded') return false
  const f = webSocketFacts(rec)
  if (f === undefined || f.socket !== null) return f?.socket === ws
  f.socket = ws
  f.idleCheckAt = NEVER
  recordOfSocket.set(ws, rec)
  coreOfSocket.set(ws, t)
  ws.on('pong', onPong)
  ws.on('close', onClose)
  // Linked while a drain is closing (upgraded during it, or before it but linked late): it
  // goes the way the others went.
  if (t.drainPhase === 'closing' && closeWebSocketForDrain(rec)) return true
  const o = t.options.webSocket
  if (o.pingInterval > 0) {
    startPing(rec, f, o, t.now())
    t.reschedule(rec)
  }
  return true
}

/**
 * A drain closes a linked WebSocket as a server going down should: a close frame with 1001
 * through its library, which finishes the closing handshake and ends the socket; the drain
 * waits for that close (its timeout cuts one whose peer never answers, as before). The close
 * is the drain's (`app_shutdown`). False when no library is linked, or it has no `close()`:
 * the connection is the application's to end, and the drain's timeout's otherwise.
 */
export function closeWebSocketForDrain(rec: ConnectionRecord): boolean {
  const socket = webSocketFacts(rec)?.socket
  if (socket == null || typeof socket.close !== 'function') return false
  if (socket.readyState === OPEN) {
    try {
      socket.close(GOING_AWAY, 'server shutting down')
    } catch {
      return false
    }
  } else if (socket.readyState !== CLOSING) return false
  // Like a session after its GOAWAY: closing for the drain, still open until the handshake
  // ends; a later cut (the drain's timeout) replaces the reason (cut.ts).
  rec.rotateReason ??= 'app_shutdown'
  rec.pendingReason ??= 'app_shutdown'
  return true
}

/**
 * Links every WebSocket a `WebSocketServer` accepts from now on (and those it holds now).
 * Returns a function that stops it; the tracker's `close()` stops it too.
 */
export function linkWebSocketServer(
  t: Core,
  wss: WebSocketServerLike,
  links: Set<() => void>,
): () => void {
  if (
    wss === null ||
    typeof wss !== 'object' ||
    typeof wss.on !== 'function' ||
    typeof wss.removeListener !== 'function'
  ) {
    throw new UnsupportedWebSocketError(
      'expected a WebSocketServer (ws) with on("connection") and removeListener()',
    )
  }
  const listener = (ws: WebSocketLike, req: IncomingMessage): void => {
    if (isWebSocketLike(ws)) linkWebSocket(t, ws, req)
  }
  wss.on('connection', listener)
  for (const ws of wss.clients ?? []) if (isWebSocketLike(ws)) linkWebSocket(t, ws)
  const stop = (): void => {
    links.delete(stop)
    wss.removeListener('connection', listener)
  }
  links.add(stop)
  return stop
}

/** Stops `rec`'s WebSocket checks; its linked socket, if any. */
function stopChecks(rec: ConnectionRecord): WebSocketLike | null {
  const f = webSocketFacts(rec)
  if (f === undefined) return null
  f.pingCheckAt = NEVER
  f.idleCheckAt = NEVER
  return f.socket
}

/** Ends a WebSocket the tracker cuts through its library first (`ws` then reports 1006). */
export function terminateWebSocket(rec: ConnectionRecord): void {
  const socket = stopChecks(rec)
  if (socket === null) return
  try {
    socket.terminate()
  } catch {
    // The binding's cut destroys the socket anyway.
  }
}

/** The tracker stops guarding a live connection: remove what was added to its WebSocket. */
export function releaseWebSocket(rec: ConnectionRecord): void {
  const socket = stopChecks(rec)
  if (socket === null) return
  socket.removeListener('pong', onPong)
  socket.removeListener('close', onClose)
}

/**
 * The connection closed: the library's close code and reason, if its own 'close' has not
 * come yet. Over TLS `ws` reports after the TLS socket closes, which follows the raw
 * socket's close the record ends on; by then it holds what it will report (`_closeCode`,
 * 1006 until a close frame arrives, and `_closeMessage`), so the close event and the close
 * log carry it. Read only when present and well typed.
 */
export function settleWebSocket(rec: ConnectionRecord): void {
  const f = webSocketFacts(rec)
  if (f === undefined || f.socket === null || f.closeCode !== null) return
  const s = f.socket as unknown as { _closeCode?: unknown; _closeMessage?: unknown }
  if (typeof s._closeCode === 'number') recordClose(f, s._closeCode, s._closeMessage)
}

// Listeners shared by every WebSocket (`this` is the socket): no closure per connection.
function onPong(this: WebSocketLike): void {
  const rec = recordOfSocket.get(this)
  const f = rec === undefined ? undefined : webSocketFacts(rec)
  const t = coreOfSocket.get(this)
  if (rec === undefined || f === undefined || t == null || rec.state === 'closed') return
  // A pong to the application's own ping, with none of ours in flight, proves the same:
  // its bytes count as reads at the next check.
  if (f.pingSentAt < 0) return
  const now = t.now()
  pingAcked(rec, f, t.options.webSocket, now - f.pingSentAt, now)
  t.reschedule(rec)
}

function onClose(this: WebSocketLike, code: unknown, reason: unknown): void {
  const rec = recordOfSocket.get(this)
  const f = rec === undefined ? undefined : webSocketFacts(rec)
  if (f !== undefined) recordClose(f, code, reason)
}

function recordClose(f: WebSocketFacts, code: unknown, reason: unknown): void {
  if (typeof code === 'number') f.closeCode = code
  const text =
    typeof reason === 'string' ? reason : Buffer.isBuffer(reason) ? reason.toString('utf8') : ''
  f.closeReason = text === '' ? null : text.slice(0, MAX_REASON)
}

function isWebSocketLike(ws: unknown): ws is WebSocketLike {
  if (ws === null || typeof ws !== 'object') return false
  const w = ws as Record<string, unknown>
  return (
    typeof w.ping === 'function' &&
    typeof w.terminate === 'function' &&
    typeof w.on === 'function' &&
    typeof w.removeListener === 'function' &&
    typeof w.readyState === 'number'
  )
}

function wireBytes(raw: Socket | null): number {
  return raw === null ? 0 : raw.bytesRead + (raw.bytesWritten ?? 0)
}

function idleCheckEvery(o: ResolvedWebSocket): number {
  return Math.max(o.idleTimeout / 4, o.sweepInterval)
}
