import { IncomingMessage, type Server, type ServerResponse } from 'node:http'
import {
  type CloseLogger,
  type CloseLogOptions,
  ConnectionTracker,
  type ConnectionTrackerOptions,
  liveView as createLiveView,
  type DrainOptions,
  type DrainResult,
  type LiveView,
  type LiveViewOptions,
  logCloses,
  RequestController,
  type RequestOverrides,
  readinessHandler,
  resolveRequestOverrides,
  type WebSocketServerLike,
} from '@connguard/core'
import { WARNINGS } from '@connguard/core/internal'

type Next = (err?: unknown) => void
/** A plain Connect/Express middleware signature, so no Express types are required. */
export type Middleware = (req: IncomingMessage, res: ServerResponse, next: Next) => void

export interface ConnguardMiddleware extends Middleware {
  /** The tracker behind this guard. */
  readonly tracker: ConnectionTracker
  /**
   * Guards `server` (what `app.listen()` returns, or an `http`/`https`
   * server created with the app) and returns it.
   */
  attach<S extends object>(server: S): S
  /** A middleware that applies `overrides` to the requests of one route; validated once, here. */
  route(overrides: RequestOverrides): Middleware
  /**
   * Shutdown that loses no request: `guard.tracker.drain(options)`, and when its closing
   * phase begins (after `delay`), `server.close()` on every server this guard attached to,
   * as Fastify's `app.close()` does: no new connection, the open ones served with
   * `Connection: close` and closed. Call it instead of `server.close()` (which alone closes
   * idle keep-alive connections at once). Resolves once every connection is closed.
   */
  drain(options?: DrainOptions): Promise<DrainResult>
  /** A readiness route: `app.get('/ready', guard.readiness)`: 503 once draining (its delay included), 200 before. */
  readonly readiness: Middleware
  /**
   * One line per closed connection to a pino-compatible `logger` (reason,
   * phase timings, bytes); see `logCloses` in `@connguard/core`. Returns a
   * function that stops it.
   */
  logCloses(logger: CloseLogger, options?: CloseLogOptions): () => void
  /**
   * The live connections view as a middleware to mount yourself, behind
   * authentication: `app.use('/_connguard', requireAdmin, guard.liveView())`
   * serves the page at the mount path and its data at `<mount>/json`.
   */
  liveView(options?: LiveViewOptions): LiveViewMiddleware
  /**
   * `guard.tracker.watchWebSockets(wss)`: every WebSocket the `ws` server accepts on a
   * guarded server gets PING liveness (a dead peer closed with `ping_timeout`). Returns a
   * function that unlinks it.
   */
  webSockets(wss: WebSocketServerLike): () => void
}

/** `guard.liveView()`: serves `/` (HTML) and `/json` below its mount; `close()` stops recording closes. */
export interface LiveViewMiddleware extends Middleware {
  readonly view: LiveView
  close(): void
}

/** A request passed through the guard: `req.connguard` is its controller. */
export interface ConnguardRequest extends IncomingMessage {
  readonly connguard: RequestController
}

// `req.connguard` in Express handlers: Express's Request (@types/express 4 and 5, through
// express-serve-static-core) extends the global `Express.Request`, the interface Express
// middleware typings add to. Declared globally rather than as `declare module
// 'express-serve-static-core'`, which fails to compile for a consumer without Express types.
declare global {
  namespace Express {
    interface Request {
      /** This request's connection record, and its limits to change from the handler. */
      readonly connguard: RequestController
    }
  }
}

/** The tracker's options; see `ConnectionTrackerOptions` in `@connguard/core`. */
export type ConnguardExpressOptions = ConnectionTrackerOptions

const controllerKey = 'connguard'
/** The trackers of the guards that serve requests of one prototype (one Express app). */
const kTrackers = Symbol('connguard.express.trackers')

/**
 * `req.connguard`, created only when a handler reads it: a getter on the app's request
 * prototype (Express gives each app its own), defined once. Several guards on one app (an
 * HTTP and an HTTPS server, each with its own guard) share it: the getter answers with the
 * tracker that holds the request's connection.
 */
function defineController(target: object, add: ConnectionTracker[]): void {
  const holder = target as { [kTrackers]?: ConnectionTracker[] }
  const own = Object.hasOwn(target, kTrackers) ? holder[kTrackers] : undefined
  if (own !== undefined) {
    for (const t of add) if (!own.includes(t)) own.push(t)
    return
  }
  const trackers = [...add]
  Object.defineProperty(target, kTrackers, { value: trackers, configurable: true })
  Object.defineProperty(target, controllerKey, {
    configurable: true,
    get(this: IncomingMessage) {
      let tracker = trackers[0] as ConnectionTracker
      if (trackers.length > 1) {
        for (const t of trackers) {
          if (t.recordOf(this) !== undefined) {
            tracker = t
            break
          }
        }
      }
      return new RequestController(tracker, this)
    },
  })
}

/**
 * Once the guard is attached and `req.connguard` is on the app's request prototype, the
 * middleware has nothing left to do for that app's requests, but Express would still
 * dispatch its layer on every one: ~1.6k instructions a keep-alive request on Node 26
 * (callgrind; the guard's whole cost with the layer was ~4.7k, without it ~3.1k). So it takes
 * its layer out of the app's router. The stack is replaced, not spliced: a request being
 * dispatched holds the array it started with (Express 4's and 5's routers read
 * `this.stack` once per request), so no request skips a layer. A guard mounted in a
 * sub-router (not the app's own stack) stays where it is.
 */
function leaveRouter(req: IncomingMessage, guard: Middleware): void {
  const app = (req as { app?: { router?: unknown; _router?: unknown } }).app
  if (app == null) return
  try {
    // Express 4 keeps it in `app._router` (its `app.router` getter throws); Express 5 in
    // `app.router`.
    const router = (app._router ?? app.router) as { stack?: { handle?: unknown }[] } | undefined
    const stack = router?.stack
    if (!Array.isArray(stack)) return
    const rest = stack.filter((layer) => layer.handle !== guard)
    if (rest.length !== stack.length) (router as { stack: unknown[] }).stack = rest
  } catch {
    // An app of another shape: the layer stays, and costs its dispatch.
  }
}

/**
 * `app.use(connguard(options))`, then `guard.attach(server)`. Without
 * `attach`, the first request attaches the guard to its server and warns once
 * (code `CONNGUARD_LATE_ATTACH`): connections accepted before it were not guarded.
 */
export function connguard(options?: ConnguardExpressOptions): ConnguardMiddleware {
  const tracker = new ConnectionTracker(options)
  let attached = false
  /** The servers this guard attached to: `guard.drain()` closes them as its closing phase begins. */
  const servers = new Set<{ close?: () => unknown; listening?: boolean }>()

  // The request prototype this guard last exposed `req.connguard` on: one comparison per request.
  let exposedOn: object | null = null

  const guard = ((req: IncomingMessage, _res: ServerResponse, next: Next): void => {
    if (!attached) attachLate(req)
    if (Object.getPrototypeOf(req) !== exposedOn) {
      exposeController(req, tracker)
      if (attached && exposedOn === Object.getPrototypeOf(req)) leaveRouter(req, guard)
    }
    next()
  }) as ConnguardMiddleware

  function exposeController(req: IncomingMessage, own: ConnectionTracker): void {
    const proto = Object.getPrototypeOf(req) as object | null
    // A bare IncomingMessage: never Node's shared prototype, an own getter each time.
    if (proto === IncomingMessage.prototype || proto === null) {
      defineController(req, [own])
      return
    }
    exposedOn = proto
    defineController(proto, [own])
  }

  function attachLate(req: IncomingMessage): void {
    const server = (req.socket as unknown as { server?: Server }).server
    if (server == null || tracker.closed) return
    attached = true
    try {
      tracker.attach(server)
      servers.add(server)
    } catch (err) {
      // Never fail a request over it: say why this guard is not guarding.
      WARNINGS.LATE_ATTACH_FAILED.emit((err as Error).message)
      return
    }
    // Once per process: the warning itself says each message once, whichever guard sends it.
    WARNINGS.LATE_ATTACH.emit()
  }

  Object.defineProperties(guard, {
    tracker: { value: tracker, enumerable: true },
    attach: {
      value: <S extends object>(server: S): S => {
        tracker.attach(server)
        attached = true
        servers.add(server as { close?: () => unknown })
        return server
      },
    },
    drain: {
      value: (options?: DrainOptions): Promise<DrainResult> => {
        const done = tracker.drain(options)
        void tracker.drainClosing().then(() => {
          // The listening sockets close as the closing phase begins: what `server.close()`
          // would do without connguard; the drain owns the open connections meanwhile.
          for (const server of servers) {
            if (server.listening === true && typeof server.close === 'function') server.close()
          }
        })
        return done
      },
    },
    readiness: { value: readinessHandler(tracker), enumerable: true },
    logCloses: {
      value: (logger: CloseLogger, options?: CloseLogOptions) =>
        logCloses(tracker, logger, options),
    },
    liveView: {
      value: (options?: LiveViewOptions) => liveViewMiddleware(createLiveView(tracker, options)),
    },
    webSockets: {
      value: (wss: WebSocketServerLike) => tracker.watchWebSockets(wss),
    },
    route: {
      value: (overrides: RequestOverrides): Middleware => {
        const resolved = resolveRequestOverrides(overrides, 'guard.route() option')
        return (req, _res, next) => {
          tracker.overrideRequest(req, resolved)
          next()
        }
      },
    },
  })
  return guard
}

/**
 * GET/HEAD `<mount>/` → the page, `<mount>/json` → the data; anything else
 * passes on. `req.url` is relative to the mount (Express strips it); the page
 * is told the mount from `req.baseUrl`, or from `originalUrl` elsewhere.
 */
function liveViewMiddleware(view: LiveView): LiveViewMiddleware {
  const handler = ((req: IncomingMessage, res: ServerResponse, next: Next): void => {
    const url = req.url ?? '/'
    const query = url.indexOf('?')
    const path = query < 0 ? url : url.slice(0, query)
    const kind = path === '/' || path === '' ? 'html' : path === '/json' ? 'json' : null
    if (kind === null || (req.method !== 'GET' && req.method !== 'HEAD')) {
      next()
      return
    }
    const body = kind === 'html' ? view.html(mountOf(req, path)) : JSON.stringify(view.json())
    res.writeHead(200, {
      ...view.headers(kind),
      'content-length': String(Buffer.byteLength(body)),
    })
    res.end(req.method === 'HEAD' ? undefined : body)
  }) as LiveViewMiddleware
  Object.defineProperties(handler, {
    view: { value: view, enumerable: true },
    close: { value: () => view.close() },
  })
  return handler
}

function mountOf(req: IncomingMessage, path: string): string {
  const baseUrl = (req as { baseUrl?: unknown }).baseUrl
  if (typeof baseUrl === 'string') return baseUrl
  const original = (req as { originalUrl?: unknown }).originalUrl
  if (typeof original !== 'string') return ''
  const q = original.indexOf('?')
  const full = q < 0 ? original : original.slice(0, q)
  return full.endsWith(path) ? full.slice(0, full.length - path.length) : ''
}
