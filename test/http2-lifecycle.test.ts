/**
 * HTTP/2 session lifecycle over real sockets on 127.0.0.1, h2c and h2 (TLS, fixture
 * certificate), with `node:http2` clients (HTTP/1.1 fallback: http2-fallback.test.ts). The
 * session is the connection, its streams are its requests:
 *
 * - states: idle → active while ≥ 1 stream is open (3 at once: peakConcurrentStreams 3,
 *   requests 3) → idle;
 * - rotation: maxRequestsPerConnection (the Nth stream draws a GOAWAY, the stream in flight
 *   completes, `max_requests_per_connection`) and maxConnectionAge (idle: GOAWAY and close;
 *   with a stream in flight: GOAWAY, the stream completes, then close; `max_connection_age`);
 * - drain(): the idle session closes at once, the one with a stream in flight finishes it
 *   (`app_shutdown` both), a hanging stream is forced at the timeout (`app_shutdown_timeout`);
 * - close classification: a peer that hangs up without GOAWAY is `client_closed`;
 * - hygiene: tracker.close() leaves no listener of ours on the server or on a live session.
 *
 * Sweep every 50 ms; timed closes must land in [deadline − 20, deadline + sweep + 400] ms.
 * Sequential: they measure time. CONNGUARD_TIMINGS=1 prints the measured times.
 */
import http2, { type Http2Session, type ServerHttp2Session } from 'node:http2'
import { performance } from 'node:perf_hooks'
import type { ConnectionRecord, ConnectionState } from '@connguard/core'
import { ConnectionTracker } from '@connguard/core'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { printTimings, type TimingRow } from './helpers/guard-timing.js'
import {
  connectH2,
  destroyH2Clients,
  type H2Server,
  h2get,
  handler,
  recordOf,
  startH2,
  stopH2Servers,
} from './helpers/http2.js'
import { expectConsistentRecord, expectCutWithin, sleep, waitUntil } from './helpers/records.js'
import { openSocket } from './helpers/socket.js'
import { tlsOptions } from './helpers/tls.js'

const SWEEP = 50
/** "At once": a close the tracker does synchronously, seen within this. */
const AT_ONCE = 200
/** Deadlines a scenario must not reach. */
const FAR = 30_000
/** Every scenario's base: only the deadline under test is short. */
const BASE = { sweepInterval: SWEEP, headersTimeout: FAR, keepAliveTimeout: FAR }

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

afterEach(async () => {
  destroyH2Clients()
  await stopH2Servers()
})

/** The states `rec` went through since it was accepted, in order. */
function path(h2: H2Server, rec: ConnectionRecord): ConnectionState[] {
  return h2.closes.transitions(rec).map((t) => t.to)
}

const MODES = [
  { mode: 'h2c', secure: false },
  { mode: 'h2 (TLS)', secure: true },
] as const

describe.each(MODES)('HTTP/2 sessions, $mode', ({ mode, secure }) => {
  it('goes idle → active (3 concurrent streams) → idle, and records the peak', async () => {
    const h2 = await startH2(BASE, { secure })
    const client = await connectH2(h2.origin)
    const rec = recordOf(h2, client.localPort)
    await waitUntil(() => rec.state === 'idle', { timeoutMs: 2_000, what: 'session idle' })
    expect(rec.httpVersion).toBe('2.0')

    const responses = Promise.all([1, 2, 3].map(() => h2get(client, '/slow?ms=300')))
    await waitUntil(() => rec.peakConcurrentStreams === 3, { what: '3 streams open' })
    expect(rec.state).toBe('active')
    expect(h2.tracker.snapshot()).toMatchObject({ total: 1, active: 1, idle: 0 })
    for (const res of await responses) expect(res.status).toBe(200)
    await waitUntil(() => rec.state === 'idle', { what: 'idle after the streams' })
    expect(rec.requests).toBe(3)
    expect(rec.peakConcurrentStreams).toBe(3)
    expect(rec.timeToFirstRequest).not.toBeNull()
    // One active period for three overlapping streams.
    const states = path(h2, rec)
    expect(states.slice(-2)).toEqual(['active', 'idle'])
    expect(states.filter((s) => s === 'active')).toHaveLength(1)

    await h2get(client, '/')
    expect(rec.requests).toBe(4)
    expect(rec.peakConcurrentStreams).toBe(3)
    client.session.close()
    const closed = await h2.closes.next(undefined, 5_000)
    expect(closed).toBe(rec)
    expect(closed.closeReason).toBe('client_closed')
    expect(closed.stateAtClose).toBe('idle')
    expect(closed.stateDurations.active).toBeGreaterThanOrEqual(250)
    if (secure) {
      expect(closed.tls?.alpnProtocol).toBe('h2')
      expect(closed.handshakeDuration).not.toBeNull()
    }
    expectConsistentRecord(closed)
  })

  it('rotates at maxRequestsPerConnection: GOAWAY on the 2nd stream, which completes', async () => {
    const h2 = await startH2({ ...BASE, maxRequestsPerConnection: 2 }, { secure })
    const client = await connectH2(h2.origin)
    expect((await h2get(client, '/')).status).toBe(200)
    expect(client.goawayAt()).toBeNaN()
    const second = await h2get(client, '/slow?ms=300')
    expect(second.status).toBe(200)
    expect(second.body).toBe('slow')
    // The GOAWAY came while the 2nd stream was in flight.
    expect(client.goawayAt()).toBeLessThan(second.endedAt)
    expect(client.goawayCode()).toBe(0)
    const closed = await h2.closes.next(undefined, 5_000)
    await client.closed
    expect(closed.closeReason).toBe('max_requests_per_connection')
    expect(closed.requests).toBe(2)
    expect(closed.errorCode).toBeNull()
    expectConsistentRecord(closed)
    // A new session is served as usual.
    const next = await connectH2(h2.origin)
    expect((await h2get(next, '/')).status).toBe(200)
  })

  it('closes an idle session at maxConnectionAge with GOAWAY: max_connection_age', async () => {
    const AGE = 500
    const h2 = await startH2({ ...BASE, maxConnectionAge: AGE }, { secure })
    const client = await connectH2(h2.origin)
    expect((await h2get(client, '/')).status).toBe(200)
    const closed = await h2.closes.next(undefined, 5_000)
    const clientClosedAt = await client.closed
    expect(closed.closeReason).toBe('max_connection_age')
    expect(closed.stateAtClose).toBe('idle')
    expect(client.goawayAt()).toBeLessThanOrEqual(clientClosedAt)
    expectCutWithin(closed.duration as number, AGE, SWEEP, 'server (from accept)')
    expectConsistentRecord(closed)
    timings.push({
      suite: mode,
      scenario: 'idle session at maxConnectionAge',
      deadlineMs: AGE,
      clientMs: clientClosedAt - client.connectedAt,
      serverMs: closed.duration,
      reason: closed.closeReason,
    })
  })

  it('lets the stream in flight finish at maxConnectionAge, then closes', async () => {
    const AGE = 300
    const h2 = await startH2({ ...BASE, maxConnectionAge: AGE }, { secure })
    const client = await connectH2(h2.origin)
    const res = await h2get(client, '/slow?ms=800')
    expect(res.status).toBe(200)
    const goawayMs = client.goawayAt() - client.connectedAt
    expect(goawayMs, 'GOAWAY before the response').toBeLessThan(res.endedAt - client.connectedAt)
    expectCutWithin(goawayMs, AGE, SWEEP, 'GOAWAY (client, from connect)')
    const closed = await h2.closes.next(undefined, 5_000)
    expect(closed.closeReason).toBe('max_connection_age')
    expect(closed.requests).toBe(1)
    expect(closed.duration as number).toBeGreaterThanOrEqual(800)
    expectConsistentRecord(closed)
  })
})

describe('HTTP/2 close classification', () => {
  /** The client connection preface and an empty SETTINGS frame (RFC 9113 §3.4). */
  const PREFACE = Buffer.concat([
    Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 'latin1'),
    Buffer.from([0, 0, 0, 0x4, 0, 0, 0, 0, 0]),
  ])

  it.each(MODES)(
    '$mode: a client that hangs up (FIN) without GOAWAY is client_closed',
    async ({ secure }) => {
      const h2 = await startH2(BASE, { secure })
      const conn = await openSocket(h2.port, {
        tls: secure,
        tlsOptions: { ALPNProtocols: ['h2'] },
        timeoutMs: 5_000,
      })
      try {
        conn.send(PREFACE)
        // The server's SETTINGS: its session is up.
        await conn.waitFor((buf) => (buf.length >= 9 ? true : undefined))
        const rec = [...h2.tracker.connections()][0] as ConnectionRecord
        await waitUntil(() => rec.state === 'idle', { what: 'session idle' })
        expect(rec.httpVersion).toBe('2.0')
        // FIN (after close_notify under TLS), no GOAWAY, no reset.
        conn.socket.end()
        const closed = await h2.closes.next(undefined, 5_000)
        expect(closed).toBe(rec)
        expect(closed.errorCode).toBeNull()
        expect(closed.closeReason).toBe('client_closed')
      } finally {
        conn.destroy()
      }
    },
  )
})

describe('HTTP/2 drain', () => {
  it.each(MODES)(
    '$mode: GOAWAY at once; idle closes after the grace (no PING ACK from Node 20), a stream in flight finishes, then closes',
    async ({ secure }) => {
      const h2 = await startH2(BASE, { secure })
      const busy = await connectH2(h2.origin)
      const idle = await connectH2(h2.origin)
      expect((await h2get(idle, '/')).status).toBe(200)
      const busyRec = recordOf(h2, busy.localPort)
      const idleRec = recordOf(h2, idle.localPort)
      await waitUntil(() => idleRec.state === 'idle')
      const inFlight = h2get(busy, '/slow?ms=300')
      await waitUntil(() => busyRec.state === 'active', { what: 'stream open on the server' })

      const started = performance.now()
      const GRACE = 300
      const drained = h2.tracker.drain({ timeout: 1_500, idleGrace: GRACE })
      const idleClosedAt = await idle.closed
      expect(idle.goawayAt() - started, 'GOAWAY at once').toBeLessThan(AT_ONCE)
      expect(idleClosedAt - started, 'idle session closed after the grace').toBeLessThan(
        GRACE + AT_ONCE + 400,
      )
      const res = await inFlight
      expect(res.status).toBe(200)
      expect(res.body).toBe('slow')
      expect(busy.goawayAt()).toBeLessThan(res.endedAt)
      const result = await drained
      const drainMs = performance.now() - started
      expect(result).toEqual({ closedIdle: 1, finished: 1, forced: 0 })
      // The stream's 300 ms, then the grace.
      expect(drainMs).toBeLessThan(300 + GRACE + 800)
      await busy.closed
      expect(idleRec.closeReason).toBe('app_shutdown')
      expect(idleRec.stateAtClose).toBe('idle')
      expect(busyRec.closeReason).toBe('app_shutdown')
      expect(busyRec.requests).toBe(1)
      expect(h2.tracker.snapshot().closedByReason).toEqual({ app_shutdown: 2 })
      for (const rec of h2.closes.records) expectConsistentRecord(rec)
      timings.push({
        suite: secure ? 'h2 (TLS)' : 'h2c',
        scenario: 'drain: idle + stream answering after 300 ms',
        deadlineMs: 1_500,
        clientMs: drainMs,
        serverMs: null,
        reason: 'app_shutdown',
      })
    },
  )

  it.each(MODES)(
    '$mode: a hanging stream is forced at the timeout: app_shutdown_timeout',
    async ({ secure }) => {
      const TIMEOUT = 500
      const h2 = await startH2(BASE, { secure })
      const client = await connectH2(h2.origin)
      const rec = recordOf(h2, client.localPort)
      const hanging = h2get(client, '/hang').catch((err: Error) => err)
      await waitUntil(() => rec.state === 'active', { what: 'stream open on the server' })
      const started = performance.now()
      const result = await h2.tracker.drain({ timeout: TIMEOUT })
      const drainMs = performance.now() - started
      const clientClosedAt = await client.closed
      expect(result).toEqual({ closedIdle: 0, finished: 0, forced: 1 })
      expect(rec.stateAtClose).toBe('active')
      expect(client.goawayAt(), 'GOAWAY at the start of the drain').toBeLessThan(started + AT_ONCE)
      expectCutWithin(drainMs, TIMEOUT, 0, 'drain')
      expectCutWithin(clientClosedAt - started, TIMEOUT, 0, 'client')
      expect(await hanging).toBeInstanceOf(Error)
      expectConsistentRecord(rec)
      timings.push({
        suite: secure ? 'h2 (TLS)' : 'h2c',
        scenario: 'drain: hanging stream',
        deadlineMs: TIMEOUT,
        clientMs: clientClosedAt - started,
        serverMs: null,
        reason: rec.closeReason,
      })
      expect(h2.tracker.snapshot().closedByReason).toEqual({ app_shutdown_timeout: 1 })
      expect(rec.closeReason).toBe('app_shutdown_timeout')
    },
  )
})

describe('hygiene', () => {
  const SERVER_EVENTS = [
    'connection',
    'session',
    'secureConnection',
    'tlsClientError',
    'newListener',
    'removeListener',
    'request',
    'stream',
    'upgrade',
    'clientError',
  ]
  const SESSION_EVENTS = ['stream', 'error', 'goaway', 'close', 'ping']

  it.each([
    { name: 'h2c', secure: false, allowHTTP1: false },
    { name: 'h2 (TLS)', secure: true, allowHTTP1: false },
    { name: 'h2 (TLS) + allowHTTP1', secure: true, allowHTTP1: true },
  ])(
    '$name: tracker.close() removes every listener of ours, live sessions stay up',
    async ({ secure, allowHTTP1 }) => {
      const server = secure
        ? http2.createSecureServer({ ...tlsOptions, allowHTTP1 }, handler)
        : http2.createServer(handler)
      const count = (emitter: NodeJS.EventEmitter, events: string[]) =>
        Object.fromEntries(events.map((e) => [e, emitter.listenerCount(e)]))
      const before = count(server, SERVER_EVENTS)
      // Registered before the tracker's: sees each session before it is bound.
      const sessionCounts = new Map<ServerHttp2Session, Record<string, number>>()
      const onSession = (session: ServerHttp2Session) =>
        sessionCounts.set(session, count(session, SESSION_EVENTS))
      server.on('session', onSession)
      const tracker = new ConnectionTracker({ ...BASE, pingInterval: 100 }).attach(server)
      expect(server.listenerCount('session')).toBe(2)
      const port = await new Promise<number>((resolve) => {
        server.listen(0, '127.0.0.1', () => resolve((server.address() as { port: number }).port))
      })
      let client: Awaited<ReturnType<typeof connectH2>> | null = null
      try {
        client = await connectH2(`${secure ? 'https' : 'http'}://127.0.0.1:${port}`)
        expect((await h2get(client, '/')).status).toBe(200)
        expect(tracker.snapshot().total).toBe(1)
        const [session, initial] = [...sessionCounts][0] as [Http2Session, Record<string, number>]
        expect(count(session, SESSION_EVENTS)).not.toEqual(initial)

        tracker.close()
        server.off('session', onSession)
        expect(count(server, SERVER_EVENTS)).toEqual(before)
        expect(count(session, SESSION_EVENTS)).toEqual(initial)
        // The session is left open and keeps working, with no PING of ours after the close.
        let pings = 0
        client.session.on('ping', () => pings++)
        expect((await h2get(client, '/')).status).toBe(200)
        await sleep(300)
        expect(pings).toBe(0)
        expect(client.isClosed()).toBe(false)
      } finally {
        client?.destroy()
        tracker.close()
        for (const session of sessionCounts.keys()) session.destroy()
        await new Promise<void>((resolve) => server.close(() => resolve()))
      }
    },
  )
})
