#!/usr/bin/env node
/**
 * Observability (Fastify, plain HTTP): a structured log line per closed connection through
 * `app.log`, and the live connections view at /_connguard, behind HTTP Basic authentication.
 *
 * - `closeLog: true`   one pino line per closed connection: reason, state at close, phase
 *                      timings (Th/Tf/Ti/Ta/Tt) and bytes; cuts at info, peer closes at debug.
 * - `liveView`         GET /_connguard (a page that updates every second) and
 *                      GET /_connguard/json. Off unless configured; it shows client addresses,
 *                      so it sits behind the onRequest hook below (user `admin`, password
 *                      $CONNGUARD_PASSWORD, or a random one printed at start).
 *
 *   node examples/live-view.mjs            serve on $HOST:$PORT (default 127.0.0.1, a free port)
 *   node examples/live-view.mjs --smoke    start, open a keep-alive connection, fetch the JSON,
 *                                          print the counts, shut down (draining), exit 0
 */
import { randomBytes, timingSafeEqual } from 'node:crypto'
import net from 'node:net'
import { connguard } from '@connguard/fastify'
import Fastify from 'fastify'

const smoke = process.argv.includes('--smoke') || process.env.SMOKE === '1'
const password = process.env.CONNGUARD_PASSWORD ?? randomBytes(12).toString('base64url')
const expected = Buffer.from(`Basic ${Buffer.from(`admin:${password}`).toString('base64')}`)
const VIEW = '/_connguard'

const app = Fastify({ logger: { level: process.env.LOG_LEVEL ?? 'info' } })

await app.register(connguard, {
  keepAliveTimeout: 30_000,
  closeLog: true, // or { levels: { client_closed: 'info' } } to see every close at info
  liveView: { path: VIEW, recentCloses: 200 },
})

// The live view lists client addresses and traffic: operators only.
app.addHook('onRequest', async (request, reply) => {
  if (request.url !== VIEW && !request.url.startsWith(`${VIEW}/`)) return
  const given = Buffer.from(request.headers.authorization ?? '')
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
    reply.header('www-authenticate', 'Basic realm="connguard", charset="UTF-8"')
    await reply.code(401).send({ error: 'authentication required' })
  }
})

app.get('/', async () => 'hello\n')

await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) })
const { port } = app.server.address()
console.log(`live view: http://127.0.0.1:${port}${VIEW}  (user admin, password ${password})`)

if (smoke) {
  // A keep-alive client that makes one request and stays connected, idle.
  const client = net.connect({ host: '127.0.0.1', port })
  await new Promise((resolve, reject) => {
    client.once('error', reject)
    client.once('data', resolve)
    client.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
  })
  const res = await fetch(`http://127.0.0.1:${port}${VIEW}/json`, {
    headers: { authorization: expected.toString() },
  })
  console.log(`GET ${VIEW}/json → ${res.status}`)
  const data = await res.json()
  const { total, idle, active } = data.snapshot
  const mine = data.connections.find((c) => c.remotePort === client.localPort)
  console.log(`live connections: total ${total}, idle ${idle}, active ${active}`)
  console.log(
    `the keep-alive client: #${mine?.id} ${mine?.state}, ${mine?.deadline?.kind} in ${mine?.deadline?.msLeft} ms`,
  )
  const denied = await fetch(`http://127.0.0.1:${port}${VIEW}/json`)
  console.log(`without credentials → ${denied.status}`)
  // app.close() drains: the idle client is closed with app_shutdown, logged at info.
  await app.close()
  client.destroy()
  process.exit(res.status === 200 && mine?.state === 'idle' && denied.status === 401 ? 0 : 1)
}
