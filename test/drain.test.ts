/**
 * Graceful drain over real sockets on loopback, for both adapters: `tracker.drain()` /
 * `guard.drain()` (Express 5) and Fastify's `app.close()`.
 *
 * What a drain must do: new, handshaking and idle connections close with `app_shutdown`
 * once they stayed idle for the idle grace (a request the client already sent is served
 * first); a request in flight finishes, its response says `Connection: close`, then the
 * connection closes with `app_shutdown`; what is left at the timeout (an upgraded
 * connection, a hanging handler, a slow client) is closed with `app_shutdown_timeout`; a
 * connection accepted while the listening socket is still open is served with
 * `Connection: close`. The promise resolves, once nothing is left, with the count of each
 * outcome. Zero loss under load, HTTP/2, delay and readiness: drain-load.test.ts.
 *
 * The sweep runs every 50 ms; a timed close must land in [timeout − 20 ms, timeout + 400 ms]
 * (the drain timeout is a timer of its own, not a sweep). Tests run one after another: they
 * measure time. CONNGUARD_TIMINGS=1 prints a table.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import http from 'node:http'
import https from 'node:https'
import type net from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as delay } from 'node:timers/promises'
import {
  type ConnectionRecord,
  ConnectionTracker,
  type ConnectionTrackerOptions,
  type DrainOptions,
  type DrainResult,
  readinessHandler,
} from '@connguard/core'
import { connguard as expressGuard } from '@connguard/express'
import { type ConnguardFastifyOptions, connguard as fastifyGuard } from '@connguard/fastify'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { captureClientHello, getRequest } from './helpers/clients.js'
import { type Client, destroyClients, open } from './helpers/dial.js'
import { printTimings, type TimingRow } from './helpers/guard-timing.js'
import { parseResponses } from './helpers/http-response.js'
import {
  type CloseWatcher,
  expectConsistentRecord,
  sleep,
  waitUntil,
  watchCloses,
} from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const SWEEP = 50
const EARLY = 20
const LATE = 400
/** "At once": a close the drain does synchronously, seen by the client within this. */
const AT_ONCE = 200
/** Deadlines that must never fire in these scenarios. */
const FAR = 20_000
/** The idle grace these tests give (`idleGrace` / `drainIdleGrace`). */
const GRACE = 300

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

// ---- both adapters behind one shape --------------------------------------------------------

type AdapterName = 'Fastify' | 'Express 5'

interface Started {
  port: number
  server: http.Server
  tracker: ConnectionTracker
  closes: CloseWatcher
  /** 'request' events on the server: how many requests reached the application. */
  requests(): number
  /** `tracker.drain()` for Fastify, `guard.drain()` for Express. */
  drain(options?: DrainOptions): Promise<DrainResult>
  /** Fastify only. */
  app?: FastifyInstance
}

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  destroyClients()
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const UPGRADE_101 =
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'

/** The application's 'upgrade' handler: answers 101 and ends when the peer does (as `ws`). */
function onUpgrade(_req: http.IncomingMessage, socket: net.Socket): void {
  socket.on('error', () => {})
  socket.write(UPGRADE_101)
  socket.on('end', () => socket.end())
}

/**
 * Routes: `GET /` → 'ok'; `GET /slow?ms=N` → 'slow' after N ms; `GET /hang` never answers;
 * `GET /stream?ms=N` sends its head and 'a' at once, then 'b' and the end after N ms;
 * an 'upgrade' listener answering 101. Guarded with `{ sweepInterval: SWEEP, ...options }`;
 * `drainTimeout` is Fastify's plugin option (omitted: the plugin's default).
 */
async function start(
  adapter: AdapterName,
  secure: boolean,
  options: ConnectionTrackerOptions,
  fastifyOptions: Pick<
    ConnguardFastifyOptions,
    'drainTimeout' | 'drainIdleGrace' | 'drainDelay'
  > = {},
): Promise<Started> {
  const guardOptions = { sweepInterval: SWEEP, ...options }
  let server: http.Server
  let tracker: ConnectionTracker
  let drain: Started['drain']
  let fastify: FastifyInstance | undefined
  if (adapter === 'Fastify') {
    const app = (secure ? Fastify({ https: tlsOptions }) : Fastify()) as unknown as FastifyInstance
    fastify = app
    await app.register(fastifyGuard, { ...guardOptions, ...fastifyOptions })
    app.get('/', async () => 'ok')
    app.get('/slow', async (request) => {
      await delay(Number((request.query as { ms?: string }).ms ?? 0))
      return 'slow'
    })
    app.get('/hang', () => new Promise<never>(() => {}))
    app.get('/stream', (request, reply) => {
      reply.hijack()
      reply.raw.writeHead(200, { 'Content-Type': 'text/plain' })
      reply.raw.write('a')
      setTimeout(() => reply.raw.end('b'), Number((request.query as { ms?: string }).ms ?? 0))
    })
    await app.ready()
    server = app.server
    tracker = app.connguard
    drain = (o) => app.connguard.drain(o)
    cleanups.push(() => app.close())
  } else {
    const app = express()
    const guard = expressGuard(guardOptions)
    app.use(guard)
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    app.get('/slow', (req, res) => {
      setTimeout(() => res.send('slow'), Number(req.query.ms ?? 0))
    })
    app.get('/hang', () => {})
    app.get('/stream', (req, res) => {
      res.writeHead(200, { 'Content-Type': 'text/plain' })
      res.write('a')
      setTimeout(() => res.end('b'), Number(req.query.ms ?? 0))
    })
    server = secure ? https.createServer(tlsOptions, app) : http.createServer(app)
    guard.attach(server)
    tracker = guard.tracker
    drain = (o) => guard.drain(o)
    cleanups.push(() => tracker.close())
  }
  server.on('upgrade', onUpgrade)
  let requests = 0
  server.on('request', () => {
    requests++
  })
  const closes = watchCloses(tracker)
  cleanups.push(() => {
    closes.stop()
    for (const rec of closes.records) expectConsistentRecord(rec)
  })
  const port = await listen(server)
  cleanups.push(() => closeServer(server))
  return {
    port,
    server,
    tracker,
    closes,
    requests: () => requests,
    drain,
    ...(fastify && { app: fastify }),
  }
}

/** Open a connection, get one 200 on it, and leave it idle (keep-alive). */
async function idleClient(port: number, secure: boolean): Promise<Client> {
  const c = open(port, { secure })
  const res = await c.get('/')
  expect(res.status).toBe(200)
  return c
}

/** A connection upgraded (101) and left open. */
async function upgradedClient(port: number, secure: boolean): Promise<Client> {
  const c = open(port, { secure })
  expect(await c.ready).toBe(true)
  c.send(
    getRequest('/', {
      Connection: 'Upgrade',
      Upgrade: 'websocket',
      'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
      'Sec-WebSocket-Version': '13',
    }),
  )
  await waitUntil(() => c.received().includes('\r\n\r\n'), { what: '101 received' })
  expect(c.received().toString('latin1')).toMatch(/^HTTP\/1\.1 101 /)
  return c
}

/** Raw TCP that sends half a real ClientHello and stalls (a handshake that never completes). */
async function stalledHandshake(port: number): Promise<Client> {
  const hello = await captureClientHello()
  const c = open(port)
  expect(await c.ready).toBe(true)
  c.send(hello.subarray(0, Math.floor(hello.length / 2)))
  return c
}

/** A client that sends a request line and then one header line every `intervalMs`, for ever. */
async function slowHeaders(port: number, intervalMs: number): Promise<Client> {
  const c = open(port)
  expect(await c.ready).toBe(true)
  c.send('GET / HTTP/1.1\r\nHost: localhost\r\n')
  let n = 0
  const timer = setInterval(() => {
    n++
    if (!c.send(`X-Slow-${n}: ${n}\r\n`)) clearInterval(timer)
  }, intervalMs)
  c.ended.finally(() => clearInterval(timer)).catch(() => {})
  return c
}

/**
 * A connection opened while draining (the listening socket still open): its request is
 * served with `Connection: close`, then it closes with `app_shutdown`.
 */
async function expectServedDuringDrain(
  s: Started,
  secure: boolean,
): Promise<{ rec: ConnectionRecord; heldMs: number }> {
  const before = s.requests()
  const c = open(s.port, { secure })
  const res = await c.get('/')
  expect(res.status).toBe(200)
  expect(res.headers.connection).toBe('close')
  const ended = await c.ended
  expect(ended.how).not.toBe('destroyed')
  const rec = await s.closes.forClientPort(c.localPort, 3_000)
  expect(rec.closeReason).toBe('app_shutdown')
  expect(rec.requests).toBe(1)
  expect(s.requests()).toBe(before + 1)
  return { rec, heldMs: ended.at - c.openedAt }
}

/** The error code `fn` throws or rejects with (sync throw or rejected promise alike). */
async function errorCode(fn: () => unknown): Promise<string | undefined> {
  try {
    await fn()
  } catch (err) {
    return (err as { code?: string }).code
  }
  return undefined
}

const ADAPTERS: AdapterName[] = ['Fastify', 'Express 5']
const TRANSPORTS = [
  { transport: 'http', secure: false },
  { transport: 'https', secure: true },
]

describe.each(ADAPTERS)('%s', (adapter) => {
  const how = adapter === 'Fastify' ? 'app.connguard.drain' : 'guard.drain'

  describe.each(TRANSPORTS)('over $transport', ({ transport, secure }) => {
    const suite = `${adapter} ${transport}`

    it(`${how}({ timeout: 1500, idleGrace: 300 }): idle/handshake after the grace, in-flight finishes, upgraded forced at the timeout, new ones served with Connection: close`, async () => {
      const TIMEOUT = 1_500
      const HANDLER = 500
      const s = await start(adapter, secure, {
        handshakeTimeout: FAR,
        headersTimeout: FAR,
        keepAliveTimeout: FAR,
      })
      const upgraded = await upgradedClient(s.port, secure)
      const idle = await idleClient(s.port, secure)
      const handshake = secure ? await stalledHandshake(s.port) : null
      const inFlight = open(s.port, { secure })
      let requestSentAt = Number.NaN
      const response = inFlight.ready.then(() => {
        requestSentAt = performance.now()
        return inFlight.get(`/slow?ms=${HANDLER}`)
      })
      response.catch(() => {})
      await waitUntil(
        () => {
          const snap = s.tracker.snapshot()
          return (
            snap.upgraded === 1 &&
            snap.idle === 1 &&
            snap.active === 1 &&
            snap.handshaking === (secure ? 1 : 0)
          )
        },
        { what: 'one upgraded, idle, active (and handshaking) connection' },
      )
      const requestsBefore = s.requests()

      const t0 = performance.now()
      const drained = s.drain({ timeout: TIMEOUT, idleGrace: GRACE })
      let drainedAt = Number.NaN
      drained.then(() => {
        drainedAt = performance.now()
      })

      // `tracker.drain()` leaves the listening socket open (Fastify closes it after its
      // preClose hooks): a connection accepted meanwhile is served, with Connection: close.
      // `guard.drain()` closes the servers it attached to: a new connection is refused.
      await sleep(100)
      const servesLate = adapter === 'Fastify'
      const lateServed = servesLate ? await expectServedDuringDrain(s, secure) : null
      if (!servesLate) {
        expect(s.server.listening).toBe(false)
        expect(await open(s.port, { secure }).ready).toBe(false)
      }

      // Idle (and a stalled handshake): closed once idle for the whole grace.
      const idleEnd = await idle.ended
      expect(idleEnd.how).not.toBe('destroyed')
      expect(idleEnd.at - t0).toBeGreaterThanOrEqual(GRACE - EARLY)
      expect(idleEnd.at - t0).toBeLessThanOrEqual(GRACE + LATE)
      const idleRec = await s.closes.forClientPort(idle.localPort)
      expect(idleRec.closeReason).toBe('app_shutdown')
      expect(idleRec.stateAtClose).toBe('idle')
      let handshakeRow: [string, number, ConnectionRecord] | null = null
      if (handshake !== null) {
        const hsEnd = await handshake.ended
        expect(hsEnd.how).not.toBe('destroyed')
        expect(hsEnd.at - t0).toBeGreaterThanOrEqual(GRACE - EARLY)
        expect(hsEnd.at - t0).toBeLessThanOrEqual(GRACE + LATE)
        const hsRec = await s.closes.forClientPort(handshake.localPort)
        expect(hsRec.closeReason).toBe('app_shutdown')
        expect(hsRec.stateAtClose).toBe('handshaking')
        handshakeRow = ['drain: stalled handshake', hsEnd.at - t0, hsRec]
      }

      // The request in flight completes, says Connection: close, and the connection closes.
      const res = await response
      const answeredAt = performance.now()
      expect(res.status).toBe(200)
      expect(res.body.toString()).toBe('slow')
      expect(res.headers.connection).toBe('close')
      expect(answeredAt - requestSentAt).toBeGreaterThanOrEqual(HANDLER - EARLY)
      const inFlightEnd = await inFlight.ended
      expect(inFlightEnd.how).not.toBe('destroyed')
      expect(inFlightEnd.at - answeredAt).toBeLessThan(AT_ONCE)
      expect(inFlightEnd.at - t0).toBeLessThan(TIMEOUT - 200)
      const inFlightRec = await s.closes.forClientPort(inFlight.localPort)
      expect(inFlightRec.closeReason).toBe('app_shutdown')
      expect(inFlightRec.requests).toBe(1)
      expect(upgraded.isOpen()).toBe(true)

      // The upgraded connection is forced at the timeout.
      const upEnd = await upgraded.ended
      expect(upEnd.how).not.toBe('destroyed')
      const forcedMs = upEnd.at - t0
      expect(forcedMs).toBeGreaterThanOrEqual(TIMEOUT - EARLY)
      expect(forcedMs).toBeLessThanOrEqual(TIMEOUT + LATE)
      const upRec = await s.closes.forClientPort(upgraded.localPort)
      expect(upRec.closeReason).toBe('app_shutdown_timeout')
      expect(upRec.stateAtClose).toBe('upgraded')

      const result = await drained
      expect(result).toEqual({
        // The idle one (and the stalled handshake); the one in flight and the one served
        // during the drain.
        closedIdle: secure ? 2 : 1,
        finished: servesLate ? 2 : 1,
        forced: 1,
      })
      expect(drainedAt - t0).toBeGreaterThanOrEqual(TIMEOUT - EARLY)
      expect(drainedAt - t0).toBeLessThanOrEqual(TIMEOUT + LATE)
      expect(s.tracker.snapshot()).toMatchObject({
        total: 0,
        closedByReason: {
          app_shutdown: (secure ? 3 : 2) + (servesLate ? 1 : 0),
          app_shutdown_timeout: 1,
        },
      })
      expect(s.requests()).toBe(requestsBefore + (servesLate ? 1 : 0))
      // A second call returns the same promise.
      expect(s.drain({ timeout: TIMEOUT })).toBe(drained)

      // Nothing is left: closing the server (what the application does next) is immediate.
      const closeStart = performance.now()
      if (s.app !== undefined) await s.app.close()
      else if (s.server.listening)
        await new Promise<void>((resolve, reject) =>
          s.server.close((e) => (e ? reject(e) : resolve())),
        )
      expect(performance.now() - closeStart).toBeLessThan(AT_ONCE)

      for (const [scenario, clientMs, rec] of [
        ['drain: idle', idleEnd.at - t0, idleRec],
        ...(handshakeRow === null ? [] : [handshakeRow]),
        ...(lateServed === null
          ? []
          : ([
              [
                'drain: accepted during drain, served (client: accept → close)',
                lateServed.heldMs,
                lateServed.rec,
              ],
            ] as const)),
        ['drain: in flight (handler 500 ms)', inFlightEnd.at - t0, inFlightRec],
        ['drain: upgraded (forced)', forcedMs, upRec],
      ] as const) {
        timings.push({
          suite,
          scenario,
          deadlineMs: scenario === 'drain: upgraded (forced)' ? TIMEOUT : null,
          clientMs,
          // Server side: from drain() to the record's 'close' event.
          serverMs: s.closes.closedAt(rec) - t0,
          reason: rec.closeReason,
        })
      }
      timings.push({
        suite,
        scenario: `drain resolved ${JSON.stringify(result)}`,
        deadlineMs: TIMEOUT,
        clientMs: drainedAt - t0,
        serverMs: null,
        reason: null,
      })
    })
  })

  it(`${how}(): a response whose head is already out finishes, then the connection closes with app_shutdown after the grace`, async () => {
    const s = await start(adapter, false, { keepAliveTimeout: FAR, headersTimeout: FAR })
    const c = open(s.port)
    const response = c.get('/stream?ms=400')
    response.catch(() => {})
    await waitUntil(() => c.received().includes('\r\n\r\n'), { what: 'response head' })
    const t0 = performance.now()
    const drained = s.drain({ timeout: 5_000, idleGrace: GRACE })
    const res = await response
    const answeredAt = performance.now()
    expect(res.status).toBe(200)
    expect(res.body.toString()).toBe('ab')
    // The head went out before the drain: it could not say close. The client may send its
    // next request at once: the connection gets the idle grace.
    expect(res.headers.connection).toBe('keep-alive')
    const ended = await c.ended
    expect(ended.how).not.toBe('destroyed')
    expect(ended.at - answeredAt).toBeGreaterThanOrEqual(GRACE - EARLY - SWEEP)
    expect(ended.at - t0).toBeLessThan(400 + GRACE + LATE)
    const rec = await s.closes.forClientPort(c.localPort)
    expect(rec.closeReason).toBe('app_shutdown')
    await expect(drained).resolves.toEqual({ closedIdle: 0, finished: 1, forced: 0 })
  })

  it(`${how}() with a request pipelined behind the one in flight: both answered, none dropped`, async () => {
    const s = await start(adapter, false, { keepAliveTimeout: FAR, headersTimeout: FAR })
    const c = open(s.port)
    expect(await c.ready).toBe(true)
    c.send(getRequest('/slow?ms=300').repeat(2))
    await waitUntil(() => s.requests() === 2, { what: 'both requests received' })
    const drained = s.drain({ timeout: 5_000, idleGrace: GRACE })
    const ended = await c.ended
    expect(ended.how).not.toBe('destroyed')
    const responses = parseResponses(c.received(), { eof: true })
    // Both heads were parsed before the drain: a `Connection: close` on the first would have
    // made Node drop the second. The grace then closes the connection.
    expect(responses.map((r) => r.status)).toEqual([200, 200])
    const rec = await s.closes.forClientPort(c.localPort)
    expect(rec.closeReason).toBe('app_shutdown')
    expect(rec.requests).toBe(2)
    await expect(drained).resolves.toEqual({ closedIdle: 0, finished: 1, forced: 0 })
  })

  it(`${how}() then a request pipelined after it began: the first gives its Connection: close to the second`, async () => {
    const s = await start(adapter, false, { keepAliveTimeout: FAR, headersTimeout: FAR })
    const c = open(s.port)
    expect(await c.ready).toBe(true)
    c.send(getRequest('/slow?ms=400'))
    await waitUntil(() => s.requests() === 1, { what: 'first request received' })
    const drained = s.drain({ timeout: 5_000, idleGrace: GRACE })
    await sleep(50)
    c.send(getRequest('/'))
    const ended = await c.ended
    expect(ended.how).not.toBe('destroyed')
    const responses = parseResponses(c.received(), { eof: true })
    expect(responses.map((r) => [r.status, r.headers.connection])).toEqual([
      [200, 'keep-alive'],
      [200, 'close'],
    ])
    const rec = await s.closes.forClientPort(c.localPort)
    expect(rec.closeReason).toBe('app_shutdown')
    await expect(drained).resolves.toEqual({ closedIdle: 0, finished: 1, forced: 0 })
  })

  it(`${how}(): a request sent on an idle connection within the grace is answered with Connection: close`, async () => {
    const s = await start(adapter, false, { keepAliveTimeout: FAR, headersTimeout: FAR })
    const c = await idleClient(s.port, false)
    const drained = s.drain({ timeout: 5_000, idleGrace: 1_000 })
    await sleep(200)
    const res = await c.get('/')
    expect(res.status).toBe(200)
    expect(res.headers.connection).toBe('close')
    const ended = await c.ended
    expect(ended.how).not.toBe('destroyed')
    const rec = await s.closes.forClientPort(c.localPort)
    expect(rec.closeReason).toBe('app_shutdown')
    expect(rec.requests).toBe(2)
    await expect(drained).resolves.toEqual({ closedIdle: 0, finished: 1, forced: 0 })
  })

  it(`${how}({ idleGrace: 0 }) with nothing in flight resolves at once; invalid options throw and drain nothing`, async () => {
    const s = await start(adapter, false, { keepAliveTimeout: FAR, headersTimeout: FAR })
    for (const bad of [
      { timeout: 'x' },
      { timeout: -1 },
      { timeout: 1.5 },
      { timeout: null },
      { delay: -5 },
      { idleGrace: '1s' },
    ]) {
      expect(await errorCode(() => s.drain(bad as unknown as DrainOptions))).toBe(
        'CONNGUARD_ERR_INVALID_OPTION',
      )
    }
    expect(await errorCode(() => s.drain({ grace: 5 } as unknown as DrainOptions))).toBe(
      'CONNGUARD_ERR_UNKNOWN_OPTION',
    )
    expect(s.tracker.draining).toBe(false)
    // The rejected calls did not start a drain: connections are still admitted and served.
    const idle = await idleClient(s.port, false)
    const t0 = performance.now()
    const result = await s.drain({ timeout: false, idleGrace: 0 })
    expect(performance.now() - t0).toBeLessThan(AT_ONCE)
    expect(result).toEqual({ closedIdle: 1, finished: 0, forced: 0 })
    await idle.ended
    const rec = await s.closes.forClientPort(idle.localPort)
    expect(rec.closeReason).toBe('app_shutdown')
  })
})

describe('Fastify app.close() drains (plugin option drainTimeout)', () => {
  it('drainTimeout 1000: a hanging handler is forced at ~1 s, a slow one finishes with Connection: close, an idle one closes after the grace, a new one is refused', async () => {
    const DRAIN = 1_000
    const s = await start(
      'Fastify',
      false,
      { keepAliveTimeout: FAR, headersTimeout: FAR },
      { drainTimeout: DRAIN, drainIdleGrace: GRACE },
    )
    const app = s.app as FastifyInstance
    const idle = await idleClient(s.port, false)
    const hanging = open(s.port)
    const hangingRes = hanging.get('/hang')
    hangingRes.catch(() => {})
    const slow = open(s.port)
    const slowRes = slow.get('/slow?ms=300')
    slowRes.catch(() => {})
    await waitUntil(() => s.tracker.snapshot().active === 2, { what: 'two requests in flight' })

    const t0 = performance.now()
    let closedAt = Number.NaN
    const closing = app.close().then(() => {
      closedAt = performance.now()
    })

    // Fastify closes the listening socket once the preClose hooks ran: as without connguard.
    await sleep(50)
    expect(s.server.listening).toBe(false)
    const late = open(s.port)
    expect(await late.ready).toBe(false)

    const idleEnd = await idle.ended
    expect(idleEnd.at - t0).toBeGreaterThanOrEqual(GRACE - EARLY)
    expect(idleEnd.at - t0).toBeLessThanOrEqual(GRACE + LATE)
    const idleRec = await s.closes.forClientPort(idle.localPort)
    expect(idleRec.closeReason).toBe('app_shutdown')

    const res = await slowRes
    expect(res.status).toBe(200)
    expect(res.headers.connection).toBe('close')
    await slow.ended
    const slowRec = await s.closes.forClientPort(slow.localPort)
    expect(slowRec.closeReason).toBe('app_shutdown')

    const hangEnd = await hanging.ended
    expect(hanging.received().length).toBe(0)
    const forcedMs = hangEnd.at - t0
    expect(forcedMs).toBeGreaterThanOrEqual(DRAIN - EARLY)
    expect(forcedMs).toBeLessThanOrEqual(DRAIN + LATE)
    const hangRec = await s.closes.forClientPort(hanging.localPort)
    expect(hangRec.closeReason).toBe('app_shutdown_timeout')
    expect(hangRec.stateAtClose).toBe('active')

    await closing
    expect(closedAt - t0).toBeGreaterThanOrEqual(DRAIN - EARLY)
    expect(closedAt - t0).toBeLessThanOrEqual(DRAIN + LATE)
    expect(s.server.listening).toBe(false)
    timings.push({
      suite: 'Fastify http',
      scenario: 'app.close(): hanging handler forced',
      deadlineMs: DRAIN,
      clientMs: forcedMs,
      serverMs: hangRec.duration,
      reason: hangRec.closeReason,
    })
    timings.push({
      suite: 'Fastify http',
      scenario: 'app.close() resolved',
      deadlineMs: DRAIN,
      clientMs: closedAt - t0,
      serverMs: null,
      reason: null,
    })
  })

  it('defaults: an idle connection closes after the 1 s grace with app_shutdown, and app.close() waits for no more', async () => {
    const s = await start('Fastify', true, { keepAliveTimeout: FAR, headersTimeout: FAR })
    const idle = await idleClient(s.port, true)
    const t0 = performance.now()
    await (s.app as FastifyInstance).close()
    const closeMs = performance.now() - t0
    expect(closeMs).toBeGreaterThanOrEqual(1_000 - EARLY)
    expect(closeMs).toBeLessThanOrEqual(1_000 + LATE)
    const idleEnd = await idle.ended
    expect(idleEnd.how).not.toBe('destroyed')
    const rec = await s.closes.forClientPort(idle.localPort)
    expect(rec.closeReason).toBe('app_shutdown')
    expect(rec.stateAtClose).toBe('idle')
    timings.push({
      suite: 'Fastify https',
      scenario: 'app.close() (defaults): idle, 1 s grace',
      deadlineMs: 1_000,
      clientMs: idleEnd.at - t0,
      serverMs: rec.duration,
      reason: rec.closeReason,
    })
  })

  it('serverFactory with forceCloseConnections "idle" (Fastify then calls server.closeIdleConnections() after preClose): the idle connection still gets the grace; drainIdleGrace 0 closes it at once, as plain Fastify does', async () => {
    const run = async (guard: ConnguardFastifyOptions | null) => {
      const app = Fastify({
        forceCloseConnections: 'idle',
        serverFactory: (handler) => http.createServer(handler),
      })
      if (guard !== null) await app.register(fastifyGuard, guard)
      app.get('/', async () => 'ok')
      await app.listen({ port: 0, host: '127.0.0.1' })
      cleanups.push(() => app.close())
      const closes = guard === null ? null : watchCloses(app.connguard)
      const idle = await idleClient((app.server.address() as net.AddressInfo).port, false)
      const t0 = performance.now()
      await app.close()
      const closeMs = performance.now() - t0
      const end = await idle.ended
      const rec = closes === null ? null : await closes.forClientPort(idle.localPort)
      return { closeMs, endMs: end.at - t0, rec }
    }
    const bare = await run(null)
    expect(bare.endMs).toBeLessThan(LATE)
    const graced = await run({})
    expect(graced.closeMs).toBeGreaterThanOrEqual(1_000 - EARLY)
    expect(graced.closeMs).toBeLessThanOrEqual(1_000 + LATE)
    expect(graced.rec?.closeReason).toBe('app_shutdown')
    expect(graced.rec?.stateAtClose).toBe('idle')
    const noGrace = await run({ drainIdleGrace: 0 })
    expect(noGrace.endMs).toBeLessThan(LATE)
    expect(noGrace.rec?.closeReason).toBe('app_shutdown')
  })

  it('a slow client (headers dripping every 100 ms) does not hold app.close() past drainTimeout 800', async () => {
    const DRAIN = 800
    const s = await start(
      'Fastify',
      false,
      { keepAliveTimeout: FAR, headersTimeout: FAR },
      { drainTimeout: DRAIN },
    )
    const slow = await slowHeaders(s.port, 100)
    await waitUntil(() => s.tracker.snapshot().active === 1, { what: 'slow head in progress' })
    const t0 = performance.now()
    await (s.app as FastifyInstance).close()
    const closeMs = performance.now() - t0
    expect(closeMs).toBeGreaterThanOrEqual(DRAIN - EARLY)
    expect(closeMs).toBeLessThanOrEqual(DRAIN + LATE)
    const slowEnd = await slow.ended
    expect(slowEnd.how).not.toBe('destroyed')
    const rec = await s.closes.forClientPort(slow.localPort)
    expect(rec.closeReason).toBe('app_shutdown_timeout')
    expect(rec.stateAtClose).toBe('active')
    expect(rec.requests).toBe(0)
    expect(s.requests()).toBe(0)
    timings.push({
      suite: 'Fastify http',
      scenario: 'app.close(): slow headers forced',
      deadlineMs: DRAIN,
      clientMs: slowEnd.at - t0,
      serverMs: rec.duration,
      reason: rec.closeReason,
    })
  })

  it('an invalid drainTimeout, drainDelay or drainIdleGrace fails registration with CONNGUARD_ERR_INVALID_OPTION naming it', async () => {
    const cases: [Partial<ConnguardFastifyOptions>, string][] = [
      ...['x', -1, 1.5].map(
        (v) => [{ drainTimeout: v as unknown as number }, 'drainTimeout'] as [object, string],
      ),
      [{ drainDelay: -1 }, 'drainDelay'],
      [{ drainIdleGrace: 'soon' as unknown as number }, 'drainIdleGrace'],
      // A delay the preClose hook could not finish within Fastify's pluginTimeout (10 s).
      [{ drainDelay: 9_500 }, 'drainDelay'],
    ]
    for (const [options, option] of cases) {
      const app = Fastify()
      try {
        await expect(app.register(fastifyGuard, options).ready()).rejects.toMatchObject({
          code: 'CONNGUARD_ERR_INVALID_OPTION',
          option,
        })
      } finally {
        await app.close().catch(() => {})
      }
    }
    // With pluginTimeout 0 (no limit), a long delay is fine.
    const app = Fastify({ pluginTimeout: 0 })
    await app.register(fastifyGuard, { drainDelay: 60_000 }).ready()
    // Closed first, the tracker has no delay left to wait (app.close() would wait 60 s).
    app.connguard.close()
    await app.close()
  })
})

it('core: tracker.close() while a drain is pending settles the drain promise', async () => {
  const s = await start('Express 5', false, { keepAliveTimeout: FAR, headersTimeout: FAR })
  const c = open(s.port)
  const response = c.get('/hang')
  response.catch(() => {})
  await waitUntil(() => s.tracker.snapshot().active === 1, { what: 'request in flight' })
  const drained = s.drain({ timeout: 5_000 })
  let settled = false
  drained.then(
    () => {
      settled = true
    },
    () => {
      settled = true
    },
  )
  s.tracker.close()
  await sleep(300)
  expect(settled, 'drain() still pending 300 ms after tracker.close()').toBe(true)
})

it('core: drain({ timeout: "x" }) on a bare tracker → CONNGUARD_ERR_INVALID_OPTION', async () => {
  const tracker = new ConnectionTracker()
  try {
    expect(await errorCode(() => tracker.drain({ timeout: 'x' as unknown as number }))).toBe(
      'CONNGUARD_ERR_INVALID_OPTION',
    )
    await expect(tracker.drain({ timeout: 100 })).resolves.toEqual({
      closedIdle: 0,
      finished: 0,
      forced: 0,
    })
  } finally {
    tracker.close()
  }
})

it('core: the drain phases on the event and on connguard:drain; readinessHandler answers 200, then 503 from the delay on', async () => {
  const tracker = new ConnectionTracker({ sweepInterval: SWEEP })
  const server = http.createServer(readinessHandler(tracker))
  tracker.attach(server)
  const port = await listen(server)
  cleanups.push(() => {
    tracker.close()
    return closeServer(server)
  })
  const published: unknown[] = []
  const onMessage = (message: unknown) => {
    const m = message as { phase: string; tracker: unknown }
    if (m.tracker === tracker) published.push(m.phase)
  }
  diagnosticsChannel.subscribe('connguard:drain', onMessage)
  cleanups.push(() => diagnosticsChannel.unsubscribe('connguard:drain', onMessage))
  const events: string[] = []
  tracker.on('drain', (phase) => events.push(phase))

  const before = await open(port).get('/')
  expect(before.status).toBe(200)
  expect(before.headers['cache-control']).toBe('no-store')
  expect(before.body.toString()).toBe('{"status":"ready"}')
  expect(tracker.draining).toBe(false)
  expect(tracker.drainPhase).toBeNull()

  const t0 = performance.now()
  const drained = tracker.drain({ delay: 300, idleGrace: 0, timeout: 2_000 })
  expect(tracker.draining).toBe(true)
  expect(tracker.drainPhase).toBe('delay')
  // During the delay a new connection is still accepted and served: the probe says 503.
  const during = await open(port).get('/')
  expect(during.status).toBe(503)
  expect(during.body.toString()).toBe('{"status":"draining"}')
  expect(during.headers.connection).toBe('keep-alive')
  await tracker.drainClosing()
  expect(performance.now() - t0).toBeGreaterThanOrEqual(300 - EARLY)
  await drained
  expect(tracker.drainPhase).toBe('done')
  expect(tracker.draining).toBe(true)
  expect(events).toEqual(['delay', 'closing', 'done'])
  expect(published).toEqual(['delay', 'closing', 'done'])
})
