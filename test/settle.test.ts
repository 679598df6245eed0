/**
 * Requests settled by the sweep (engine.ts `settle`): with nothing listening to transitions, a
 * request without a body whose head comes whole is counted when its head comes and when its
 * response ends, and its state, times and deadlines follow at the next sweep or read (a
 * connection's first request reads the clock at its head: its time to first request, its start).
 * What must not change: no deadline early (a request in flight is never cut by the previous
 * response's keep-alive deadline), states right whenever they are read, counts exact, and a
 * 'transition' listener still sees every transition as it happens.
 * Real sockets on 127.0.0.1; bounds as in helpers/guard-timing.ts.
 */
import { once } from 'node:events'
import http from 'node:http'
import { performance } from 'node:perf_hooks'
import { ConnectionTracker, type ConnectionTrackerOptions } from '@connguard/core'
import { engineOf } from '@connguard/core/internal'
import { afterEach, describe, expect, it } from 'vitest'
import { getRequest, openSocket } from './helpers/clients.js'
import { CloseLog, EARLY_MARGIN, expectDeadline, SWEEP, sleep } from './helpers/guard-timing.js'
import { parseResponse } from './helpers/http-response.js'
import { NO_LIVE_CONNECTIONS } from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'

/** Keep-alive timeout of these servers, ms. */
const KA = 300
const FAR = 5_000

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

async function start(
  sweepInterval: number = SWEEP,
  headersTimeout: number = FAR,
  extra: ConnectionTrackerOptions = {},
): Promise<{ tracker: ConnectionTracker; port: number; closes: CloseLog; server: http.Server }> {
  const server = http.createServer((req, res) => {
    // /slow answers after twice the keep-alive timeout, /slower after three times.
    if (req.url === '/slow') setTimeout(() => res.end('slow'), 2 * KA)
    else if (req.url === '/slower') setTimeout(() => res.end('slower'), 3 * KA)
    else if (req.url === '/close') res.setHeader('Connection', 'close').end('bye')
    else res.end('ok')
  })
  const tracker = new ConnectionTracker({
    sweepInterval,
    keepAliveTimeout: KA,
    headersTimeout,
    requestTimeout: FAR,
    ...extra,
  }).attach(server)
  const port = await listen(server)
  cleanups.push(
    () => closeServer(server),
    () => tracker.close(),
  )
  return { tracker, port, closes: new CloseLog(tracker), server }
}

/** Sends a GET and waits for its response, the `n`-th on the connection; resolves at its end. */
async function get(
  conn: Awaited<ReturnType<typeof openSocket>>,
  path: string,
  offset: number,
): Promise<{ end: number; at: number; body: string }> {
  conn.send(getRequest(path))
  const response = await conn.waitFor((buf) => parseResponse(buf, offset))
  return { end: response.end, at: performance.now(), body: response.body.toString() }
}

/**
 * A connection opened, silent for `wait` ms, then one GET /slower with `Connection: close`:
 * answered 200, and closed by the client's close after it, idle. Returns its record.
 */
async function slowerOnly(port: number, closes: CloseLog, wait: number) {
  const conn = await openSocket(port)
  if (wait > 0) await sleep(wait)
  conn.send(getRequest('/slower', { Connection: 'close' }))
  const response = await conn.waitFor((buf) => parseResponse(buf, 0))
  expect(response.status).toBe(200)
  expect(response.body.toString()).toBe('slower')
  const rec = await closes.next(5_000)
  expect(rec, closes.describe()).toMatchObject({
    closeReason: 'client_closed',
    stateAtClose: 'idle',
    requests: 1,
  })
  return rec
}

describe('keep-alive requests settled by the sweep', () => {
  it("a later request running past the previous response's keep-alive deadline is not cut", async () => {
    const { port, closes } = await start()
    const conn = await openSocket(port)
    const first = await get(conn, '/', 0)
    // The next request starts well inside the keep-alive window and runs past its end
    // (nothing reads a state meanwhile: only the sweep settles it).
    await sleep(KA / 3)
    const slow = await get(conn, '/slow', first.end)
    expect(slow.body).toBe('slow')
    const rec = await closes.next(5_000)
    expect(rec.closeReason, closes.describe()).toBe('keep_alive_timeout')
    expect(rec.requests).toBe(2)
    expect(rec.stateAtClose).toBe('idle')
    // The idle deadline runs from the slow response's end (settled by the next sweep: one
    // sweep more at most), never from the first's.
    const closed = await conn.closed
    expectDeadline(closed.at - slow.at - SWEEP, KA, 'client: idle after the slow response')
  })

  it('states read while a later request is in flight are settled first', async () => {
    const { tracker, port, closes } = await start()
    const conn = await openSocket(port)
    const first = await get(conn, '/', 0)
    expect(tracker.snapshot()).toMatchObject({ idle: 1, active: 0 })
    const slow = get(conn, '/slow', first.end)
    await sleep(KA / 2)
    // Read before any sweep could settle it as well as after: active either way.
    expect(tracker.snapshot()).toMatchObject({ idle: 0, active: 1 })
    expect([...tracker.connections()].map((r) => r.state)).toEqual(['active'])
    expect((await slow).body).toBe('slow')
    expect(tracker.snapshot()).toMatchObject({ idle: 1, active: 0 })
    conn.destroy()
    const rec = await closes.next()
    expect(rec).toMatchObject({ closeReason: 'client_closed', stateAtClose: 'idle', requests: 2 })
  })

  it('a client that hangs up during a later request closes it active, counted', async () => {
    const { port, closes } = await start()
    const conn = await openSocket(port)
    let offset = (await get(conn, '/', 0)).end
    offset = (await get(conn, '/', offset)).end
    conn.send(getRequest('/slow'))
    await sleep(KA / 3)
    conn.destroy()
    const rec = await closes.next()
    expect(rec, closes.describe()).toMatchObject({
      closeReason: 'client_closed',
      stateAtClose: 'active',
      requests: 3,
    })
    // Its time in flight counts as active from the sweep that settled it (one sweep at most
    // after its head), and nothing as upgraded.
    const d = rec.stateDurations
    expect(d.active).toBeGreaterThanOrEqual(KA / 3 - SWEEP - EARLY_MARGIN)
    expect(d.upgraded).toBe(0)
  })

  for (const [who, headers, path, reason] of [
    ['the client', { Connection: 'close' }, '/', 'client_closed'],
    ['the application', {}, '/close', 'server_closed'],
  ] as const) {
    it(`a later request after which ${who} closes the connection: ends idle, counted, ${reason}`, async () => {
      const { port, closes } = await start()
      const conn = await openSocket(port)
      let offset = (await get(conn, '/', 0)).end
      offset = (await get(conn, '/', offset)).end
      conn.send(getRequest(path, headers))
      const last = await conn.waitFor((buf) => parseResponse(buf, offset))
      expect(last.status).toBe(200)
      const rec = await closes.next()
      expect(rec, closes.describe()).toMatchObject({
        closeReason: reason,
        stateAtClose: 'idle',
        requests: 3,
      })
      expect((await conn.closed).how).not.toBe('error')
    })
  }

  it('a later request Node answers itself (417) is counted, and the connection goes on', async () => {
    const { tracker, port, closes } = await start()
    const conn = await openSocket(port)
    let offset = (await get(conn, '/', 0)).end
    conn.send(getRequest('/', { Expect: 'something-else' }))
    const refused = await conn.waitFor((buf) => parseResponse(buf, offset))
    expect(refused.status).toBe(417)
    offset = refused.end
    offset = (await get(conn, '/', offset)).end
    expect(tracker.snapshot()).toMatchObject({ idle: 1, active: 0 })
    conn.destroy()
    const rec = await closes.next()
    expect(rec).toMatchObject({ closeReason: 'client_closed', stateAtClose: 'idle', requests: 3 })
  })

  it('a sweep slice out of time stops while settling, before popping anything; the next finishes', async () => {
    // The sweeper is kept out of the way (its longest interval): the test runs the slices.
    const { tracker, port } = await start(60_000)
    const N = 200
    const conns = await Promise.all(Array.from({ length: N }, () => openSocket(port)))
    // Three requests each, the last left unsettled (the sweeper is far away).
    const offsets = await Promise.all(
      conns.map(async (conn) => (await get(conn, '/', (await get(conn, '/', 0)).end)).end),
    )
    await Promise.all(conns.map((conn, i) => get(conn, '/', offsets[i] as number)))
    const engine = engineOf(tracker)
    const now = Math.floor(performance.now())
    // A slice whose time is already up settles 64 records, then stops: -2, nothing cut.
    expect(engine.sweepSlice(now, 0, false)).toBe(-2)
    expect(engine.sweepSlice(now, Number.POSITIVE_INFINITY, false)).toBe(0)
    expect(tracker.snapshot()).toMatchObject({ idle: N, active: 0 })
    expect([...tracker.connections()].every((r) => r.requests === 3)).toBe(true)
    for (const conn of conns) conn.destroy()
  })

  it("a connection's first request: its time to first request and its start are read at its head, its end settled", async () => {
    // Sweeps far apart: a start or a time to first request taken at a settle instead of at
    // the head would be late by the whole response (the close settles it).
    const { port, closes } = await start(1_000)
    const WAIT = 200
    const rec = await slowerOnly(port, closes, WAIT)
    const ttfr = rec.timeToFirstRequest as number
    expect(ttfr).toBeGreaterThanOrEqual(WAIT - EARLY_MARGIN)
    // Read at the head: well under the response's 3 × KA after it (a busy machine's margin).
    expect(ttfr).toBeLessThan(WAIT + 2 * KA)
    const d = rec.stateDurations
    expect(d.new).toBeLessThan(WAIT + 2 * KA)
    expect(d.active).toBeGreaterThanOrEqual(3 * KA - EARLY_MARGIN)
  })

  it('one request per connection, settled by its close alone: its times, counts and end as the exact path leaves them', async () => {
    // No sweep while it lives: its close settles the one request in one step.
    const { tracker, port, closes } = await start(FAR)
    const WAIT = 200
    for (const [path, headers, reason, intent] of [
      ['/slow', { Connection: 'close' }, 'client_closed', 'client'],
      ['/close', {}, 'server_closed', 'server'],
    ] as const) {
      const conn = await openSocket(port)
      await sleep(WAIT)
      conn.send(getRequest(path, headers))
      const response = await conn.waitFor((buf) => parseResponse(buf, 0))
      expect(response.status).toBe(200)
      const rec = await closes.next(5_000)
      expect(rec, closes.describe()).toMatchObject({
        closeReason: reason,
        closeIntent: intent,
        stateAtClose: 'idle',
        requests: 1,
      })
      const ttfr = rec.timeToFirstRequest as number
      expect(ttfr).toBeGreaterThanOrEqual(WAIT - EARLY_MARGIN)
      const d = rec.stateDurations
      // Before the head: `new`; from the head to the close: `active` (/slow answers after
      // 2 × KA); nothing idle, nothing upgraded; together, the connection's whole life.
      expect(d.new).toBeGreaterThanOrEqual(WAIT - EARLY_MARGIN)
      expect(d.new).toBeLessThanOrEqual(ttfr + 1)
      if (path === '/slow') expect(d.active).toBeGreaterThanOrEqual(2 * KA - EARLY_MARGIN)
      expect(d.idle).toBe(0)
      expect(d.upgraded).toBe(0)
      expect(d.new + d.active).toBe(rec.duration)
    }
    // The live counts by state came back to zero (a count left in `new` or `idle` shows here).
    expect(tracker.snapshot()).toMatchObject({
      ...NO_LIVE_CONNECTIONS,
      closedByReason: { client_closed: 1, server_closed: 1 },
    })
  })

  it("a connection's first request outlasting the header deadline is not cut by it", async () => {
    // The head comes whole at once; the answer takes three header deadlines.
    const { port, closes } = await start(SWEEP, KA)
    await slowerOnly(port, closes, 0)
  })

  it('connections whose first request waits for its settle are not counted as handshaking by maxHandshakes', async () => {
    // Sweeps far apart: only the accept's own settle moves them from `new` to `active`.
    const { port, closes, server } = await start(1_000, FAR, { maxHandshakes: 2 })
    const responses = []
    for (let i = 0; i < 4; i++) {
      const conn = await openSocket(port)
      // Its head read (the guard counted it before Node's 'request') before the next accept.
      const arrived = once(server, 'request')
      conn.send(getRequest('/slower', { Connection: 'close' }))
      responses.push(conn.waitFor((buf) => parseResponse(buf, 0)))
      await arrived
    }
    for (const response of await Promise.all(responses)) expect(response.status).toBe(200)
    for (let i = 0; i < 4; i++) {
      const rec = await closes.next(5_000)
      expect(rec, closes.describe()).toMatchObject({ closeReason: 'client_closed', requests: 1 })
    }
  })

  it("a 'transition' listener sees every request's transitions as they happen", async () => {
    const { tracker, port } = await start()
    const seen: string[] = []
    tracker.on('transition', (_rec, from, to) => seen.push(`${from}>${to}`))
    const conn = await openSocket(port)
    let offset = 0
    for (let i = 0; i < 3; i++) {
      offset = (await get(conn, '/', offset)).end
      // Right after each response, before any sweep: the end was applied at once.
      expect(seen.at(-1)).toBe('active>idle')
    }
    expect(seen.filter((t) => t.endsWith('>active'))).toHaveLength(3)
    conn.destroy()
  })
})
