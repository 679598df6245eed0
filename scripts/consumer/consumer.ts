/**
 * What a TypeScript user writes from the README, compiled against the packed tarballs under
 * `strict` and `skipLibCheck: false` (scripts/consumer-check.mjs). Every README example is
 * here in typed form; each `@ts-expect-error` proves a mistake is refused.
 */
import { readFileSync } from 'node:fs'
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import { createClientTracker, createDispatcher, PingTimeoutError } from '@connguard/client'
import {
  type CloseReason,
  type ConnectionRecord,
  ConnectionTracker,
  ConnguardError,
} from '@connguard/core'
import { type ConnguardRequest, connguard as expressGuard } from '@connguard/express'
import { connguard, type RequestOverrides, readiness } from '@connguard/fastify'
import { registerOpenTelemetry } from '@connguard/opentelemetry'
import { registerPrometheus } from '@connguard/prometheus'
import fastifyWebsocket from '@fastify/websocket'
import { metrics } from '@opentelemetry/api'
import express, { type Request, type Response } from 'express'
import Fastify from 'fastify'
import { Registry } from 'prom-client'
import { fetch as undiciFetch, request as undiciRequest } from 'undici'
import { WebSocketServer } from 'ws'

declare const key: Buffer
declare const cert: Buffer

// ---- Fastify -------------------------------------------------------------------------
export async function fastifyApp(): Promise<void> {
  const app = Fastify({ https: { key: readFileSync('key.pem'), cert: readFileSync('cert.pem') } })
  await app.register(connguard, {
    handshakeTimeout: 10_000,
    headersTimeout: 30_000,
    keepAliveTimeout: 72_000,
    drainTimeout: 30_000,
    closeLog: true,
    liveView: { path: '/_connguard' },
  })
  app.connguard.on('close', (record: ConnectionRecord) => {
    app.log.info({ conn: record.toJSON() }, `connection closed: ${record.closeReason}`)
  })
  app.post('/export', { config: { connguard: { requestTimeout: 120_000 } } }, async () => 'ok')
  app.post('/upload', { config: { connguard: { minBodyRate: false } } }, async () => 'ok')
  app.get('/events', { config: { connguard: { minResponseRate: false } } }, async () => 'ok')
  app.post('/import', async (request) => {
    if (request.headers['x-device'] === 'satellite')
      request.connguard.override({ minBodyRate: false })
    const requests: number | undefined = request.connguard.record?.requests
    // @ts-expect-error the record is undefined once the connection has closed
    request.connguard.record.requests
    return { requests }
  })
  // @ts-expect-error a misspelt plugin option
  await app.register(connguard, { keepAliveTimout: 1 })
  await app.listen({ port: 8443 })
}

// ---- Fastify: deploys, settings adopted, WebSockets ------------------------------------
export async function fastifyDeploy(): Promise<void> {
  const app = Fastify({ return503OnClosing: false, pluginTimeout: 30_000, requestTimeout: 10_000 })
  await app.register(fastifyWebsocket)
  await app.register(connguard, {
    drainDelay: 10_000,
    drainIdleGrace: 1_000,
    drainTimeout: 20_000,
    maxUpgradedConnections: 1_000,
    webSocket: { pingInterval: 30_000, pingTimeout: 20_000 },
  })
  app.get('/ready', readiness)
  const source: string = app.connguard.options.sources.requestTimeout
  void source
  app.connguard.on('drain', (phase) => void phase)
  const draining: boolean = app.connguard.draining
  void draining
  app.post(
    '/checked',
    { config: { connguard: { minBodyRate: false } satisfies RequestOverrides } },
    async () => 'ok',
  )
  app.post(
    '/checked-typo',
    // @ts-expect-error a misspelt override, caught with `satisfies`
    { config: { connguard: { minBodyRat: false } satisfies RequestOverrides } },
    async () => 'ok',
  )
  // @ts-expect-error a misspelt drain option
  await app.register(connguard, { drainDelai: 1 })
  process.once('SIGTERM', () => void app.close())
}

// ---- Express -------------------------------------------------------------------------
export function expressApp(): void {
  const guard = expressGuard({ headersTimeout: 30_000, requestTimeout: 60_000 })
  const app = express()
  app.use(guard)
  app.post('/upload', guard.route({ requestTimeout: false, minBodyRate: false }), (_req, res) => {
    res.end()
  })
  app.get('/events', guard.route({ minResponseRate: false }), (_req, res) => {
    res.end()
  })
  app.post('/import', (req, res) => {
    req.connguard.override({ requestTimeout: 300_000 }) // module augmentation, no cast
    const record: ConnectionRecord | undefined = req.connguard.record
    res.json({ id: record?.id })
  })
  const handler = (req: Request, res: Response): void => {
    req.connguard.override({ minBodyRate: { bytesPerSecond: 100, graceMs: 10_000 } })
    // @ts-expect-error a misspelt override
    req.connguard.override({ minBodyRat: false })
    res.end()
  }
  app.get('/h', handler)
  const plain = (req: ConnguardRequest): boolean => req.connguard.override({ requestTimeout: 1 })
  void plain
  // @ts-expect-error a misspelt route option
  guard.route({ minResponseRat: false })
  // @ts-expect-error a misspelt guard option
  expressGuard({ headersTimout: 1 })

  const server = https.createServer({ key, cert }, app)
  guard.attach(server)
  server.listen(8443)
  guard.attach(app.listen(3000))
  const stopLog = guard.logCloses(Fastify().log) // a pino logger
  const stopPlain = guard.logCloses({ info: (obj, msg) => console.log(msg, obj) })
  stopPlain()
  stopLog()
  app.use('/_connguard', guard.liveView())
  process.on('SIGTERM', async () => {
    server.close()
    const { closedIdle, finished, forced } = await guard.drain({ timeout: 10_000 })
    console.log(closedIdle, finished, forced)
  })
  app.get('/ready', guard.readiness)
  const stopWs = guard.webSockets(new WebSocketServer({ server }))
  stopWs()
  process.once(
    'SIGTERM',
    () => void guard.drain({ delay: 10_000, idleGrace: 1_000, timeout: 20_000 }),
  )
  // @ts-expect-error a misspelt drain option
  void guard.drain({ dealy: 1 })
}

// ---- Core, HTTP/2, events and records --------------------------------------------------
export async function core(): Promise<void> {
  const server = http.createServer((_req, res) => res.end())
  const tracker = new ConnectionTracker({
    keepAliveTimeout: 65_000,
    maxConnections: 10_000,
    maxConnectionsPerIp: 100,
    maxHandshakes: 300,
    maxConnectionAge: 600_000,
    maxRequestsPerConnection: 1_000,
    sweepInterval: 250,
    pressure: false,
    minBodyRate: { bytesPerSecond: 240, graceMs: 5_000 },
    minResponseRate: false,
    clock: { now: () => performance.now() },
  }).attach(server)
  server.listen(3000)
  // @ts-expect-error a misspelt tracker option
  new ConnectionTracker({ handshakeTimout: 1 })

  const h2 = http2.createSecureServer({ key, cert, allowHTTP1: true }, () => {})
  new ConnectionTracker({ pingInterval: 30_000, pingTimeout: 10_000 }).attach(h2)
  http2.createServer()

  tracker.on('open', (record) => void record.id)
  tracker.on('transition', (record, from, to) => void [record, from, to])
  tracker.on('close', (record) => {
    const reason: CloseReason | null = record.closeReason
    void reason
    void record.streamCuts
  })
  tracker.on('pressure', (state) => void state)
  tracker.on('streamCut', (record, reason, streamId) => void [record, reason, streamId])
  const snap = tracker.snapshot()
  void [snap.total, snap.idle, snap.active, snap.closedByReason, snap.pressure]
  for (const record of tracker.connections()) void record.toJSON()
  http.createServer((req, res) => {
    tracker.recordOf(req)
    tracker.overrideRequest(req, { minBodyRate: false })
    res.end()
  })
  const { closedIdle, finished, forced } = await tracker.drain({ timeout: 30_000 })
  void [closedIdle, finished, forced]
  tracker.close()
  try {
    new ConnectionTracker({ keepAliveTimeout: -1 })
  } catch (err) {
    if (err instanceof ConnguardError) void err.code
  }
}

// ---- Client --------------------------------------------------------------------------
export async function client(): Promise<void> {
  const dispatcher = createDispatcher({ readIdleTimeout: 30_000, pingTimeout: 15_000 })
  await fetch('https://api.example/items', { dispatcher }) // Node's global fetch
  await undiciFetch('https://api.example/items', { dispatcher })
  await undiciRequest('https://api.example/items', { dispatcher })
  dispatcher.tracker.on('close', (rec) => rec.closeReason)
  // @ts-expect-error a misspelt client option
  createDispatcher({ readIdleTimout: 1 })
  const session = createClientTracker({ readIdleTimeout: 30_000 }).guardSession(
    http2.connect('https://api.example'),
    'https://api.example',
  )
  void session
  try {
    await fetch('https://api.example/items', { dispatcher })
  } catch (err) {
    if (err instanceof PingTimeoutError) void err.code
  }

  // ---- Metrics ----
  const registry = new Registry()
  const stopClientProm = registerPrometheus(dispatcher.tracker, { registry })
  const stopClientOtel = registerOpenTelemetry(dispatcher.tracker, {
    meterProvider: metrics.getMeterProvider(),
  })
  stopClientProm()
  stopClientOtel()
}

export async function metricsFor(tracker: ConnectionTracker): Promise<void> {
  const stopProm = registerPrometheus(tracker, { registry: new Registry() })
  const stopDefault = registerPrometheus(tracker)
  const stopOtel = registerOpenTelemetry(tracker, { meterProvider: metrics.getMeterProvider() })
  // @ts-expect-error a misspelt exporter option
  registerPrometheus(tracker, { registy: new Registry() })
  stopProm()
  stopDefault()
  stopOtel()
}
