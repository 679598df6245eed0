/**
 * Faults from the peer and from the application, each with one defined outcome (see
 * docs/faults.md), for Fastify and Express 5 over HTTP and HTTPS, over real sockets on
 * 127.0.0.1:
 * - the peer resets (TCP RST) mid-handshake, mid-headers, mid-body and mid-response;
 * - the peer half-closes (FIN) after a full request, with a fast and a slow handler;
 * - the handler throws, rejects, fails after the head is out, or never answers (with and
 *   without a `requestTimeout`).
 * After every test the server still answers a healthy request, and every record it closed is
 * consistent (one reason, durations that add up).
 */
import { performance } from 'node:perf_hooks'
import type { TLSSocket } from 'node:tls'
import type { ConnectionRecord } from '@connguard/core'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import {
  type Conn,
  captureClientHello,
  getRequest,
  keepAliveRequests,
  openSocket,
} from './helpers/clients.js'
import {
  type Adapter,
  type FaultApp,
  ROUTE_REQUEST_TIMEOUT,
  startApp,
  stopApps,
} from './helpers/fault-apps.js'
import { parseHead, parseResponse } from './helpers/http-response.js'
import { EARLY_MS, LATE_MS, sleep, waitUntil } from './helpers/records.js'

const SWEEP = 50
/** Deadlines that must not fire in these scenarios: the faults end every connection. */
const FAR = 20_000
const OPTIONS = {
  handshakeTimeout: FAR,
  headersTimeout: FAR,
  keepAliveTimeout: FAR,
  sweepInterval: SWEEP,
}

const localPort = (conn: Conn): number | undefined => (conn.socket as TLSSocket).localPort
const ports = new WeakMap<Conn, number | undefined>()

const TARGETS: [Adapter, 'http' | 'https'][] = [
  ['fastify', 'http'],
  ['fastify', 'https'],
  ['express', 'http'],
  ['express', 'https'],
]

afterAll(() => stopApps())

describe.each(TARGETS)('%s over %s', (adapter, transport) => {
  const secure = transport === 'https'
  let app: FaultApp
  beforeAll(async () => {
    app = await startApp(adapter, secure, OPTIONS)
  })
  afterEach(async () => {
    // Whatever the fault did, the server goes on serving.
    const healthy = await keepAliveRequests(app.port, { count: 1, tls: secure })
    expect(healthy.statuses).toEqual([200])
    await waitUntil(() => app.tracker.snapshot().total === 0, { what: 'no live record' })
  })

  /** Open a client connection and find its live record. */
  async function connect(): Promise<{ conn: Conn; rec: ConnectionRecord }> {
    const conn = await openSocket(app.port, { tls: secure })
    ports.set(conn, localPort(conn))
    return { conn, rec: await app.liveRecord(localPort(conn)) }
  }
  /** The record of `conn` once closed (its local port is read while it is open). */
  const closedRecord = (conn: Conn) => app.closes.forClientPort(ports.get(conn))

  it.runIf(secure)(
    'peer reset mid-handshake: connection_reset in handshaking, ECONNRESET',
    async () => {
      const hello = await captureClientHello()
      const conn = await openSocket(app.port) // raw TCP to the TLS port
      ports.set(conn, localPort(conn))
      conn.send(hello.subarray(0, Math.floor(hello.length / 2)))
      const rec = await app.liveRecord(localPort(conn))
      await waitUntil(() => rec.state === 'handshaking', { what: 'handshaking' })
      conn.reset()
      const closed = await closedRecord(conn)
      expect(closed).toMatchObject({
        closeReason: 'connection_reset',
        stateAtClose: 'handshaking',
        errorCode: 'ECONNRESET',
        tls: null,
        handshakeDuration: null,
        requests: 0,
      })
    },
  )

  it('peer reset mid-headers: connection_reset in active, no request counted', async () => {
    const { conn, rec } = await connect()
    conn.send('GET / HTTP/1.1\r\nHost: localhost\r\nX-Half: ')
    await waitUntil(() => rec.state === 'active', { what: 'active' })
    conn.reset()
    expect(await closedRecord(conn)).toMatchObject({
      closeReason: 'connection_reset',
      stateAtClose: 'active',
      errorCode: 'ECONNRESET',
      requests: 0,
    })
  })

  it('peer reset mid-body: connection_reset in active, the handler never answers', async () => {
    const { conn, rec } = await connect()
    conn.send(
      'POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: 100000\r\n\r\n',
    )
    conn.send(Buffer.alloc(1_000, 'a'))
    await waitUntil(() => rec.requests === 1, { what: 'request head parsed' })
    await sleep(2 * SWEEP)
    conn.reset()
    const closed = await closedRecord(conn)
    expect(closed).toMatchObject({
      closeReason: 'connection_reset',
      stateAtClose: 'active',
      errorCode: 'ECONNRESET',
      requests: 1,
    })
    expect(closed.bytesRead).toBeGreaterThan(1_000)
  })

  it('peer reset mid-response: connection_reset in active, ECONNRESET or EPIPE', async () => {
    const { conn } = await connect()
    conn.send(getRequest('/stream'))
    // The head and a few KiB of body are through: the response is in progress.
    await conn.waitFor((buf) => (buf.length > 4_096 ? true : undefined))
    conn.reset()
    const closed = await closedRecord(conn)
    expect(closed).toMatchObject({
      closeReason: 'connection_reset',
      stateAtClose: 'active',
      requests: 1,
    })
    expect(['ECONNRESET', 'EPIPE']).toContain(closed.errorCode)
  })

  for (const [where, bytes] of [
    ['mid-headers', 'GET / HTTP/1.1\r\nHost: localhost\r\nX-Half: '],
    [
      'mid-body',
      'POST /upload HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: 100\r\n\r\nhalf',
    ],
  ] as const) {
    it(`peer FIN ${where}: Node's parser fails at EOF (400), invalid_request with HPE_INVALID_EOF_STATE`, async () => {
      const { conn, rec } = await connect()
      conn.send(bytes)
      await waitUntil(() => rec.state === 'active', { what: 'active' })
      conn.socket.end()
      await conn.closed
      expect(await closedRecord(conn)).toMatchObject({
        closeReason: 'invalid_request',
        errorCode: 'HPE_INVALID_EOF_STATE',
        stateAtClose: 'active',
      })
    })
  }

  it('half-close after a full request, fast handler: response delivered, then client_closed', async () => {
    const { conn } = await connect()
    conn.send(getRequest('/'))
    conn.socket.end()
    const info = await conn.closed
    expect(info.how).toBe('end')
    const response = parseResponse(info.received, 0, { eof: true })
    expect(response?.status).toBe(200)
    expect(await closedRecord(conn)).toMatchObject({
      closeReason: 'client_closed',
      requests: 1,
    })
  })

  it('half-close after a full request, slow handler: no response (Node aborts it), client_closed', async () => {
    const { conn } = await connect()
    conn.send(getRequest('/slow?ms=300'))
    conn.socket.end()
    const info = await conn.closed
    // Node's HTTP server does not allow half-open connections (httpAllowHalfOpen false): the
    // FIN aborts the request in flight and ends the socket before the handler answers.
    expect(info.received.length).toBe(0)
    expect(await closedRecord(conn)).toMatchObject({
      closeReason: 'client_closed',
      stateAtClose: 'active',
      requests: 1,
    })
  })

  for (const path of ['/throw', '/reject']) {
    it(`handler ${path === '/throw' ? 'throws' : 'rejects'}: 500, the connection stays usable, idle`, async () => {
      const { conn, rec } = await connect()
      conn.send(getRequest(path))
      const first = await conn.waitFor((buf) => parseResponse(buf, 0))
      expect(first.status).toBe(500)
      await waitUntil(() => rec.state === 'idle', { what: 'idle after the 500' })
      conn.send(getRequest('/'))
      const second = await conn.waitFor((buf) => parseResponse(buf, first.end))
      expect(second.status).toBe(200)
      conn.destroy()
      expect(await closedRecord(conn)).toMatchObject({
        closeReason: 'client_closed',
        stateAtClose: 'idle',
        requests: 2,
      })
    })
  }

  it('handler fails after the head is out: the framework destroys the socket, server_closed in active', async () => {
    const { conn } = await connect()
    conn.send(getRequest('/throw-after-head'))
    const info = await conn.closed
    expect(parseHead(info.received)?.status).toBe(200)
    expect(await closedRecord(conn)).toMatchObject({
      closeReason: 'server_closed',
      stateAtClose: 'active',
      requests: 1,
    })
  })

  it('handler never answers, no requestTimeout: held while the client waits, client_closed when it leaves', async () => {
    const { conn, rec } = await connect()
    conn.send(getRequest('/hang'))
    await waitUntil(() => rec.requests === 1, { what: 'request head parsed' })
    await sleep(1_000)
    expect(conn.isOpen()).toBe(true)
    expect(rec.state).toBe('active')
    conn.socket.end()
    await conn.closed
    expect(await closedRecord(conn)).toMatchObject({
      closeReason: 'client_closed',
      stateAtClose: 'active',
      requests: 1,
    })
  })

  it(`handler never answers, route requestTimeout ${ROUTE_REQUEST_TIMEOUT}: 408 and request_timeout`, async () => {
    const { conn } = await connect()
    const sentAt = performance.now()
    conn.send(getRequest('/hang-limited'))
    const info = await conn.closed
    const heldMs = info.at - sentAt
    expect(heldMs).toBeGreaterThanOrEqual(ROUTE_REQUEST_TIMEOUT - EARLY_MS)
    expect(heldMs).toBeLessThanOrEqual(ROUTE_REQUEST_TIMEOUT + SWEEP + LATE_MS)
    expect(parseHead(info.received)?.status).toBe(408)
    expect(await closedRecord(conn)).toMatchObject({
      closeReason: 'request_timeout',
      stateAtClose: 'active',
      requests: 1,
    })
  })
})
