/**
 * The scripted set of connections the exporter tests scrape: one tracker guarding a plain
 * HTTP and an HTTPS server on 127.0.0.1 with short deadlines and `maxConnections: 1`, and
 * one connection at a time (the cap would reject a second), each awaited until the server
 * has closed it, so the records, and so the metrics, are deterministic:
 *
 * | # | server | client                                           | close reason                          |
 * |---|--------|--------------------------------------------------|---------------------------------------|
 * | 1 | http   | 2 keep-alive GETs, then hangs up                 | client_closed                         |
 * | 2 | https  | 1 GET with `Connection: close`                   | client_closed (TLS 1.3)               |
 * | 3 | http   | 1 GET, then idle                                 | keep_alive_timeout                    |
 * | 4 | http   | slowloris: a header line every 50 ms             | request_headers_timeout               |
 * | 5 | https  | TCP connect, no ClientHello                      | tls_handshake_timeout                 |
 * | 6 | http   | a 2nd connection while #7 is held                | max_concurrent_connections_exceeded   |
 * | 7 | http   | silent, held while #6 is rejected, then hangs up | client_closed                         |
 */
import http from 'node:http'
import https from 'node:https'
import { type ConnectionRecord, ConnectionTracker } from '@connguard/core'
import { expect } from 'vitest'
import {
  getRequest,
  keepAliveRequests,
  openSocket,
  rawHttp,
  silentTcp,
  slowloris,
} from './clients.js'
import { type CloseWatcher, waitUntil, watchCloses } from './records.js'
import { closeServer, listen } from './server.js'
import { tlsOptions } from './tls.js'

/** Every deadline of the scenario, ms: short enough for a fast test, far above loopback times. */
export const DEADLINE = 300
export const SWEEP = 25

export interface MetricsServers {
  tracker: ConnectionTracker
  httpPort: number
  httpsPort: number
  watcher: CloseWatcher
  close(): Promise<void>
}

const hello: http.RequestListener = (_req, res) => {
  res.end('hello')
}

/** A tracker guarding one plain and one TLS server, both listening on 127.0.0.1. */
export async function startMetricsServers(
  options: ConstructorParameters<typeof ConnectionTracker>[0] = {},
): Promise<MetricsServers> {
  const tracker = new ConnectionTracker({
    handshakeTimeout: DEADLINE,
    headersTimeout: DEADLINE,
    keepAliveTimeout: DEADLINE,
    sweepInterval: SWEEP,
    maxConnections: 1,
    ...options,
  })
  const httpServer = http.createServer(hello)
  const httpsServer = https.createServer(tlsOptions, hello)
  tracker.attach(httpServer).attach(httpsServer)
  const httpPort = await listen(httpServer)
  const httpsPort = await listen(httpsServer)
  const watcher = watchCloses(tracker)
  return {
    tracker,
    httpPort,
    httpsPort,
    watcher,
    async close() {
      watcher.stop()
      tracker.close()
      await Promise.all([closeServer(httpServer), closeServer(httpsServer)])
    },
  }
}

export interface ScriptHooks {
  /** Called while connection #7 is held open (plain, silent: in state `new`) and #6 was rejected. */
  whileHeld?: () => Promise<void>
}

/** Runs the scripted connections in order; resolves with the 7 records, in the table's order. */
export async function runScriptedConnections(
  s: MetricsServers,
  hooks: ScriptHooks = {},
): Promise<ConnectionRecord[]> {
  const { httpPort, httpsPort, watcher } = s
  const records: ConnectionRecord[] = []
  const closed = async (): Promise<ConnectionRecord> => {
    const rec = await watcher.next()
    records.push(rec)
    return rec
  }

  const normal = await keepAliveRequests(httpPort, { count: 2 })
  expect(normal.statuses).toEqual([200, 200])
  await closed()

  // The server ends the connection after the response (the client asked): no TLS session
  // ticket left unread on a client-side hang-up, which the server would see as a reset.
  await rawHttp(httpsPort, getRequest('/', { Connection: 'close' }), { tls: true })
  await closed()

  await rawHttp(httpPort, getRequest('/'))
  await closed()

  await slowloris(httpPort, { intervalMs: 50 })
  await closed()

  await silentTcp(httpsPort)
  await closed()

  const held = await openSocket(httpPort)
  try {
    await waitUntil(() => s.tracker.snapshot().total === 1, { what: 'the held connection' })
    await silentTcp(httpPort)
    await closed()
    await hooks.whileHeld?.()
  } finally {
    held.destroy()
  }
  await closed()

  expect(
    records.map((r) => r.closeReason),
    'the scripted connections ended as scripted',
  ).toEqual([
    'client_closed',
    'client_closed',
    'keep_alive_timeout',
    'request_headers_timeout',
    'tls_handshake_timeout',
    'max_concurrent_connections_exceeded',
    'client_closed',
  ])
  return records
}
