/**
 * Hostile bytes over real sockets on 127.0.0.1, seeded and repeatable: malformed input at every
 * phase of a connection — TLS records and ClientHellos cut and flipped, request lines, header
 * names and values, chunked bodies, oversized heads, HTTP/2 prefaces and frames — against
 * Fastify and Express 5 (HTTP and HTTPS) and a bare node:http2 server (h2c, and TLS with
 * HTTP/1.1 fallback), each guarded with short deadlines.
 *
 * After each batch: the process is alive (no uncaught exception), the server still answers a
 * healthy request, every connection ended with one reason from CLOSE_REASONS, a client that
 * waited was cut by the server, and the tracker holds zero records. After `tracker.close()`
 * the server has exactly the listeners it had before the guard was attached.
 *
 * The seed is printed; `CONNGUARD_FUZZ_SEED=<n>` repeats a run's bytes exactly (timing
 * differs), `CONNGUARD_FUZZ_CASES=<n>` changes the cases per batch (default 32).
 * `CONNGUARD_FUZZ_REPORT=1` prints every case with its close reason.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import type { AddressInfo, Server, Socket } from 'node:net'
import { ConnectionTracker, type ConnectionTrackerOptions } from '@connguard/core'
import { connguard as expressGuard } from '@connguard/express'
import { connguard as fastifyGuard } from '@connguard/fastify'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { captureClientHello, keepAliveRequests } from './helpers/clients.js'
import { h2Generators } from './helpers/hostile-h2.js'
import {
  chunkedGenerators,
  headAndFramingGenerators,
  headerGenerators,
  requestLineGenerators,
  tlsGenerators,
} from './helpers/hostile-http1.js'
import { type Generator, rngFor, runSeed } from './helpers/hostile-rng.js'
import {
  type BatchReport,
  type Carrier,
  listenersOf,
  runBatch,
  UncaughtCollector,
} from './helpers/hostile-run.js'
import { waitUntil } from './helpers/records.js'
import { clientTlsOptions, tlsOptions } from './helpers/tls.js'

const SEED = runSeed()
console.log(`hostile: seed ${SEED} (CONNGUARD_FUZZ_SEED=${SEED} repeats these bytes)`)
const CASES = Number(process.env.CONNGUARD_FUZZ_CASES ?? 32)
/** Connections in flight at once: enough to overlap phases, few enough for a shared 2-core box. */
const CONCURRENCY = 12

/** Every deadline short, so a hostile client that waits is cut within about a second. */
const OPTIONS: ConnectionTrackerOptions = {
  // Longer than the rest: 12 clients handshaking at once on a loaded 2-core machine must not be
  // cut before they send their hostile bytes (at 300 ms, one was reset mid-handshake under load).
  handshakeTimeout: 1_000,
  headersTimeout: 300,
  keepAliveTimeout: 300,
  requestTimeout: 800,
  minBodyRate: { bytesPerSecond: 100, graceMs: 1_000 },
  // HTTP/2: a session Node stops reading (after a connection error with a stream open) never
  // sees its peer leave; only the PING check ends it (see docs/faults.md).
  pingInterval: 500,
  pingTimeout: 500,
  sweepInterval: 50,
}

const uncaught = new UncaughtCollector()
let hello: Buffer
/** kind → reason → count, per target, printed at the end. */
const totals = new Map<string, Map<string, Map<string, number>>>()
let connections = 0

beforeAll(async () => {
  uncaught.install()
  hello = await captureClientHello()
})
afterAll(() => {
  uncaught.uninstall()
  const lines = [`hostile: seed ${SEED}, ${connections} hostile connections`]
  for (const [target, kinds] of totals) {
    lines.push(`  ${target}`)
    for (const [kind, reasons] of kinds)
      lines.push(`    ${kind}: ${[...reasons].map(([r, n]) => `${r} ${n}`).join(', ')}`)
  }
  console.log(lines.join('\n'))
})

// ---- targets ---------------------------------------------------------------------------------

interface Target {
  tracker: ConnectionTracker
  server: Server
  port: number
  /** Listener functions per server event before the guard was attached. */
  before: Map<string | symbol, unknown[]>
  /** Throws unless the server answers a healthy request (or two, on one connection). */
  healthy(): Promise<void>
  /** Removes the test's own 'connection' listener (added after `before`). */
  unobserve(): void
  stop(): Promise<void>
}

type Kind = 'fastify' | 'express' | 'h2'

/** POST /echo answers with the body's length; anything else with 'ok'. */
async function start(kind: Kind, secure: boolean): Promise<Target> {
  const sockets = new Set<Socket>()
  let server: Server
  let tracker: ConnectionTracker
  let before: Map<string | symbol, unknown[]>
  let stopApp = async () => {}
  if (kind === 'fastify') {
    const app = (secure ? Fastify({ https: tlsOptions }) : Fastify()) as unknown as FastifyInstance
    before = listenersOf(app.server)
    await app.register(fastifyGuard, OPTIONS)
    app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body))
    app.get('/', async () => 'ok')
    app.post('/echo', async (request) => String((request.body as Buffer | undefined)?.length ?? 0))
    await app.ready()
    server = app.server
    tracker = app.connguard
    stopApp = () => app.close()
  } else if (kind === 'express') {
    const app = express()
    server = secure ? https.createServer(tlsOptions, app) : http.createServer(app)
    before = listenersOf(server)
    const guard = expressGuard(OPTIONS)
    guard.attach(server)
    tracker = guard.tracker
    app.use(guard)
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    app.post('/echo', (req, res) => {
      let n = 0
      req.on('data', (chunk: Buffer) => {
        n += chunk.length
      })
      req.on('end', () => res.send(String(n)))
    })
  } else {
    const handler = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
      let n = 0
      req.on('data', (chunk: Buffer) => {
        n += chunk.length
      })
      req.on('end', () => res.end(req.method === 'POST' ? String(n) : 'ok'))
    }
    const h2 = secure
      ? http2.createSecureServer({ ...tlsOptions, allowHTTP1: true }, handler)
      : http2.createServer(handler)
    server = h2 as unknown as Server
    before = listenersOf(server)
    tracker = new ConnectionTracker(OPTIONS).attach(server)
  }
  // Observation only, added after `before` and removed in stop(): to destroy leftovers.
  const onConnection = (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  }
  server.on('connection', onConnection)
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
  const port = (server.address() as AddressInfo).port
  const healthy = async () => {
    if (kind === 'h2') await h2Get(port, secure)
    if (kind !== 'h2' || secure) {
      const result = await keepAliveRequests(port, { count: 2, tls: secure })
      expect(result.statuses, 'healthy keep-alive requests').toEqual([200, 200])
    }
  }
  const unobserve = () => server.off('connection', onConnection)
  const stop = async () => {
    unobserve()
    tracker.close()
    for (const socket of sockets) socket.destroy()
    await stopApp()
    await new Promise<void>((resolve) => {
      server.close(() => resolve())
      ;(server as { closeAllConnections?: () => void }).closeAllConnections?.()
    })
  }
  return { tracker, server, port, before, healthy, unobserve, stop }
}

/** One GET over HTTP/2 on a fresh session: 200 'ok', then the session is closed. */
function h2Get(port: number, secure: boolean): Promise<void> {
  const origin = `${secure ? 'https' : 'http'}://127.0.0.1:${port}`
  const session = http2.connect(origin, secure ? clientTlsOptions : {})
  return new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('healthy h2 GET: no answer in 5 s')), 5_000)
    session.on('error', reject)
    const stream = session.request({ ':path': '/' })
    let status = 0
    let body = ''
    stream.setEncoding('utf8')
    stream.on('response', (headers) => {
      status = Number(headers[':status'])
    })
    stream.on('data', (chunk: string) => {
      body += chunk
    })
    stream.on('error', reject)
    stream.on('end', () => {
      clearTimeout(timer)
      if (status === 200 && body === 'ok') resolve()
      else reject(new Error(`healthy h2 GET: ${status} ${JSON.stringify(body)}`))
    })
  }).finally(() => session.close())
}

// ---- batches ---------------------------------------------------------------------------------

interface Batch {
  name: string
  carrier: Carrier
  generators: () => Record<string, Generator>
}

const http1Batches = (tls: boolean, alpn?: string[]): Batch[] => {
  const carrier: Carrier = tls ? { tls: true, ...(alpn && { alpn }) } : { tls: false }
  return [
    { name: 'request lines', carrier, generators: () => requestLineGenerators },
    { name: 'header names and values', carrier, generators: () => headerGenerators },
    { name: 'chunked bodies', carrier, generators: () => chunkedGenerators },
    { name: 'oversized and cut heads', carrier, generators: () => headAndFramingGenerators },
  ]
}
const tlsBatch: Batch = {
  name: 'TLS records and ClientHellos',
  carrier: { tls: false },
  generators: () => tlsGenerators(hello),
}
/** The HTTP/2 generators in two batches, so each batch stays short. */
const h2Batches = (secure: boolean): Batch[] => {
  const carrier: Carrier = secure ? { tls: true, alpn: ['h2'] } : { tls: false }
  const all = () => h2Generators(secure)
  const first = [
    'preface cut',
    'preface bit flips',
    'preface then garbage',
    'bad SETTINGS',
    'HEADERS without END_HEADERS, then nothing',
    'CONTINUATION flood',
    'HTTP/1.1 request to HTTP/2',
  ]
  const pick = (keep: boolean) => () =>
    Object.fromEntries(Object.entries(all()).filter(([k]) => first.includes(k) === keep))
  return [
    { name: 'HTTP/2 prefaces, SETTINGS, header blocks', carrier, generators: pick(true) },
    { name: 'HTTP/2 frames', carrier, generators: pick(false) },
  ]
}

const TARGETS: { name: string; kind: Kind; secure: boolean; batches: Batch[] }[] = [
  { name: 'Fastify over HTTP', kind: 'fastify', secure: false, batches: http1Batches(false) },
  {
    name: 'Fastify over HTTPS',
    kind: 'fastify',
    secure: true,
    batches: [tlsBatch, ...http1Batches(true)],
  },
  { name: 'Express 5 over HTTP', kind: 'express', secure: false, batches: http1Batches(false) },
  {
    name: 'Express 5 over HTTPS',
    kind: 'express',
    secure: true,
    batches: [tlsBatch, ...http1Batches(true)],
  },
  { name: 'node:http2 h2c', kind: 'h2', secure: false, batches: h2Batches(false) },
  {
    name: 'node:http2 over TLS (allowHTTP1)',
    kind: 'h2',
    secure: true,
    batches: [
      tlsBatch,
      ...h2Batches(true),
      // The same server's HTTP/1.1 fallback, after ALPN chose http/1.1.
      ...http1Batches(true, ['http/1.1']).slice(0, 2),
    ],
  },
]

for (const { name, kind, secure, batches } of TARGETS) {
  describe(name, () => {
    let target: Target
    beforeAll(async () => {
      target = await start(kind, secure)
    })
    afterAll(async () => {
      await target?.stop()
    })

    for (const batch of batches) {
      it(`${batch.name}: no crash, one reason per connection, zero records left`, async () => {
        const label = `${name} / ${batch.name}`
        const report: BatchReport = await runBatch({
          label: `${label} (seed ${SEED})`,
          rng: rngFor(SEED, label),
          port: target.port,
          tracker: target.tracker,
          generators: batch.generators(),
          carrier: batch.carrier,
          count: CASES,
          concurrency: CONCURRENCY,
          uncaught,
        })
        connections += CASES
        record(name, report)
        await target.healthy()
        // The healthy connections close too, before the next batch counts its own.
        await waitUntil(() => target.tracker.snapshot().total === 0, {
          what: 'healthy connections closed',
        })
      })
    }

    it('tracker.close() leaves exactly the listeners the server had before attach', () => {
      const tracker = target.tracker
      tracker.close()
      expect(tracker.snapshot().total).toBe(0)
      target.unobserve()
      expect(listenersOf(target.server)).toEqual(target.before)
    })
  })
}

it('no subscriber is left on Node’s http.server channels once every tracker closed; nothing escaped', () => {
  expect(uncaught.errors).toEqual([])
  expect(diagnosticsChannel.channel('http.server.request.start').hasSubscribers).toBe(false)
  expect(diagnosticsChannel.channel('http.server.response.finish').hasSubscribers).toBe(false)
})

function record(target: string, report: BatchReport): void {
  const kinds = totals.get(target) ?? new Map<string, Map<string, number>>()
  totals.set(target, kinds)
  for (const o of report.outcomes) {
    const reasons = kinds.get(o.kind) ?? new Map<string, number>()
    kinds.set(o.kind, reasons)
    const reason = o.record?.closeReason ?? 'none'
    reasons.set(reason, (reasons.get(reason) ?? 0) + 1)
  }
}
