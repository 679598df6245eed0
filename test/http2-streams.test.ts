/**
 * HTTP/2 per-stream limits over real sockets on 127.0.0.1, h2c and h2 (TLS): a stream that
 * fails a limit is reset (RST_STREAM, CANCEL) on its own, its siblings on the same session go
 * on, and the session stays open. Each cut is counted on the record (`streamCuts`) and
 * reported by the tracker's `streamCut` event.
 *
 * - `requestTimeout` per stream, from the stream's open, with a handler that lifts it
 *   (`tracker.overrideRequest(req, { requestTimeout: false })`), and a handler that answers
 *   after its stream was reset (the compat API must not throw);
 * - a stream with a slow body (`min_request_body_data_rate`); a stream whose body the
 *   application does not read for a while is not cut;
 * - a client that never opens its flow-control window on a large response
 *   (`min_response_data_rate`), raw frames; a client reading a large single-write response
 *   slowly but steadily is not cut; a client that reads nothing at all has its session cut;
 * - a header block that never ends on a stream after the first: invisible to JavaScript (the
 *   tracker never sees the stream), the session is still closed — at keepAliveTimeout when no
 *   other stream is open, by the PING check when one is (a client mid-block cannot answer it).
 *
 * Sweep every 50 ms; bounds are [deadline − 20, deadline + sweep + 400] ms. Sequential: they
 * measure time. CONNGUARD_TIMINGS=1 prints the measured times.
 */

import type http2 from 'node:http2'
import type { Http2ServerRequest, Http2ServerResponse } from 'node:http2'
import { performance } from 'node:perf_hooks'
import type { TLSSocket } from 'node:tls'
import type { CloseReason, ConnectionRecord, ConnectionTracker } from '@connguard/core'
import { connguard } from '@connguard/fastify'
import { INSTRUMENT_NAMES, registerOpenTelemetry } from '@connguard/opentelemetry'
import { registerPrometheus } from '@connguard/prometheus'
import Fastify, { type FastifyInstance } from 'fastify'
import { Registry } from 'prom-client'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { printTimings, type TimingRow } from './helpers/guard-timing.js'
import {
  END_HEADERS,
  END_STREAM,
  type Frame,
  frame,
  getHeaderBlock,
  H2,
  opening,
  parseFrames,
  settingsFrame,
  windowUpdate,
} from './helpers/hostile-h2.js'
import {
  connectH2,
  destroyH2Clients,
  type H2Client,
  type H2Server,
  h2get,
  recordOf,
  startH2,
  stopH2Servers,
} from './helpers/http2.js'
import { otelSdk, pointsOf } from './helpers/otel.js'
import { expectConsistentRecord, expectCutWithin, sleep, waitUntil } from './helpers/records.js'
import { type Conn, openSocket } from './helpers/socket.js'
import { tlsOptions } from './helpers/tls.js'

const SWEEP = 50
/** Deadlines a scenario must not reach. */
const FAR = 30_000
/** Every scenario's base: only the limits under test are on. */
const BASE = {
  sweepInterval: SWEEP,
  headersTimeout: FAR,
  keepAliveTimeout: FAR,
  pingInterval: false,
  minBodyRate: false,
  minResponseRate: false,
} as const
/** A rate window of 1 s (the shortest allowed) and a rate no healthy loopback client misses. */
const WINDOW = 1_000
const RATE = { bytesPerSecond: 10_000, graceMs: WINDOW }
const CANCEL = 0x8

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

const rawClients = new Set<Conn>()
const apps: FastifyInstance[] = []
afterEach(async () => {
  for (const conn of rawClients) conn.destroy()
  rawClients.clear()
  destroyH2Clients()
  for (const app of apps.splice(0)) await app.close()
  await stopH2Servers()
})

/**
 * The routes of these tests (compat API); `tracker` is the server's own.
 * - `/`                 → 'ok'
 * - `/slow?ms=N`        → 'slow' after N ms
 * - `/hang`             → never answers
 * - `/late?ms=N`        → answers after N ms whatever happened to its stream meanwhile
 * - `/unlimited?ms=N`   → lifts its stream's requestTimeout, answers after N ms
 * - `/big?mb=N`         → N MB in one `res.end(buffer)`
 * - `/upload`           → reads the body, answers `got <bytes>`
 * - `/noread?ms=N`      → reads the body only after N ms, then answers `got <bytes>`
 */
function routes(tracker: () => ConnectionTracker) {
  return (req: Http2ServerRequest, res: Http2ServerResponse): void => {
    const url = new URL(req.url, 'http://localhost')
    const ms = Number(url.searchParams.get('ms') ?? 0)
    const readBody = () => {
      let got = 0
      req.on('data', (chunk: Buffer) => {
        got += chunk.length
      })
      req.on('end', () => res.end(`got ${got}`))
    }
    switch (url.pathname) {
      case '/hang':
        return
      case '/slow': {
        const timer = setTimeout(() => res.end('slow'), ms)
        res.on('close', () => clearTimeout(timer))
        return
      }
      case '/late':
        setTimeout(() => {
          res.writeHead(200)
          res.end('late')
        }, ms)
        return
      case '/unlimited': {
        // The stream itself, as a core-API handler would pass it (Fastify covers the compat request).
        expect(tracker().overrideRequest(req.stream, { requestTimeout: false })).toBe(true)
        const timer = setTimeout(() => res.end('unlimited'), ms)
        res.on('close', () => clearTimeout(timer))
        return
      }
      case '/big':
        res.end(Buffer.alloc(Number(url.searchParams.get('mb')) * 1_000_000, 'b'))
        return
      case '/upload':
        readBody()
        return
      case '/noread':
        setTimeout(readBody, ms)
        return
      default:
        res.end('ok')
    }
  }
}

interface Cut {
  rec: ConnectionRecord
  reason: CloseReason
  streamId: number
  at: number
}

/** A guarded server with the routes above, and the stream cuts its tracker reports. */
async function start(options: object, secure: boolean): Promise<{ h2: H2Server; cuts: Cut[] }> {
  let tracker: ConnectionTracker | null = null
  const h2 = await startH2(
    { ...BASE, ...options },
    { secure, onRequest: routes(() => tracker as ConnectionTracker) },
  )
  tracker = h2.tracker
  const cuts: Cut[] = []
  h2.tracker.on('streamCut', (rec, reason, streamId) => {
    cuts.push({ rec, reason, streamId, at: performance.now() })
  })
  return { h2, cuts }
}

/** A stream that is expected to be reset: resolves with when and how it closed. */
function resetOf(
  client: H2Client,
  headers: http2.OutgoingHttpHeaders,
  body?: (stream: http2.ClientHttp2Stream) => void,
): { startedAt: number; closed: Promise<{ at: number; rstCode: number; status: number }> } {
  const startedAt = performance.now()
  const stream = client.session.request(headers, { endStream: body === undefined })
  let status = 0
  stream.on('response', (h) => {
    status = Number(h[':status'])
  })
  stream.on('error', () => {})
  stream.resume()
  body?.(stream)
  const closed = new Promise<{ at: number; rstCode: number; status: number }>((resolve) => {
    stream.once('close', () => resolve({ at: performance.now(), rstCode: stream.rstCode, status }))
  })
  return { startedAt, closed }
}

/** POST `path`, sending `chunk` every `everyMs` until the stream closes; the server's answer. */
function trickle(client: H2Client, path: string, chunk: Buffer, everyMs: number) {
  let timer: NodeJS.Timeout | undefined
  const result = resetOf(client, { ':method': 'POST', ':path': path }, (stream) => {
    timer = setInterval(() => {
      if (!stream.closed && !stream.destroyed) stream.write(chunk)
    }, everyMs)
  })
  void result.closed.then(() => clearInterval(timer))
  return result
}

/** POST `path` with `body` at once; resolves with status and body text. */
function post(client: H2Client, path: string, body: Buffer) {
  return new Promise<{ status: number; body: string }>((resolve, reject) => {
    const stream = client.session.request({ ':method': 'POST', ':path': path })
    let status = 0
    let text = ''
    stream.setEncoding('utf8')
    stream.on('response', (h) => {
      status = Number(h[':status'])
    })
    stream.on('data', (s: string) => {
      text += s
    })
    stream.on('end', () => resolve({ status, body: text }))
    stream.on('error', reject)
    stream.end(body)
  })
}

// ---- a client speaking frames ----------------------------------------------------------------

interface RawH2 {
  conn: Conn
  /** Local port: the server's remotePort. */
  port: number
  /** Every frame received, stamped with performance.now(). */
  frames: (Frame & { at: number })[]
  /** Waits for the first frame `match` accepts. */
  frame(
    match: (f: Frame) => boolean,
    what: string,
    timeoutMs?: number,
  ): Promise<Frame & { at: number }>
}

/**
 * A raw HTTP/2 client (ALPN h2 under TLS) that sends `first` and then only what the test
 * writes; it ACKs the server's SETTINGS and nothing else (no WINDOW_UPDATE, no PING ACK).
 */
async function rawH2(port: number, secure: boolean, first: Buffer): Promise<RawH2> {
  const conn = await openSocket(
    port,
    secure ? { tls: true, tlsOptions: { ALPNProtocols: ['h2'] } } : {},
  )
  rawClients.add(conn)
  const frames: (Frame & { at: number })[] = []
  let pending = Buffer.alloc(0)
  const take = (chunk: Buffer) => {
    const parsed = parseFrames(Buffer.concat([pending, chunk]))
    pending = parsed.rest
    const at = performance.now()
    for (const f of parsed.frames) {
      frames.push({ ...f, at })
      if (f.type === H2.SETTINGS && (f.flags & 0x1) === 0) conn.send(frame(H2.SETTINGS, 0x1, 0))
    }
  }
  take(conn.received())
  conn.socket.on('data', take)
  conn.send(first)
  return {
    conn,
    port: (conn.socket as TLSSocket).localPort as number,
    frames,
    async frame(match, what, timeoutMs = 5_000) {
      await waitUntil(() => frames.some(match), { timeoutMs, what })
      return frames.find(match) as Frame & { at: number }
    },
  }
}

const headers = (streamId: number, secure: boolean, path: string) =>
  frame(H2.HEADERS, END_STREAM | END_HEADERS, streamId, getHeaderBlock(secure, path))
const isData = (streamId: number) => (f: Frame) => f.type === H2.DATA && f.streamId === streamId
const isEnd = (streamId: number) => (f: Frame) =>
  (f.type === H2.DATA || f.type === H2.HEADERS) &&
  f.streamId === streamId &&
  (f.flags & END_STREAM) !== 0
const isReset = (streamId: number) => (f: Frame) =>
  f.type === H2.RST_STREAM && f.streamId === streamId
/** The DATA payload received on `streamId` so far. */
const dataOf = (raw: RawH2, streamId: number) =>
  Buffer.concat(raw.frames.filter(isData(streamId)).map((f) => f.payload)).toString('latin1')

const MODES = [
  { mode: 'h2c', secure: false },
  { mode: 'h2 (TLS)', secure: true },
] as const

describe.each(MODES)('HTTP/2 per-stream limits, $mode', ({ mode, secure }) => {
  it('requestTimeout resets the stream that outlives it; siblings and the session go on', async () => {
    const LIMIT = 600
    const { h2, cuts } = await start({ requestTimeout: LIMIT }, secure)
    const client = await connectH2(h2.origin)
    const rec = recordOf(h2, client.localPort)

    // Its handler answers after the reset: the compat API must take that quietly.
    const late = resetOf(client, { ':path': '/late?ms=1000' })
    await sleep(200)
    const sibling = h2get(client, '/slow?ms=300')
    const unlimited = h2get(client, '/unlimited?ms=1100')
    const { at, rstCode, status } = await late.closed
    expect(rstCode).toBe(CANCEL)
    expect(status, 'no response head went out').toBe(0)
    expectCutWithin(at - late.startedAt, LIMIT, SWEEP, 'stream reset (client)')

    expect((await sibling).status).toBe(200)
    const lifted = await unlimited
    expect(lifted.body).toBe('unlimited')
    expect(lifted.endedAt - late.startedAt, 'past the limit it lifted').toBeGreaterThan(LIMIT + 300)
    expect((await h2get(client, '/')).status).toBe(200)
    await sleep(600) // the late handler has answered by now, into a reset stream

    expect(client.isClosed()).toBe(false)
    expect(rec.state).not.toBe('closed')
    expect(rec.streamCuts).toEqual({ request_timeout: 1 })
    expect(cuts).toHaveLength(1)
    expect(cuts[0]).toMatchObject({ rec, reason: 'request_timeout', streamId: 1 })
    expect(rec.toJSON().streamCuts).toEqual({ request_timeout: 1 })
    timings.push({
      suite: mode,
      scenario: 'stream outlives requestTimeout (handler answers after 1 s)',
      deadlineMs: LIMIT,
      clientMs: at - late.startedAt,
      serverMs: null,
      reason: 'request_timeout (stream)',
    })
  })

  it('resets a stream whose body is too slow: min_request_body_data_rate; siblings go on', async () => {
    const { h2, cuts } = await start({ minBodyRate: RATE }, secure)
    const client = await connectH2(h2.origin)
    const rec = recordOf(h2, client.localPort)
    // 10 B every 100 ms: 100 B/s against 10 kB/s.
    const slow = trickle(client, '/upload', Buffer.alloc(10, 's'), 100)
    await sleep(100)
    const healthy = post(client, '/upload', Buffer.alloc(200_000, 'h'))
    const { at, rstCode, status } = await slow.closed
    expect(rstCode).toBe(CANCEL)
    expect(status).toBe(0)
    expectCutWithin(at - slow.startedAt, WINDOW, SWEEP, 'stream reset (client)')
    expect(await healthy).toEqual({ status: 200, body: 'got 200000' })
    expect((await h2get(client, '/')).status).toBe(200)
    expect(client.isClosed()).toBe(false)
    expect(rec.streamCuts).toEqual({ min_request_body_data_rate: 1 })
    expect(cuts.map((c) => c.reason)).toEqual(['min_request_body_data_rate'])
    timings.push({
      suite: mode,
      scenario: 'slow body stream, 100 B/s',
      deadlineMs: WINDOW,
      clientMs: at - slow.startedAt,
      serverMs: null,
      reason: 'min_request_body_data_rate (stream)',
    })
  })

  it('does not cut a stream whose body the application leaves unread for a while', async () => {
    const { h2, cuts } = await start({ minBodyRate: RATE }, secure)
    const client = await connectH2(h2.origin)
    const started = performance.now()
    // 1 MB at once: the stream window closes after 64 KiB until the handler reads at 2.5 s.
    const res = await post(client, '/noread?ms=2500', Buffer.alloc(1_000_000, 'n'))
    expect(res).toEqual({ status: 200, body: 'got 1000000' })
    expect(performance.now() - started).toBeGreaterThan(2_400)
    expect(cuts).toEqual([])
  })

  it('resets a stream whose client never opens its window on a large response: min_response_data_rate; siblings go on', async () => {
    const { h2, cuts } = await start({ minResponseRate: RATE }, secure)
    // The connection window is opened wide, the stream windows never are (65,535 bytes each).
    const raw = await rawH2(
      h2.port,
      secure,
      Buffer.concat([
        opening(),
        windowUpdate(0, 50_000_000),
        headers(1, secure, '/big?mb=1'),
        headers(3, secure, '/slow?ms=2500'),
      ]),
    )
    const sentAt = performance.now()
    await raw.frame(isData(1), 'the first 64 KiB of stream 1')
    await sleep(300)
    raw.conn.send(headers(5, secure, '/'))
    await raw.frame(isEnd(5), 'the response of stream 5')
    expect(dataOf(raw, 5)).toBe('ok')

    const reset = await raw.frame(isReset(1), 'RST_STREAM on stream 1', 5_000)
    expect(reset.payload.readUInt32BE(0)).toBe(CANCEL)
    // One window finds the response waiting, the next one measures it.
    expectCutWithin(reset.at - sentAt, 2 * WINDOW, SWEEP, 'stream reset (client)')
    const got = raw.frames.filter(isData(1)).reduce((n, f) => n + f.payload.length, 0)
    expect(got).toBe(65_535)

    // The sibling opened with it finishes after the reset; a new stream is served.
    await raw.frame(isEnd(3), 'the response of stream 3')
    expect(dataOf(raw, 3)).toBe('slow')
    raw.conn.send(headers(7, secure, '/'))
    await raw.frame(isEnd(7), 'the response of stream 7')
    expect(raw.frames.some((f) => f.type === H2.GOAWAY)).toBe(false)
    const rec = recordOf(h2, raw.port)
    expect(rec.streamCuts).toEqual({ min_response_data_rate: 1 })
    expect(cuts).toMatchObject([{ rec, reason: 'min_response_data_rate', streamId: 1 }])
    timings.push({
      suite: mode,
      scenario: 'client never opens its stream window, 1 MB response',
      deadlineMs: 2 * WINDOW,
      clientMs: reset.at - sentAt,
      serverMs: null,
      reason: 'min_response_data_rate (stream)',
    })
  })

  it('does not cut a client that reads a large single-write response slowly but steadily', async () => {
    const { h2, cuts } = await start({ minResponseRate: RATE }, secure)
    const client = await connectH2(h2.origin)
    const started = performance.now()
    const stream = client.session.request({ ':path': '/big?mb=1' })
    let got = 0
    stream.on('data', (chunk: Buffer) => {
      got += chunk.length
      // About 16 KiB per 60 ms, ~250 kB/s: the one write completes only at the end.
      stream.pause()
      setTimeout(() => stream.resume(), 60)
    })
    await new Promise<void>((resolve, reject) => {
      stream.on('end', resolve)
      stream.on('error', reject)
      stream.on('close', () =>
        got === 1_000_000 ? resolve() : reject(new Error(`reset at ${got}`)),
      )
    })
    expect(got).toBe(1_000_000)
    expect(performance.now() - started, 'long enough for two windows').toBeGreaterThan(2.2 * WINDOW)
    expect(cuts).toEqual([])
  })

  it('cuts the whole session when its client reads nothing at all: min_response_data_rate', async () => {
    const { h2 } = await start({ minResponseRate: RATE }, secure)
    const raw = await rawH2(
      h2.port,
      secure,
      Buffer.concat([
        opening(),
        settingsFrame([[0x4, 2 ** 31 - 1]]), // SETTINGS_INITIAL_WINDOW_SIZE: every stream wide open
        windowUpdate(0, 2 ** 31 - 1 - 65_535),
        headers(1, secure, '/big?mb=20'),
      ]),
    )
    const sentAt = performance.now()
    await raw.frame(isData(1), 'the first DATA of stream 1')
    raw.conn.socket.pause() // from now on the kernel buffers fill and stay full
    const rec = recordOf(h2, raw.port)
    const closed = await h2.closes.next((r) => r === rec, 6_000)
    expect(closed.closeReason).toBe('min_response_data_rate')
    expect(closed.stateAtClose).toBe('active')
    expect(closed.streamCuts).toBeNull()
    expectCutWithin(performance.now() - sentAt, 2 * WINDOW, SWEEP, 'session cut (server)')
    expectConsistentRecord(closed)
  })

  it('a header block that never ends after a first stream: invisible, the idle session closes at keepAliveTimeout', async () => {
    const KEEP_ALIVE = 500
    const { h2 } = await start({ keepAliveTimeout: KEEP_ALIVE }, secure)
    const raw = await rawH2(h2.port, secure, Buffer.concat([opening(), headers(1, secure, '/')]))
    const answered = await raw.frame(isEnd(1), 'the response of stream 1')
    const rec = recordOf(h2, raw.port)
    await waitUntil(() => rec.state === 'idle', { what: 'idle after stream 1' })
    // HEADERS without END_HEADERS, half a header block, then silence.
    raw.conn.send(frame(H2.HEADERS, END_STREAM, 3, getHeaderBlock(secure, '/x').subarray(0, 3)))
    const closed = await h2.closes.next((r) => r === rec, 5_000)
    const info = await raw.conn.closed
    expect(closed.closeReason).toBe('keep_alive_timeout')
    expect(closed.requests, 'the tracker never saw stream 3').toBe(1)
    expect(closed.stateAtClose).toBe('idle')
    // GOAWAY, then the session is destroyed two sweeps later: close() waits for stream 3.
    expectCutWithin(info.at - answered.at, KEEP_ALIVE, 3 * SWEEP, 'connection closed (client)')
    expect(raw.frames.some((f) => f.type === H2.GOAWAY)).toBe(true)
    expectConsistentRecord(closed)
    timings.push({
      suite: mode,
      scenario: 'header block never ends on stream 3, no other stream',
      deadlineMs: KEEP_ALIVE,
      clientMs: info.at - answered.at,
      serverMs: null,
      reason: closed.closeReason,
    })
  })

  it('a header block that never ends beside an open stream: the PING check closes the session', async () => {
    // Node writes a submitted PING on a later turn of the event loop; a stall of the process
    // longer than pingTimeout in between (seen with 300 ms on a loaded machine, over TLS) lets
    // the timeout be judged before the PING left. 1 s keeps the test about the header block.
    const PING = 1_000
    const { h2 } = await start({ pingInterval: PING, pingTimeout: PING }, secure)
    const raw = await rawH2(
      h2.port,
      secure,
      Buffer.concat([opening(), headers(1, secure, '/hang')]),
    )
    const rec = recordOf(h2, raw.port)
    await waitUntil(() => rec.state === 'active', { what: 'stream 1 open' })
    raw.conn.send(frame(H2.HEADERS, END_STREAM, 3, getHeaderBlock(secure, '/x').subarray(0, 3)))
    const lastSentAt = performance.now()
    const closed = await h2.closes.next((r) => r === rec, 5_000)
    expect(closed.closeReason).toBe('ping_timeout')
    expect(closed.stateAtClose).toBe('active')
    expect(closed.requests).toBe(1)
    // Read silence is checked every pingInterval / 4, then the PING waits pingTimeout.
    expect(performance.now() - lastSentAt).toBeLessThanOrEqual(1.25 * PING + PING + SWEEP + 400)
    // Every frame the server sent is read by the close (the record can close first).
    const end = await raw.conn.closed
    expect(
      raw.frames.some((f) => f.type === H2.PING),
      JSON.stringify({
        how: end.how,
        code: end.error?.code,
        frames: raw.frames.map((f) => f.type),
      }),
    ).toBe(true)
    expectConsistentRecord(closed)
  })
})

describe('HTTP/2 stream cuts in the metrics', () => {
  it('both exporters count the reset streams by reason once the session closes', async () => {
    const { h2 } = await start({ requestTimeout: 300 }, false)
    const registry = new Registry()
    const stopPrometheus = registerPrometheus(h2.tracker, { registry })
    const shutdown: (() => Promise<void> | void)[] = []
    const otel = otelSdk(shutdown)
    const stopOtel = registerOpenTelemetry(h2.tracker, { meterProvider: otel.provider })
    try {
      const client = await connectH2(h2.origin)
      const rec = recordOf(h2, client.localPort)
      const late = resetOf(client, { ':path': '/late?ms=1000' })
      expect((await late.closed).rstCode).toBe(CANCEL)
      expect((await h2get(client, '/')).status).toBe(200)
      client.session.close()
      await waitUntil(() => rec.state === 'closed', { what: 'session closed' })

      const text = await registry.getSingleMetricAsString('connguard_http2_stream_cuts_total')
      expect(text).toContain('connguard_http2_stream_cuts_total{reason="request_timeout"} 1')
      expect(text).toContain('connguard_http2_stream_cuts_total{reason="min_response_data_rate"} 0')

      const points = pointsOf(await otel.collect(), INSTRUMENT_NAMES.streamCuts)
      expect(points).toHaveLength(1)
      expect(points[0]?.value).toBe(1)
      expect(points[0]?.attributes['connguard.close_reason']).toBe('request_timeout')
    } finally {
      stopPrometheus()
      stopOtel()
      for (const fn of shutdown) await fn()
    }
  })
})

describe.each(MODES)('Fastify http2 per-route limits, $mode', ({ mode, secure }) => {
  it('a route requestTimeout resets its own streams only; a route without one outlives the global limit', async () => {
    const ROUTE_LIMIT = 400
    const app = (secure
      ? Fastify({ http2: true, https: tlsOptions })
      : Fastify({ http2: true })) as unknown as FastifyInstance
    apps.push(app)
    await app.register(connguard, { ...BASE, requestTimeout: 700 })
    const cuts: Cut[] = []
    app.connguard.on('streamCut', (rec, reason, streamId) => {
      cuts.push({ rec, reason, streamId, at: performance.now() })
    })
    const never = () => new Promise<never>(() => {})
    app.get('/short', { config: { connguard: { requestTimeout: ROUTE_LIMIT } } }, never)
    app.get('/long', { config: { connguard: { requestTimeout: false } } }, async () => {
      await sleep(1_000)
      return 'long'
    })
    app.get('/', async () => 'ok')
    await app.listen({ port: 0, host: '127.0.0.1' })
    const { port } = app.server.address() as { port: number }
    const client = await connectH2(`${secure ? 'https' : 'http'}://127.0.0.1:${port}`)

    const short = resetOf(client, { ':path': '/short' })
    const long = h2get(client, '/long')
    const { at, rstCode } = await short.closed
    expect(rstCode).toBe(CANCEL)
    expectCutWithin(at - short.startedAt, ROUTE_LIMIT, SWEEP, 'route stream reset (client)')
    expect((await long).body).toBe('long')
    expect((await h2get(client, '/')).body).toBe('ok')
    expect(client.isClosed()).toBe(false)
    expect(cuts.map((c) => c.reason)).toEqual(['request_timeout'])
    const rec = cuts[0]?.rec as ConnectionRecord
    expect(rec.streamCuts).toEqual({ request_timeout: 1 })
    timings.push({
      suite: `Fastify ${mode}`,
      scenario: 'route requestTimeout, handler never answers',
      deadlineMs: ROUTE_LIMIT,
      clientMs: at - short.startedAt,
      serverMs: null,
      reason: 'request_timeout (stream)',
    })
  })
})
