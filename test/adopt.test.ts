/**
 * Adopt, never override (plain node:http / node:https, as Express serves through them): a
 * timeout the application set on its server before `attach` becomes the default of the
 * matching connguard option and is enforced by the guard; an option given to connguard
 * explicitly wins and says so once (CONNGUARD_WARN_SETTING_REPLACED). A header or request
 * timeout is answered through the server's 'clientError' listeners, as Node answers its own.
 * Every case runs over real sockets on 127.0.0.1, on whichever Node runs the suite.
 */
import http from 'node:http'
import https from 'node:https'
import { performance } from 'node:perf_hooks'
import { type ConnectionRecord, ConnectionTracker } from '@connguard/core'
import { NODE_DEFAULTS } from '@connguard/core/internal'
import { connguard as expressGuard } from '@connguard/express'
import express from 'express'
import { afterEach, describe, expect, it } from 'vitest'
import { getRequest, partialClientHello, rawHttp } from './helpers/clients.js'
import { EARLY_MS, expectKeepAliveClose, LATE_MS } from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'
import { captureWarnings, warningsSettled } from './helpers/warnings.js'

const SWEEP = 50
const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/** Warnings with a connguard code, from now on; the once-per-message memory cleared. */
const warnings = captureWarnings()

const hello: http.RequestListener = (_req, res) => res.end('hello')

async function start(
  server: http.Server | https.Server,
  guard: ConnectionTracker,
): Promise<{ port: number; closes: ConnectionRecord[] }> {
  const closes: ConnectionRecord[] = []
  guard.on('close', (r) => closes.push(r))
  guard.attach(server)
  const port = await listen(server)
  cleanups.push(async () => {
    guard.close()
    await closeServer(server)
  })
  return { port, closes }
}

/** Sends an unfinished head and waits for the server to end the connection. */
async function stalledHead(port: number) {
  const startedAt = performance.now()
  const result = await rawHttp(port, 'GET / HTTP/1.1\r\nHost: x\r\n')
  return { ...result, heldMs: result.at - startedAt }
}

describe('adopted from the Node server', () => {
  it("Node's defaults the guard compares with are the running Node's", () => {
    // A setting equal to Node's default is not the application's choice: if a Node changes one
    // (as it may), this fails and NODE_DEFAULTS follows it.
    const plain = new http.Server()
    const secure = new https.Server()
    const handshake = Object.getOwnPropertySymbols(secure).find(
      (s) => s.description === 'handshake-timeout',
    ) as symbol
    expect({
      headersTimeout: plain.headersTimeout,
      requestTimeout: plain.requestTimeout,
      keepAliveTimeout: plain.keepAliveTimeout,
      maxRequestsPerSocket: plain.maxRequestsPerSocket ?? 0,
      handshakeTimeout: (secure as unknown as Record<symbol, number>)[handshake],
    }).toEqual(NODE_DEFAULTS)
  })

  it('nothing set: every option keeps its default and says so', async () => {
    const guard = new ConnectionTracker({ sweepInterval: SWEEP })
    await start(http.createServer(hello), guard)
    expect(guard.options.keepAliveTimeout).toBe(72_000)
    expect(guard.options.headersTimeout).toBe(30_000)
    expect(guard.options.requestTimeout).toBe(0)
    expect(guard.options.sources.keepAliveTimeout).toBe('default')
    expect(guard.options.sources.headersTimeout).toBe('default')
    expect(guard.options.sources.sweepInterval).toBe('connguard')
    await warningsSettled()
    expect(warnings).toEqual([])
  })

  it('server.keepAliveTimeout: advertised and enforced by the guard (keep_alive_timeout)', async () => {
    const server = http.createServer(hello)
    server.keepAliveTimeout = 1_000
    const guard = new ConnectionTracker({ sweepInterval: SWEEP })
    const { port, closes } = await start(server, guard)
    expect(guard.options.keepAliveTimeout).toBe(1_000)
    expect(guard.options.sources.keepAliveTimeout).toBe('server')
    await expectKeepAliveClose(port, 1_000, SWEEP)
    await new Promise((r) => setTimeout(r, 20))
    expect(closes.map((r) => r.closeReason)).toEqual(['keep_alive_timeout'])
  })

  it("server.headersTimeout: a stalled head is cut at it, promptly (Node's own check runs every 30 s), with Node's raw 408", async () => {
    const server = http.createServer(hello)
    server.headersTimeout = 600
    const guard = new ConnectionTracker({ sweepInterval: SWEEP })
    const { port, closes } = await start(server, guard)
    expect(guard.options.headersTimeout).toBe(600)
    expect(server.headersTimeout).toBe(0) // Node's check off: the guard's is in force
    const result = await stalledHead(port)
    expect(result.heldMs).toBeGreaterThanOrEqual(600 - EARLY_MS)
    expect(result.heldMs).toBeLessThan(600 + SWEEP + LATE_MS)
    expect(result.received.toString('latin1')).toMatch(/^HTTP\/1\.1 408 Request Timeout\r\n/)
    await new Promise((r) => setTimeout(r, 20))
    expect(closes.map((r) => r.closeReason)).toEqual(['request_headers_timeout'])
    guard.close()
    expect(server.headersTimeout).toBe(600) // restored
  })

  it("server.requestTimeout bounds receiving the request, as Node's: a slow body is cut, a slow response is not", async () => {
    const server = http.createServer((req, res) => {
      req.resume()
      req.on('end', () => setTimeout(() => res.end('late'), 1_500))
    })
    server.requestTimeout = 800
    server.headersTimeout = 800
    const guard = new ConnectionTracker({ sweepInterval: SWEEP })
    const { port, closes } = await start(server, guard)
    expect(guard.options.requestTimeout).toBe(800)
    expect(guard.options.requestTimeoutUntil).toBe('received')
    // The whole request in time, its response 1.5 s later: answered.
    const ok = await rawHttp(port, `${getRequest('/')}`, { until: 'response' })
    expect(ok.responses[0]?.status).toBe(200)
    // A body that never completes: 408 at 800 ms.
    const startedAt = performance.now()
    const cut = await rawHttp(port, 'POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\nabc')
    expect(cut.at - startedAt).toBeGreaterThanOrEqual(800 - EARLY_MS)
    expect(cut.at - startedAt).toBeLessThan(800 + SWEEP + LATE_MS)
    expect(cut.responses[0]?.status).toBe(408)
    await new Promise((r) => setTimeout(r, 20))
    expect(closes.map((r) => r.closeReason)).toContain('request_timeout')
  })

  it('https handshakeTimeout: a stalled handshake is cut at it (tls_handshake_timeout)', async () => {
    const server = https.createServer({ ...tlsOptions, handshakeTimeout: 700 }, hello)
    const guard = new ConnectionTracker({ sweepInterval: SWEEP })
    const { port, closes } = await start(server, guard)
    expect(guard.options.handshakeTimeout).toBe(700)
    expect(guard.options.sources.handshakeTimeout).toBe('server')
    const result = await partialClientHello(port)
    expect(result.heldMs).toBeGreaterThanOrEqual(700 - EARLY_MS)
    expect(result.heldMs).toBeLessThan(700 + SWEEP + LATE_MS)
    await new Promise((r) => setTimeout(r, 20))
    expect(closes.map((r) => r.closeReason)).toEqual(['tls_handshake_timeout'])
  })

  it('server.maxRequestsPerSocket: adopted as maxRequestsPerConnection; the last response says Connection: close', async () => {
    const server = http.createServer(hello)
    server.maxRequestsPerSocket = 2
    const guard = new ConnectionTracker({ sweepInterval: SWEEP })
    const { port, closes } = await start(server, guard)
    expect(guard.options.maxRequestsPerConnection).toBe(2)
    const result = await rawHttp(port, getRequest('/') + getRequest('/'))
    expect(result.responses.map((r) => r.status)).toEqual([200, 200])
    expect(result.responses[1]?.headers.connection).toBe('close')
    await new Promise((r) => setTimeout(r, 20))
    expect(closes.map((r) => r.closeReason)).toEqual(['max_requests_per_connection'])
  })

  it('an explicit connguard option wins, and a warning names what it replaced (once)', async () => {
    for (let i = 0; i < 2; i++) {
      const server = http.createServer(hello)
      server.keepAliveTimeout = 10_000
      const guard = new ConnectionTracker({ keepAliveTimeout: 2_000, sweepInterval: SWEEP })
      await start(server, guard)
      expect(guard.options.keepAliveTimeout).toBe(2_000)
      expect(guard.options.sources.keepAliveTimeout).toBe('connguard')
      expect(server.keepAliveTimeout).toBe(2_000)
    }
    await warningsSettled()
    expect(warnings).toEqual([
      {
        code: 'CONNGUARD_WARN_SETTING_REPLACED',
        message: expect.stringContaining(
          'option keepAliveTimeout: 2000 ms replaces server.keepAliveTimeout: 10000 ms',
        ),
      },
    ])
  })

  it.skipIf(
    typeof (new http.Server() as { keepAliveTimeoutBuffer?: unknown }).keepAliveTimeoutBuffer !==
      'number',
  )(
    "server.keepAliveTimeoutBuffer above Node's 1 s (Node 22, 24.6+): replaced while attached, and said",
    async () => {
      const server = http.createServer(hello) as http.Server & { keepAliveTimeoutBuffer: number }
      server.keepAliveTimeoutBuffer = 5_000
      const guard = new ConnectionTracker({ sweepInterval: SWEEP })
      await start(server, guard)
      expect(server.keepAliveTimeoutBuffer).toBe(2 * SWEEP + 1_000)
      await warningsSettled()
      expect(warnings.map((w) => w.code)).toEqual(['CONNGUARD_WARN_KEEP_ALIVE_BUFFER_REPLACED'])
      guard.close()
      expect(server.keepAliveTimeoutBuffer).toBe(5_000)
    },
  )

  it('a second server with its own value: not adopted, and a warning says so', async () => {
    const guard = new ConnectionTracker({ sweepInterval: SWEEP })
    const first = http.createServer(hello)
    first.keepAliveTimeout = 3_000
    await start(first, guard)
    const second = http.createServer(hello)
    second.keepAliveTimeout = 4_000
    guard.attach(second)
    cleanups.push(() => closeServer(second))
    expect(guard.options.keepAliveTimeout).toBe(3_000)
    await warningsSettled()
    expect(warnings.map((w) => w.code)).toEqual(['CONNGUARD_WARN_SETTING_NOT_ADOPTED'])
    expect(warnings[0]?.message).toContain('server.keepAliveTimeout: 4000 ms')
  })
})

describe("timeouts answer through the server's 'clientError' listeners", () => {
  it("a listener gets Node's ERR_HTTP_REQUEST_TIMEOUT and answers; the record keeps the guard's reason", async () => {
    const server = http.createServer(hello)
    const seen: { code: unknown; reason: unknown }[] = []
    server.on('clientError', (err: Error & { code?: string; reason?: string }, socket) => {
      seen.push({ code: err.code, reason: err.reason })
      socket.end('HTTP/1.1 408 Request Timeout\r\nX-Mine: yes\r\nContent-Length: 4\r\n\r\nmine')
    })
    const guard = new ConnectionTracker({ headersTimeout: 500, sweepInterval: SWEEP })
    const { port, closes } = await start(server, guard)
    const result = await stalledHead(port)
    expect(result.responses[0]?.status).toBe(408)
    expect(result.responses[0]?.headers['x-mine']).toBe('yes')
    expect(result.heldMs).toBeLessThan(500 + SWEEP + LATE_MS)
    expect(seen).toEqual([{ code: 'ERR_HTTP_REQUEST_TIMEOUT', reason: 'request_headers_timeout' }])
    await new Promise((r) => setTimeout(r, 20))
    expect(closes.map((r) => r.closeReason)).toEqual(['request_headers_timeout'])
    expect(closes[0]?.errorCode).toBe(null)
  })

  it('a listener that only logs: nothing is written, and the guard still closes the connection', async () => {
    const server = http.createServer(hello)
    let calls = 0
    server.on('clientError', () => {
      calls++
    })
    const guard = new ConnectionTracker({ headersTimeout: 500, sweepInterval: SWEEP })
    const { port, closes } = await start(server, guard)
    const result = await stalledHead(port)
    expect(result.received.length).toBe(0)
    expect(result.heldMs).toBeLessThan(500 + SWEEP + LATE_MS)
    expect(calls).toBe(1)
    await new Promise((r) => setTimeout(r, 20))
    expect(closes.map((r) => r.closeReason)).toEqual(['request_headers_timeout'])
  })

  it("a listener that destroys with the error (as Fastify's does) is called once", async () => {
    const server = http.createServer(hello)
    let calls = 0
    server.on('clientError', (err, socket) => {
      calls++
      if (!socket.destroyed) {
        socket.write('HTTP/1.1 408 Request Timeout\r\nContent-Length: 0\r\n\r\n')
        socket.destroy(err)
      }
    })
    const guard = new ConnectionTracker({ headersTimeout: 500, sweepInterval: SWEEP })
    const { port } = await start(server, guard)
    const result = await stalledHead(port)
    expect(result.received.toString('latin1')).toMatch(/^HTTP\/1\.1 408 /)
    await new Promise((r) => setTimeout(r, 50))
    expect(calls).toBe(1)
  })
})

describe('Express (its server is a node:http server)', () => {
  it("app.listen()'s server: the keepAliveTimeout set on it is adopted by guard.attach", async () => {
    const app = express()
    const guard = expressGuard({ sweepInterval: SWEEP })
    app.use(guard)
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    const server = http.createServer(app)
    server.keepAliveTimeout = 1_000
    const { port, closes } = await start(server, guard.tracker)
    expect(guard.tracker.options.sources.keepAliveTimeout).toBe('server')
    await expectKeepAliveClose(port, 1_000, SWEEP)
    await new Promise((r) => setTimeout(r, 20))
    expect(closes.map((r) => r.closeReason)).toEqual(['keep_alive_timeout'])
  })
})
