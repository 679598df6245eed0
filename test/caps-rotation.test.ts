/**
 * Connection caps (maxConnections, maxConnectionsPerIp, maxHandshakes) and rotation
 * (maxRequestsPerConnection, maxConnectionAge) over real sockets on loopback, for both
 * adapters: @connguard/fastify and @connguard/express on Express 5, each over HTTP and HTTPS
 * where the transport matters (the caps; maxHandshakes is HTTPS only).
 *
 * A connection over a cap must be closed at accept: the client sees its connection end with
 * no byte of HTTP, the server's 'request' event never fires for it (so no handler runs), its
 * record carries the cap's reason, `snapshot().closedByReason` counts it, and once a live
 * connection leaves, the next one is admitted and served.
 *
 * Per-IP tests bind the attacking clients to 127.0.0.2 (`localAddress`) and the legitimate
 * one to 127.0.0.1; both reach the server listening on 127.0.0.1 over Linux's loopback
 * (checked by the first test, which fails with a clear message where 127.0.0.2 is missing).
 *
 * Sweep every 50 ms; a timed close must land in [deadline − 20 ms, deadline + 50 ms + 400 ms].
 * Tests run one after another: they measure time. CONNGUARD_TIMINGS=1 prints a table.
 */
import http from 'node:http'
import https from 'node:https'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as delay } from 'node:timers/promises'
import {
  type CloseReason,
  type ConnectionRecord,
  ConnectionTracker,
  type ConnectionTrackerOptions,
} from '@connguard/core'
import { connguard as expressGuard } from '@connguard/express'
import { connguard as fastifyGuard } from '@connguard/fastify'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { captureClientHello, getRequest } from './helpers/clients.js'
import { type Client, destroyClients, dial, open } from './helpers/dial.js'
import { printTimings, type TimingRow } from './helpers/guard-timing.js'
import { type ParsedResponse, parseResponses } from './helpers/http-response.js'
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
/** Deadlines that must never fire in these scenarios. */
const FAR = 20_000
const ATTACKER = '127.0.0.2'
const LEGIT = '127.0.0.1'

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

// ---- both adapters behind one shape --------------------------------------------------------

type AdapterName = 'Fastify' | 'Express 5'

interface Started {
  port: number
  tracker: ConnectionTracker
  closes: CloseWatcher
  /** 'request' events on the server: how many requests reached the application. */
  requests(): number
  /** Records the tracker reported on 'open'. */
  opened: ConnectionRecord[]
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
 * Routes: `GET /` → 'ok'; `GET /slow?ms=N` → 'slow' after N ms; an 'upgrade' listener
 * answering 101. Guarded with `{ sweepInterval: SWEEP, ...options }`.
 */
async function start(
  adapter: AdapterName,
  secure: boolean,
  options: ConnectionTrackerOptions,
): Promise<Started> {
  const guardOptions = { sweepInterval: SWEEP, ...options }
  let server: http.Server
  let tracker: ConnectionTracker
  if (adapter === 'Fastify') {
    const app = (secure ? Fastify({ https: tlsOptions }) : Fastify()) as unknown as FastifyInstance
    await app.register(fastifyGuard, guardOptions)
    app.get('/', async () => 'ok')
    app.get('/slow', async (request) => {
      await delay(Number((request.query as { ms?: string }).ms ?? 0))
      return 'slow'
    })
    await app.ready()
    server = app.server
    tracker = app.connguard
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
    server = secure ? https.createServer(tlsOptions, app) : http.createServer(app)
    guard.attach(server)
    tracker = guard.tracker
    cleanups.push(() => tracker.close())
  }
  server.on('upgrade', onUpgrade)
  let requests = 0
  server.on('request', () => {
    requests++
  })
  const opened: ConnectionRecord[] = []
  tracker.on('open', (rec) => opened.push(rec))
  const closes = watchCloses(tracker)
  cleanups.push(() => {
    closes.stop()
    for (const rec of closes.records) expectConsistentRecord(rec)
  })
  const port = await listen(server)
  cleanups.push(() => closeServer(server))
  return { port, tracker, closes, requests: () => requests, opened }
}

/** Open a connection, get one 200 on it, and leave it idle (keep-alive). */
async function idleClient(
  port: number,
  secure: boolean,
  localAddress: string = LEGIT,
): Promise<Client> {
  const c = open(port, { secure, localAddress })
  const res = await c.get('/')
  expect(res.status).toBe(200)
  expect(res.body.toString()).toBe('ok')
  return c
}

/**
 * A connection over a cap: ends with no byte of HTTP (for TLS: before the handshake
 * completes). A GET is sent as soon as TCP connects, so a request the server wrongly served
 * would show up here and in `requests()`.
 */
async function expectRefused(
  s: Started,
  secure: boolean,
  reason: CloseReason,
  localAddress: string = LEGIT,
): Promise<{ clientMs: number; record: ConnectionRecord }> {
  const before = s.requests()
  const c = open(s.port, { secure, localAddress })
  if (!secure) c.socket.once('connect', () => c.send(getRequest('/')))
  const ended = await c.ended
  expect(await c.ready, 'TLS handshake must not complete on a refused connection').toBe(!secure)
  expect(c.received().length, `refused connection received ${c.received().toString()}`).toBe(0)
  expect(ended.how).not.toBe('destroyed')
  const record = await s.closes.next((r) => r.closeReason === reason, 3_000)
  expect(record.remoteAddress).toBe(localAddress)
  expect(record.requests).toBe(0)
  expect(record.stateAtClose).toBe('new')
  expect(record.bytesWritten).toBe(0)
  expect(s.opened).toContain(record)
  // The application never saw it (and give a wrongly served request time to show).
  await sleep(50)
  expect(s.requests()).toBe(before)
  return { clientMs: ended.at - c.openedAt, record }
}

const ADAPTERS: AdapterName[] = ['Fastify', 'Express 5']
const TRANSPORTS = [
  { transport: 'http', secure: false },
  { transport: 'https', secure: true },
]

it('127.0.0.2 is usable on this machine’s loopback (the per-IP tests bind attackers to it)', async () => {
  const server = net.createServer((socket) => socket.end())
  const port = await listen(server)
  try {
    const c = dial(port, { localAddress: ATTACKER })
    expect(await c.ready, '127.0.0.2 is not a loopback address here').toBe(true)
    expect(c.socket.localAddress).toBe(ATTACKER)
    await c.ended
  } finally {
    await closeServer(server)
  }
})

describe.each(ADAPTERS)('%s', (adapter) => {
  describe.each(TRANSPORTS)('caps over $transport', ({ transport, secure }) => {
    const suite = `${adapter} ${transport}`

    it('maxConnections: 3 idle keep-alive connections, the 4th is shed at accept; admits again below the cap', async () => {
      const N = 3
      const s = await start(adapter, secure, {
        maxConnections: N,
        // The cap alone. With pressure (the default) a server at its limit also shrinks its
        // deadlines toward 1 s floors, which this test's timing must not depend on; idle
        // keep-alive connections are never displaced either way (test/pressure.test.ts).
        pressure: false,
        keepAliveTimeout: FAR,
        headersTimeout: FAR,
        handshakeTimeout: FAR,
      })
      const idle: Client[] = []
      for (let i = 0; i < N; i++) idle.push(await idleClient(s.port, secure))
      expect(s.tracker.snapshot()).toMatchObject({ total: N, idle: N })
      expect(s.requests()).toBe(N)

      const { clientMs, record } = await expectRefused(
        s,
        secure,
        'max_concurrent_connections_exceeded',
      )
      expect(record.duration).toBeLessThan(100)
      expect(s.tracker.snapshot()).toMatchObject({
        total: N,
        idle: N,
        closedByReason: { max_concurrent_connections_exceeded: 1 },
      })
      // The admitted ones are untouched and still served.
      const again = await (idle[0] as Client).get('/')
      expect(again.status).toBe(200)
      expect(idle.every((c) => c.isOpen())).toBe(true)

      // One leaves: the next one is admitted and served.
      const leaving = idle.pop() as Client
      const leavingPort = leaving.localPort
      leaving.destroy()
      const left = await s.closes.forClientPort(leavingPort)
      expect(['client_closed', 'connection_reset']).toContain(left.closeReason)
      const admitted = await idleClient(s.port, secure)
      expect(admitted.isOpen()).toBe(true)
      expect(s.tracker.snapshot()).toMatchObject({
        total: N,
        closedByReason: { max_concurrent_connections_exceeded: 1 },
      })
      timings.push({
        suite,
        scenario: `maxConnections ${N}: #${N + 1} shed`,
        deadlineMs: 0,
        clientMs,
        serverMs: record.duration,
        reason: record.closeReason,
      })
    })

    it('maxConnectionsPerIp: 2 from 127.0.0.2, the 3rd from it is shed while 127.0.0.1 is served; admits again below the cap', async () => {
      const CAP = 2
      const s = await start(adapter, secure, {
        maxConnectionsPerIp: CAP,
        keepAliveTimeout: FAR,
        headersTimeout: FAR,
        handshakeTimeout: FAR,
      })
      const attackers: Client[] = []
      for (let i = 0; i < CAP; i++) attackers.push(await idleClient(s.port, secure, ATTACKER))
      const { clientMs, record } = await expectRefused(
        s,
        secure,
        'max_connections_per_ip_exceeded',
        ATTACKER,
      )
      expect(record.duration).toBeLessThan(100)

      // Another address is not affected: two legit connections from 127.0.0.1 are served.
      const legit = await idleClient(s.port, secure, LEGIT)
      const legit2 = await idleClient(s.port, secure, LEGIT)
      expect(legit.isOpen() && legit2.isOpen()).toBe(true)
      const live = [...s.tracker.connections()]
      expect(live.filter((r) => r.remoteAddress === ATTACKER)).toHaveLength(CAP)
      expect(live.filter((r) => r.remoteAddress === LEGIT)).toHaveLength(2)
      expect(s.tracker.snapshot()).toMatchObject({
        total: CAP + 2,
        closedByReason: { max_connections_per_ip_exceeded: 1 },
      })

      // One attacker connection leaves: that address is admitted again, once.
      const leaving = attackers.pop() as Client
      const leavingPort = leaving.localPort
      leaving.destroy()
      // By address too: a legitimate client may have had the same port.
      await s.closes.forClientPort(leavingPort, undefined, ATTACKER)
      await idleClient(s.port, secure, ATTACKER)
      await expectRefused(s, secure, 'max_connections_per_ip_exceeded', ATTACKER)
      expect(s.tracker.snapshot().closedByReason.max_connections_per_ip_exceeded).toBe(2)
      timings.push({
        suite,
        scenario: `maxConnectionsPerIp ${CAP}: #${CAP + 1} from ${ATTACKER} shed`,
        deadlineMs: 0,
        clientMs,
        serverMs: record.duration,
        reason: record.closeReason,
      })
    })
  })

  it('maxHandshakes (https): 2 stalled TLS handshakes, the next TCP connection is shed while an established TLS connection keeps working', async () => {
    const CAP = 2
    const s = await start(adapter, true, {
      maxHandshakes: CAP,
      handshakeTimeout: FAR,
      headersTimeout: FAR,
      keepAliveTimeout: FAR,
    })
    const established = await idleClient(s.port, true)
    const hello = await captureClientHello()
    const stalled: Client[] = []
    for (let i = 0; i < CAP; i++) {
      const c = open(s.port)
      expect(await c.ready).toBe(true)
      // Half a ClientHello: the server's TLS stack waits for the rest for ever.
      c.send(hello.subarray(0, Math.floor(hello.length / 2)))
      stalled.push(c)
    }
    await waitUntil(
      () => {
        const snap = s.tracker.snapshot()
        return snap.handshaking === CAP && snap.idle === 1
      },
      { what: `${CAP} connections in handshaking, 1 idle` },
    )

    // A raw TCP connection: counted as `new` at accept, over the cap.
    const before = s.requests()
    const raw = open(s.port)
    const ended = await raw.ended
    expect(raw.received().length).toBe(0)
    const record = await s.closes.next(
      (r) => r.closeReason === 'max_concurrent_handshakes_exceeded',
      3_000,
    )
    expect(record.stateAtClose).toBe('new')
    expect(record.duration).toBeLessThan(100)
    expect(s.opened).toContain(record)
    // A real TLS client over the cap is refused as well.
    await expectRefused(s, true, 'max_concurrent_handshakes_exceeded')
    expect(s.tracker.snapshot().closedByReason.max_concurrent_handshakes_exceeded).toBe(2)

    // The established connection is not a handshake: it keeps being served.
    const res = await established.get('/')
    expect(res.status).toBe(200)
    expect(s.requests()).toBe(before + 1)
    expect(stalled.every((c) => c.isOpen())).toBe(true)

    // One stalled handshake goes away: a new TLS connection is admitted and served.
    const leaving = stalled.pop() as Client
    const leavingPort = leaving.localPort
    leaving.destroy()
    const left = await s.closes.forClientPort(leavingPort)
    expect(left.stateAtClose).toBe('handshaking')
    const admitted = await idleClient(s.port, true)
    expect(admitted.isOpen()).toBe(true)
    expect(s.tracker.snapshot()).toMatchObject({ handshaking: CAP - 1, idle: 2 })
    timings.push({
      suite: `${adapter} https`,
      scenario: `maxHandshakes ${CAP}: raw TCP #${CAP + 1} shed`,
      deadlineMs: 0,
      clientMs: ended.at - raw.openedAt,
      serverMs: record.duration,
      reason: record.closeReason,
    })
  })

  describe.each(TRANSPORTS)('rotation over $transport', ({ transport, secure }) => {
    it('maxRequestsPerConnection 3: the 3rd response says Connection: close, then the connection closes', async () => {
      const s = await start(adapter, secure, {
        maxRequestsPerConnection: 3,
        keepAliveTimeout: FAR,
        headersTimeout: FAR,
      })
      const c = open(s.port, { secure })
      const responses: ParsedResponse[] = []
      for (let i = 0; i < 3; i++) responses.push(await c.get('/'))
      const third = performance.now()
      expect(responses.map((r) => r.status)).toEqual([200, 200, 200])
      expect(responses[0]?.headers.connection).toBe('keep-alive')
      expect(responses[1]?.headers.connection).toBe('keep-alive')
      expect(responses[2]?.headers.connection).toBe('close')
      const ended = await c.ended
      expect(ended.how).not.toBe('destroyed')
      const closeMs = ended.at - third
      expect(closeMs, 'closed promptly after the last response').toBeLessThan(300)
      const record = await s.closes.forClientPort(c.localPort)
      expect(record.closeReason).toBe('max_requests_per_connection')
      expect(record.requests).toBe(3)
      expect(record.stateAtClose).toBe('idle')
      expect(s.requests()).toBe(3)
      expect(s.tracker.snapshot().closedByReason).toEqual({ max_requests_per_connection: 1 })
      timings.push({
        suite: `${adapter} ${transport}`,
        scenario: 'maxRequestsPerConnection 3 (close after 3rd response)',
        deadlineMs: null,
        clientMs: closeMs,
        serverMs: record.duration,
        reason: record.closeReason,
      })
    })
  })

  it('maxRequestsPerConnection 3 with 5 pipelined requests: 3 responses, the 3rd says close; the record says max_requests_per_connection', async () => {
    // KNOWN BUG (fails at the time of writing): the 3rd response is not the last request in
    // flight, so the tracker's `_responseEnd` takes its "pipelined" early return and never
    // sets the rotation as the pending close reason; Node then closes the connection (the
    // response had `Connection: close`) and the record is classified `client_closed`.
    const s = await start(adapter, false, {
      maxRequestsPerConnection: 3,
      keepAliveTimeout: FAR,
      headersTimeout: FAR,
    })
    const c = open(s.port)
    expect(await c.ready).toBe(true)
    c.send(getRequest('/').repeat(5))
    const ended = await c.ended
    expect(ended.how).not.toBe('destroyed')
    const responses = parseResponses(c.received(), { eof: true })
    expect(responses.map((r) => [r.status, r.headers.connection])).toEqual([
      [200, 'keep-alive'],
      [200, 'keep-alive'],
      [200, 'close'],
    ])
    const record = await s.closes.forClientPort(c.localPort)
    expect({ closeReason: record.closeReason, stateAtClose: record.stateAtClose }).toEqual({
      closeReason: 'max_requests_per_connection',
      stateAtClose: expect.any(String),
    })
  })

  describe('rotation by age over http (maxConnectionAge 600 ms)', () => {
    const AGE = 600
    const ageOptions = { maxConnectionAge: AGE, keepAliveTimeout: FAR, headersTimeout: FAR }

    it('an idle keep-alive connection is closed at its age', async () => {
      const s = await start(adapter, false, ageOptions)
      const c = await idleClient(s.port, false)
      const ended = await c.ended
      expect(ended.how).not.toBe('destroyed')
      expect(c.received().length).toBeGreaterThan(0)
      const heldMs = ended.at - c.openedAt
      expect(heldMs).toBeGreaterThanOrEqual(AGE - EARLY)
      expect(heldMs).toBeLessThanOrEqual(AGE + SWEEP + LATE)
      const record = await s.closes.forClientPort(c.localPort)
      expect(record.closeReason).toBe('max_connection_age')
      expect(record.stateAtClose).toBe('idle')
      expect(record.requests).toBe(1)
      expect(record.duration).toBeGreaterThanOrEqual(AGE)
      expect(record.duration).toBeLessThanOrEqual(AGE + SWEEP + LATE)
      expect(s.tracker.snapshot().closedByReason).toEqual({ max_connection_age: 1 })
      timings.push({
        suite: `${adapter} http`,
        scenario: 'maxConnectionAge: idle',
        deadlineMs: AGE,
        clientMs: heldMs,
        serverMs: record.duration,
        reason: record.closeReason,
      })
    })

    it('a request in progress at its age completes with Connection: close, then the connection closes', async () => {
      const s = await start(adapter, false, ageOptions)
      const c = open(s.port)
      const HANDLER = 1_000
      const res = await c.get(`/slow?ms=${HANDLER}`)
      const answeredMs = performance.now() - c.openedAt
      expect(res.status).toBe(200)
      expect(res.body.toString()).toBe('slow')
      expect(res.headers.connection).toBe('close')
      // Answered when the handler did, not cut at the age.
      expect(answeredMs).toBeGreaterThanOrEqual(HANDLER - EARLY)
      const ended = await c.ended
      expect(ended.how).not.toBe('destroyed')
      const heldMs = ended.at - c.openedAt
      expect(heldMs - answeredMs, 'closed right after the response').toBeLessThan(300)
      const record = await s.closes.forClientPort(c.localPort)
      expect(record.closeReason).toBe('max_connection_age')
      expect(record.requests).toBe(1)
      expect(record.stateDurations.active).toBeGreaterThanOrEqual(HANDLER - EARLY)
      timings.push({
        suite: `${adapter} http`,
        scenario: `maxConnectionAge: request in flight (handler ${HANDLER} ms)`,
        deadlineMs: AGE,
        clientMs: heldMs,
        serverMs: record.duration,
        reason: record.closeReason,
      })
    })

    it('an upgraded connection is not closed by age', async () => {
      const s = await start(adapter, false, ageOptions)
      const c = open(s.port)
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
      const outlive = AGE + SWEEP + LATE + 200
      await sleep(Math.max(0, outlive - (performance.now() - c.openedAt)))
      expect(c.isOpen()).toBe(true)
      const live = [...s.tracker.connections()].find((r) => r.remotePort === c.localPort)
      expect(live?.state).toBe('upgraded')
      expect(s.tracker.snapshot().closedByReason).toEqual({})
      const heldMs = performance.now() - c.openedAt
      c.destroy()
      const record = await s.closes.forClientPort(c.localPort)
      expect(['client_closed', 'connection_reset']).toContain(record.closeReason)
      expect(record.stateAtClose).toBe('upgraded')
      timings.push({
        suite: `${adapter} http`,
        scenario: 'maxConnectionAge: upgraded (not cut)',
        deadlineMs: AGE,
        clientMs: heldMs,
        serverMs: record.duration,
        reason: `open until the client closed: ${record.closeReason}`,
      })
    })
  })
})

describe('invalid cap and rotation values are rejected at construction', () => {
  const cases: [string, ConnectionTrackerOptions][] = [
    ['maxConnections: -1', { maxConnections: -1 }],
    ['maxConnectionsPerIp: 1.5', { maxConnectionsPerIp: 1.5 }],
    ['maxHandshakes: "10"', { maxHandshakes: '10' as unknown as number }],
    ['maxConnectionAge: 1.5', { maxConnectionAge: 1.5 }],
    ['maxConnectionAge: -1', { maxConnectionAge: -1 }],
    ['maxRequestsPerConnection: NaN', { maxRequestsPerConnection: Number.NaN }],
  ]
  it.each(cases)(
    '%s → CONNGUARD_ERR_INVALID_OPTION (core, Express, Fastify)',
    async (_n, options) => {
      expect(() => new ConnectionTracker(options)).toThrow(
        expect.objectContaining({ code: 'CONNGUARD_ERR_INVALID_OPTION' }),
      )
      expect(() => expressGuard(options)).toThrow(
        expect.objectContaining({ code: 'CONNGUARD_ERR_INVALID_OPTION' }),
      )
      const app = Fastify()
      try {
        await expect(app.register(fastifyGuard, options).ready()).rejects.toMatchObject({
          code: 'CONNGUARD_ERR_INVALID_OPTION',
        })
      } finally {
        await app.close().catch(() => {})
      }
    },
  )

  it('false and 0 switch each cap off', () => {
    const t = new ConnectionTracker({
      maxConnections: false,
      maxConnectionsPerIp: 0,
      maxHandshakes: false,
      maxConnectionAge: 0,
      maxRequestsPerConnection: false,
    })
    expect(t.options).toMatchObject({
      maxConnections: 0,
      maxConnectionsPerIp: 0,
      maxHandshakes: 0,
      maxConnectionAge: 0,
      maxRequestsPerConnection: 0,
    })
    t.close()
  })
})
