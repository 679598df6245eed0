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
  readinessState,
  resolveRequestOverrides,
  type WebSocketLike,
  type WebSocketServerLike,
} from '@connguard/core'
import {
  READINESS_HEADERS,
  resolveCloseLogOptions,
  resolveDrainOptions,
  resolveLiveViewOptions,
  validateDuration,
  WARNINGS,
} from '@connguard/core/internal'
import type {
  FastifyInstance,
  FastifyPluginAsync,
  FastifyReply,
  FastifyRequest,
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
   * `app.close()` drains connections: every response says `Connection: close`, requests in
   * flight finish, idle connections close after `drainIdleGrace`; whatever is still open
   * this many ms later is closed (default 30 s; `false` waits for ever, as Fastify alone
   * does). The wait runs after Fastify's `server.close()`, not in a preClose hook, so
   * `pluginTimeout` does not bound it.
   */
  drainTimeout?: number | false
  /**
   * Ms `app.close()` keeps serving normally first, while `app.connguard.draining` is true and
   * the readiness handler answers 503, so a load balancer deregisters the instance (default
   * 0). It runs in connguard's preClose hook: it must stay below Fastify's `pluginTimeout`,
   * and requests are routed as usual only with `return503OnClosing: false` (Fastify answers
   * 503 once `app.close()` starts otherwise).
   */
  drainDelay?: number | false
  /**
   * Ms an idle keep-alive connection is given, once the drain closes, for a request its
   * client may already have sent (default 1 s; 0: closed at once).
   */
  drainIdleGrace?: number | false
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
const PLUGIN_KEYS = new Set([
  'drainTimeout',
  'drainDelay',
  'drainIdleGrace',
  'closeLog',
  'liveView',
])

/** Keys Fastify itself may pass along with a plugin's options. */
const REGISTER_KEYS = new Set(['prefix', 'logLevel', 'logSerializers'])

const connguardPlugin: FastifyPluginAsync<ConnguardFastifyOptions> = async (app, options) => {
  const trackerOptions: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) {
    if (!REGISTER_KEYS.has(key) && !PLUGIN_KEYS.has(key)) trackerOptions[key] = value
  }
  const observability = resolveObservability(options)
  const drain = resolveDrain(app, options)
  const tracker = new ConnectionTracker(trackerOptions)
  warnRoutesBefore(app)
  // At register time, before listen: the first connection is already guarded. The timeouts
  // the application gave Fastify become the defaults of connguard's options (adopted).
  tracker.attach(app.server, fastifySettings(app.initialConfig))
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
  // Before the close hooks: onClose hooks run last-registered first, and the log must stop
  // only after tracker.close() has finished the records of the drain's last closes.
  addObservability(app, tracker, observability)
  // Fastify's close: preClose hooks (this one first, then the application's: they end SSE
  // and WebSocket streams), then `server.close()`, whose callback waits for every connection,
  // then the onClose hooks. This hook starts the drain and waits only for its delay; the
  // connections are waited for by `server.close()` (the drain closes them, its timeout
  // bounds them), outside the preClose budget (`pluginTimeout`).
  let restoreSessions: (() => void) | null = null
  app.addHook('preClose', async () => {
    void tracker.drain(drain)
    await tracker.drainClosing()
    restoreSessions = deferHttp2Sessions(app.server)
  })
  app.addHook('onClose', async () => {
    restoreSessions?.()
    tracker.close()
  })
}

/** The drain options, validated; `drainDelay` checked against Fastify's `pluginTimeout`. */
function resolveDrain(
  app: FastifyInstance,
  options: ConnguardFastifyOptions,
): ReturnType<typeof resolveDrainOptions> {
  const resolved = resolveDrainOptions({
    timeout: validateDuration('drainTimeout', options.drainTimeout, 30_000),
    delay: validateDuration('drainDelay', options.drainDelay, 0),
    idleGrace: validateDuration('drainIdleGrace', options.drainIdleGrace, 1_000),
  })
  const pluginTimeout = (app.initialConfig as { pluginTimeout?: number }).pluginTimeout ?? 0
  // The delay runs inside a preClose hook, which avvio bounds by pluginTimeout: past it,
  // `app.close()` would reject with AVV_ERR_READY_TIMEOUT and skip the hooks after ours.
  if (pluginTimeout > 0 && resolved.delay > 0 && resolved.delay + DELAY_MARGIN > pluginTimeout) {
    throw new InvalidOptionError(
      'drainDelay',
      options.drainDelay,
      `at least ${DELAY_MARGIN} ms below Fastify's pluginTimeout (${pluginTimeout} ms), which ` +
        'bounds every preClose hook; raise pluginTimeout (0: no limit) or shorten the delay',
    )
  }
  return resolved
}

/** What a drainDelay leaves of `pluginTimeout` for the rest of connguard's preClose hook. */
const DELAY_MARGIN = 1_000

/**
 * Fastify's `closeHttp2Sessions()` (called right after the preClose hooks) closes every
 * HTTP/2 session at once: a GOAWAY naming the last stream processed, which refuses a
 * request the client sent meanwhile (REFUSED_STREAM). The drain already sent each session
 * the graceful two-step GOAWAY and closes it after the PING; so, while it does, that call
 * leaves them to it. Returns what restores the server's own.
 */
function deferHttp2Sessions(server: object): (() => void) | null {
  const s = server as { closeHttp2Sessions?: () => void }
  if (typeof s.closeHttp2Sessions !== 'function' || !Object.hasOwn(s, 'closeHttp2Sessions'))
    return null
  const own = s.closeHttp2Sessions
  s.closeHttp2Sessions = () => {}
  return () => {
    s.closeHttp2Sessions = own
  }
}

/**
 * A readiness route's handler: 503 from the moment the drain starts (its `drainDelay`
 * included), 200 before. `app.get('/ready', readiness)` after registering connguard.
 */
export function readiness(this: unknown, request: FastifyRequest, reply: FastifyReply): void {
  const { status, body } = readinessState(request.server.connguard)
  reply.code(status).headers(READINESS_HEADERS).send(body)
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
