/**
 * The churned server: a plain and a TLS `node:http(s)` server on 127.0.0.1, both guarded by
 * one ConnectionTracker, answering `ok`. Started by bench/churn.mjs with `--expose-gc`.
 *
 *   node --expose-gc churn-server.mjs '<tracker options json>' [--simulate-leak]
 *
 * `--simulate-leak` keeps every closed record (what a record the tracker forgot to drop would
 * cost), to show that the benchmark's verdict catches a leak.
 *
 * Sends `{ type: 'ready', port, tlsPort }`, then answers `measure`: waits until no
 * connection is left (tracker and Node agree), runs full GCs, and reports heap, RSS, active
 * resources by type, the tracker's live records, the servers' listener counts, and every
 * open and close the tracker reported.
 */
import http from 'node:http'
import https from 'node:https'
import { ConnectionTracker } from '@connguard/core'
import { activeResources, connectionsOf, HOST, listenerCounts, settle } from './churn.mjs'
import { fullGc, serveParent, tlsOptions } from './common.mjs'

const options = JSON.parse(process.argv[2] ?? '{}')
const simulateLeak = process.argv.includes('--simulate-leak')
const kept = []
const handler = (_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 })
  res.end('ok')
}
const plain = http.createServer(handler)
const secure = https.createServer(tlsOptions, handler)
const tracker = new ConnectionTracker(options).attach(plain).attach(secure)
let opened = 0
let closed = 0
tracker.on('open', () => {
  opened++
})
tracker.on('close', (rec) => {
  closed++
  if (simulateLeak) kept.push(rec)
})
await new Promise((resolve) => plain.listen({ host: HOST, port: 0, backlog: 4096 }, resolve))
await new Promise((resolve) => secure.listen({ host: HOST, port: 0, backlog: 4096 }, resolve))

serveParent({
  measure: async () => {
    const settled = await settle(
      async () =>
        tracker.snapshot().total === 0 &&
        (await connectionsOf(plain)) === 0 &&
        (await connectionsOf(secure)) === 0,
    )
    await fullGc()
    const m = process.memoryUsage()
    let listed = 0
    for (const _ of tracker.connections()) listed++
    return {
      settled,
      heapUsed: m.heapUsed,
      rss: m.rss,
      external: m.external,
      resources: activeResources(),
      records: tracker.snapshot().total,
      listed,
      connections: (await connectionsOf(plain)) + (await connectionsOf(secure)),
      listeners: { http: listenerCounts(plain), https: listenerCounts(secure) },
      opened,
      closed,
      closedByReason: tracker.snapshot().closedByReason,
    }
  },
})
process.send({ type: 'ready', port: plain.address().port, tlsPort: secure.address().port })
