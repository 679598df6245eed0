/**
 * A server that keeps idle keep-alive connections, for the memory benchmark. Run with
 * --expose-gc.
 *
 *   node --expose-gc idle-server.mjs <bare|guarded> <node|fastify> <http|https>
 *
 * Answers `measure` with process.memoryUsage() after full GCs, the live connection count
 * and, when guarded, the tracker's snapshot; `snapshot` writes a heap snapshot to `path`.
 */
import http from 'node:http'
import https from 'node:https'
import v8 from 'node:v8'
import { fullGc, HOST, serveParent, tlsOptions } from './common.mjs'

const [variant, framework, protocol] = process.argv.slice(2)
const secure = protocol === 'https'
const KEEP_ALIVE = 600_000 // 10 min: nothing closes during the measurement

let server
let tracker = null
if (framework === 'fastify') {
  const { default: Fastify } = await import('fastify')
  const app = Fastify({
    logger: false,
    keepAliveTimeout: KEEP_ALIVE,
    ...(secure ? { https: tlsOptions } : {}),
  })
  if (variant === 'guarded') {
    const { connguard } = await import('@connguard/fastify')
    await app.register(connguard, { keepAliveTimeout: KEEP_ALIVE })
    tracker = app.connguard
  }
  app.get('/', async () => ({ hello: 'world' }))
  await app.listen({ host: HOST, port: 0, backlog: 4096 })
  server = app.server
} else {
  const handler = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 })
    res.end('ok')
  }
  server = secure ? https.createServer(tlsOptions, handler) : http.createServer(handler)
  server.keepAliveTimeout = KEEP_ALIVE
  if (variant === 'guarded') {
    const { ConnectionTracker } = await import('@connguard/core')
    tracker = new ConnectionTracker({ keepAliveTimeout: KEEP_ALIVE }).attach(server)
  }
  await new Promise((resolve) => server.listen({ host: HOST, port: 0, backlog: 4096 }, resolve))
}

serveParent({
  measure: async () => {
    // The snapshot first: it settles what the sweep settles within one interval (a request's
    // end, found on its response: until then the record holds that response and its request),
    // so the figure is an idle connection's, not one a loaded machine's late sweep left
    // holding its last response (measured under load: 279–360 B with the snapshot first, 512–538 B without).
    const snap = tracker?.snapshot()
    await fullGc()
    const m = process.memoryUsage()
    const connections = await new Promise((resolve) =>
      server.getConnections((_err, n) => resolve(n)),
    )
    return {
      heapUsed: m.heapUsed,
      external: m.external + m.arrayBuffers,
      rss: m.rss,
      connections,
      tracked: snap === undefined ? null : snap.total,
      idle: snap === undefined ? null : snap.idle,
    }
  },
  snapshot: async ({ path }) => {
    await fullGc()
    v8.writeHeapSnapshot(path)
    return {}
  },
})
process.send({ type: 'ready', port: server.address().port })
