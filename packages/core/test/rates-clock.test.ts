/**
 * The data-rate checks (minBodyRate, minResponseRate) under an injected clock over real
 * loopback sockets: bytes move for real, time moves only when the test says so, and
 * `sweep()` is called by hand, so each window boundary is checked to the millisecond.
 *
 * Body windows run from the request head: each must carry ≥ bytesPerSecond × window bytes
 * (raw socket bytesRead), and a window that ends while the server is not reading the body
 * restarts instead of counting. Response windows start at the first check that sees bytes
 * the client is not taking (writeQueueSize > 0).
 */
import http from 'node:http'
import type { Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { type Conn, getRequest, openSocket } from '../../../test/helpers/clients.js'
import { closeServer, listen } from '../../../test/helpers/server.js'
import {
  type ConnectionRecord,
  ConnectionTracker,
  type ConnectionTrackerOptions,
} from '../src/index.js'

class ManualClock {
  t = 1_000
  now(): number {
    return this.t
  }
}

/** The body rate of these tests: 100 B/s over 1 s windows (grace 1 s). */
const RATE = 100
const WINDOW = 1_000

interface Handle {
  reading?: boolean
  writeQueueSize?: number
  bytesRead?: number
}
const handleOf = (s: Socket): Handle => (s as unknown as { _handle: Handle })._handle

interface Setup {
  clock: ManualClock
  tracker: ConnectionTracker
  port: number
  closes: ConnectionRecord[]
  serverSockets: Socket[]
  requests: { req: http.IncomingMessage; res: http.ServerResponse }[]
}

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/**
 * A plain HTTP server whose handler only records each request: the test decides when the
 * body is read and the response written.
 */
async function setup(options: ConnectionTrackerOptions = {}): Promise<Setup> {
  const clock = new ManualClock()
  const tracker = new ConnectionTracker({
    headersTimeout: 0,
    keepAliveTimeout: 0,
    minBodyRate: { bytesPerSecond: RATE, graceMs: WINDOW },
    minResponseRate: false,
    // The interval never fires within a test: only explicit sweep() calls enforce.
    sweepInterval: 60_000,
    clock,
    ...options,
  })
  const requests: Setup['requests'] = []
  const server = http.createServer((req, res) => {
    requests.push({ req, res })
  })
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
  return { clock, tracker, port, closes, serverSockets, requests }
}

/** Resolves when `pred` holds, checked every 5 ms (3 s cap). */
async function until(pred: () => boolean, what = 'condition'): Promise<void> {
  const end = Date.now() + 3_000
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** Lets `ms` of real time pass (for the kernel to move bytes); the manual clock stays put. */
const settle = (ms: number) => new Promise((r) => setTimeout(r, ms))

const only = (t: ConnectionTracker): ConnectionRecord => {
  const all = [...t.connections()]
  expect(all).toHaveLength(1)
  return all[0] as ConnectionRecord
}

const postHead = (contentLength: number, path = '/') =>
  `POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${contentLength}\r\n\r\n`

/** Count what the handler reads of `req`'s body. */
function consume(req: http.IncomingMessage): { bytes: number; ended: boolean } {
  const seen = { bytes: 0, ended: false }
  req.on('data', (c: Buffer) => {
    seen.bytes += c.length
  })
  req.on('end', () => {
    seen.ended = true
  })
  return seen
}

/** Send the head of a POST and wait until its handler runs; returns the connection. */
async function startPost(s: Setup, contentLength: number): Promise<Conn> {
  const conn = await openSocket(s.port)
  conn.send(postHead(contentLength))
  await until(() => s.requests.length === 1, 'handler')
  return conn
}

describe('minBodyRate under a manual clock', () => {
  it('passes a window carrying exactly rate × window bytes; one byte less is cut with 408', async () => {
    const s = await setup()
    const conn = await startPost(s, 10_000)
    const seen = consume((s.requests[0] as Setup['requests'][0]).req)
    const rec = only(s.tracker)
    expect(rec.state).toBe('active')
    // Window 1: exactly RATE × WINDOW / 1000 bytes.
    conn.send(Buffer.alloc((RATE * WINDOW) / 1_000, 'a'))
    await until(() => seen.bytes === 100, 'first 100 bytes read')
    s.clock.t += WINDOW - 1
    expect(s.tracker.sweep(), 'checked a millisecond early').toBe(0)
    s.clock.t += 1
    expect(s.tracker.sweep(), 'exactly the minimum must pass').toBe(0)
    // Window 2, from that check: one byte short.
    conn.send(Buffer.alloc((RATE * WINDOW) / 1_000 - 1, 'b'))
    await until(() => seen.bytes === 199, 'next 99 bytes read')
    s.clock.t += WINDOW - 1
    expect(s.tracker.sweep()).toBe(0)
    expect(conn.isOpen()).toBe(true)
    s.clock.t += 1
    expect(s.tracker.sweep()).toBe(1)
    const info = await conn.closed
    expect(info.received.toString('latin1')).toMatch(/^HTTP\/1\.1 408 /)
    await until(() => s.closes.length === 1, 'close')
    expect(rec).toMatchObject({
      closeReason: 'min_request_body_data_rate',
      stateAtClose: 'active',
      requests: 1,
    })
    expect(s.tracker.snapshot().closedByReason).toEqual({ min_request_body_data_rate: 1 })
  })

  it('measures the window from the request head over the graceMs window, at least 1 s', async () => {
    // graceMs 200 gives a 1 s window: a body that stops is not cut at 200 ms, but at 1 s.
    const s = await setup({ minBodyRate: { bytesPerSecond: RATE, graceMs: 200 } })
    const conn = await startPost(s, 10_000)
    consume((s.requests[0] as Setup['requests'][0]).req)
    s.clock.t += 200
    expect(s.tracker.sweep()).toBe(0)
    s.clock.t += 799
    expect(s.tracker.sweep()).toBe(0)
    s.clock.t += 1
    expect(s.tracker.sweep()).toBe(1)
    await conn.closed
    await until(() => s.closes.length === 1, 'close')
    expect(s.closes[0]?.closeReason).toBe('min_request_body_data_rate')
  })

  it('restarts the window while the server is not reading, and counts again once it reads', async () => {
    const s = await setup()
    const sent = 1_000_000
    // Content-Length above what is sent: the body never completes, so the check stays on.
    const conn = await startPost(s, 2 * sent)
    const { req } = s.requests[0] as Setup['requests'][0]
    const raw = s.serverSockets[0] as Socket
    conn.send(Buffer.alloc(sent, 'a'))
    await until(() => handleOf(raw).reading === false, 'server stops reading the unread body')
    const rec = only(s.tracker)
    // Five windows with no byte read: each check restarts the window rather than cut.
    for (let i = 0; i < 5; i++) {
      s.clock.t += WINDOW
      expect(s.tracker.sweep(), `paused window ${i + 1}`).toBe(0)
    }
    expect(conn.isOpen()).toBe(true)
    expect(rec.state).toBe('active')
    // The application reads what is there: ~1 MB arrives within the window that starts now.
    const restartedAt = s.clock.t
    const seen = consume(req)
    await until(() => seen.bytes === sent, 'the whole sent body read')
    expect(handleOf(raw).reading).toBe(true)
    s.clock.t = restartedAt + WINDOW
    expect(s.tracker.sweep(), 'a window with 1 MB passes').toBe(0)
    // The client sends nothing more while the server reads: the next window is cut.
    s.clock.t += WINDOW - 1
    expect(s.tracker.sweep()).toBe(0)
    s.clock.t += 1
    expect(s.tracker.sweep()).toBe(1)
    await conn.closed
    await until(() => s.closes.length === 1, 'close')
    expect(rec).toMatchObject({ closeReason: 'min_request_body_data_rate', stateAtClose: 'active' })
  })

  it('does not count a window the server spent not reading, even if it resumes just before the check', async () => {
    // The server reads nothing for a whole window and resumes reading right before the
    // check, before the kernel has handed over a byte: not the client's fault.
    const s = await setup()
    const sent = 1_000_000
    const conn = await startPost(s, 2 * sent)
    const { req } = s.requests[0] as Setup['requests'][0]
    const raw = s.serverSockets[0] as Socket
    conn.send(Buffer.alloc(sent, 'a'))
    await until(() => handleOf(raw).reading === false, 'server stops reading the unread body')
    s.clock.t += WINDOW
    expect(s.tracker.sweep(), 'paused: restart').toBe(0)
    s.clock.t += WINDOW
    // Resume within this tick: only process.nextTick callbacks run, no I/O, so the handle
    // reads again but has not delivered a byte when the sweep runs.
    const before = raw.bytesRead
    consume(req)
    for (let i = 0; i < 20 && handleOf(raw).reading !== true; i++)
      await new Promise((r) => process.nextTick(r))
    expect(handleOf(raw).reading, 'reading again').toBe(true)
    expect(raw.bytesRead, 'no byte read yet').toBe(before)
    expect(s.tracker.sweep(), 'the server, not the client, stalled this window').toBe(0)
    expect(conn.isOpen()).toBe(true)
    conn.destroy()
  })

  it('stops checking once the body is complete, however long the handler then takes', async () => {
    const s = await setup()
    const conn = await startPost(s, 50)
    const { req, res } = s.requests[0] as Setup['requests'][0]
    const seen = consume(req)
    conn.send(Buffer.alloc(50, 'a'))
    await until(() => seen.ended, 'body end')
    for (let i = 0; i < 10; i++) {
      s.clock.t += WINDOW
      expect(s.tracker.sweep()).toBe(0)
    }
    res.end('done')
    await conn.waitFor((b) => (b.toString('latin1').endsWith('done') ? true : undefined))
    await until(() => only(s.tracker).state === 'idle', 'idle')
    conn.destroy()
  })

  it('does not apply to a request without a body', async () => {
    const s = await setup()
    const conn = await openSocket(s.port)
    conn.send(getRequest('/'))
    await until(() => s.requests.length === 1, 'handler')
    for (let i = 0; i < 10; i++) {
      s.clock.t += WINDOW
      expect(s.tracker.sweep()).toBe(0)
    }
    expect(conn.isOpen()).toBe(true)
    conn.destroy()
  })
})

describe('rates switched off', () => {
  it('minBodyRate: false in the options never checks a stalled body', async () => {
    const s = await setup({ minBodyRate: false })
    const conn = await startPost(s, 10_000)
    consume((s.requests[0] as Setup['requests'][0]).req)
    s.clock.t += 1_000_000
    expect(s.tracker.sweep()).toBe(0)
    expect(conn.isOpen()).toBe(true)
    conn.destroy()
  })

  it('overrideRequest({ minBodyRate: false }) stops the check of the request in flight', async () => {
    const s = await setup()
    const conn = await startPost(s, 10_000)
    const { req } = s.requests[0] as Setup['requests'][0]
    consume(req)
    s.clock.t += WINDOW - 1
    expect(s.tracker.overrideRequest(req, { minBodyRate: false })).toBe(true)
    for (let i = 0; i < 10; i++) {
      s.clock.t += WINDOW
      expect(s.tracker.sweep()).toBe(0)
    }
    expect(conn.isOpen()).toBe(true)
    conn.destroy()
  })

  it('an override switches the body rate on where the options switch it off', async () => {
    // A route that needs a rate on an app that has none (or a handler that re-enables one).
    const s = await setup({ minBodyRate: false })
    const conn = await startPost(s, 10_000)
    const { req } = s.requests[0] as Setup['requests'][0]
    consume(req)
    expect(
      s.tracker.overrideRequest(req, { minBodyRate: { bytesPerSecond: RATE, graceMs: WINDOW } }),
    ).toBe(true)
    s.clock.t += WINDOW - 1
    expect(s.tracker.sweep()).toBe(0)
    s.clock.t += 1
    expect(s.tracker.sweep(), 'a stalled body under the rate the override set').toBe(1)
    await conn.closed
    await until(() => s.closes.length === 1, 'close')
    expect(s.closes[0]?.closeReason).toBe('min_request_body_data_rate')
  })

  it('an override with another rate starts a fresh window from the override', async () => {
    const s = await setup()
    const conn = await startPost(s, 10_000)
    const { req } = s.requests[0] as Setup['requests'][0]
    consume(req)
    s.clock.t += 500
    expect(
      s.tracker.overrideRequest(req, { minBodyRate: { bytesPerSecond: 10, graceMs: 3_000 } }),
    ).toBe(true)
    // The original window (due at 1 s) is gone; the new one ends 3 s after the override.
    s.clock.t += 3_000 - 1
    expect(s.tracker.sweep()).toBe(0)
    s.clock.t += 1
    expect(s.tracker.sweep()).toBe(1)
    await conn.closed
    await until(() => s.closes.length === 1, 'close')
    expect(s.closes[0]?.closeReason).toBe('min_request_body_data_rate')
  })

  it('rejects an invalid override with CONNGUARD_ERR_INVALID_OPTION and keeps the rate', async () => {
    const s = await setup()
    const conn = await startPost(s, 10_000)
    const { req } = s.requests[0] as Setup['requests'][0]
    consume(req)
    for (const bad of [
      { minBodyRate: { bytesPerSecond: 0 } },
      { minBodyRate: { bytesPerSecond: 1.5, graceMs: 100 } },
      { minResponseRate: { bytesPerSecond: 10, graceMs: -1 } },
      { minBodyRate: true },
    ]) {
      expect(() => s.tracker.overrideRequest(req, bad as never), JSON.stringify(bad)).toThrow(
        expect.objectContaining({ code: 'CONNGUARD_ERR_INVALID_OPTION' }),
      )
    }
    s.clock.t += WINDOW
    expect(s.tracker.sweep()).toBe(1)
    await conn.closed
  })
})

describe('minResponseRate under a manual clock', () => {
  const BIG = 20_000_000

  /** A GET whose handler ends a 20 MB response to a client that never reads. */
  async function stalledResponse(
    s: Setup,
    override?: Parameters<ConnectionTracker['overrideRequest']>[1],
  ) {
    const conn = await openSocket(s.port)
    conn.socket.pause()
    conn.send(getRequest('/big'))
    await until(() => s.requests.length === 1, 'handler')
    const { req, res } = s.requests[0] as Setup['requests'][0]
    if (override !== undefined) expect(s.tracker.overrideRequest(req, override)).toBe(true)
    res.end(Buffer.alloc(BIG, 'r'))
    const raw = s.serverSockets[0] as Socket
    // Wait until the kernel has taken all it will: the queue stops shrinking.
    let last = -1
    await until(() => {
      const q = handleOf(raw).writeQueueSize ?? 0
      const stable = q > 0 && q === last
      last = q
      return stable
    }, 'send buffers full')
    await settle(200)
    return { conn, raw }
  }

  it.each([
    ['a window after the head', WINDOW],
    // A request without a body gets its windows from the first sweep that finds it in flight:
    // the response already waits for its client, so its window opens there.
    ['the first sweep after the head, long before a window', 1],
  ])(
    'cuts a client that stopped reading one window after the first check that sees it blocked (%s)',
    async (_when, firstCheckAfter) => {
      const s = await setup({ minResponseRate: { bytesPerSecond: 1_000, graceMs: WINDOW } })
      const { conn, raw } = await stalledResponse(s)
      expect(handleOf(raw).writeQueueSize).toBeGreaterThan(0)
      // The first check: blocked, the window starts here.
      s.clock.t += firstCheckAfter
      expect(s.tracker.sweep()).toBe(0)
      s.clock.t += WINDOW - 1
      expect(s.tracker.sweep()).toBe(0)
      s.clock.t += 1
      expect(s.tracker.sweep()).toBe(1)
      await until(() => s.closes.length === 1, 'close')
      expect(s.closes[0]).toMatchObject({
        closeReason: 'min_response_data_rate',
        stateAtClose: 'active',
      })
      // Neither a 408 nor anything else was appended to a response already under way.
      conn.destroy()
    },
  )

  it('overrideRequest({ minResponseRate: false }) spares a client that stopped reading', async () => {
    const s = await setup({ minResponseRate: { bytesPerSecond: 1_000, graceMs: WINDOW } })
    const { conn } = await stalledResponse(s, { minResponseRate: false })
    for (let i = 0; i < 10; i++) {
      s.clock.t += WINDOW
      expect(s.tracker.sweep()).toBe(0)
    }
    expect(conn.isOpen()).toBe(true)
    expect(only(s.tracker).state).toBe('active')
    conn.destroy()
  })

  it('does not count time when nothing is queued (a slow handler)', async () => {
    const s = await setup({ minResponseRate: { bytesPerSecond: 1_000_000, graceMs: WINDOW } })
    const conn = await openSocket(s.port)
    conn.send(getRequest('/slow'))
    await until(() => s.requests.length === 1, 'handler')
    const { res } = s.requests[0] as Setup['requests'][0]
    res.writeHead(200, { 'Content-Type': 'text/plain' })
    for (let i = 0; i < 10; i++) {
      res.write('x')
      await settle(10)
      s.clock.t += WINDOW
      expect(s.tracker.sweep()).toBe(0)
    }
    res.end()
    conn.destroy()
  })
})
