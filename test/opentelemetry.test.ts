/**
 * @connguard/opentelemetry against the real SDK: a MeterProvider with a
 * PeriodicExportingMetricReader and an InMemoryMetricExporter (cumulative), flushed after
 * the scripted connections of helpers/metrics-scenario.ts. Every data point is checked
 * with its exact attribute set (so an attribute that must be absent is), then the
 * observable instruments by state, sharing a provider, `stop()`, the global provider
 * default and the option errors.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import { type ConnectionRecord, ConnectionTracker, LIVE_STATES } from '@connguard/core'
import {
  INSTRUMENT_NAMES,
  REQUEST_BUCKETS,
  registerOpenTelemetry,
  TIME_BUCKETS,
} from '@connguard/opentelemetry'
import { type Attributes, metrics } from '@opentelemetry/api'
import type { DataPoint, Histogram, MetricData } from '@opentelemetry/sdk-metrics'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { captureClientHello, getRequest, openSocket } from './helpers/clients.js'
import { parseResponse } from './helpers/http-response.js'
import {
  DEADLINE,
  runScriptedConnections,
  startMetricsServers,
} from './helpers/metrics-scenario.js'
import { otelSdk, sameAttributes } from './helpers/otel.js'
import { waitUntil } from './helpers/records.js'

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

const seconds = (ms: number | null): number => (ms ?? Number.NaN) / 1000
const CUT_MIN = (DEADLINE - 20) / 1000

const sdk = () => otelSdk(cleanups)

function metric(all: readonly MetricData[], name: string): MetricData {
  const found = all.find((m) => m.descriptor.name === name)
  if (found === undefined) throw new Error(`no metric ${name} in the collection`)
  return found
}

/** The data point of `name` with exactly `attributes`, or undefined. */
function point<T = number>(
  all: readonly MetricData[],
  name: string,
  attributes: Attributes,
): DataPoint<T> | undefined {
  const points = metric(all, name).dataPoints as DataPoint<T>[]
  return points.find((p) => sameAttributes(p.attributes, attributes))
}

const hist = (all: readonly MetricData[], name: string, attributes: Attributes) =>
  point<Histogram>(all, name, attributes)?.value

describe('registerOpenTelemetry: the scripted connections, collected', () => {
  it('records every connection with semantic-convention attributes, as its record says', async () => {
    const s = await startMetricsServers()
    cleanups.push(() => s.close())
    const { provider, collect } = sdk()
    cleanups.push(registerOpenTelemetry(s.tracker, { meterProvider: provider }))
    let whileHeld: MetricData[] = []
    const recs = await runScriptedConnections(s, {
      whileHeld: async () => {
        whileHeld = await collect()
      },
    })
    const [normal, tlsNormal, keepAlive, slow, tlsSilent, rejected, held] = recs as [
      ConnectionRecord,
      ConnectionRecord,
      ConnectionRecord,
      ConnectionRecord,
      ConnectionRecord,
      ConnectionRecord,
      ConnectionRecord,
    ]
    const all = await collect()
    const N = INSTRUMENT_NAMES
    const plain = { 'network.transport': 'tcp', 'server.port': s.httpPort }
    const secure = { 'network.transport': 'tcp', 'server.port': s.httpsPort }
    const http11 = { 'network.protocol.name': 'http', 'network.protocol.version': '1.1' }

    // Observable UpDownCounters by state, read from snapshot() when collected.
    for (const state of LIVE_STATES) {
      const attrs = { 'connguard.connection.state': state }
      expect(point(whileHeld, N.activeConnections, attrs)?.value, `held: ${state}`).toBe(
        state === 'new' ? 1 : 0,
      )
      expect(point(all, N.activeConnections, attrs)?.value, `after: ${state}`).toBe(0)
    }
    expect(point(whileHeld, N.activeTlsHandshakes, {})?.value).toBe(0)
    expect(metric(all, N.activeConnections).descriptor.unit).toBe('{connection}')

    // connection.duration: connguard.close_reason always, error.type only for failures.
    const duration = (attrs: Attributes) => hist(all, N.connectionDuration, attrs)
    const clean = duration({ ...plain, ...http11, 'connguard.close_reason': 'client_closed' })
    expect(clean?.count).toBe(1)
    expect(clean?.sum).toBeCloseTo(seconds(normal.duration), 6)
    expect(
      duration({
        ...secure,
        ...http11,
        'connguard.close_reason': 'client_closed',
        'tls.protocol.version': '1.3',
      })?.count,
    ).toBe(1)
    expect(duration({ ...plain, 'connguard.close_reason': 'client_closed' })?.count).toBe(1) // held
    const ka = duration({
      ...plain,
      ...http11,
      'connguard.close_reason': 'keep_alive_timeout',
      'error.type': 'keep_alive_timeout',
    })
    expect(ka?.count).toBe(1)
    expect(ka?.sum).toBeCloseTo(seconds(keepAlive.duration), 6)
    expect(ka?.sum).toBeGreaterThanOrEqual(CUT_MIN)
    expect(ka?.buckets.boundaries).toEqual([...TIME_BUCKETS])
    for (const [where, reason, rec] of [
      [plain, 'request_headers_timeout', slow],
      [secure, 'tls_handshake_timeout', tlsSilent],
      [plain, 'max_concurrent_connections_exceeded', rejected],
    ] as const) {
      const p = duration({ ...where, 'connguard.close_reason': reason, 'error.type': reason })
      expect(p?.count, reason).toBe(1)
      expect(p?.sum, reason).toBeCloseTo(seconds(rec.duration), 6)
    }
    expect(metric(all, N.connectionDuration).dataPoints).toHaveLength(7)
    expect(metric(all, N.connectionDuration).descriptor.unit).toBe('s')

    // rejected_connections, with the cap as error.type.
    expect(
      point(all, N.rejectedConnections, {
        ...plain,
        'error.type': 'max_concurrent_connections_exceeded',
      })?.value,
    ).toBe(1)

    // tls_handshake.duration: by version when completed, by error.type when not.
    const ok = hist(all, N.tlsHandshakeDuration, { ...secure, 'tls.protocol.version': '1.3' })
    expect(ok?.count).toBe(1)
    expect(ok?.sum).toBeCloseTo(seconds(tlsNormal.handshakeDuration), 6)
    const failed = hist(all, N.tlsHandshakeDuration, {
      ...secure,
      'error.type': 'tls_handshake_timeout',
    })
    expect(failed?.count).toBe(1)
    expect(failed?.sum).toBeGreaterThanOrEqual(CUT_MIN)
    expect(metric(all, N.tlsHandshakeDuration).dataPoints).toHaveLength(2)

    // Requests and bytes per connection; the rejected connection is in neither.
    const req = hist(all, N.connectionRequests, { ...plain, ...http11 })
    expect([req?.count, req?.sum]).toEqual([2, 3])
    expect(req?.buckets.boundaries).toEqual([...REQUEST_BUCKETS])
    const none = hist(all, N.connectionRequests, plain)
    expect([none?.count, none?.sum, none?.buckets.counts[0]]).toEqual([2, 0, 2])
    expect(hist(all, N.connectionRequests, { ...secure, ...http11 })?.sum).toBe(1)
    expect(
      metric(all, N.connectionRequests).dataPoints.reduce(
        (a, p) => a + (p.value as Histogram).count,
        0,
      ),
    ).toBe(6)
    const rx = hist(all, N.connectionBytes, {
      ...plain,
      ...http11,
      'network.io.direction': 'receive',
    })
    expect(rx?.sum).toBe(normal.bytesRead + keepAlive.bytesRead)
    const tx = hist(all, N.connectionBytes, {
      ...secure,
      ...http11,
      'network.io.direction': 'transmit',
    })
    expect(tx?.sum).toBe(tlsNormal.bytesWritten)
    expect(metric(all, N.connectionBytes).descriptor.unit).toBe('By')

    // Phases.
    const phase = (name: string, attrs: Attributes) =>
      hist(all, N.phaseDuration, { ...attrs, 'connguard.phase': name })
    expect(phase('handshake', { ...secure, ...http11 })?.sum).toBeCloseTo(
      seconds(tlsNormal.handshakeDuration),
      6,
    )
    expect(phase('handshake', secure)?.sum).toBeGreaterThanOrEqual(CUT_MIN)
    expect(phase('first_request', { ...plain, ...http11 })?.count).toBe(2)
    expect(phase('first_request', plain)?.sum).toBeCloseTo(
      seconds((slow.timeToFirstRequest ?? 0) + (held.duration ?? 0)),
      6,
    )
    expect(phase('keep_alive', { ...plain, ...http11 })?.sum).toBeCloseTo(
      seconds(normal.stateDurations.idle + keepAlive.stateDurations.idle),
      6,
    )
    expect(phase('request', plain)?.sum).toBeGreaterThanOrEqual(CUT_MIN)
    expect(
      metric(all, N.phaseDuration).dataPoints.some(
        (p) => p.attributes['connguard.phase'] === 'upgraded',
      ),
    ).toBe(false)

    // No client address anywhere.
    for (const m of all) {
      for (const p of m.dataPoints) {
        expect(Object.keys(p.attributes)).not.toContain('client.address')
        expect(Object.values(p.attributes)).not.toContain('127.0.0.1')
      }
    }
  })
})

describe('registerOpenTelemetry: live connections by state', () => {
  it('observes every state and the TLS handshakes in progress when collected', async () => {
    const s = await startMetricsServers({
      maxConnections: false,
      handshakeTimeout: 10_000,
      headersTimeout: 10_000,
      keepAliveTimeout: 10_000,
    })
    cleanups.push(() => s.close())
    const { provider, collect } = sdk()
    cleanups.push(registerOpenTelemetry(s.tracker, { meterProvider: provider }))
    const hello = await captureClientHello()
    const conns = await Promise.all([
      openSocket(s.httpPort),
      openSocket(s.httpsPort),
      openSocket(s.httpsPort),
      openSocket(s.httpPort),
      openSocket(s.httpPort),
    ])
    cleanups.push(() => {
      for (const c of conns) c.destroy()
    })
    const [, , handshaking, idle, active] = conns as [
      never,
      never,
      (typeof conns)[0],
      (typeof conns)[0],
      (typeof conns)[0],
    ]
    handshaking.send(hello.subarray(0, 10))
    idle.send(getRequest('/'))
    await idle.waitFor((buf) => parseResponse(buf))
    active.send('GET / HTTP/1.1\r\n')
    await waitUntil(() => {
      const x = s.tracker.snapshot()
      return x.new === 2 && x.handshaking === 1 && x.idle === 1 && x.active === 1
    })
    const all = await collect()
    const expected = { new: 2, handshaking: 1, idle: 1, active: 1, upgraded: 0 }
    for (const state of LIVE_STATES) {
      const p = point(all, INSTRUMENT_NAMES.activeConnections, {
        'connguard.connection.state': state,
      })
      expect(p?.value, state).toBe(expected[state])
    }
    expect(point(all, INSTRUMENT_NAMES.activeTlsHandshakes, {})?.value).toBe(2)
  })
})

describe('registerOpenTelemetry: pressure', () => {
  it('connguard.pressure.level is an observable gauge of the level, read when collected', async () => {
    const s = await startMetricsServers({
      maxConnections: false,
      headersTimeout: 10_000,
      pressure: { limit: 4, start: 0.5, shedAbove: 1 },
    })
    cleanups.push(() => s.close())
    const { provider, collect } = sdk()
    cleanups.push(registerOpenTelemetry(s.tracker, { meterProvider: provider }))
    expect(point(await collect(), INSTRUMENT_NAMES.pressureLevel, {})?.value).toBe(0)
    const conns = await Promise.all([1, 2, 3].map(() => openSocket(s.httpPort)))
    cleanups.push(() => {
      for (const c of conns) c.destroy()
    })
    await waitUntil(() => (s.tracker.snapshot().pressure?.level ?? 0) > 0, { what: 'level' })
    const all = await collect()
    expect(point(all, INSTRUMENT_NAMES.pressureLevel, {})?.value).toBeCloseTo(0.5)
    expect(metric(all, INSTRUMENT_NAMES.pressureLevel).descriptor.unit).toBe('1')
  })
})

describe('registerOpenTelemetry: registration', () => {
  it('shares one callback between trackers on a provider; stop() removes listener and callback', async () => {
    const a = await startMetricsServers()
    const b = await startMetricsServers()
    cleanups.push(
      () => a.close(),
      () => b.close(),
    )
    const { provider, collect } = sdk()
    const base = a.tracker.listenerCount('close')
    const stopA = registerOpenTelemetry(a.tracker, { meterProvider: provider })
    const stopB = registerOpenTelemetry(b.tracker, { meterProvider: provider })
    const ca = await openSocket(a.httpPort)
    const cb = await openSocket(b.httpPort)
    cleanups.push(() => {
      ca.destroy()
      cb.destroy()
    })
    await waitUntil(() => a.tracker.snapshot().new === 1 && b.tracker.snapshot().new === 1)
    const state = { 'connguard.connection.state': 'new' }
    expect(point(await collect(), INSTRUMENT_NAMES.activeConnections, state)?.value).toBe(2)

    stopA()
    stopA()
    expect(a.tracker.listenerCount('close')).toBe(base)
    expect(point(await collect(), INSTRUMENT_NAMES.activeConnections, state)?.value).toBe(1)

    stopB()
    expect(b.tracker.listenerCount('close')).toBe(base)
    const snapshotA = vi.spyOn(a.tracker, 'snapshot')
    const snapshotB = vi.spyOn(b.tracker, 'snapshot')
    await collect()
    expect(snapshotA).not.toHaveBeenCalled()
    expect(snapshotB).not.toHaveBeenCalled()
    // Closes after stop() are not recorded.
    ca.destroy()
    await a.watcher.next()
    const after = await collect()
    const closes = after.find((m) => m.descriptor.name === INSTRUMENT_NAMES.connectionDuration)
    expect(closes?.dataPoints ?? []).toHaveLength(0)
  })

  it('uses the global MeterProvider by default', async () => {
    const { provider, collect } = sdk()
    metrics.setGlobalMeterProvider(provider)
    cleanups.push(() => metrics.disable())
    const s = await startMetricsServers()
    cleanups.push(() => s.close())
    cleanups.push(registerOpenTelemetry(s.tracker))
    const c = await openSocket(s.httpPort)
    c.destroy()
    await s.watcher.next()
    const all = await collect()
    expect(metric(all, INSTRUMENT_NAMES.connectionDuration).dataPoints).toHaveLength(1)
  })

  it('adds one close listener and no channel subscriber; validates its arguments with stable codes', () => {
    const tracker = new ConnectionTracker()
    cleanups.push(() => tracker.close())
    const { provider } = sdk()
    const names = ['open', 'transition', 'close'] as const
    const stop = registerOpenTelemetry(tracker, { meterProvider: provider })
    expect(names.map((n) => tracker.listenerCount(n))).toEqual([0, 0, 1])
    for (const n of names) {
      expect(diagnosticsChannel.channel(`connguard:connection:${n}`).hasSubscribers).toBe(false)
    }
    const code = (fn: () => unknown) => {
      try {
        fn()
      } catch (err) {
        return (err as { code?: string }).code
      }
      return 'no error'
    }
    const register = registerOpenTelemetry as (t: unknown, o?: unknown) => () => void
    expect(code(() => register(tracker, { meterProvider: provider }))).toBe(
      'CONNGUARD_ERR_ALREADY_REGISTERED',
    )
    stop()
    expect(names.map((n) => tracker.listenerCount(n))).toEqual([0, 0, 0])
    expect(code(() => register(null))).toBe('CONNGUARD_ERR_INVALID_OPTION')
    expect(code(() => register(tracker, 42))).toBe('CONNGUARD_ERR_INVALID_OPTION')
    expect(code(() => register(tracker, { meterprovider: provider }))).toBe(
      'CONNGUARD_ERR_UNKNOWN_OPTION',
    )
    expect(code(() => register(tracker, { meterProvider: {} }))).toBe(
      'CONNGUARD_ERR_INVALID_OPTION',
    )
    expect(tracker.listenerCount('close')).toBe(0)
  })
})
