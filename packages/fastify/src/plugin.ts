import {
  type CloseLogOptions,
  ConnectionTracker,
  type ConnectionTrackerOptions,
  liveView as createLiveView,
  InvalidOptionError,
  type LiveView,
  type LiveViewOptions,
  logCloses,
  READINESS_HEADERS,
  RequestController,
  type RequestOverrides,
  type ResolvedRequestOverrides,
  readinessState,
  resolveCloseLogOptions,
  resolveDrainOptions,
  resolveLiveViewOptions,
  resolveRequestOverrides,
  validateDuration,
} from '@connguard/core'
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
    /** Per-route limits (`requestTimeout`, `minBodyRate`, `minResponseRate`), validated when the route is registered. */
    connguard?: RequestOverrides
  }
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
  // At register time, before listen: the first connection is already guarded.
  tracker.attach(app.server)
  app.decorate('connguard', tracker)
  // A getter: the controller exists only for handlers that ask for it.
  app.decorateRequest('connguard', {
    getter(this: { raw: import('node:http').IncomingMessage }) {
      return new RequestController(tracker, this.raw)
    },
  })
  app.addHook('onRoute', (route) => addRouteOverrides(tracker, route))
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
 * A route with `config.connguard` gets one onRequest hook of its own, built
 * once here: routes without overrides pay nothing per request.
 */
function addRouteOverrides(tracker: ConnectionTracker, route: RouteOptions): void {
  const overrides = (route.config as { connguard?: RequestOverrides } | undefined)?.connguard
  if (overrides === undefined) return
  const where = `route option config.connguard of ${String(route.method)} ${route.url}`
  const resolved: ResolvedRequestOverrides = resolveRequestOverrides(overrides, where)
  const hook: onRequestHookHandler = (request, _reply, done) => {
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
