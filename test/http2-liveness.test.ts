/**
 * HTTP/2 liveness over real sockets on 127.0.0.1, h2c and h2 (TLS, fixture certificate),
 * with `node:http2` clients:
 *
 * - the dead route: client ⇄ loopback relay ⇄ guarded server; after a request completes and a
 *   PING has been answered, the relay silently drops everything in both directions (nothing
 *   is closed, no FIN, no RST). Only a PING can find this: the server must close the session
 *   with `ping_timeout` within pingInterval × 1.25 + pingTimeout (+ sweeps and margin);
 * - a healthy idle session that answers PINGs is not cut by them: it stays until
 *   keepAliveTimeout (`keep_alive_timeout`, with GOAWAY);
 * - a session that opens no stream closes at headersTimeout (`request_headers_timeout`);
 *   a TLS client that stalls its handshake closes at handshakeTimeout.
 *
 * Sweep every 50 ms. Bounds: no earlier than the deadline − 20 ms, no later than deadline +
 * sweep + 400 ms (event-loop lag on a shared 2-core machine). Sequential: they measure time.
 * CONNGUARD_TIMINGS=1 prints the measured times.
 */
import type { ConnectionRecord } from '@connguard/core'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { partialClientHello } from './helpers/clients.js'
import { printTimings, type TimingRow } from './helpers/guard-timing.js'
import {
  connectH2,
  destroyH2Clients,
  type H2Server,
  h2get,
  type Relay,
  startH2,
  startRelay,
  stopH2Servers,
} from './helpers/http2.js'
import {
  EARLY_MS,
  expectConsistentRecord,
  expectCutWithin,
  LATE_MS,
  sleep,
  waitUntil,
} from './helpers/records.js'

const SWEEP = 50
/** Deadlines a scenario must not reach. */
const FAR = 30_000

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

let relay: Relay | null = null
afterEach(async () => {
  destroyH2Clients()
  await relay?.close()
  relay = null
  await stopH2Servers()
})

/** The one live record of `h2` (the tests open one session at a time). */
function liveRecord(h2: H2Server): ConnectionRecord {
  const all = [...h2.tracker.connections()]
  expect(all, 'live connections').toHaveLength(1)
  return all[0] as ConnectionRecord
}

const MODES = [
  { mode: 'h2c', secure: false },
  { mode: 'h2 (TLS)', secure: true },
] as const

describe.each(MODES)('HTTP/2 liveness, $mode', ({ mode, secure }) => {
  it('finds a dead route by PING: ping_timeout, idle, within pingInterval × 1.25 + pingTimeout', async () => {
    const PING_INTERVAL = 400
    const PING_TIMEOUT = 400
    const h2 = await startH2(
      {
        sweepInterval: SWEEP,
        pingInterval: PING_INTERVAL,
        pingTimeout: PING_TIMEOUT,
        keepAliveTimeout: FAR,
        headersTimeout: FAR,
      },
      { secure },
    )
    relay = await startRelay(h2.port)
    const client = await connectH2(h2.origin, { port: relay.port })
    let clientPings = 0
    client.session.on('ping', () => clientPings++)

    const res = await h2get(client, '/')
    expect(res.status).toBe(200)
    const rec = liveRecord(h2)
    // The route is alive: a PING goes out after pingInterval of silence and is answered.
    await waitUntil(() => rec.pingRtt !== null, {
      timeoutMs: 3_000,
      what: 'a PING answered while the route is alive',
    })
    expect(clientPings).toBeGreaterThanOrEqual(1)
    expect(rec.state).toBe('idle')

    relay.stop()
    const stoppedAt = relay.stoppedAt()
    const closed = await h2.closes.next(undefined, 5_000)
    const detectedMs = h2.closes.closedAt(closed) - stoppedAt

    expect(closed).toBe(rec)
    expect(closed.closeReason).toBe('ping_timeout')
    expect(closed.stateAtClose).toBe('idle')
    expect(closed.httpVersion).toBe('2.0')
    expect(closed.requests).toBe(1)
    expect(closed.peakConcurrentStreams).toBe(1)
    // A PING answered over loopback before the route died.
    expect(closed.pingRtt).not.toBeNull()
    expect(closed.pingRtt as number).toBeGreaterThanOrEqual(0)
    expect(closed.pingRtt as number).toBeLessThan(100)
    expect(closed.secure).toBe(secure)
    expectConsistentRecord(closed)
    // At most one PING interval (quarter-interval checks) of silence, then the PING's timeout.
    const bound = PING_INTERVAL * 1.25 + PING_TIMEOUT
    expect(
      detectedMs,
      `detected ${detectedMs.toFixed(0)} ms after the route died`,
    ).toBeGreaterThanOrEqual(PING_TIMEOUT - EARLY_MS)
    expect(
      detectedMs,
      `detected ${detectedMs.toFixed(0)} ms after the route died`,
    ).toBeLessThanOrEqual(bound + SWEEP + LATE_MS)
    // The PING that found it went out and was dropped on the way; the client never knew.
    expect(relay.dropped.toClient).toBeGreaterThan(0)
    expect(client.isClosed()).toBe(false)
    timings.push({
      suite: mode,
      scenario: `dead route (pingInterval ${PING_INTERVAL}, pingTimeout ${PING_TIMEOUT}), from relay stop; pingRtt ${(closed.pingRtt as number).toFixed(2)} ms`,
      deadlineMs: bound,
      clientMs: detectedMs,
      serverMs: closed.duration,
      reason: closed.closeReason,
    })
  })

  it('finds a dead route by PING while a stream is open: ping_timeout, active', async () => {
    const PING_INTERVAL = 400
    const PING_TIMEOUT = 400
    const h2 = await startH2(
      {
        sweepInterval: SWEEP,
        pingInterval: PING_INTERVAL,
        pingTimeout: PING_TIMEOUT,
        keepAliveTimeout: FAR,
        headersTimeout: FAR,
      },
      { secure },
    )
    relay = await startRelay(h2.port)
    const client = await connectH2(h2.origin, { port: relay.port })
    // A stream no deadline of the current release bounds: only the PING can end it.
    const hanging = h2get(client, '/hang', 20_000).catch((err: Error) => err)
    await waitUntil(() => h2.tracker.snapshot().active === 1, { what: 'stream open' })
    const rec = liveRecord(h2)
    await waitUntil(() => rec.pingRtt !== null, {
      timeoutMs: 3_000,
      what: 'a PING answered while the route is alive',
    })
    relay.stop()
    const closed = await h2.closes.next(undefined, 5_000)
    const detectedMs = h2.closes.closedAt(closed) - relay.stoppedAt()
    expect(closed).toBe(rec)
    expect(closed.closeReason).toBe('ping_timeout')
    expect(closed.stateAtClose).toBe('active')
    expect(closed.requests).toBe(1)
    expectConsistentRecord(closed)
    const bound = PING_INTERVAL * 1.25 + PING_TIMEOUT
    expect(detectedMs).toBeGreaterThanOrEqual(PING_TIMEOUT - EARLY_MS)
    expect(detectedMs).toBeLessThanOrEqual(bound + SWEEP + LATE_MS)
    client.destroy()
    expect(await hanging).toBeInstanceOf(Error)
    timings.push({
      suite: mode,
      scenario: 'dead route with a stream open, from relay stop',
      deadlineMs: bound,
      clientMs: detectedMs,
      serverMs: closed.duration,
      reason: closed.closeReason,
    })
  })

  it('keeps a healthy idle session that answers PINGs until keepAliveTimeout', async () => {
    const KEEP_ALIVE = 1_500
    const h2 = await startH2(
      {
        sweepInterval: SWEEP,
        pingInterval: 200,
        pingTimeout: 400,
        keepAliveTimeout: KEEP_ALIVE,
        headersTimeout: FAR,
      },
      { secure },
    )
    const client = await connectH2(h2.origin)
    let clientPings = 0
    client.session.on('ping', () => clientPings++)
    const res = await h2get(client, '/')
    expect(res.status).toBe(200)
    const rec = liveRecord(h2)

    await sleep(1_000)
    expect(client.isClosed(), 'closed before keepAliveTimeout').toBe(false)
    expect(rec.state).toBe('idle')
    expect(rec.pingRtt, 'PINGs answered while idle').not.toBeNull()
    expect(clientPings).toBeGreaterThanOrEqual(2)

    const closed = await h2.closes.next(undefined, 5_000)
    const clientClosedAt = await client.closed
    const idleMs = h2.closes.closedAt(closed) - h2.closes.lastEntered(closed, 'idle')
    expect(closed).toBe(rec)
    expect(closed.closeReason).toBe('keep_alive_timeout')
    expect(closed.stateAtClose).toBe('idle')
    expect(closed.pingRtt).not.toBeNull()
    expectCutWithin(idleMs, KEEP_ALIVE, SWEEP, 'idle session')
    expectCutWithin(clientClosedAt - res.endedAt, KEEP_ALIVE, SWEEP, 'client')
    // Closed with GOAWAY (NO_ERROR), not torn down.
    expect(client.goawayCode()).toBe(0)
    expect(client.goawayAt()).toBeLessThanOrEqual(clientClosedAt)
    expectConsistentRecord(closed)
    timings.push({
      suite: mode,
      scenario: `healthy idle session (pingInterval 200, ${clientPings} PINGs answered)`,
      deadlineMs: KEEP_ALIVE,
      clientMs: clientClosedAt - res.endedAt,
      serverMs: idleMs,
      reason: closed.closeReason,
    })
  })

  it('closes a session that opens no stream at headersTimeout: request_headers_timeout', async () => {
    const HEADERS = 500
    const h2 = await startH2(
      { sweepInterval: SWEEP, headersTimeout: HEADERS, keepAliveTimeout: FAR },
      { secure },
    )
    const client = await connectH2(h2.origin)
    const rec = liveRecord(h2)
    // Under TLS 1.3 the client is done with the handshake a moment before the server.
    await waitUntil(() => rec.state === 'idle', { timeoutMs: 2_000, what: 'session idle' })
    expect(rec.httpVersion).toBe('2.0')
    const closed = await h2.closes.next(undefined, 5_000)
    const clientClosedAt = await client.closed
    // From establishment (accept for h2c, the end of the handshake for TLS).
    const serverMs = (closed.duration as number) - (closed.handshakeDuration ?? 0)
    expect(closed.closeReason).toBe('request_headers_timeout')
    expect(closed.stateAtClose).toBe('idle')
    expect(closed.requests).toBe(0)
    expect(closed.timeToFirstRequest).toBeNull()
    expectCutWithin(serverMs, HEADERS, SWEEP, 'server')
    expectCutWithin(clientClosedAt - client.connectedAt, HEADERS, SWEEP, 'client')
    expect(client.goawayAt()).not.toBeNaN()
    if (secure) expect(closed.tls?.alpnProtocol).toBe('h2')
    expectConsistentRecord(closed)
    timings.push({
      suite: mode,
      scenario: 'session with no stream',
      deadlineMs: HEADERS,
      clientMs: clientClosedAt - client.connectedAt,
      serverMs,
      reason: closed.closeReason,
    })
  })
})

describe('HTTP/2 over TLS: handshake', () => {
  it('closes a client that stalls its TLS handshake: tls_handshake_timeout', async () => {
    const HANDSHAKE = 500
    const h2 = await startH2(
      { sweepInterval: SWEEP, handshakeTimeout: HANDSHAKE, headersTimeout: FAR },
      { secure: true },
    )
    const result = await partialClientHello(h2.port, { timeoutMs: 5_000 })
    const closed = await h2.closes.next(undefined, 5_000)
    expect(closed.closeReason).toBe('tls_handshake_timeout')
    expect(['new', 'handshaking']).toContain(closed.stateAtClose)
    expect(closed.tls).toBeNull()
    expect(closed.httpVersion).toBeNull()
    expectCutWithin(result.heldMs, HANDSHAKE, SWEEP, 'client')
    expectCutWithin(closed.duration as number, HANDSHAKE, SWEEP, 'server')
    expectConsistentRecord(closed)
    timings.push({
      suite: 'h2 (TLS)',
      scenario: 'stalled TLS handshake (half a ClientHello)',
      deadlineMs: HANDSHAKE,
      clientMs: result.heldMs,
      serverMs: closed.duration,
      reason: closed.closeReason,
    })
  })
})
