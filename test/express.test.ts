/**
 * @connguard/express over real sockets on 127.0.0.1: the same scenario suite against
 * Express 4 and Express 5, each over HTTP (`app.listen()`) and HTTPS
 * (`https.createServer(tlsOptions, app)`). Every scenario checks when the client saw the
 * connection end AND the server's record from the tracker's 'close' event.
 *
 * Deadlines are 300 ms unless a scenario needs another, the sweep runs every 50 ms, and a close
 * must land in [deadline - 20 ms, deadline + 50 ms + 400 ms] (see helpers/guard-timing.ts).
 * Tests run one after another: they measure time, and parallel sockets would blur it.
 * CONNGUARD_TIMINGS=1 prints the measured close times as a table at the end.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import { once } from 'node:events'
import http from 'node:http'
import https from 'node:https'
import type { Socket } from 'node:net'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { WARNINGS } from '@connguard/core/internal'
import {
  type ConnectionRecord,
  ConnectionTracker,
  type ConnguardExpressOptions,
  type ConnguardMiddleware,
  connguard,
} from '@connguard/express'
import express5, { type Express } from 'express'
import express4 from 'express4'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  type CloseInfo,
  getRequest,
  keepAliveRequests,
  openSocket,
  partialClientHello,
  silentTcp,
  slowloris,
  slowUpload,
  tlsThenSilence,
  upgradeRequest,
} from './helpers/clients.js'
import {
  CloseLog,
  expectDeadline,
  LATE_MARGIN,
  printTimings,
  SWEEP,
  sleep,
  type TimingRow,
  trackSockets,
} from './helpers/guard-timing.js'
import { type ParsedResponse, parseResponses } from './helpers/http-response.js'
import { NO_LIVE_CONNECTIONS } from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

/** The default deadline of these tests, ms. */
const D = 300
/** A deadline long enough never to fire in a scenario about another one. */
const FAR = 5_000
/** How long `/long` (a route with `requestTimeout: false`) takes to answer: 3 × D. */
const LONG_MS = 3 * D

const UPGRADE_101 =
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'

type CreateApp = () => Express
type ConnguardFn = typeof connguard

const VERSIONS: { name: string; createApp: CreateApp }[] = [
  { name: 'Express 4', createApp: () => express4() },
  { name: 'Express 5', createApp: () => express5() },
]
const TRANSPORTS = [
  { name: 'http', secure: false },
  { name: 'https', secure: true },
]

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

/** Everything started by a test, stopped by afterEach whatever the test's outcome. */
const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

/** The routes every scenario's app has. */
function addRoutes(app: Express, guard: ConnguardMiddleware): void {
  app.get('/', (_req, res) => {
    res.send('ok')
  })
  // Reads the whole body, at whatever pace it comes.
  const readBody: express5.RequestHandler = (req, res) => {
    let bytes = 0
    req.on('data', (chunk: Buffer) => {
      bytes += chunk.length
    })
    req.on('end', () => {
      res.send(String(bytes))
    })
  }
  app.post('/upload', guard.route({ requestTimeout: false }), readBody)
  app.post('/upload-strict', readBody)
  // Never answers.
  app.get('/hang', () => {})
  // Starts a response and never finishes it.
  app.get('/stall', (_req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain' })
    res.write('partial')
  })
  app.get('/long', guard.route({ requestTimeout: false }), (_req, res) => {
    setTimeout(() => res.send('done'), LONG_MS)
  })
}

interface Started {
  guard: ConnguardMiddleware
  server: http.Server
  port: number
  closes: CloseLog
}

/**
 * An app with `guard` as its first middleware, listening on 127.0.0.1: `app.listen()` for
 * HTTP, `https.createServer(tlsOptions, app)` for HTTPS, attached as the README says unless
 * `attach: false`.
 */
async function startApp(
  createApp: CreateApp,
  secure: boolean,
  options: ConnguardExpressOptions,
  { attach = true, factory = connguard }: { attach?: boolean; factory?: ConnguardFn } = {},
): Promise<Started> {
  const app = createApp()
  const guard = factory({ sweepInterval: SWEEP, ...options })
  cleanups.push(() => guard.tracker.close())
  const closes = new CloseLog(guard.tracker)
  app.use(guard)
  addRoutes(app, guard)
  let server: http.Server
  if (secure) {
    server = https.createServer(tlsOptions, app)
    if (attach) guard.attach(server)
    cleanups.push(() => closeServer(server))
    await listen(server)
  } else {
    server = attach ? guard.attach(app.listen(0, '127.0.0.1')) : app.listen(0, '127.0.0.1')
    // app.listen() bypasses helpers/server.ts's listen(): track sockets here for teardown.
    const sockets = trackSockets(server)
    cleanups.push(() => {
      for (const socket of sockets) socket.destroy()
      return closeServer(server)
    })
    if (!server.listening) await once(server, 'listening')
  }
  const { port } = server.address() as { port: number }
  return { guard, server, port, closes }
}

/** Send `bytes` on a fresh connection and wait for the server to end it. */
async function requestUntilClosed(
  port: number,
  bytes: string,
  secure: boolean,
): Promise<{ sentAt: number; close: CloseInfo; responses: ParsedResponse[] }> {
  const conn = await openSocket(port, { tls: secure })
  const sentAt = performance.now()
  conn.send(bytes)
  const close = await conn.closed
  return { sentAt, close, responses: parseResponses(close.received, { eof: true }) }
}

/** The parts of a record every scenario checks, as one object for a readable diff. */
const summary = (r: ConnectionRecord) => ({
  closeReason: r.closeReason,
  stateAtClose: r.stateAtClose,
  requests: r.requests,
  state: r.state,
  errorCode: r.errorCode,
})

function expectPlainOrTls(record: ConnectionRecord, secure: boolean): void {
  expect(record.secure).toBe(secure)
  expect(record.remoteAddress).toBe('127.0.0.1')
  if (secure) {
    expect(record.handshakeDuration).toBeGreaterThanOrEqual(0)
    expect(record.handshakeDuration).toBeLessThan(D)
    expect(record.tls).toMatchObject({
      protocol: expect.stringMatching(/^TLSv1\.[23]$/),
      cipher: expect.any(String),
      // The test client offers no ALPN.
      alpnProtocol: false,
      servername: 'localhost',
      resumed: false,
    })
  } else {
    expect(record.handshakeDuration).toBeNull()
    expect(record.tls).toBeNull()
  }
}

describe.each(VERSIONS)('$name', ({ name: version, createApp }) => {
  describe.each(TRANSPORTS)('over $name', ({ name: transport, secure }) => {
    const suite = `${version} ${transport}`
    const row = (r: Omit<TimingRow, 'suite'>) => timings.push({ suite, ...r })

    it('silent TCP connection is cut by the first deadline that applies', async () => {
      // HTTP: no request head within headersTimeout. HTTPS: no handshake within handshakeTimeout.
      const { port, closes } = await startApp(
        createApp,
        secure,
        secure ? { handshakeTimeout: D, headersTimeout: FAR } : { headersTimeout: D },
      )
      const result = await silentTcp(port)
      const record = await closes.next()
      expectDeadline(result.heldMs, D, 'client')
      expectDeadline(record.duration ?? -1, D, 'record.duration')
      expect(record.bytesRead).toBe(0)
      expect(record.timeToFirstRequest).toBeNull()
      expect(record.handshakeDuration).toBeNull()
      expect(record.tls).toBeNull()
      if (secure) {
        expect(summary(record)).toEqual({
          closeReason: 'tls_handshake_timeout',
          stateAtClose: 'new',
          requests: 0,
          state: 'closed',
          errorCode: null,
        })
        expect(result.received.length).toBe(0)
        expect(record.bytesWritten).toBe(0)
      } else {
        expect(summary(record)).toEqual({
          closeReason: 'request_headers_timeout',
          stateAtClose: 'new',
          requests: 0,
          state: 'closed',
          errorCode: null,
        })
        const [response] = parseResponses(result.received, { eof: true })
        expect(response?.status).toBe(408)
        expect(record.bytesWritten).toBe(result.received.length)
      }
      row({
        scenario: 'silent TCP',
        deadlineMs: D,
        clientMs: result.heldMs,
        serverMs: record.duration,
        reason: record.closeReason,
      })
    })

    // TLS-only scenarios exist only in the TLS suites (not reported as skipped elsewhere).
    const itTls: typeof it = secure ? it : ((() => undefined) as unknown as typeof it)
    itTls('partial ClientHello is cut by handshakeTimeout in handshaking', async () => {
      const { port, closes } = await startApp(createApp, secure, {
        handshakeTimeout: D,
        headersTimeout: FAR,
      })
      const result = await partialClientHello(port)
      const record = await closes.next()
      expectDeadline(result.heldMs, D, 'client')
      expectDeadline(record.duration ?? -1, D, 'record.duration')
      expect(summary(record)).toEqual({
        closeReason: 'tls_handshake_timeout',
        stateAtClose: 'handshaking',
        requests: 0,
        state: 'closed',
        errorCode: null,
      })
      expect(record.bytesRead).toBe(result.sent)
      expect(record.handshakeDuration).toBeNull()
      expect(record.tls).toBeNull()
      expect(record.stateDurations.handshaking).toBeGreaterThan(0)
      row({
        scenario: 'partial ClientHello',
        deadlineMs: D,
        clientMs: result.heldMs,
        serverMs: record.duration,
        reason: record.closeReason,
      })
    })

    itTls('TLS established, then silence: cut by headersTimeout in idle, with a 408', async () => {
      const { port, closes } = await startApp(createApp, secure, {
        handshakeTimeout: FAR,
        headersTimeout: D,
      })
      const result = await tlsThenSilence(port)
      const record = await closes.next()
      // The first request's head deadline runs from the end of the handshake.
      const clientMs = result.at - result.establishedAt
      expectDeadline(clientMs, D, 'client, from TLS established')
      const serverMs = (record.duration ?? -1) - (record.handshakeDuration ?? 0)
      expectDeadline(serverMs, D, 'record.duration - handshakeDuration')
      expect(summary(record)).toEqual({
        closeReason: 'request_headers_timeout',
        stateAtClose: 'idle',
        requests: 0,
        state: 'closed',
        errorCode: null,
      })
      expectPlainOrTls(record, true)
      expect(record.timeToFirstRequest).toBeNull()
      expect(record.bytesRead).toBeGreaterThan(0) // the handshake
      expect(parseResponses(result.received, { eof: true })[0]?.status).toBe(408)
      row({
        scenario: 'TLS then silence',
        deadlineMs: D,
        clientMs,
        serverMs,
        reason: record.closeReason,
      })
    })

    it('slowloris on the first request is cut by headersTimeout, with a 408', async () => {
      const { port, closes } = await startApp(createApp, secure, {
        handshakeTimeout: FAR,
        headersTimeout: D,
        keepAliveTimeout: FAR,
      })
      const result = await slowloris(port, { tls: secure, intervalMs: 50 })
      const record = await closes.next()
      const clientMs = result.at - result.establishedAt
      expectDeadline(clientMs, D, 'client, from established')
      expect(result.headerLinesSent).toBeGreaterThanOrEqual(3)
      expect(result.response?.status).toBe(408)
      expect(summary(record)).toEqual({
        closeReason: 'request_headers_timeout',
        stateAtClose: 'active',
        requests: 0,
        state: 'closed',
        errorCode: null,
      })
      expect(record.timeToFirstRequest).toBeGreaterThanOrEqual(0)
      expect(record.bytesRead).toBeGreaterThan(0)
      expect(record.bytesWritten).toBeGreaterThan(0)
      expectPlainOrTls(record, secure)
      row({
        scenario: 'slowloris, first request',
        deadlineMs: D,
        clientMs,
        serverMs: (record.duration ?? 0) - (record.handshakeDuration ?? 0),
        reason: record.closeReason,
      })
    })

    it('slowloris on a later keep-alive request is timed from its own first byte', async () => {
      // The slow request starts 200 ms into a 1000 ms keep-alive idle. Its head deadline
      // (300 ms) must run from its own first byte: from the idle start it would close 200 ms
      // early; if the first byte went unnoticed until the keep-alive deadline, 700 ms late.
      const pauseMs = 200
      const { port, closes } = await startApp(createApp, secure, {
        handshakeTimeout: FAR,
        headersTimeout: D,
        keepAliveTimeout: 1_000,
      })
      const result = await slowloris(port, {
        tls: secure,
        intervalMs: 50,
        firstRequest: getRequest('/'),
        pauseMs,
      })
      const record = await closes.next()
      expect(result.firstResponse?.status).toBe(200)
      const clientMs = result.at - result.slowStartedAt
      expectDeadline(clientMs, D, 'client, from the slow request first byte')
      expect(result.response?.status).toBe(408)
      expect(summary(record)).toEqual({
        closeReason: 'request_headers_timeout',
        stateAtClose: 'active',
        requests: 1,
        state: 'closed',
        errorCode: null,
      })
      // Idle from the first response's end, settled by the next sweep (up to one sweep late).
      expect(record.stateDurations.idle).toBeGreaterThanOrEqual(pauseMs - SWEEP - 20)
      // Server side: active = the first request (a few ms) + the slow head from the sweep that
      // found it in Node's list (up to a sweep after its first byte; its deadline runs from that
      // byte): at least the deadline less a sweep.
      // (100 ms more for a sweep that runs late on a busy machine).
      expect(record.stateDurations.active).toBeGreaterThanOrEqual(D - SWEEP - 100)
      expect(record.stateDurations.active).toBeLessThanOrEqual(D + SWEEP + LATE_MARGIN)
      expect(record.httpVersion).toBe('1.1')
      expectPlainOrTls(record, secure)
      row({
        scenario: `slowloris, 2nd request after ${pauseMs} ms idle`,
        deadlineMs: D,
        clientMs,
        serverMs: record.stateDurations.active,
        reason: record.closeReason,
      })
    })

    it('idle keep-alive connection is cut by keepAliveTimeout; Keep-Alive header matches', async () => {
      const keepAliveTimeout = 1_200
      const { port, closes } = await startApp(createApp, secure, {
        handshakeTimeout: D,
        // Shorter than the idle deadline: must not apply between requests.
        headersTimeout: D,
        keepAliveTimeout,
      })
      // The second request never goes: the pause outlasts the connection.
      const result = await keepAliveRequests(port, { tls: secure, count: 2, pauseMs: 10_000 })
      const record = await closes.next()
      expect(result.statuses, closes.describe()).toEqual([200])
      expect(result.responses[0]?.headers['keep-alive']).toBe(
        `timeout=${Math.floor(keepAliveTimeout / 1000)}`,
      )
      const clientMs = (result.close?.at ?? 0) - (result.respondedAt[0] ?? 0)
      expectDeadline(clientMs, keepAliveTimeout, 'client, idle after the response')
      expect(summary(record)).toEqual({
        closeReason: 'keep_alive_timeout',
        stateAtClose: 'idle',
        requests: 1,
        state: 'closed',
        errorCode: null,
      })
      expect(record.bytesWritten).toBeGreaterThan(0)
      // Server side: idle = established → first byte (a few ms) + the keep-alive gap.
      expectDeadline(record.stateDurations.idle, keepAliveTimeout, 'record.stateDurations.idle')
      expectPlainOrTls(record, secure)
      row({
        scenario: 'keep-alive idle',
        deadlineMs: keepAliveTimeout,
        clientMs,
        serverMs: record.stateDurations.idle,
        reason: record.closeReason,
      })
    })

    it('requestTimeout cuts a request (408 only when no response started); an overriding route is not cut', async () => {
      const { port, closes } = await startApp(createApp, secure, {
        handshakeTimeout: FAR,
        headersTimeout: FAR,
        keepAliveTimeout: FAR,
        requestTimeout: D,
      })

      const hang = await requestUntilClosed(port, getRequest('/hang'), secure)
      const hangRecord = await closes.next()
      const hangMs = hang.close.at - hang.sentAt
      expectDeadline(hangMs, D, 'client, /hang')
      expect(hang.responses.map((r) => r.status)).toEqual([408])
      expect(summary(hangRecord)).toEqual({
        closeReason: 'request_timeout',
        stateAtClose: 'active',
        requests: 1,
        state: 'closed',
        errorCode: null,
      })
      expectDeadline(hangRecord.stateDurations.active, D, 'record.stateDurations.active, /hang')
      expect(hangRecord.bytesRead).toBeGreaterThan(0)
      expect(hangRecord.bytesWritten).toBeGreaterThan(0) // the 408 (and, over TLS, the handshake)
      expectPlainOrTls(hangRecord, secure)
      row({
        scenario: 'requestTimeout, no response',
        deadlineMs: D,
        clientMs: hangMs,
        serverMs: hangRecord.stateDurations.active,
        reason: hangRecord.closeReason,
      })

      const stall = await requestUntilClosed(port, getRequest('/stall'), secure)
      const stallRecord = await closes.next()
      const stallMs = stall.close.at - stall.sentAt
      expectDeadline(stallMs, D, 'client, /stall')
      const text = stall.close.received.toString('latin1')
      expect(text).toMatch(/^HTTP\/1\.1 200 /)
      expect(text).not.toContain('408')
      expect(summary(stallRecord)).toEqual({
        closeReason: 'request_timeout',
        stateAtClose: 'active',
        requests: 1,
        state: 'closed',
        errorCode: null,
      })
      expectDeadline(stallRecord.stateDurations.active, D, 'record.stateDurations.active, /stall')
      row({
        scenario: 'requestTimeout, response started',
        deadlineMs: D,
        clientMs: stallMs,
        serverMs: stallRecord.stateDurations.active,
        reason: stallRecord.closeReason,
      })

      // guard.route({ requestTimeout: false }): answered after 3 × requestTimeout.
      const longRun = await keepAliveRequests(port, { tls: secure, count: 1, path: '/long' })
      const longRecord = await closes.next()
      expect(longRun.statuses, closes.describe()).toEqual([200])
      expect(longRun.responses[0]?.body.toString()).toBe('done')
      expect(summary(longRecord)).toEqual({
        closeReason: 'client_closed',
        stateAtClose: 'idle',
        requests: 1,
        state: 'closed',
        errorCode: null,
      })
      expect(longRecord.stateDurations.active).toBeGreaterThanOrEqual(LONG_MS - 20)
      row({
        scenario: 'requestTimeout: false route (answers at 900 ms)',
        deadlineMs: null,
        clientMs: longRecord.stateDurations.active,
        serverMs: longRecord.duration,
        reason: longRecord.closeReason,
      })
    })

    it('a healthy upload lasting over 3x every timeout completes; without the route override requestTimeout cuts it', async () => {
      const { port, closes } = await startApp(createApp, secure, {
        handshakeTimeout: D,
        headersTimeout: D,
        keepAliveTimeout: D,
        requestTimeout: D,
      })
      // 24 chunks of 100 B, one every 50 ms: 1150 ms of upload, > 3 × 300 ms.
      const upload = { tls: secure, totalBytes: 2_400, chunkBytes: 100, intervalMs: 50 }
      const ok = await slowUpload(port, { ...upload, path: '/upload' })
      const okRecord = await closes.next()
      expect(ok.status).toBe(200)
      expect(ok.body.toString()).toBe('2400')
      expect(ok.sentBytes).toBe(2_400)
      const okMs = ok.at - ok.startedAt
      expect(okMs).toBeGreaterThanOrEqual(3 * D)
      expect(summary(okRecord)).toEqual({
        closeReason: 'client_closed',
        stateAtClose: 'idle',
        requests: 1,
        state: 'closed',
        errorCode: null,
      })
      expect(okRecord.bytesRead).toBeGreaterThan(2_400)
      expectPlainOrTls(okRecord, secure)
      row({
        scenario: 'healthy upload, requestTimeout: false route',
        deadlineMs: null,
        clientMs: okMs,
        serverMs: okRecord.duration,
        reason: okRecord.closeReason,
      })

      const cut = await slowUpload(port, { ...upload, path: '/upload-strict' })
      const cutRecord = await closes.next()
      const cutMs = cut.at - cut.startedAt
      expectDeadline(cutMs, D, 'client, /upload-strict')
      expect(cut.status).toBe(408)
      expect(cut.sentBytes).toBeLessThan(2_400)
      expect(summary(cutRecord)).toEqual({
        closeReason: 'request_timeout',
        stateAtClose: 'active',
        requests: 1,
        state: 'closed',
        errorCode: null,
      })
      expectDeadline(cutRecord.stateDurations.active, D, 'record.stateDurations.active')
      row({
        scenario: 'same upload, no override (requestTimeout)',
        deadlineMs: D,
        clientMs: cutMs,
        serverMs: cutRecord.stateDurations.active,
        reason: cutRecord.closeReason,
      })
    })

    it('3 keep-alive requests with short pauses: all 200, one connection, requests === 3', async () => {
      const { port, closes, guard } = await startApp(createApp, secure, {
        handshakeTimeout: D,
        headersTimeout: D,
        keepAliveTimeout: D,
        requestTimeout: D,
      })
      const transitions: string[] = []
      guard.tracker.on('transition', (_r, from, to) => transitions.push(`${from}>${to}`))
      const result = await keepAliveRequests(port, { tls: secure, count: 3, pauseMs: 100 })
      const record = await closes.next()
      expect(result.statuses, closes.describe()).toEqual([200, 200, 200])
      expect(result.responses.map((r) => r.body.toString())).toEqual(['ok', 'ok', 'ok'])
      expect(closes.records).toHaveLength(1)
      expect(summary(record)).toEqual({
        closeReason: 'client_closed',
        stateAtClose: 'idle',
        requests: 3,
        state: 'closed',
        errorCode: null,
      })
      expect(record.httpVersion).toBe('1.1')
      expect(record.errorCode).toBeNull()
      expect(record.timeToFirstRequest).toBeGreaterThanOrEqual(0)
      expect(record.localPort).toBe(port)
      // Each pause less a sweep: a request's end and the next one's start are settled by sweeps.
      expect(record.stateDurations.idle).toBeGreaterThanOrEqual(2 * (100 - SWEEP) - 20)
      expect(record.closedAt).toBeGreaterThanOrEqual(record.openedAt)
      const d = record.stateDurations
      expect(d.new + d.handshaking + d.idle + d.active + d.upgraded).toBeCloseTo(
        record.duration ?? -1,
        3,
      )
      // TLS goes through `handshaking` only if a sweep saw handshake bytes before it completed.
      const opening = secure
        ? transitions[0] === 'new>handshaking'
          ? ['new>handshaking', 'handshaking>idle', 'idle>active']
          : ['new>idle', 'idle>active']
        : ['new>active']
      expect(transitions).toEqual([
        ...opening,
        'active>idle',
        'idle>active',
        'active>idle',
        'idle>active',
        'active>idle',
        'idle>closed',
      ])
      expectPlainOrTls(record, secure)
    })

    it('an upgraded connection stays open past every deadline, in state upgraded', async () => {
      const { port, server, guard, closes } = await startApp(createApp, secure, {
        handshakeTimeout: D,
        headersTimeout: D,
        keepAliveTimeout: D,
        requestTimeout: D,
      })
      // Added AFTER attach, as an application adding WebSocket support later would.
      server.on('upgrade', (_req, socket: Socket) => {
        socket.on('error', () => {})
        socket.on('end', () => socket.end())
        socket.write(UPGRADE_101)
      })
      const { conn, at } = await upgradeRequest(port, { tls: secure })
      cleanups.push(() => conn.destroy())
      const holdMs = 3 * D + SWEEP + 100
      await sleep(holdMs)
      expect(conn.isOpen()).toBe(true)
      const live = [...guard.tracker.connections()]
      expect(live.map((r) => r.state)).toEqual(['upgraded'])
      expect(guard.tracker.snapshot()).toMatchObject({ total: 1, upgraded: 1 })
      conn.destroy()
      const record = await closes.next()
      expect(summary(record)).toEqual({
        closeReason: 'client_closed',
        stateAtClose: 'upgraded',
        requests: 1,
        state: 'closed',
        errorCode: null,
      })
      expect(record.stateDurations.upgraded).toBeGreaterThanOrEqual(holdMs - 20)
      expect(record.bytesWritten).toBeGreaterThan(0) // the 101
      expectPlainOrTls(record, secure)
      row({
        scenario: 'upgraded, held open by the client',
        deadlineMs: null,
        clientMs: performance.now() - at,
        serverMs: record.duration,
        reason: record.closeReason,
      })
    })

    it('late attach: the first request attaches, warns once (CONNGUARD_LATE_ATTACH), later connections are guarded', async () => {
      // The warning is once per process, whichever copy of the module says it (the messages
      // said are kept process-wide): forgetting them makes this test independent of any other
      // late attach in this file.
      WARNINGS.LATE_ATTACH.emitted.clear()
      const fresh = connguard
      const warnings: (Error & { code?: string })[] = []
      const onWarning = (w: Error & { code?: string }) => {
        if (w.code === 'CONNGUARD_LATE_ATTACH') warnings.push(w)
      }
      process.on('warning', onWarning)
      cleanups.push(() => process.off('warning', onWarning))

      const options = secure
        ? { handshakeTimeout: D, headersTimeout: FAR }
        : { headersTimeout: D, keepAliveTimeout: FAR }
      const { port, closes, guard } = await startApp(createApp, secure, options, {
        attach: false,
        factory: fresh,
      })
      // Unguarded until the first request goes through the middleware.
      const first = await keepAliveRequests(port, { tls: secure, count: 2, pauseMs: 50 })
      expect(first.statuses, closes.describe()).toEqual([200, 200])
      await new Promise((resolve) => setImmediate(resolve)) // emitWarning emits on nextTick
      expect(warnings).toHaveLength(1)
      expect(warnings[0]?.name).toBe('ConnguardWarning')

      // Later connections are guarded.
      const result = await silentTcp(port)
      const record = await closes.next()
      expectDeadline(result.heldMs, D, 'client, after late attach')
      expect(record.closeReason).toBe(secure ? 'tls_handshake_timeout' : 'request_headers_timeout')
      // The connection that carried the attaching request was accepted before: not tracked.
      expect(closes.records).toHaveLength(1)
      expect(guard.tracker.snapshot().total).toBe(0)

      // Once per process: a second late-attaching guard does not warn again.
      const other = await startApp(createApp, secure, options, { attach: false, factory: fresh })
      const again = await keepAliveRequests(other.port, { tls: secure, count: 1 })
      expect(again.statuses, other.closes.describe()).toEqual([200])
      await new Promise((resolve) => setImmediate(resolve))
      expect(warnings).toHaveLength(1)
      row({
        scenario: 'late attach, then silent TCP',
        deadlineMs: D,
        clientMs: result.heldMs,
        serverMs: record.duration,
        reason: record.closeReason,
      })
    })

    it('hygiene: no record left after every connection closes; close() removes every listener and restores timers', async () => {
      const app = createApp()
      const guard = connguard({
        sweepInterval: SWEEP,
        handshakeTimeout: D,
        headersTimeout: D,
        keepAliveTimeout: 1_000,
      })
      cleanups.push(() => guard.tracker.close())
      const closes = new CloseLog(guard.tracker)
      app.use(guard)
      addRoutes(app, guard)
      const server = secure ? https.createServer(tlsOptions, app) : http.createServer(app)
      cleanups.push(() => closeServer(server))
      const appUpgrade = (_req: http.IncomingMessage, socket: Socket) => {
        socket.on('error', () => {})
        socket.on('end', () => socket.end())
        socket.write(UPGRADE_101)
      }
      server.on('upgrade', appUpgrade)
      const port = await listen(server)

      const EVENTS = [
        'connection',
        'secureConnection',
        'tlsClientError',
        'newListener',
        'removeListener',
        'upgrade',
      ] as const
      const listeners = () => Object.fromEntries(EVENTS.map((e) => [e, server.listeners(e)]))
      const handshakeKey = Object.getOwnPropertySymbols(server).find(
        (s) => s.description === 'handshake-timeout',
      )
      const timers = () => ({
        headersTimeout: server.headersTimeout,
        requestTimeout: server.requestTimeout,
        keepAliveTimeout: server.keepAliveTimeout,
        handshake: handshakeKey && (server as unknown as Record<symbol, unknown>)[handshakeKey],
      })
      const listenersBefore = listeners()
      const timersBefore = timers()
      expect(timersBefore).toEqual({
        headersTimeout: 60_000,
        requestTimeout: 300_000,
        keepAliveTimeout: 5_000,
        handshake: secure ? 120_000 : undefined,
      })

      expect(guard.attach(server)).toBe(server)
      // Node's timers aligned with the guard's.
      expect(timers()).toEqual({
        headersTimeout: 0,
        requestTimeout: 0,
        keepAliveTimeout: 1_000,
        handshake: secure ? 0 : undefined,
      })

      // One of each ending: healthy, cut, upgraded then closed by the client.
      const healthy = await keepAliveRequests(port, { tls: secure, count: 2 })
      expect(healthy.statuses, closes.describe()).toEqual([200, 200])
      await silentTcp(port)
      const { conn } = await upgradeRequest(port, { tls: secure })
      expect(guard.tracker.snapshot()).toMatchObject({ total: 1, upgraded: 1 })
      conn.destroy()
      await closes.nth(3)
      expect(closes.records.map((r) => r.closeReason)).toEqual([
        'client_closed',
        secure ? 'tls_handshake_timeout' : 'request_headers_timeout',
        'client_closed',
      ])
      expect([...guard.tracker.connections()]).toEqual([])
      const snapshot = guard.tracker.snapshot()
      expect(snapshot).toMatchObject(NO_LIVE_CONNECTIONS)
      expect(Object.values(snapshot.closedByReason).reduce((a, b) => a + (b ?? 0), 0)).toBe(3)

      guard.tracker.close()
      guard.tracker.close() // idempotent
      expect(listeners()).toEqual(listenersBefore)
      expect(timers()).toEqual(timersBefore)
      // This file closes every tracker it makes: nobody is left on Node's HTTP channels.
      expect(diagnosticsChannel.channel('http.server.request.start').hasSubscribers).toBe(false)
      expect(diagnosticsChannel.channel('http.server.response.finish').hasSubscribers).toBe(false)

      // Still a working server, now unguarded.
      const after = await keepAliveRequests(port, { tls: secure, count: 1 })
      expect(after.statuses, closes.describe()).toEqual([200])
      expect(closes.records).toHaveLength(3)
    })

    it('hygiene: an upgrade listener added after attach leaves only the application listener after close()', async () => {
      const { server, guard } = await startApp(createApp, secure, { headersTimeout: D })
      const appUpgrade = () => {}
      server.on('upgrade', appUpgrade)
      expect(server.listenerCount('upgrade')).toBe(2)
      server.off('upgrade', appUpgrade)
      // Ours leaves with the application's last one.
      expect(server.listenerCount('upgrade')).toBe(0)
      server.on('upgrade', appUpgrade)
      guard.tracker.close()
      expect(server.listeners('upgrade')).toEqual([appUpgrade])
    })
  })

  it.each(VERSIONS)(
    '$name: once req.connguard is in place the guard leaves the app router; every other layer still runs for every request',
    async ({ createApp }) => {
      const app = createApp()
      const guard = connguard()
      const server = guard.attach(http.createServer(app))
      cleanups.push(async () => {
        guard.tracker.close()
        await closeServer(server)
      })
      let before = 0
      let after = 0
      app.use((_req, _res, next) => {
        before++
        next()
      })
      app.use(guard)
      app.use((_req, _res, next) => {
        after++
        next()
      })
      app.get('/who', (req, res) => {
        const record = (req as unknown as { connguard: { record?: ConnectionRecord } }).connguard
          .record
        res.end(String(record?.id ?? 'none'))
      })
      const app_ = app as unknown as {
        router?: { stack: unknown[] }
        _router?: { stack: unknown[] }
      }
      const stack = () => (app_._router ?? app_.router)?.stack as { handle?: unknown }[]
      expect(stack().some((layer) => layer.handle === guard)).toBe(true)
      const ids: string[] = []
      guard.tracker.on('open', (rec) => ids.push(String(rec.id)))
      const port = await listen(server)
      const result = await keepAliveRequests(port, { count: 3, path: '/who' })
      expect(result.statuses).toEqual([200, 200, 200])
      // req.connguard answers on every request, the first (through the guard) and the later ones.
      expect(result.responses.map((r) => r.body.toString())).toEqual([ids[0], ids[0], ids[0]])
      expect(stack().some((layer) => layer.handle === guard)).toBe(false)
      expect([before, after]).toEqual([3, 3])
    },
  )

  it("two guards on one app (two servers): req.connguard is the guard of the request's connection", async () => {
    const app = createApp()
    const guards = [connguard(), connguard()]
    const servers = guards.map((g) => g.attach(http.createServer(app)))
    for (const g of guards) app.use(g)
    app.get('/who', (req, res) => {
      const record = (req as unknown as { connguard: { record?: ConnectionRecord } }).connguard
        .record
      res.end(String(record?.id ?? 'none'))
    })
    cleanups.push(async () => {
      for (const g of guards) g.tracker.close()
      for (const s of servers) await closeServer(s)
    })
    const opened = guards.map((g) => {
      const ids: string[] = []
      g.tracker.on('open', (rec) => ids.push(String(rec.id)))
      return ids
    })
    for (const [i, server] of servers.entries()) {
      const port = await listen(server)
      const result = await keepAliveRequests(port, { count: 1, path: '/who' })
      expect(opened[i]).toHaveLength(1)
      expect(result.responses[0]?.body.toString()).toBe(opened[i]?.[0])
    }
  })

  describe('invalid options', () => {
    const codeOf = (fn: () => unknown): unknown => {
      try {
        fn()
      } catch (err) {
        return (err as { code?: unknown }).code
      }
      return 'did not throw'
    }

    it('throw ConnguardErrors with stable codes', () => {
      expect(codeOf(() => connguard({ headerTimeout: 1 } as ConnguardExpressOptions))).toBe(
        'CONNGUARD_ERR_UNKNOWN_OPTION',
      )
      expect(codeOf(() => connguard({ requestTimeout: 1.5 }))).toBe('CONNGUARD_ERR_INVALID_OPTION')
      expect(codeOf(() => connguard({ headersTimeout: -1 }))).toBe('CONNGUARD_ERR_INVALID_OPTION')
      const guard = connguard()
      cleanups.push(() => guard.tracker.close())
      expect(
        codeOf(() => guard.route({ requestTimeout: 'x' } as unknown as { requestTimeout: number })),
      ).toBe('CONNGUARD_ERR_INVALID_OPTION')
      expect(codeOf(() => guard.route({ headersTimeout: 1 } as never))).toBe(
        'CONNGUARD_ERR_UNKNOWN_OPTION',
      )
      expect(codeOf(() => guard.attach({}))).toBe('CONNGUARD_ERR_UNSUPPORTED_SERVER')
      expect(codeOf(() => guard.attach(net.createServer()))).toBe(
        'CONNGUARD_ERR_UNSUPPORTED_SERVER',
      )
      guard.tracker.close()
      expect(codeOf(() => guard.attach(http.createServer()))).toBe('CONNGUARD_ERR_TRACKER_CLOSED')
    })

    it('a second tracker on the same server throws CONNGUARD_ERR_ALREADY_ATTACHED', () => {
      const app = createApp()
      const server = http.createServer(app)
      const first = connguard()
      const second = connguard()
      const core = new ConnectionTracker()
      cleanups.push(() => {
        first.tracker.close()
        second.tracker.close()
        core.close()
      })
      app.use(first)
      const connectionListeners = server.listenerCount('connection')
      first.attach(server)
      expect(first.attach(server)).toBe(server) // the same tracker again is a no-op
      expect(codeOf(() => second.attach(server))).toBe('CONNGUARD_ERR_ALREADY_ATTACHED')
      expect(codeOf(() => core.attach(server))).toBe('CONNGUARD_ERR_ALREADY_ATTACHED')
      // Once the first lets go, another may take over.
      first.tracker.close()
      expect(second.attach(server)).toBe(server)
      // The first's listener went with it; only the second's was added.
      expect(server.listenerCount('connection')).toBe(connectionListeners + 1)
    })
  })
})
