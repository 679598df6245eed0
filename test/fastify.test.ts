/**
 * @connguard/fastify over real sockets on 127.0.0.1: each phase deadline cuts the client
 * that stalls in it (timed from the client AND checked in the tracker's 'close' record),
 * healthy clients are never cut, and the plugin leaves the server as it found it.
 * Plain HTTP and HTTPS run the same scenarios; the TLS handshake phase has its own file
 * (fastify-https.test.ts).
 */
import type { AddressInfo } from 'node:net'
import { performance } from 'node:perf_hooks'
import connguardDefault, { ConnectionTracker, connguard, MAX_DURATION } from '@connguard/fastify'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  getRequest,
  keepAliveRequests,
  openSocket,
  rawHttp,
  silentTcp,
  slowloris,
  slowUpload,
  upgradeRequest,
} from './helpers/clients.js'
import { startGuarded, stopApps } from './helpers/fastify-app.js'
import { parseResponse, parseResponses } from './helpers/http-response.js'
import {
  expectCutWithin,
  formatTimings,
  NO_LIVE_CONNECTIONS,
  sleep,
  type TimingRow,
  waitUntil,
} from './helpers/records.js'
import { tlsOptions } from './helpers/tls.js'

/** Every test's sweeper resolution: a close is late by at most this (plus event-loop lag). */
const SWEEP = 50

const timings: TimingRow[] = []

afterEach(async () => {
  await stopApps()
})

afterAll(() => {
  console.log(formatTimings('test/fastify.test.ts', timings))
})

describe.each([
  { transport: 'http', tls: false },
  { transport: 'https', tls: true },
])('$transport', ({ transport, tls }) => {
  const row = (scenario: string, r: Omit<TimingRow, 'scenario'>) =>
    timings.push({ scenario: `${transport}: ${scenario}`, ...r })

  /** TLS facts every established HTTPS record carries; nothing for plain HTTP. */
  const expectTransport = (rec: {
    secure: boolean
    tls: unknown
    handshakeDuration: number | null
  }) => {
    expect(rec.secure).toBe(tls)
    if (tls) {
      expect(rec.handshakeDuration).toBeGreaterThan(0)
      expect(rec.handshakeDuration).toBeLessThan(1000)
      expect(rec.tls).toMatchObject({
        protocol: expect.stringMatching(/^TLSv1\.[23]$/),
        servername: 'localhost',
      })
    } else {
      expect(rec.handshakeDuration).toBeNull()
      expect(rec.tls).toBeNull()
    }
  }

  it('TCP connect then nothing: cut at the first deadline of its phase', async () => {
    const deadline = 400
    const { port, closes } = await startGuarded(
      {
        handshakeTimeout: deadline,
        headersTimeout: deadline,
        keepAliveTimeout: 2000,
        sweepInterval: SWEEP,
      },
      { tls },
    )
    // Plain TCP even against HTTPS: a client that never starts the handshake.
    const result = await silentTcp(port)
    const rec = await closes.next()
    expectCutWithin(result.heldMs, deadline, SWEEP, 'client')
    expectCutWithin(rec.duration ?? Number.NaN, deadline, SWEEP, 'server')
    expect(rec.stateAtClose).toBe('new')
    expect(rec.requests).toBe(0)
    expect(rec.bytesRead).toBe(0)
    expect(rec.handshakeDuration).toBeNull()
    expect(rec.errorCode).toBeNull()
    if (tls) {
      expect(rec.closeReason).toBe('tls_handshake_timeout')
      expect(rec.tls).toBeNull()
      expect(result.received.length).toBe(0)
    } else {
      expect(rec.closeReason).toBe('request_headers_timeout')
      // Node's answer to a request that timed out before its response began.
      expect(parseResponses(result.received, { eof: true })[0]?.status).toBe(408)
      expect(rec.bytesWritten).toBeGreaterThan(0)
    }
    row('connect, send nothing', {
      deadlineMs: deadline,
      clientMs: result.heldMs,
      serverMs: rec.duration,
      reason: rec.closeReason,
    })
  })

  it('slowloris on the first request: request_headers_timeout counted from establishment, 408', async () => {
    const headersTimeout = 600
    const { port, closes } = await startGuarded(
      { headersTimeout, keepAliveTimeout: 2000, requestTimeout: 5000, sweepInterval: SWEEP },
      { tls },
    )
    const result = await slowloris(port, { tls, intervalMs: 150 })
    const rec = await closes.next()
    // The first head's deadline runs from the connection's establishment (TLS done).
    const clientMs = result.at - result.establishedAt
    const serverMs = (rec.duration ?? Number.NaN) - (rec.handshakeDuration ?? 0)
    expectCutWithin(clientMs, headersTimeout, SWEEP, 'client')
    expectCutWithin(serverMs, headersTimeout, SWEEP, 'server')
    expect(result.headerLinesSent).toBeGreaterThanOrEqual(2)
    expect(result.response?.status).toBe(408)
    expect(rec.closeReason).toBe('request_headers_timeout')
    expect(rec.stateAtClose).toBe('active')
    expect(rec.requests).toBe(0)
    expect(rec.bytesRead).toBeGreaterThan(0)
    expect(rec.timeToFirstRequest).not.toBeNull()
    expectTransport(rec)
    row('slowloris, first request', {
      deadlineMs: headersTimeout,
      clientMs,
      serverMs,
      reason: rec.closeReason,
    })
  })

  it('slowloris on a later keep-alive request: timed from that request’s first byte', async () => {
    const headersTimeout = 600
    const keepAliveTimeout = 2000
    const pauseMs = 300
    const { port, closes } = await startGuarded(
      { headersTimeout, keepAliveTimeout, requestTimeout: 5000, sweepInterval: SWEEP },
      { tls },
    )
    const result = await slowloris(port, {
      tls,
      intervalMs: 150,
      firstRequest: getRequest('/'),
      pauseMs,
    })
    const rec = await closes.next()
    expect(result.firstResponse?.status).toBe(200)
    // From the slow request's first byte: not from establishment or the end of the first
    // response (both ≥ pauseMs earlier: too early), nor from the idle start plus
    // keepAliveTimeout (≥ keepAliveTimeout − pauseMs = 1700 ms: too late).
    const clientMs = result.at - result.slowStartedAt
    const serverMs = closes.closedAt(rec) - closes.lastEntered(rec, 'active')
    expectCutWithin(clientMs, headersTimeout, SWEEP, 'client')
    // A head after the first shows `active` from the sweep that finds it in Node's list (up to
    // a sweep after its first byte); its deadline still runs from that byte.
    // (100 ms more for a sweep that runs late on a busy machine).
    expectCutWithin(serverMs, headersTimeout - SWEEP - 100, 2 * SWEEP + 100, 'server')
    expect(result.response?.status).toBe(408)
    expect(rec.closeReason).toBe('request_headers_timeout')
    expect(rec.stateAtClose).toBe('active')
    expect(rec.requests).toBe(1)
    expect(rec.httpVersion).toBe('1.1')
    expect(rec.bytesRead).toBeGreaterThan(0)
    // 'handshaking' shows only if a sweep ran mid-handshake: not part of what is checked here.
    expect(
      closes
        .transitions(rec)
        .map((t) => t.to)
        .filter((to) => to !== 'handshaking'),
    ).toEqual(
      tls ? ['idle', 'active', 'idle', 'active', 'closed'] : ['active', 'idle', 'active', 'closed'],
    )
    expectTransport(rec)
    row('slowloris, later keep-alive request', {
      deadlineMs: headersTimeout,
      clientMs,
      serverMs,
      reason: rec.closeReason,
    })
  })

  it('keep-alive idle: keep_alive_timeout, advertised as Keep-Alive: timeout=N', async () => {
    const keepAliveTimeout = 1500
    const { port, closes } = await startGuarded(
      { headersTimeout: 600, keepAliveTimeout, sweepInterval: SWEEP },
      { tls },
    )
    const conn = await openSocket(port, { tls })
    const clientPort = conn.socket.localPort
    try {
      conn.send(getRequest('/'))
      const response = await conn.waitFor((buf) => parseResponse(buf))
      const respondedAt = performance.now()
      const close = await conn.closed
      const rec = await closes.forClientPort(clientPort)
      expect(response.status).toBe(200)
      expect(response.body.toString()).toBe('ok')
      expect(response.headers['keep-alive']).toBe(`timeout=${Math.floor(keepAliveTimeout / 1000)}`)
      expect(response.headers.connection).toBe('keep-alive')
      // Nothing after the response: an idle connection gets no 408.
      expect(close.received.length).toBe(response.end)
      const clientMs = close.at - respondedAt
      const serverMs = closes.closedAt(rec) - closes.lastEntered(rec, 'idle')
      // The response's end is settled by the next sweep: the idle deadline runs from there.
      expectCutWithin(clientMs, keepAliveTimeout, 2 * SWEEP, 'client')
      expectCutWithin(serverMs, keepAliveTimeout, SWEEP, 'server')
      expect(rec.closeReason).toBe('keep_alive_timeout')
      expect(rec.stateAtClose).toBe('idle')
      expect(rec.requests).toBe(1)
      expect(rec.bytesRead).toBeGreaterThan(0)
      expect(rec.bytesWritten).toBeGreaterThan(0)
      expectTransport(rec)
      row('keep-alive idle after a response', {
        deadlineMs: keepAliveTimeout,
        clientMs,
        serverMs,
        reason: rec.closeReason,
      })
    } finally {
      conn.destroy()
    }
  })

  it('requestTimeout: a handler that never answers is cut with a 408', async () => {
    const requestTimeout = 400
    const { port, closes } = await startGuarded(
      { headersTimeout: 2000, keepAliveTimeout: 2000, requestTimeout, sweepInterval: SWEEP },
      { tls },
    )
    const conn = await openSocket(port, { tls })
    const clientPort = conn.socket.localPort
    try {
      const sentAt = performance.now()
      conn.send(getRequest('/hang'))
      const close = await conn.closed
      const rec = await closes.forClientPort(clientPort)
      const clientMs = close.at - sentAt
      const serverMs = closes.closedAt(rec) - closes.lastEntered(rec, 'active')
      expectCutWithin(clientMs, requestTimeout, SWEEP, 'client')
      expectCutWithin(serverMs, requestTimeout, SWEEP, 'server')
      expect(parseResponses(close.received, { eof: true })[0]?.status).toBe(408)
      expect(rec.closeReason).toBe('request_timeout')
      expect(rec.stateAtClose).toBe('active')
      expect(rec.requests).toBe(1)
      expect(rec.bytesRead).toBeGreaterThan(0)
      expectTransport(rec)
      row('requestTimeout, handler never answers', {
        deadlineMs: requestTimeout,
        clientMs,
        serverMs,
        reason: rec.closeReason,
      })
    } finally {
      conn.destroy()
    }
  })

  it('requestTimeout: a slow upload is cut with a 408', async () => {
    const requestTimeout = 400
    const { port, closes } = await startGuarded(
      { headersTimeout: 2000, keepAliveTimeout: 2000, requestTimeout, sweepInterval: SWEEP },
      { tls },
    )
    const totalBytes = 100_000
    const result = await slowUpload(port, {
      tls,
      path: '/upload',
      totalBytes,
      chunkBytes: 100,
      intervalMs: 50,
    })
    const rec = await closes.next()
    const clientMs = result.at - result.startedAt
    expectCutWithin(clientMs, requestTimeout, SWEEP, 'client')
    expect(result.status).toBe(408)
    expect(result.sentBytes).toBeLessThan(totalBytes)
    expect(rec.closeReason).toBe('request_timeout')
    expect(rec.stateAtClose).toBe('active')
    expect(rec.requests).toBe(1)
    expect(rec.bytesRead).toBeGreaterThan(0)
    expectTransport(rec)
    row('requestTimeout, slow upload', {
      deadlineMs: requestTimeout,
      clientMs,
      serverMs: closes.closedAt(rec) - closes.lastEntered(rec, 'active'),
      reason: rec.closeReason,
    })
  })

  it('route config.connguard.requestTimeout: false is not cut; the same handler without it is', async () => {
    const requestTimeout = 300
    const { port, closes } = await startGuarded(
      { headersTimeout: 300, keepAliveTimeout: 300, requestTimeout, sweepInterval: SWEEP },
      { tls },
    )
    const answerMs = 1000
    const spared = await rawHttp(port, getRequest(`/slow-unlimited?ms=${answerMs}`), {
      tls,
      until: 'response',
    })
    expect(spared.responses[0]?.status).toBe(200)
    expect(spared.responses[0]?.body.toString()).toBe('slow')
    expect(spared.at - spared.openedAt).toBeGreaterThanOrEqual(answerMs - 20)
    const sparedRec = await closes.next()
    expect(sparedRec.closeReason).toBe('client_closed')
    expect(sparedRec.requests).toBe(1)

    // Control: the global limit does apply to the same handler on a route without the override.
    const cut = await rawHttp(port, getRequest(`/slow?ms=${answerMs}`), { tls })
    expect(cut.responses[0]?.status).toBe(408)
    const cutRec = await closes.next()
    expect(cutRec.closeReason).toBe('request_timeout')
    expectCutWithin(
      cut.at - cut.openedAt - (cutRec.handshakeDuration ?? 0),
      requestTimeout,
      SWEEP,
      'control',
    )

    // A healthy upload lasting 4× the limit, on an overridden route.
    const upload = await slowUpload(port, {
      tls,
      path: '/upload-unlimited',
      totalBytes: 25_000,
      chunkBytes: 1000,
      intervalMs: 50,
    })
    expect(upload.status).toBe(200)
    expect(JSON.parse(upload.body.toString())).toEqual({ bytes: 25_000 })
    expect(upload.at - upload.startedAt).toBeGreaterThanOrEqual(4 * requestTimeout)
    const uploadRec = await closes.next()
    expect(uploadRec.closeReason).toBe('client_closed')
    row('route requestTimeout: false (not cut)', {
      deadlineMs: `${requestTimeout} (off on route)`,
      clientMs: spared.at - spared.openedAt,
      serverMs: null,
      reason: 'answered 200',
    })
  })

  it('route config.connguard.requestTimeout: N applies a limit the global options leave off', async () => {
    const routeTimeout = 400
    const { port, closes } = await startGuarded(
      { headersTimeout: 2000, keepAliveTimeout: 2000, sweepInterval: SWEEP },
      {
        tls,
        setup: (app) => {
          app.get(
            '/hang-limited',
            { config: { connguard: { requestTimeout: routeTimeout } } },
            () => new Promise<never>(() => {}),
          )
        },
      },
    )
    const conn = await openSocket(port, { tls })
    const clientPort = conn.socket.localPort
    try {
      const sentAt = performance.now()
      conn.send(getRequest('/hang-limited'))
      const close = await conn.closed
      const rec = await closes.forClientPort(clientPort)
      const clientMs = close.at - sentAt
      expectCutWithin(clientMs, routeTimeout, SWEEP, 'client')
      expect(parseResponses(close.received, { eof: true })[0]?.status).toBe(408)
      expect(rec.closeReason).toBe('request_timeout')
      expect(rec.stateAtClose).toBe('active')
      row('route requestTimeout: N, global off', {
        deadlineMs: routeTimeout,
        clientMs,
        serverMs: closes.closedAt(rec) - closes.lastEntered(rec, 'active'),
        reason: rec.closeReason,
      })
    } finally {
      conn.destroy()
    }
  })

  it('requestTimeout after the response started: cut without a 408', async () => {
    const requestTimeout = 400
    const { port, closes } = await startGuarded(
      { headersTimeout: 2000, keepAliveTimeout: 2000, requestTimeout, sweepInterval: SWEEP },
      {
        tls,
        setup: (app) => {
          app.get('/stream-forever', (_request, reply) => {
            reply.hijack()
            reply.raw.writeHead(200, { 'content-type': 'text/plain' })
            reply.raw.write('partial')
          })
        },
      },
    )
    const result = await rawHttp(port, getRequest('/stream-forever'), { tls })
    const rec = await closes.next()
    const text = result.received.toString('latin1')
    expect(text.startsWith('HTTP/1.1 200 ')).toBe(true)
    expect(text).not.toContain('408')
    expectCutWithin(
      result.at - result.openedAt - (rec.handshakeDuration ?? 0),
      requestTimeout,
      SWEEP,
      'client',
    )
    expect(rec.closeReason).toBe('request_timeout')
    expect(rec.stateAtClose).toBe('active')
  })

  it('a malformed request closes as invalid_request with the parser error code', async () => {
    const { port, closes } = await startGuarded(
      { headersTimeout: 2000, keepAliveTimeout: 2000, sweepInterval: SWEEP },
      { tls },
    )
    const result = await rawHttp(port, 'GET / HTTP/1.1\r\nHost: localhost\r\nBad Header\r\n\r\n', {
      tls,
    })
    const rec = await closes.next()
    // Fastify's clientError handler answers 400 and destroys the socket with the parser error.
    expect(result.responses[0]?.status).toBe(400)
    expect(rec.closeReason).toBe('invalid_request')
    expect(rec.errorCode).toMatch(/^HPE_/)
    expect(rec.requests).toBe(0)
  })

  it('app.close() with an idle keep-alive connection: drained at once, the record closes as app_shutdown', async () => {
    const { app, port, closes } = await startGuarded(
      { headersTimeout: 2000, keepAliveTimeout: 5000, sweepInterval: SWEEP },
      { tls },
    )
    const conn = await openSocket(port, { tls })
    const clientPort = conn.socket.localPort
    try {
      conn.send(getRequest('/'))
      const response = await conn.waitFor((buf) => parseResponse(buf))
      expect(response.status).toBe(200)
      await waitUntil(() => app.connguard.snapshot().idle === 1, { what: 'connection idle' })
      const closing = closes.forClientPort(clientPort, 1500)
      await app.close()
      const rec = await closing
      expect(rec.closeReason).toBe('app_shutdown')
      expect(rec.stateAtClose).toBe('idle')
      expect(rec.requests).toBe(1)
      const close = await conn.closed
      expect(close.received.length).toBe(response.end)
    } finally {
      conn.destroy()
    }
  })

  it('pipelined requests: both answered, counted, and the connection is idle after', async () => {
    const { app, port, closes } = await startGuarded(
      { headersTimeout: 2000, keepAliveTimeout: 2000, requestTimeout: 2000, sweepInterval: SWEEP },
      { tls },
    )
    const conn = await openSocket(port, { tls })
    try {
      conn.send(getRequest('/slow?ms=50') + getRequest('/'))
      const responses = await conn.waitFor((buf) => {
        const all = parseResponses(buf)
        return all.length >= 2 ? all : undefined
      })
      expect(responses.map((r) => r.status)).toEqual([200, 200])
      await waitUntil(() => app.connguard.snapshot().idle === 1, { what: 'connection idle' })
      conn.destroy()
      const rec = await closes.next()
      expect(rec.requests).toBe(2)
      expect(rec.closeReason).toBe('client_closed')
      expect(rec.stateAtClose).toBe('idle')
    } finally {
      conn.destroy()
    }
  })

  it('healthy keep-alive: three requests with short pauses on one connection', async () => {
    // 1 s deadlines against 150 ms pauses: a stall of this process (client and server share it)
    // stretches a pause; at 300 ms a ~1 s stall on a loaded machine rightly cut the idle
    // connection (keep_alive_timeout) and the test mistook it for a failure.
    const keepAliveTimeout = 1_000
    const { port, closes } = await startGuarded(
      {
        handshakeTimeout: 1_000,
        headersTimeout: 1_000,
        keepAliveTimeout,
        sweepInterval: SWEEP,
      },
      { tls },
    )
    const result = await keepAliveRequests(port, { tls, count: 3, pauseMs: 150 })
    expect(result.statuses).toEqual([200, 200, 200])
    expect(result.close).toBeUndefined()
    const rec = await closes.next()
    expect(rec.requests).toBe(3)
    expect(rec.closeReason).toBe('client_closed')
    expect(rec.stateAtClose).toBe('idle')
    expect(rec.httpVersion).toBe('1.1')
    expect(rec.bytesRead).toBeGreaterThan(0)
    // Each pause less a sweep: a request's end and the next one's start are settled by sweeps.
    expect(rec.stateDurations.idle).toBeGreaterThanOrEqual(2 * (150 - SWEEP) - 20)
    expectTransport(rec)
  })

  it('healthy upload lasting 4× every configured timeout completes with 200', async () => {
    const deadline = 300
    const { port, closes } = await startGuarded(
      {
        handshakeTimeout: deadline,
        headersTimeout: deadline,
        keepAliveTimeout: deadline,
        sweepInterval: SWEEP,
      },
      { tls },
    )
    // 30 chunks 50 ms apart: 1.45 s from the first to the last, so the server's own measure
    // of the request (first byte to response) is past 4 × deadline even when the first chunks
    // reach it late on a loaded machine (25 chunks, 1.2 s: seen at 1,197 ms).
    const totalBytes = 30_000
    const result = await slowUpload(port, {
      tls,
      path: '/upload',
      totalBytes,
      chunkBytes: 1000,
      intervalMs: 50,
    })
    expect(result.close).toBeUndefined()
    expect(result.status).toBe(200)
    expect(JSON.parse(result.body.toString())).toEqual({ bytes: totalBytes })
    expect(result.sentBytes).toBe(totalBytes)
    const clientMs = result.at - result.startedAt
    expect(clientMs).toBeGreaterThanOrEqual(4 * deadline)
    const rec = await closes.next()
    expect(rec.closeReason).toBe('client_closed')
    expect(rec.requests).toBe(1)
    expect(rec.bytesRead).toBeGreaterThan(totalBytes)
    expect(rec.stateDurations.active).toBeGreaterThanOrEqual(4 * deadline)
    expectTransport(rec)
    row('healthy upload (not cut)', {
      deadlineMs: `${deadline} (all)`,
      clientMs,
      serverMs: rec.stateDurations.active,
      reason: `200, then ${rec.closeReason}`,
    })
  })

  it('an upgraded connection outlives every HTTP deadline, then closes with its record', async () => {
    const deadline = 300
    const { app, port, closes } = await startGuarded(
      {
        handshakeTimeout: deadline,
        headersTimeout: deadline,
        keepAliveTimeout: deadline,
        requestTimeout: deadline,
        sweepInterval: SWEEP,
      },
      {
        tls,
        setup: (app) => {
          // Added after the plugin, as an application would.
          app.server.on('upgrade', (_req, socket) => {
            socket.write(
              'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
            )
            // Node's HTTP server is allowHalfOpen: after an upgrade the application owns the
            // socket's end, and a peer's FIN closes nothing until it answers (as `ws` does).
            // Without this a plain-HTTP upgraded socket stays half-open, and tracked, for ever.
            socket.on('end', () => socket.end())
          })
        },
      },
    )
    const { conn, at } = await upgradeRequest(port, { tls })
    const clientPort = conn.socket.localPort
    try {
      const outlive = deadline + SWEEP + 500
      await sleep(outlive)
      expect(conn.isOpen()).toBe(true)
      const live = [...app.connguard.connections()].find((r) => r.remotePort === clientPort)
      expect(live?.state).toBe('upgraded')
      expect(app.connguard.snapshot()).toMatchObject({ total: 1, upgraded: 1 })
      conn.destroy()
      const rec = await closes.forClientPort(clientPort)
      expect(rec).toBe(live)
      expect(rec.state).toBe('closed')
      expect(rec.stateAtClose).toBe('upgraded')
      expect(rec.requests).toBe(1)
      expect(['client_closed', 'connection_reset']).toContain(rec.closeReason)
      expect(rec.stateDurations.upgraded).toBeGreaterThanOrEqual(outlive - 20)
      expectTransport(rec)
      row('upgraded (not cut)', {
        deadlineMs: `${deadline} (all)`,
        clientMs: performance.now() - at,
        serverMs: rec.stateDurations.upgraded,
        reason: `open until the client closed: ${rec.closeReason}`,
      })
    } finally {
      conn.destroy()
    }
  })

  it('hygiene: nothing left after close — no records, no listeners, Node timers restored', async () => {
    const app = (tls ? Fastify({ https: tlsOptions }) : Fastify()) as unknown as FastifyInstance
    try {
      const server = app.server
      const events = [
        'connection',
        'secureConnection',
        'tlsClientError',
        'newListener',
        'removeListener',
        'upgrade',
      ]
      const counts = () => Object.fromEntries(events.map((e) => [e, server.listenerCount(e)]))
      const handshakeKey = Object.getOwnPropertySymbols(server).find(
        (s) => s.description === 'handshake-timeout',
      )
      const timers = () => ({
        keepAliveTimeout: server.keepAliveTimeout,
        headersTimeout: server.headersTimeout,
        requestTimeout: server.requestTimeout,
        handshake:
          handshakeKey === undefined
            ? undefined
            : (server as unknown as Record<symbol, unknown>)[handshakeKey],
      })
      const listenersBefore = counts()
      const timersBefore = timers()
      expect(timersBefore.keepAliveTimeout).toBe(72_000) // Fastify's default
      if (tls) expect(timersBefore.handshake).toBe(120_000) // Node's default
      await app.register(connguard, {
        handshakeTimeout: 300,
        headersTimeout: 300,
        keepAliveTimeout: 1000,
        requestTimeout: 500,
        sweepInterval: SWEEP,
      })
      app.get('/', async () => 'ok')
      // An application's own upgrade listener, added after the plugin: it must survive close.
      const appUpgrade = () => {}
      server.on('upgrade', appUpgrade)
      expect(server.listenerCount('upgrade')).toBe(2)
      // The guard's deadlines are in force; Node's own are aligned or off.
      expect(timers()).toEqual({
        keepAliveTimeout: 1000,
        headersTimeout: 0,
        requestTimeout: 0,
        handshake: tls ? 0 : undefined,
      })
      await app.listen({ port: 0, host: '127.0.0.1' })
      const { port } = server.address() as AddressInfo
      const result = await keepAliveRequests(port, { tls, count: 2 })
      expect(result.statuses).toEqual([200, 200])
      await waitUntil(() => app.connguard.snapshot().total === 0, {
        what: 'all connections closed',
      })
      expect([...app.connguard.connections()]).toEqual([])
      expect(app.connguard.snapshot()).toEqual({
        ...NO_LIVE_CONNECTIONS,
        closedByReason: { client_closed: 1 },
        pressure: expect.objectContaining({ level: 0, shedding: false }),
      })
      await app.close()
      expect(app.connguard.closed).toBe(true)
      expect(server.listeners('upgrade')).toEqual([appUpgrade])
      server.off('upgrade', appUpgrade)
      expect(counts()).toEqual(listenersBefore)
      expect(timers()).toEqual(timersBefore)
    } finally {
      await app.close()
    }
  })
})

describe('plugin registration', () => {
  it('registering twice on one server is refused, the first tracker stays in charge', async () => {
    const app = Fastify()
    try {
      await app.register(connguard, { sweepInterval: SWEEP })
      const first = app.connguard
      await expect(async () => {
        await app.register(connguard, { sweepInterval: SWEEP })
      }).rejects.toMatchObject({
        code: expect.stringMatching(/^(CONNGUARD_ERR_ALREADY_ATTACHED|FST_ERR_)/),
      })
      expect(app.connguard).toBe(first)
    } finally {
      await app.close().catch(() => {})
    }
  })

  it('keepAliveTimeout at its documented maximum (MAX_DURATION) makes Node emit no TimeoutOverflowWarning', async () => {
    const warnings: Error[] = []
    const onWarning = (warning: Error) => {
      if (warning.name === 'TimeoutOverflowWarning') warnings.push(warning)
    }
    process.on('warning', onWarning)
    try {
      const { port } = await startGuarded({ keepAliveTimeout: MAX_DURATION, sweepInterval: SWEEP })
      const result = await keepAliveRequests(port, { count: 2 })
      expect(result.statuses).toEqual([200, 200])
      await sleep(20)
      // Node 20 arms its own idle timer at keepAliveTimeout + 1000 ms (its
      // HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER): past 2^31 − 1 that overflows.
      expect(warnings.map((w) => w.message)).toEqual([])
    } finally {
      process.off('warning', onWarning)
    }
  })

  it('exposes the tracker as app.connguard; default export and core re-exports', async () => {
    const app = Fastify()
    try {
      await app.register(connguardDefault, { sweepInterval: SWEEP })
      expect(connguardDefault).toBe(connguard)
      expect(app.connguard).toBeInstanceOf(ConnectionTracker)
      expect(app.connguard.options).toMatchObject({ sweepInterval: SWEEP, requestTimeout: 0 })
    } finally {
      await app.close()
    }
  })

  it('rejects an unknown option (typo) with CONNGUARD_ERR_UNKNOWN_OPTION', async () => {
    const app = Fastify()
    try {
      await expect(async () => {
        await app.register(connguard, { headerTimeout: 5 } as never)
      }).rejects.toMatchObject({ code: 'CONNGUARD_ERR_UNKNOWN_OPTION' })
    } finally {
      await app.close().catch(() => {})
    }
  })

  it('rejects an invalid option value with CONNGUARD_ERR_INVALID_OPTION', async () => {
    const app = Fastify()
    try {
      await expect(async () => {
        await app.register(connguard, { keepAliveTimeout: -1 })
      }).rejects.toMatchObject({ code: 'CONNGUARD_ERR_INVALID_OPTION' })
    } finally {
      await app.close().catch(() => {})
    }
  })

  it('rejects a route whose config.connguard is invalid, at registration or ready', async () => {
    for (const [overrides, code] of [
      [{ requestTimeout: 'x' }, 'CONNGUARD_ERR_INVALID_OPTION'],
      [{ requestTimeout: -5 }, 'CONNGUARD_ERR_INVALID_OPTION'],
      [{ requestTimout: 500 }, 'CONNGUARD_ERR_UNKNOWN_OPTION'],
    ] as const) {
      const app = Fastify()
      try {
        await app.register(connguard, { sweepInterval: SWEEP })
        let error: unknown
        try {
          app.get('/x', { config: { connguard: overrides as never } }, async () => 'x')
          await app.ready()
        } catch (err) {
          error = err
        }
        expect(error, JSON.stringify(overrides)).toMatchObject({ code })
      } finally {
        await app.close().catch(() => {})
      }
    }
  })

  it.each([
    { name: 'http2: true', options: { http2: true } },
    { name: 'http2 with https', options: { http2: true, https: tlsOptions } },
  ])('guards an HTTP/2 server ($name), and detaches on close', async ({ options }) => {
    const app = Fastify(options as never) as unknown as FastifyInstance
    const listeners = () =>
      ['connection', 'session', 'newListener', 'removeListener'].map((e) =>
        app.server.listenerCount(e),
      )
    const before = listeners()
    try {
      await app.register(connguard, { sweepInterval: SWEEP })
      await app.ready()
      expect(app.connguard.snapshot().total).toBe(0)
      expect(app.server.listenerCount('session')).toBe((before[1] as number) + 1)
    } finally {
      await app.close()
    }
    expect(listeners()).toEqual(before)
  })
})
