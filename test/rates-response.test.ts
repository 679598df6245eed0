/**
 * minResponseRate over real sockets on 127.0.0.1, through both adapters (Fastify 5,
 * Express 5), plain HTTP and HTTPS: a client that stops reading a 20 MB response is cut with
 * `min_response_data_rate`; a handler that is itself slow to write is not, however short the
 * window; a route with `minResponseRate: false` spares a client that stopped reading.
 *
 * The rate is 10 000 B/s with a 1 s grace, so windows of 1 s; the sweep runs every 50 ms.
 * A stopped reader is cut between one and two windows (plus a sweep) after the kernel stops
 * taking bytes: the first window starts at the first check that sees the socket blocked.
 * (A *slow* reader is not tested with such short windows: on loopback the kernel takes
 * ~4 MB up front, then reports progress in ~1.4 MB steps.)
 * CONNGUARD_TIMINGS=1 prints the measured close times as a table at the end.
 */
import http from 'node:http'
import https from 'node:https'
import { performance } from 'node:perf_hooks'
import { Readable } from 'node:stream'
import { setTimeout as delay } from 'node:timers/promises'
import type { ConnectionTracker, ConnectionTrackerOptions } from '@connguard/core'
import { connguard as expressGuard } from '@connguard/express'
import { connguard as fastifyGuard } from '@connguard/fastify'
import express5 from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { type Conn, getRequest, openSocket } from './helpers/clients.js'
import { printTimings, type TimingRow } from './helpers/guard-timing.js'
import { parseResponse } from './helpers/http-response.js'
import {
  type CloseWatcher,
  EARLY_MS,
  expectConsistentRecord,
  sleep,
  watchCloses,
} from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const SWEEP = 50
/** The response window: max(graceMs, 1000). */
const WINDOW = 1_000
const OPTIONS: ConnectionTrackerOptions = {
  sweepInterval: SWEEP,
  minResponseRate: { bytesPerSecond: 10_000, graceMs: WINDOW },
  minBodyRate: { bytesPerSecond: 1_000, graceMs: 500 },
  headersTimeout: 500,
  keepAliveTimeout: 500,
  handshakeTimeout: 500,
}
/** Slack for a stopped reader's cut beyond two windows and a sweep: event-loop lag on a shared machine. */
const GENEROUS_MS = 1_000
/** `/big` answers this many bytes at once. */
const BIG = 20_000_000
/** `/drip` writes DRIP_CHUNK every DRIP_EVERY ms, DRIP_COUNT times (3 s). */
const DRIP_CHUNK = 'x'.repeat(100)
const DRIP_EVERY = 300
const DRIP_COUNT = 10

type Adapter = 'Fastify' | 'Express 5'

interface Started {
  port: number
  tracker: ConnectionTracker
  closes: CloseWatcher
  /** `performance.now()` when `/big` handed its body to Node, per request. */
  queuedAt: number[]
}

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

async function startFastify(secure: boolean): Promise<Started> {
  const app = (secure ? Fastify({ https: tlsOptions }) : Fastify()) as unknown as FastifyInstance
  await app.register(fastifyGuard, OPTIONS)
  const queuedAt: number[] = []
  const big = Buffer.alloc(BIG, 'r')
  const sendBig = async (_request: unknown, reply: import('fastify').FastifyReply) => {
    reply.header('content-type', 'application/octet-stream').send(big)
    queuedAt.push(performance.now())
    return reply
  }
  app.get('/big', sendBig)
  app.get('/big-free', { config: { connguard: { minResponseRate: false } } }, sendBig)
  app.get('/drip', (_request, reply) => {
    reply.header('content-type', 'text/plain')
    return reply.send(
      Readable.from(
        (async function* () {
          for (let i = 0; i < DRIP_COUNT; i++) {
            await delay(DRIP_EVERY)
            yield DRIP_CHUNK
          }
        })(),
      ),
    )
  })
  await app.ready()
  const closes = watchCloses(app.connguard)
  const port = await listen(app.server)
  cleanups.push(async () => {
    await closeServer(app.server)
    await app.close()
    closes.stop()
    for (const rec of closes.records) expectConsistentRecord(rec)
  })
  return { port, tracker: app.connguard, closes, queuedAt }
}

async function startExpress(secure: boolean): Promise<Started> {
  const app = express5()
  const guard = expressGuard(OPTIONS)
  app.use(guard)
  const queuedAt: number[] = []
  const big = Buffer.alloc(BIG, 'r')
  const sendBig = (_req: express5.Request, res: express5.Response) => {
    res.type('application/octet-stream').send(big)
    queuedAt.push(performance.now())
  }
  app.get('/big', sendBig)
  app.get('/big-free', guard.route({ minResponseRate: false }), sendBig)
  app.get('/drip', async (_req, res) => {
    res.type('text/plain')
    for (let i = 0; i < DRIP_COUNT; i++) {
      await delay(DRIP_EVERY)
      res.write(DRIP_CHUNK)
    }
    res.end()
  })
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
  return { port, tracker: guard.tracker, closes, queuedAt }
}

const start = (adapter: Adapter, secure: boolean) =>
  adapter === 'Fastify' ? startFastify(secure) : startExpress(secure)

/** GET `path` from a client that never reads: the socket is paused before the request. */
async function stoppedReader(port: number, path: string, secure: boolean): Promise<Conn> {
  const conn = await openSocket(port, { tls: secure, timeoutMs: 15_000 })
  conn.socket.pause()
  conn.send(getRequest(path))
  cleanups.push(() => conn.destroy())
  return conn
}

const CASES: { adapter: Adapter; transport: 'http' | 'https'; secure: boolean }[] = [
  { adapter: 'Fastify', transport: 'http', secure: false },
  { adapter: 'Fastify', transport: 'https', secure: true },
  { adapter: 'Express 5', transport: 'http', secure: false },
  { adapter: 'Express 5', transport: 'https', secure: true },
]

describe.each(CASES)('$adapter over $transport', ({ adapter, transport, secure }) => {
  const suite = `${adapter} ${transport}`

  it('does not cut a response the handler itself writes slowly', async () => {
    const { port, closes } = await start(adapter, secure)
    const conn = await openSocket(port, { tls: secure })
    const sentAt = performance.now()
    conn.send(getRequest('/drip'))
    const response = await conn.waitFor((buf, eof) => parseResponse(buf, 0, { eof }))
    const clientMs = performance.now() - sentAt
    expect(response.status).toBe(200)
    expect(response.body.toString()).toBe(DRIP_CHUNK.repeat(DRIP_COUNT))
    expect(clientMs).toBeGreaterThanOrEqual(DRIP_EVERY * DRIP_COUNT - EARLY_MS)
    // Still open after the response: nothing cut it.
    expect(conn.isOpen()).toBe(true)
    conn.destroy()
    const rec = await closes.next()
    expect(rec).toMatchObject({ closeReason: 'client_closed', stateAtClose: 'idle', requests: 1 })
    timings.push({
      suite,
      scenario: 'handler writes 100 B every 300 ms for 3 s',
      deadlineMs: null,
      clientMs,
      serverMs: rec.duration,
      reason: rec.closeReason,
    })
  })

  it('cuts a client that stops reading a 20 MB response with min_response_data_rate', async () => {
    const { port, closes, queuedAt } = await start(adapter, secure)
    const conn = await stoppedReader(port, '/big', secure)
    const rec = await closes.next(undefined, 10_000)
    const serverMs = closes.closedAt(rec) - (queuedAt[0] as number)
    expect(queuedAt).toHaveLength(1)
    expect(rec.closeReason).toBe('min_response_data_rate')
    expect(rec.requests).toBe(1)
    // The client took only what the kernels buffered.
    expect(rec.bytesWritten).toBeGreaterThan(0)
    expect(serverMs, 'cut before one window').toBeGreaterThanOrEqual(WINDOW - EARLY_MS)
    expect(serverMs, 'cut later than 2 windows + sweep + margin').toBeLessThanOrEqual(
      2 * WINDOW + SWEEP + GENEROUS_MS,
    )
    timings.push({
      suite,
      scenario: 'client stops reading 20 MB',
      deadlineMs: 2 * WINDOW,
      clientMs: Number.NaN,
      serverMs,
      reason: rec.closeReason,
    })
    conn.destroy()
    // The response was under way when the connection was cut.
    expect(rec.stateAtClose).toBe('active')
  })
})

describe.each(['Fastify', 'Express 5'] as const)('%s overrides (http)', (adapter) => {
  it('a route with minResponseRate: false spares a client that stops reading', async () => {
    const { port, tracker, queuedAt } = await start(adapter, false)
    const conn = await stoppedReader(port, '/big-free', false)
    // Three windows after the response was queued: the default route is cut by then.
    while (queuedAt.length === 0) await sleep(10)
    await sleep(3 * WINDOW + SWEEP)
    expect(conn.isOpen()).toBe(true)
    const [rec] = [...tracker.connections()]
    expect(rec?.state).toBe('active')
    expect(tracker.snapshot().closedByReason).toEqual({})
  })
})
