#!/usr/bin/env node
/**
 * Graceful drain under keep-alive load: how many requests fail on connections the client
 * already had open, and how long the shutdown takes, for Node, Fastify and Express alone and
 * with connguard. A refused *new* connection (ECONNREFUSED once the listening socket is
 * closed) is not counted: a load balancer sends it elsewhere. A 503 is an answer, counted
 * apart.
 *
 *   node bench/drain.mjs [--drains 5] [--loops 32] [--connections 16] [--load-ms 1000]
 *                        [--limit-ms 5000] [--only name,name] [--h2] [--undici-h2] [--undici8]
 *                        [--idle-grace ms]
 *
 * Each drain: a fresh server on 127.0.0.1 (a 1 ms handler), `loops` client loops sending
 * undici `request`s over a pool of `connections` keep-alive connections, the shutdown after
 * `load-ms`, the loops stopping once the shutdown is over or after `limit-ms`.
 * HTTP/2 over TLS (`--h2`): Node's http2 client, `connections` sessions, a session that got
 * GOAWAY replaced by a new one. `--undici-h2` uses undici (`allowH2`) instead: undici 7 fails
 * the request at the head of its queue on any GOAWAY, whatever its last stream id; `--undici8`
 * takes undici 8. `--idle-grace` sets the plugin's `drainIdleGrace`.
 *
 * HTTP/2 with Node's client also prints an audit: the streams the server opened against the
 * responses the client got, the sessions on which the server received the client's own GOAWAY,
 * and each REFUSED_STREAM by what its session had received and whether the server ever saw
 * that stream id.
 */
import http from 'node:http'
import http2 from 'node:http2'
import { performance } from 'node:perf_hooks'
import { fmt, machine, parseArgs, sleep, table, tlsOptions } from './lib/common.mjs'

const args = parseArgs()
const DRAINS = Number(args.drains ?? 5)
const LOOPS = Number(args.loops ?? 32)
const CONNECTIONS = Number(args.connections ?? 16)
const LOAD_MS = Number(args['load-ms'] ?? 1000)
/** A shutdown still running after this long is reported as such (and left to finish). */
const DRAIN_LIMIT_MS = Number(args['limit-ms'] ?? 5_000)

// `--undici8`: undici 8 (Node 22.19+) instead of 7, for the HTTP/1.1 rows and `--undici-h2`.
const { Pool } = await import(args.undici8 === true ? 'undici8' : 'undici')
const Fastify = (await import('fastify')).default
const express = (await import('express')).default
const { connguard: fastifyGuard } = await import('@connguard/fastify')
const { connguard: expressGuard } = await import('@connguard/express')

const handlerDelay = () => new Promise((resolve) => setTimeout(resolve, 1))

/** Fastify hello world on 127.0.0.1: HTTP/1.1, or HTTP/2 over TLS; with the plugin or bare. */
async function fastifyServer({ h2, guarded }) {
  const app = h2 ? Fastify({ http2: true, https: tlsOptions }) : Fastify()
  if (guarded) await app.register(fastifyGuard, guardOptions)
  app.get('/', async () => {
    audit.handled++
    await handlerDelay()
    return 'ok'
  })
  if (h2) auditServerStreams(app.server)
  await app.listen({ port: 0, host: '127.0.0.1' })
  const url = `${h2 ? 'https' : 'http'}://127.0.0.1:${app.server.address().port}`
  return h2 ? { url, shutdown: () => app.close(), h2: true } : { url, shutdown: () => app.close() }
}

/** `--idle-grace ms`: the plugin's `drainIdleGrace` (default: the plugin's). */
const guardOptions =
  args['idle-grace'] !== undefined ? { drainIdleGrace: Number(args['idle-grace']) } : {}

/**
 * HTTP/2 audit, per variant: what the server saw against what the client saw. The server
 * counts the streams it opened and the highest stream id per session (by the client's port);
 * the client classifies each REFUSED_STREAM by the GOAWAYs its session had received by then,
 * and checks whether the server ever saw that stream id.
 */
const audit = newAudit()
function newAudit() {
  return {
    handled: 0,
    serverStreams: 0,
    sessions: 0,
    /** sessions on which the server received the client's own GOAWAY (Node's client sends one from its close()) */
    clientGoaways: 0,
    /** client port → highest stream id the server opened on that session */
    maxIdByPort: new Map(),
    refused: [],
  }
}
function auditServerStreams(server) {
  server.on('session', (session) => {
    audit.sessions++
    session.once('goaway', () => audit.clientGoaways++)
  })
  server.on('stream', (stream) => {
    audit.serverStreams++
    const port = stream.session?.socket?.remotePort
    if (port !== undefined && stream.id > (audit.maxIdByPort.get(port) ?? 0))
      audit.maxIdByPort.set(port, stream.id)
  })
}

/** Each variant: `start()` → `{ url, shutdown(): Promise<void>, h2 }`. */
const VARIANTS = {
  node: async () => {
    const server = http.createServer((_req, res) => {
      handlerDelay().then(() => res.end('ok'))
    })
    const url = await listen(server)
    // Node 19+: close() also closes idle connections (closeIdleConnections).
    return { url, shutdown: () => new Promise((resolve) => server.close(() => resolve())) }
  },
  fastify: () => fastifyServer({ h2: false, guarded: false }),
  express: async () => {
    const app = express()
    app.get('/', (_req, res) => {
      handlerDelay().then(() => res.send('ok'))
    })
    const server = http.createServer(app)
    const url = await listen(server)
    return { url, shutdown: () => new Promise((resolve) => server.close(() => resolve())) }
  },
  'fastify+connguard': () => fastifyServer({ h2: false, guarded: true }),
  'express+connguard': async () => {
    const app = express()
    const guard = expressGuard()
    app.use(guard)
    app.get('/', (_req, res) => {
      handlerDelay().then(() => res.send('ok'))
    })
    const server = guard.attach(http.createServer(app))
    const url = await listen(server)
    return {
      url,
      shutdown: async () => {
        await guard.drain()
        guard.tracker.close()
      },
    }
  },
  'fastify-h2': () => fastifyServer({ h2: true, guarded: false }),
  'fastify-h2+connguard': () => fastifyServer({ h2: true, guarded: true }),
}

function listen(server) {
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(`http://127.0.0.1:${server.address().port}`))
  })
}

/** Node's http2 client, as a pool of `CONNECTIONS` sessions: `request()` → status. */
function nodeH2Pool(url) {
  const sessions = []
  const session = (i) => {
    let s = sessions[i]
    if (s === undefined || s.closed || s.destroyed) {
      s = http2.connect(url, { rejectUnauthorized: false })
      s.on('error', () => {})
      s.goaways = []
      s.on('goaway', (_code, lastStreamId) => s.goaways.push(lastStreamId))
      s.once('connect', () => {
        s.connected = true
        s.port = s.socket?.localPort
      })
      sessions[i] = s
    }
    return s
  }
  let next = 0
  return {
    request: () =>
      new Promise((resolve, reject) => {
        const s = session(next++ % CONNECTIONS)
        let req
        try {
          req = s.request({ ':path': '/' })
        } catch (err) {
          // A session that got GOAWAY refuses new streams: nothing was sent.
          reject(Object.assign(err, { code: 'ECONNREFUSED' }))
          return
        }
        let status = 0
        req.on('response', (h) => {
          status = Number(h[':status'])
        })
        req.on('error', (err) => {
          if (String(err.message).includes('REFUSED_STREAM'))
            audit.refused.push({ id: req.id, port: s.port, goaways: [...s.goaways] })
          // A session that never connected (the listening socket closed, or a connection
          // still in its backlog reset as it closed) is a new connection refused.
          if (s.connected !== true) err.code = 'ECONNREFUSED'
          reject(err)
        })
        req.resume()
        req.on('end', () => resolve({ statusCode: status, body: { text: async () => '' } }))
      }),
    destroy: async () => {
      for (const s of sessions) s?.destroy()
    },
  }
}

/** One drain under load: failures by code, 503s, drain duration. */
async function oneDrain(start) {
  const { url, shutdown, h2 = false } = await start()
  audit.maxIdByPort = new Map()
  const pool =
    h2 && args['undici-h2'] !== true
      ? nodeH2Pool(url)
      : new Pool(url, {
          connections: CONNECTIONS,
          pipelining: 1,
          ...(h2 ? { allowH2: true, connect: { rejectUnauthorized: false } } : {}),
        })
  const failures = {}
  let ok = 0
  let unavailable = 0
  let stop = false
  const loop = async () => {
    while (!stop) {
      try {
        const { statusCode, body } = await pool.request({ path: '/', method: 'GET' })
        await body.text()
        if (statusCode === 503) unavailable++
        else ok++
      } catch (err) {
        const code = (err.code ?? err.name) + (process.env.DRAIN_DEBUG ? ` ${err.message}` : '')
        // The listening socket is closed: a new connection refused, not a request lost.
        if (code === 'ECONNREFUSED') {
          await sleep(5)
          continue
        }
        failures[code] = (failures[code] ?? 0) + 1
      }
    }
  }
  const loops = Array.from({ length: LOOPS }, loop)
  await sleep(LOAD_MS)
  const t0 = performance.now()
  let timedOut = false
  const shut = shutdown()
  await Promise.race([
    shut,
    sleep(DRAIN_LIMIT_MS).then(() => {
      timedOut = true
    }),
  ])
  const duration = performance.now() - t0
  stop = true
  await Promise.all(loops)
  await pool.destroy()
  // A server that never finished its shutdown while the load ran does once it stops.
  if (timedOut) await Promise.race([shut, sleep(DRAIN_LIMIT_MS)])
  return { failures, ok, unavailable, duration, timedOut }
}

async function main() {
  const only = typeof args.only === 'string' ? args.only.split(',') : null
  const names = Object.keys(VARIANTS).filter(
    (n) =>
      (only === null || only.includes(n)) &&
      (args.h2 === true || only !== null || !n.includes('h2')),
  )
  console.log(
    `## drain: ${DRAINS} drains each, ${LOOPS} loops over ${CONNECTIONS} keep-alive connections, ` +
      `shutdown after ${LOAD_MS} ms of load\n\n${machine()}\n`,
  )
  const rows = []
  const audits = []
  for (const name of names) {
    const all = {}
    let ok = 0
    let unavailable = 0
    const durations = []
    const refusedKinds = {}
    let timeouts = 0
    Object.assign(audit, newAudit())
    for (let i = 0; i < DRAINS; i++) {
      const r = await oneDrain(VARIANTS[name])
      for (const [code, n] of Object.entries(r.failures)) all[code] = (all[code] ?? 0) + n
      ok += r.ok
      unavailable += r.unavailable
      durations.push(r.duration)
      if (r.timedOut) timeouts++
      for (const f of audit.refused.splice(0)) {
        const seen = f.id !== undefined && f.id <= (audit.maxIdByPort.get(f.port) ?? 0)
        const afterFirstOnly = f.goaways.length === 1 && f.goaways[0] === 2 ** 31 - 1
        const k = seen
          ? 'id seen by the server'
          : afterFirstOnly
            ? 'with GOAWAY(2^31-1) only received'
            : f.goaways.length === 2 && f.goaways[1] < f.id
              ? 'at the final GOAWAY (last id < stream id)'
              : f.goaways.length === 1 && f.goaways[0] < f.id
                ? 'at a one-step GOAWAY (last id < stream id)'
                : `after GOAWAYs [${f.goaways.join(',')}]`
        refusedKinds[k] = (refusedKinds[k] ?? 0) + 1
      }
    }
    if (name.includes('h2') && args['undici-h2'] !== true) {
      audits.push([
        name,
        audit.serverStreams,
        audit.handled,
        `${audit.clientGoaways} / ${audit.sessions}`,
        ok + unavailable,
        Object.entries(refusedKinds)
          .map(([k, n]) => `${k}: ${n}`)
          .join(', ') || '–',
      ])
    }
    const failed = Object.values(all).reduce((a, b) => a + b, 0)
    const codes = Object.entries(all)
      .map(([c, n]) => `${c} ${n}`)
      .join(', ')
    durations.sort((a, b) => a - b)
    rows.push([
      name,
      failed,
      codes || '–',
      unavailable,
      ok,
      `${fmt(durations[Math.floor(durations.length / 2)], 0)} (${fmt(durations[0], 0)}–${fmt(durations.at(-1), 0)})`,
      timeouts,
    ])
  }
  table(
    [
      'server',
      'failed on open connections',
      'by code',
      '503',
      '200',
      'drain ms, median (min–max)',
      `shutdowns still running at ${DRAIN_LIMIT_MS / 1000} s`,
    ],
    rows,
  )
  if (audits.length > 0) {
    console.log(
      '\nHTTP/2 audit (Node client): streams the server opened against responses the client got, and each REFUSED_STREAM by what its session had received\n',
    )
    table(
      [
        'server',
        'streams opened by the server',
        'requests handled',
        "sessions that got the client's GOAWAY",
        'responses at the client (200 + 503)',
        'REFUSED_STREAM',
      ],
      audits,
    )
  }
  // Loops may leave sockets the pools already destroyed; nothing else holds the process.
  process.exit(0)
}

await main()
