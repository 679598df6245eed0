/**
 * @connguard/client over HTTP/1.1 keep-alive pools (undici 7 Agent), real sockets on
 * 127.0.0.1, client ⇄ loopback relay ⇄ node:http server. HTTP/1.1 has no PING: a pooled
 * socket whose route died while idle costs the next request its timeout. What the client
 * checks here:
 *
 * - a request that times out takes its socket out of the pool, so the one after it goes
 *   out on a new connection (undici already does this — shown with a plain Agent too —
 *   connguard records it as `request_timeout`);
 * - pooled sockets closed while idle (by the server, or by undici's keep-alive timeout) are
 *   recorded (`server_closed`, `keep_alive_timeout`) and not reused;
 * - TCP keepalive is switched on with connguard's delay (default 10 s, not undici's 60 s);
 * - the state model without TLS: new → idle → active → idle → closed.
 */
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { createDispatcher } from '@connguard/client'
import { Agent, buildConnector, request } from 'undici'
import { afterEach, describe, expect, it, vi } from 'vitest'
import {
  clientConnect,
  onlyLive,
  type PlainServer,
  startH1Server,
  startUnacceptingPort,
  watchClient,
} from './helpers/client.js'
import { type Relay, startRelay } from './helpers/http2.js'
import { sleep, waitUntil } from './helpers/records.js'
import { globalFetchTakesDispatcher } from './helpers/undici.js'

let server: PlainServer | null = null
let relay: Relay | null = null
const closers: (() => Promise<void>)[] = []
afterEach(async () => {
  vi.restoreAllMocks()
  for (const close of closers.splice(0)) await close().catch(() => {})
  await relay?.close()
  relay = null
  await server?.close()
  server = null
})

async function route(options?: { keepAliveTimeout?: number }) {
  server = await startH1Server(options)
  relay = await startRelay(server.port)
  return { origin: `http://127.0.0.1:${relay.port}`, relay, server }
}

function guarded(options: Record<string, unknown> = {}) {
  const dispatcher = createDispatcher({ readIdleTimeout: 300, pingTimeout: 300, ...options })
  closers.push(() => dispatcher.destroy())
  return dispatcher
}

async function get(origin: string, dispatcher: Agent, timeoutMs = 5_000, path = '/') {
  const res = await request(`${origin}${path}`, {
    dispatcher,
    signal: AbortSignal.timeout(timeoutMs),
  })
  const body = await res.body.text()
  // undici waits a full event-loop turn before it reuses a kept-alive socket (client-h1.js):
  // a request sent sooner would open a second connection.
  await sleep(20)
  return { status: res.statusCode, body }
}

const failure = (p: Promise<unknown>) =>
  p.then(
    () => null,
    (e: unknown) => e as Error & { code?: string },
  )

describe('client HTTP/1.1 keep-alive pools', () => {
  it('plain undici: a timed-out request takes its socket out of the pool', async () => {
    const { origin, relay } = await route()
    const agent = new Agent()
    closers.push(() => agent.destroy())
    await get(origin, agent)
    relay.stopExisting()
    expect((await failure(get(origin, agent, 500)))?.name).toBe('TimeoutError')
    // Not the dead socket again: a new connection (undici may open and drop one more).
    const started = performance.now()
    expect(await get(origin, agent, 2_000)).toEqual({ status: 200, body: 'ok' })
    expect(performance.now() - started).toBeLessThan(1_000)
    expect(relay.accepted()).toBeGreaterThanOrEqual(2)
  })

  it('connguard: the timed-out connection is recorded as request_timeout; the next request uses a new one', async () => {
    const { origin, relay } = await route()
    const dispatcher = guarded()
    const watch = watchClient(dispatcher.tracker)
    await get(origin, dispatcher)
    const first = onlyLive(dispatcher.tracker)
    expect(first.httpVersion).toBe('1.1')
    relay.stopExisting()
    const started = performance.now()
    expect((await failure(get(origin, dispatcher, 500)))?.name).toBe('TimeoutError')
    await watch.closeOf(first, 1_000)
    expect(performance.now() - started).toBeLessThan(1_000)
    expect(first.closeReason).toBe('request_timeout')
    expect(first.stateAtClose).toBe('active')
    expect(first.requests).toBe(2)
    expect(await get(origin, dispatcher, 2_000)).toEqual({ status: 200, body: 'ok' })
    expect(relay.accepted()).toBeGreaterThanOrEqual(2)
    expect(watch.opened.at(-1)?.requests).toBe(1)
    // A connection undici opened after the abort and dropped unused is the pool's own doing.
    for (const rec of watch.closed.slice(1)) expect(rec.closeReason).toBe('client_closed')
  })

  it.runIf(globalFetchTakesDispatcher)(
    'global fetch with AbortSignal.timeout: request_timeout too',
    async () => {
      const { origin, relay } = await route()
      const dispatcher = guarded()
      const watch = watchClient(dispatcher.tracker)
      const init = { dispatcher } as unknown as RequestInit
      expect(await (await fetch(`${origin}/`, init)).text()).toBe('ok')
      await sleep(20)
      const first = onlyLive(dispatcher.tracker)
      relay.stopExisting()
      const err = await failure(fetch(`${origin}/`, { ...init, signal: AbortSignal.timeout(500) }))
      expect(err?.name).toBe('TimeoutError')
      await watch.closeOf(first, 1_000)
      expect(first.closeReason).toBe('request_timeout')
      expect(await (await fetch(`${origin}/`, init)).text()).toBe('ok')
      expect(relay.accepted()).toBeGreaterThanOrEqual(2)
    },
  )

  it("undici's headersTimeout: request_timeout with UND_ERR_HEADERS_TIMEOUT", async () => {
    const { origin } = await route()
    const dispatcher = guarded({ headersTimeout: 300 })
    const watch = watchClient(dispatcher.tracker)
    await get(origin, dispatcher)
    const first = onlyLive(dispatcher.tracker)
    expect((await failure(get(origin, dispatcher, 5_000, '/hang')))?.code).toBe(
      'UND_ERR_HEADERS_TIMEOUT',
    )
    await watch.closeOf(first, 1_000)
    expect(first.closeReason).toBe('request_timeout')
    expect(first.errorCode).toBe('UND_ERR_HEADERS_TIMEOUT')
  })

  it('an aborted request (not a timeout) closes its connection as client_closed', async () => {
    const { origin } = await route()
    const dispatcher = guarded()
    const watch = watchClient(dispatcher.tracker)
    await get(origin, dispatcher)
    const first = onlyLive(dispatcher.tracker)
    const controller = new AbortController()
    const pending = failure(
      request(`${origin}/hang`, { dispatcher, signal: controller.signal }).then((r) =>
        r.body.text(),
      ),
    )
    await waitUntil(() => first.state === 'active', { what: 'request sent' })
    controller.abort()
    expect((await pending)?.name).toBe('AbortError')
    await watch.closeOf(first, 1_000)
    expect(first.closeReason).toBe('client_closed')
  })

  it('a pooled socket the server closed while idle is recorded as server_closed and not reused', async () => {
    const { origin, relay, server } = await route()
    const dispatcher = guarded()
    const watch = watchClient(dispatcher.tracker)
    await get(origin, dispatcher)
    const first = onlyLive(dispatcher.tracker)
    server.endAll()
    await watch.closeOf(first, 2_000)
    expect(first.closeReason).toBe('server_closed')
    expect(first.stateAtClose).toBe('idle')
    expect(await get(origin, dispatcher)).toEqual({ status: 200, body: 'ok' })
    expect(relay.accepted()).toBe(2)
  })

  it("undici's own keep-alive timeout closes an idle socket: keep_alive_timeout", async () => {
    const { origin } = await route()
    const dispatcher = guarded({ keepAliveTimeout: 200, keepAliveMaxTimeout: 200 })
    const watch = watchClient(dispatcher.tracker)
    await get(origin, dispatcher)
    const first = onlyLive(dispatcher.tracker)
    await watch.closeOf(first, 2_000)
    expect(first.closeReason).toBe('keep_alive_timeout')
    expect(first.stateDurations.idle).toBeGreaterThanOrEqual(150)
  })

  it('records move new → idle → active → idle → closed without TLS', async () => {
    const { origin } = await route()
    const dispatcher = guarded()
    const watch = watchClient(dispatcher.tracker)
    await get(origin, dispatcher)
    const rec = onlyLive(dispatcher.tracker)
    await dispatcher.close()
    const moves = watch.transitions.filter(([id]) => id === rec.id).map(([, f, t]) => `${f}>${t}`)
    expect(moves).toEqual(['new>idle', 'idle>active', 'active>idle', 'idle>closed'])
    expect(rec.closeReason).toBe('app_shutdown')
    expect(rec.secure).toBe(false)
    expect(rec.tls).toBeNull()
    expect(rec.handshakeDuration).toBeNull()
    expect(rec.remotePort).toBe(Number(new URL(origin).port))
  })

  it('TCP keepalive: 10 s by default, the configured delay, also with a function connector', async () => {
    const { origin } = await route()
    const spy = vi.spyOn(net.Socket.prototype, 'setKeepAlive')
    await get(origin, guarded())
    expect(spy).toHaveBeenCalledWith(true, 10_000)
    spy.mockClear()
    await get(origin, guarded({ tcpKeepAlive: 2_000 }))
    expect(spy).toHaveBeenCalledWith(true, 2_000)
    spy.mockClear()
    await get(origin, guarded({ tcpKeepAlive: 3_000, connect: buildConnector({}) }))
    expect(spy).toHaveBeenLastCalledWith(true, 3_000)
    spy.mockClear()
    // `false` leaves undici's own delay (60 s).
    await get(origin, guarded({ tcpKeepAlive: false }))
    expect(spy).toHaveBeenCalledWith(true, 60_000)
  })

  it('HTTPS with allowH2 (the default) against an HTTP/1.1-only server: ALPN picks http/1.1', async () => {
    const https = await import('node:https')
    const { tlsOptions } = await import('./helpers/tls.js')
    const s = https.createServer(tlsOptions, (_req, res) => res.end('ok'))
    await new Promise<void>((resolve) => s.listen(0, '127.0.0.1', resolve))
    closers.push(
      () =>
        new Promise<void>((resolve) => {
          s.closeAllConnections()
          s.close(() => resolve())
        }),
    )
    const dispatcher = guarded({ connect: clientConnect })
    const port = (s.address() as net.AddressInfo).port
    expect(await get(`https://127.0.0.1:${port}`, dispatcher)).toEqual({ status: 200, body: 'ok' })
    const rec = onlyLive(dispatcher.tracker)
    expect(rec.httpVersion).toBe('1.1')
    expect(rec.tls?.alpnProtocol).toBe('http/1.1')
    expect(rec.pingsSent).toBe(0)
  })

  it("a TCP connect that never completes: connect_timeout at undici's connectTimeout, never established", async () => {
    const target = await startUnacceptingPort()
    closers.push(async () => target.close())
    const dispatcher = guarded({ connectTimeout: 300 })
    const watch = watchClient(dispatcher.tracker)
    const started = performance.now()
    const err = await get(`http://127.0.0.1:${target.port}`, dispatcher, 5_000).then(
      () => null,
      (e: unknown) => e as { code?: string },
    )
    const took = performance.now() - started
    expect(err?.code).toBe('UND_ERR_CONNECT_TIMEOUT')
    expect(took).toBeGreaterThanOrEqual(280)
    expect(took).toBeLessThan(2_000)
    await waitUntil(() => watch.closed.length === 1, { what: 'record closed' })
    const rec = watch.closed[0]
    expect(rec?.closeReason).toBe('connect_timeout')
    expect(rec?.errorCode).toBe('UND_ERR_CONNECT_TIMEOUT')
    expect(rec?.stateAtClose).toBe('new')
    expect(rec?.connectDuration).toBeNull()
    expect(dispatcher.tracker.snapshot().closedByReason).toEqual({ connect_timeout: 1 })
  })
})
