/**
 * Plain and TLS servers with 500 ms deadlines, for the accuracy benchmark.
 *
 *   node deadline-server.mjs guarded <sweepInterval>      connguard enforces the deadlines
 *   node deadline-server.mjs node <checkingInterval>      Node's own timers
 *
 * Sends `{ type: 'ready', http, https }` (ports).
 */
import http from 'node:http'
import https from 'node:https'
import { HOST, serveParent, tlsOptions } from './common.mjs'

const DEADLINE = 500
const [mode, intervalArg] = process.argv.slice(2)
const interval = Number(intervalArg)

const handler = (_req, res) => {
  res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 })
  res.end('ok')
}

let plain
let secure
if (mode === 'guarded') {
  plain = http.createServer(handler)
  secure = https.createServer(tlsOptions, handler)
  const { ConnectionTracker } = await import('@connguard/core')
  const tracker = new ConnectionTracker({
    headersTimeout: DEADLINE,
    keepAliveTimeout: DEADLINE,
    handshakeTimeout: DEADLINE,
    sweepInterval: interval,
  })
  tracker.attach(plain).attach(secure)
} else {
  plain = http.createServer(
    {
      headersTimeout: DEADLINE,
      keepAliveTimeout: DEADLINE,
      connectionsCheckingInterval: interval,
    },
    handler,
  )
  secure = https.createServer({ ...tlsOptions, handshakeTimeout: DEADLINE }, handler)
}
await new Promise((resolve) => plain.listen({ host: HOST, port: 0, backlog: 1024 }, resolve))
await new Promise((resolve) => secure.listen({ host: HOST, port: 0, backlog: 1024 }, resolve))
serveParent({})
process.send({ type: 'ready', http: plain.address().port, https: secure.address().port })
