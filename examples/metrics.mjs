#!/usr/bin/env node
/**
 * Connection metrics for a guarded Fastify server, both ways at once:
 *
 * - Prometheus: `registerPrometheus(app.connguard, { registry })` and a `GET /metrics` route.
 * - OpenTelemetry: `registerOpenTelemetry(app.connguard, { meterProvider })` on an SDK
 *   MeterProvider whose periodic reader prints to the console every 60 s (in a real
 *   service: the OTLP exporter, and usually the global provider set by the NodeSDK).
 *
 * Instruments and labels: docs/metrics.md.
 *
 *   node examples/metrics.mjs           serve on $HOST:$PORT (default 127.0.0.1, a free port)
 *   node examples/metrics.mjs --smoke   start, make a few connections (keep-alive requests,
 *                                       one silent client the headers deadline cuts), print
 *                                       the scrape and the OpenTelemetry view, exit
 */
import http from 'node:http'
import net from 'node:net'
import { connguard } from '@connguard/fastify'
import { registerOpenTelemetry } from '@connguard/opentelemetry'
import { registerPrometheus } from '@connguard/prometheus'
import {
  AggregationTemporality,
  ConsoleMetricExporter,
  InMemoryMetricExporter,
  MeterProvider,
  PeriodicExportingMetricReader,
} from '@opentelemetry/sdk-metrics'
import Fastify from 'fastify'
import { Registry } from 'prom-client'

const smoke = process.argv.includes('--smoke') || process.env.SMOKE === '1'
const app = Fastify()

await app.register(connguard, {
  // Short in the self-test, so a silent client is cut (and counted) within a second.
  headersTimeout: smoke ? 500 : 30_000,
})

// Prometheus: its own registry here; leave `registry` out to use prom-client's global one.
const registry = new Registry()
const stopPrometheus = registerPrometheus(app.connguard, { registry })
app.get('/metrics', async (_request, reply) => {
  reply.type(registry.contentType)
  return registry.metrics()
})

// OpenTelemetry: the self-test keeps the data in memory to print it; the server prints it.
const exporter = smoke
  ? new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  : new ConsoleMetricExporter()
const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 60_000 })
const meterProvider = new MeterProvider({ readers: [reader] })
const stopOpenTelemetry = registerOpenTelemetry(app.connguard, { meterProvider })

app.get('/', async () => 'hello\n')
app.addHook('onClose', async () => {
  stopPrometheus()
  stopOpenTelemetry()
  await meterProvider.shutdown()
})

await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) })
const { port } = app.server.address()
console.log(`listening on http://127.0.0.1:${port}  (GET /, GET /metrics)`)

if (smoke) {
  const tracker = app.connguard
  const closes = () => Object.values(tracker.snapshot().closedByReason).reduce((a, b) => a + b, 0)
  const waitFor = async (what, condition, ms = 5_000) => {
    const until = Date.now() + ms
    while (!condition()) {
      if (Date.now() > until) throw new Error(`smoke: ${what} did not happen within ${ms} ms`)
      await new Promise((resolve) => setTimeout(resolve, 20))
    }
  }
  const get = (path, agent) =>
    new Promise((resolve, reject) => {
      http
        .get({ host: '127.0.0.1', port, path, agent }, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (chunk) => {
            body += chunk
          })
          res.on('end', () => resolve({ status: res.statusCode, body }))
        })
        .on('error', reject)
    })

  // Three requests on one keep-alive connection, then the client hangs up: client_closed.
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 })
  for (let i = 0; i < 3; i++) console.log(`GET / → ${(await get('/', agent)).status}`)
  agent.destroy()
  await waitFor('the keep-alive close', () => closes() >= 1)

  // A client that connects and sends nothing: cut by the headers deadline.
  const silent = net.connect({ host: '127.0.0.1', port })
  silent.on('error', () => {})
  await waitFor('the silent client cut', () => closes() >= 2)
  silent.destroy()

  const scrape = await get('/metrics', false)
  const lines = scrape.body
    .split('\n')
    .filter((l) => l.startsWith('connguard_') && !l.includes('_bucket') && !/ 0$/.test(l))
  console.log(`\nGET /metrics → ${scrape.status} (non-zero connguard_ samples, buckets left out):`)
  for (const line of lines) console.log(`  ${line}`)

  await reader.forceFlush()
  const otel =
    exporter
      .getMetrics()
      .at(-1)
      ?.scopeMetrics.flatMap((s) => s.metrics) ?? []
  console.log('\nOpenTelemetry (in-memory reader):')
  for (const m of otel) {
    const points = m.dataPoints.map((p) => {
      const value = typeof p.value === 'number' ? p.value : `count=${p.value.count}`
      const attrs = Object.entries(p.attributes)
        .filter(([k]) => k !== 'network.transport' && k !== 'server.port')
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')
      return `${value}${attrs === '' ? '' : ` {${attrs}}`}`
    })
    console.log(`  ${m.descriptor.name} (${m.descriptor.unit}): ${points.join('; ')}`)
  }

  const ok =
    scrape.status === 200 &&
    lines.includes('connguard_connections_closed_total{reason="request_headers_timeout"} 1') &&
    lines.some((l) => l.startsWith('connguard_connections_closed_total{reason="client_closed"}')) &&
    otel.some((m) => m.descriptor.name === 'connguard.connection.duration')
  console.log(ok ? '\nOK: both exporters saw the connections' : '\nFAILED: see above')
  await app.close()
  process.exitCode = ok ? 0 : 1
} else {
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, () => {
      console.log(`${signal}: closing`)
      app.close().then(() => process.exit(0))
    })
  }
}
