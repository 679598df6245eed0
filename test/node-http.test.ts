/**
 * The core `ConnectionTracker.attach()` on bare `node:http` / `node:https` servers, no
 * framework: deadlines, and the close reason of every way a connection ends that nobody on
 * our side timed (parse error, client RST, client FIN, server destroy, Connection: close).
 * Real sockets on 127.0.0.1; bounds as in helpers/guard-timing.ts.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import http from 'node:http'
import https from 'node:https'
import { performance } from 'node:perf_hooks'
import {
  type ConnectionRecord,
  ConnectionTracker,
  type ConnectionTrackerOptions,
} from '@connguard/core'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  getRequest,
  keepAliveRequests,
  openSocket,
  rawHttp,
  silentTcp,
  slowUpload,
  tlsThenSilence,
} from './helpers/clients.js'
import {
  CloseLog,
  expectDeadline,
  printTimings,
  SWEEP,
  sleep,
  type TimingRow,
} from './helpers/guard-timing.js'
import { parseResponse, parseResponses } from './helpers/http-response.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const D = 300
const FAR = 5_000

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

interface Started {
  tracker: ConnectionTracker
  server: http.Server
  port: number
  closes: CloseLog
}

/** A bare node:http(s) server with a tracker attached as the core README says. */
async function start(
  options: ConnectionTrackerOptions,
  { secure = false }: { secure?: boolean } = {},
): Promise<Started> {
  let tracker!: ConnectionTracker
  const handler: http.RequestListener = (req, res) => {
    switch (req.url) {
      case '/upload': {
        // An upload route lifts the absolute limit for its own request.
        expect(tracker.overrideRequest(req, { requestTimeout: false })).toBe(true)
        let bytes = 0
        req.on('data', (chunk: Buffer) => {
          bytes += chunk.length
        })
        req.on('end', () => res.end(String(bytes)))
        return
      }
      case '/destroy':
        req.socket.destroy()
        return
      case '/reject':
        // Answers an upload at once without reading it, as an auth check does: Node then
        // drains the rest of the body itself to keep the connection usable.
        res.statusCode = 401
        res.end('no')
        return
      case '/bye':
        res.setHeader('Connection', 'close')
        res.end('bye')
        return
      case '/later':
        setTimeout(() => res.end('later'), 150)
        return
      default:
        res.end('ok')
    }
  }
  const server = secure ? https.createServer(tlsOptions, handler) : http.createServer(handler)
  tracker = new ConnectionTracker({ sweepInterval: SWEEP, ...options })
  expect(tracker.attach(server)).toBe(tracker)
  cleanups.push(() => tracker.close())
  cleanups.push(() => closeServer(server))
  const closes = new CloseLog(tracker)
  const port = await listen(server)
  return { tracker, server, port, closes }
}

const summary = (r: ConnectionRecord) => ({
  closeReason: r.closeReason,
  stateAtClose: r.stateAtClose,
  requests: r.requests,
  errorCode: r.errorCode,
})

/** Every record's invariants: one shape, state durations that add up to its life. */
function expectConsistent(record: ConnectionRecord): void {
  expect(record.state).toBe('closed')
  expect(record.remoteAddress).toBe('127.0.0.1')
  const d = record.stateDurations
  expect(d.new + d.handshaking + d.idle + d.active + d.upgraded).toBeCloseTo(
    record.duration ?? -1,
    3,
  )
  expect((record.closedAt ?? 0) - record.openedAt).toBeCloseTo(record.duration ?? -1, 0)
}

/** Epoch ms between a client action and the record's close: nobody waited on a deadline. */
function expectPrompt(record: ConnectionRecord, actionAt: number): void {
  expect((record.closedAt ?? Number.POSITIVE_INFINITY) - actionAt).toBeLessThan(SWEEP + 400)
}

describe('ConnectionTracker on a bare node:http server', () => {
  it('silent TCP: request_headers_timeout with a 408', async () => {
    const { port, closes } = await start({ headersTimeout: D })
    const result = await silentTcp(port)
    const record = await closes.next()
    expectDeadline(result.heldMs, D, 'client')
    expectDeadline(record.duration ?? -1, D, 'record.duration')
    expect(parseResponses(result.received, { eof: true })[0]?.status).toBe(408)
    expect(summary(record)).toEqual({
      closeReason: 'request_headers_timeout',
      stateAtClose: 'new',
      requests: 0,
      errorCode: null,
    })
    expect(record.bytesRead).toBe(0)
    expect(record.bytesWritten).toBe(result.received.length)
    expect(record.secure).toBe(false)
    expect(record.tls).toBeNull()
    expectConsistent(record)
    timings.push({
      suite: 'node:http',
      scenario: 'silent TCP',
      deadlineMs: D,
      clientMs: result.heldMs,
      serverMs: record.duration,
      reason: record.closeReason,
    })
  })

  it('idle keep-alive: keep_alive_timeout; the Keep-Alive header says the same', async () => {
    const keepAliveTimeout = 1_000
    const { port, closes } = await start({ headersTimeout: D, keepAliveTimeout })
    const result = await keepAliveRequests(port, { count: 2, pauseMs: 10_000 })
    const record = await closes.next()
    expect(result.statuses, closes.describe()).toEqual([200])
    expect(result.responses[0]?.headers['keep-alive']).toBe('timeout=1')
    const clientMs = (result.close?.at ?? 0) - (result.respondedAt[0] ?? 0)
    expectDeadline(clientMs, keepAliveTimeout, 'client, idle after the response')
    expect(summary(record)).toEqual({
      closeReason: 'keep_alive_timeout',
      stateAtClose: 'idle',
      requests: 1,
      errorCode: null,
    })
    expect(record.httpVersion).toBe('1.1')
    expectConsistent(record)
    timings.push({
      suite: 'node:http',
      scenario: 'keep-alive idle',
      deadlineMs: keepAliveTimeout,
      clientMs,
      serverMs: null,
      reason: record.closeReason,
    })
  })

  it('a healthy upload lasting over 3x every timeout completes with 200', async () => {
    const { port, closes } = await start({
      headersTimeout: D,
      keepAliveTimeout: D,
      requestTimeout: D, // lifted for /upload by tracker.overrideRequest()
    })
    const result = await slowUpload(port, {
      path: '/upload',
      totalBytes: 2_400,
      chunkBytes: 100,
      intervalMs: 50,
    })
    const record = await closes.next()
    expect(result.status).toBe(200)
    expect(result.body.toString()).toBe('2400')
    const clientMs = result.at - result.startedAt
    expect(clientMs).toBeGreaterThanOrEqual(3 * D)
    expect(summary(record)).toEqual({
      closeReason: 'client_closed',
      stateAtClose: 'idle',
      requests: 1,
      errorCode: null,
    })
    expect(record.bytesRead).toBeGreaterThan(2_400)
    expect(record.stateDurations.active).toBeGreaterThanOrEqual(3 * D)
    expectConsistent(record)
    timings.push({
      suite: 'node:http',
      scenario: 'healthy upload (override requestTimeout: false)',
      deadlineMs: null,
      clientMs,
      serverMs: record.duration,
      reason: record.closeReason,
    })
  })

  it('a parse error: invalid_request, errorCode HPE_*, Node answers 400', async () => {
    const { port, closes } = await start({ headersTimeout: FAR })
    const actionAt = Date.now()
    const result = await rawHttp(port, 'NOT HTTP AT ALL\r\n\r\n')
    const record = await closes.next()
    expect(result.responses[0]?.status).toBe(400)
    expect(record.closeReason).toBe('invalid_request')
    expect(record.errorCode).toMatch(/^HPE_/)
    expect(record.requests).toBe(0)
    expectPrompt(record, actionAt)
    expectConsistent(record)
  })

  it('client RST: connection_reset, errorCode ECONNRESET', async () => {
    const { port, closes } = await start({ headersTimeout: FAR, keepAliveTimeout: FAR })
    const conn = await openSocket(port)
    cleanups.push(() => conn.destroy())
    conn.send(getRequest('/'))
    await conn.waitFor((buf) => parseResponse(buf))
    const actionAt = Date.now()
    conn.socket.resetAndDestroy()
    const record = await closes.next()
    expect(summary(record)).toEqual({
      closeReason: 'connection_reset',
      stateAtClose: 'idle',
      requests: 1,
      errorCode: 'ECONNRESET',
    })
    expectPrompt(record, actionAt)
    expectConsistent(record)
  })

  it('client FIN: client_closed (also published on connguard:connection:close)', async () => {
    const { port, closes, tracker } = await start({ headersTimeout: FAR, keepAliveTimeout: FAR })
    const published: unknown[] = []
    const onClose = (message: unknown) => published.push(message)
    diagnosticsChannel.subscribe('connguard:connection:close', onClose)
    cleanups.push(() => diagnosticsChannel.unsubscribe('connguard:connection:close', onClose))
    const conn = await openSocket(port)
    cleanups.push(() => conn.destroy())
    conn.send(getRequest('/'))
    await conn.waitFor((buf) => parseResponse(buf))
    const actionAt = Date.now()
    conn.socket.end()
    const record = await closes.next()
    expect(summary(record)).toEqual({
      closeReason: 'client_closed',
      stateAtClose: 'idle',
      requests: 1,
      errorCode: null,
    })
    expect(published).toEqual([{ record, tracker }])
    expectPrompt(record, actionAt)
    expectConsistent(record)
  })

  it('server socket.destroy() from the handler: server_closed', async () => {
    const { port, closes } = await start({ headersTimeout: FAR, keepAliveTimeout: FAR })
    const actionAt = Date.now()
    const result = await rawHttp(port, getRequest('/destroy'))
    const record = await closes.next()
    expect(result.responses).toEqual([])
    expect(summary(record)).toEqual({
      closeReason: 'server_closed',
      stateAtClose: 'active',
      requests: 1,
      errorCode: null,
    })
    expectPrompt(record, actionAt)
    expectConsistent(record)
  })

  it('a request with Connection: close: client_closed after its response', async () => {
    const { port, closes } = await start({ headersTimeout: FAR, keepAliveTimeout: FAR })
    const actionAt = Date.now()
    const result = await rawHttp(port, getRequest('/', { Connection: 'close' }))
    const record = await closes.next()
    expect(result.responses.map((r) => r.status)).toEqual([200])
    expect(result.close?.how).toBe('end')
    expect(summary(record)).toEqual({
      closeReason: 'client_closed',
      stateAtClose: 'idle',
      requests: 1,
      errorCode: null,
    })
    expectPrompt(record, actionAt)
    expectConsistent(record)
  })

  it('a response with Connection: close set by the server: server_closed', async () => {
    const { port, closes } = await start({ headersTimeout: FAR, keepAliveTimeout: FAR })
    const result = await rawHttp(port, getRequest('/bye'))
    const record = await closes.next()
    expect(result.responses.map((r) => r.body.toString())).toEqual(['bye'])
    expect(summary(record)).toEqual({
      closeReason: 'server_closed',
      stateAtClose: 'idle',
      requests: 1,
      errorCode: null,
    })
    expectConsistent(record)
  })

  it('pipelined requests: both answered, requests === 2', async () => {
    const { port, closes } = await start({ headersTimeout: D, keepAliveTimeout: FAR })
    const conn = await openSocket(port)
    cleanups.push(() => conn.destroy())
    conn.send(getRequest('/') + getRequest('/'))
    const responses = await conn.waitFor((buf) => {
      const all = parseResponses(buf)
      return all.length === 2 ? all : undefined
    })
    conn.destroy()
    const record = await closes.next()
    expect(responses.map((r) => r.status)).toEqual([200, 200])
    expect(summary(record)).toEqual({
      closeReason: 'client_closed',
      stateAtClose: 'idle',
      requests: 2,
      errorCode: null,
    })
    expectConsistent(record)
  })
})

/**
 * Library bugs found while writing these tests (see the report that came with them). Each
 * test states the behaviour the design asks for; they fail until the tracker is fixed.
 */
describe('the two ends of a connection', () => {
  it('local end from the listening address; from the socket on a wildcard listener (each local address its own) and after re-listening', async () => {
    const tracker = new ConnectionTracker({ sweepInterval: SWEEP })
    const server = http.createServer((_req, res) => res.end('ok'))
    tracker.attach(server)
    cleanups.push(() => tracker.close())
    const closes = new CloseLog(tracker)
    const listenOn = (host: string) =>
      new Promise<number>((resolve) =>
        server.listen(0, host, () => resolve((server.address() as { port: number }).port)),
      )
    const ends = async (port: number, host?: '127.0.0.2') => {
      const result = await rawHttp(port, getRequest('/', { Connection: 'close' }), { host })
      expect(parseResponses(result.received, { eof: true })[0]?.status).toBe(200)
      const record = await closes.next()
      return [record.localAddress, record.localPort, record.remoteAddress] as const
    }
    const one = await listenOn('127.0.0.1')
    expect(await ends(one)).toEqual(['127.0.0.1', one, '127.0.0.1'])
    await new Promise<void>((resolve) => server.close(() => resolve()))
    const wildcard = await listenOn('0.0.0.0')
    expect(await ends(wildcard)).toEqual(['127.0.0.1', wildcard, '127.0.0.1'])
    // Records share one local end object while it repeats: another address is its own.
    expect(await ends(wildcard, '127.0.0.2')).toEqual(['127.0.0.2', wildcard, '127.0.0.1'])
    expect(await ends(wildcard)).toEqual(['127.0.0.1', wildcard, '127.0.0.1'])
    await new Promise<void>((resolve) => server.close(() => resolve()))
  })
})

describe('when the peer address is read', () => {
  /** A guarded server that counts the getpeername calls made on its sockets' handles. */
  async function counted() {
    const tracker = new ConnectionTracker({ sweepInterval: SWEEP })
    const server = http.createServer((req, res) => {
      // The application asks for the address itself: Node caches it on the socket.
      if (req.url === '/ip') res.end(String(req.socket.remoteAddress))
      else res.end('ok')
    })
    // Every getpeername on the sockets' handles, the application's own included.
    const reads = { peer: 0 }
    // First in line, before the tracker sees the socket.
    server.prependListener('connection', (socket) => {
      const handle = (socket as unknown as { _handle: { getpeername(out: object): number } })
        ._handle
      const read = handle.getpeername
      handle.getpeername = function (out: object) {
        reads.peer++
        return read.call(this, out)
      }
    })
    tracker.attach(server)
    const port = await listen(server)
    cleanups.push(() => closeServer(server))
    cleanups.push(() => tracker.close())
    return { tracker, port, reads }
  }

  /** A keep-alive connection that got its answer to `GET path` and stays open. */
  async function served(port: number, path = '/') {
    const conn = await openSocket(port)
    cleanups.push(() => conn.destroy())
    conn.send(getRequest(path))
    const response = await conn.waitFor((buf) => parseResponse(buf))
    return { conn, response }
  }

  it('nothing listens for closes: not read at accept; read on first use while open', async () => {
    const { tracker, port, reads } = await counted()
    const { conn, response } = await served(port)
    expect(response.status).toBe(200)
    expect(reads.peer).toBe(0)
    const [rec] = [...tracker.connections()]
    expect(rec?.remoteAddress).toBe('127.0.0.1')
    expect(rec?.remotePort).toBe(conn.socket.localPort)
    expect(rec?.localPort).toBe(port)
    expect(reads.peer).toBe(1)
    // Read once: later reads use what the record kept.
    expect(rec?.toJSON()).toMatchObject({ remoteAddress: '127.0.0.1', localAddress: '127.0.0.1' })
    expect(reads.peer).toBe(1)
  })

  it("a 'close' listener: read at accept, so every close record has it", async () => {
    const { tracker, port, reads } = await counted()
    const closes = new CloseLog(tracker)
    const result = await rawHttp(port, getRequest('/', { Connection: 'close' }))
    expect(parseResponses(result.received, { eof: true })[0]?.status).toBe(200)
    const rec = await closes.next()
    expect(reads.peer).toBe(1)
    expect([rec.remoteAddress, rec.localPort]).toEqual(['127.0.0.1', port])
    expect(rec.remotePort).toBeGreaterThan(0)
  })

  it('a listener added after accept: the close record has what Node cached, if the application read it', async () => {
    const { tracker, port, reads } = await counted()
    const { conn: asked, response } = await served(port, '/ip')
    expect(response.body.toString()).toBe('127.0.0.1')
    const { conn: silent } = await served(port)
    // The application's own read is the one call so far.
    expect(reads.peer).toBe(1)
    const askedPort = asked.socket.localPort
    const closes = new CloseLog(tracker)
    // Reset by the peer: the handle is gone before anything can read it.
    asked.reset()
    silent.reset()
    await closes.next()
    await closes.next()
    const askedRec = closes.records.find((r) => r.remoteAddress !== undefined)
    expect(askedRec?.remoteAddress).toBe('127.0.0.1')
    expect(askedRec?.remotePort).toBe(askedPort)
    // The other was never read and its socket is gone: no address, and no system call made.
    const silentRec = closes.records.find((r) => r !== askedRec)
    expect(silentRec?.remoteAddress).toBeUndefined()
    expect(silentRec?.closeReason).toBe('connection_reset')
    expect(reads.peer).toBe(1)
  })

  it('a listener added after accept: a connection that ends by FIN or by our cut is read as it ends', async () => {
    const { tracker, port, reads } = await counted()
    const { conn: finned } = await served(port)
    const { conn: cut } = await served(port)
    const ports = [finned.socket.localPort, cut.socket.localPort]
    expect(reads.peer).toBe(0)
    const closes = new CloseLog(tracker)
    finned.destroy()
    await closes.next()
    // A drain without idle grace cuts the idle one at once (app_shutdown).
    await tracker.drain({ timeout: 1000, idleGrace: 0 })
    await closes.next()
    expect(closes.records.map((r) => [r.remoteAddress, r.remotePort, r.closeReason])).toEqual([
      ['127.0.0.1', ports[0], 'client_closed'],
      ['127.0.0.1', ports[1], 'app_shutdown'],
    ])
    expect(reads.peer).toBe(2)
  })
})

describe('keep-alive idle vs bytes that are not a request', () => {
  it('a stray CRLF after a response (RFC 9112 §2.2) is not a request: idle still ends by keep_alive_timeout', async () => {
    const { port, closes } = await start({ headersTimeout: D, keepAliveTimeout: D })
    const conn = await openSocket(port)
    cleanups.push(() => conn.destroy())
    conn.send(getRequest('/'))
    const first = await conn.waitFor((buf) => parseResponse(buf))
    const respondedAt = performance.now()
    // Some clients send an extra CRLF after a request; Node's parser skips it (no message begin).
    conn.send('\r\n')
    const close = await conn.closed
    const record = await closes.next()
    const clientMs = close.at - respondedAt
    expect(summary(record)).toEqual({
      closeReason: 'keep_alive_timeout',
      stateAtClose: 'idle',
      requests: 1,
      errorCode: null,
    })
    // Nothing after the 200: a 408 answers a request, and no request was sent.
    expect(close.received.subarray(first.end).toString('latin1')).toBe('')
    expectDeadline(clientMs, D, 'client, idle after the response')
  })

  it('a body still arriving after an early response (401 before reading) is not cut as a request head', async () => {
    const { port, closes } = await start({ headersTimeout: D, keepAliveTimeout: D })
    const conn = await openSocket(port)
    cleanups.push(() => conn.destroy())
    conn.send('POST /reject HTTP/1.1\r\nHost: localhost\r\nContent-Length: 2400\r\n\r\n')
    const rejected = await conn.waitFor((buf) => parseResponse(buf))
    expect(rejected.status).toBe(401)
    // The rest of the body at a healthy 2 kB/s for 1.15 s: more than 3 × every deadline.
    const chunk = Buffer.alloc(100, 'a')
    for (let sent = 0; sent < 2_400 && conn.isOpen(); sent += 100) {
      conn.send(chunk)
      await sleep(50)
    }
    expect(conn.isOpen(), `cut mid-body; ${closes.describe()}`).toBe(true)
    conn.send(getRequest('/'))
    const next = await conn.waitFor((buf) => parseResponse(buf, rejected.end))
    expect(next.status).toBe(200)
    conn.destroy()
    const record = await closes.next()
    expect(summary(record)).toEqual({
      closeReason: 'client_closed',
      stateAtClose: 'idle',
      requests: 2,
      errorCode: null,
    })
  })
})

describe('a request head that takes more than one read', () => {
  /** A guarded server and a connection whose first request has been answered. */
  async function afterOneResponse(options: ConnectionTrackerOptions) {
    const { port, closes } = await start(options)
    const conn = await openSocket(port)
    cleanups.push(() => conn.destroy())
    conn.send(getRequest('/'))
    const first = await conn.waitFor((buf) => parseResponse(buf))
    return { conn, closes, first }
  }

  it('after a response: active within a sweep of its first read, request_headers_timeout counted from that read (not the idle deadline), 408', async () => {
    const { conn, closes, first } = await afterOneResponse({
      headersTimeout: D,
      keepAliveTimeout: FAR,
    })
    await sleep(100)
    // The start of a head, and nothing more.
    conn.send('GET / HTTP/1.1\r\n')
    const sentAt = performance.now()
    const close = await conn.closed
    const record = await closes.next()
    expect(summary(record)).toEqual({
      closeReason: 'request_headers_timeout',
      stateAtClose: 'active',
      requests: 1,
      errorCode: null,
    })
    expect(close.received.subarray(first.end).toString('latin1')).toMatch(/^HTTP\/1\.1 408 /)
    expectDeadline(close.at - sentAt, D, 'client, from the first bytes of the second head')
    // Idle from the first response's end (settled by the next sweep, at most one sweep later)
    // until those bytes came (the 100 ms pause), active from the sweep that saw them in Node's
    // list (at most one sweep later) until the deadline, which runs from the bytes.
    expect(record.stateDurations.idle).toBeGreaterThanOrEqual(100 - SWEEP - 10)
    expect(record.stateDurations.active).toBeGreaterThan(0)
    expectConsistent(record)
  })

  it('arriving when the keep-alive deadline falls: not cut as idle, served once it completes', async () => {
    const { conn, closes, first } = await afterOneResponse({
      headersTimeout: FAR,
      keepAliveTimeout: 400,
    })
    // The next head starts before the idle deadline and ends well after it.
    await sleep(200)
    conn.send('GET / HTTP/1.1\r\n')
    await sleep(600)
    expect(conn.isOpen()).toBe(true)
    conn.send('Host: localhost\r\n\r\n')
    const second = await conn.waitFor((buf) => parseResponse(buf.subarray(first.end)))
    expect(second.status).toBe(200)
    conn.destroy()
    const record = await closes.next()
    expect(record.requests).toBe(2)
    expect(record.closeReason).not.toBe('keep_alive_timeout')
    expectConsistent(record)
  })

  it('begun behind a response not yet sent (pipelined), then stalled: request_headers_timeout from its first byte', async () => {
    const { port, closes } = await start({ headersTimeout: D, keepAliveTimeout: FAR })
    const conn = await openSocket(port)
    cleanups.push(() => conn.destroy())
    // The first request is answered 150 ms later; the second head starts in the same write
    // and never ends. Only Node's list of parsers sees when it began: no read comes after it.
    conn.send(`${getRequest('/later')}GET / HTTP/1.1\r\nHost: localhost\r\n`)
    const sentAt = performance.now()
    const first = await conn.waitFor((buf) => parseResponse(buf))
    expect(first.status).toBe(200)
    const close = await conn.closed
    const record = await closes.next()
    expect(record.closeReason).toBe('request_headers_timeout')
    expect(record.requests).toBe(1)
    expectDeadline(close.at - sentAt, D, 'client, from the stalled head')
    expectConsistent(record)
  })
})

describe('ConnectionTracker on a bare node:https server', () => {
  it('TLS then silence: request_headers_timeout in idle, with the TLS facts recorded', async () => {
    const { port, closes } = await start(
      { handshakeTimeout: FAR, headersTimeout: D },
      { secure: true },
    )
    const result = await tlsThenSilence(port)
    const record = await closes.next()
    const clientMs = result.at - result.establishedAt
    expectDeadline(clientMs, D, 'client, from TLS established')
    expect(parseResponses(result.received, { eof: true })[0]?.status).toBe(408)
    expect(summary(record)).toEqual({
      closeReason: 'request_headers_timeout',
      stateAtClose: 'idle',
      requests: 0,
      errorCode: null,
    })
    expect(record.secure).toBe(true)
    expect(record.handshakeDuration).toBeGreaterThanOrEqual(0)
    expect(record.tls).toMatchObject({ servername: 'localhost', resumed: false })
    expectConsistent(record)
    timings.push({
      suite: 'node:https',
      scenario: 'TLS then silence',
      deadlineMs: D,
      clientMs,
      serverMs: (record.duration ?? 0) - (record.handshakeDuration ?? 0),
      reason: record.closeReason,
    })
  })

  it('300 stalled handshakes due in the same sweep: every one cut, tls_handshake_timeout, none left', async () => {
    // Closing a TLS connection costs real CPU: the sweeper cuts them in slices of a few ms,
    // yielding to I/O in between. None may be lost or cut twice on the way.
    const N = 300
    const { tracker, port, closes } = await start({ handshakeTimeout: D }, { secure: true })
    const conns = await Promise.all(Array.from({ length: N }, () => openSocket(port)))
    await Promise.all(conns.map((conn) => conn.closed))
    const records: ConnectionRecord[] = []
    for (let i = 0; i < N; i++) records.push(await closes.next())
    expect(new Set(records.map((r) => r.id)).size).toBe(N)
    for (const record of records) {
      expect(record.closeReason).toBe('tls_handshake_timeout')
      expect(record.stateAtClose).toBe('new')
      expectDeadline(record.duration ?? -1, D, 'record.duration')
    }
    expect(tracker.snapshot().total).toBe(0)
    expect(tracker.snapshot().closedByReason).toEqual({ tls_handshake_timeout: N })
  })

  it('plain HTTP bytes to the TLS port: tls_handshake_failed at once', async () => {
    const { port, closes } = await start(
      { handshakeTimeout: FAR, headersTimeout: FAR },
      { secure: true },
    )
    const actionAt = Date.now()
    const startedAt = performance.now()
    const result = await rawHttp(port, getRequest('/'))
    const record = await closes.next()
    expect(result.at - startedAt).toBeLessThan(SWEEP + 400)
    expect(summary(record)).toMatchObject({
      closeReason: 'tls_handshake_failed',
      requests: 0,
    })
    expect(record.stateAtClose).toMatch(/^(new|handshaking)$/)
    // OpenSSL's reason, e.g. ERR_SSL_HTTP_REQUEST for plain HTTP sent to a TLS port.
    expect(record.errorCode).toMatch(/^ERR_SSL_/)
    expect(record.handshakeDuration).toBeNull()
    expectPrompt(record, actionAt)
    expectConsistent(record)
  })
})
