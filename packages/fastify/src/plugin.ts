import {
  ConnectionTracker,
  type ConnectionTrackerOptions,
  type RequestOverrides,
  type ResolvedRequestOverrides,
  resolveRequestOverrides,
} from '@connguard/core'
import type { FastifyPluginAsync, onRequestHookHandler, RouteOptions } from 'fastify'
import fp from 'fastify-plugin'

declare module 'fastify' {
  interface FastifyInstance {
    /** The connguard tracker guarding this instance's server. */
    connguard: ConnectionTracker
  }
  interface FastifyContextConfig {
    /** Per-route deadline overrides, validated when the route is registered. */
    connguard?: RequestOverrides
  }
}

/** The tracker's options; see `ConnectionTrackerOptions` in `@connguard/core`. */
export type ConnguardFastifyOptions = ConnectionTrackerOptions

/** Keys Fastify itself may pass along with a plugin's options. */
const REGISTER_KEYS = new Set(['prefix', 'logLevel', 'logSerializers'])

const connguardPlugin: FastifyPluginAsync<ConnguardFastifyOptions> = async (app, options) => {
  const trackerOptions: Record<string, unknown> = {}
  for (const [key, value] of Object.entries(options)) {
    if (!REGISTER_KEYS.has(key)) trackerOptions[key] = value
  }
  const tracker = new ConnectionTracker(trackerOptions)
  // At register time, before listen: the first connection is already guarded.
  tracker.attach(app.server)
  app.decorate('connguard', tracker)
  app.addHook('onRoute', (route) => addRouteOverrides(tracker, route))
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
 * ConnectionTracker (`app.connguard`), detached again on `app.close()`.
 */
export const connguard = fp(connguardPlugin, {
  name: '@connguard/fastify',
  fastify: '5.x',
})
