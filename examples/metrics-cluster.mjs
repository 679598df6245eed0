#!/usr/bin/env node
/**
 * Prometheus metrics across node:cluster workers. Each worker guards its own HTTP server
 * with a ConnectionTracker and registers it on its own prom-client Registry; the primary
 * serves `GET /metrics` with `AggregatorRegistry.clusterMetrics()`, which asks every
 * worker for its metrics over IPC and sums them (every connguard metric aggregates by
 * sum: live connections, closes and histogram buckets all add up across workers).
 *
 *   node examples/metrics-cluster.mjs          app on $PORT (default: a free port), metrics
 *                                              on $METRICS_PORT (default: a free port)
 *   node examples/metrics-cluster.mjs --smoke  start 2 workers, send 6 requests, scrape the
 *                                              primary once, print, stop the workers, exit
 */
import cluster from 'node:cluster'
import http from 'node:http'
import { ConnectionTracker } from '@connguard/core'
import { registerPrometheus } from '@connguard/prometheus'
import { AggregatorRegistry, Registry } from 'prom-client'

const WORKERS = 2
const HOST = '127.0.0.1'
const smoke = process.argv.includes('--smoke') || process.env.SMOKE === '1'

if (cluster.isPrimary) {
  await primary()
} else {
  worker()
}

function worker() {
  const registry = new Registry()
  // The registry the primary's requests are answered from (default: the global one). The
  // answering listener itself is installed by AggregatorRegistry's constructor, in workers too.
  AggregatorRegistry.setRegistries([registry])
  new AggregatorRegistry()

  const tracker = new ConnectionTracker({ headersTimeout: 10_000 })
  const server = http.createServer((_req, res) => res.end(`hello from worker ${process.pid}\n`))
  tracker.attach(server)
  registerPrometheus(tracker, { registry })
  // In a cluster every worker's listen(0) gets the same port, picked once by the primary.
  server.listen(Number(process.env.PORT ?? 0), HOST)
}

async function primary() {
  const aggregator = new AggregatorRegistry()
  const workers = Array.from({ length: WORKERS }, () => cluster.fork())
  const stopWorkers = () => {
    for (const w of workers) if (!w.isDead()) w.kill()
  }
  // Bounded: a self-test that hangs would hold two worker processes with it.
  const deadline = smoke
    ? setTimeout(() => {
        console.error('FAILED: the self-test did not finish within 20 s')
        stopWorkers()
        process.exit(1)
      }, 20_000)
    : undefined

  const ports = new Set()
  await new Promise((resolve) => {
    let listening = 0
    cluster.on('listening', (_worker, address) => {
      ports.add(address.port)
      if (++listening === WORKERS) resolve()
    })
  })
  const [appPort] = ports

  const metricsServer = http.createServer(async (req, res) => {
    if (req.url !== '/metrics') {
      res.writeHead(404).end()
      return
    }
    try {
      const text = await aggregator.clusterMetrics()
      res.writeHead(200, { 'content-type': aggregator.contentType }).end(text)
    } catch (err) {
      res.writeHead(500).end(String(err))
    }
  })
  await new Promise((resolve) =>
    metricsServer.listen(Number(process.env.METRICS_PORT ?? 0), HOST, resolve),
  )
  const metricsPort = metricsServer.address().port
  console.log(`app on http://${HOST}:${appPort} (${WORKERS} workers)`)
  console.log(`metrics on http://${HOST}:${metricsPort}/metrics`)

  if (!smoke) {
    for (const signal of ['SIGINT', 'SIGTERM']) {
      process.once(signal, () => {
        stopWorkers()
        metricsServer.close()
      })
    }
    return
  }

  // One connection per request (no keep-alive), spread over the workers by the primary.
  const get = (port, path) =>
    new Promise((resolve, reject) => {
      http
        .get({ host: HOST, port, path, agent: false }, (res) => {
          let body = ''
          res.setEncoding('utf8')
          res.on('data', (chunk) => {
            body += chunk
          })
          res.on('end', () => resolve({ status: res.statusCode, body }))
        })
        .on('error', reject)
    })
  const REQUESTS = 6
  for (let i = 0; i < REQUESTS; i++) {
    const { status, body } = await get(appPort, '/')
    console.log(`GET / → ${status} ${body.trim()}`)
  }
  // A worker counts a connection when it closes, just after its response: scrape until
  // all of them are in (or the deadline above ends the test).
  const closedTotal = (text) =>
    text
      .split('\n')
      .filter((l) => l.startsWith('connguard_connections_closed_total{'))
      .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0)
  let scrape = await get(metricsPort, '/metrics')
  while (closedTotal(scrape.body) < REQUESTS) {
    await new Promise((resolve) => setTimeout(resolve, 50))
    scrape = await get(metricsPort, '/metrics')
  }
  console.log(`\nGET /metrics (primary, summed over ${WORKERS} workers) → ${scrape.status}:`)
  for (const line of scrape.body.split('\n')) {
    if (
      /^connguard_(active_connections|connections_closed_total|connection_requests_(sum|count))/.test(
        line,
      ) &&
      !/ 0$/.test(line)
    ) {
      console.log(`  ${line}`)
    }
  }
  const ok = scrape.status === 200 && closedTotal(scrape.body) === REQUESTS
  console.log(ok ? `\nOK: ${REQUESTS} connections counted across the cluster` : '\nFAILED')
  clearTimeout(deadline)
  stopWorkers()
  metricsServer.close()
  process.exitCode = ok ? 0 : 1
}
