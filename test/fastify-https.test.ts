/**
 * @connguard/fastify on an HTTPS Fastify server (fixture certificate), the TLS handshake
 * phase: clients that stall before, inside and right after the handshake, over real sockets
 * on 127.0.0.1. The scenarios common to HTTP and HTTPS are in fastify.test.ts.
 */
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  captureClientHello,
  getRequest,
  keepAliveRequests,
  openSocket,
  partialClientHello,
  rawHttp,
  tlsThenSilence,
} from './helpers/clients.js'
import { startGuarded, stopApps } from './helpers/fastify-app.js'
import { parseResponses } from './helpers/http-response.js'
import {
  expectCutWithin,
  formatTimings,
  sleep,
  type TimingRow,
  waitUntil,
} from './helpers/records.js'
import { clientTlsOptions } from './helpers/tls.js'

const SWEEP = 50

const timings: TimingRow[] = []

afterEach(async () => {
  await stopApps()
})

afterAll(() => {
  console.log(formatTimings('test/fastify-https.test.ts', timings))
})

describe('https: TLS handshake phase', () => {
  it('partial ClientHello then silence: tls_handshake_timeout in state handshaking', async () => {
    const handshakeTimeout = 500
    const { app, port, closes } = await startGuarded(
      { handshakeTimeout, headersTimeout: 2000, keepAliveTimeout: 2000, sweepInterval: SWEEP },
      { tls: true },
    )
    const states: string[] = []
    app.connguard.on('transition', (_rec, _from, to) => states.push(to))
    const result = await partialClientHello(port)
    const rec = await closes.next()
    expectCutWithin(result.heldMs, handshakeTimeout, SWEEP, 'client')
    expectCutWithin(rec.duration ?? Number.NaN, handshakeTimeout, SWEEP, 'server')
    expect(result.received.length).toBe(0)
    expect(rec.closeReason).toBe('tls_handshake_timeout')
    expect(rec.stateAtClose).toBe('handshaking')
    expect(states).toEqual(['handshaking', 'closed'])
    // Wire bytes: exactly the part of the ClientHello that was sent.
    expect(rec.bytesRead).toBe(result.sent)
    expect(rec.secure).toBe(true)
    expect(rec.tls).toBeNull()
    expect(rec.handshakeDuration).toBeNull()
    expect(rec.requests).toBe(0)
    expect(rec.errorCode).toBeNull()
    expect(rec.stateDurations.handshaking).toBeGreaterThan(0)
    timings.push({
      scenario: 'https: partial ClientHello, then silence',
      deadlineMs: handshakeTimeout,
      clientMs: result.heldMs,
      serverMs: rec.duration,
      reason: rec.closeReason,
    })
  })

  it('TLS established then silence: request_headers_timeout with a 408, in state idle', async () => {
    const headersTimeout = 500
    const { port, closes } = await startGuarded(
      { handshakeTimeout: 2000, headersTimeout, keepAliveTimeout: 2000, sweepInterval: SWEEP },
      { tls: true },
    )
    const result = await tlsThenSilence(port)
    const rec = await closes.next()
    // The first request's head deadline runs from the end of the handshake.
    const clientMs = result.at - result.establishedAt
    const serverMs = (rec.duration ?? Number.NaN) - (rec.handshakeDuration ?? Number.NaN)
    expectCutWithin(clientMs, headersTimeout, SWEEP, 'client')
    expectCutWithin(serverMs, headersTimeout, SWEEP, 'server')
    expect(parseResponses(result.received, { eof: true })[0]?.status).toBe(408)
    expect(rec.closeReason).toBe('request_headers_timeout')
    expect(rec.stateAtClose).toBe('idle')
    expect(rec.handshakeDuration).toBeGreaterThan(0)
    expect(rec.handshakeDuration).toBeLessThan(500)
    expect(rec.timeToFirstRequest).toBeNull()
    expect(rec.requests).toBe(0)
    // Ciphertext on the wire: the handshake itself.
    expect(rec.bytesRead).toBeGreaterThan(0)
    expect(rec.bytesWritten).toBeGreaterThan(0)
    expect(rec.tls).toMatchObject({
      protocol: 'TLSv1.3',
      cipher: expect.any(String),
      servername: 'localhost',
      resumed: false,
    })
    timings.push({
      scenario: 'https: TLS established, then silence',
      deadlineMs: headersTimeout,
      clientMs,
      serverMs,
      reason: rec.closeReason,
    })
  })

  it('not TLS at all (plain HTTP to the HTTPS port): tls_handshake_failed, promptly', async () => {
    const handshakeTimeout = 1000
    const { port, closes } = await startGuarded(
      { handshakeTimeout, headersTimeout: 2000, keepAliveTimeout: 2000, sweepInterval: SWEEP },
      { tls: true },
    )
    const result = await rawHttp(port, 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')
    const rec = await closes.next()
    expect(rec.closeReason).toBe('tls_handshake_failed')
    expect(rec.errorCode).toEqual(expect.any(String))
    expect(rec.stateAtClose === 'new' || rec.stateAtClose === 'handshaking').toBe(true)
    expect(rec.bytesRead).toBeGreaterThan(0)
    expect(rec.handshakeDuration).toBeNull()
    // The TLS stack rejects it at once: no wait for the handshake deadline.
    expect(result.at - result.openedAt).toBeLessThan(handshakeTimeout / 2)
    timings.push({
      scenario: 'https: plain HTTP bytes to the TLS port',
      deadlineMs: `${handshakeTimeout} (not reached)`,
      clientMs: result.at - result.openedAt,
      serverMs: rec.duration,
      reason: rec.closeReason,
    })
  })

  it('client hangs up mid-handshake: client_closed, not a timeout', async () => {
    const { app, port, closes } = await startGuarded(
      {
        handshakeTimeout: 2000,
        headersTimeout: 2000,
        keepAliveTimeout: 2000,
        sweepInterval: SWEEP,
      },
      { tls: true },
    )
    const hello = await captureClientHello()
    const conn = await openSocket(port)
    const clientPort = conn.socket.localPort
    try {
      conn.send(hello.subarray(0, 20))
      await waitUntil(() => app.connguard.snapshot().handshaking === 1, {
        what: 'state handshaking',
      })
      conn.destroy()
      const rec = await closes.forClientPort(clientPort)
      expect(rec.closeReason).toBe('client_closed')
      expect(rec.stateAtClose).toBe('handshaking')
      expect(rec.bytesRead).toBe(20)
      expect(rec.duration).toBeLessThan(2000)
    } finally {
      conn.destroy()
    }
  })

  it('a healthy TLS client is never cut by the handshake or header deadlines', async () => {
    const deadline = 300
    const { app, port, closes } = await startGuarded(
      {
        handshakeTimeout: deadline,
        headersTimeout: deadline,
        keepAliveTimeout: deadline,
        sweepInterval: SWEEP,
      },
      { tls: true },
    )
    const opened = performance.now()
    const result = await keepAliveRequests(port, { tls: true, count: 3, pauseMs: deadline / 2 })
    expect(result.statuses).toEqual([200, 200, 200])
    expect(result.close).toBeUndefined()
    const rec = await closes.next()
    expect(rec.closeReason).toBe('client_closed')
    expect(rec.requests).toBe(3)
    expect(rec.httpVersion).toBe('1.1')
    expect(rec.handshakeDuration).toBeGreaterThan(0)
    expect(rec.handshakeDuration).toBeLessThan(deadline)
    expect(rec.timeToFirstRequest).toBeGreaterThanOrEqual(0)
    expect(rec.tls?.alpnProtocol).toBe(false)
    // Lived longer than every deadline in total.
    expect(performance.now() - opened).toBeGreaterThan(deadline)
    await waitUntil(() => app.connguard.snapshot().total === 0, { what: 'all closed' })
    expect(app.connguard.snapshot().closedByReason).toEqual({ client_closed: 1 })
  })

  it('a resumed TLS session is recorded as resumed, with its TLS parameters; equal parameters share one object', async () => {
    const { port, closes } = await startGuarded(
      {
        handshakeTimeout: 2000,
        headersTimeout: 2000,
        keepAliveTimeout: 2000,
        sweepInterval: SWEEP,
      },
      { tls: true },
    )
    /** One TLS connection, one `Connection: close` request; resolves when the server closes. */
    const connectOnce = (session?: Buffer) =>
      new Promise<{
        session: Buffer | undefined
        reused: boolean
        localPort: number | undefined
        text: string
      }>((resolve, reject) => {
        const socket = tls.connect({
          host: '127.0.0.1',
          port,
          ...clientTlsOptions,
          ...(session && { session }),
        })
        const timer = setTimeout(() => {
          socket.destroy()
          reject(new Error('TLS client timed out'))
        }, 5000)
        let ticket: Buffer | undefined
        let reused = false
        let localPort: number | undefined
        let text = ''
        socket.on('session', (s: Buffer) => {
          ticket = s
        })
        socket.on('secureConnect', () => {
          reused = socket.isSessionReused()
          localPort = socket.localPort
          socket.write(getRequest('/', { Connection: 'close' }))
        })
        socket.on('data', (chunk: Buffer) => {
          text += chunk.toString('latin1')
        })
        socket.on('error', (err) => {
          clearTimeout(timer)
          reject(err)
        })
        socket.on('close', () => {
          clearTimeout(timer)
          resolve({ session: ticket, reused, localPort, text })
        })
      })
    const first = await connectOnce()
    expect(first.text.startsWith('HTTP/1.1 200 ')).toBe(true)
    expect(first.session).toBeDefined()
    const firstRec = await closes.forClientPort(first.localPort)
    const second = await connectOnce(first.session)
    expect(second.reused).toBe(true)
    const secondRec = await closes.forClientPort(second.localPort)
    expect(firstRec.tls).toMatchObject({
      protocol: 'TLSv1.3',
      servername: 'localhost',
      resumed: false,
    })
    expect(secondRec.tls).toMatchObject({ protocol: 'TLSv1.3', resumed: true })
    expect(typeof secondRec.tls?.cipher).toBe('string')
    // A full handshake again: the same facts as the first, so the same shared, frozen object.
    const third = await connectOnce()
    expect(third.reused).toBe(false)
    const thirdRec = await closes.forClientPort(third.localPort)
    expect(thirdRec.tls).toMatchObject({ resumed: false, servername: 'localhost' })
    expect(thirdRec.tls).toBe(firstRec.tls)
    expect(Object.isFrozen(thirdRec.tls)).toBe(true)
    for (const rec of [firstRec, secondRec, thirdRec]) {
      expect(rec.requests).toBe(1)
      // The client asked to close after the response.
      expect(rec.closeReason).toBe('client_closed')
      // Recorded; in whole ms, so a resumed handshake on loopback can take 0 (seen under load,
      // where accept and the whole handshake are read in one turn of the event loop).
      expect(typeof rec.handshakeDuration).toBe('number')
      expect(rec.handshakeDuration).toBeGreaterThanOrEqual(0)
    }
  })

  it('handshakes from many silent clients are all cut, and the server still serves', async () => {
    const handshakeTimeout = 400
    const { app, port, closes } = await startGuarded(
      { handshakeTimeout, headersTimeout: 2000, keepAliveTimeout: 2000, sweepInterval: SWEEP },
      { tls: true },
    )
    const stalled = await Promise.all(Array.from({ length: 20 }, () => partialClientHello(port)))
    for (const result of stalled) expectCutWithin(result.heldMs, handshakeTimeout, SWEEP, 'client')
    await waitUntil(() => closes.records.length === 20, { what: '20 records closed' })
    expect(closes.records.every((r) => r.closeReason === 'tls_handshake_timeout')).toBe(true)
    expect(app.connguard.snapshot()).toMatchObject({
      total: 0,
      closedByReason: { tls_handshake_timeout: 20 },
    })
    const healthy = await keepAliveRequests(port, { tls: true, count: 1 })
    expect(healthy.statuses).toEqual([200])
    await sleep(0)
  })
})
