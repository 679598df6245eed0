import { IncomingMessage, type Server, type ServerResponse } from 'node:http'
import {
  type CloseLogger,
  type CloseLogOptions,
  ConnectionTracker,
  type ConnectionTrackerOptions,
  liveView as createLiveView,
  type DrainResult,
  type LiveView,
  type LiveViewOptions,
  logCloses,
  RequestController,
  type RequestOverrides,
  resolveRequestOverrides,
} from '@connguard/core'

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
  /** `guard.tracker.drain()`: for shutdown, next to `server.close()`. */
  drain(options?: { timeout?: number | false }): Promise<DrainResult>
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

let warnedLateAttach = false
const controllerKey = 'connguard'

/**
 * `app.use(connguard(options))`, then `guard.attach(server)`. Without
 * `attach`, the first request attaches the guard to its server and warns once
 * (code `CONNGUARD_LATE_ATTACH`): connections accepted before it were not guarded.
 */
export function connguard(options?: ConnguardExpressOptions): ConnguardMiddleware {
  const tracker = new ConnectionTracker(options)
  let attached = false

  const guard = ((req: IncomingMessage, _res: ServerResponse, next: Next): void => {
    if (!attached) attachLate(req)
    if (!(controllerKey in req)) exposeController(req)
    next()
  }) as ConnguardMiddleware

  /**
   * `req.connguard`, created only when a handler reads it: a getter on the
   * app's request prototype (Express gives each app its own), defined once;
   * on a bare IncomingMessage, never Node's shared prototype, an own getter.
   */
  function exposeController(req: IncomingMessage): void {
    const proto = Object.getPrototypeOf(req) as object
    const target = proto === IncomingMessage.prototype || proto === null ? req : proto
    Object.defineProperty(target, controllerKey, {
      configurable: true,
      get(this: IncomingMessage) {
        return new RequestController(tracker, this)
      },
    })
  }

  function attachLate(req: IncomingMessage): void {
    const server = (req.socket as unknown as { server?: Server }).server
    if (server == null || tracker.closed) return
    attached = true
    try {
      tracker.attach(server)
    } catch (err) {
      // Never fail a request over it: say why this guard is not guarding.
      process.emitWarning(
        `connguard could not attach on the first request: ${(err as Error).message}`,
        {
          type: 'ConnguardWarning',
          code: 'CONNGUARD_LATE_ATTACH_FAILED',
        },
      )
      return
    }
    if (!warnedLateAttach) {
      warnedLateAttach = true
      process.emitWarning(
        'connguard attached itself on the first request: connections accepted before were not ' +
          'guarded. Call guard.attach(server) on the server right after creating it.',
        { type: 'ConnguardWarning', code: 'CONNGUARD_LATE_ATTACH' },
      )
    }
  }

  Object.defineProperties(guard, {
    tracker: { value: tracker, enumerable: true },
    attach: {
      value: <S extends object>(server: S): S => {
        tracker.attach(server)
        attached = true
        return server
      },
    },
    drain: {
      value: (options?: { timeout?: number | false }) => tracker.drain(options),
    },
    logCloses: {
      value: (logger: CloseLogger, options?: CloseLogOptions) =>
        logCloses(tracker, logger, options),
    },
    liveView: {
      value: (options?: LiveViewOptions) => liveViewMiddleware(createLiveView(tracker, options)),
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
