import type { IncomingMessage, ServerResponse } from 'node:http'
import type { Http2Session, ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import type { ServerSetting } from '../options/adopt.js'
import type { ResolvedOptions } from '../options/options.js'
import type { ConnectionBinding, ConnectionRecord, StreamGuard, TlsInfo } from '../record/record.js'
import type { CloseReason } from '../vocab/close-reasons.js'

/**
 * What a binding tells the engine: the narrow interface the engine implements and the
 * bindings call (HTTP/1 in http1.ts, HTTP/2 in http2.ts), so no binding imports the engine
 * (as undici's client-h1/client-h2 get a small context and never import the client). One
 * method per Node event that moves a connection; `last` says who ends the connection after a
 * response (`'client'` asked for it, the `'server'` did), null when nobody does.
 */
export interface BindingSink {
  /** The options in force (resolved once; adopted from the first server at attach). */
  readonly options: ResolvedOptions
  /**
   * The engine runs on Node's monotonic clock, the one Node's connections list keeps its
   * message starts on (false with a clock of the application's: tests).
   */
  readonly nodeClock: boolean
  /** Before a server's timers are aligned: its own settings become the defaults. */
  adopt(settings: readonly ServerSetting[]): void
  /** A connection was accepted. */
  open(rawSocket: Socket, secure: boolean, binding: ConnectionBinding): ConnectionRecord
  /** The TLS handshake completed. */
  established(rec: ConnectionRecord, httpSocket: Socket, tls: TlsInfo): void
  /** HTTP/1: a request's first byte arrived and its head is still arriving (http1.ts, `kOnExecute`). */
  requestBegin(rec: ConnectionRecord): void
  /** HTTP/1: a connection's parser could not be hooked: idle connections are polled for bytes. */
  unhooked(): void
  /**
   * HTTP/1: a request head was parsed. True when the engine wants `responseEnd` for it; false
   * when it finds the end itself (a keep-alive request settled by the sweep, see
   * `ServerBinding.finishedResponse`) or ignores the request.
   */
  requestHead(rec: ConnectionRecord, req: IncomingMessage, res: ServerResponse): boolean
  /** HTTP/1: a response finished while its request body is still arriving. */
  responseSent(rec: ConnectionRecord, last: 'client' | 'server' | null): void
  /** HTTP/1: a request is done (response finished, body read). */
  responseEnd(rec: ConnectionRecord, last: 'client' | 'server' | null): void
  /** The connection left HTTP (WebSocket, CONNECT); a reason when the upgrade is refused. */
  upgraded(rec: ConnectionRecord, req?: IncomingMessage): CloseReason | null
  /** The connection is about to end: read its two ends now if a close listener wants them. */
  keepEnds(rec: ConnectionRecord): void
  /** The raw socket closed. */
  closed(rec: ConnectionRecord): void
  /** HTTP/2: the session started (TLS facts when it runs over TLS). */
  sessionStarted(
    rec: ConnectionRecord,
    session: Http2Session,
    httpSocket: Socket,
    tls: TlsInfo | null,
  ): void
  /** HTTP/2: a stream opened; its guard, or null when the connection is gone. */
  streamOpened(rec: ConnectionRecord, stream: ServerHttp2Stream): StreamGuard | null
  /** HTTP/2: a stream closed. */
  streamClosed(rec: ConnectionRecord, guard: StreamGuard): void
  /** HTTP/2: our PING was acknowledged after `rtt` ms. */
  sessionPingAcked(rec: ConnectionRecord, rtt: number): void
}

/** A binding as the engine holds it: the connection-level calls, plus the server's own. */
export interface ServerBinding extends ConnectionBinding {
  /** Where this server's events go. */
  readonly sink: BindingSink
  /** A drain is closing: idle connections are the drain's (see `closeIdleConnectionsDuringDrain`). */
  drainStarted(): void
  /** The drain is over: `closeIdleConnections` is Node's again. */
  drainEnded(): void
  /**
   * HTTP/1, Node's connections list is read and the engine's clock is Node's: a head after a
   * connection's first is seen by `sweepHeads`, not by a call on every read (http1.ts).
   */
  readonly headsListed: boolean
  /**
   * HTTP/1, once a sweep (Node's connections list): calls `begun` with each connection idle
   * after a response whose next head has begun, then `expired` with each whose current head
   * has been arriving for `headersTimeout` ms or more (none when it is 0).
   */
  sweepHeads(
    headersTimeout: number,
    begun: (rec: ConnectionRecord) => void,
    expired: (rec: ConnectionRecord) => void,
  ): void
  /**
   * HTTP/1: whether `res` has finished, and if so who ends the connection after it
   * (undefined: not finished).
   */
  finishedResponse(res: ServerResponse): 'client' | 'server' | null | undefined
  /** HTTP/1: `responseEnd` for `res` when it finishes (a request the engine was to find ended). */
  reportEnd(res: ServerResponse): void
  /** Removes every listener added to the server and restores its timers. */
  detach(): void
}

/** The sink of a record's server: every binding this module's bindings made is a `ServerBinding`. */
export function sinkOf(rec: ConnectionRecord): BindingSink | undefined {
  return (rec.binding as ServerBinding | null)?.sink
}
