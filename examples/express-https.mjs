#!/usr/bin/env node
/**
 * A guarded Express 5 HTTPS server: connguard's default deadlines, an optional absolute request
 * limit switched off for one upload route, and one log line per closed connection.
 *
 *   node examples/express-https.mjs            serve on $HOST:$PORT (default 127.0.0.1, a free port)
 *   node examples/express-https.mjs --smoke    start, POST /upload to itself once, print the status, exit
 *                                              (or SMOKE=1)
 *
 * TLS_CERT / TLS_KEY name PEM files; without them it uses the repository's throwaway
 * self-signed test certificate (test/fixtures), which is for trying this out only.
 */
import { once } from 'node:events'
import { readFileSync } from 'node:fs'
import https from 'node:https'
import { connguard } from '@connguard/express'
import express from 'express'

const smoke = process.argv.includes('--smoke') || process.env.SMOKE === '1'
const fixtures = new URL('../test/fixtures/', import.meta.url)
const cert = readFileSync(process.env.TLS_CERT ?? new URL('cert.pem', fixtures))
const key = readFileSync(process.env.TLS_KEY ?? new URL('key.pem', fixtures))

const guard = connguard({
  // The defaults, spelled out: 10 s to finish TLS, 30 s for a request head, 72 s idle keep-alive.
  handshakeTimeout: 10_000,
  headersTimeout: 30_000,
  keepAliveTimeout: 72_000,
  // Off by default; set here so the upload route below has something to switch off.
  requestTimeout: 120_000,
})

// One line per connection, with the reason it ended (tls_handshake_timeout, keep_alive_timeout, …).
guard.tracker.on('close', (rec) => {
  console.log(
    `connection #${rec.id} ${rec.remoteAddress}:${rec.remotePort} closed: ${rec.closeReason} ` +
      `(state ${rec.stateAtClose}, ${rec.requests} request(s), ${Math.round(rec.duration)} ms, ` +
      `${rec.bytesRead} B in / ${rec.bytesWritten} B out)`,
  )
})

const app = express()
app.use(guard)

app.get('/', (_req, res) => {
  res.json({ hello: 'world' })
})

// A large upload may take longer than requestTimeout; the phase deadlines still apply to it.
// The body is streamed and counted, not buffered.
app.post('/upload', guard.route({ requestTimeout: false }), (req, res, next) => {
  let received = 0
  req.on('data', (chunk) => {
    received += chunk.length
  })
  req.on('end', () => res.json({ received }))
  req.on('error', next)
})

// Attach right after creating the server, before it accepts: every connection is guarded.
const server = guard.attach(https.createServer({ key, cert }, app))
server.listen(Number(process.env.PORT ?? 0), process.env.HOST ?? '127.0.0.1')
await once(server, 'listening')
const { port } = server.address()
console.log(`listening on https://${process.env.HOST ?? '127.0.0.1'}:${port}`)

function shutdown() {
  guard.tracker.close()
  server.close()
  server.closeAllConnections()
}

if (smoke) {
  const closed = once(guard.tracker, 'close')
  const body = Buffer.alloc(64 * 1024, 0x61)
  const res = await new Promise((resolve, reject) => {
    const req = https.request(
      {
        host: '127.0.0.1',
        port,
        path: '/upload',
        method: 'POST',
        ca: cert,
        servername: 'localhost',
        agent: false, // one connection, closed after the response
        headers: { 'content-type': 'application/octet-stream', 'content-length': body.length },
      },
      (response) => {
        let text = ''
        response.setEncoding('utf8')
        response.on('data', (chunk) => {
          text += chunk
        })
        response.on('end', () => resolve({ status: response.statusCode, text }))
      },
    )
    req.on('error', reject)
    req.end(body)
  })
  console.log(`POST /upload → ${res.status} ${res.text}`)
  await Promise.race([closed, new Promise((resolve) => setTimeout(resolve, 2000).unref())])
  shutdown()
  process.exitCode = res.status === 200 ? 0 : 1
} else {
  for (const signal of ['SIGINT', 'SIGTERM']) {
    process.once(signal, async () => {
      console.log(`${signal}: draining`)
      // Closes the server, then every connection without losing a request (docs/deploy.md).
      const { closedIdle, finished, forced } = await guard.drain({ timeout: 10_000 })
      console.log(`drained: ${closedIdle} idle, ${finished} finished, ${forced} forced`)
      guard.tracker.close()
    })
  }
}
