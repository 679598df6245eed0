/**
 * Fastify and Express 5 apps, plain or HTTPS, guarded by connguard and listening on
 * 127.0.0.1, with the routes the fault tests (test/faults*.test.ts) misbehave against.
 *
 * Routes, the same in both frameworks:
 * - `GET /`                → 'ok'
 * - `POST /upload`         → the body's length, once it is all read
 * - `GET /stream`          → 1 KiB every 20 ms, 200 times (4 s): a response in progress
 * - `GET /slow?ms=N`       → 'slow' after N ms
 * - `GET /throw`           → the handler throws
 * - `GET /reject`          → the async handler rejects
 * - `GET /throw-after-head` → writes the head and a first chunk, then fails
 * - `GET /hang`            → never answers
 * - `GET /hang-limited`    → never answers; the route sets `requestTimeout: 400`
 *
 * Also small socket helpers the fault tests share: `open` (remembers the client's local port,
 * the record's `remotePort`, while the connection is open), `listenBare`, `collectSockets`.
 */
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo, Server, Socket } from 'node:net'
import { Readable } from 'node:stream'
import { setTimeout as delay } from 'node:timers/promises'
import type { TLSSocket } from 'node:tls'
import type { ConnectionRecord, ConnectionTracker, ConnectionTrackerOptions } from '@connguard/core'
import { connguard as expressGuard } from '@connguard/express'
import { connguard as fastifyGuard } from '@connguard/fastify'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { type CloseWatcher, expectConsistentRecord, waitUntil, watchCloses } from './records.js'
import { closeServer, listen } from './server.js'
import { type Conn, openSocket } from './socket.js'
import { tlsOptions } from './tls.js'

export type Adapter = 'fastify' | 'express'

/** The per-route `requestTimeout` of `/hang-limited`, ms. */
export const ROUTE_REQUEST_TIMEOUT = 400
const CHUNK = Buffer.alloc(1024, 'x')
const STREAM_CHUNKS = 200
const STREAM_INTERVAL_MS = 20

export interface FaultApp {
  adapter: Adapter
  secure: boolean
  port: number
  tracker: ConnectionTracker
  closes: CloseWatcher
  server: http.Server
  /** Live record of the client whose local port is `port`, once the server has accepted it. */
  liveRecord(port: number | undefined): Promise<ConnectionRecord>
  stop(): Promise<void>
}

const started = new Set<FaultApp>()

/** Client local ports (the records' remotePort), read while each connection is open. */
const ports = new WeakMap<Conn, number | undefined>()
export const portOf = (conn: Conn): number | undefined => ports.get(conn)
/** `openSocket`, remembering the client's local port. */
export async function open(
  port: number,
  options?: Parameters<typeof openSocket>[1],
): Promise<Conn> {
  const conn = await openSocket(port, options)
  ports.set(conn, (conn.socket as TLSSocket).localPort)
  return conn
}

/** Listen on 127.0.0.1:0 without adding a listener (so listener lists stay comparable). */
export async function listenBare(server: Server): Promise<number> {
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  return (server.address() as AddressInfo).port
}

/** Every raw socket `server` accepts, to destroy what is left; the listener is removable. */
export function collectSockets(server: Server): { sockets: Set<Socket>; stop(): void } {
  const sockets = new Set<Socket>()
  const onConnection = (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  }
  server.on('connection', onConnection)
  return { sockets, stop: () => server.off('connection', onConnection) }
}

export async function startApp(
  adapter: Adapter,
  secure: boolean,
  options: ConnectionTrackerOptions,
): Promise<FaultApp> {
  let server: http.Server
  let tracker: ConnectionTracker
  let closeApp = async () => {}
  if (adapter === 'fastify') {
    const app = (secure ? Fastify({ https: tlsOptions }) : Fastify()) as unknown as FastifyInstance
    await app.register(fastifyGuard, options)
    app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body))
    app.get('/', async () => 'ok')
    app.post('/upload', async (request) =>
      String((request.body as Buffer | undefined)?.length ?? 0),
    )
    app.get('/stream', (_request, reply) => {
      reply.type('application/octet-stream').send(Readable.from(chunks()))
    })
    app.get('/slow', async (request) => {
      await delay(Number((request.query as { ms?: string }).ms ?? 0))
      return 'slow'
    })
    app.get('/throw', () => {
      throw new Error('boom')
    })
    app.get('/reject', async () => {
      await delay(1)
      throw new Error('boom')
    })
    app.get('/throw-after-head', (_request, reply) => {
      // A body stream that fails after its first chunk: the head is out by then.
      reply.type('text/plain').send(Readable.from(failingBody()))
    })
    app.get('/hang', () => new Promise<never>(() => {}))
    app.get(
      '/hang-limited',
      { config: { connguard: { requestTimeout: ROUTE_REQUEST_TIMEOUT } } },
      () => new Promise<never>(() => {}),
    )
    await app.ready()
    server = app.server
    tracker = app.connguard
    closeApp = () => app.close()
  } else {
    const app = express()
    server = secure ? https.createServer(tlsOptions, app) : http.createServer(app)
    const guard = expressGuard(options)
    guard.attach(server)
    tracker = guard.tracker
    app.use(guard)
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    app.post('/upload', (req, res) => {
      let n = 0
      req.on('data', (chunk: Buffer) => {
        n += chunk.length
      })
      req.on('end', () => res.send(String(n)))
    })
    app.get('/stream', (_req, res) => {
      res.type('application/octet-stream')
      Readable.from(chunks()).pipe(res)
    })
    app.get('/slow', async (req, res) => {
      await delay(Number(req.query.ms ?? 0))
      res.send('slow')
    })
    app.get('/throw', () => {
      throw new Error('boom')
    })
    app.get('/reject', async () => {
      await delay(1)
      throw new Error('boom')
    })
    app.get('/throw-after-head', (_req, res, next) => {
      res.writeHead(200, { 'content-type': 'text/plain' })
      res.write('partial')
      // Express's final handler cannot answer 500 once the head is out: it destroys the socket.
      setImmediate(() => next(new Error('boom after head')))
    })
    app.get('/hang', () => {})
    app.get('/hang-limited', guard.route({ requestTimeout: ROUTE_REQUEST_TIMEOUT }), () => {})
  }
  const closes = watchCloses(tracker)
  const port = await listen(server)
  const fault: FaultApp = {
    adapter,
    secure,
    port,
    tracker,
    closes,
    server,
    liveRecord: async (clientPort) => {
      let found: ConnectionRecord | undefined
      await waitUntil(
        () => {
          found = [...tracker.connections()].find((r) => r.remotePort === clientPort)
          return found !== undefined
        },
        { what: `a live record for client port ${clientPort}` },
      )
      return found as ConnectionRecord
    },
    stop: async () => {
      started.delete(fault)
      await closeServer(server)
      await closeApp()
      tracker.close()
      closes.stop()
      for (const rec of closes.records) expectConsistentRecord(rec)
    },
  }
  started.add(fault)
  return fault
}

/** Stop every app still running (for afterAll). */
export async function stopApps(): Promise<void> {
  await Promise.all([...started].map((app) => app.stop()))
}

async function* failingBody(): AsyncGenerator<string> {
  yield 'partial'
  await delay(20)
  throw new Error('boom after head')
}

async function* chunks(): AsyncGenerator<Buffer> {
  for (let i = 0; i < STREAM_CHUNKS; i++) {
    yield CHUNK
    await delay(STREAM_INTERVAL_MS)
  }
}
