/**
 * @connguard/client over HTTP/2 (undici 7 Agent, `allowH2`), real sockets on 127.0.0.1:
 * the seed article's scenario. Client ⇄ loopback relay ⇄ node:http2 TLS server; after a
 * request succeeds the relay's existing route dies silently (no FIN, no RST: bytes are
 * read and dropped both ways) while new connections still go through.
 *
 * - without connguard (a plain undici Agent with allowH2) every later request goes to the
 *   dead session and times out (bounded here by AbortSignal.timeout);
 * - with connguard (readIdleTimeout 300, pingTimeout 300) the dead connection is closed
 *   with `ping_timeout` with no request in flight, within readIdleTimeout + pingTimeout
 *   + 2 sweeps + margin, and the next request goes out on a new connection and succeeds;
 * - a request in flight on the dead connection fails fast with PingTimeoutError;
 * - a healthy idle connection that answers PINGs is kept and reused;
 * - the global fetch (Node's bundled undici) and npm undici's fetch take the dispatcher.
 *
 * CONNGUARD_TIMINGS=1 prints the measured detection times.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { createDispatcher, PingTimeoutError } from '@connguard/client'
import { Agent, request, fetch as undiciFetch } from 'undici'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import {
  clientConnect,
  onlyLive,
  type PlainServer,
  startH2Server,
  watchClient,
} from './helpers/client.js'
import { type Relay, startRelay } from './helpers/http2.js'
import { sleep, waitUntil } from './helpers/records.js'
import { globalFetchTakesDispatcher } from './helpers/undici.js'

const READ_IDLE = 300
const PING_TIMEOUT = 300
/** The default sweep for these two: a quarter of the shorter. */
const SWEEP = 75
/** Event-loop lag on a shared 2-core machine. */
const LATE = 400
/** Detection bound after the last byte read: PING at most one sweep late, its timeout too. */
const DETECT_MAX = READ_IDLE + PING_TIMEOUT + 2 * SWEEP + LATE

const timings: string[] = []
afterAll(() => {
  if (process.env.CONNGUARD_TIMINGS === '1' && timings.length > 0) {
    console.log(`client HTTP/2 timings\n${timings.join('\n')}`)
  }
})

let server: PlainServer | null = null
let relay: Relay | null = null
const closers: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const close of closers.splice(0)) await close().catch(() => {})
  await relay?.close()
  relay = null
  await server?.close()
  server = null
})

async function route(): Promise<{ origin: string; relay: Relay; server: PlainServer }> {
  server = await startH2Server()
  relay = await startRelay(server.port)
  return { origin: `https://127.0.0.1:${relay.port}`, relay, server }
}

function guarded(options: Record<string, unknown> = {}) {
  const dispatcher = createDispatcher({
    readIdleTimeout: READ_IDLE,
    pingTimeout: PING_TIMEOUT,
    connect: clientConnect,
    ...options,
  })
  closers.push(() => dispatcher.destroy())
  return dispatcher
}

async function get(origin: string, dispatcher: Agent, path = '/', timeoutMs = 5_000) {
  const res = await request(`${origin}${path}`, {
    dispatcher,
    signal: AbortSignal.timeout(timeoutMs),
  })
  return { status: res.statusCode, body: await res.body.text() }
}

describe('client HTTP/2 liveness (undici 7 Agent, allowH2)', () => {
  it('without connguard: requests after the route died time out on the same dead session', async () => {
    const { origin, relay, server } = await route()
    const agent = new Agent({ allowH2: true, connect: clientConnect })
    closers.push(() => agent.destroy())
    expect(await get(origin, agent)).toEqual({ status: 200, body: 'ok' })
    relay.stopExisting()
    await sleep(1_000)
    for (const timeoutMs of [2_000, 1_000]) {
      const started = performance.now()
      const err = await get(origin, agent, '/', timeoutMs).then(
        () => null,
        (e: unknown) => e as Error,
      )
      const took = performance.now() - started
      expect(err?.name, 'the request times out').toBe('TimeoutError')
      expect(took).toBeGreaterThanOrEqual(timeoutMs - 20)
      timings.push(`without connguard: request failed after ${took.toFixed(0)} ms (its timeout)`)
    }
    // Never a new connection: undici keeps sending into the dead session.
    expect(relay.accepted()).toBe(1)
    expect(server.accepted()).toBe(1)
  })

  it('with connguard: the dead connection closes with ping_timeout and the next request goes out on a new one', async () => {
    const { origin, relay, server } = await route()
    const dispatcher = guarded()
    const watch = watchClient(dispatcher.tracker)
    expect(await get(origin, dispatcher)).toEqual({ status: 200, body: 'ok' })
    const lastRead = performance.now()
    const first = onlyLive(dispatcher.tracker)
    expect(first.httpVersion).toBe('2')
    expect(first.state).toBe('idle')
    relay.stopExisting()
    await watch.closeOf(first, 3_000)
    const detected = watch.closedAt(first) - lastRead
    timings.push(`with connguard: ping_timeout ${detected.toFixed(0)} ms after the last byte read`)
    expect(first.closeReason).toBe('ping_timeout')
    expect(first.errorCode).toBe('CONNGUARD_ERR_PING_TIMEOUT')
    expect(first.stateAtClose).toBe('idle')
    expect(first.pingsSent).toBeGreaterThanOrEqual(1)
    expect(detected).toBeGreaterThanOrEqual(READ_IDLE + PING_TIMEOUT - 20)
    expect(detected).toBeLessThanOrEqual(DETECT_MAX)
    // The next request, about 1 s after the route died, needs no failure first.
    await sleep(Math.max(0, relay.stoppedAt() + 1_000 - performance.now()))
    const started = performance.now()
    expect(await get(origin, dispatcher, '/', 2_000)).toEqual({ status: 200, body: 'ok' })
    expect(performance.now() - started).toBeLessThan(1_000)
    expect(relay.accepted()).toBe(2)
    expect(server.accepted()).toBe(2)
    const second = onlyLive(dispatcher.tracker)
    expect(second.id).not.toBe(first.id)
    expect(second.requests).toBe(1)
    expect(dispatcher.tracker.snapshot().closedByReason).toEqual({ ping_timeout: 1 })
  })

  it('a request in flight on the dead connection fails fast with PingTimeoutError', async () => {
    const { origin, relay } = await route()
    const dispatcher = guarded()
    const watch = watchClient(dispatcher.tracker)
    await get(origin, dispatcher)
    const first = onlyLive(dispatcher.tracker)
    relay.stopExisting()
    const started = performance.now()
    const err = await get(origin, dispatcher, '/', 5_000).then(
      () => null,
      (e: unknown) => e,
    )
    const took = performance.now() - started
    timings.push(`in flight: request failed after ${took.toFixed(0)} ms with ping_timeout`)
    expect(err).toBeInstanceOf(PingTimeoutError)
    expect((err as PingTimeoutError).code).toBe('CONNGUARD_ERR_PING_TIMEOUT')
    expect((err as PingTimeoutError).origin).toBe(origin)
    expect(took).toBeLessThanOrEqual(DETECT_MAX)
    // The request fails from the socket's 'error'; its 'close' (the record's end) follows.
    await watch.closeOf(first, 1_000)
    expect(first.closeReason).toBe('ping_timeout')
    expect(first.stateAtClose).toBe('active')
    const fetched = await undiciFetch(`${origin}/`, { dispatcher })
    expect(await fetched.text()).toBe('ok')
    expect(relay.accepted()).toBe(2)
  })

  it('fetch: the error of a request in flight has the PingTimeoutError as its cause', async () => {
    const { origin, relay } = await route()
    const dispatcher = guarded()
    await undiciFetch(`${origin}/`, { dispatcher }).then((r) => r.text())
    relay.stopExisting()
    const err = (await undiciFetch(`${origin}/`, {
      dispatcher,
      signal: AbortSignal.timeout(5_000),
    }).then(
      () => null,
      (e: unknown) => e,
    )) as (Error & { cause?: unknown }) | null
    expect(err).toBeInstanceOf(TypeError)
    expect((err?.cause as { code?: string } | undefined)?.code).toBe('CONNGUARD_ERR_PING_TIMEOUT')
  })

  it('a healthy idle connection answers its PINGs and is kept', async () => {
    const { origin, relay } = await route()
    const dispatcher = guarded({ readIdleTimeout: 150, pingTimeout: 300 })
    await get(origin, dispatcher)
    const rec = onlyLive(dispatcher.tracker)
    await sleep(1_000)
    expect(rec.state).toBe('idle')
    expect(rec.pingsSent).toBeGreaterThanOrEqual(3)
    expect(rec.pingRtt).not.toBeNull()
    expect(await get(origin, dispatcher)).toEqual({ status: 200, body: 'ok' })
    expect(onlyLive(dispatcher.tracker)).toBe(rec)
    expect(rec.requests).toBe(2)
    expect(relay.accepted()).toBe(1)
  })

  it('a slow response on a healthy connection is not cut: the PING during the silence is answered', async () => {
    const { origin, relay } = await route()
    const dispatcher = guarded()
    await get(origin, dispatcher)
    const rec = onlyLive(dispatcher.tracker)
    expect(await get(origin, dispatcher, '/slow?ms=1200')).toEqual({ status: 200, body: 'slow' })
    expect(rec.pingsSent).toBeGreaterThanOrEqual(2)
    expect(rec.pingRtt).not.toBeNull()
    expect(rec.state).toBe('idle')
    expect(relay.accepted()).toBe(1)
  })

  it('a server GOAWAY closes the connection as server_closed; the next request reconnects', async () => {
    const { origin, server } = await route()
    const dispatcher = guarded()
    const watch = watchClient(dispatcher.tracker)
    await get(origin, dispatcher)
    const first = onlyLive(dispatcher.tracker)
    server.endAll()
    await watch.closeOf(first, 2_000)
    expect(first.closeReason).toBe('server_closed')
    expect(await get(origin, dispatcher)).toEqual({ status: 200, body: 'ok' })
    expect(server.accepted()).toBe(2)
  })

  it.runIf(globalFetchTakesDispatcher)(
    "the global fetch (Node's bundled undici) uses the dispatcher: same recovery",
    async () => {
      const { origin, relay } = await route()
      const dispatcher = guarded()
      const watch = watchClient(dispatcher.tracker)
      // Node's own fetch types its dispatcher as its bundled undici's; an undici 7 Agent works.
      const init = { dispatcher } as unknown as RequestInit
      expect(await (await fetch(`${origin}/`, init)).text()).toBe('ok')
      const first = onlyLive(dispatcher.tracker)
      expect(first.httpVersion).toBe('2')
      relay.stopExisting()
      await sleep(1_000)
      expect(first.closeReason).toBe('ping_timeout')
      const res = await fetch(`${origin}/`, { ...init, signal: AbortSignal.timeout(2_000) })
      expect(await res.text()).toBe('ok')
      expect(relay.accepted()).toBe(2)
      expect(watch.closed.map((r) => r.closeReason)).toEqual(['ping_timeout'])
    },
  )

  it('an untrusted certificate: tls_handshake_failed; a server that never answers the handshake: tls_handshake_timeout', async () => {
    const { origin } = await route()
    const untrusting = guarded({ connect: { servername: 'localhost' } })
    const watch = watchClient(untrusting.tracker)
    const err = await get(origin, untrusting).then(
      () => null,
      (e: unknown) => e as { code?: string },
    )
    expect(err?.code).toBe('DEPTH_ZERO_SELF_SIGNED_CERT')
    await waitUntil(() => watch.closed.length === 1, { what: 'record closed' })
    expect(watch.closed[0]?.closeReason).toBe('tls_handshake_failed')
    expect(watch.closed[0]?.stateAtClose).toBe('handshaking')
    expect(watch.closed[0]?.errorCode).toBe('DEPTH_ZERO_SELF_SIGNED_CERT')

    // TCP accepts, TLS never answers.
    const silent = net.createServer(() => {})
    const sockets = new Set<net.Socket>()
    silent.on('connection', (socket) => sockets.add(socket))
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
    closers.push(async () => {
      for (const socket of sockets) socket.destroy()
      silent.close()
    })
    const port = (silent.address() as net.AddressInfo).port
    const stalled = guarded({ connectTimeout: 300 })
    const stalledWatch = watchClient(stalled.tracker)
    const timedOut = await get(`https://127.0.0.1:${port}`, stalled).then(
      () => null,
      (e: unknown) => e as { code?: string },
    )
    expect(timedOut?.code).toBe('UND_ERR_CONNECT_TIMEOUT')
    await waitUntil(() => stalledWatch.closed.length === 1, { what: 'record closed' })
    expect(stalledWatch.closed[0]?.closeReason).toBe('tls_handshake_timeout')
  })

  it('records move new → handshaking → idle → active → idle → closed, with TLS details', async () => {
    const { origin } = await route()
    const dispatcher = guarded({ readIdleTimeout: false })
    const watch = watchClient(dispatcher.tracker)
    const published: unknown[] = []
    const onPublish = (message: unknown) => {
      published.push(message)
    }
    diagnosticsChannel.subscribe('connguard:client:connection:close', onPublish)
    closers.push(async () => {
      diagnosticsChannel.unsubscribe('connguard:client:connection:close', onPublish)
    })
    await get(origin, dispatcher, '/slow?ms=50')
    const rec = onlyLive(dispatcher.tracker)
    expect(dispatcher.tracker.snapshot()).toMatchObject({ total: 1, idle: 1, active: 0 })
    await dispatcher.close()
    expect(rec.state).toBe('closed')
    expect(rec.closeReason).toBe('app_shutdown')
    const moves = watch.transitions.filter(([id]) => id === rec.id).map(([, f, t]) => `${f}>${t}`)
    expect(moves).toEqual([
      'new>handshaking',
      'handshaking>idle',
      'idle>active',
      'active>idle',
      'idle>closed',
    ])
    expect(watch.opened).toEqual([rec])
    expect(rec.origin).toBe(origin)
    expect(rec.secure).toBe(true)
    expect(rec.tls?.alpnProtocol).toBe('h2')
    expect(rec.tls?.servername).toBe('localhost')
    expect(rec.requests).toBe(1)
    expect(rec.connectDuration).not.toBeNull()
    expect(rec.handshakeDuration).not.toBeNull()
    expect(rec.timeToFirstRequest).not.toBeNull()
    expect(rec.stateDurations.active).toBeGreaterThanOrEqual(40)
    expect(rec.bytesRead).toBeGreaterThan(0)
    expect(rec.pingsSent).toBe(0)
    const sum = Object.values(rec.stateDurations).reduce((a, b) => a + b, 0)
    expect(Math.abs(sum - (rec.duration as number))).toBeLessThan(1)
    expect(rec.toJSON()).toMatchObject({ closeReason: 'app_shutdown', httpVersion: '2' })
    expect(published).toEqual([{ record: rec }])
  })
})
