import {
  type CloseLogOptions,
  ConnectionTracker,
  type ConnectionTrackerOptions,
  liveView as createLiveView,
  type FrameworkSettings,
  InvalidOptionError,
  type LiveView,
  type LiveViewOptions,
  logCloses,
  RequestController,
  type RequestOverrides,
  type ResolvedRequestOverrides,
  resolveCloseLogOptions,
  resolveDrainTimeout,
  resolveLiveViewOptions,
  resolveRequestOverrides,
  WARNINGS,
  type WebSocketLike,
  type WebSocketServerLike,
} from '@connguard/core'
import type {
  FastifyInstance,
  FastifyPluginAsync,
  onRequestHookHandler,
  RouteOptions,
} from 'fastify'
import fp from 'fastify-plugin'

declare module 'fastify' {
  interface FastifyInstance {
    /** The connguard tracker guarding this instance's server. */
    connguard: ConnectionTracker
  }
  interface FastifyRequest {
    /** This request's connection record, and its limits to change from the handler. */
    readonly connguard: RequestController
  }
  interface FastifyContextConfig {
    /** Per-route limits (`requestTimeout`, `minBodyRate`, `minResponseRate`, `webSocket: false`), validated when the route is registered. */
    connguard?: ConnguardRouteConfig
  }
}

/** A route's `config.connguard`: its request limits, and `webSocket: false` to leave its WebSockets without PING liveness. */
export interface ConnguardRouteConfig extends RequestOverrides {
  /** `false`: WebSockets of this route (@fastify/websocket) get no ping from connguard. Default true. */
  webSocket?: boolean
}

export interface ConnguardFastifyOptions extends ConnectionTrackerOptions {
  /**
   * `app.close()` drains connections first: idle ones close at once, requests
   * in flight finish, the rest is closed after this many ms (default 30 s;
   * `false` waits for ever, as Fastify alone does).
   */
  drainTimeout?: number | false
  /**
   * One `app.log` line per closed connection (reason, phase timings, bytes):
   * cuts at `info`, peer closes at `debug`, errors at `warn`; `{ levels, level }`
   * changes that (see `logCloses` in `@connguard/core`). Default false.
   */
  closeLog?: boolean | CloseLogOptions
  /**
   * Mounts the live connections view: `GET <path>` (an HTML page) and
   * `GET <path>/json`. Default false: nothing is exposed. It shows remote
   * addresses and traffic: put it behind authentication (an onRequest hook).
   */
  liveView?: false | ({ path: string } & LiveViewOptions)
}

/** Options the plugin consumes itself; everything else goes to the tracker. */
const PLUGIN_KEYS = new Set(['drainTimeout', 'closeLog', 'liveView'])

/** Keys Fastify itself may pass along with a plugin's options. */
const REGISTER_KEYS = new Set(['prefix', 'logLevel', 'logSerializers'])

const connguardPlugin: FastifyPluginAsync<ConnguardFastifyOptions> = async (app, options) => {
  const trackerOptions: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) {
    if (!REGISTER_KEYS.has(key) && !PLUGIN_KEYS.has(key)) trackerOptions[key] = value
  }
  const observability = resolveObservability(options)
  const tracker = new ConnectionTracker(trackerOptions)
  const drainTimeout = resolveDrainTimeout(options.drainTimeout)
  warnRoutesBefore(app)
  // At register time, before listen: the first connection is already guarded. The timeouts
  // the application gave Fastify become the defaults of connguard's options (adopted).
  tracker._attach(app.server, fastifySettings(app.initialConfig))
  app.decorate('connguard', tracker)
  // A getter: the controller exists only for handlers that ask for it.
  app.decorateRequest('connguard', {
    getter(this: { raw: import('node:http').IncomingMessage }) {
      return new RequestController(tracker, this.raw)
    },
  })
  // Upgrade requests of routes with `config.connguard.webSocket: false`.
  const noWebSocketPing = new WeakSet<object>()
  app.addHook('onRoute', (route) => addRouteOverrides(tracker, route, noWebSocketPing))
  watchWebSocketServer(app, tracker, noWebSocketPing)
  app.addHook('preClose', async () => {
    await tracker.drain({ timeout: drainTimeout === 0 ? false : drainTimeout })
  })
  app.addHook('onClose', async () => {
    tracker.close()
  })
  addObservability(app, tracker, observability)
}

/**
 * Fastify's own defaults for what it sets on the server it creates (docs/Reference/Server.md;
 * `options.x || default` in fastify.js, so a 0 given for keepAliveTimeout is 72 s too).
 * A value equal to these is Fastify's, not the application's, and is not adopted.
 */
const FASTIFY_DEFAULTS = { keepAliveTimeout: 72_000, requestTimeout: 0, maxRequestsPerSocket: 0 }

/** What Fastify set on `app.server` from the application's options (`app.initialConfig`). */
function fastifySettings(config: FastifyInstance['initialConfig']): FrameworkSettings {
  const c = config as {
    keepAliveTimeout?: number
    requestTimeout?: number
    maxRequestsPerSocket?: number | null
  }
  return {
    source: 'fastify',
    defaults: FASTIFY_DEFAULTS,
    values: {
      keepAliveTimeout: c.keepAliveTimeout ?? FASTIFY_DEFAULTS.keepAliveTimeout,
      requestTimeout: c.requestTimeout ?? FASTIFY_DEFAULTS.requestTimeout,
      maxRequestsPerSocket: c.maxRequestsPerSocket ?? FASTIFY_DEFAULTS.maxRequestsPerSocket,
    },
  }
}

/** Names shown in the warning at most; the rest are counted. */
const MAX_NAMED_ROUTES = 10

/**
 * Routes registered before the plugin were built before its onRoute hook: their
 * `config.connguard` is neither applied nor checked. Fastify has no route list, but
 * `printRoutes` draws each path with its methods as a tree (`├── /a (GET, HEAD)`, a child
 * four columns further in carrying only the rest of its path).
 */
function warnRoutesBefore(app: FastifyInstance): void {
  const names: string[] = []
  const prefixes: string[] = []
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^((?:[│ ] {3})*)[├└]── (.*?)(?: \(([^)]*)\))?$/.exec(line)
    if (m === null) continue
    const depth = (m[1] as string).length / 4
    const path = (prefixes[depth - 1] ?? '') + (m[2] as string)
    prefixes[depth] = path
    prefixes.length = depth + 1
    if (m[3] === undefined) continue
    const methods = m[3].split(', ')
    for (const method of methods) {
      // Fastify adds HEAD to every GET route by itself.
      if (method !== 'HEAD' || !methods.includes('GET')) names.push(`${method} ${path}`)
    }
  }
  if (names.length === 0) return
  const shown = names.slice(0, MAX_NAMED_ROUTES).join(', ')
  const more = names.length > MAX_NAMED_ROUTES ? ` and ${names.length - MAX_NAMED_ROUTES} more` : ''
  WARNINGS.ROUTES_BEFORE_PLUGIN.emit(shown + more)
}

/** `closeLog` and `liveView` validated, before the tracker exists (a bad option leaves nothing attached). */
function resolveObservability({ closeLog = false, liveView = false }: ConnguardFastifyOptions): {
  closeLog: CloseLogOptions | null
  liveView: { base: string; options: LiveViewOptions } | null
} {
  if (typeof closeLog !== 'boolean') resolveCloseLogOptions(closeLog, 'closeLog')
  const log = closeLog === false ? null : closeLog === true ? {} : closeLog
  if (liveView === false) return { closeLog: log, liveView: null }
  if (liveView === null || typeof liveView !== 'object' || Array.isArray(liveView)) {
    throw new InvalidOptionError(
      'liveView',
      liveView,
      'false or { path, recentCloses?, listLimit? }',
    )
  }
  const { path, ...rest } = liveView
  const options = resolveLiveViewOptions(rest, 'liveView', ['path'])
  // A literal route: no parameters or wildcards, no empty segments.
  if (typeof path !== 'string' || !/^\/[\w\-./~]*$/.test(path) || path.includes('//')) {
    throw new InvalidOptionError(
      'liveView.path',
      path,
      'a path starting with "/" (letters, digits, "-", "_", ".", "~", "/"; no parameters)',
    )
  }
  return { closeLog: log, liveView: { base: path.replace(/\/+$/, ''), options } }
}

/** Starts the close log and mounts the live view; both stop once the tracker has closed. */
function addObservability(
  app: FastifyInstance,
  tracker: ConnectionTracker,
  resolved: ReturnType<typeof resolveObservability>,
): void {
  const stopLog = resolved.closeLog === null ? null : logCloses(tracker, app.log, resolved.closeLog)
  let view: LiveView | null = null
  if (resolved.liveView !== null) {
    const { base, options } = resolved.liveView
    const v = createLiveView(tracker, options)
    view = v
    const page = v.html(base)
    app.get(base === '' ? '/' : base, (_request, reply) => {
      reply.headers(v.headers('html')).send(page)
    })
    // Polled every second by the page: its request lines would drown the log.
    app.get(`${base}/json`, { logLevel: 'warn' }, (_request, reply) => {
      reply.headers(v.headers('json')).send(JSON.stringify(v.json()))
    })
  }
  if (stopLog !== null || view !== null) {
    app.addHook('onClose', async () => {
      stopLog?.()
      view?.close()
    })
  }
}

/**
 * @fastify/websocket, when registered (before or after this plugin), decorates the
 * instance with its `WebSocketServer` and emits `'connection'` on it for every WebSocket a
 * route accepts, with the upgrade request: each is linked to its connection for PING
 * liveness, unless its route opted out. Looked up once the instance is ready.
 */
function watchWebSocketServer(
  app: FastifyInstance,
  tracker: ConnectionTracker,
  optedOut: WeakSet<object>,
): void {
  let wss: WebSocketServerLike | null = null
  const listener = (ws: WebSocketLike, req: import('node:http').IncomingMessage): void => {
    if (!optedOut.has(req)) tracker.watchWebSocket(ws, req)
  }
  app.addHook('onReady', async () => {
    const found = (app as unknown as { websocketServer?: WebSocketServerLike }).websocketServer
    if (found == null || typeof found.on !== 'function' || tracker.closed) return
    wss = found
    wss.on('connection', listener)
  })
  app.addHook('onClose', async () => {
    wss?.removeListener('connection', listener)
  })
}

/**
 * A route with `config.connguard` gets one onRequest hook of its own, built
 * once here: routes without overrides pay nothing per request.
 */
function addRouteOverrides(
  tracker: ConnectionTracker,
  route: RouteOptions,
  noWebSocketPing: WeakSet<object>,
): void {
  const config = (route.config as { connguard?: ConnguardRouteConfig } | undefined)?.connguard
  if (config === undefined) return
  const where = `route option config.connguard of ${String(route.method)} ${route.url}`
  let overrides: RequestOverrides = config
  let webSocket = true
  if (config !== null && typeof config === 'object' && 'webSocket' in config) {
    const { webSocket: value, ...rest } = config
    if (typeof value !== 'boolean') {
      throw new InvalidOptionError(`${where}: webSocket`, value, 'true or false')
    }
    webSocket = value
    overrides = rest
  }
  const resolved: ResolvedRequestOverrides = resolveRequestOverrides(overrides, where)
  const hook: onRequestHookHandler = webSocket
    ? (request, _reply, done) => {
        tracker.overrideRequest(request.raw, resolved)
        done()
      }
    : (request, _reply, done) => {
        noWebSocketPing.add(request.raw)
        tracker.overrideRequest(request.raw, resolved)
        done()
      }
  const existing = route.onRequest
  route.onRequest =
    existing === undefined ? [hook] : [hook, ...(Array.isArray(existing) ? existing : [existing])]
}

/**
 * `await app.register(connguard, options)`: guards `app.server` with a
 * ConnectionTracker (`app.connguard`); `app.close()` drains its connections
 * and detaches it.
 */
export const connguard = fp(connguardPlugin, {
  name: '@connguard/fastify',
  fastify: '5.x',
})
