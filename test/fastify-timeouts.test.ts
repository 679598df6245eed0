/**
 * Fastify's documented connection and timeout options (docs/Reference/Server.md) still do what
 * Fastify says with connguard registered, over real sockets on 127.0.0.1:
 * `keepAliveTimeout`, `requestTimeout` and `maxRequestsPerSocket` are adopted as connguard's
 * defaults (enforced by the guard, promptly); `connectionTimeout` and `http2SessionTimeout`
 * stay Node's and keep working; a header or request timeout is answered by Fastify's
 * `clientErrorHandler` (its JSON 408, or the application's own); `onRequestAbort` hooks run.
 * What is replaced or cannot apply is warned about once (CONNGUARD_WARN_*).
 */
import http2 from 'node:http2'
import { performance } from 'node:perf_hooks'
import type { ConnectionRecord } from '@connguard/core'
import { type ConnguardFastifyOptions, connguard } from '@connguard/fastify'
import Fastify, { type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { getRequest, openSocket, rawHttp, silentTcp } from './helpers/clients.js'
import { EARLY_MS, expectKeepAliveClose, LATE_MS } from './helpers/records.js'
import { captureWarnings, warningsSettled } from './helpers/warnings.js'

const SWEEP = 50
const apps: FastifyInstance[] = []
afterEach(async () => {
  for (const app of apps.splice(0)) await app.close()
})

const warnings = captureWarnings()

interface Started {
  app: FastifyInstance
  port: number
  closes: ConnectionRecord[]
}

/** Fastify with `fastifyOptions`, connguard with `options`, then `GET /`, `GET /slow`, `POST /body`. */
async function start(
  fastifyOptions: FastifyServerOptions,
  options: ConnguardFastifyOptions = {},
  before?: (app: FastifyInstance) => void,
): Promise<Started> {
  const app = Fastify(fastifyOptions) as unknown as FastifyInstance
  apps.push(app)
  before?.(app)
  await app.register(connguard, { sweepInterval: SWEEP, ...options })
  const closes: ConnectionRecord[] = []
  app.connguard.on('close', (r) => closes.push(r))
  app.get('/', async () => 'ok')
  app.get('/slow', async () => {
    await new Promise((r) => setTimeout(r, 1_200))
    return 'slow'
  })
  app.post('/body', async (request) => ({ got: String(request.body).length }))
  // A route's own requestTimeout keeps connguard's meaning: first byte → response finished.
  app.get('/slow-limited', { config: { connguard: { requestTimeout: 600 } } }, async () => {
    await new Promise((r) => setTimeout(r, 1_200))
    return 'slow'
  })
  await app.listen({ port: 0, host: '127.0.0.1' })
  const address = app.server.address()
  const port = typeof address === 'object' && address !== null ? address.port : 0
  return { app, port, closes }
}

const settle = () => new Promise((r) => setTimeout(r, 30))

describe('adopted: keepAliveTimeout, requestTimeout, maxRequestsPerSocket', () => {
  it("Fastify's defaults are not adopted: connguard's own (72 s keep-alive, as Fastify's) apply, no warning", async () => {
    const { app, port } = await start({})
    expect(app.connguard.options.sources.keepAliveTimeout).toBe('default')
    expect(app.connguard.options.sources.requestTimeout).toBe('default')
    expect(app.server.keepAliveTimeout).toBe(72_000)
    const res = await rawHttp(port, getRequest('/'), { until: 'response' })
    expect(res.responses[0]?.headers['keep-alive']).toBe('timeout=72')
    await warningsSettled()
    expect(warnings).toEqual([])
  })

  it('keepAliveTimeout: advertised and enforced (an idle connection closes at it, keep_alive_timeout)', async () => {
    const { app, port, closes } = await start({ keepAliveTimeout: 1_000, requestTimeout: 10_000 })
    expect(app.connguard.options.keepAliveTimeout).toBe(1_000)
    expect(app.connguard.options.sources.keepAliveTimeout).toBe('fastify')
    expect(app.connguard.options.requestTimeout).toBe(10_000)
    expect(app.connguard.options.sources.requestTimeout).toBe('fastify')
    await expectKeepAliveClose(port, 1_000, SWEEP)
    await settle()
    expect(closes.map((r) => r.closeReason)).toEqual(['keep_alive_timeout'])
  })

  it("requestTimeout: an unfinished body gets Fastify's JSON 408 at it; a whole request with a slow handler is answered (Fastify: receiving the request)", async () => {
    const { port, closes } = await start({ requestTimeout: 800 })
    const ok = await rawHttp(port, getRequest('/slow'), { until: 'response' })
    expect(ok.responses[0]?.status).toBe(200)
    const startedAt = performance.now()
    const cut = await rawHttp(
      port,
      'POST /body HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: 100\r\n\r\nabc',
    )
    expect(cut.at - startedAt).toBeGreaterThanOrEqual(800 - EARLY_MS)
    expect(cut.at - startedAt).toBeLessThan(800 + SWEEP + LATE_MS)
    const reply = cut.responses[0]
    expect(reply?.status).toBe(408)
    expect(reply?.headers['content-type']).toBe('application/json')
    expect(JSON.parse(reply?.body.toString() ?? '')).toEqual({
      error: 'Request Timeout',
      message: 'Client Timeout',
      statusCode: 408,
    })
    await settle()
    expect(closes.map((r) => r.closeReason)).toContain('request_timeout')
  })

  it("with an adopted requestTimeout, a route's own requestTimeout still bounds the whole exchange", async () => {
    const { port, closes } = await start({ requestTimeout: 5_000 })
    const startedAt = performance.now()
    const cut = await rawHttp(port, getRequest('/slow-limited'))
    expect(cut.at - startedAt).toBeGreaterThanOrEqual(600 - EARLY_MS)
    expect(cut.at - startedAt).toBeLessThan(600 + SWEEP + LATE_MS)
    await settle()
    expect(closes.map((r) => r.closeReason)).toEqual(['request_timeout'])
  })

  it("requestTimeout also bounds a silent connection's first head, as Node's: Fastify's JSON 408 at it (request_headers_timeout)", async () => {
    const { app, port, closes } = await start({ requestTimeout: 700 })
    expect(app.connguard.options.headersTimeout).toBe(700)
    expect(app.connguard.options.sources.headersTimeout).toBe('fastify')
    const startedAt = performance.now()
    const result = await rawHttp(port, '')
    expect(result.at - startedAt).toBeGreaterThanOrEqual(700 - EARLY_MS)
    expect(result.at - startedAt).toBeLessThan(700 + SWEEP + LATE_MS)
    expect(result.responses[0]?.status).toBe(408)
    expect(result.responses[0]?.headers['content-type']).toBe('application/json')
    await settle()
    expect(closes.map((r) => r.closeReason)).toEqual(['request_headers_timeout'])
  })

  it('maxRequestsPerSocket: adopted; the last response says Connection: close', async () => {
    const { app, port } = await start({ maxRequestsPerSocket: 2 })
    expect(app.connguard.options.maxRequestsPerConnection).toBe(2)
    expect(app.connguard.options.sources.maxRequestsPerConnection).toBe('fastify')
    const result = await rawHttp(port, getRequest('/') + getRequest('/'))
    expect(result.responses.map((r) => r.status)).toEqual([200, 200])
    expect(result.responses[1]?.headers.connection).toBe('close')
  })

  it('an explicit connguard option wins and warns once, naming the Fastify option it replaced', async () => {
    const { app, port } = await start({ keepAliveTimeout: 5_000 }, { keepAliveTimeout: 2_000 })
    expect(app.connguard.options.keepAliveTimeout).toBe(2_000)
    expect(app.connguard.options.sources.keepAliveTimeout).toBe('connguard')
    const res = await rawHttp(port, getRequest('/'), { until: 'response' })
    expect(res.responses[0]?.headers['keep-alive']).toBe('timeout=2')
    await warningsSettled()
    expect(warnings).toEqual([
      {
        code: 'CONNGUARD_WARN_SETTING_REPLACED',
        message: expect.stringContaining(
          "option keepAliveTimeout: 2000 ms replaces Fastify's keepAliveTimeout: 5000 ms",
        ),
      },
    ])
  })

  it('the values Fastify set come back after close()', async () => {
    const { app } = await start({ keepAliveTimeout: 1_000, requestTimeout: 10_000 })
    expect(app.server.requestTimeout).toBe(0)
    app.connguard.close()
    expect(app.server.keepAliveTimeout).toBe(1_000)
    expect(app.server.requestTimeout).toBe(10_000)
  })
})

describe("timeouts answer through Fastify's clientErrorHandler", () => {
  it("the default handler: Fastify's JSON 408 with its Content-Length, on a stalled head", async () => {
    const { port, closes } = await start({}, { headersTimeout: 500 })
    const startedAt = performance.now()
    const result = await rawHttp(port, 'GET / HTTP/1.1\r\nHost: x\r\n')
    expect(result.at - startedAt).toBeLessThan(500 + SWEEP + LATE_MS)
    const body = '{"error":"Request Timeout","message":"Client Timeout","statusCode":408}'
    expect(result.responses[0]?.status).toBe(408)
    expect(result.responses[0]?.headers['content-length']).toBe(String(body.length))
    expect(result.responses[0]?.body.toString()).toBe(body)
    await settle()
    expect(closes.map((r) => r.closeReason)).toEqual(['request_headers_timeout'])
  })

  it("the application's own handler is called with Node's ERR_HTTP_REQUEST_TIMEOUT and answers", async () => {
    const codes: unknown[] = []
    const { port, closes } = await start(
      {
        clientErrorHandler(err, socket) {
          codes.push((err as { code?: string }).code)
          socket.end('HTTP/1.1 408 Request Timeout\r\nX-Handler: mine\r\nContent-Length: 0\r\n\r\n')
        },
      },
      { headersTimeout: 500 },
    )
    const result = await rawHttp(port, 'GET / HTTP/1.1\r\nHost: x\r\n')
    expect(result.responses[0]?.status).toBe(408)
    expect(result.responses[0]?.headers['x-handler']).toBe('mine')
    expect(codes).toEqual(['ERR_HTTP_REQUEST_TIMEOUT'])
    await settle()
    expect(closes.map((r) => r.closeReason)).toEqual(['request_headers_timeout'])
  })
})

describe('stay in force as Fastify documents them', () => {
  it('connectionTimeout: a silent connection is closed by it (Node socket timeout), long before connguard would', async () => {
    const { port } = await start({ connectionTimeout: 600 })
    const result = await silentTcp(port)
    expect(result.heldMs).toBeGreaterThanOrEqual(600 - EARLY_MS)
    expect(result.heldMs).toBeLessThan(600 + LATE_MS + 200)
  })

  it('http2SessionTimeout: an idle session is closed by it', async () => {
    const { port } = await start({ http2: true, http2SessionTimeout: 600 } as FastifyServerOptions)
    const client = http2.connect(`http://127.0.0.1:${port}`)
    client.on('error', () => {})
    const openedAt = performance.now()
    await new Promise<void>((resolve) => client.once('connect', () => resolve()))
    const closedAt = await new Promise<number>((resolve) => {
      const timer = setTimeout(() => resolve(Number.NaN), 5_000)
      client.once('close', () => {
        clearTimeout(timer)
        resolve(performance.now())
      })
    })
    client.destroy()
    expect(closedAt - openedAt).toBeGreaterThanOrEqual(600 - EARLY_MS)
    expect(closedAt - openedAt).toBeLessThan(600 + LATE_MS + 600)
  })

  it('onRequestAbort hooks run when the client aborts a request', async () => {
    let aborted = 0
    const { port } = await start({}, {}, (app) => {
      app.addHook('onRequestAbort', (_request, done) => {
        aborted++
        done()
      })
    })
    const conn = await openSocket(port)
    conn.send(getRequest('/slow'))
    await new Promise((r) => setTimeout(r, 200))
    conn.destroy()
    const until = performance.now() + 2_000
    while (aborted === 0 && performance.now() < until) await new Promise((r) => setTimeout(r, 20))
    expect(aborted).toBe(1)
  })
})

describe('routes registered before the plugin', () => {
  it('are named in a warning: their config.connguard is not applied', async () => {
    await start({}, {}, (app) => {
      app.get('/early', { config: { connguard: { requestTimeout: 5 } } }, async () => 'early')
      app.post('/early-post', async () => 'early')
      app.register(async (sub) => sub.get('/c', async () => 'c'), { prefix: '/p' })
    })
    await warningsSettled()
    expect(warnings.map((w) => w.code)).toEqual(['CONNGUARD_WARN_ROUTES_BEFORE_PLUGIN'])
    expect(warnings[0]?.message).toContain('GET /early, POST /early-post, GET /p/c')
  })
})
