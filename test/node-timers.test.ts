/**
 * With the guard attached, Node's own timers neither cut what the guard's
 * policy allows nor keep what it cuts. Each case runs once without the guard
 * (showing what Node does, so the test can fail) and once with it.
 *
 * The keep-alive cases run on whichever Node runs the suite (CI: 20, 22 and 24), and say what
 * that version does: Node 22 and 24 have `server.keepAliveTimeoutBuffer`, Node 20 a fixed 1 s.
 */
import http from 'node:http'
import https from 'node:https'
import { performance } from 'node:perf_hooks'
import { type ConnectionRecord, ConnectionTracker } from '@connguard/core'
import { afterEach, describe, expect, it } from 'vitest'
import {
  getRequest,
  openSocket,
  partialClientHello,
  rawHttp,
  slowUpload,
} from './helpers/clients.js'
import { parseResponse } from './helpers/http-response.js'
import { EARLY_MS, LATE_MS } from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/** Reads the whole body, then answers 200 with its length. */
const drain: http.RequestListener = (req, res) => {
  let n = 0
  req.on('data', (c: Buffer) => {
    n += c.length
  })
  req.on('end', () => res.end(String(n)))
}

async function start(
  server: http.Server | https.Server,
  guard?: ConnectionTracker,
): Promise<number> {
  guard?.attach(server)
  const port = await listen(server)
  cleanups.push(async () => {
    guard?.close()
    await closeServer(server)
  })
  return port
}

// Node checks header/request deadlines every connectionsCheckingInterval; 100 ms makes its cut prompt.
const nodeStrict = { requestTimeout: 600, headersTimeout: 400, connectionsCheckingInterval: 100 }
const upload = { totalBytes: 30 * 1_000, chunkBytes: 1_000, intervalMs: 50 } // ~1.5 s at 20 KB/s

describe("Node's requestTimeout and headersTimeout", () => {
  it('without the guard, Node cuts a healthy 1.5 s upload at requestTimeout', async () => {
    const port = await start(http.createServer(nodeStrict, drain))
    const result = await slowUpload(port, { ...upload, path: '/up' })
    expect(result.status === 0 || result.status === 408).toBe(true)
    expect(result.sentBytes).toBeLessThan(upload.totalBytes)
  })

  it("with the guard, the server's requestTimeout is adopted: the upload is cut at 600 ms with request_timeout", async () => {
    const guard = new ConnectionTracker({ sweepInterval: 50 })
    const reasons: unknown[] = []
    guard.on('close', (r) => reasons.push(r.closeReason))
    const port = await start(http.createServer(nodeStrict, drain), guard)
    expect(guard.options.requestTimeout).toBe(600)
    expect(guard.options.sources.requestTimeout).toBe('server')
    const startedAt = performance.now()
    const result = await slowUpload(port, { ...upload, path: '/up' })
    expect(result.status).toBe(408)
    expect(result.sentBytes).toBeLessThan(upload.totalBytes)
    const heldMs = performance.now() - startedAt
    expect(heldMs).toBeGreaterThanOrEqual(600 - EARLY_MS)
    expect(heldMs).toBeLessThan(600 + 50 + LATE_MS)
    await new Promise((r) => setTimeout(r, 20))
    expect(reasons).toEqual(['request_timeout'])
  })

  it('with the guard and requestTimeout: false given to it, the same upload completes with 200 (and it warns that it replaced the server value)', async () => {
    const guard = new ConnectionTracker({
      headersTimeout: 400,
      requestTimeout: false,
      sweepInterval: 50,
    })
    const port = await start(http.createServer(nodeStrict, drain), guard)
    expect(guard.options.sources.requestTimeout).toBe('connguard')
    const result = await slowUpload(port, { ...upload, path: '/up' })
    expect(result.status).toBe(200)
    expect(result.body.toString()).toBe(String(upload.totalBytes))
  })
})

describe("Node's TLS handshake timeout", () => {
  it('yields to the guard: a stalled handshake is cut at the guard deadline, with its reason', async () => {
    const guard = new ConnectionTracker({ handshakeTimeout: 1_000, sweepInterval: 50 })
    const reasons: string[] = []
    guard.on('close', (r) => reasons.push(r.closeReason as string))
    const port = await start(
      https.createServer({ ...tlsOptions, handshakeTimeout: 200 }, drain),
      guard,
    )
    const result = await partialClientHello(port)
    expect(result.heldMs).toBeGreaterThanOrEqual(1_000 - 20)
    expect(result.heldMs).toBeLessThan(1_000 + 50 + 400)
    await new Promise((r) => setTimeout(r, 50))
    expect(reasons).toEqual(['tls_handshake_timeout'])
  })
})

describe('Node behaviour kept', () => {
  it('a malformed request still gets 400 from Node, and is recorded as invalid_request', async () => {
    const guard = new ConnectionTracker({ sweepInterval: 50 })
    const closes: { reason: unknown; code: unknown }[] = []
    guard.on('close', (r) => closes.push({ reason: r.closeReason, code: r.errorCode }))
    const port = await start(http.createServer(drain), guard)
    const result = await rawHttp(port, 'NOT A REQUEST\r\n\r\n')
    expect(result.received.toString('latin1')).toMatch(/^HTTP\/1\.1 400 /)
    await new Promise((r) => setTimeout(r, 50))
    expect(closes).toEqual([{ reason: 'invalid_request', code: expect.stringMatching(/^HPE_/) }])
  })

  it('an oversized head still gets 431 from Node', async () => {
    const guard = new ConnectionTracker({ sweepInterval: 50 })
    const port = await start(http.createServer({ maxHeaderSize: 1024 }, drain), guard)
    const result = await rawHttp(
      port,
      `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`,
    )
    expect(result.received.toString('latin1')).toMatch(/^HTTP\/1\.1 431 /)
  })
})

/** Node 22 and 24 (nodejs/node#59243, v24.6.0): Node's idle timer = keepAliveTimeout + this. */
const HAS_BUFFER =
  typeof (new http.Server() as { keepAliveTimeoutBuffer?: unknown }).keepAliveTimeoutBuffer ===
  'number'
type BufferedServer = http.Server & { keepAliveTimeoutBuffer?: number }

interface IdleClose {
  /** The response's `Keep-Alive` header. */
  keepAlive: string | undefined
  /** From the end of the response to the server's close, seen by the client. */
  idleMs: number
  reason: string | null
}

/** One request on a fresh connection, then idle until the server closes it. */
async function idleAfterOneRequest(
  server: BufferedServer,
  guard?: ConnectionTracker,
): Promise<IdleClose> {
  const closed: ConnectionRecord[] = []
  guard?.on('close', (r) => closed.push(r))
  const port = await start(server, guard)
  const conn = await openSocket(port)
  conn.send(getRequest('/'))
  const response = await conn.waitFor((buf) => parseResponse(buf))
  const respondedAt = performance.now()
  const info = await conn.closed
  await new Promise((r) => setTimeout(r, 20))
  expect(response.status).toBe(200)
  return {
    keepAlive: response.headers['keep-alive'],
    idleMs: info.at - respondedAt,
    reason: closed[0]?.closeReason ?? null,
  }
}

describe(`Node's keep-alive timer vs the guard's keepAliveTimeout (Node ${process.version})`, () => {
  const KEEP_ALIVE = 1_000
  const SWEEP = 50

  it('the advertised Keep-Alive: timeout= and the close agree: the guard closes at keepAliveTimeout', async () => {
    const server: BufferedServer = http.createServer(drain)
    const guard = new ConnectionTracker({ keepAliveTimeout: KEEP_ALIVE, sweepInterval: SWEEP })
    const result = await idleAfterOneRequest(server, guard)
    expect(result.keepAlive).toBe(`timeout=${KEEP_ALIVE / 1000}`)
    expect(result.idleMs).toBeGreaterThanOrEqual(KEEP_ALIVE - EARLY_MS)
    expect(result.idleMs).toBeLessThanOrEqual(KEEP_ALIVE + SWEEP + LATE_MS)
    expect(result.reason).toBe('keep_alive_timeout')
    // Node's idle timer is set to fire one sweep past Node's own 1 s buffer, never first.
    expect(server.keepAliveTimeout).toBe(KEEP_ALIVE)
    expect(server.keepAliveTimeoutBuffer).toBe(HAS_BUFFER ? 2 * SWEEP + 1_000 : undefined)
    guard.close()
    expect(server.keepAliveTimeoutBuffer).toBe(HAS_BUFFER ? 1_000 : undefined)
  })

  // A buffer of 0: Node 22 and 24 close at keepAliveTimeout exactly (Node 20 ignores the option).
  const noBuffer = { keepAliveTimeoutBuffer: 0 } as http.ServerOptions

  it('without the guard, a server made with keepAliveTimeoutBuffer: 0 closes at keepAliveTimeout (Node 22, 24) or 1 s later (Node 20)', async () => {
    const server: BufferedServer = http.createServer(
      { ...noBuffer, keepAliveTimeout: KEEP_ALIVE },
      drain,
    )
    const result = await idleAfterOneRequest(server)
    expect(result.keepAlive).toBe(`timeout=${KEEP_ALIVE / 1000}`)
    const nodeCloses = KEEP_ALIVE + (HAS_BUFFER ? 0 : 1_000)
    expect(result.idleMs).toBeGreaterThanOrEqual(nodeCloses - EARLY_MS)
    expect(result.idleMs).toBeLessThanOrEqual(nodeCloses + LATE_MS)
  })

  it('with the guard, the same server closes at the guard deadline with its reason (measured before the fix: server_closed)', async () => {
    const server: BufferedServer = http.createServer(noBuffer, drain)
    const guard = new ConnectionTracker({ keepAliveTimeout: KEEP_ALIVE, sweepInterval: SWEEP })
    const result = await idleAfterOneRequest(server, guard)
    expect(result.keepAlive).toBe(`timeout=${KEEP_ALIVE / 1000}`)
    expect(result.idleMs).toBeGreaterThanOrEqual(KEEP_ALIVE - EARLY_MS)
    expect(result.idleMs).toBeLessThanOrEqual(KEEP_ALIVE + SWEEP + LATE_MS)
    expect(result.reason).toBe('keep_alive_timeout')
    guard.close()
    expect(server.keepAliveTimeoutBuffer).toBe(HAS_BUFFER ? 0 : undefined)
  })

  it(
    HAS_BUFFER
      ? 'a sweepInterval past 1 s: the guard still closes first (the buffer follows the sweep)'
      : 'a sweepInterval past 1 s: Node 20 fixes its buffer at 1 s, so its idle timer closes first (server_closed)',
    async () => {
      // Sweeps at attach + 2.5 s, 5 s, …; the request is done right after attach, its end
      // settled by the first sweep, so its keep-alive deadline (~attach + 3.5 s) is enforced at
      // the second, up to two sweeps late; Node's timer fires at ~attach + 1 s + its buffer
      // (two sweeps + 1 s).
      const SLOW_SWEEP = 2_500
      const server: BufferedServer = http.createServer(drain)
      const guard = new ConnectionTracker({
        keepAliveTimeout: KEEP_ALIVE,
        sweepInterval: SLOW_SWEEP,
      })
      const result = await idleAfterOneRequest(server, guard)
      expect(result.keepAlive).toBe(`timeout=${KEEP_ALIVE / 1000}`)
      expect(result.idleMs).toBeGreaterThanOrEqual(KEEP_ALIVE - EARLY_MS)
      if (HAS_BUFFER) {
        expect(result.reason).toBe('keep_alive_timeout')
        expect(result.idleMs).toBeLessThanOrEqual(KEEP_ALIVE + 2 * SLOW_SWEEP + LATE_MS)
      } else {
        expect(result.reason).toBe('server_closed')
        expect(result.idleMs).toBeLessThanOrEqual(KEEP_ALIVE + 1_000 + LATE_MS)
      }
    },
  )
})
