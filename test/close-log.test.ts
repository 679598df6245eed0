/**
 * The structured close log over real sockets on 127.0.0.1: one line per closed connection,
 * at the level its reason calls for, with phase timings that match what the client did
 * (within the usual bounds: a cut lands in [deadline − 20, deadline + sweep + 400] ms).
 * Core `logCloses` with a pino-compatible fake logger, `guard.logCloses` for Express, and
 * Fastify's `closeLog: true` writing through a real pino `app.log` into a captured stream.
 */
import http from 'node:http'
import https from 'node:https'
import { performance } from 'node:perf_hooks'
import { type CloseLogLine, ConnectionTracker, logCloses } from '@connguard/core'
import { connguard as expressGuard } from '@connguard/express'
import { connguard } from '@connguard/fastify'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { getRequest, openSocket } from './helpers/clients.js'
import { parseResponse } from './helpers/http-response.js'
import {
  EARLY_MS,
  expectCutWithin,
  formatTimings,
  LATE_MS,
  sleep,
  type TimingRow,
  waitUntil,
} from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const SWEEP = 50
/** The keep-alive deadline of these tests, ms. */
const KEEP_ALIVE = 300
/** A deadline that never fires during a scenario about another one. */
const FAR = 10_000

interface Call {
  level: string
  obj: CloseLogLine
  msg: string
}

/** A pino-compatible logger that records every call. */
function fakeLogger() {
  const calls: Call[] = []
  const at =
    (level: string) =>
    (obj: object, msg?: string): void => {
      calls.push({ level, obj: obj as CloseLogLine, msg: msg ?? '' })
    }
  return {
    calls,
    logger: {
      trace: at('trace'),
      debug: at('debug'),
      info: at('info'),
      warn: at('warn'),
      error: at('error'),
      fatal: at('fatal'),
    },
  }
}

const timings: TimingRow[] = []
afterAll(() => {
  console.log(formatTimings('test/close-log.test.ts (server = the logged Ti)', timings))
})

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/** A plain or TLS node server answering 'ok', guarded by a tracker with `options`. */
async function startNode(
  options: ConstructorParameters<typeof ConnectionTracker>[0],
  { tls = false } = {},
) {
  const handler: http.RequestListener = (_req, res) => res.end('ok')
  const server = tls ? https.createServer(tlsOptions, handler) : http.createServer(handler)
  const tracker = new ConnectionTracker({ sweepInterval: SWEEP, ...options }).attach(server)
  const port = await listen(server)
  cleanups.push(async () => {
    await closeServer(server)
    tracker.close()
  })
  return { tracker, port }
}

/** One GET on a new connection; resolves with the open connection after the response. */
async function oneRequest(port: number, { tls = false } = {}) {
  const conn = await openSocket(port, { tls })
  const request = getRequest('/')
  conn.send(request)
  await conn.waitFor((buf) => parseResponse(buf))
  return {
    conn,
    // Read now: a closed socket no longer has one.
    clientPort: conn.socket.localPort,
    requestBytes: Buffer.byteLength(request),
    respondedAt: performance.now(),
  }
}

/** The timings of a line add up: every ms of its life is in exactly one phase (± rounding). */
function expectPhasesAddUp(line: CloseLogLine, { tls }: { tls: boolean }): void {
  // Plain HTTP waits for its first request in `new` (Tf); TLS waits in `idle` (part of Ti).
  const before = tls ? (line.handshakeMs as number) : (line.firstRequestMs as number)
  const sum = before + line.idleMs + line.activeMs + line.upgradedMs
  expect(Math.abs(sum - line.durationMs), JSON.stringify(line)).toBeLessThanOrEqual(3)
}

describe('logCloses (core) with a pino-compatible logger', () => {
  it.each([
    { transport: 'http', tls: false },
    { transport: 'https', tls: true },
  ])(
    '$transport: a keep-alive timeout logs one info line with its reason, timings and bytes',
    async ({ tls }) => {
      const { tracker, port } = await startNode(
        { keepAliveTimeout: KEEP_ALIVE, headersTimeout: FAR },
        { tls },
      )
      const { calls, logger } = fakeLogger()
      cleanups.push(logCloses(tracker, logger))

      const { conn, clientPort, requestBytes, respondedAt } = await oneRequest(port, { tls })
      const info = await conn.closed
      const clientHeldMs = info.at - conn.openedAt
      await waitUntil(() => calls.length > 0, { what: 'a close log line' })

      expect(calls).toHaveLength(1)
      const [{ level, obj: line, msg }] = calls as [Call]
      expect(level).toBe('info')
      expect(line).toMatchObject({
        reason: 'keep_alive_timeout',
        stateAtClose: 'idle',
        errorCode: null,
        requests: 1,
        httpVersion: '1.1',
        remoteAddress: '127.0.0.1',
        remotePort: clientPort,
        localPort: port,
        upgradedMs: 0,
        peakConcurrentStreams: 0,
      })
      // The idle phase after the response is the deadline under test.
      // The response's end is settled by the next sweep: the idle deadline runs from there.
      expectCutWithin(info.at - respondedAt, KEEP_ALIVE, 2 * SWEEP, 'client side')
      timings.push({
        scenario: `core ${tls ? 'https' : 'http'}: keep_alive_timeout (Tt ${line.durationMs})`,
        deadlineMs: KEEP_ALIVE,
        clientMs: info.at - respondedAt,
        serverMs: line.idleMs,
        reason: line.reason,
      })
      if (tls) {
        expect(line.tlsVersion).toMatch(/^TLSv1\.[23]$/)
        expect(line.handshakeMs).toBeGreaterThan(0)
        expect(line.handshakeMs).toBeLessThan(1000)
        // Under TLS, idle also holds the wait for the first request (a few ms here).
        expect(line.idleMs).toBeGreaterThanOrEqual(KEEP_ALIVE - EARLY_MS)
        expect(line.idleMs).toBeLessThanOrEqual(KEEP_ALIVE + SWEEP + LATE_MS + 100)
      } else {
        expect(line.tlsVersion).toBeNull()
        expect(line.handshakeMs).toBeNull()
        expectCutWithin(line.idleMs, KEEP_ALIVE, SWEEP, 'Ti')
        // Plain HTTP: the wire bytes are exactly the request and what the client received.
        expect(line.bytesRead).toBe(requestBytes)
        expect(line.bytesWritten).toBe(info.received.length)
      }
      expect(line.firstRequestMs).toBeGreaterThanOrEqual(0)
      expect(line.firstRequestMs).toBeLessThan(200)
      expect(line.activeMs).toBeLessThan(200)
      expectPhasesAddUp(line, { tls })
      // Tt is the connection's life as the client saw it, give or take the two ends' clocks.
      expect(Math.abs(line.durationMs - clientHeldMs)).toBeLessThan(100)
      expect(msg).toMatch(
        new RegExp(
          `^connection ${line.connId} closed: keep_alive_timeout in idle Th=(-|\\d+) Tf=\\d+ Ti=${line.idleMs} Ta=\\d+ Tt=${line.durationMs} req=1 in=\\d+ out=\\d+$`,
        ),
      )
    },
  )

  it('a client that hangs up logs at debug, with the idle time it waited', async () => {
    const { tracker, port } = await startNode({ keepAliveTimeout: FAR, headersTimeout: FAR })
    const { calls, logger } = fakeLogger()
    cleanups.push(logCloses(tracker, logger))

    const { conn, respondedAt } = await oneRequest(port)
    const WAIT = 250
    await sleep(WAIT)
    const hungUpAfter = performance.now() - respondedAt
    conn.destroy()
    await waitUntil(() => calls.length > 0, { what: 'a close log line' })

    const [{ level, obj: line }] = calls as [Call]
    expect(level).toBe('debug')
    expect(line).toMatchObject({ reason: 'client_closed', stateAtClose: 'idle', requests: 1 })
    timings.push({
      scenario: 'core http: client hangs up after 250 ms idle',
      deadlineMs: '-',
      clientMs: hungUpAfter,
      serverMs: line.idleMs,
      reason: line.reason,
    })
    // Nothing of ours timed this close: Ti is the client's wait, to within event-loop lag, less
    // up to a sweep (the response's end is settled by the next sweep, engine.ts `settle`).
    expect(line.idleMs).toBeGreaterThanOrEqual(WAIT - SWEEP - EARLY_MS)
    expect(line.idleMs).toBeLessThanOrEqual(hungUpAfter + LATE_MS)
    expectPhasesAddUp(line, { tls: false })
  })

  it('levels per reason, a level() picker and "silent" change what is written where', async () => {
    const { tracker, port } = await startNode({ keepAliveTimeout: 150, headersTimeout: 150 })
    const { calls, logger } = fakeLogger()
    cleanups.push(
      logCloses(tracker, logger, {
        levels: { keep_alive_timeout: 'warn', client_closed: 'silent' },
        // Connections that never sent a request (scanners, pre-connects) go to trace.
        level: (rec, level) => (rec.requests === 0 ? 'trace' : level),
      }),
    )
    const served = await oneRequest(port) // → keep_alive_timeout at warn
    const silent = await openSocket(port) // → request_headers_timeout, no request: trace
    const quitter = await oneRequest(port) // → client_closed: silent
    quitter.conn.destroy()
    await Promise.all([served.conn.closed, silent.closed])
    await waitUntil(() => calls.length >= 2, { what: 'two close log lines' })
    await sleep(100)

    const byReason = Object.fromEntries(calls.map((c) => [c.obj.reason, c.level]))
    expect(byReason).toEqual({ keep_alive_timeout: 'warn', request_headers_timeout: 'trace' })
  })

  it('the stop function ends logging; invalid options and loggers throw typed errors', async () => {
    const { tracker, port } = await startNode({ keepAliveTimeout: FAR, headersTimeout: FAR })
    const { calls, logger } = fakeLogger()
    const stop = logCloses(tracker, logger)
    stop()
    stop() // idempotent
    const { conn } = await oneRequest(port)
    conn.destroy()
    await sleep(150)
    expect(calls).toHaveLength(0)

    const code = (fn: () => unknown) => {
      try {
        fn()
      } catch (err) {
        return (err as { code?: string }).code
      }
      return 'no error'
    }
    const INVALID = 'CONNGUARD_ERR_INVALID_OPTION'
    const UNKNOWN = 'CONNGUARD_ERR_UNKNOWN_OPTION'
    const t = tracker
    expect(code(() => logCloses(t, null as never))).toBe(INVALID)
    // Default levels use debug: a logger without it cannot take peer closes.
    expect(code(() => logCloses(t, { info() {}, warn() {} }))).toBe(INVALID)
    expect(code(() => logCloses(t, logger, { levle: () => 'info' } as never))).toBe(UNKNOWN)
    expect(code(() => logCloses(t, logger, { levels: { keepalive: 'info' } as never }))).toBe(
      UNKNOWN,
    )
    expect(code(() => logCloses(t, logger, { levels: { error: 'loud' as never } }))).toBe(INVALID)
    expect(code(() => logCloses(t, logger, { level: 'info' as never }))).toBe(INVALID)
    expect(code(() => logCloses(t, logger, [] as never))).toBe(INVALID)
    // Nothing half-registered by the failed calls.
    expect(t.listenerCount('close')).toBe(0)
  })
})

describe('guard.logCloses (Express)', () => {
  it('logs the keep-alive cut of an Express server', async () => {
    const guard = expressGuard({ keepAliveTimeout: KEEP_ALIVE, sweepInterval: SWEEP })
    const app = express()
    app.use(guard)
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    const server = guard.attach(http.createServer(app))
    const port = await listen(server)
    cleanups.push(async () => {
      await closeServer(server)
      guard.tracker.close()
    })
    const { calls, logger } = fakeLogger()
    cleanups.push(guard.logCloses(logger))

    const { conn, respondedAt } = await oneRequest(port)
    const info = await conn.closed
    await waitUntil(() => calls.length > 0, { what: 'a close log line' })
    const [{ level, obj: line }] = calls as [Call]
    expect(level).toBe('info')
    expect(line.reason).toBe('keep_alive_timeout')
    // The response's end is settled by the next sweep: the idle deadline runs from there.
    expectCutWithin(info.at - respondedAt, KEEP_ALIVE, 2 * SWEEP, 'client side')
    expectCutWithin(line.idleMs, KEEP_ALIVE, SWEEP, 'Ti')
    timings.push({
      scenario: 'express: keep_alive_timeout',
      deadlineMs: KEEP_ALIVE,
      clientMs: info.at - respondedAt,
      serverMs: line.idleMs,
      reason: line.reason,
    })
  })
})

describe('Fastify closeLog', () => {
  const apps: FastifyInstance[] = []
  afterEach(async () => {
    for (const app of apps.splice(0)) {
      await closeServer(app.server)
      await app.close()
    }
  })

  /** Fastify with its real pino logger writing JSON lines into `lines`. */
  async function startFastify(level: string, options: Record<string, unknown>) {
    const lines: Record<string, unknown>[] = []
    const stream = { write: (chunk: string) => lines.push(JSON.parse(chunk)) }
    const app = Fastify({ logger: { level, stream } }) as unknown as FastifyInstance
    apps.push(app)
    await app.register(connguard, { sweepInterval: SWEEP, ...options })
    app.get('/', async () => 'ok')
    await app.ready()
    const port = await listen(app.server)
    const closeLines = () => lines.filter((l) => typeof l.connId === 'number')
    return { app, port, lines, closeLines }
  }

  it('closeLog: true writes through app.log: cuts at info (30), peer closes at debug (20)', async () => {
    const { port, closeLines } = await startFastify('debug', {
      closeLog: true,
      keepAliveTimeout: KEEP_ALIVE,
    })
    const cut = await oneRequest(port)
    const quit = await oneRequest(port)
    quit.conn.destroy()
    const info = await cut.conn.closed
    await waitUntil(() => closeLines().length >= 2, { what: 'two close log lines' })

    const cutLine = closeLines().find((l) => l.remotePort === cut.clientPort)
    const quitLine = closeLines().find((l) => l.remotePort === quit.clientPort)
    expect(cutLine).toMatchObject({ level: 30, reason: 'keep_alive_timeout', requests: 1 })
    expect(quitLine).toMatchObject({ level: 20, reason: 'client_closed', requests: 1 })
    expect(String(cutLine?.msg)).toMatch(/^connection \d+ closed: keep_alive_timeout in idle /)
    // The response's end is settled by the next sweep: the idle deadline runs from there.
    expectCutWithin(info.at - cut.respondedAt, KEEP_ALIVE, 2 * SWEEP, 'client side')
    expectCutWithin(cutLine?.idleMs as number, KEEP_ALIVE, SWEEP, 'Ti')
    expect(cutLine?.durationMs).toBeGreaterThanOrEqual(cutLine?.idleMs as number)
    timings.push({
      scenario: 'fastify app.log: keep_alive_timeout',
      deadlineMs: KEEP_ALIVE,
      clientMs: info.at - cut.respondedAt,
      serverMs: cutLine?.idleMs as number,
      reason: String(cutLine?.reason),
    })
  })

  it('is off by default, takes { levels }, and logs the closes of app.close()', async () => {
    const off = await startFastify('debug', { keepAliveTimeout: 100 })
    const a = await oneRequest(off.port)
    await a.conn.closed
    await sleep(100)
    expect(off.closeLines()).toHaveLength(0)

    const on = await startFastify('info', {
      closeLog: { levels: { client_closed: 'info' } },
      keepAliveTimeout: FAR,
    })
    const quit = await oneRequest(on.port)
    quit.conn.destroy()
    await waitUntil(() => on.closeLines().length >= 1, { what: 'a close log line' })
    expect(on.closeLines()[0]).toMatchObject({ level: 30, reason: 'client_closed' })

    // Shutdown: the drain's closes are logged before the log stops.
    const idle = await oneRequest(on.port)
    await on.app.close()
    await idle.conn.closed
    const last = on.closeLines().find((l) => l.remotePort === idle.clientPort)
    expect(last).toMatchObject({ level: 30, reason: 'app_shutdown', stateAtClose: 'idle' })
  })

  it.each([
    [{ closeLog: 'yes' }, 'CONNGUARD_ERR_INVALID_OPTION'],
    [{ closeLog: { levels: { keepalive: 'info' } } }, 'CONNGUARD_ERR_UNKNOWN_OPTION'],
    [{ closeLog: { levels: { error: 'loud' } } }, 'CONNGUARD_ERR_INVALID_OPTION'],
    [{ closeLog: { lvl: 'info' } }, 'CONNGUARD_ERR_UNKNOWN_OPTION'],
  ])('rejects %j at register with %s', async (options, code) => {
    const app = Fastify()
    await expect(app.register(connguard, options as never).ready()).rejects.toMatchObject({
      code,
    })
    await app.close()
  })
})
