import { errorMonitor } from 'node:events'
import type { ClientHttp2Session, ClientHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import { InvalidOptionError, UnknownOptionError } from '@connguard/core'
import { type ClientLivenessOptions, OPTION_NAMES, resolveClientOptions } from './options.js'
import type { ClientConnectionRecord } from './record.js'
import { ClientTracker } from './tracker.js'

/**
 * The same liveness for a plain `node:http2` client session (`http2.connect()`), which
 * has no pool around it: after `readIdleTimeout` of read silence a PING, no ACK within
 * `pingTimeout` → `session.destroy(PingTimeoutError)`. Streams in flight fail with that
 * error and the session emits it as 'error' and then 'close', as for any other network
 * error; opening a new session on 'close' is the application's part, as it already is
 * for a session the server closed.
 *
 * The session's socket is reached only through its public proxy (`session.socket`),
 * which refuses `destroy()` and writes and throws once the session let go of it: the
 * record gets a small view of it that reads bytes and addresses while they are there,
 * keeps the last values after, and destroys through the session.
 */

/** Reads through `session.socket`, never throwing: undefined once the session has let it go. */
function read(session: ClientHttp2Session, key: string): unknown {
  try {
    const value = (session.socket as unknown as Record<string, unknown> | undefined)?.[key]
    return typeof value === 'function' ? value.call(session.socket) : value
  } catch {
    return undefined
  }
}

/** What the tracker reads of a socket, served by the session (see above). */
function socketView(session: ClientHttp2Session): Socket {
  let bytesRead = 0
  let bytesWritten = 0
  const view = {
    get bytesRead(): number {
      const n = read(session, 'bytesRead')
      if (typeof n === 'number') bytesRead = n
      return bytesRead
    },
    get bytesWritten(): number {
      const n = read(session, 'bytesWritten')
      if (typeof n === 'number') bytesWritten = n
      return bytesWritten
    },
    get destroyed(): boolean {
      return session.destroyed
    },
    get localAddress() {
      return read(session, 'localAddress')
    },
    get localPort() {
      return read(session, 'localPort')
    },
    get remoteAddress() {
      return read(session, 'remoteAddress')
    },
    get remotePort() {
      return read(session, 'remotePort')
    },
    get alpnProtocol() {
      return read(session, 'alpnProtocol')
    },
    get servername() {
      return read(session, 'servername')
    },
    getProtocol: () => read(session, 'getProtocol') ?? null,
    getCipher: () => read(session, 'getCipher'),
    isSessionReused: () => read(session, 'isSessionReused') === true,
    /** The PING check's cut: through the session (the proxy refuses `destroy`). */
    destroy(err?: Error): void {
      session.destroy(err)
    },
  }
  return view as unknown as Socket
}

/** Reads the view's byte counts now, so it keeps them once the session lets go of its socket. */
function sampleBytes(view: Socket): void {
  void view.bytesRead
  void view.bytesWritten
}

/**
 * Tracks `session` in `tracker` and watches it for read silence. `authority` is what was
 * given to `http2.connect()` (its origin names the record). Returns the record.
 */
export function guardSession(
  tracker: ClientTracker,
  session: ClientHttp2Session,
  authority: string | URL,
): ClientConnectionRecord {
  if (
    typeof session !== 'object' ||
    session === null ||
    typeof session.request !== 'function' ||
    typeof session.ping !== 'function'
  ) {
    throw new InvalidOptionError('session', session, 'a ClientHttp2Session from http2.connect()')
  }
  if (session.destroyed || session.closed) {
    throw new InvalidOptionError('session', 'a closed session', 'a session that is not closed')
  }
  let origin: URL
  try {
    origin = new URL(String(authority))
  } catch {
    throw new InvalidOptionError('authority', authority, 'the URL given to http2.connect()')
  }
  const secure = origin.protocol === 'https:'
  const rec = tracker._connecting(origin.origin, secure)
  if (rec.owner === null) return rec // the tracker is closed
  const socket = socketView(session)
  rec.socket = socket

  // Client streams have no session event: the session's own request() is wrapped, on this
  // instance only, to count them. Streams opened while the session connects wait in Node
  // until it is ready; they count from then, as a dispatcher's requests do.
  const queued = new Set<ClientHttp2Stream>()
  const track = (stream: ClientHttp2Stream): void => {
    tracker._requestStart(rec)
    stream.once('close', () => {
      sampleBytes(socket)
      tracker._requestEnd(rec, stream.rstCode === 0 ? null : new Error('stream reset'))
    })
  }
  const request = session.request
  session.request = function guardedRequest(
    this: ClientHttp2Session,
    ...args: Parameters<ClientHttp2Session['request']>
  ): ClientHttp2Stream {
    const stream = request.apply(this, args)
    if (rec.establishedAtClock >= 0) track(stream)
    else {
      queued.add(stream)
      stream.once('close', () => queued.delete(stream))
    }
    return stream
  } as ClientHttp2Session['request']

  const established = (): void => {
    tracker._established(rec, socket)
    // h2c has no ALPN: a session is HTTP/2 whatever the socket says.
    rec.httpVersion = '2'
    tracker._watch(rec, session)
    for (const stream of queued) track(stream)
    queued.clear()
  }
  if (session.connecting) {
    // TCP connected (TLS: the handshake starts), then the session is ready.
    session.socket.once('connect', () => tracker._tcpConnected(rec))
    session.once('connect', established)
  } else {
    established()
  }
  // The server's GOAWAY (also watched by _watch, but only while PINGs are on).
  session.once('goaway', () => {
    rec.goaway = true
  })
  // A FIN after the application's own close() is the answer to it, not the server's end.
  session.socket.once('end', () => {
    if (!session.closed) tracker._peerEnded(rec)
  })
  // errorMonitor sees the error without handling it: a session with no 'error' listener
  // of the application's still throws, as it would without connguard.
  session.on(errorMonitor, (err: Error) => tracker._socketError(rec, err))
  // The last byte counts, read before the session lets go of its socket.
  session.socket.once('close', () => sampleBytes(socket))
  session.once('close', () => {
    if (rec.connectedAtClock < 0 && rec.error === null) {
      rec.error = new Error('the session closed before it connected')
    }
    tracker._closed(rec)
  })

  return rec
}

/**
 * A client tracker on its own, for `node:http2` sessions: `tracker.guardSession(session,
 * authority)` gives each the PING liveness, records and events of a dispatcher's
 * connections. Takes connguard's liveness options only (`readIdleTimeout`,
 * `pingTimeout`, `sweepInterval`, `clock`; `tcpKeepAlive` is not applied: the session's
 * socket is not reachable to set it). Any other name throws `UnknownOptionError`.
 */
export function createClientTracker(options?: ClientLivenessOptions): ClientTracker {
  const { liveness, agent } = resolveClientOptions(options)
  const unknown = Object.keys(agent)[0]
  if (unknown !== undefined) throw new UnknownOptionError(unknown, OPTION_NAMES)
  return new ClientTracker(liveness)
}
