/**
 * The state machine and the sweeper, driven by an injected clock over real
 * loopback sockets: time moves only when the test says so, and `sweep()` is
 * called by hand, so deadlines are checked to the millisecond without sleeping.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import http from 'node:http'
import http2 from 'node:http2'
import https from 'node:https'
import type { Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { getRequest, openSocket } from '../../../test/helpers/clients.js'
import { closeServer, listen } from '../../../test/helpers/server.js'
import { tlsOptions } from '../../../test/helpers/tls.js'
import type { Core } from '../src/engine/core.js'
import { cutConnection } from '../src/engine/cut.js'
import {
  type ConnectionRecord,
  ConnectionTracker,
  type ConnectionTrackerOptions,
} from '../src/index.js'
import { engineOf } from '../src/internal.js'

class ManualClock {
  t = 1_000
  now(): number {
    return this.t
  }
}

const HEADERS = 1_000
const KEEP_ALIVE = 2_000
const HANDSHAKE = 500

interface Setup {
  clock: ManualClock
  tracker: ConnectionTracker
  server: http.Server
  port: number
  closes: ConnectionRecord[]
  serverSockets: Socket[]
}

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

async function setup(
  options: ConnectionTrackerOptions = {},
  handler: http.RequestListener = (_req, res) => res.end('ok'),
  secure = false,
  beforeAttach?: (server: http.Server) => void,
): Promise<Setup> {
  const clock = new ManualClock()
  const tracker = new ConnectionTracker({
    headersTimeout: HEADERS,
    keepAliveTimeout: KEEP_ALIVE,
    handshakeTimeout: HANDSHAKE,
    // The interval never fires within a test: only explicit sweep() calls enforce.
    sweepInterval: 60_000,
    clock,
    ...options,
  })
  const server = secure ? https.createServer(tlsOptions, handler) : http.createServer(handler)
  beforeAttach?.(server)
  tracker.attach(server)
  const closes: ConnectionRecord[] = []
  tracker.on('close', (rec) => closes.push(rec))
  const serverSockets: Socket[] = []
  server.on('connection', (s: Socket) => serverSockets.push(s))
  const port = await listen(server)
  cleanups.push(async () => {
    tracker.close()
    await closeServer(server)
  })
  return { clock, tracker, server, port, closes, serverSockets }
}

/** Resolves when `pred` holds, checked on every tracker event and every 5 ms (2 s cap). */
async function until(pred: () => boolean, what = 'condition'): Promise<void> {
  const end = Date.now() + 2_000
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

const only = (t: ConnectionTracker): ConnectionRecord => {
  const all = [...t.connections()]
  expect(all).toHaveLength(1)
  return all[0] as ConnectionRecord
}

describe('deadlines under a manual clock', () => {
  it('cuts a silent plain connection at headersTimeout from accept, not a millisecond before, with 408', async () => {
    const { clock, tracker, port, closes } = await setup()
    const conn = await openSocket(port)
    await until(() => tracker.snapshot().total === 1, 'open')
    expect(only(tracker).state).toBe('new')
    clock.t += HEADERS - 1
    expect(tracker.sweep()).toBe(0)
    clock.t += 1
    expect(tracker.sweep()).toBe(1)
    const info = await conn.closed
    expect(info.received.toString('latin1')).toMatch(/^HTTP\/1\.1 408 /)
    await until(() => closes.length === 1, 'close')
    const rec = closes[0] as ConnectionRecord
    expect(rec.closeReason).toBe('request_headers_timeout')
    expect(rec.stateAtClose).toBe('new')
    expect(rec.duration).toBe(HEADERS)
    expect(rec.stateDurations.new).toBe(HEADERS)
    expect(tracker.snapshot()).toMatchObject({
      total: 0,
      closedByReason: { request_headers_timeout: 1 },
    })
  })

  it('counts the first request head from establishment, a later one from its own first byte', async () => {
    const { clock, tracker, port, closes } = await setup()
    const conn = await openSocket(port)
    await until(() => tracker.snapshot().total === 1)
    clock.t += 600
    conn.send('GET / HTTP/1.1\r\nHost: x\r\n')
    await until(() => only(tracker).state === 'active', 'active')
    expect(only(tracker).timeToFirstRequest).toBe(600)
    clock.t += HEADERS - 600 - 1
    expect(tracker.sweep()).toBe(0)
    conn.send('\r\n')
    await until(() => only(tracker).state === 'idle', 'first response')
    const rec = only(tracker)
    expect(rec.requests).toBe(1)
    // Idle for less than keep-alive, then a later request starts and trickles.
    clock.t += KEEP_ALIVE - 100
    expect(tracker.sweep()).toBe(0)
    conn.send('GET / HTTP/1.1\r\n')
    await until(() => rec.state === 'active', 'second request begins')
    clock.t += HEADERS - 1
    expect(tracker.sweep()).toBe(0)
    clock.t += 1
    expect(tracker.sweep()).toBe(1)
    await conn.closed
    await until(() => closes.length === 1)
    expect(rec.closeReason).toBe('request_headers_timeout')
    expect(rec.stateAtClose).toBe('active')
    expect(rec.requests).toBe(1)
  })

  it('closes an idle keep-alive connection at keepAliveTimeout after the response, without 408', async () => {
    const { clock, tracker, port, closes, server } = await setup()
    expect(server.keepAliveTimeout).toBe(KEEP_ALIVE)
    const conn = await openSocket(port)
    conn.send(getRequest('/'))
    await until(() => tracker.snapshot().idle === 1, 'idle')
    await conn.waitFor((b) => (b.toString('latin1').endsWith('\r\n\r\nok') ? true : undefined))
    const before = conn.received().length
    clock.t += KEEP_ALIVE - 1
    expect(tracker.sweep()).toBe(0)
    clock.t += 1
    expect(tracker.sweep()).toBe(1)
    const info = await conn.closed
    expect(info.received.length).toBe(before)
    expect(info.received.toString('latin1')).toContain('Keep-Alive: timeout=2')
    await until(() => closes.length === 1)
    expect(closes[0]).toMatchObject({
      closeReason: 'keep_alive_timeout',
      stateAtClose: 'idle',
      requests: 1,
    })
  })

  it('a connection that keeps serving outlives every earlier deadline: idle is timed from its last response', async () => {
    // Each request moves the idle deadline later without moving the heap entry: the sweeps
    // below pop entries whose key is stale, find nothing due and queue them again.
    const { clock, tracker, port, closes } = await setup()
    const conn = await openSocket(port)
    await until(() => tracker.snapshot().total === 1, 'open')
    const rec = only(tracker)
    for (let i = 1; i <= 6; i++) {
      conn.send('GET / HTTP/1.1\r\nHost: x\r\n\r\n')
      await until(() => rec.requests === i && rec.state === 'idle', `response ${i}`)
      clock.t += KEEP_ALIVE - 1
      expect(tracker.sweep()).toBe(0)
    }
    clock.t += 1
    expect(tracker.sweep()).toBe(1)
    await conn.closed
    await until(() => closes.length === 1, 'close')
    expect(rec.closeReason).toBe('keep_alive_timeout')
    expect(rec.requests).toBe(6)
    expect(rec.duration).toBe(6 * (KEEP_ALIVE - 1) + 1)
  })

  it('applies requestTimeout from the first byte to the response, and a per-request override lifts it', async () => {
    const pending: http.ServerResponse[] = []
    let tracker!: ConnectionTracker
    const s = await setup({ requestTimeout: 3_000, headersTimeout: 0 }, (req, res) => {
      if (req.url === '/free') tracker.overrideRequest(req, { requestTimeout: false })
      pending.push(res)
    })
    tracker = s.tracker
    const slow = await openSocket(s.port)
    slow.send(getRequest('/slow'))
    await until(() => pending.length === 1, 'handler')
    const free = await openSocket(s.port)
    free.send(getRequest('/free'))
    await until(() => pending.length === 2, 'handler 2')
    s.clock.t += 3_000
    expect(tracker.sweep()).toBe(1)
    const info = await slow.closed
    expect(info.received.toString('latin1')).toMatch(/^HTTP\/1\.1 408 /)
    await until(() => s.closes.length === 1)
    expect(s.closes[0]).toMatchObject({ closeReason: 'request_timeout', stateAtClose: 'active' })
    s.clock.t += 100_000
    expect(tracker.sweep()).toBe(0)
    expect(free.isOpen()).toBe(true)
    free.destroy()
  })

  it('cuts a TLS connection that never handshakes, from new or handshaking', async () => {
    const { clock, tracker, port, closes } = await setup({}, undefined, true)
    const silent = await openSocket(port)
    const talker = await openSocket(port)
    const silentPort = silent.socket.localPort
    const talkerPort = talker.socket.localPort
    talker.send(Buffer.from([0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00]))
    await until(() => tracker.snapshot().total === 2)
    await until(() =>
      [...tracker.connections()].every((r) => r.bytesRead > 0 || r.remotePort === silentPort),
    )
    tracker.sweep() // sees the bytes: handshaking
    expect(tracker.snapshot()).toMatchObject({ new: 1, handshaking: 1 })
    clock.t += HANDSHAKE
    expect(tracker.sweep()).toBe(2)
    await Promise.all([silent.closed, talker.closed])
    await until(() => closes.length === 2)
    const byPort = new Map(closes.map((r) => [r.remotePort, r]))
    expect(byPort.get(silentPort)).toMatchObject({
      closeReason: 'tls_handshake_timeout',
      stateAtClose: 'new',
    })
    expect(byPort.get(talkerPort)).toMatchObject({
      closeReason: 'tls_handshake_timeout',
      stateAtClose: 'handshaking',
      handshakeDuration: null,
    })
  })

  it('records a completed handshake and times the first head from it', async () => {
    const { clock, tracker, port, closes } = await setup({}, undefined, true)
    const conn = await openSocket(port, { tls: true })
    await until(() => tracker.snapshot().idle === 1, 'established')
    const rec = only(tracker)
    expect(rec.secure).toBe(true)
    expect(rec.handshakeDuration).toBe(0) // the manual clock did not move
    expect(rec.tls).toMatchObject({
      protocol: expect.stringMatching(/^TLSv1\.[23]$/),
      servername: 'localhost',
      resumed: false,
    })
    clock.t += HEADERS
    expect(tracker.sweep()).toBe(1)
    const info = await conn.closed
    expect(info.received.toString('latin1')).toMatch(/^HTTP\/1\.1 408 /)
    await until(() => closes.length === 1)
    expect(rec).toMatchObject({ closeReason: 'request_headers_timeout', stateAtClose: 'idle' })
  })

  it('stops HTTP deadlines for an upgraded connection', async () => {
    const { clock, tracker, port, server, closes } = await setup({ requestTimeout: 1_000 })
    server.on('upgrade', (_req, socket: Socket) => {
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
      )
      // Read and end on the peer's FIN, as a WebSocket server does (HTTP sockets allow half-open).
      socket.resume()
      socket.on('end', () => socket.end())
    })
    const conn = await openSocket(port)
    conn.send('GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n')
    await conn.waitFor((b) => (b.includes('\r\n\r\n') ? true : undefined))
    await until(() => tracker.snapshot().upgraded === 1, 'upgraded')
    clock.t += 1_000_000
    expect(tracker.sweep()).toBe(0)
    expect(conn.isOpen()).toBe(true)
    conn.destroy()
    await until(() => closes.length === 1)
    expect(closes[0]).toMatchObject({ stateAtClose: 'upgraded', requests: 1 })
  })

  it('falls back to polling idle connections when a connection has no parser to hook', async () => {
    // Simulates a Node whose HTTP/1 connections carry no parser where the binding looks: it
    // is hidden from listeners after Node's own, and given back before any byte is read.
    const hideParser = (server: http.Server) =>
      server.on('connection', (socket: Socket) => {
        const s = socket as unknown as { parser: unknown }
        const parser = s.parser
        s.parser = null
        setImmediate(() => {
          s.parser = parser
        })
      })
    const { clock, tracker, port, closes } = await setup({}, undefined, false, hideParser)
    const conn = await openSocket(port)
    await until(() => tracker.snapshot().new === 1, 'accepted')
    await new Promise((r) => setImmediate(r))
    conn.send(getRequest('/'))
    await until(() => tracker.snapshot().idle === 1, 'idle')
    const rec = only(tracker)
    expect(rec.requests).toBe(1)
    clock.t += 100
    const readBefore = rec.bytesRead
    conn.send('GET / HTTP/1.1\r\n')
    await until(() => rec.bytesRead > readBefore, 'bytes of the second request')
    expect(rec.state, 'no hook: nothing reported the bytes').toBe('idle')
    tracker.sweep() // polls idle connections: sees the bytes
    expect(rec.state).toBe('active')
    clock.t += HEADERS
    expect(tracker.sweep()).toBe(1)
    await conn.closed
    await until(() => closes.length === 1)
    expect(rec.closeReason).toBe('request_headers_timeout')
  })

  it('a head in more than one read: active from its first read (Node reports each read), header deadline from there', async () => {
    const { clock, tracker, port, closes } = await setup()
    const conn = await openSocket(port)
    conn.send(getRequest('/'))
    await until(() => tracker.snapshot().idle === 1, 'idle')
    const rec = only(tracker)
    clock.t += 100
    conn.send('GET / HTTP/1.1\r\n')
    await until(() => rec.state === 'active', 'the first read of the second head')
    const began = clock.t
    clock.t += HEADERS - 1
    expect(tracker.sweep()).toBe(0)
    clock.t = began + HEADERS
    expect(tracker.sweep()).toBe(1)
    await conn.closed
    await until(() => closes.length === 1)
    expect(rec.closeReason).toBe('request_headers_timeout')
    expect(rec.requests).toBe(1)
  })
})

describe('events', () => {
  it('emits open, transitions and close in order, and publishes them on diagnostics channels', async () => {
    const { tracker, port, closes } = await setup()
    const seen: string[] = []
    const channelSeen: string[] = []
    tracker.on('open', (r) => seen.push(`open:${r.state}`))
    tracker.on('transition', (_r, from, to) => seen.push(`${from}->${to}`))
    tracker.on('close', (r) => seen.push(`close:${r.closeReason}`))
    const onOpen = (m: unknown) =>
      channelSeen.push(`open:${(m as { record: ConnectionRecord }).record.id}`)
    const onClose = (m: unknown) =>
      channelSeen.push(`close:${(m as { record: ConnectionRecord }).record.closeReason}`)
    diagnosticsChannel.subscribe('connguard:connection:open', onOpen)
    diagnosticsChannel.subscribe('connguard:connection:close', onClose)
    try {
      const conn = await openSocket(port)
      conn.send(getRequest('/', { Connection: 'close' }))
      await conn.closed
      await until(() => closes.length === 1)
    } finally {
      diagnosticsChannel.unsubscribe('connguard:connection:open', onOpen)
      diagnosticsChannel.unsubscribe('connguard:connection:close', onClose)
    }
    expect(seen).toEqual([
      'open:new',
      'new->active',
      'active->idle',
      'idle->closed',
      'close:client_closed',
    ])
    expect(channelSeen).toEqual([`open:${closes[0]?.id}`, 'close:client_closed'])
  })

  it('close() detaches, restores Node timers, and is idempotent', async () => {
    const server = http.createServer((_q, r) => r.end())
    const before = {
      connection: server.listenerCount('connection'),
      headersTimeout: server.headersTimeout,
      requestTimeout: server.requestTimeout,
      keepAliveTimeout: server.keepAliveTimeout,
    }
    const tracker = new ConnectionTracker({ keepAliveTimeout: 9_000 }).attach(server)
    expect(server.headersTimeout).toBe(0)
    expect(server.requestTimeout).toBe(0)
    expect(server.keepAliveTimeout).toBe(9_000)
    tracker.close()
    tracker.close()
    expect({
      connection: server.listenerCount('connection'),
      headersTimeout: server.headersTimeout,
      requestTimeout: server.requestTimeout,
      keepAliveTimeout: server.keepAliveTimeout,
    }).toEqual(before)
    for (const event of ['newListener', 'removeListener', 'upgrade', 'connect'])
      expect(server.listenerCount(event)).toBe(0)
    expect(() => tracker.attach(server)).toThrow(
      expect.objectContaining({ code: 'CONNGUARD_ERR_TRACKER_CLOSED' }),
    )
    // Another tracker may guard it now.
    new ConnectionTracker().attach(server).close()
  })

  it('refuses a second tracker on one server and servers it cannot guard', () => {
    const server = http.createServer()
    const a = new ConnectionTracker().attach(server)
    expect(a.attach(server)).toBe(a)
    expect(() => new ConnectionTracker().attach(server)).toThrow(
      expect.objectContaining({ code: 'CONNGUARD_ERR_ALREADY_ATTACHED' }),
    )
    expect(() => new ConnectionTracker().attach({})).toThrow(
      expect.objectContaining({ code: 'CONNGUARD_ERR_UNSUPPORTED_SERVER' }),
    )
    a.close()
  })
})

describe('fixes from the core review', () => {
  it('counts a connection closed for maxConnectionAge in what sweep() returns', async () => {
    const { clock, tracker, port, closes } = await setup({ maxConnectionAge: 500 })
    const conn = await openSocket(port)
    await until(() => tracker.snapshot().total === 1, 'open')
    clock.t += 499
    expect(tracker.sweep()).toBe(0)
    clock.t += 1
    expect(tracker.sweep()).toBe(1)
    await conn.closed
    await until(() => closes.length === 1, 'close')
    expect(closes[0]?.closeReason).toBe('max_connection_age')
  })

  it("counts a live record's current state up to now", async () => {
    const { clock, tracker, port } = await setup()
    const conn = await openSocket(port)
    await until(() => tracker.snapshot().total === 1, 'open')
    const rec = only(tracker)
    clock.t += 400
    expect(rec.stateDurations).toMatchObject({ new: 400, idle: 0, active: 0, upgraded: 0 })
    expect((rec.toJSON().stateDurations as { new: number }).new).toBe(400)
    conn.send(getRequest('/'))
    await until(() => rec.state === 'idle' && rec.requests === 1, 'idle')
    clock.t += 250
    const d = rec.stateDurations
    expect(d.new).toBe(400)
    expect(d.idle).toBe(250)
    conn.destroy()
  })

  it('follows a pipelined request once the one before it is answered: its body rate is measured', async () => {
    let release = (): void => {}
    const released = new Promise<void>((r) => {
      release = r
    })
    const handler: http.RequestListener = (req, res) => {
      if (req.url === '/slow') void released.then(() => res.end('slow'))
      else {
        req.resume()
        req.on('end', () => res.end('done'))
      }
    }
    const { clock, tracker, port, closes } = await setup(
      { minBodyRate: { bytesPerSecond: 1_000, graceMs: 1_000 }, requestTimeout: 0 },
      handler,
    )
    const conn = await openSocket(port)
    conn.send(
      `${getRequest('/slow')}POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n0123456789`,
    )
    await until(() => tracker.snapshot().total === 1 && only(tracker).requests === 2, 'two heads')
    const rec = only(tracker)
    release()
    await conn.waitFor((b) => (b.toString('latin1').includes('slow') ? true : undefined))
    // The upload now trickles: 10 bytes, then nothing, for three windows.
    for (let i = 0; i < 3 && closes.length === 0; i++) {
      clock.t += 1_000
      tracker.sweep()
      await new Promise((r) => setTimeout(r, 20))
    }
    await until(() => closes.length === 1, 'close')
    expect(rec.closeReason).toBe('min_request_body_data_rate')
    conn.destroy()
  })
})

describe('fixes from the core review: HTTP/2', () => {
  /** An h2c server guarded with the manual clock, one client session with a stream left open. */
  async function h2Setup(options: ConnectionTrackerOptions) {
    const clock = new ManualClock()
    const tracker = new ConnectionTracker({ sweepInterval: 60_000, clock, ...options })
    // Streams are never answered: the session stays active.
    const server = http2.createServer()
    server.on('stream', () => {})
    tracker.attach(server)
    const closes: ConnectionRecord[] = []
    tracker.on('close', (rec) => closes.push(rec))
    const port = await listen(server as unknown as http.Server)
    const client = http2.connect(`http://127.0.0.1:${port}`)
    client.on('error', () => {})
    const stream = client.request({ ':path': '/' }, { endStream: false })
    stream.on('error', () => {})
    cleanups.push(async () => {
      client.destroy()
      tracker.close()
      await closeServer(server as unknown as http.Server)
    })
    await until(() => tracker.snapshot().active === 1, 'an open stream')
    return { clock, tracker, closes, rec: only(tracker) }
  }

  it('keeps PING due times whole milliseconds when pingInterval is not a multiple of 4', async () => {
    // A quarter of 1,001 ms is checked, over a sweep short enough not to round it away.
    const { rec } = await h2Setup({ pingInterval: 1_001, pingTimeout: 500, sweepInterval: 10 })
    expect(rec.h2).not.toBeNull()
    expect(Number.isInteger(rec.deadlineAt)).toBe(true)
    expect(Number.isInteger((rec.h2 as { pingCheckAt: number }).pingCheckAt)).toBe(true)
  })

  it("ends a session's close grace with the reason it was cut for", async () => {
    const { clock, tracker, closes, rec } = await h2Setup({ pingInterval: 0 })
    const binding = rec.binding as NonNullable<typeof rec.binding>
    const reasons: unknown[] = []
    const cut = binding.cut.bind(binding)
    binding.cut = (r, reason) => {
      reasons.push(reason)
      cut(r, reason)
    }
    cutConnection(engineOf(tracker) as unknown as Core, rec, 'app_shutdown')
    // GOAWAY waits for the open stream; the grace then destroys the session.
    clock.t += 2 * 60_000
    expect(tracker.sweep()).toBe(1)
    await until(() => closes.length === 1, 'close')
    expect(reasons).toEqual(['app_shutdown', 'app_shutdown'])
    expect(rec.closeReason).toBe('app_shutdown')
  })
})
