#!/usr/bin/env node
/**
 * connguard demo: a guarded Fastify server on 127.0.0.1 speaking HTTP/2 and HTTPS/1.1 (a TLS
 * port), and nine scripted clients, good and bad, sent at it at the same time (two of them
 * HTTP/2: one healthy, one whose route silently dies mid-request and is found by PING). For
 * each client it shows when the server cut it, and the tracker's record of that connection:
 * why it ended, in which state, the handshake time, requests and wire bytes. Before and
 * after: the same nine clients are sent, at the same time, at the same Fastify server without
 * connguard (Fastify's defaults), and the table shows what that one still held open.
 * All times are from one start (+0.00 s), when every client sets off.
 *
 *   npx -y pnpm@10 demo          (builds the packages, then runs this file)
 *   node examples/demo.mjs       (once the packages are built)
 *
 * The deadlines are seconds here so the demo takes seconds; the library's defaults are
 * 10 s / 30 s / 72 s. The HTTP/1 clients use node:net and node:tls only, because an HTTP client
 * library would not let them stall in the middle of a handshake or a request head.
 * Exits 0 when every client ended as expected, 1 (with the reasons) when one did not.
 */
import { readFileSync } from 'node:fs'
import http2 from 'node:http2'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { setTimeout as sleep } from 'node:timers/promises'
import tls from 'node:tls'
import { stripVTControlCharacters } from 'node:util'
import { connguard } from '@connguard/fastify'
import { registerPrometheus } from '@connguard/prometheus'
import Fastify from 'fastify'
import { Registry } from 'prom-client'

// ---- settings ------------------------------------------------------------------------------

const HOST = '127.0.0.1'
/** Fastify's options for both servers: HTTP/2 over TLS, with HTTP/1.1 for clients that do not offer h2. */
/** Short on purpose, so the demo runs in seconds. */
const GUARD = {
  handshakeTimeout: 1000,
  headersTimeout: 1500,
  keepAliveTimeout: 2000,
  // HTTP/2: a PING after 600 ms without a byte from the peer, 600 ms for its ACK.
  pingInterval: 600,
  pingTimeout: 600,
  sweepInterval: 100,
}
/** The healthy upload: 60 KiB at 10 KiB/s, so it lasts 6 s, longer than every deadline above. */
const UPLOAD = { chunks: 60, chunkBytes: 1024, everyMs: 100 }
const SLOWLORIS_EVERY_MS = 300
const KEEP_ALIVE_REQUESTS = 3
const KEEP_ALIVE_PAUSE_MS = 300
/** A cut counts as on time from (deadline - EARLY) to (deadline + LATE): a busy machine is slow. */
const EARLY_MS = 50
const LATE_MS = 1000
/** A client gives up on its own after this long; the whole demo after WATCHDOG_MS. */
const CLIENT_LIFE_MS = 12_000
const WATCHDOG_MS = 20_000

// The repository's throwaway self-signed test certificate (CN=localhost, IP 127.0.0.1).
const fixtures = new URL('../test/fixtures/', import.meta.url)
const CERT = readFileSync(new URL('cert.pem', fixtures))
const KEY = readFileSync(new URL('key.pem', fixtures))

/**
 * The first 43 bytes of a 205-byte TLS record holding a ClientHello (record header, handshake
 * header, version, half of the random): the server has bytes, so the connection is
 * `handshaking`, but can never finish the handshake.
 */
const PARTIAL_CLIENT_HELLO = Buffer.concat([
  Buffer.from([0x16, 0x03, 0x01, 0x00, 0xc8]), // record: handshake, TLS 1.0 framing, 200 bytes follow
  Buffer.from([0x01, 0x00, 0x00, 0xc4]), // handshake: ClientHello, 196 bytes follow
  Buffer.from([0x03, 0x03]), // client version TLS 1.2
  Buffer.alloc(32, 0x5a), // "random"
])

// ---- output helpers ------------------------------------------------------------------------

const color = process.stdout.isTTY === true && !process.env.NO_COLOR
const paint = (code) => (text) => (color ? `\x1b[${code}m${text}\x1b[0m` : String(text))
const bold = paint('1')
const dim = paint('2')
const red = paint('31')
const green = paint('32')
const yellow = paint('33')
const cyan = paint('36')

const secs = (ms) => `${(ms / 1000).toFixed(2)} s`
const bytes = (n) => (n < 1024 ? `${n} B` : `${(n / 1024).toFixed(1).replace(/\.0$/, '')} KiB`)
const say = (line = '') => process.stdout.write(`${line}\n`)

// ---- the server ----------------------------------------------------------------------------

const watchdog = setTimeout(() => {
  say(red(`\nFAIL: the demo did not finish within ${WATCHDOG_MS / 1000} s`))
  process.exit(1)
}, WATCHDOG_MS)

/** The demo's routes, on both servers. */
function routes(app) {
  app.get('/', async () => ({ hello: 'world' }))
  // A long poll that never answers (the HTTP/2 dead-route client waits on it).
  app.get('/wait', () => new Promise(() => {}))
  // Counts the body as it streams in, without buffering it.
  app.addContentTypeParser('application/octet-stream', (_request, payload, done) => {
    let received = 0
    payload.on('data', (chunk) => {
      received += chunk.length
    })
    payload.on('end', () => done(null, received))
    payload.on('error', done)
  })
  app.post('/upload', async (request) => ({ received: request.body }))
}

// HTTP/2 over TLS, with HTTP/1.1 for clients that do not offer h2 (most of the ones below).
const FASTIFY = { http2: true, https: { key: KEY, cert: CERT, allowHTTP1: true } }
const app = Fastify(FASTIFY)
// The live connections page is opt-in (and belongs behind authentication in production).
await app.register(connguard, { ...GUARD, liveView: { path: '/_connguard' } })
// Prometheus metrics from the same records, on a registry of our own.
const registry = new Registry()
registerPrometheus(app.connguard, { registry })
routes(app)
await app.listen({ host: HOST, port: 0 })
const tracker = app.connguard

// The same server without connguard: Fastify's defaults, for the before/after column.
const bare = Fastify(FASTIFY)
routes(bare)
await bare.listen({ host: HOST, port: 0 })

/** Where a run's clients go: the guarded server (live log, checks) or the bare one. */
const guarded = { port: app.server.address().port, conns: [], quiet: false }
const unguarded = { port: bare.server.address().port, conns: [], quiet: true }
const { port } = guarded

// Every record the tracker closes, by the client's port, so each client finds its own.
const records = new Map()
/** Client name by local port, for the live log. */
const names = new Map()
/** Width of the client names in the live log (the longest is "healthy slow upload"). */
const NAME_WIDTH = 19
let t0 = performance.now()
/** Conns that learn of their end from the server's side (their route is dead). */
const serverWatched = new Map()
tracker.on('close', (rec) => {
  records.set(rec.remotePort, rec)
  serverWatched.get(rec.remotePort)?.()
  const name = names.get(rec.remotePort) ?? `port ${rec.remotePort}`
  const reason =
    rec.closeReason === 'client_closed' ? green(rec.closeReason) : yellow(rec.closeReason)
  say(
    `  ${dim(`+${secs(performance.now() - t0)}`)}  ${name.padEnd(NAME_WIDTH)} closed: ${reason} ${dim(`(was ${rec.stateAtClose})`)}`,
  )
})

say(bold('connguard demo') + dim(' — Fastify over HTTP/2 and HTTPS, guarded by @connguard/fastify'))
say(
  `server    https://${HOST}:${port}  ${dim('(a TLS port: HTTP/2 and HTTPS/1.1 only; self-signed test certificate from test/fixtures)')}`,
)
say(
  `before    https://${HOST}:${unguarded.port}  ${dim("(the same Fastify server without connguard: Fastify's defaults)")}`,
)
say(
  `deadlines handshakeTimeout ${GUARD.handshakeTimeout} ms, headersTimeout ${GUARD.headersTimeout} ms, ` +
    `keepAliveTimeout ${GUARD.keepAliveTimeout} ms, requestTimeout off,\n          ` +
    `pingInterval ${GUARD.pingInterval} ms, pingTimeout ${GUARD.pingTimeout} ms, sweepInterval ${GUARD.sweepInterval} ms`,
)
say(dim(`          (demo values; defaults are 10 s, 30 s, 72 s, off, 60 s, 20 s, 250 ms)`))
say(`live view https://${HOST}:${port}/_connguard  ${dim('(while the demo runs)')}`)
say()

// ---- the client harness --------------------------------------------------------------------

/**
 * Opens a connection (TLS or plain TCP) and watches it until it ends. `conn.closed` resolves
 * with the conn when the server ends it (or the client does, or gives up after CLIENT_LIFE_MS);
 * `conn.ready` resolves true once connected/established, false if it closed first.
 */
function open(name, { secure, target = guarded }) {
  const startedAt = performance.now()
  const socket = secure
    ? tls.connect({ host: HOST, port: target.port, ca: CERT, servername: 'localhost' })
    : net.connect({ host: HOST, port: target.port })
  const conn = {
    name,
    socket,
    startedAt,
    localPort: undefined,
    establishedAt: Number.NaN,
    received: Buffer.alloc(0),
    closedAt: Number.NaN,
    how: null,
    onData: null,
  }
  target.conns.push(conn)
  const notePort = () => {
    if (conn.localPort === undefined && socket.localPort !== undefined) {
      conn.localPort = socket.localPort
      if (target === guarded) names.set(conn.localPort, name)
    }
  }
  socket.on('connect', notePort)
  conn.closed = new Promise((resolve) => {
    const finish = (how) => {
      if (conn.how !== null) return
      conn.closedAt = performance.now()
      conn.how = how
      clearTimeout(life)
      socket.destroy()
      resolve(conn)
    }
    const life = setTimeout(() => finish('gave up'), CLIENT_LIFE_MS)
    // The demo ends a client the server still holds (the unguarded run).
    conn.stop = () => finish('still open')
    socket.on('data', (chunk) => {
      conn.received = Buffer.concat([conn.received, chunk])
      conn.onData?.()
    })
    socket.once('end', () => finish('end'))
    socket.once('error', () => finish('error')) // ECONNRESET: the server destroyed it
    socket.once('close', () => finish('close'))
  })
  conn.ready = new Promise((resolve) => {
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      notePort()
      conn.establishedAt = performance.now()
      resolve(true)
    })
    conn.closed.then(() => resolve(false))
  })
  return conn
}

/** Complete HTTP/1.1 responses in `buf` (Content-Length bodies; a missing one means 0). */
function parseResponses(buf) {
  const responses = []
  let offset = 0
  for (;;) {
    const headEnd = buf.indexOf('\r\n\r\n', offset)
    if (headEnd < 0) break
    const head = buf.subarray(offset, headEnd).toString('latin1')
    const length = Number(/\r\ncontent-length:\s*(\d+)/i.exec(head)?.[1] ?? 0)
    const end = headEnd + 4 + length
    if (buf.length < end) break
    responses.push({
      status: Number(/^HTTP\/1\.[01] (\d{3})/.exec(head)?.[1]),
      head,
      body: buf.subarray(headEnd + 4, end).toString(),
    })
    offset = end
  }
  return responses
}

/** Resolves with the first `count` responses, or with fewer if the connection ends first. */
function responses(conn, count) {
  return new Promise((resolve) => {
    const check = () => {
      const got = parseResponses(conn.received)
      if (got.length >= count || conn.how !== null) {
        conn.onData = null
        resolve(got)
      }
    }
    conn.onData = check
    conn.closed.then(check)
    check()
  })
}

/** The status codes the server sent before it closed, for the table ("408", "200 ×3"). */
function statuses(conn) {
  const codes = conn.statuses ?? parseResponses(conn.received).map((r) => r.status)
  if (codes.length === 0) return conn.received.length > 0 ? `${conn.received.length} bytes` : '—'
  if (codes.every((c) => c === codes[0]))
    return codes.length === 1 ? `${codes[0]}` : `${codes[0]} ×${codes.length}`
  return codes.join(', ')
}

/**
 * An HTTP/2 client session, optionally through a loopback relay that can be told to stop
 * forwarding in both directions without closing anything: the route to the peer dies, as in
 * the article on HTTP/2 PING liveness. `conn` has the same fields the table reads.
 */
function openH2(name, { relay: useRelay = false, target: server = guarded } = {}) {
  const startedAt = performance.now()
  const conn = {
    name,
    startedAt,
    localPort: undefined,
    establishedAt: Number.NaN,
    received: Buffer.alloc(0),
    closedAt: Number.NaN,
    how: null,
    statuses: [],
    diedAt: Number.NaN,
  }
  server.conns.push(conn)
  let forwarding = true
  let relay = null
  let target = server.port
  const ready = new Promise((resolveRelay) => {
    if (!useRelay) return resolveRelay()
    relay = net.createServer((down) => {
      const up = net.connect({ host: HOST, port: server.port }, () => {
        conn.localPort = up.localPort // the server sees the relay's side
        if (server !== guarded) return
        names.set(conn.localPort, name)
        serverWatched.set(conn.localPort, () => conn.serverClosed?.())
      })
      down.on('data', (d) => forwarding && up.write(d))
      up.on('data', (d) => forwarding && down.write(d))
      for (const s of [down, up]) s.on('error', () => {})
      conn.destroyRelay = () => {
        down.destroy()
        up.destroy()
      }
    })
    relay.listen(0, HOST, () => {
      target = relay.address().port
      resolveRelay()
    })
  })
  conn.killRoute = () => {
    forwarding = false
    conn.diedAt = performance.now()
  }
  conn.session = ready.then(() => {
    const session = http2.connect(`https://${HOST}:${target}`, {
      ca: CERT,
      servername: 'localhost',
    })
    session.on('error', () => {})
    session.once('connect', () => {
      conn.establishedAt = performance.now()
      if (!useRelay) {
        conn.localPort = session.socket.localPort
        if (server === guarded) names.set(conn.localPort, name)
      }
    })
    return session
  })
  conn.closed = conn.session.then(
    (session) =>
      new Promise((resolve) => {
        const finish = (how) => {
          if (conn.how !== null) return
          conn.closedAt = performance.now()
          conn.how = how
          clearTimeout(life)
          session.destroy()
          conn.destroyRelay?.()
          relay?.close()
          resolve(conn)
        }
        const life = setTimeout(() => finish('gave up'), CLIENT_LIFE_MS)
        session.once('close', () => finish('close'))
        conn.finish = finish
        conn.stop = () => finish('still open')
        // With the route dead, the client never hears the server go: watch the server side.
        conn.serverClosed = () => finish('server closed')
      }),
  )
  return conn
}

/** One GET on an HTTP/2 session; resolves with its status. */
function h2get(session, path = '/') {
  return new Promise((resolve) => {
    const stream = session.request({ ':path': path })
    stream.on('response', (headers) => resolve(headers[':status']))
    stream.on('error', () => resolve(0))
    stream.resume()
  })
}

// ---- the scenarios -------------------------------------------------------------------------

/**
 * Each scenario runs one client and says what to expect of it: the tracker's close reason and
 * state at close, and when the cut is due (`due(conn)`: client clock, ms) — or, for the
 * upload, `check(conn)` for its own success condition.
 */
const scenarios = [
  {
    name: 'silent TCP',
    did: 'connects to the TLS port, sends nothing',
    reason: 'tls_handshake_timeout',
    state: 'new',
    due: (c) => c.startedAt + GUARD.handshakeTimeout,
    async run(target) {
      return open(this.name, { secure: false, target }).closed
    },
  },
  {
    name: 'stalled handshake',
    did: `${PARTIAL_CLIENT_HELLO.length} B of a ClientHello, then silent`,
    reason: 'tls_handshake_timeout',
    state: 'handshaking',
    due: (c) => c.startedAt + GUARD.handshakeTimeout,
    async run(target) {
      const conn = open(this.name, { secure: false, target })
      if (await conn.ready) conn.socket.write(PARTIAL_CLIENT_HELLO)
      return conn.closed
    },
  },
  {
    name: 'TLS, then silent',
    did: 'TLS completes, no request',
    reason: 'request_headers_timeout',
    state: 'idle',
    due: (c) => c.establishedAt + GUARD.headersTimeout,
    async run(target) {
      return open(this.name, { secure: true, target }).closed
    },
  },
  {
    name: 'slowloris',
    did: `request line, 1 header/${SLOWLORIS_EVERY_MS} ms`,
    reason: 'request_headers_timeout',
    state: 'active',
    due: (c) => c.establishedAt + GUARD.headersTimeout,
    async run(target) {
      const conn = open(this.name, { secure: true, target })
      if (!(await conn.ready)) return conn.closed
      conn.socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n')
      let n = 0
      const drip = setInterval(
        () => conn.socket.write(`X-Drip-${++n}: ${'x'.repeat(8)}\r\n`),
        SLOWLORIS_EVERY_MS,
      )
      await conn.closed
      clearInterval(drip)
      this.did = `request line, ${n} headers 1/${SLOWLORIS_EVERY_MS} ms`
      return conn
    },
  },
  {
    name: 'healthy slow upload',
    did: `POST ${bytes(UPLOAD.chunks * UPLOAD.chunkBytes)} at ${bytes((UPLOAD.chunkBytes * 1000) / UPLOAD.everyMs)}/s`,
    reason: 'client_closed',
    state: 'idle',
    check(c) {
      const problems = []
      const res = c.response
      const total = UPLOAD.chunks * UPLOAD.chunkBytes
      if (res === undefined)
        problems.push(`was cut after ${secs(c.closedAt - c.startedAt)}: it got no response`)
      else if (res.status !== 200) problems.push(`got status ${res.status}, expected 200`)
      else if (JSON.parse(res.body).received !== total)
        problems.push(`server counted ${res.body}, expected ${total} bytes`)
      return problems
    },
    async run(target) {
      const conn = open(this.name, { secure: true, target })
      if (!(await conn.ready)) return conn.closed
      const total = UPLOAD.chunks * UPLOAD.chunkBytes
      conn.socket.write(
        'POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\n' +
          `Content-Length: ${total}\r\n\r\n`,
      )
      const chunk = Buffer.alloc(UPLOAD.chunkBytes, 0x61)
      for (let i = 0; i < UPLOAD.chunks && conn.how === null; i++) {
        await sleep(UPLOAD.everyMs)
        conn.socket.write(chunk)
      }
      const [response] = await responses(conn, 1)
      if (response !== undefined) {
        conn.response = response
        conn.completedAt = performance.now()
        if (!target.quiet)
          say(
            `  ${dim(`+${secs(conn.completedAt - t0)}`)}  ${this.name.padEnd(NAME_WIDTH)} ${green(`completed ${response.status}`)} ${dim('(the client closes now)')}`,
          )
        conn.socket.end()
      }
      return conn.closed
    },
  },
  {
    name: 'keep-alive client',
    did: `${KEEP_ALIVE_REQUESTS} GETs ${KEEP_ALIVE_PAUSE_MS} ms apart, then idle`,
    reason: 'keep_alive_timeout',
    state: 'idle',
    due: (c) => c.lastResponseAt + GUARD.keepAliveTimeout,
    async run(target) {
      const conn = open(this.name, { secure: true, target })
      if (!(await conn.ready)) return conn.closed
      for (let i = 1; i <= KEEP_ALIVE_REQUESTS; i++) {
        if (i > 1) await sleep(KEEP_ALIVE_PAUSE_MS)
        conn.socket.write('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
        const got = await responses(conn, i)
        if (got.length < i) break
        conn.lastResponseAt = performance.now()
        conn.keepAliveHeader = /\r\nkeep-alive:\s*([^\r]*)/i.exec(got[i - 1].head)?.[1]
      }
      return conn.closed
    },
  },
  {
    name: 'invalid request',
    did: 'garbage bytes after TLS',
    reason: 'invalid_request',
    state: null, // whatever state the parser error finds it in
    due: (c) => c.establishedAt,
    async run(target) {
      const conn = open(this.name, { secure: true, target })
      if (await conn.ready) conn.socket.write('\x00\x01 HELLO? this is not HTTP \xff\r\n\r\n')
      return conn.closed
    },
  },
  {
    name: 'HTTP/2 streams',
    did: '3 concurrent GETs on one h2 session, then idle',
    reason: 'keep_alive_timeout',
    state: 'idle',
    due: (c) => c.lastResponseAt + GUARD.keepAliveTimeout,
    async run(target) {
      const conn = openH2(this.name, { target })
      const session = await conn.session
      conn.statuses = await Promise.all([h2get(session), h2get(session), h2get(session)])
      conn.lastResponseAt = performance.now()
      return conn.closed
    },
  },
  {
    name: 'HTTP/2 dead route',
    did: 'a long poll, then the route silently dies',
    reason: 'ping_timeout',
    state: 'active',
    // A PING goes out within 1.25 × pingInterval of the last byte read and gets pingTimeout
    // for its ACK; the last byte may have come up to a pingInterval before the route died.
    due: (c) => c.diedAt + GUARD.pingInterval * 1.25 + GUARD.pingTimeout,
    earlyMs: GUARD.pingInterval * 1.25,
    async run(target) {
      const conn = openH2(this.name, { relay: true, target })
      const session = await conn.session
      // A long poll: the stream stays open, so no idle deadline applies; only a PING finds
      // that nobody is there any more.
      h2get(session, '/wait')
      conn.statuses = []
      await sleep(GUARD.pingInterval * 1.5) // a PING or two answered while the route lives
      conn.killRoute()
      return conn.closed
    },
  },
]

/** What went wrong with one client, if anything (empty: it ended as expected). */
function problemsOf(scenario, conn, rec) {
  if (rec === undefined) return [`the tracker has no record for client port ${conn.localPort}`]
  const problems = []
  if (rec.closeReason !== scenario.reason)
    problems.push(`close reason ${rec.closeReason}, expected ${scenario.reason}`)
  if (scenario.state !== null && rec.stateAtClose !== scenario.state) {
    problems.push(`state at close ${rec.stateAtClose}, expected ${scenario.state}`)
  }
  if (scenario.check !== undefined) return [...problems, ...scenario.check(conn)]
  if (conn.how === 'gave up')
    return [
      ...problems,
      `the server never cut it (the client gave up after ${secs(CLIENT_LIFE_MS)})`,
    ]
  const due = scenario.due(conn)
  if (Number.isNaN(due))
    return [...problems, 'the client never reached the phase this deadline guards']
  const late = conn.closedAt - due
  if (late < -(scenario.earlyMs ?? EARLY_MS) || late > LATE_MS) {
    problems.push(
      `cut ${late < 0 ? `${secs(-late)} early` : `${secs(late)} after its deadline`} ` +
        `(allowed: up to ${secs(LATE_MS)} late)`,
    )
  }
  return problems
}

// ---- run -----------------------------------------------------------------------------------

say(
  `${bold(`${scenarios.length} clients`)} start now (+0.00 s), concurrently, at each server; the guarded server's close events as they happen:`,
)
t0 = performance.now()
// The same clients at the bare server, at the same time (their own copies: a run notes what it did).
const bareRuns = scenarios.map((s) => Object.create(s).run(unguarded))
const conns = await Promise.all(scenarios.map((s) => s.run(guarded)))
// The bare server's upload finishes by itself; every other client it still holds is ended
// now, once the guarded server has dealt with all of its own.
await bareRuns[scenarios.findIndex((s) => s.check !== undefined)]
const stoppedAt = performance.now()
for (const conn of unguarded.conns) conn.stop?.()
const bareConns = await Promise.all(bareRuns)

// The record of a connection may close a moment after its client saw the end.
for (const waitUntil = performance.now() + 2000; performance.now() < waitUntil; ) {
  if (conns.every((c) => records.has(c.localPort))) break
  await sleep(20)
}

const rows = scenarios.map((scenario, i) => {
  const conn = conns[i]
  const rec = records.get(conn.localPort)
  const problems = problemsOf(scenario, conn, rec)
  let cut
  if (scenario.check !== undefined && conn.response !== undefined) {
    cut = `not cut: ${conn.response.status} at +${secs(conn.completedAt - t0)}`
  } else if (conn.how === 'gave up') {
    cut = 'never'
  } else {
    cut = `+${secs(conn.closedAt - t0)}`
    if (conn.lastResponseAt !== undefined)
      cut += ` (idle ${secs(conn.closedAt - conn.lastResponseAt)})`
  }
  const bareConn = bareConns[i]
  let before
  if (bareConn.response !== undefined)
    before = `${bareConn.response.status} at +${secs(bareConn.completedAt - t0)}`
  else if (bareConn.how === 'still open') before = yellow(`still open at +${secs(stoppedAt - t0)}`)
  else
    before = `closed at +${secs(bareConn.closedAt - t0)}${bareConn.received.length > 0 ? ` (${statuses(bareConn)})` : ''}`
  return {
    ok: problems.length === 0,
    problems,
    did: scenario.did,
    cells: [
      scenario.name,
      scenario.did,
      cut,
      before,
      statuses(conn),
      rec?.closeReason ?? '?',
      rec?.stateAtClose ?? '?',
      rec?.handshakeDuration == null ? '—' : `${rec.handshakeDuration.toFixed(0)} ms`,
      rec === undefined ? '?' : String(rec.requests),
      rec === undefined ? '?' : `${bytes(rec.bytesRead)} / ${bytes(rec.bytesWritten)}`,
    ],
  }
})

const header = [
  'client',
  'what it did',
  'guarded: cut at',
  'without connguard',
  'client got',
  'close reason',
  'state',
  'handshake',
  'reqs',
  'bytes in / out',
]
const DID = 1
const rightAligned = new Set([7, 8, 9])
// Width on screen: colour codes take none.
const visible = (text) => stripVTControlCharacters(text).length
const pad = (text, width, start = false) => {
  const fill = ' '.repeat(Math.max(0, width - visible(text)))
  return start ? fill + text : text + fill
}
const widths = header.map((h, col) => Math.max(h.length, ...rows.map((r) => visible(r.cells[col]))))
const tableWidth = 2 + widths.reduce((sum, w) => sum + w + 2, -2)
// In a terminal too narrow for one line per client, "what it did" goes on a line of its own.
const narrow = process.stdout.isTTY === true && tableWidth > (process.stdout.columns ?? Infinity)
const columns = header.map((_, col) => col).filter((col) => !(narrow && col === DID))
const line = (cells) =>
  columns.map((col) => pad(cells[col], widths[col], rightAligned.has(col))).join('  ')

say()
say(
  bold('Connections') +
    dim(
      ' — times from the start (+0.00 s), as above, measured by the clients; "without connguard": the same client at the bare server; the rest from the tracker\'s record',
    ),
)
say(`  ${bold(line(header))}`)
say(`  ${dim(columns.map((col) => '─'.repeat(widths[col])).join('  '))}`)
for (const row of rows) {
  say(`${row.ok ? green('✓') : red('✗')} ${line(row.cells)}`)
  if (narrow) say(dim(`    ${row.did}`))
}

const keepAlive = conns[scenarios.findIndex((s) => s.reason === 'keep_alive_timeout')]
if (keepAlive?.keepAliveHeader !== undefined) {
  say(
    dim(
      `  The keep-alive client was told "Keep-Alive: ${keepAlive.keepAliveHeader}": the enforced idle deadline.`,
    ),
  )
}
say(
  dim(
    '  Bytes are on the wire (TLS ciphertext, handshake included); handshake = accept → TLS established.',
  ),
)

const held = bareConns.filter((c) => c.how === 'still open').length
say(
  `  ${bold(`Without connguard, ${held} of ${scenarios.length} clients were still open at +${secs(stoppedAt - t0)}`)}` +
    dim(' (ended there by the demo).'),
)
say(
  dim(
    "  Fastify's defaults leave them to Node's own timers. Left alone (Node 20), this server cut the\n" +
      '  slowloris at ~92 s and the silent TCP connection at 120 s, and still held TLS-then-silent\n' +
      '  and the idle keep-alive connection at 200 s.',
  ),
)

const snap = tracker.snapshot()
say()
say(bold('tracker.snapshot()'))
say(
  `  live: total ${snap.total} (new ${snap.new}, handshaking ${snap.handshaking}, idle ${snap.idle}, ` +
    `active ${snap.active}, upgraded ${snap.upgraded})`,
)
say('  closedByReason:')
const reasons = Object.entries(snap.closedByReason).sort(
  (a, b) => b[1] - a[1] || a[0].localeCompare(b[0]),
)
const reasonWidth = Math.max(...reasons.map(([r]) => r.length))
for (const [reason, count] of reasons) say(`    ${cyan(reason.padEnd(reasonWidth))}  ${count}`)

// An excerpt of what Prometheus would scrape (@connguard/prometheus): closes by reason,
// and how many TLS handshakes completed or failed.
const scrape = (await registry.metrics()).split('\n')
const excerpt = scrape.filter(
  (line) =>
    (line.startsWith('connguard_connections_closed_total{') && !line.endsWith(' 0')) ||
    line.startsWith('connguard_tls_handshake_duration_seconds_count'),
)
say()
say(bold('Prometheus scrape (excerpt of registry.metrics())'))
for (const line of excerpt) say(`  ${dim(line)}`)

await app.close()
await bare.close()
clearTimeout(watchdog)

const failures = rows.flatMap((row, i) => row.problems.map((p) => `${scenarios[i].name}: ${p}`))
if (snap.total !== 0)
  failures.push(`${snap.total} connection(s) still open after every client finished`)
say()
if (failures.length > 0) {
  say(red(bold(`FAIL: ${failures.length} check(s) did not end as expected`)))
  for (const f of failures) say(red(`  - ${f}`))
  process.exit(1)
}
const upload = conns[scenarios.findIndex((s) => s.check !== undefined)]
say(
  green(
    `OK: each stuck connection was cut in its own phase, with its reason; ` +
      `the ${secs(upload.completedAt - upload.startedAt)} upload was not cut.`,
  ),
)
process.exit(0)
