/**
 * Client metrics through both exporters, over real sockets: a connguard dispatcher's
 * tracker registered with registerPrometheus and registerOpenTelemetry at once, client ⇄
 * loopback relay ⇄ node:http2 TLS server (and a node:http server for HTTP/1.1).
 *
 * - `http.client.open_connections{http.connection.state}` (Prometheus
 *   `connguard_http_client_open_connections{state}`) reads idle and active from the live
 *   records when collected, with server.address/server.port from the origin, and keeps
 *   an emptied pool's series at 0;
 * - `http.client.connection.duration` (`…_connection_duration_seconds`) gets one sample
 *   per established connection at close, with its close reason: the dead route's
 *   connection as `ping_timeout`, a dispatcher closed as `app_shutdown`; connections that
 *   never got established (refused, TLS failed) are not in it;
 * - server and client trackers on one registry or provider each create only their own set.
 */
import net from 'node:net'
import { type ClientConnectionRecord, createDispatcher } from '@connguard/client'
import { ConnectionTracker } from '@connguard/core'
import { isClientTracker } from '@connguard/core/internal'
import {
  CLIENT_INSTRUMENT_NAMES,
  INSTRUMENT_NAMES,
  registerOpenTelemetry,
} from '@connguard/opentelemetry'
import { CLIENT_METRIC_NAMES, METRIC_NAMES, registerPrometheus } from '@connguard/prometheus'
import type { Attributes } from '@opentelemetry/api'
import type { Histogram, MetricData } from '@opentelemetry/sdk-metrics'
import { Registry } from 'prom-client'
import { type Agent, request } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'
import {
  clientConnect,
  onlyLive,
  startH1Server,
  startH2Server,
  watchClient,
} from './helpers/client.js'
import { startRelay } from './helpers/http2.js'
import { otelSdk, pointsOf, sameAttributes } from './helpers/otel.js'
import { parseSamples, type Sample, sampleValue } from './helpers/prom-text.js'
import { waitUntil } from './helpers/records.js'

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

const OPEN = `connguard_${CLIENT_METRIC_NAMES.openConnections}`
const DURATION = `connguard_${CLIENT_METRIC_NAMES.connectionDuration}`

function guarded(options: Record<string, unknown> = {}) {
  const dispatcher = createDispatcher({
    readIdleTimeout: 300,
    pingTimeout: 300,
    connect: clientConnect,
    ...options,
  })
  cleanups.push(() => dispatcher.destroy())
  return dispatcher
}

async function get(url: string, dispatcher: Agent, timeoutMs = 5_000) {
  const res = await request(url, { dispatcher, signal: AbortSignal.timeout(timeoutMs) })
  return { status: res.statusCode, body: await res.body.text() }
}

const sdk = () => otelSdk(cleanups)

function otelValue<T = number>(
  all: readonly MetricData[],
  name: string,
  attributes: Attributes,
): T | undefined {
  return pointsOf(all, name).find((p) => sameAttributes(p.attributes, attributes))?.value as
    | T
    | undefined
}

describe('client metrics: registerPrometheus and registerOpenTelemetry take a client tracker', () => {
  it('HTTP/2 dead route: open connections by state, and the dead one closed as ping_timeout in the duration', async () => {
    const server = await startH2Server()
    const relay = await startRelay(server.port)
    cleanups.push(
      () => server.close(),
      () => relay.close(),
    )
    const origin = `https://127.0.0.1:${relay.port}`
    const dispatcher = guarded()
    expect(isClientTracker(dispatcher.tracker)).toBe(true)
    const registry = new Registry()
    cleanups.push(registerPrometheus(dispatcher.tracker, { registry }))
    const otel = sdk()
    cleanups.push(registerOpenTelemetry(dispatcher.tracker, { meterProvider: otel.provider }))
    const watch = watchClient(dispatcher.tracker)

    const scrape = async (): Promise<Sample[]> => parseSamples(await registry.metrics())
    const peer = { server_address: '127.0.0.1', server_port: String(relay.port) }
    const open = (m: Sample[], state: string) =>
      sampleValue(m, OPEN, { state, ...peer, protocol_version: '2' })
    const otelPeer = { 'server.address': '127.0.0.1', 'server.port': relay.port }
    const otelOpen = (all: MetricData[], state: string) =>
      otelValue(all, CLIENT_INSTRUMENT_NAMES.openConnections, {
        'http.connection.state': state,
        ...otelPeer,
        'network.protocol.version': '2',
      })

    // Nothing connected yet: no series at all (no origin known).
    expect((await scrape()).filter((s) => s.name === OPEN)).toEqual([])

    expect(await get(`${origin}/`, dispatcher)).toEqual({ status: 200, body: 'ok' })
    const first = onlyLive(dispatcher.tracker)
    let m = await scrape()
    expect([open(m, 'idle'), open(m, 'active')]).toEqual([1, 0])
    let all = await otel.collect()
    expect([otelOpen(all, 'idle'), otelOpen(all, 'active')]).toEqual([1, 0])

    // A request in flight: the connection is active while collected.
    const slow = get(`${origin}/slow?ms=400`, dispatcher)
    await waitUntil(() => first.state === 'active', { what: 'active' })
    m = await scrape()
    expect([open(m, 'idle'), open(m, 'active')]).toEqual([0, 1])
    all = await otel.collect()
    expect([otelOpen(all, 'idle'), otelOpen(all, 'active')]).toEqual([0, 1])
    expect(await slow).toEqual({ status: 200, body: 'slow' })

    // The route dies: connguard closes the connection (ping_timeout); the pool is empty,
    // and its series stay, at 0.
    relay.stopExisting()
    await watch.closeOf(first, 3_000)
    expect(first.closeReason).toBe('ping_timeout')
    m = await scrape()
    expect([open(m, 'idle'), open(m, 'active')]).toEqual([0, 0])
    all = await otel.collect()
    expect([otelOpen(all, 'idle'), otelOpen(all, 'active')]).toEqual([0, 0])

    // One duration sample, with the close reason, in seconds.
    const labels = { reason: 'ping_timeout', ...peer, protocol_version: '2' }
    expect(sampleValue(m, `${DURATION}_count`, labels)).toBe(1)
    expect(sampleValue(m, `${DURATION}_sum`, labels)).toBeCloseTo(
      (first.duration as number) / 1000,
      6,
    )
    const h = otelValue<Histogram>(all, CLIENT_INSTRUMENT_NAMES.connectionDuration, {
      'connguard.close_reason': 'ping_timeout',
      'error.type': 'ping_timeout',
      ...otelPeer,
      'network.protocol.version': '2',
    })
    expect(h?.count).toBe(1)
    expect(h?.sum).toBeCloseTo((first.duration as number) / 1000, 6)

    // The next request opens a new connection: idle 1 again.
    expect(await get(`${origin}/`, dispatcher)).toEqual({ status: 200, body: 'ok' })
    expect(relay.accepted()).toBe(2)
    m = await scrape()
    expect([open(m, 'idle'), open(m, 'active')]).toEqual([1, 0])

    // Units and types as the conventions give them.
    all = await otel.collect()
    const descriptor = (name: string) => all.find((x) => x.descriptor.name === name)?.descriptor
    expect(descriptor(CLIENT_INSTRUMENT_NAMES.openConnections)?.unit).toBe('{connection}')
    expect(descriptor(CLIENT_INSTRUMENT_NAMES.connectionDuration)?.unit).toBe('s')
    // A client-only registration creates no server instrument, and the reverse (below).
    expect(descriptor(INSTRUMENT_NAMES.activeConnections)).toBeUndefined()
    expect(m.some((s) => s.name.startsWith(`connguard_${METRIC_NAMES.activeConnections}`))).toBe(
      false,
    )
  })

  it('HTTP/1.1: protocol 1.1, app_shutdown on close; connections never established are not in the duration', async () => {
    const server = await startH1Server()
    cleanups.push(() => server.close())
    const origin = `http://127.0.0.1:${server.port}`
    const dispatcher = guarded()
    const registry = new Registry()
    cleanups.push(registerPrometheus(dispatcher.tracker, { registry }))
    const otel = sdk()
    cleanups.push(registerOpenTelemetry(dispatcher.tracker, { meterProvider: otel.provider }))
    const watch = watchClient(dispatcher.tracker)

    // Refused: TCP never connects. A TLS handshake that fails: connected, never established.
    const closed = net.createServer()
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve))
    const refusedPort = (closed.address() as net.AddressInfo).port
    await new Promise<void>((resolve) => closed.close(() => resolve()))
    await expect(get(`http://127.0.0.1:${refusedPort}/`, dispatcher)).rejects.toMatchObject({
      code: 'ECONNREFUSED',
    })
    const h2 = await startH2Server()
    cleanups.push(() => h2.close())
    const untrusting = guarded({ connect: { servername: 'localhost' } })
    cleanups.push(registerPrometheus(untrusting.tracker, { registry }))
    const untrustingWatch = watchClient(untrusting.tracker)
    await expect(get(`https://127.0.0.1:${h2.port}/`, untrusting)).rejects.toMatchObject({
      code: 'DEPTH_ZERO_SELF_SIGNED_CERT',
    })
    await waitUntil(() => watch.closed.length === 1 && untrustingWatch.closed.length === 1, {
      what: 'failed connections closed',
    })
    expect(watch.closed[0]?.closeReason).toBe('error')
    expect(untrustingWatch.closed[0]?.closeReason).toBe('tls_handshake_failed')

    await get(`${origin}/`, dispatcher)
    const rec = onlyLive(dispatcher.tracker)
    const m1 = parseSamples(await registry.metrics())
    const peer = { server_address: '127.0.0.1', server_port: String(server.port) }
    expect(sampleValue(m1, OPEN, { state: 'idle', ...peer, protocol_version: '1.1' })).toBe(1)
    await dispatcher.close()
    await watch.closeOf(rec as ClientConnectionRecord, 2_000)
    expect(rec.closeReason).toBe('app_shutdown')

    const m = parseSamples(await registry.metrics())
    const counts = m.filter((s) => s.name === `${DURATION}_count`)
    // Only the established connection: not the refused one, not the failed handshake.
    expect(counts).toEqual([
      {
        name: `${DURATION}_count`,
        labels: { reason: 'app_shutdown', ...peer, protocol_version: '1.1' },
        value: 1,
      },
    ])
    expect(sampleValue(m, OPEN, { state: 'idle', ...peer, protocol_version: '1.1' })).toBe(0)

    const all = await otel.collect()
    const points = pointsOf(all, CLIENT_INSTRUMENT_NAMES.connectionDuration)
    expect(points.map((p) => p.attributes)).toEqual([
      {
        // A clean end: no error.type, as on the server instruments.
        'connguard.close_reason': 'app_shutdown',
        'server.address': '127.0.0.1',
        'server.port': server.port,
        'network.protocol.version': '1.1',
      },
    ])
  })

  it('server and client trackers on one registry and provider: each feeds only its own set; stop() removes them', async () => {
    const registry = new Registry()
    const otel = sdk()
    const tracker = new ConnectionTracker()
    cleanups.push(() => tracker.close())
    const dispatcher = guarded()
    const names = () => registry.getMetricsAsArray().map((x) => x.name)
    const stopServer = registerPrometheus(tracker, { registry })
    expect(names().some((n) => n.includes('http_client'))).toBe(false)
    const stopClient = registerPrometheus(dispatcher.tracker, { registry })
    const stopOtel = registerOpenTelemetry(dispatcher.tracker, { meterProvider: otel.provider })
    expect(names()).toEqual(expect.arrayContaining([OPEN, DURATION]))
    expect(() => registerPrometheus(dispatcher.tracker, { registry })).toThrow(
      expect.objectContaining({ code: 'CONNGUARD_ERR_ALREADY_REGISTERED' }),
    )
    expect(() =>
      registerOpenTelemetry(dispatcher.tracker, { meterProvider: otel.provider }),
    ).toThrow(expect.objectContaining({ code: 'CONNGUARD_ERR_ALREADY_REGISTERED' }))
    expect(dispatcher.tracker.listenerCount('close')).toBe(2)
    stopClient()
    stopOtel()
    expect(dispatcher.tracker.listenerCount('close')).toBe(0)
    expect(names().some((n) => n.includes('http_client'))).toBe(false)
    expect(names()).toContain(`connguard_${METRIC_NAMES.activeConnections}`)
    stopServer()
    expect(names()).toEqual([])
  })
})
