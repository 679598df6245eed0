#!/usr/bin/env node
/**
 * Uploads and server-sent events under connguard's data rates (Fastify, plain HTTP).
 *
 * - POST /upload        keeps the default minimum body rate (240 B/s after 5 s): a healthy
 *                       upload of any length and duration passes, a 10-bytes-a-second drip is cut.
 * - POST /upload/field  for devices on very slow links: no body rate on this route.
 * - GET  /events        an SSE stream: the client reads at its own pace, so no response rate,
 *                       and no absolute request limit. Time between events never counts anyway.
 *
 *   node examples/uploads-sse.mjs            serve on $HOST:$PORT (default 127.0.0.1, a free port)
 *   node examples/uploads-sse.mjs --smoke    start, upload 1 MB to itself, read 3 events, exit
 */
import { once } from 'node:events'
import http from 'node:http'
import { connguard } from '@connguard/fastify'
import Fastify from 'fastify'

const smoke = process.argv.includes('--smoke') || process.env.SMOKE === '1'
const app = Fastify()

await app.register(connguard, {
  minBodyRate: { bytesPerSecond: 240, graceMs: 5_000 }, // the default, spelled out
  minResponseRate: { bytesPerSecond: 240, graceMs: 30_000 }, // the default
  requestTimeout: 60_000, // an absolute limit for ordinary routes; lifted on /events
})

app.connguard.on('close', (rec) => {
  console.log(
    `connection #${rec.id} closed: ${rec.closeReason} after ${Math.round(rec.duration)} ms`,
  )
})

// Count the body as it streams in; never buffer an upload whole.
app.addContentTypeParser('application/octet-stream', (_request, payload, done) => {
  let received = 0
  payload.on('data', (chunk) => {
    received += chunk.length
  })
  payload.on('end', () => done(null, received))
  payload.on('error', done)
})

const upload = async (request) => ({ received: request.body })
app.post('/upload', upload)
app.post('/upload/field', { config: { connguard: { minBodyRate: false } } }, upload)

app.get(
  '/events',
  { config: { connguard: { minResponseRate: false, requestTimeout: false } } },
  (request, reply) => {
    reply.hijack()
    const res = reply.raw
    res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache' })
    let n = 0
    const timer = setInterval(() => res.write(`id: ${++n}\ndata: tick ${n}\n\n`), 1_000)
    request.raw.on('close', () => clearInterval(timer))
  },
)

await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) })
const { port } = app.server.address()
console.log(
  `listening on http://127.0.0.1:${port}  (POST /upload, POST /upload/field, GET /events)`,
)

if (smoke) {
  const agent = new http.Agent({ keepAlive: false })
  // 1 MB in 64 KiB chunks: a healthy upload.
  const req = http.request({
    port,
    host: '127.0.0.1',
    method: 'POST',
    path: '/upload',
    agent,
    headers: { 'content-type': 'application/octet-stream', 'content-length': 1_048_576 },
  })
  for (let i = 0; i < 16; i++) req.write(Buffer.alloc(65_536))
  req.end()
  const [res] = await once(req, 'response')
  let body = ''
  for await (const chunk of res) body += chunk
  console.log(`POST /upload → ${res.statusCode} ${body}`)
  // Three events, then hang up.
  const events = http.get({ port, host: '127.0.0.1', path: '/events', agent })
  const [stream] = await once(events, 'response')
  let seen = 0
  for await (const chunk of stream) {
    seen += String(chunk)
      .split('\n\n')
      .filter((e) => e.startsWith('id:')).length
    if (seen >= 3) break
  }
  console.log(`GET /events → ${stream.statusCode}, ${seen} events`)
  await app.close()
  process.exit(res.statusCode === 200 && seen >= 3 ? 0 : 1)
}
