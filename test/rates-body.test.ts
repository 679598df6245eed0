/**
 * minBodyRate over real sockets on 127.0.0.1, through both adapters (Fastify 5, Express 5;
 * Express 4 for the slow-body cut), plain HTTP and HTTPS: a body below the rate is cut with
 * `min_request_body_data_rate` and a 408; a healthy body, and a body the application is slow
 * to read, are not; per-route and per-request overrides switch the rate off.
 *
 * The rate is 1000 B/s with a 500 ms grace, so windows of max(500, 1000) = 1000 ms from the
 * request head; the sweep runs every 50 ms. Tests run one after another: they measure time.
 * CONNGUARD_TIMINGS=1 prints the measured close times as a table at the end.
 */
import http from 'node:http'
import https from 'node:https'
import type { Readable } from 'node:stream'
import { setTimeout as delay } from 'node:timers/promises'
import {
  ConnectionRecord,
  type ConnectionTracker,
  type ConnectionTrackerOptions,
  type RequestController,
  type RequestOverrides,
} from '@connguard/core'
import { type ConnguardRequest, connguard as expressGuard } from '@connguard/express'
import { connguard as fastifyGuard } from '@connguard/fastify'
import express5 from 'express'
import express4 from 'express4'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { openSocket, slowUpload } from './helpers/clients.js'
import { printTimings, type TimingRow } from './helpers/guard-timing.js'
import { parseResponse } from './helpers/http-response.js'
import {
  type CloseWatcher,
  EARLY_MS,
  expectConsistentRecord,
  LATE_MS,
  watchCloses,
} from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const SWEEP = 50
const GRACE = 500
/** max(GRACE, 1000): the window the rate is measured over. */
const WINDOW = 1_000
const RATE = { bytesPerSecond: 1_000, graceMs: GRACE }
/** Every other deadline, short, so a healthy body outlasts each of them several times. */
const SHORT = 500
const OPTIONS: ConnectionTrackerOptions = {
  sweepInterval: SWEEP,
  minBodyRate: RATE,
  minResponseRate: { bytesPerSecond: 1_000, graceMs: SHORT },
  headersTimeout: SHORT,
  keepAliveTimeout: SHORT,
  handshakeTimeout: SHORT,
}
/** How long `/late` waits before it reads the body. */
const LATE_READ_MS = 2_000

type Adapter = 'Fastify' | 'Express 5' | 'Express 4'

/** What each route does with its request, the same in every adapter. */
type Route = (ctrl: RequestController, body: Readable) => Promise<string>

async function count(body: Readable): Promise<number> {
  let bytes = 0
  for await (const chunk of body) bytes += (chunk as Buffer).length
  return bytes
}

/**
 * Whether the accepted TCP socket under `req` (the TLSSocket's parent under TLS) is being
 * read: false once Node stopped reading a body nobody consumes.
 */
function rawHandleReading(req: Readable): boolean | undefined {
  const socket = (req as http.IncomingMessage).socket as unknown as {
    _parent?: { _handle?: { reading?: boolean } }
    _handle?: { reading?: boolean }
  }
  return (socket._parent ?? socket)._handle?.reading
}

const ROUTES: Record<string, Route> = {
  '/upload': async (_ctrl, body) => String(await count(body)),
  // Answers `<bytes>:<was the server reading the connection when the handler began to>`.
  '/late': async (_ctrl, body) => {
    await delay(LATE_READ_MS)
    const reading = rawHandleReading(body)
    return `${await count(body)}:${reading}`
  },
  // Registered with a route override `{ minBodyRate: false }`.
  '/free': async (_ctrl, body) => String(await count(body)),
  '/self-free': async (ctrl, body) => {
    const applied = ctrl.override({ minBodyRate: false })
    return `${applied}:${await count(body)}`
  },
  '/record': async (ctrl, body) => {
    const rec = ctrl.record
    await count(body)
    return JSON.stringify({
      isRecord: rec instanceof ConnectionRecord,
      id: rec?.id,
      state: rec?.state,
      remotePort: rec?.remotePort,
      secure: rec?.secure,
      requests: rec?.requests,
    })
  },
  '/bad-override': async (ctrl, body) => {
    let code = 'none'
    try {
      ctrl.override({ minBodyRate: { bytesPerSecond: 0, graceMs: 100 } })
    } catch (err) {
      code = String((err as { code?: unknown }).code)
    }
    await count(body)
    return code
  },
}

interface Started {
  port: number
  tracker: ConnectionTracker
  closes: CloseWatcher
}

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

async function startFastify(secure: boolean, options: ConnectionTrackerOptions): Promise<Started> {
  const app = (secure ? Fastify({ https: tlsOptions }) : Fastify()) as unknown as FastifyInstance
  await app.register(fastifyGuard, options)
  // Hand the body to the handler as a stream: the handler decides when it is read.
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => {
    done(null, payload)
  })
  for (const [path, route] of Object.entries(ROUTES)) {
    const config: { connguard?: RequestOverrides } =
      path === '/free' ? { connguard: { minBodyRate: false } } : {}
    app.post(path, { config }, (request) => route(request.connguard, request.body as Readable))
  }
  await app.ready()
  const closes = watchCloses(app.connguard)
  const port = await listen(app.server)
  cleanups.push(async () => {
    await closeServer(app.server)
    await app.close()
    closes.stop()
    for (const rec of closes.records) expectConsistentRecord(rec)
  })
  return { port, tracker: app.connguard, closes }
}

async function startExpress(
  version: 4 | 5,
  secure: boolean,
  options: ConnectionTrackerOptions,
): Promise<Started> {
  const app = version === 5 ? express5() : express4()
  const guard = expressGuard(options)
  app.use(guard)
  for (const [path, route] of Object.entries(ROUTES)) {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse, next: () => void) => {
      route((req as ConnguardRequest).connguard, req).then(
        (text) => (res as express5.Response).send(text),
        next,
      )
    }
    if (path === '/free') app.post(path, guard.route({ minBodyRate: false }), handler)
    else app.post(path, handler)
  }
  const server = secure ? https.createServer(tlsOptions, app) : http.createServer(app)
  guard.attach(server)
  const closes = watchCloses(guard.tracker)
  const port = await listen(server)
  cleanups.push(async () => {
    guard.tracker.close()
    await closeServer(server)
    closes.stop()
    for (const rec of closes.records) expectConsistentRecord(rec)
  })
  return { port, tracker: guard.tracker, closes }
}

function start(
  adapter: Adapter,
  secure: boolean,
  options: ConnectionTrackerOptions = OPTIONS,
): Promise<Started> {
  if (adapter === 'Fastify') return startFastify(secure, options)
  return startExpress(adapter === 'Express 5' ? 5 : 4, secure, options)
}

/** One POST of `body`, sent at once; the parsed response and the client's local port. */
async function post(port: number, path: string, body: Buffer, secure: boolean) {
  const conn = await openSocket(port, { tls: secure })
  try {
    conn.send(
      `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: ${body.length}\r\n\r\n`,
    )
    conn.send(body)
    const response = await conn.waitFor((buf, eof) => parseResponse(buf, 0, { eof }))
    return { response, clientPort: conn.socket.localPort }
  } finally {
    conn.destroy()
  }
}

const CASES: { adapter: Adapter; transport: 'http' | 'https'; secure: boolean }[] = [
  { adapter: 'Fastify', transport: 'http', secure: false },
  { adapter: 'Fastify', transport: 'https', secure: true },
  { adapter: 'Express 5', transport: 'http', secure: false },
  { adapter: 'Express 5', transport: 'https', secure: true },
  { adapter: 'Express 4', transport: 'http', secure: false },
  { adapter: 'Express 4', transport: 'https', secure: true },
]

describe.each(CASES)('$adapter over $transport', ({ adapter, transport, secure }) => {
  const suite = `${adapter} ${transport}`
  // Express 4 runs the slow-body cut only; the rest is adapter plumbing Express 5 covers.
  const full = adapter !== 'Express 4'
  const itFull: typeof it = full ? it : ((() => undefined) as unknown as typeof it)

  it('cuts a body below the rate with min_request_body_data_rate and a 408', async () => {
    const { port, closes } = await start(adapter, secure)
    // 10 B every 100 ms: 100 B/s (a few hundred on the wire under TLS), rate 1000 B/s.
    const result = await slowUpload(port, {
      tls: secure,
      path: '/upload',
      totalBytes: 100_000,
      chunkBytes: 10,
      intervalMs: 100,
    })
    const rec = await closes.next()
    const clientMs = result.at - result.startedAt
    const serverMs = closes.closedAt(rec) - closes.lastEntered(rec, 'active')
    expect(result.status).toBe(408)
    expect(result.sentBytes).toBeLessThan(100_000)
    expect(rec).toMatchObject({
      closeReason: 'min_request_body_data_rate',
      stateAtClose: 'active',
      requests: 1,
      secure,
    })
    // The first window ends a WINDOW after the head; a check is at most a sweep late.
    for (const [label, ms] of [
      ['client', clientMs],
      ['server', serverMs],
    ] as const) {
      expect(ms, `${label}: cut before the grace period`).toBeGreaterThanOrEqual(GRACE - EARLY_MS)
      expect(ms, `${label}: cut later than 2 windows + sweep + margin`).toBeLessThanOrEqual(
        2 * WINDOW + SWEEP + LATE_MS,
      )
    }
    timings.push({
      suite,
      scenario: 'slow body 100 B/s',
      deadlineMs: WINDOW,
      clientMs,
      serverMs,
      reason: rec.closeReason,
    })
  })

  itFull('completes a body at 10× the rate lasting 3 windows (6× the grace)', async () => {
    const { port, closes } = await start(adapter, secure)
    // 1000 B every 100 ms for 3 s: 10 000 B/s.
    const totalBytes = 31_000
    const result = await slowUpload(port, {
      tls: secure,
      path: '/upload',
      totalBytes,
      chunkBytes: 1_000,
      intervalMs: 100,
    })
    const rec = await closes.next()
    const clientMs = result.at - result.startedAt
    expect(result.status, result.close?.how).toBe(200)
    expect(result.body.toString()).toBe(String(totalBytes))
    expect(clientMs).toBeGreaterThanOrEqual(3 * WINDOW)
    expect(rec).toMatchObject({ closeReason: 'client_closed', stateAtClose: 'idle', requests: 1 })
    timings.push({
      suite,
      scenario: 'body at 10× the rate, 3 s',
      deadlineMs: null,
      clientMs,
      serverMs: rec.duration,
      reason: rec.closeReason,
    })
  })

  itFull('spares a client whose handler waits 2 s before reading a 1 MB body', async () => {
    const { port, closes } = await start(adapter, secure)
    const totalBytes = 1_000_000
    // Sent at once: the server stops reading after its buffers fill, and the client waits.
    const result = await slowUpload(port, {
      tls: secure,
      path: '/late',
      totalBytes,
      chunkBytes: totalBytes,
      intervalMs: 0,
    })
    const rec = await closes.next()
    const clientMs = result.at - result.startedAt
    expect(result.status, result.close?.how).toBe(200)
    // The premise: the server had stopped reading by the time the handler began to.
    expect(result.body.toString()).toBe(`${totalBytes}:false`)
    expect(clientMs).toBeGreaterThanOrEqual(LATE_READ_MS)
    expect(rec).toMatchObject({ closeReason: 'client_closed', stateAtClose: 'idle', requests: 1 })
    timings.push({
      suite,
      scenario: '1 MB, handler reads after 2 s',
      deadlineMs: null,
      clientMs,
      serverMs: rec.duration,
      reason: rec.closeReason,
    })
  })
})

describe.each(['Fastify', 'Express 5'] as const)('%s overrides (http)', (adapter) => {
  /** 10 B every 100 ms for 3.2 s: three windows that would each cut it. */
  const slow = { totalBytes: 330, chunkBytes: 10, intervalMs: 100 }

  it('a route with minBodyRate: false accepts a slow body', async () => {
    const { port, closes } = await start(adapter, false)
    const result = await slowUpload(port, { path: '/free', ...slow })
    const rec = await closes.next()
    const clientMs = result.at - result.startedAt
    expect(result.status, result.close?.how).toBe(200)
    expect(result.body.toString()).toBe('330')
    expect(clientMs).toBeGreaterThanOrEqual(3 * WINDOW)
    expect(rec).toMatchObject({ closeReason: 'client_closed', stateAtClose: 'idle' })
    timings.push({
      suite: `${adapter} http`,
      scenario: 'route minBodyRate: false, 100 B/s',
      deadlineMs: null,
      clientMs,
      serverMs: rec.duration,
      reason: rec.closeReason,
    })
  })

  it('override({ minBodyRate: false }) from the handler accepts a slow body', async () => {
    const { port, closes } = await start(adapter, false)
    const result = await slowUpload(port, { path: '/self-free', ...slow })
    const rec = await closes.next()
    const clientMs = result.at - result.startedAt
    expect(result.status, result.close?.how).toBe(200)
    expect(result.body.toString()).toBe('true:330')
    expect(clientMs).toBeGreaterThanOrEqual(3 * WINDOW)
    expect(rec).toMatchObject({ closeReason: 'client_closed', stateAtClose: 'idle' })
    timings.push({
      suite: `${adapter} http`,
      scenario: 'handler override minBodyRate: false, 100 B/s',
      deadlineMs: null,
      clientMs,
      serverMs: rec.duration,
      reason: rec.closeReason,
    })
  })

  it('connguard.record in a handler is the connection record', async () => {
    const { port, closes } = await start(adapter, false)
    const { response, clientPort } = await post(port, '/record', Buffer.alloc(10), false)
    expect(response.status).toBe(200)
    const seen = JSON.parse(response.body.toString())
    const rec = await closes.forClientPort(clientPort)
    expect(seen).toEqual({
      isRecord: true,
      id: rec.id,
      state: 'active',
      remotePort: clientPort,
      secure: false,
      requests: 1,
    })
  })

  it('an invalid override in a handler throws CONNGUARD_ERR_INVALID_OPTION', async () => {
    const { port } = await start(adapter, false)
    const { response } = await post(port, '/bad-override', Buffer.alloc(10), false)
    expect(response.status).toBe(200)
    expect(response.body.toString()).toBe('CONNGUARD_ERR_INVALID_OPTION')
  })
})

describe('invalid route overrides fail at registration', () => {
  const bad = { minBodyRate: { bytesPerSecond: 0 } } as never

  it('Fastify: config.connguard { minBodyRate: { bytesPerSecond: 0 } }', async () => {
    const app = Fastify()
    try {
      await app.register(fastifyGuard, { sweepInterval: SWEEP })
      expect(() => app.post('/x', { config: { connguard: bad } }, async () => 'x')).toThrow(
        expect.objectContaining({ code: 'CONNGUARD_ERR_INVALID_OPTION' }),
      )
    } finally {
      await app.close().catch(() => {})
    }
  })

  it('Express: guard.route({ minBodyRate: { bytesPerSecond: 0 } })', () => {
    const guard = expressGuard({ sweepInterval: SWEEP })
    try {
      expect(() => guard.route(bad)).toThrow(
        expect.objectContaining({ code: 'CONNGUARD_ERR_INVALID_OPTION' }),
      )
    } finally {
      guard.tracker.close()
    }
  })
})

describe('Fastify with default options', () => {
  it('cuts a POST of 10 bytes every 500 ms (default 240 B/s after 5 s)', async () => {
    const app = Fastify()
    await app.register(fastifyGuard)
    app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, (_r, b, done) =>
      done(null, b),
    )
    app.post('/upload', async (request) => String((request.body as Buffer).length))
    await app.ready()
    const closes = watchCloses(app.connguard)
    const port = await listen(app.server)
    cleanups.push(async () => {
      await closeServer(app.server)
      await app.close()
      closes.stop()
    })
    const result = await slowUpload(port, {
      path: '/upload',
      totalBytes: 10_000,
      chunkBytes: 10,
      intervalMs: 500,
      timeoutMs: 15_000,
    })
    const rec = await closes.next()
    const clientMs = result.at - result.startedAt
    expect(result.status).toBe(408)
    expect(rec).toMatchObject({ closeReason: 'min_request_body_data_rate', stateAtClose: 'active' })
    expect(clientMs).toBeGreaterThanOrEqual(5_000 - EARLY_MS)
    expect(clientMs).toBeLessThanOrEqual(11_000)
    timings.push({
      suite: 'Fastify http',
      scenario: 'defaults, 10 B every 500 ms',
      deadlineMs: 5_000,
      clientMs,
      serverMs: closes.closedAt(rec) - closes.lastEntered(rec, 'active'),
      reason: rec.closeReason,
    })
  }, 20_000)
})
