/**
 * A hello-world server in its own process, so the load generator never shares its event loop.
 *
 *   node hello-server.mjs <fastify|express|node> <http|https> <bare|guarded>
 *
 * Sends `{ type: 'ready', port }` over IPC; answers `mark` (start counting CPU) and `measure`
 * (CPU used since the mark, wall time, event-loop utilization). Nothing else is added to the
 * server (no counting listener): requests are counted by the client.
 */
import http from 'node:http'
import https from 'node:https'
import { performance } from 'node:perf_hooks'
import { HOST, serveParent, tlsOptions } from './common.mjs'

const [framework, protocol, variant] = process.argv.slice(2)
const secure = protocol === 'https'
const guarded = variant === 'guarded'
const body = { hello: 'world' }

let server
if (framework === 'fastify') {
  const { default: Fastify } = await import('fastify')
  const app = Fastify({ logger: false, ...(secure ? { https: tlsOptions } : {}) })
  if (guarded) {
    const { connguard } = await import('@connguard/fastify')
    await app.register(connguard)
  }
  app.get('/', async () => body)
  await app.listen({ host: HOST, port: 0 })
  server = app.server
} else if (framework === 'express') {
  const { default: express } = await import('express')
  const app = express()
  app.disable('x-powered-by')
  let guard = null
  if (guarded) {
    const { connguard } = await import('@connguard/express')
    guard = connguard()
    app.use(guard)
  }
  app.get('/', (_req, res) => {
    res.json(body)
  })
  server = secure ? https.createServer(tlsOptions, app) : http.createServer(app)
  guard?.attach(server)
  await new Promise((resolve) => server.listen(0, HOST, resolve))
} else {
  // Plain node:http / node:https: the smallest possible handler.
  const payload = JSON.stringify(body)
  const handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': payload.length })
    res.end(payload)
  }
  server = secure ? https.createServer(tlsOptions, handler) : http.createServer(handler)
  if (guarded) {
    const { ConnectionTracker } = await import('@connguard/core')
    new ConnectionTracker().attach(server)
  }
  await new Promise((resolve) => server.listen(0, HOST, resolve))
}
// Same idle limit for both (Fastify's default; the guard sets its own 72 s): a bare Express
// server would otherwise use Node's 5 s, which does not matter under load but keeps them equal.
if (!guarded) server.keepAliveTimeout = 72_000

let mark = null
serveParent({
  mark: () => {
    mark = {
      cpu: process.cpuUsage(),
      t: performance.now(),
      elu: performance.eventLoopUtilization(),
    }
    return {}
  },
  measure: () => {
    const cpu = process.cpuUsage(mark.cpu)
    return {
      cpuMs: (cpu.user + cpu.system) / 1000,
      wallMs: performance.now() - mark.t,
      elu: performance.eventLoopUtilization(mark.elu).utilization,
    }
  },
})
process.send({ type: 'ready', port: server.address().port })
