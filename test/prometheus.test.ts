/**
 * @connguard/prometheus against a real prom-client registry: the scripted connections of
 * helpers/metrics-scenario.ts (a normal keep-alive exchange, each timeout kind, a
 * rejected connection) are scraped with `registry.metrics()` and every value and label
 * checked; then the gauges by state, sharing one registry between trackers, `stop()`, the
 * option errors, and that with no exporter nothing subscribes to the tracker at all.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import {
  CLOSE_REASONS,
  type ConnectionRecord,
  ConnectionTracker,
  LIVE_STATES,
} from '@connguard/core'
import { registerPrometheus, TIME_BUCKETS } from '@connguard/prometheus'
import { Counter, register as globalRegistry, Registry } from 'prom-client'
import { afterEach, describe, expect, it, vi } from 'vitest'
import { captureClientHello, getRequest, keepAliveRequests, openSocket } from './helpers/clients.js'
import { parseResponse } from './helpers/http-response.js'
import { connectH2, destroyH2Clients, h2get, startH2, stopH2Servers } from './helpers/http2.js'
import {
  DEADLINE,
  runScriptedConnections,
  startMetricsServers,
} from './helpers/metrics-scenario.js'
import { parseSamples, type Sample, samplesNamed, sampleValue } from './helpers/prom-text.js'
import { waitUntil } from './helpers/records.js'

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

const scrape = async (registry: Registry): Promise<Sample[]> =>
  parseSamples(await registry.metrics())
const seconds = (ms: number | null): number => (ms ?? Number.NaN) / 1000
/** A deadline cut lasts at least the deadline, less clock granularity. */
const CUT_MIN = (DEADLINE - 20) / 1000

describe('registerPrometheus: the scripted connections, scraped', () => {
  it('counts, labels and times every connection as its record says', async () => {
    const s = await startMetricsServers()
    cleanups.push(() => s.close())
    const registry = new Registry()
    cleanups.push(registerPrometheus(s.tracker, { registry }))
    let whileHeld: Sample[] = []
    const recs = await runScriptedConnections(s, {
      whileHeld: async () => {
        whileHeld = await scrape(registry)
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
    const h = String(s.httpPort)
    const t = String(s.httpsPort)
    const m = await scrape(registry)
    const v = (name: string, labels: Record<string, string> = {}) =>
      sampleValue(m, `connguard_${name}`, labels)

    // Gauges, read from snapshot() at scrape time: the held plain connection is `new`.
    for (const state of LIVE_STATES) {
      expect(
        sampleValue(whileHeld, 'connguard_active_connections', { state }),
        `while held: ${state}`,
      ).toBe(state === 'new' ? 1 : 0)
      expect(v('active_connections', { state }), `after: ${state}`).toBe(0)
    }
    // A plain connection in `new` is waiting for its first request, not handshaking.
    expect(sampleValue(whileHeld, 'connguard_active_tls_handshakes')).toBe(0)
    expect(v('active_tls_handshakes')).toBe(0)

    // Closes by reason: every reason present, zeros included.
    const closes: Record<string, number> = {
      client_closed: 3,
      keep_alive_timeout: 1,
      request_headers_timeout: 1,
      tls_handshake_timeout: 1,
      max_concurrent_connections_exceeded: 1,
    }
    for (const reason of CLOSE_REASONS) {
      expect(v('connections_closed_total', { reason }), reason).toBe(closes[reason] ?? 0)
    }
    expect(v('rejected_connections_total', { reason: 'max_concurrent_connections_exceeded' })).toBe(
      1,
    )
    expect(v('rejected_connections_total', { reason: 'max_connections_per_ip_exceeded' })).toBe(0)

    // Connection duration by reason, protocol, TLS version and port; absent labels are absent.
    const duration = (labels: Record<string, string>) => ({
      count: v('connection_duration_seconds_count', labels),
      sum: v('connection_duration_seconds_sum', labels) as number,
    })
    const http11 = { protocol_version: '1.1', port: h }
    expect(duration({ reason: 'client_closed', ...http11 }).count).toBe(1)
    expect(duration({ reason: 'client_closed', port: h }).count).toBe(1) // held: no request
    expect(
      duration({ reason: 'client_closed', protocol_version: '1.1', tls_version: '1.3', port: t })
        .count,
    ).toBe(1)
    const ka = duration({ reason: 'keep_alive_timeout', ...http11 })
    expect(ka.count).toBe(1)
    expect(ka.sum).toBeCloseTo(seconds(keepAlive.duration), 6)
    expect(ka.sum).toBeGreaterThanOrEqual(CUT_MIN)
    expect(duration({ reason: 'request_headers_timeout', port: h }).count).toBe(1)
    expect(duration({ reason: 'tls_handshake_timeout', port: t }).count).toBe(1)
    expect(duration({ reason: 'max_concurrent_connections_exceeded', port: h }).count).toBe(1)
    expect(duration({ reason: 'max_concurrent_connections_exceeded', port: h }).sum).toBeCloseTo(
      seconds(rejected.duration),
      6,
    )
    // Buckets are the documented ones, cumulative up to +Inf.
    const buckets = samplesNamed(m, 'connguard_connection_duration_seconds_bucket').filter(
      (x) => x.labels.reason === 'keep_alive_timeout',
    )
    expect(buckets.map((x) => x.labels.le)).toEqual([...TIME_BUCKETS.map(String), '+Inf'])
    expect(buckets.at(-1)?.value).toBe(1)
    expect(
      v('connection_duration_seconds_bucket', {
        reason: 'keep_alive_timeout',
        ...http11,
        le: '0.25',
      }),
    ).toBe(0)

    // TLS handshakes: the completed one by version, the stalled one by reason, from accept.
    const hs = (labels: Record<string, string>) => ({
      count: v('tls_handshake_duration_seconds_count', labels),
      sum: v('tls_handshake_duration_seconds_sum', labels) as number,
    })
    expect(hs({ tls_version: '1.3', port: t }).count).toBe(1)
    expect(hs({ tls_version: '1.3', port: t }).sum).toBeCloseTo(
      seconds(tlsNormal.handshakeDuration),
      6,
    )
    expect(hs({ reason: 'tls_handshake_timeout', port: t }).count).toBe(1)
    expect(hs({ reason: 'tls_handshake_timeout', port: t }).sum).toBeGreaterThanOrEqual(CUT_MIN)
    expect(samplesNamed(m, 'connguard_tls_handshake_duration_seconds_count')).toHaveLength(2)

    // Requests per connection; the rejected connection is in no per-connection histogram.
    const req = (labels: Record<string, string>) => [
      v('connection_requests_count', labels),
      v('connection_requests_sum', labels),
    ]
    expect(req(http11)).toEqual([2, 3])
    expect(req({ port: h })).toEqual([2, 0]) // slowloris (no complete head) and held
    expect(v('connection_requests_bucket', { port: h, le: '0' })).toBe(2)
    expect(req({ protocol_version: '1.1', port: t })).toEqual([1, 1])
    expect(req({ port: t })).toEqual([1, 0])
    const counted = samplesNamed(m, 'connguard_connection_requests_count')
    expect(counted.reduce((a, x) => a + x.value, 0)).toBe(6)

    // Wire bytes per connection and direction.
    expect(v('connection_bytes_count', { direction: 'receive', ...http11 })).toBe(2)
    expect(v('connection_bytes_sum', { direction: 'receive', ...http11 })).toBe(
      normal.bytesRead + keepAlive.bytesRead,
    )
    expect(v('connection_bytes_sum', { direction: 'transmit', ...http11 })).toBe(
      normal.bytesWritten + keepAlive.bytesWritten,
    )
    expect(
      v('connection_bytes_sum', { direction: 'receive', protocol_version: '1.1', port: t }),
    ).toBe(tlsNormal.bytesRead)

    // Phases.
    const phase = (name: string, labels: Record<string, string>) => ({
      count: v('connection_phase_duration_seconds_count', { phase: name, ...labels }),
      sum: v('connection_phase_duration_seconds_sum', { phase: name, ...labels }) as number,
    })
    expect(phase('handshake', { protocol_version: '1.1', port: t }).count).toBe(1)
    expect(phase('handshake', { protocol_version: '1.1', port: t }).sum).toBeCloseTo(
      seconds(tlsNormal.handshakeDuration),
      6,
    )
    expect(phase('handshake', { port: t }).count).toBe(1) // the stalled one, to its close
    expect(phase('handshake', { port: t }).sum).toBeGreaterThanOrEqual(CUT_MIN)
    expect(phase('first_request', http11).count).toBe(2)
    expect(phase('first_request', http11).sum).toBeCloseTo(
      seconds((normal.timeToFirstRequest ?? 0) + (keepAlive.timeToFirstRequest ?? 0)),
      6,
    )
    // A connection that never sent a request waited for it until its close.
    expect(phase('first_request', { port: h }).count).toBe(2)
    expect(phase('first_request', { port: h }).sum).toBeCloseTo(
      seconds((slow.timeToFirstRequest ?? 0) + (held.duration ?? 0)),
      6,
    )
    expect(phase('first_request', { protocol_version: '1.1', port: t }).count).toBe(1)
    expect(phase('keep_alive', http11).count).toBe(2)
    expect(phase('keep_alive', http11).sum).toBeGreaterThanOrEqual(CUT_MIN)
    expect(phase('keep_alive', http11).sum).toBeCloseTo(
      seconds(normal.stateDurations.idle + keepAlive.stateDurations.idle),
      6,
    )
    expect(phase('request', http11).count).toBe(2)
    expect(phase('request', { port: h }).count).toBe(1) // slowloris: its head, until cut
    expect(phase('request', { port: h }).sum).toBeGreaterThanOrEqual(CUT_MIN)
    expect(samplesNamed(m, 'connguard_connection_phase_duration_seconds_count')).not.toContainEqual(
      expect.objectContaining({ labels: expect.objectContaining({ phase: 'upgraded' }) }),
    )
    expect(tlsSilent.stateAtClose).toBe('new')
  })

  it('uses only low-cardinality labels: fixed vocabularies and the server port, no client address', async () => {
    const s = await startMetricsServers()
    cleanups.push(() => s.close())
    const registry = new Registry()
    cleanups.push(registerPrometheus(s.tracker, { registry }))
    await runScriptedConnections(s)
    const allowed: Record<string, (value: string) => boolean> = {
      reason: (x) => (CLOSE_REASONS as readonly string[]).includes(x),
      state: (x) => (LIVE_STATES as readonly string[]).includes(x),
      phase: (x) => ['handshake', 'first_request', 'request', 'keep_alive', 'upgraded'].includes(x),
      direction: (x) => x === 'receive' || x === 'transmit',
      protocol_version: (x) => ['1.0', '1.1', '2', 'other'].includes(x),
      tls_version: (x) => ['1.0', '1.1', '1.2', '1.3', 'other'].includes(x),
      port: (x) => x === String(s.httpPort) || x === String(s.httpsPort),
      le: () => true,
    }
    const samples = await scrape(registry)
    expect(samples.length).toBeGreaterThan(0)
    for (const sample of samples) {
      for (const [label, value] of Object.entries(sample.labels)) {
        expect(allowed[label]?.(value), `${sample.name}{${label}="${value}"}`).toBe(true)
      }
    }
  })
})

describe('registerPrometheus: HTTP/2', () => {
  it('labels a TLS HTTP/2 session protocol_version="2" and counts its streams as requests', async () => {
    const h2 = await startH2({ sweepInterval: 25 }, { secure: true })
    cleanups.push(() => stopH2Servers())
    cleanups.push(() => destroyH2Clients())
    const registry = new Registry()
    cleanups.push(registerPrometheus(h2.tracker, { registry }))
    const client = await connectH2(h2.origin)
    const responses = await Promise.all([h2get(client), h2get(client), h2get(client)])
    expect(responses.map((r) => r.status)).toEqual([200, 200, 200])
    client.destroy()
    const rec = await h2.closes.next()
    expect(rec.httpVersion).toBe('2.0')
    const m = await scrape(registry)
    const port = String(h2.port)
    const reason = rec.closeReason as string
    expect(
      sampleValue(m, 'connguard_connection_duration_seconds_count', {
        reason,
        protocol_version: '2',
        tls_version: '1.3',
        port,
      }),
    ).toBe(1)
    expect(
      sampleValue(m, 'connguard_connection_requests_sum', { protocol_version: '2', port }),
    ).toBe(3)
    expect(
      sampleValue(m, 'connguard_tls_handshake_duration_seconds_count', {
        tls_version: '1.3',
        port,
      }),
    ).toBe(1)
    expect(
      sampleValue(m, 'connguard_connection_phase_duration_seconds_count', {
        phase: 'first_request',
        protocol_version: '2',
        port,
      }),
    ).toBe(1)
  })
})

describe('registerPrometheus: live connections by state', () => {
  it('reads every state and the TLS handshakes in progress from snapshot() at scrape time', async () => {
    const s = await startMetricsServers({
      maxConnections: false,
      handshakeTimeout: 10_000,
      headersTimeout: 10_000,
      keepAliveTimeout: 10_000,
    })
    cleanups.push(() => s.close())
    const registry = new Registry()
    cleanups.push(registerPrometheus(s.tracker, { registry }))
    const hello = await captureClientHello()
    const plainSilent = await openSocket(s.httpPort)
    const tlsSilent = await openSocket(s.httpsPort) // TCP only: no ClientHello
    const handshaking = await openSocket(s.httpsPort)
    const idle = await openSocket(s.httpPort)
    const active = await openSocket(s.httpPort)
    cleanups.push(() => {
      for (const c of [plainSilent, tlsSilent, handshaking, idle, active]) c.destroy()
    })
    handshaking.send(hello.subarray(0, 10))
    idle.send(getRequest('/'))
    await idle.waitFor((buf) => parseResponse(buf))
    active.send('GET / HTTP/1.1\r\n')
    await waitUntil(() => {
      const x = s.tracker.snapshot()
      return x.new === 2 && x.handshaking === 1 && x.idle === 1 && x.active === 1
    })
    const m = await scrape(registry)
    const expected = { new: 2, handshaking: 1, idle: 1, active: 1, upgraded: 0 }
    for (const state of LIVE_STATES) {
      expect(sampleValue(m, 'connguard_active_connections', { state }), state).toBe(expected[state])
    }
    // The TLS connection in `new` and the one in `handshaking`; not the plain one in `new`.
    expect(sampleValue(m, 'connguard_active_tls_handshakes')).toBe(2)
  })
})

describe('registerPrometheus: pressure', () => {
  it('connguard_pressure_level reads the level at scrape time, the highest over the trackers', async () => {
    // 3 of 4 connections with pressure from 50%: level 0.5. Nothing is shed (shedAbove 1).
    const s = await startMetricsServers({
      maxConnections: false,
      headersTimeout: 10_000,
      pressure: { limit: 4, start: 0.5, shedAbove: 1 },
    })
    const off = await startMetricsServers({ pressure: false })
    cleanups.push(
      () => s.close(),
      () => off.close(),
    )
    const registry = new Registry()
    cleanups.push(registerPrometheus(s.tracker, { registry }))
    cleanups.push(registerPrometheus(off.tracker, { registry }))
    expect(sampleValue(await scrape(registry), 'connguard_pressure_level')).toBe(0)
    const conns = await Promise.all([1, 2, 3].map(() => openSocket(s.httpPort)))
    cleanups.push(() => {
      for (const c of conns) c.destroy()
    })
    await waitUntil(() => (s.tracker.snapshot().pressure?.level ?? 0) > 0, { what: 'level' })
    expect(sampleValue(await scrape(registry), 'connguard_pressure_level')).toBeCloseTo(0.5)
    // Closes it causes are counted by reason like any other, from 0.
    expect(
      sampleValue(await scrape(registry), 'connguard_connections_closed_total', {
        reason: 'shed_under_pressure',
      }),
    ).toBe(0)
  })
})

describe('registerPrometheus: registration', () => {
  it('shares one set of metrics between trackers on one registry; stop() unregisters with the last', async () => {
    const a = await startMetricsServers()
    const b = await startMetricsServers()
    cleanups.push(
      () => a.close(),
      () => b.close(),
    )
    const registry = new Registry()
    const listeners = a.tracker.listenerCount('close')
    const stopA = registerPrometheus(a.tracker, { registry })
    const stopB = registerPrometheus(b.tracker, { registry })
    expect(a.tracker.listenerCount('close')).toBe(listeners + 1)
    const ca = await openSocket(a.httpPort)
    const cb = await openSocket(b.httpPort)
    cleanups.push(() => {
      ca.destroy()
      cb.destroy()
    })
    await waitUntil(() => a.tracker.snapshot().new === 1 && b.tracker.snapshot().new === 1)
    expect(
      sampleValue(await scrape(registry), 'connguard_active_connections', { state: 'new' }),
    ).toBe(2)

    stopA()
    stopA() // idempotent
    expect(a.tracker.listenerCount('close')).toBe(listeners)
    expect(
      sampleValue(await scrape(registry), 'connguard_active_connections', { state: 'new' }),
    ).toBe(1)
    // A's closes are no longer counted; B's still are.
    ca.destroy()
    await a.watcher.next()
    cb.destroy()
    await b.watcher.next()
    expect(
      sampleValue(await scrape(registry), 'connguard_connections_closed_total', {
        reason: 'client_closed',
      }),
    ).toBe(1)

    stopB()
    expect(b.tracker.listenerCount('close')).toBe(listeners)
    expect(registry.getSingleMetric('connguard_active_connections')).toBeUndefined()
    expect(await registry.metrics()).not.toContain('connguard_')
    // Registering again after the last stop() starts a fresh set.
    const again = registerPrometheus(a.tracker, { registry })
    expect(registry.getSingleMetric('connguard_connections_closed_total')).toBeDefined()
    again()
  })

  it('registers on prom-client’s global registry by default, and under another prefix', async () => {
    const tracker = new ConnectionTracker()
    cleanups.push(() => tracker.close())
    const stop = registerPrometheus(tracker)
    expect(globalRegistry.getSingleMetric('connguard_connection_duration_seconds')).toBeDefined()
    const registry = new Registry()
    const stopEdge = registerPrometheus(tracker, { registry, prefix: 'edge_' })
    const stopPlain = registerPrometheus(tracker, { registry })
    expect(registry.getSingleMetric('edge_connection_duration_seconds')).toBeDefined()
    expect(registry.getSingleMetric('connguard_connection_duration_seconds')).toBeDefined()
    stop()
    stopEdge()
    stopPlain()
    expect(globalRegistry.getSingleMetric('connguard_connection_duration_seconds')).toBeUndefined()
    expect(registry.getMetricsAsArray()).toHaveLength(0)
  })

  it('refuses a second registration of one tracker, and a registry with a foreign metric of the same name', () => {
    const tracker = new ConnectionTracker()
    cleanups.push(() => tracker.close())
    const registry = new Registry()
    const stop = registerPrometheus(tracker, { registry })
    expect(() => registerPrometheus(tracker, { registry })).toThrow(
      expect.objectContaining({ code: 'CONNGUARD_ERR_ALREADY_REGISTERED' }),
    )
    stop()
    const taken = new Registry()
    new Counter({
      name: 'connguard_connections_closed_total',
      help: 'not ours',
      registers: [taken],
    })
    expect(() => registerPrometheus(tracker, { registry: taken })).toThrow(
      expect.objectContaining({
        code: 'CONNGUARD_ERR_METRIC_CONFLICT',
        metric: 'connguard_connections_closed_total',
      }),
    )
    // Nothing half-registered.
    expect(taken.getMetricsAsArray()).toHaveLength(1)
    expect(tracker.listenerCount('close')).toBe(0)
  })

  it('validates its arguments with stable error codes', () => {
    const tracker = new ConnectionTracker()
    cleanups.push(() => tracker.close())
    const code = (fn: () => unknown) => {
      try {
        fn()
      } catch (err) {
        return (err as { code?: string }).code
      }
      return 'no error'
    }
    const register = registerPrometheus as (tracker: unknown, options?: unknown) => () => void
    expect(code(() => register({}, {}))).toBe('CONNGUARD_ERR_INVALID_OPTION')
    expect(code(() => register(tracker, 'registry'))).toBe('CONNGUARD_ERR_INVALID_OPTION')
    expect(code(() => register(tracker, { registery: new Registry() }))).toBe(
      'CONNGUARD_ERR_UNKNOWN_OPTION',
    )
    expect(code(() => register(tracker, { registry: {} }))).toBe('CONNGUARD_ERR_INVALID_OPTION')
    expect(code(() => register(tracker, { registry: new Registry(), prefix: '1x_' }))).toBe(
      'CONNGUARD_ERR_INVALID_OPTION',
    )
    expect(code(() => register(tracker, { registry: new Registry(), prefix: 'a-b' }))).toBe(
      'CONNGUARD_ERR_INVALID_OPTION',
    )
    expect(tracker.listenerCount('close')).toBe(0)
  })
})

describe('without an exporter', () => {
  it('nothing subscribes: no tracker listener, no diagnostics channel subscriber, nothing published', async () => {
    const names = ['open', 'transition', 'close'] as const
    const channels = names.map((n) => diagnosticsChannel.channel(`connguard:connection:${n}`))
    const spies = channels.map((c) => vi.spyOn(c, 'publish'))
    cleanups.push(() => {
      for (const spy of spies) spy.mockRestore()
    })
    const s = await startMetricsServers()
    s.watcher.stop() // the scenario's own listener; this test wants none
    cleanups.push(() => s.close())
    const { tracker } = s
    const result = await keepAliveRequests(s.httpPort, { count: 1 })
    expect(result.statuses).toEqual([200])
    await waitUntil(() => tracker.snapshot().closedByReason.client_closed === 1)

    for (const n of names) expect(tracker.listenerCount(n), n).toBe(0)
    for (const c of channels) expect(c.hasSubscribers).toBe(false)
    for (const spy of spies) expect(spy).not.toHaveBeenCalled()

    // An exporter adds exactly one 'close' listener and no channel subscriber; stop() removes it.
    const stop = registerPrometheus(tracker, { registry: new Registry() })
    expect(names.map((n) => tracker.listenerCount(n))).toEqual([0, 0, 1])
    for (const c of channels) expect(c.hasSubscribers).toBe(false)
    stop()
    expect(names.map((n) => tracker.listenerCount(n))).toEqual([0, 0, 0])
  })
})
