import {
  ConnectionTracker,
  type ConnectionTrackerOptions,
  RequestController,
  type RequestOverrides,
  type ResolvedRequestOverrides,
  resolveDrainTimeout,
  resolveRequestOverrides,
} from '@connguard/core'
import type { FastifyPluginAsync, onRequestHookHandler, RouteOptions } from 'fastify'
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
   * `app.close()` drains connections first: idle ones close at once, requests
   * in flight finish, the rest is closed after this many ms (default 30 s;
   * `false` waits for ever, as Fastify alone does).
   */
  drainTimeout?: number | false
}

/** Keys Fastify itself may pass along with a plugin's options. */
const REGISTER_KEYS = new Set(['prefix', 'logLevel', 'logSerializers'])

const connguardPlugin: FastifyPluginAsync<ConnguardFastifyOptions> = async (app, options) => {
  const trackerOptions: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) {
    if (!REGISTER_KEYS.has(key) && key !== 'drainTimeout') trackerOptions[key] = value
  }
  const tracker = new ConnectionTracker(trackerOptions)
  const drainTimeout = resolveDrainTimeout(options.drainTimeout)
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
  app.addHook('preClose', async () => {
    await tracker.drain({ timeout: drainTimeout === 0 ? false : drainTimeout })
  })
  app.addHook('onClose', async () => {
    tracker.close()
  })
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
