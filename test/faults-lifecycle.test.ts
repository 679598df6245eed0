/**
 * Lifecycle faults, each with one defined outcome (see docs/faults.md), over real sockets on
 * 127.0.0.1:
 * - `server.close()` (and Fastify's `app.close()`) while TLS handshakes are stalled;
 * - `tracker.close()` and `drain()` with a live connection in every state at once
 *   (new, handshaking, idle, active, upgraded), on Express 5 over HTTPS;
 * `attach` twice, two trackers, attach after `listen`: faults-attach.test.ts; a user listener
 * that throws: faults-listeners.test.ts.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import type http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import type { Server, Socket } from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as delay } from 'node:timers/promises'
import {
  type ConnectionRecord,
  ConnectionTracker,
  type ConnectionTrackerOptions,
} from '@connguard/core'
import { connguard as expressGuard } from '@connguard/express'
import { connguard as fastifyGuard } from '@connguard/fastify'
import express from 'express'
import Fastify from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import {
  type Conn,
  captureClientHello,
  getRequest,
  openSocket,
  upgradeRequest,
} from './helpers/clients.js'
import { collectSockets, listenBare, open, portOf } from './helpers/fault-apps.js'
import { listenersOf } from './helpers/hostile-run.js'
import { parseResponse } from './helpers/http-response.js'
import { expectConsistentRecord, sleep, waitUntil, watchCloses } from './helpers/records.js'
import { closeServer } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const SWEEP = 50
const LATE = 400
const FAR = 20_000

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/** A raw TCP connection to a TLS port that sends half a ClientHello and stalls. */
async function stalledHandshake(port: number): Promise<Conn> {
  const hello = await captureClientHello()
  const conn = await open(port)
  conn.send(hello.subarray(0, Math.floor(hello.length / 2)))
  return conn
}

describe('server.close() while TLS handshakes are stalled', () => {
  it('https + guard.attach: handshakes are cut at handshakeTimeout (tls_handshake_timeout), then the server closes', async () => {
    const HANDSHAKE = 500
    const app = express()
    const server = https.createServer(tlsOptions, app)
    const guard = expressGuard({ handshakeTimeout: HANDSHAKE, sweepInterval: SWEEP })
    guard.attach(server)
    app.use(guard)
    const closes = watchCloses(guard.tracker)
    const port = await listenBare(server)
    cleanups.push(() => guard.tracker.close())
    const stalled = await Promise.all([1, 2, 3].map(() => stalledHandshake(port)))
    const silent = await Promise.all([1, 2].map(() => open(port)))
    await waitUntil(() => guard.tracker.snapshot().handshaking === 3, { what: '3 handshaking' })
    const t0 = performance.now()
    // Node's closeIdleConnections() does not know sockets still in their handshake: without
    // the guard, close() would wait for Node's 120 s handshake timeout (which the guard replaces).
    await new Promise<void>((resolve) => server.close(() => resolve()))
    const closedIn = performance.now() - t0
    expect(closedIn).toBeLessThanOrEqual(HANDSHAKE + SWEEP + LATE)
    for (const conn of [...stalled, ...silent]) {
      const rec = await closes.forClientPort(portOf(conn))
      expect(rec.closeReason).toBe('tls_handshake_timeout')
      expect(rec.duration).toBeGreaterThanOrEqual(HANDSHAKE - 20)
    }
    expect(closes.records.map((r) => r.stateAtClose).sort()).toEqual([
      'handshaking',
      'handshaking',
      'handshaking',
      'new',
      'new',
    ])
  })

  it('node:http2 secure server: the same, tls_handshake_timeout', async () => {
    const HANDSHAKE = 500
    const server = http2.createSecureServer(tlsOptions, (_req, res) => res.end('ok'))
    const tracker = new ConnectionTracker({ handshakeTimeout: HANDSHAKE, sweepInterval: SWEEP })
    tracker.attach(server)
    cleanups.push(() => tracker.close())
    const closes = watchCloses(tracker)
    const port = await listenBare(server as unknown as Server)
    const stalled = await Promise.all([1, 2].map(() => stalledHandshake(port)))
    await waitUntil(() => tracker.snapshot().handshaking === 2, { what: '2 handshaking' })
    const t0 = performance.now()
    await new Promise<void>((resolve) => server.close(() => resolve()))
    expect(performance.now() - t0).toBeLessThanOrEqual(HANDSHAKE + SWEEP + LATE)
    for (const conn of stalled) {
      expect(await closes.forClientPort(portOf(conn))).toMatchObject({
        closeReason: 'tls_handshake_timeout',
        stateAtClose: 'handshaking',
      })
    }
  })

  it('Fastify app.close(): the drain closes the handshakes after its idle grace (app_shutdown)', async () => {
    const GRACE = 300
    const app = Fastify({ https: tlsOptions })
    await app.register(fastifyGuard, {
      handshakeTimeout: FAR,
      sweepInterval: SWEEP,
      drainIdleGrace: GRACE,
    })
    app.get('/', async () => 'ok')
    await app.ready()
    const closes = watchCloses(app.connguard)
    const port = await listenBare(app.server)
    const stalled = await Promise.all([1, 2, 3].map(() => stalledHandshake(port)))
    await waitUntil(() => app.connguard.snapshot().handshaking === 3, { what: '3 handshaking' })
    const t0 = performance.now()
    await app.close()
    expect(performance.now() - t0).toBeGreaterThanOrEqual(GRACE - 20)
    expect(performance.now() - t0).toBeLessThanOrEqual(GRACE + SWEEP + LATE)
    for (const conn of stalled) {
      expect(await closes.forClientPort(portOf(conn))).toMatchObject({
        closeReason: 'app_shutdown',
        stateAtClose: 'handshaking',
      })
    }
  })
})

// ---- every state at once ---------------------------------------------------------------------

const UPGRADE_101 =
  'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n'

/** Express 5 over HTTPS with one live connection in each state; `activePath` is in flight. */
async function everyState(options: ConnectionTrackerOptions, activePath: string) {
  const app = express()
  const server = https.createServer(tlsOptions, app)
  const before = listenersOf(server)
  const guard = expressGuard({ sweepInterval: SWEEP, ...options })
  guard.attach(server)
  app.use(guard)
  app.get('/', (_req, res) => {
    res.send('ok')
  })
  app.get('/hang', () => {})
  app.get('/slow', async (req, res) => {
    await delay(Number(req.query.ms))
    res.send('slow')
  })
  // Added after attach, as an application would: the guard follows it ('newListener').
  const onUpgrade = (_req: http.IncomingMessage, socket: Socket) => {
    socket.on('error', () => {})
    socket.write(UPGRADE_101)
  }
  server.on('upgrade', onUpgrade)
  const collected = collectSockets(server)
  const port = await listenBare(server)
  cleanups.push(async () => {
    guard.tracker.close()
    for (const socket of collected.sockets) socket.destroy()
    await closeServer(server)
  })
  // Those with no deadline running first, those whose deadline runs from their accept or
  // their response last: the short deadlines then only have to outlast the check below, not
  // the whole set-up (a loaded machine took more than 300 ms for it).
  const active = await open(port, { tls: true })
  active.send(getRequest(activePath))
  const activeResponse = active.waitFor((buf, eof) => parseResponse(buf, 0, { eof }))
  activeResponse.catch(() => {})
  const { conn: upgraded } = await upgradeRequest(port, { tls: true })
  const idle = await open(port, { tls: true })
  idle.send(getRequest('/'))
  await idle.waitFor((buf) => parseResponse(buf, 0))
  const fresh = await open(port)
  const handshaking = await stalledHandshake(port)
  const tracker = guard.tracker
  await waitUntil(
    () => {
      const s = tracker.snapshot()
      return (
        s.new === 1 && s.handshaking === 1 && s.idle === 1 && s.active === 1 && s.upgraded === 1
      )
    },
    { what: `one connection in each state (${JSON.stringify(tracker.snapshot())})` },
  )
  return {
    server,
    tracker,
    port,
    stopCollecting: collected.stop,
    expectedAfterClose: () => {
      const expected = new Map(before)
      expected.set('upgrade', [...(before.get('upgrade') ?? []), onUpgrade])
      return expected
    },
    clients: { fresh, handshaking, idle, active, upgraded },
    activeResponse,
  }
}

describe('a live connection in every state (Express 5, HTTPS)', () => {
  it('tracker.close(): forgets them without closing them, restores the server, emits nothing more', async () => {
    const SHORT = 300
    const s = await everyState(
      { handshakeTimeout: SHORT, headersTimeout: SHORT, keepAliveTimeout: SHORT },
      '/hang',
    )
    const closes = watchCloses(s.tracker)
    const opens: ConnectionRecord[] = []
    s.tracker.on('open', (rec) => opens.push(rec))
    const timers = () => ({
      headersTimeout: s.server.headersTimeout,
      requestTimeout: s.server.requestTimeout,
      keepAliveTimeout: s.server.keepAliveTimeout,
    })
    const guarded = timers()
    s.tracker.close()
    expect(s.tracker.snapshot()).toMatchObject({ total: 0, new: 0, idle: 0, active: 0 })
    expect([...s.tracker.connections()]).toEqual([])
    s.stopCollecting()
    expect(listenersOf(s.server)).toEqual(s.expectedAfterClose())
    expect(timers()).not.toEqual(guarded)
    expect(timers()).toEqual({
      headersTimeout: 60_000,
      requestTimeout: 300_000,
      keepAliveTimeout: 5_000,
    })
    expect(diagnosticsChannel.channel('http.server.request.start').hasSubscribers).toBe(false)

    // Past every (short) deadline of the closed tracker: nothing is cut any more.
    await sleep(SHORT + 3 * SWEEP + 200)
    for (const [state, conn] of Object.entries(s.clients))
      expect(conn.isOpen(), `${state} connection still open`).toBe(true)
    // The idle connection keeps being served by Node, untracked.
    s.clients.idle.send(getRequest('/'))
    const first = await s.clients.idle.waitFor((buf) => parseResponse(buf, 0))
    await s.clients.idle.waitFor((buf) => parseResponse(buf, first.end))
    for (const conn of Object.values(s.clients)) conn.destroy()
    await sleep(100)
    expect(closes.records).toEqual([])
    expect(opens).toEqual([])
    // A closed tracker cannot attach again.
    expect(() => s.tracker.attach(s.server)).toThrow(
      expect.objectContaining({ code: 'CONNGUARD_ERR_TRACKER_CLOSED' }),
    )
  })

  it('drain({ timeout: 1500, idleGrace: 300 }): new/handshaking/idle after the grace, active finishes, upgraded forced, a late silent one closed after its grace', async () => {
    // The late connection opens only after the first three closed (~GRACE) and gets its own
    // grace: the timeout leaves it room even when sweeps run late on a loaded machine.
    const TIMEOUT = 1_500
    const GRACE = 300
    const s = await everyState(
      { handshakeTimeout: FAR, headersTimeout: FAR, keepAliveTimeout: FAR },
      '/slow?ms=300',
    )
    const closes = watchCloses(s.tracker)
    const t0 = performance.now()
    const drained = s.tracker.drain({ timeout: TIMEOUT, idleGrace: GRACE })
    for (const state of ['fresh', 'handshaking', 'idle'] as const) {
      const conn = s.clients[state]
      const info = await conn.closed
      expect(info.at - t0, `${state} closed after the grace`).toBeGreaterThanOrEqual(GRACE - 20)
      expect(info.at - t0, `${state} closed after the grace`).toBeLessThanOrEqual(
        GRACE + SWEEP + LATE,
      )
      const rec = await closes.forClientPort(portOf(conn))
      expect(rec.closeReason).toBe('app_shutdown')
    }
    // Accepted during the drain (tracker.drain() leaves the listening socket open), silent:
    // closed once idle for the grace.
    const late = await openSocket(s.port).catch(() => null)
    await late?.closed
    const response = await s.activeResponse
    expect(response.status).toBe(200)
    expect(response.headers.connection).toBe('close')
    const result = await drained
    const drainedIn = performance.now() - t0
    expect(drainedIn).toBeGreaterThanOrEqual(TIMEOUT - 20)
    expect(drainedIn).toBeLessThanOrEqual(TIMEOUT + LATE)
    expect(result).toEqual({ closedIdle: 4, finished: 1, forced: 1 })
    // The one in flight finished its request first: it closes from idle.
    expect(await closes.forClientPort(portOf(s.clients.active))).toMatchObject({
      closeReason: 'app_shutdown',
      stateAtClose: 'idle',
      requests: 1,
    })
    const upgraded = closes.records.find((r) => r.stateAtClose === 'upgraded')
    expect(upgraded?.closeReason).toBe('app_shutdown_timeout')
    expect(closes.records.filter((r) => r.closeReason === 'app_shutdown')).toHaveLength(5)
    expect(closes.records).toHaveLength(6)
    for (const rec of closes.records) expectConsistentRecord(rec)
    expect(s.tracker.snapshot().total).toBe(0)
  })
})
