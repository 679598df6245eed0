#!/usr/bin/env node
/**
 * @connguard/client: the seed article's dead pooled connection, before and after.
 *
 * An HTTP/2 TLS server sits behind a loopback relay. After one request, the relay's route
 * dies silently: every byte of the existing connection is dropped both ways, nothing is
 * closed (no FIN, no RST), while new connections still go through — a NAT entry, a load
 * balancer or a Wi-Fi roam that forgot the flow.
 *
 * - plain undici Agent (`allowH2: true`): every later request is sent into the dead session
 *   and times out; no new connection is ever opened;
 * - `createDispatcher({ readIdleTimeout, pingTimeout })`: after readIdleTimeout of read
 *   silence a PING goes out, no ACK within pingTimeout closes the connection
 *   (`ping_timeout`), and the next request goes out on a new connection.
 *
 * Both use the global `fetch(url, { dispatcher })`. The connguard dispatcher's tracker is
 * also registered with @connguard/prometheus: the scrape after the recovery shows
 * `connguard_http_client_open_connections{state}` (OpenTelemetry's
 * http.client.open_connections) and the dead connection's
 * `connguard_http_client_connection_duration_seconds{reason="ping_timeout"}`.
 *
 *   node examples/client.mjs           readIdleTimeout 1 s, pingTimeout 1 s, request timeout 3 s
 *   node examples/client.mjs --smoke   300 ms / 300 ms / 2 s; exit 0 if plain undici stayed
 *                                      stuck and connguard recovered (or SMOKE=1)
 *
 * Uses the repository's throwaway self-signed test certificate (test/fixtures).
 */
import { readFileSync } from 'node:fs'
import http2 from 'node:http2'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import { createDispatcher } from '@connguard/client'
import { registerPrometheus } from '@connguard/prometheus'
import { Registry } from 'prom-client'
import { Agent } from 'undici'

const smoke = process.argv.includes('--smoke') || process.env.SMOKE === '1'
const READ_IDLE = smoke ? 300 : 1_000
const PING_TIMEOUT = smoke ? 300 : 1_000
const REQUEST_TIMEOUT = smoke ? 2_000 : 3_000

const fixtures = new URL('../test/fixtures/', import.meta.url)
const cert = readFileSync(new URL('cert.pem', fixtures))
const key = readFileSync(new URL('key.pem', fixtures))
// Trust exactly the test certificate; SNI takes a name, not 127.0.0.1.
const connect = { ca: cert, servername: 'localhost' }

/** A node:http2 TLS server answering 'ok', counting the connections it accepted. */
async function startServer() {
  const server = http2.createSecureServer({ key, cert }, (_req, res) => res.end('ok'))
  const sessions = new Set()
  server.on('session', (session) => {
    sessions.add(session)
    session.on('error', () => {})
    session.once('close', () => sessions.delete(session))
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: server.address().port,
    close: () => {
      for (const session of sessions) session.destroy()
      server.close()
    },
  }
}

/** A loopback TCP relay; `killRoutes()` silently drops every byte of the connections open now. */
async function startRelay(target) {
  const sockets = new Set()
  const routes = new Set()
  let accepted = 0
  const server = net.createServer({ allowHalfOpen: true }, (down) => {
    accepted++
    const route = { alive: true }
    routes.add(route)
    const up = net.connect({ host: '127.0.0.1', port: target, allowHalfOpen: true })
    for (const socket of [down, up]) {
      sockets.add(socket)
      socket.on('error', () => {})
      socket.once('close', () => sockets.delete(socket))
    }
    const pending = []
    up.once('connect', () => {
      for (const chunk of pending.splice(0)) up.write(chunk)
    })
    down.on('data', (chunk) => {
      if (!route.alive) return
      if (up.connecting) pending.push(chunk)
      else up.write(chunk)
    })
    up.on('data', (chunk) => route.alive && down.write(chunk))
    down.on('end', () => route.alive && up.end())
    up.on('end', () => route.alive && down.end())
    down.on('close', () => route.alive && up.destroy())
    up.on('close', () => route.alive && down.destroy())
  })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  return {
    port: server.address().port,
    accepted: () => accepted,
    killRoutes: () => {
      for (const route of routes) route.alive = false
    },
    close: () => {
      for (const socket of sockets) socket.destroy()
      server.close()
    },
  }
}

/** One GET with the global fetch; returns what happened and how long it took. */
async function get(url, dispatcher) {
  const started = performance.now()
  try {
    const res = await fetch(url, { dispatcher, signal: AbortSignal.timeout(REQUEST_TIMEOUT) })
    await res.text()
    return { ok: true, what: `${res.status}`, ms: performance.now() - started }
  } catch (err) {
    const why = err.cause?.code ?? err.name
    return { ok: false, what: why, ms: performance.now() - started }
  }
}

const fmt = (ms) => `${Math.round(ms)} ms`

async function scenario(title, dispatcher, beforeClose = async () => {}) {
  const server = await startServer()
  const relay = await startRelay(server.port)
  const url = `https://127.0.0.1:${relay.port}/`
  console.log(`\n${title}`)
  try {
    const first = await get(url, dispatcher)
    console.log(`  request 1: ${first.what} in ${fmt(first.ms)}`)
    relay.killRoutes()
    const diedAt = performance.now()
    console.log('  the route dies silently (bytes dropped, nothing closed)')
    await sleep(1_000)
    const later = []
    for (const n of [2, 3]) {
      const r = await get(url, dispatcher)
      later.push(r)
      console.log(
        `  request ${n} (${fmt(performance.now() - diedAt - r.ms)} after): ` +
          `${r.ok ? `${r.what} in ${fmt(r.ms)}` : `failed: ${r.what} after ${fmt(r.ms)}`}`,
      )
    }
    console.log(`  connections opened: ${relay.accepted()}`)
    await beforeClose()
    return { later, connections: relay.accepted(), diedAt }
  } finally {
    await dispatcher.destroy()
    relay.close()
    server.close()
  }
}

const plain = await scenario(
  `plain undici Agent({ allowH2: true }), request timeout ${REQUEST_TIMEOUT} ms:`,
  new Agent({ allowH2: true, connect }),
)

const dispatcher = createDispatcher({
  readIdleTimeout: READ_IDLE,
  pingTimeout: PING_TIMEOUT,
  connect,
})
const registry = new Registry()
const stopMetrics = registerPrometheus(dispatcher.tracker, { registry })
let scrape = ''
const closes = []
dispatcher.tracker.on('close', (rec) => {
  closes.push({ rec, at: performance.now() })
  console.log(
    `  connection #${rec.id} to ${rec.origin} closed: ${rec.closeReason} ` +
      `(state ${rec.stateAtClose}, ${rec.requests} request(s), ${rec.pingsSent} PING(s) sent, ` +
      `lived ${fmt(rec.duration)})`,
  )
})
const guarded = await scenario(
  `connguard createDispatcher({ readIdleTimeout: ${READ_IDLE}, pingTimeout: ${PING_TIMEOUT} }):`,
  dispatcher,
  async () => {
    // The client metrics, scraped while the new connection is pooled: no bucket lines.
    scrape = (await registry.metrics())
      .split('\n')
      .filter((line) => line.startsWith('connguard_http_client') && !line.includes('_bucket'))
      .join('\n')
  },
)
stopMetrics()
const dead = closes.find(({ rec }) => rec.closeReason === 'ping_timeout')

const plainStuck = plain.later.every((r) => !r.ok) && plain.connections === 1
const recovered =
  guarded.later.every((r) => r.ok) && guarded.connections === 2 && dead !== undefined
console.log(
  `\nwithout connguard: ${plain.later.filter((r) => !r.ok).length} of ${plain.later.length} requests ` +
    `after the route died timed out (${REQUEST_TIMEOUT} ms each), on the same dead connection`,
)
if (dead !== undefined) {
  console.log(
    `with connguard: the dead connection was closed (ping_timeout) ` +
      `${fmt(dead.at - guarded.diedAt)} after the route died, with no request in flight ` +
      `(readIdleTimeout ${READ_IDLE} + pingTimeout ${PING_TIMEOUT} ms); ` +
      `requests ${guarded.later.every((r) => r.ok) ? 'succeeded' : 'FAILED'} on a new connection`,
  )
}
console.log(
  `\nPrometheus scrape after the recovery (registerPrometheus(dispatcher.tracker)):\n${scrape}`,
)
const metricsShown =
  /connguard_http_client_open_connections\{state="idle",[^}]*\} 1/.test(scrape) &&
  /connguard_http_client_connection_duration_seconds_count\{reason="ping_timeout",[^}]*\} 1/.test(
    scrape,
  )
if (smoke) {
  const ok = plainStuck && recovered && metricsShown
  console.log(ok ? 'OK: connguard recovered, plain undici did not' : 'FAILED')
  process.exit(ok ? 0 : 1)
}
