/**
 * `node:http2` client sessions (`http2.connect()`) with connguard's PING liveness:
 * `createClientTracker(options).guardSession(session, authority)`, real sockets on
 * 127.0.0.1, client ⇄ loopback relay ⇄ node:http2 server, the relay's existing route
 * dying silently as in test/client-http2.test.ts.
 *
 * - unguarded, the session stays open on the dead route and a request just hangs;
 * - guarded, the session is destroyed with PingTimeoutError (`ping_timeout`) within
 *   readIdleTimeout + pingTimeout + margin, with no request in flight; a stream in flight
 *   fails with it; a new session through the same relay works;
 * - a healthy idle session answers its PINGs and is kept;
 * - states and close reasons: new → handshaking → idle → active → idle → closed, the
 *   application's close() is `client_closed`, the server's GOAWAY `server_closed`; h2c;
 * - the tracker feeds the exporters like a dispatcher's; bad arguments throw typed errors.
 */
import http2, { type ClientHttp2Session } from 'node:http2'
import type net from 'node:net'
import { performance } from 'node:perf_hooks'
import { createClientTracker, PingTimeoutError } from '@connguard/client'
import { CLIENT_METRIC_NAMES, registerPrometheus } from '@connguard/prometheus'
import { Registry } from 'prom-client'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { clientConnect, startH2Server, watchClient } from './helpers/client.js'
import { handler, startRelay } from './helpers/http2.js'
import { parseSamples, sampleValue } from './helpers/prom-text.js'
import { sleep } from './helpers/records.js'

const READ_IDLE = 300
const PING_TIMEOUT = 300
/** Event-loop lag on a shared machine, plus two sweeps of 75 ms. */
const DETECT_MAX = READ_IDLE + PING_TIMEOUT + 2 * 75 + 400

const timings: string[] = []
afterAll(() => {
  if (process.env.CONNGUARD_TIMINGS === '1' && timings.length > 0) {
    console.log(`node:http2 session timings\n${timings.join('\n')}`)
  }
})

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

function connect(authority: string, options: http2.SecureClientSessionOptions = {}) {
  const session = http2.connect(authority, { ...clientConnect, ...options })
  const errors: Error[] = []
  session.on('error', (err) => errors.push(err))
  cleanups.push(() => {
    session.destroy()
  })
  return { session, errors }
}

function tracker(options: Record<string, unknown> = {}) {
  const t = createClientTracker({
    readIdleTimeout: READ_IDLE,
    pingTimeout: PING_TIMEOUT,
    ...options,
  })
  cleanups.push(() => t.close())
  return t
}

/** One GET on the session: status and body, or the stream's error. */
function get(session: ClientHttp2Session, path = '/', timeoutMs = 5_000) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const stream = session.request({ ':path': path })
    let status = 0
    let body = ''
    const timer = setTimeout(() => {
      stream.close()
      reject(Object.assign(new Error('timed out'), { name: 'TimeoutError' }))
    }, timeoutMs)
    stream.on('response', (headers) => {
      status = Number(headers[':status'])
    })
    stream.setEncoding('utf8')
    stream.on('data', (chunk: string) => {
      body += chunk
    })
    // Resolved on 'close' (after 'end'): the stream, and so the request, is over.
    stream.on('close', () => {
      clearTimeout(timer)
      if (stream.readableEnded) resolve({ status, body })
    })
    stream.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
  })
}

async function route() {
  const server = await startH2Server()
  const relay = await startRelay(server.port)
  cleanups.push(
    () => server.close(),
    () => relay.close(),
  )
  return { server, relay, origin: `https://127.0.0.1:${relay.port}` }
}

describe('node:http2 client sessions: guardSession', () => {
  it('unguarded: the session stays open on the dead route and a request hangs', async () => {
    const { relay, origin } = await route()
    const { session } = connect(origin)
    expect(await get(session)).toEqual({ status: 200, body: 'ok' })
    relay.stopExisting()
    await sleep(1_000)
    await expect(get(session, '/', 1_000)).rejects.toMatchObject({ name: 'TimeoutError' })
    timings.push(
      'unguarded session: request timed out (1 s), session still open 2 s after the route died',
    )
    expect(session.destroyed).toBe(false)
    expect(session.closed).toBe(false)
  })

  it('guarded: the dead session is destroyed with ping_timeout, with no request in flight; a new session works', async () => {
    const { relay, origin } = await route()
    const t = tracker()
    const watch = watchClient(t)
    const registry = new Registry()
    cleanups.push(registerPrometheus(t, { registry }))
    const { session, errors } = connect(origin)
    const rec = t.guardSession(session, origin)
    expect(rec.origin).toBe(origin)
    expect(await get(session)).toEqual({ status: 200, body: 'ok' })
    expect(rec.state).toBe('idle')
    const closed = new Promise<void>((resolve) => session.once('close', () => resolve()))
    const lastRead = performance.now()
    relay.stopExisting()
    await watch.closeOf(rec, 3_000)
    const detected = watch.closedAt(rec) - lastRead
    timings.push(`guarded session: ping_timeout ${detected.toFixed(0)} ms after the last byte read`)
    expect(rec.closeReason).toBe('ping_timeout')
    expect(rec.errorCode).toBe('CONNGUARD_ERR_PING_TIMEOUT')
    expect(rec.stateAtClose).toBe('idle')
    expect(rec.pingsSent).toBeGreaterThanOrEqual(1)
    expect(detected).toBeGreaterThanOrEqual(READ_IDLE + PING_TIMEOUT - 20)
    expect(detected).toBeLessThanOrEqual(DETECT_MAX)
    await closed
    expect(session.destroyed).toBe(true)
    // The application hears of it as of any network error: 'error', then 'close'.
    expect(errors).toHaveLength(1)
    expect(errors[0]).toBeInstanceOf(PingTimeoutError)

    // What the application does on 'close': a new session, through the same relay.
    const next = connect(origin).session
    t.guardSession(next, origin)
    expect(await get(next)).toEqual({ status: 200, body: 'ok' })
    expect(relay.accepted()).toBe(2)
    const m = parseSamples(await registry.metrics())
    const peer = {
      server_address: '127.0.0.1',
      server_port: String(relay.port),
      protocol_version: '2',
    }
    expect(
      sampleValue(m, `connguard_${CLIENT_METRIC_NAMES.connectionDuration}_count`, {
        reason: 'ping_timeout',
        ...peer,
      }),
    ).toBe(1)
    expect(
      sampleValue(m, `connguard_${CLIENT_METRIC_NAMES.openConnections}`, {
        state: 'idle',
        ...peer,
      }),
    ).toBe(1)
  })

  it('a stream in flight on the dead session fails fast with PingTimeoutError', async () => {
    const { relay, origin } = await route()
    const t = tracker()
    const { session } = connect(origin)
    const rec = t.guardSession(session, origin)
    await get(session)
    relay.stopExisting()
    const started = performance.now()
    const err = await get(session, '/', 5_000).then(
      () => null,
      (e: unknown) => e as Error & { code?: string },
    )
    const took = performance.now() - started
    timings.push(`stream in flight: failed after ${took.toFixed(0)} ms with PingTimeoutError`)
    expect(err?.code).toBe('CONNGUARD_ERR_PING_TIMEOUT')
    expect(took).toBeLessThanOrEqual(DETECT_MAX)
    await sleep(50)
    expect(rec.closeReason).toBe('ping_timeout')
    expect(rec.stateAtClose).toBe('active')
  })

  it('a healthy idle session answers its PINGs and is kept', async () => {
    const { relay, origin } = await route()
    const t = tracker({ readIdleTimeout: 150 })
    const { session } = connect(origin)
    const rec = t.guardSession(session, origin)
    await get(session)
    await sleep(1_000)
    expect(rec.state).toBe('idle')
    expect(rec.pingsSent).toBeGreaterThanOrEqual(3)
    expect(rec.pingRtt).not.toBeNull()
    expect(await get(session)).toEqual({ status: 200, body: 'ok' })
    expect(rec.requests).toBe(2)
    expect(relay.accepted()).toBe(1)
  })

  it('states over TLS; the application’s close() is client_closed, the server’s GOAWAY server_closed', async () => {
    const { server, origin } = await route()
    const t = tracker({ readIdleTimeout: false })
    const watch = watchClient(t)
    const { session } = connect(origin)
    const rec = t.guardSession(session, origin)
    expect(rec.state).toBe('new')
    await get(session, '/slow?ms=50')
    session.close()
    await watch.closeOf(rec, 2_000)
    expect(rec.closeReason).toBe('client_closed')
    const moves = watch.transitions.map(([, f, to]) => `${f}>${to}`)
    expect(moves).toEqual([
      'new>handshaking',
      'handshaking>idle',
      'idle>active',
      'active>idle',
      'idle>closed',
    ])
    expect(rec).toMatchObject({ secure: true, httpVersion: '2', requests: 1, pingsSent: 0 })
    expect(rec.tls).toMatchObject({ alpnProtocol: 'h2', servername: 'localhost' })
    expect(rec.connectDuration).not.toBeNull()
    expect(rec.handshakeDuration).not.toBeNull()
    expect(rec.bytesRead).toBeGreaterThan(0)

    const second = connect(origin).session
    const rec2 = t.guardSession(second, origin)
    await get(second)
    server.endAll()
    await watch.closeOf(rec2, 2_000)
    expect(rec2.closeReason).toBe('server_closed')
  })

  it('h2c (plain http2.connect) is HTTP/2 too; a session guarded after it connected starts idle', async () => {
    const server = http2.createServer(handler)
    const sessions = new Set<http2.ServerHttp2Session>()
    server.on('session', (s) => sessions.add(s))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    cleanups.push(() => {
      for (const s of sessions) s.destroy()
      server.close()
    })
    const origin = `http://127.0.0.1:${(server.address() as net.AddressInfo).port}`
    const t = tracker()
    const session = http2.connect(origin)
    session.on('error', () => {})
    cleanups.push(() => {
      session.destroy()
    })
    await new Promise((resolve) => session.once('connect', resolve))
    const rec = t.guardSession(session, origin)
    expect(rec).toMatchObject({ state: 'idle', secure: false, httpVersion: '2', tls: null })
    expect(await get(session)).toEqual({ status: 200, body: 'ok' })
    expect(rec.requests).toBe(1)
    expect(rec.remotePort).toBe((server.address() as net.AddressInfo).port)
  })

  it('validates its arguments with stable codes', async () => {
    const code = (fn: () => unknown) => {
      try {
        fn()
      } catch (err) {
        return (err as { code?: string }).code
      }
      return undefined
    }
    expect(code(() => createClientTracker({ connect: {} } as never))).toBe(
      'CONNGUARD_ERR_UNKNOWN_OPTION',
    )
    expect(code(() => createClientTracker({ readIdleTimeout: -1 }))).toBe(
      'CONNGUARD_ERR_INVALID_OPTION',
    )
    const t = tracker()
    expect(code(() => t.guardSession({} as never, 'https://a.example'))).toBe(
      'CONNGUARD_ERR_INVALID_OPTION',
    )
    const { origin } = await route()
    const { session } = connect(origin)
    expect(code(() => t.guardSession(session, 'not a url'))).toBe('CONNGUARD_ERR_INVALID_OPTION')
    session.destroy()
    expect(code(() => t.guardSession(session, origin))).toBe('CONNGUARD_ERR_INVALID_OPTION')
    expect([...t.connections()]).toEqual([])
  })
})
