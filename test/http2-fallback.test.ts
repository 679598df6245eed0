/**
 * HTTP/1.1 fallback on an HTTP/2 secure server with `allowHTTP1`, over real sockets on
 * 127.0.0.1 (fixture certificate): a client that negotiates `http/1.1` by ALPN is an
 * HTTP/1.1 connection (httpVersion '1.1', HTTP/1 deadlines), an `h2` client on the same
 * server an HTTP/2 session, and the one tracker keeps them apart, also when it has to poll
 * idle connections because Node's parser did not report a request's first byte.
 *
 * Sweep every 50 ms; timed closes must land in [deadline − 20, deadline + sweep + 400] ms.
 * CONNGUARD_TIMINGS=1 prints the measured times.
 */
import https from 'node:https'
import { performance } from 'node:perf_hooks'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { getRequest, openSocket } from './helpers/clients.js'
import { printTimings, type TimingRow } from './helpers/guard-timing.js'
import { parseResponses } from './helpers/http-response.js'
import {
  connectH2,
  destroyH2Clients,
  h2get,
  recordOf,
  startH2,
  stopH2Servers,
} from './helpers/http2.js'
import { expectConsistentRecord, expectCutWithin, sleep } from './helpers/records.js'
import { clientTlsOptions } from './helpers/tls.js'

const SWEEP = 50
/** Deadlines a scenario must not reach. */
const FAR = 30_000
const BASE = { sweepInterval: SWEEP, headersTimeout: FAR, keepAliveTimeout: FAR }

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

afterEach(async () => {
  destroyH2Clients()
  await stopH2Servers()
})

describe('HTTP/1.1 fallback on an allowHTTP1 secure server', () => {
  /** One GET over HTTPS/1.1 (ALPN http/1.1) on a keep-alive agent. */
  function get11(port: number, agent: https.Agent): Promise<{ status: number; endedAt: number }> {
    return new Promise((resolve, reject) => {
      const req = https.request(
        { host: '127.0.0.1', port, path: '/', agent, ...clientTlsOptions },
        (res) => {
          res.resume()
          res.on('end', () => resolve({ status: res.statusCode ?? 0, endedAt: performance.now() }))
        },
      )
      req.on('error', reject)
      req.end()
    })
  }

  it('tracks an HTTPS/1.1 client as HTTP/1.1 and cuts it by the keep-alive deadline', async () => {
    // At least 1 s: the header says `Keep-Alive: timeout=<whole seconds>`, and Node 24's agent
    // does not reuse a socket advertised with timeout=0.
    const KEEP_ALIVE = 1_200
    const h2 = await startH2(
      { ...BASE, keepAliveTimeout: KEEP_ALIVE },
      { secure: true, allowHTTP1: true },
    )
    // One raw TLS connection offering only http/1.1: an agent may open a new socket per
    // request (Node 24's did here), and this test is about one keep-alive connection.
    const conn = await openSocket(h2.port, {
      tls: true,
      tlsOptions: { ALPNProtocols: ['http/1.1'] },
    })
    const responses = (n: number) =>
      conn.waitFor((b) => (parseResponses(b).length >= n ? parseResponses(b) : undefined))
    try {
      conn.send(getRequest('/'))
      expect((await responses(1))[0]?.status).toBe(200)
      conn.send(getRequest('/'))
      expect((await responses(2))[1]?.status).toBe(200)
      const second = { endedAt: performance.now() }
      // One keep-alive socket normally; count over the HTTP/1.1 records rather than index one.
      const recs = [...h2.tracker.connections()].filter((r) => r.httpVersion === '1.1')
      expect(recs.length).toBeGreaterThanOrEqual(1)
      expect(recs.reduce((n, r) => n + r.requests, 0)).toBe(2)
      for (const r of recs) expect(r.state).toBe('idle')

      // An h2 client on the same server is HTTP/2.
      const client = await connectH2(h2.origin)
      expect((await h2get(client, '/')).status).toBe(200)
      expect(recordOf(h2, client.localPort).httpVersion).toBe('2.0')

      const closed = await h2.closes.next((r) => r.httpVersion === '1.1', 5_000)
      expect(recs).toContain(closed)
      expect(closed.closeReason).toBe('keep_alive_timeout')
      expect(closed.tls?.alpnProtocol).toBe('http/1.1')
      expect(closed.peakConcurrentStreams).toBe(0)
      expect(closed.pingRtt).toBeNull()
      const idleMs = h2.closes.closedAt(closed) - h2.closes.lastEntered(closed, 'idle')
      expectCutWithin(idleMs, KEEP_ALIVE, SWEEP, 'HTTP/1.1 keep-alive')
      expectConsistentRecord(closed)
      timings.push({
        suite: 'h2 (TLS) + allowHTTP1',
        scenario: 'HTTPS/1.1 client, keep-alive idle',
        deadlineMs: KEEP_ALIVE,
        clientMs: performance.now() - second.endedAt,
        serverMs: idleMs,
        reason: closed.closeReason,
      })
    } finally {
      conn.destroy()
    }
  })

  it('keeps HTTP/2 sessions on HTTP/2 deadlines when the tracker polls idle HTTP/1 connections', async () => {
    // The parser-hook fallback (docs/ARCHITECTURE.md): once an HTTP/1 connection has no
    // parser to hook, the tracker polls the bytesRead of idle connections to spot new
    // requests. An HTTP/2 session reads bytes when idle too (PING ACKs, SETTINGS,
    // WINDOW_UPDATE) that are not the start of an HTTP/1 request.
    const KEEP_ALIVE = 1_000
    const h2 = await startH2(
      { ...BASE, keepAliveTimeout: KEEP_ALIVE, headersTimeout: 400, pingInterval: 100 },
      { secure: true, allowHTTP1: true },
    )
    // Simulate a Node whose HTTP/1 connections carry no parser where the binding looks (as
    // packages/core/test does): hidden between Node's 'secureConnection' listener, which
    // creates it, and the tracker's, then given back before any request byte is read.
    const hide = (socket: unknown) => {
      const s = socket as { parser?: unknown }
      const parser = s.parser
      if (parser == null) return
      s.parser = null
      setImmediate(() => {
        s.parser = parser
      })
    }
    const listeners = h2.server.listeners('secureConnection') as ((...a: unknown[]) => void)[]
    h2.server.removeAllListeners('secureConnection')
    h2.server.on('secureConnection', listeners[0] as (...a: unknown[]) => void)
    h2.server.on('secureConnection', hide)
    for (const l of listeners.slice(1)) h2.server.on('secureConnection', l)
    const agent = new https.Agent({ keepAlive: true, maxSockets: 1, ALPNProtocols: ['http/1.1'] })
    try {
      expect((await get11(h2.port, agent)).status).toBe(200)
      expect((await get11(h2.port, agent)).status).toBe(200)
      agent.destroy()
      await h2.closes.next((r) => r.httpVersion === '1.1', 5_000)

      const client = await connectH2(h2.origin)
      const res = await h2get(client, '/')
      expect(res.status).toBe(200)
      const rec = recordOf(h2, client.localPort)
      await sleep(300)
      expect(rec.state, 'an idle session with PINGs answered is still idle').toBe('idle')
      const closed = await h2.closes.next((r) => r.httpVersion === '2.0', 5_000)
      expect(closed).toBe(rec)
      expect(closed.requests).toBe(1)
      expect(closed.stateAtClose).toBe('idle')
      expect(closed.closeReason).toBe('keep_alive_timeout')
      const idleMs = h2.closes.closedAt(closed) - h2.closes.lastEntered(closed, 'idle')
      expectCutWithin(idleMs, KEEP_ALIVE, SWEEP, 'HTTP/2 keep-alive')
      expectConsistentRecord(closed)
    } finally {
      agent.destroy()
    }
  })
})
