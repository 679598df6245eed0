/**
 * Drains under load, shared by test/drain-load.test.ts (Fastify and Express, HTTP/1.1 and
 * HTTP/2 with Node's client) and test/drain-h2-undici.test.ts (Fastify HTTP/2 with undici 8):
 * client loops over an undici dispatcher until stopped, counting what came back, and the
 * Fastify server with the plugin's defaults the drains run against.
 */
import { setTimeout as delay } from 'node:timers/promises'
import { connguard as fastifyGuard } from '@connguard/fastify'
import Fastify, { type FastifyInstance } from 'fastify'
import { tlsOptions } from './tls.js'

export interface LoadResult {
  ok: number
  unavailable: number
  /** HTTP/2 streams refused (REFUSED_STREAM): never processed by the server, safe to retry. */
  refused: number
  /**
   * New connections the closed listening socket refused: ECONNREFUSED, or ECONNRESET at
   * connect (the kernel had completed the handshake, the server had not accepted it yet when
   * its listening socket closed, and the kernel resets it). Not a failure. By error code.
   */
  connectRefused: Record<string, number>
  failures: Record<string, number>
}

/** A failed request, with what the caller's `context()` said when it failed. */
export interface LoadFailure {
  code: string
  message: string
  context: unknown
}

/** The part of an undici `Pool` or `Agent` (7 or 8) the loops use. */
export interface LoadDispatcher {
  request(options: { origin?: string; path: string; method: 'GET' }): Promise<{
    statusCode: number
    body: { text(): Promise<string> }
  }>
  destroy(): Promise<void>
}

/**
 * `loops` client loops sending `GET /` through `dispatcher` until `stop()`, which waits for
 * them and destroys the dispatcher. A new connection refused (its `connect` failed: the
 * listening socket is closed) is not a failure, a load balancer sends it elsewhere; every
 * other error is, by its code, and is kept in `details` with `context()` at the time (e.g.
 * the drain phase).
 */
export function dispatcherLoad(
  dispatcher: LoadDispatcher,
  loops: number,
  { origin, context }: { origin?: string; context?: () => unknown } = {},
): { details: LoadFailure[]; stop: () => Promise<LoadResult> } {
  const result: LoadResult = { ok: 0, unavailable: 0, refused: 0, connectRefused: {}, failures: {} }
  const details: LoadFailure[] = []
  let stopped = false
  const loop = async (): Promise<void> => {
    while (!stopped) {
      try {
        const { statusCode, body } = await dispatcher.request({
          ...(origin === undefined ? {} : { origin }),
          path: '/',
          method: 'GET',
        })
        await body.text()
        if (statusCode === 503) result.unavailable++
        else result.ok++
      } catch (err) {
        const code = (err as { code?: string }).code ?? String(err)
        // Node's connect error (`connect ECONNRESET 127.0.0.1:port`): the socket never opened.
        if (code === 'ECONNREFUSED' || (err as { syscall?: string }).syscall === 'connect') {
          result.connectRefused[code] = (result.connectRefused[code] ?? 0) + 1
          await delay(5)
          continue
        }
        result.failures[code] = (result.failures[code] ?? 0) + 1
        if (details.length < 50)
          details.push({ code, message: (err as Error).message, context: context?.() })
      }
    }
  }
  const running = Array.from({ length: loops }, loop)
  return {
    details,
    stop: async () => {
      stopped = true
      await Promise.all(running)
      await dispatcher.destroy()
      return result
    },
  }
}

export interface Served {
  port: number
  /** Requests the application's handler answered. */
  handled(): number
  /** The shutdown a user runs: `app.close()`, or `guard.drain()`. */
  shutdown(): Promise<unknown>
}

/**
 * Fastify with the plugin's defaults, over HTTP/1.1 or HTTP/2 over TLS, its handler 1 ms
 * long; `cleanups` gets its `close()`.
 */
export async function fastifyServedWith(
  h2: boolean,
  cleanups: (() => unknown)[],
): Promise<Served & { app: FastifyInstance }> {
  const app = (h2
    ? Fastify({ http2: true, https: tlsOptions })
    : Fastify()) as unknown as FastifyInstance
  await app.register(fastifyGuard)
  let handled = 0
  app.get('/', async () => {
    await delay(1)
    handled++
    return 'ok'
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  cleanups.push(() => app.close())
  return {
    app,
    port: (app.server.address() as { port: number }).port,
    handled: () => handled,
    shutdown: () => app.close(),
  }
}
