import type { ClientHttp2Session } from 'node:http2'
import type { Socket } from 'node:net'
import { WARNINGS } from '@connguard/core/internal'
import type { ClientConnectionRecord } from './record.js'

/**
 * HTTP/2 PING liveness, the client's half of Go's http2 `ReadIdleTimeout` +
 * `PingTimeout`: read silence is judged from the socket's `bytesRead`, sampled
 * every sweep, so a PING goes out between readIdleTimeout and readIdleTimeout
 * + one sweep after the last byte read, and only its ACK (not other frames)
 * clears it. Node's `session.ping()` has no timeout of its own.
 */

export type PingStep = 'send' | 'timeout' | null

/** What is due for `rec` at `now`: send a PING, give up on the one in flight, or nothing. */
export function pingStep(
  rec: ClientConnectionRecord,
  socket: Socket,
  readIdleTimeout: number,
  pingTimeout: number,
  now: number,
): PingStep {
  const bytes = socket.bytesRead
  if (bytes !== rec.lastReadBytes) {
    rec.lastReadBytes = bytes
    rec.lastReadAt = now
  }
  if (rec.pingSentAt >= 0) {
    return pingTimeout > 0 && now - rec.pingSentAt >= pingTimeout ? 'timeout' : null
  }
  if (now - rec.lastReadAt < readIdleTimeout) return null
  rec.pingSentAt = now
  rec.pingSilence = now - rec.lastReadAt
  rec.pingsSent++
  return 'send'
}

/** The ACK came back after `rtt` ms: silence counts afresh from `now`. */
export function pingAcked(rec: ClientConnectionRecord, rtt: number, now: number): void {
  rec.pingRtt = rtt
  rec.pingSentAt = -1
  rec.lastReadBytes = rec.socket?.bytesRead ?? rec.lastReadBytes
  rec.lastReadAt = now
}

/**
 * Reaching the HTTP/2 session undici runs over a connection. undici 7 creates
 * it itself (`http2.connect(url, { createConnection: () => socket })` in
 * lib/dispatcher/client-h2.js) and exposes it nowhere public, but it stores it
 * on the socket our connector handed over, under its `kHTTP2Session` symbol
 * (`Symbol('http2Session')`, lib/core/symbols.js), synchronously inside the
 * connector's callback. The symbol is found once by its description and then
 * cached; the value is checked to be a session before use.
 */
let kHTTP2Session: symbol | null = null
let warned = false

export function sessionOf(socket: Socket): ClientHttp2Session | null {
  if (kHTTP2Session === null) {
    kHTTP2Session =
      Object.getOwnPropertySymbols(socket).find((s) => s.description === 'http2Session') ?? null
  }
  const session =
    kHTTP2Session === null
      ? undefined
      : (socket as unknown as Record<symbol, unknown>)[kHTTP2Session]
  if (isSession(session)) return session
  if (!warned) {
    warned = true
    WARNINGS.NO_H2_SESSION.emit()
  }
  return null
}

function isSession(value: unknown): value is ClientHttp2Session {
  return (
    typeof value === 'object' &&
    value !== null &&
    typeof (value as ClientHttp2Session).ping === 'function' &&
    typeof (value as ClientHttp2Session).destroy === 'function'
  )
}

/** Sends one PING; `onAck(rtt)` runs when its ACK arrives. False when it could not be sent. */
export function sendPing(session: ClientHttp2Session, onAck: (rtt: number) => void): boolean {
  if (session.destroyed || session.closed) return false
  try {
    return session.ping((err, duration) => {
      if (err == null) onAck(duration)
    })
  } catch {
    // Too many PINGs outstanding (undici's own interval PINGs count too): the timeout decides.
    return true
  }
}
