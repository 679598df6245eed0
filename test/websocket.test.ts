/**
 * WebSocket liveness over real sockets on loopback, with `ws` on both ends.
 *
 * - A peer behind a relay that silently stops forwarding (test/helpers/http2.ts `startRelay`:
 *   it reads and drops everything, ignores FIN and resets, like a route that died) is
 *   terminated with `ping_timeout` within pingInterval × 1.25 + pingTimeout + sweep + margin
 *   of the relay's stop; plain `ws` keeps the same dead socket.
 * - A healthy idle client (sends nothing, its library answers pings) stays, for seconds on real
 *   sockets and for hours with an injected clock.
 * - @fastify/websocket (registered before or after the plugin) and Express + `ws`
 *   (`guard.webSockets(wss)`) link without any other application code; a route may opt out.
 * - `maxUpgradedConnections` answers 503 before the handshake; the optional idle deadline
 *   closes an upgrade no library is linked to, and never one that answers pings.
 * - CONNECT and non-WebSocket upgrades keep today's behaviour; bad options throw typed errors.
 */
import http from 'node:http'
import https from 'node:https'
import type { AddressInfo } from 'node:net'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import {
  type CloseLogLine,
  type ConnectionRecord,
  ConnectionTracker,
  type ConnectionTrackerOptions,
  liveView,
  logCloses,
} from '@connguard/core'
import { connguard as expressGuard } from '@connguard/express'
import { connguard as fastifyGuard } from '@connguard/fastify'
import { registerOpenTelemetry } from '@connguard/opentelemetry'
import { registerPrometheus } from '@connguard/prometheus'
import fastifyWebsocket from '@fastify/websocket'
import express from 'express'
import Fastify, { type FastifyInstance } from 'fastify'
import { Registry } from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import WebSocket, { WebSocketServer } from 'ws'
import { type Relay, startRelay } from './helpers/http2.js'
import { otelSdk, pointsOf } from './helpers/otel.js'
import { parseSamples, sampleValue } from './helpers/prom-text.js'
import { sleep, waitUntil, watchCloses } from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'
import { clientTlsOptions, tlsOptions } from './helpers/tls.js'

const SWEEP = 50
const PING_INTERVAL = 300
const PING_TIMEOUT = 300
/** Event-loop lag on a shared 2-core machine. */
const LATE = 600
/** The latest a dead peer may be cut after its route died (ping.ts: a ping goes out 1–1.25 × interval after the last read). */
const DEAD_BY = PING_INTERVAL * 1.25 + PING_TIMEOUT + 2 * SWEEP + LATE

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

const WS_OPTIONS: ConnectionTrackerOptions = {
  sweepInterval: SWEEP,
  webSocket: { pingInterval: PING_INTERVAL, pingTimeout: PING_TIMEOUT },
}

/** A plain http server with a `ws` server on it that echoes; guarded when `tracker` is given. */
async function startWs(tracker: ConnectionTracker | null, link = true) {
  const server = http.createServer((_req, res) => res.end('ok'))
  tracker?.attach(server)
  const wss = new WebSocketServer({ server })
  wss.on('connection', (ws) => ws.on('message', (m) => ws.send(m)))
  if (tracker !== null && link) tracker.watchWebSockets(wss)
  const port = await listen(server)
  cleanups.push(async () => {
    for (const ws of wss.clients) ws.terminate()
    wss.close()
    await closeServer(server)
  })
  return { server, wss, port }
}

function connectWs(port: number, path = '/'): Promise<WebSocket> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}${path}`)
    ws.on('error', () => {})
    ws.once('open', () => resolve(ws))
    ws.once('unexpected-response', (_req, res) => reject(new Error(`status ${res.statusCode}`)))
    ws.once('close', () => reject(new Error('closed before open')))
    cleanups.push(() => ws.terminate())
  })
}

function onlyUpgraded(tracker: ConnectionTracker): ConnectionRecord | undefined {
  return [...tracker.connections()].find((r) => r.state === 'upgraded')
}

function tracked(options: ConnectionTrackerOptions = WS_OPTIONS): ConnectionTracker {
  const tracker = new ConnectionTracker(options)
  cleanups.push(() => tracker.close())
  return tracker
}

/** Opens a WebSocket through a relay, waits for one answered ping, then kills the route. */
async function deadPeer(port: number, tracker: ConnectionTracker | null, path = '/') {
  const relay: Relay = await startRelay(port)
  cleanups.push(() => relay.close())
  const client = await connectWs(relay.port, path)
  if (tracker !== null) {
    await waitUntil(() => (onlyUpgraded(tracker)?.webSocket?.pingRtt ?? null) !== null, {
      what: 'a ping answered through the relay',
      timeoutMs: 5_000,
    })
  }
  relay.stop()
  return { relay, client, stoppedAt: performance.now() }
}

describe('ws on a plain server: tracker.watchWebSockets(wss)', () => {
  it('a peer whose route died is terminated with ping_timeout; ws reports 1006', async () => {
    const tracker = tracked()
    const closes = watchCloses(tracker)
    const { port, wss } = await startWs(tracker)
    const serverClose = new Promise<number>((resolve) =>
      wss.once('connection', (ws) => ws.once('close', (code) => resolve(code))),
    )
    const { stoppedAt } = await deadPeer(port, tracker)
    const rec = await closes.next((r) => r.stateAtClose === 'upgraded', 10_000)
    const after = closes.closedAt(rec) - stoppedAt
    expect(rec.closeReason).toBe('ping_timeout')
    expect(after).toBeGreaterThanOrEqual(PING_TIMEOUT - 20)
    expect(after).toBeLessThanOrEqual(DEAD_BY)
    const ws = rec.webSocket
    expect(ws?.linked).toBe(true)
    expect(ws?.pingsSent).toBeGreaterThanOrEqual(2)
    expect(ws?.pingRtt).toBeGreaterThanOrEqual(0)
    expect(ws?.pingRtt).toBeLessThan(LATE)
    expect(await serverClose).toBe(1006)
    await waitUntil(() => rec.webSocket?.closeCode === 1006, { what: 'close code on the record' })
    expect(rec.toJSON().webSocket).toMatchObject({ linked: true, closeCode: 1006 })
    expect(tracker.snapshot().closedByReason.ping_timeout).toBe(1)
  })

  it('without connguard, ws keeps the same dead socket (the "before")', async () => {
    const { port, wss } = await startWs(null)
    await deadPeer(port, null)
    await sleep(DEAD_BY + 500)
    const [serverSide] = [...wss.clients]
    expect(serverSide?.readyState).toBe(WebSocket.OPEN)
  })

  it('a healthy idle client that answers pings stays open', async () => {
    const tracker = tracked()
    const closes = watchCloses(tracker)
    const { port } = await startWs(tracker)
    const client = await connectWs(port)
    await sleep(6 * PING_INTERVAL)
    const rec = onlyUpgraded(tracker)
    expect(rec?.state).toBe('upgraded')
    expect(rec?.webSocket?.pingsSent).toBeGreaterThanOrEqual(3)
    expect(client.readyState).toBe(WebSocket.OPEN)
    expect(closes.records.filter((r) => r.stateAtClose === 'upgraded')).toHaveLength(0)
    // And it still carries data.
    const echoed = new Promise<string>((resolve) => client.once('message', (m) => resolve(`${m}`)))
    client.send('hi')
    expect(await echoed).toBe('hi')
  })

  it('hours of an idle client answering pings, driven by an injected clock', async () => {
    let now = 1_000
    const tracker = tracked({
      sweepInterval: 1_000,
      webSocket: { pingInterval: 30_000, pingTimeout: 20_000 },
      clock: { now: () => now },
    })
    const { port, wss } = await startWs(tracker)
    const serverPongs: number[] = []
    wss.on('connection', (ws) => ws.on('pong', () => serverPongs.push(now)))
    const client = await connectWs(port)
    await waitUntil(() => onlyUpgraded(tracker)?.webSocket?.linked === true, { what: 'linked' })
    const rec = onlyUpgraded(tracker) as ConnectionRecord
    const HOURS = 4
    for (let t = 0; t < HOURS * 3_600_000; t += 10_000) {
      now += 10_000
      const sent = rec.webSocket?.pingsSent ?? 0
      tracker.sweep()
      if ((rec.webSocket?.pingsSent ?? 0) > sent) {
        const pongs = serverPongs.length
        await waitUntil(() => serverPongs.length > pongs, { what: 'pong', timeoutMs: 5_000 })
      }
    }
    expect(rec.state).toBe('upgraded')
    expect(client.readyState).toBe(WebSocket.OPEN)
    // A ping every 30–40 s of the client's silence: about 4 × 3600 / 40 at least.
    expect(rec.webSocket?.pingsSent).toBeGreaterThanOrEqual((HOURS * 3600) / 40)
  })

  it('a silent peer is found by the injected clock too: no pong in pingTimeout → ping_timeout', async () => {
    let now = 1_000
    const tracker = tracked({
      sweepInterval: 1_000,
      webSocket: { pingInterval: 30_000, pingTimeout: 20_000 },
      clock: { now: () => now },
    })
    const { port } = await startWs(tracker)
    const client = await connectWs(port)
    await waitUntil(() => onlyUpgraded(tracker)?.webSocket?.linked === true, { what: 'linked' })
    const rec = onlyUpgraded(tracker) as ConnectionRecord
    // The client's library stops answering: its socket is paused, nothing is read.
    ;(client as unknown as { _socket: net.Socket })._socket.pause()
    now += 30_000
    tracker.sweep()
    expect(rec.webSocket?.pingsSent).toBe(1)
    now += 19_000
    tracker.sweep()
    expect(rec.pendingReason).toBeNull()
    now += 1_000
    expect(tracker.sweep()).toBe(1)
    expect(rec.pendingReason).toBe('ping_timeout')
  })

  it('a client that sends nothing but answers pings is never cut by the idle deadline (off by default)', async () => {
    const tracker = tracked()
    expect(tracker.options.webSocket.idleTimeout).toBe(0)
    const { port } = await startWs(tracker)
    await connectWs(port)
    await sleep(4 * PING_INTERVAL)
    expect(onlyUpgraded(tracker)?.state).toBe('upgraded')
  })

  it('idleTimeout closes a WebSocket no library is linked to, with upgrade_idle_timeout; a linked one stays', async () => {
    const IDLE = 400
    const tracker = tracked({
      ...WS_OPTIONS,
      webSocket: { ...WS_OPTIONS.webSocket, idleTimeout: IDLE },
    })
    const closes = watchCloses(tracker)
    const unlinked = await startWs(tracker, false)
    const linked = await startWs(tracker, true)
    await connectWs(linked.port)
    const t0 = performance.now()
    await connectWs(unlinked.port)
    const rec = await closes.next((r) => r.stateAtClose === 'upgraded', 5_000)
    expect(rec.closeReason).toBe('upgrade_idle_timeout')
    expect(rec.webSocket?.linked).toBe(false)
    const after = closes.closedAt(rec) - t0
    expect(after).toBeGreaterThanOrEqual(IDLE - 20)
    expect(after).toBeLessThanOrEqual(IDLE + 2 * SWEEP + LATE)
    await sleep(3 * IDLE)
    expect(onlyUpgraded(tracker)?.webSocket?.linked).toBe(true)
  })

  it('sets TCP keepalive on upgraded WebSocket sockets', async () => {
    const tracker = tracked()
    const { server, port } = await startWs(tracker)
    const calls: unknown[][] = []
    server.prependListener('upgrade', (_req, socket: net.Socket) => {
      const original = socket.setKeepAlive.bind(socket)
      socket.setKeepAlive = (...args: unknown[]) => {
        calls.push(args)
        return original(...(args as [boolean, number]))
      }
    })
    await connectWs(port)
    expect(calls).toContainEqual([true, 60_000])
  })
})

describe('WSS (TLS)', () => {
  it('a dead peer over TLS is terminated with ping_timeout; the close event carries the library close code', async () => {
    const tracker = tracked()
    const closes = watchCloses(tracker)
    let codeAtClose: number | null | undefined
    tracker.on('close', (r) => {
      if (r.stateAtClose === 'upgraded') codeAtClose = r.webSocket?.closeCode
    })
    const server = https.createServer(tlsOptions)
    tracker.attach(server)
    const wss = new WebSocketServer({ server })
    tracker.watchWebSockets(wss)
    const port = await listen(server)
    cleanups.push(async () => {
      for (const ws of wss.clients) ws.terminate()
      wss.close()
      await closeServer(server)
    })
    const relay = await startRelay(port)
    cleanups.push(() => relay.close())
    const client = new WebSocket(`wss://localhost:${relay.port}/`, { ...clientTlsOptions })
    client.on('error', () => {})
    cleanups.push(() => client.terminate())
    await new Promise((resolve) => client.once('open', resolve))
    await waitUntil(() => (onlyUpgraded(tracker)?.webSocket?.pingRtt ?? null) !== null, {
      what: 'a ping answered over TLS',
    })
    relay.stop()
    const stoppedAt = performance.now()
    const rec = await closes.next((r) => r.stateAtClose === 'upgraded', 10_000)
    expect(rec.closeReason).toBe('ping_timeout')
    expect(rec.secure).toBe(true)
    expect(closes.closedAt(rec) - stoppedAt).toBeLessThanOrEqual(DEAD_BY)
    expect(codeAtClose).toBe(1006)
  })

  it('a client closing with 4001 over TLS: the close event carries 4001 and its reason', async () => {
    const tracker = tracked()
    let seen: unknown = 'none'
    tracker.on('close', (r) => {
      if (r.stateAtClose === 'upgraded') seen = r.webSocket
    })
    const server = https.createServer(tlsOptions)
    tracker.attach(server)
    const wss = new WebSocketServer({ server })
    tracker.watchWebSockets(wss)
    const port = await listen(server)
    cleanups.push(async () => {
      wss.close()
      await closeServer(server)
    })
    const client = new WebSocket(`wss://localhost:${port}/`, { ...clientTlsOptions })
    client.on('error', () => {})
    await new Promise((resolve) => client.once('open', resolve))
    await waitUntil(() => onlyUpgraded(tracker)?.webSocket?.linked === true, { what: 'linked' })
    client.close(4001, 'done')
    await waitUntil(() => seen !== 'none', { what: 'the close event' })
    expect(seen).toMatchObject({ closeCode: 4001, closeReason: 'done' })
  })
})

describe('maxUpgradedConnections', () => {
  it('refuses the next WebSocket upgrade with 503 before the handshake, counted with its reason', async () => {
    const tracker = tracked({ ...WS_OPTIONS, maxUpgradedConnections: 1 })
    const closes = watchCloses(tracker)
    const { port, wss } = await startWs(tracker)
    let accepted = 0
    wss.on('connection', () => accepted++)
    const first = await connectWs(port)
    await expect(connectWs(port)).rejects.toThrow('status 503')
    const refused = await closes.next(
      (r) => r.closeReason === 'max_concurrent_upgraded_connections_exceeded',
      5_000,
    )
    expect(refused.stateAtClose).toBe('active')
    expect(refused.webSocket).toBeNull()
    expect(accepted).toBe(1)
    expect(tracker.snapshot().upgraded).toBe(1)
    expect(tracker.snapshot().closedByReason.max_concurrent_upgraded_connections_exceeded).toBe(1)
    // Plain requests are not upgrades: served.
    const res = await fetch(`http://127.0.0.1:${port}/`)
    expect(await res.text()).toBe('ok')
    first.close()
    await waitUntil(() => tracker.snapshot().upgraded === 0, { what: 'first closed' })
    await connectWs(port)
    expect(accepted).toBe(2)
  })
})

describe('pressure', () => {
  it('sheds WebSockets whose peer left a ping unanswered, never healthy ones', async () => {
    const FLOOR = 200
    const tracker = tracked({
      sweepInterval: SWEEP,
      // A long pong timeout: what closes the dead ones here is pressure, not ping_timeout.
      webSocket: { pingInterval: PING_INTERVAL, pingTimeout: 60_000 },
      pressure: {
        limit: 10,
        floors: { handshakeTimeout: FLOOR, headersTimeout: FLOOR, keepAliveTimeout: FLOOR },
      },
    })
    const closes = watchCloses(tracker)
    const { port } = await startWs(tracker)
    const healthy = []
    for (let i = 0; i < 5; i++) healthy.push(await connectWs(port))
    const relay = await startRelay(port)
    cleanups.push(() => relay.close())
    for (let i = 0; i < 4; i++) await connectWs(relay.port)
    relay.stop()
    const shed = await closes.next((r) => r.closeReason === 'shed_under_pressure', 10_000)
    expect(shed.stateAtClose).toBe('upgraded')
    await sleep(4 * PING_INTERVAL)
    for (const ws of healthy) expect(ws.readyState).toBe(WebSocket.OPEN)
    const closed = closes.records.filter((r) => r.stateAtClose === 'upgraded')
    expect(closed.length).toBeGreaterThanOrEqual(1)
    expect(closed.length).toBeLessThanOrEqual(4)
    for (const r of closed) expect(r.closeReason).toBe('shed_under_pressure')
    expect(tracker.snapshot().upgraded).toBe(9 - closed.length)
  })
})

describe('upgrades that are not WebSockets keep today’s behaviour', () => {
  it('CONNECT and Upgrade: h2c: upgraded, no WebSocket facts, no ping, never capped', async () => {
    const tracker = tracked({ ...WS_OPTIONS, maxUpgradedConnections: 1 })
    const server = http.createServer()
    tracker.attach(server)
    server.on('connect', (_req, socket: net.Socket) => {
      socket.write('HTTP/1.1 200 Connection Established\r\n\r\n')
      socket.on('error', () => {})
    })
    server.on('upgrade', (_req, socket: net.Socket) => {
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n',
      )
      socket.on('error', () => {})
    })
    const port = await listen(server)
    cleanups.push(() => closeServer(server))
    const raw = (head: string) =>
      new Promise<net.Socket>((resolve) => {
        const s = net.connect(port, '127.0.0.1', () => s.write(head))
        s.on('error', () => {})
        s.once('data', () => resolve(s))
        cleanups.push(() => s.destroy())
      })
    await raw('CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n')
    await raw('CONNECT example.org:443 HTTP/1.1\r\nHost: example.org:443\r\n\r\n')
    await raw(
      'GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAAQCAAAAAAIAAAAA\r\n\r\n',
    )
    await sleep(3 * PING_INTERVAL)
    const upgraded = [...tracker.connections()].filter((r) => r.state === 'upgraded')
    expect(upgraded).toHaveLength(3)
    for (const rec of upgraded) expect(rec.webSocket).toBeNull()
    expect(tracker.snapshot().closedByReason).toEqual({})
  })
})

describe('@fastify/websocket', () => {
  async function startFastify(order: 'guard-first' | 'websocket-first'): Promise<{
    app: FastifyInstance
    port: number
  }> {
    const app = Fastify()
    if (order === 'guard-first') {
      await app.register(fastifyGuard, WS_OPTIONS)
      await app.register(fastifyWebsocket)
    } else {
      await app.register(fastifyWebsocket)
      await app.register(fastifyGuard, WS_OPTIONS)
    }
    app.get('/ws', { websocket: true }, (socket) => {
      socket.on('message', (m: Buffer) => socket.send(m))
    })
    app.get('/quiet', { websocket: true, config: { connguard: { webSocket: false } } }, (socket) =>
      socket.on('message', () => {}),
    )
    await app.listen({ port: 0, host: '127.0.0.1' })
    cleanups.push(() => app.close())
    return { app, port: (app.server.address() as AddressInfo).port }
  }

  for (const order of ['guard-first', 'websocket-first'] as const) {
    it(`${order}: a dead peer is closed with ping_timeout, no application code`, async () => {
      const { app, port } = await startFastify(order)
      const closes = watchCloses(app.connguard)
      const { stoppedAt } = await deadPeer(port, app.connguard, '/ws')
      const rec = await closes.next((r) => r.stateAtClose === 'upgraded', 10_000)
      expect(rec.closeReason).toBe('ping_timeout')
      expect(closes.closedAt(rec) - stoppedAt).toBeLessThanOrEqual(DEAD_BY)
    })
  }

  it('guard-first: app.close() sends 1001 before @fastify/websocket’s own preClose (which closes with no code) and closes in well under a second', async () => {
    const { app, port } = await startFastify('guard-first')
    const closes = watchCloses(app.connguard)
    const client = await connectWs(port, '/ws')
    await waitUntil(() => onlyUpgraded(app.connguard)?.webSocket?.linked === true, {
      what: 'linked',
    })
    const clientClose = new Promise<number>((resolve) => client.once('close', resolve))
    const t0 = performance.now()
    await app.close()
    expect(performance.now() - t0).toBeLessThan(1_000 + LATE)
    expect(await clientClose).toBe(1001)
    const rec = await closes.next((r) => r.stateAtClose === 'upgraded')
    expect(rec.closeReason).toBe('app_shutdown')
  })

  it('config.connguard.webSocket: false leaves that route’s WebSockets without pings', async () => {
    const { app, port } = await startFastify('guard-first')
    await connectWs(port, '/quiet')
    await connectWs(port, '/ws')
    await sleep(4 * PING_INTERVAL)
    const recs = [...app.connguard.connections()].filter((r) => r.state === 'upgraded')
    expect(recs).toHaveLength(2)
    const pings = recs.map((r) => r.webSocket?.pingsSent ?? -1).sort((a, b) => a - b)
    expect(pings[0]).toBe(0)
    expect(pings[1]).toBeGreaterThanOrEqual(2)
  })

  it('maxUpgradedConnections: the next upgrade gets 503 and its handler never runs', async () => {
    const app = Fastify()
    await app.register(fastifyGuard, { ...WS_OPTIONS, maxUpgradedConnections: 1 })
    await app.register(fastifyWebsocket)
    let handled = 0
    app.get('/ws', { websocket: true }, () => {
      handled++
    })
    await app.listen({ port: 0, host: '127.0.0.1' })
    cleanups.push(() => app.close())
    const port = (app.server.address() as AddressInfo).port
    await connectWs(port, '/ws')
    await expect(connectWs(port, '/ws')).rejects.toThrow('status 503')
    await waitUntil(
      () =>
        app.connguard.snapshot().closedByReason.max_concurrent_upgraded_connections_exceeded === 1,
      { what: 'the refusal counted' },
    )
    expect(handled).toBe(1)
    const res = await fetch(`http://127.0.0.1:${port}/ws`)
    expect(res.status).toBe(404)
  })

  it('a bad config.connguard.webSocket throws a typed error at route registration', async () => {
    const app = Fastify()
    cleanups.push(() => app.close())
    await app.register(fastifyGuard, WS_OPTIONS)
    await app.register(fastifyWebsocket)
    expect(() =>
      app.get(
        '/x',
        { websocket: true, config: { connguard: { webSocket: 'no' as never } } },
        () => {},
      ),
    ).toThrow(expect.objectContaining({ code: 'CONNGUARD_ERR_INVALID_OPTION' }))
  })
})

describe('Express + ws: guard.webSockets(wss)', () => {
  it('a dead peer is closed with ping_timeout', async () => {
    const guard = expressGuard(WS_OPTIONS)
    cleanups.push(() => guard.tracker.close())
    const app = express()
    app.use(guard)
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    const server = guard.attach(http.createServer(app))
    const wss = new WebSocketServer({ server })
    const unlink = guard.webSockets(wss)
    expect(typeof unlink).toBe('function')
    const port = await listen(server)
    cleanups.push(async () => {
      for (const ws of wss.clients) ws.terminate()
      wss.close()
      await closeServer(server)
    })
    const closes = watchCloses(guard.tracker)
    const { stoppedAt } = await deadPeer(port, guard.tracker)
    const rec = await closes.next((r) => r.stateAtClose === 'upgraded', 10_000)
    expect(rec.closeReason).toBe('ping_timeout')
    expect(closes.closedAt(rec) - stoppedAt).toBeLessThanOrEqual(DEAD_BY)
  })
})

describe('bad input', () => {
  it('webSocket options and maxUpgradedConnections are validated with typed errors', () => {
    const bad: [unknown, string][] = [
      [{ webSocket: { pingInterval: -1 } }, 'CONNGUARD_ERR_INVALID_OPTION'],
      [{ webSocket: { pingTimeout: 1.5 } }, 'CONNGUARD_ERR_INVALID_OPTION'],
      [{ webSocket: { idleTimeout: '10s' } }, 'CONNGUARD_ERR_INVALID_OPTION'],
      [{ webSocket: { tcpKeepAlive: null } }, 'CONNGUARD_ERR_INVALID_OPTION'],
      [{ webSocket: { pingIntervall: 1000 } }, 'CONNGUARD_ERR_UNKNOWN_OPTION'],
      [{ webSocket: 30_000 }, 'CONNGUARD_ERR_INVALID_OPTION'],
      [{ webSocket: true }, 'CONNGUARD_ERR_INVALID_OPTION'],
      [{ webSocket: [] }, 'CONNGUARD_ERR_INVALID_OPTION'],
      [{ maxUpgradedConnections: -1 }, 'CONNGUARD_ERR_INVALID_OPTION'],
      [{ maxUpgradedConnections: '10' }, 'CONNGUARD_ERR_INVALID_OPTION'],
    ]
    for (const [options, code] of bad) {
      expect(
        () => new ConnectionTracker(options as ConnectionTrackerOptions),
        JSON.stringify(options),
      ).toThrow(expect.objectContaining({ code }))
    }
    const off = new ConnectionTracker({ webSocket: false })
    expect(off.options.webSocket).toMatchObject({
      pingInterval: 0,
      pingTimeout: 0,
      idleTimeout: 0,
      tcpKeepAlive: 0,
    })
    off.close()
    const named = (() => {
      try {
        new ConnectionTracker({ webSocket: { pingInterval: -1 } })
      } catch (err) {
        return (err as Error).message
      }
    })()
    expect(named).toContain('webSocket.pingInterval')
  })

  it('watchWebSockets / watchWebSocket reject what is not a WebSocket (server)', () => {
    const tracker = tracked()
    expect(() => tracker.watchWebSockets({} as never)).toThrow(
      expect.objectContaining({ code: 'CONNGUARD_ERR_UNSUPPORTED_WEBSOCKET' }),
    )
    expect(() => tracker.watchWebSocket({ ping() {} } as never)).toThrow(
      expect.objectContaining({ code: 'CONNGUARD_ERR_UNSUPPORTED_WEBSOCKET' }),
    )
  })

  it('a ws client socket, or one of another server, is not linked (false, nothing added)', async () => {
    const tracker = tracked()
    const { port } = await startWs(null)
    const client = await connectWs(port)
    expect(tracker.watchWebSocket(client)).toBe(false)
    expect(client.listenerCount('pong')).toBe(0)
  })

  it('watchWebSockets links the WebSockets a server already holds; linking twice adds nothing', async () => {
    const tracker = tracked()
    const { port, wss } = await startWs(tracker, false)
    await connectWs(port)
    await waitUntil(() => wss.clients.size === 1, { what: 'accepted' })
    const [serverSide] = [...wss.clients] as WebSocket[]
    expect(onlyUpgraded(tracker)?.webSocket?.linked).toBe(false)
    tracker.watchWebSockets(wss)
    expect(onlyUpgraded(tracker)?.webSocket?.linked).toBe(true)
    tracker.watchWebSockets(wss)
    expect(tracker.watchWebSocket(serverSide as WebSocket)).toBe(true)
    expect(serverSide?.listenerCount('pong')).toBe(1)
    await waitUntil(() => (onlyUpgraded(tracker)?.webSocket?.pingRtt ?? null) !== null, {
      what: 'a ping answered',
    })
  })

  it('close() unlinks: no more pings, listeners removed', async () => {
    const tracker = new ConnectionTracker(WS_OPTIONS)
    const { port, wss } = await startWs(tracker)
    const before = wss.listenerCount('connection')
    await connectWs(port)
    await waitUntil(() => onlyUpgraded(tracker)?.webSocket?.linked === true, { what: 'linked' })
    const [serverSide] = [...wss.clients]
    expect(serverSide?.listenerCount('pong')).toBe(1)
    tracker.close()
    expect(wss.listenerCount('connection')).toBe(before - 1)
    expect(serverSide?.listenerCount('pong')).toBe(0)
  })
})

describe('drain: linked WebSockets get 1001 Going Away and are waited for', () => {
  /** A client's close, as it saw it. */
  function closeOf(ws: WebSocket): Promise<{ code: number; reason: string; at: number }> {
    return new Promise((resolve) =>
      ws.once('close', (code, reason) =>
        resolve({ code, reason: reason.toString(), at: performance.now() }),
      ),
    )
  }

  it('drain(): the client gets a close frame 1001 at once, the closing handshake ends the connection (app_shutdown), the drain ends long before its timeout', async () => {
    const tracker = tracked()
    const closes = watchCloses(tracker)
    const { port } = await startWs(tracker)
    const client = await connectWs(port)
    await waitUntil(() => onlyUpgraded(tracker)?.webSocket?.linked === true, { what: 'linked' })
    const clientClose = closeOf(client)
    const t0 = performance.now()
    const result = await tracker.drain({ timeout: 5_000, idleGrace: 300 })
    const took = performance.now() - t0
    const seen = await clientClose
    expect(seen.code).toBe(1001)
    expect(seen.reason).toBe('server shutting down')
    expect(seen.at - t0).toBeLessThan(LATE)
    // The timeout is 5 s: the drain waited for the handshake, not for its timeout.
    expect(took).toBeLessThan(5_000 - 1_000)
    expect(result).toEqual({ closedIdle: 0, finished: 1, forced: 0 })
    const rec = await closes.next((r) => r.stateAtClose === 'upgraded')
    expect(rec.closeReason).toBe('app_shutdown')
    // The client echoed the code (RFC 6455 §5.5.1): ws on the server reports it.
    await waitUntil(() => rec.webSocket?.closeCode === 1001, { what: 'close code on the record' })
  })

  it('a WebSocket opened while the drain is closing is sent 1001 as soon as it is linked', async () => {
    const tracker = tracked()
    const { port } = await startWs(tracker)
    // A keep-alive connection holds the drain in its closing phase for the idle grace.
    const agent = new http.Agent({ keepAlive: true })
    cleanups.push(() => agent.destroy())
    await new Promise<void>((resolve, reject) =>
      http
        .get({ port, host: '127.0.0.1', agent }, (res) => res.resume().on('end', resolve))
        .on('error', reject),
    )
    const drained = tracker.drain({ timeout: 5_000, idleGrace: 1_500 })
    expect(tracker.drainPhase).toBe('closing')
    const client = await connectWs(port)
    const t0 = performance.now()
    const seen = await closeOf(client)
    expect(seen.code).toBe(1001)
    expect(seen.at - t0).toBeLessThan(LATE)
    const result = await drained
    expect(result.forced).toBe(0)
  })

  it('a WebSocket upgraded before the drain but linked after it began gets 1001 when linked', async () => {
    const tracker = tracked()
    const { port, wss } = await startWs(tracker, false)
    const client = await connectWs(port)
    const [serverSide] = [...wss.clients]
    const drained = tracker.drain({ timeout: 5_000, idleGrace: 200 })
    await sleep(100)
    const clientClose = closeOf(client)
    const t0 = performance.now()
    expect(tracker.watchWebSocket(serverSide as WebSocket)).toBe(true)
    const seen = await clientClose
    expect(seen.code).toBe(1001)
    expect(seen.at - t0).toBeLessThan(LATE)
    expect((await drained).forced).toBe(0)
  })

  it('a peer that never answers the close frame is cut at the drain timeout (app_shutdown_timeout)', async () => {
    // Pings far out: the dead route is the drain's to find, not the ping check's.
    const tracker = tracked({
      sweepInterval: SWEEP,
      webSocket: { pingInterval: 60_000, pingTimeout: 60_000 },
    })
    const closes = watchCloses(tracker)
    const { port } = await startWs(tracker)
    const { stoppedAt } = await deadPeer(port, null)
    await waitUntil(() => onlyUpgraded(tracker)?.webSocket?.linked === true, { what: 'linked' })
    const t0 = performance.now()
    const result = await tracker.drain({ timeout: 800, idleGrace: 200 })
    const took = performance.now() - t0
    expect(stoppedAt).toBeLessThan(t0)
    expect(result).toEqual({ closedIdle: 0, finished: 0, forced: 1 })
    expect(took).toBeGreaterThanOrEqual(800 - 20)
    expect(took).toBeLessThan(800 + LATE)
    const rec = await closes.next((r) => r.stateAtClose === 'upgraded')
    expect(rec.closeReason).toBe('app_shutdown_timeout')
  })

  it('an upgrade no library is linked to is left to the application, and forced at the timeout', async () => {
    const tracker = tracked()
    const closes = watchCloses(tracker)
    const { port } = await startWs(tracker, false)
    const client = await connectWs(port)
    const clientClose = closeOf(client)
    const result = await tracker.drain({ timeout: 600, idleGrace: 200 })
    expect(result.forced).toBe(1)
    expect((await clientClose).code).toBe(1006)
    const rec = await closes.next((r) => r.stateAtClose === 'upgraded')
    expect(rec.closeReason).toBe('app_shutdown_timeout')
  })
})

describe('records, close log, live view and exporters', () => {
  it('upgraded_connections in both exporters; the WebSocket facts in the close log line and the live view', async () => {
    const tracker = tracked()
    const registry = new Registry()
    cleanups.push(registerPrometheus(tracker, { registry }))
    const otel = otelSdk(cleanups)
    cleanups.push(registerOpenTelemetry(tracker, { meterProvider: otel.provider }))
    const lines: { obj: CloseLogLine; msg?: string }[] = []
    const log = (obj: object, msg?: string) => lines.push({ obj: obj as CloseLogLine, msg })
    cleanups.push(logCloses(tracker, { info: log, debug: log, warn: log }))
    const view = liveView(tracker)
    cleanups.push(() => view.close())
    const { port } = await startWs(tracker)
    const a = await connectWs(port)
    await connectWs(port)
    await waitUntil(() => (onlyUpgraded(tracker)?.webSocket?.pingRtt ?? null) !== null, {
      what: 'a ping answered',
    })
    const samples = parseSamples(await registry.metrics())
    expect(sampleValue(samples, 'connguard_upgraded_connections')).toBe(2)
    const points = pointsOf<number>(await otel.collect(), 'connguard.upgraded_connections')
    expect(points.map((p) => p.value)).toEqual([2])
    const live = view.json().connections.filter((c) => c.state === 'upgraded')
    expect(live).toHaveLength(2)
    expect(live[0]?.webSocket).toMatchObject({ linked: true, closeCode: null })
    expect(live.some((c) => (c.webSocket?.pingsSent ?? 0) >= 1)).toBe(true)
    a.close(4000, 'bye')
    await waitUntil(() => lines.some((l) => l.obj.stateAtClose === 'upgraded'), {
      what: 'a close log line',
    })
    const line = lines.find((l) => l.obj.stateAtClose === 'upgraded')
    expect(line?.obj.webSocket).toMatchObject({ closeCode: 4000, closeReason: 'bye' })
    expect(line?.msg).toContain(' ws=4000 pings=')
    expect(line?.obj.upgradedMs).toBeGreaterThan(0)
    const closed = view.json().recentCloses.find((r) => r.stateAtClose === 'upgraded')
    expect(closed?.webSocket?.closeCode).toBe(4000)
    await waitUntil(() => tracker.snapshot().upgraded === 1, { what: 'one left' })
    expect(
      sampleValue(parseSamples(await registry.metrics()), 'connguard_upgraded_connections'),
    ).toBe(1)
  })
})
