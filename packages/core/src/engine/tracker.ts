import { EventEmitter } from 'node:events'
import type { IncomingMessage } from 'node:http'
import type { Socket } from 'node:net'
import type { FrameworkSettings } from '../options/adopt.js'
import type {
  ConnectionTrackerOptions,
  OverridableRequest,
  RequestOverrides,
  ResolvedOptions,
  ResolvedRequestOverrides,
} from '../options/options.js'
import type { ConnectionRecord } from '../record/record.js'
import type { WebSocketLike } from '../record/websocket-facts.js'
import { kEngine } from '../vocab/symbols.js'
import type { DrainOptions, DrainPhase, DrainResult } from './drain.js'
import { Engine, type Snapshot } from './engine.js'
import type { ConnectionTrackerEvents } from './tracker-events.js'
import type { WebSocketServerLike } from './websocket.js'

export type { ConnectionTrackerEvents, Snapshot }

/**
 * Tracks every connection of the servers it is attached to through its
 * states, enforces the phase deadlines with one sweeper, and reports each
 * connection's record on open, transition and close.
 *
 * The public face only: every method forwards to the engine (engine.ts), which holds the
 * state and is what the server bindings report to. Events are emitted here.
 */
export class ConnectionTracker extends EventEmitter<ConnectionTrackerEvents> {
  readonly #engine: Engine

  /** Tells the engine, for good, that its events may have listeners (see `Engine.mayListen`). */
  readonly #onNewListener = (event: string | symbol): void => {
    if (event === 'transition' || event === 'close' || event === 'open')
      this.#engine.mayListen = true
    if (event === 'transition') this.#engine.transitionListened = true
  }

  constructor(options?: ConnectionTrackerOptions) {
    super()
    this.#engine = new Engine(this, options)
    ;(this as EventEmitter).on('newListener', this.#onNewListener)
    // For tools that measure the engine (the benchmarks): a cross-copy key, not enumerable,
    // not part of the type.
    Object.defineProperty(this, kEngine, { value: this.#engine })
  }

  /**
   * The options as resolved at construction, with the timeouts the application set on the
   * first server attached adopted (`options.sources` says where each value came from).
   */
  get options(): ResolvedOptions {
    return this.#engine.options
  }

  /** As EventEmitter's; the tracker's own 'newListener' listener stays (see `Engine.mayListen`). */
  override removeAllListeners(...args: Parameters<EventEmitter['removeAllListeners']>): this {
    ;(EventEmitter.prototype.removeAllListeners as (...a: unknown[]) => unknown).apply(this, args)
    const self = this as EventEmitter
    if (!self.listeners('newListener').includes(this.#onNewListener))
      self.on('newListener', this.#onNewListener)
    return this
  }

  /** `close()` was called. */
  get closed(): boolean {
    return this.#engine.stopped
  }

  /**
   * True from the moment `drain()` is called (its delay included) for good: a drained
   * server does not come back. What a readiness probe reports (see `readinessHandler`).
   */
  get draining(): boolean {
    return this.#engine.draining
  }

  /** Where the drain is (`delay`, `closing`, `done`), or null before `drain()`. */
  get drainPhase(): DrainPhase | null {
    return this.#engine.drainPhase
  }

  /**
   * Guards `server` (an `http.Server`, `https.Server` or `node:http2` server, listening or
   * not) from its next accepted connection on. Returns the tracker. `framework` is for the
   * framework adapters: which of the server's settings the framework made (Fastify's
   * `connectionTimeout`, `keepAliveTimeout`, …), so they are adopted as the application's.
   */
  attach(server: object, framework?: FrameworkSettings): this {
    this.#engine.attach(server, framework)
    return this
  }

  /**
   * Links a `ws` `WebSocketServer` (or anything with its `'connection'` event): each
   * WebSocket it accepts on a guarded server gets PING liveness through its own API (see
   * `webSocket` options). Returns a function that unlinks it; `close()` does too.
   */
  watchWebSockets(wss: WebSocketServerLike): () => void {
    return this.#engine.watchWebSockets(wss)
  }

  /**
   * Links one WebSocket (`ws`'s, or any object with `ping()`, `terminate()`, `readyState`
   * and the `'pong'` event) to its connection; `source` is its upgrade request or socket.
   * False when that connection is not a WebSocket upgrade this tracker guards.
   */
  watchWebSocket(ws: WebSocketLike, source?: IncomingMessage | Socket): boolean {
    return this.#engine.watchWebSocket(ws, source)
  }

  /** Counts of live connections by state, and of closed ones by reason. */
  snapshot(): Snapshot {
    return this.#engine.snapshot()
  }

  /** The live connections' records, in accept order: a copy, iterated at the caller's pace (records that close before it reaches them are passed over). */
  connections(): IterableIterator<ConnectionRecord> {
    return this.#engine.connections()
  }

  /** The record of the connection a socket or request belongs to, while it is tracked. */
  recordOf(target: Socket | IncomingMessage): ConnectionRecord | undefined {
    return this.#engine.recordOf(target)
  }

  /**
   * Changes the deadlines of the request in progress on `req`'s connection,
   * from inside a handler or a route's middleware. Plain overrides are
   * validated on every call; pass the result of `resolveRequestOverrides` to
   * validate once (the adapters do, per route). Returns false when `req`'s
   * connection is not tracked or has no request in progress. HTTP/2: pass the
   * compat request or the `ServerHttp2Stream`; the overrides apply to that
   * stream alone, its `requestTimeout` counted from when it opened.
   */
  overrideRequest(
    req: OverridableRequest,
    overrides: RequestOverrides | ResolvedRequestOverrides,
  ): boolean {
    return this.#engine.overrideRequest(req, overrides)
  }

  /**
   * Graceful shutdown that loses no request. For `delay` ms (default 0) nothing changes but
   * `draining`, the 'drain' event and the readiness handler: the load balancer deregisters
   * the instance while it still serves. Then the closing phase: every HTTP/1 response whose
   * head is not out yet says `Connection: close`; a connection with a request in flight
   * finishes it (requests already pipelined behind it are answered) and closes; an idle
   * connection, whose last response promised keep-alive, closes only once it stayed idle
   * for `idleGrace` ms (default 1 s), so a request the client already sent is answered;
   * HTTP/2 sessions get GOAWAY with the last stream id 2^31 - 1 and a PING, then, once their
   * streams have ended and the grace passed, the real one (RFC 9113 §6.8); linked WebSockets
   * a close frame 1001, their closing handshake waited for. Connections
   * accepted meanwhile are served the same way: closing the listening socket is
   * `server.close()`'s job (Fastify calls it after its preClose hooks). While closing,
   * `server.closeIdleConnections()` (which Node's `server.close()` calls) leaves idle
   * connections to the grace. Whatever is still open `timeout` ms after the closing phase
   * began (default 30 s; `false` waits for ever) is closed with `app_shutdown_timeout`.
   * Resolves once every connection is closed (or the tracker is), with counts per outcome.
   * A second call returns the same promise.
   */
  drain(options?: DrainOptions): Promise<DrainResult> {
    return this.#engine.drain(options)
  }

  /** Resolves when the drain's closing phase begins, after its delay (at once when no drain runs). */
  drainClosing(): Promise<void> {
    return this.#engine.drainClosing()
  }

  /**
   * Enforces every deadline due at `now` (the clock's time by default) and
   * returns how many connections it cut. The sweeper calls this every
   * `sweepInterval`; tests with an injected clock call it directly.
   */
  sweep(now?: number): number {
    return this.#engine.sweep(now)
  }

  /**
   * Stops guarding: detaches from every server (restoring the timers it
   * changed), stops the sweeper and forgets live connections without closing
   * them. Idempotent.
   */
  close(): void {
    this.#engine.close()
  }
}
