/**
 * Pressure under a manual clock, over real loopback sockets: the level from its signals,
 * deadlines that shrink toward their floors and relax when pressure passes, shedding by
 * class and age with a per-sweep cap, displacement above the limit, the per-address share,
 * and the options' typed errors. Time moves only when the test says so and `sweep()` is
 * called by hand; attackers bind 127.0.0.2, the legitimate client 127.0.0.1.
 */
import diagnosticsChannel from 'node:diagnostics_channel'
import http from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { type Client, destroyClients, open } from '../../../test/helpers/dial.js'
import { closeServer, listen } from '../../../test/helpers/server.js'
import {
  type CloseReason,
  type ConnectionRecord,
  ConnectionTracker,
  type ConnectionTrackerOptions,
  InvalidOptionError,
  type PressureSnapshot,
  UnknownOptionError,
} from '../src/index.js'
import {
  connectionLimitFromFiles,
  engineOf,
  openFileLimit,
  resolveOptions,
} from '../src/internal.js'

class ManualClock {
  t = 1_000
  now(): number {
    return this.t
  }
}

const ATTACKER = '127.0.0.2'
const LEGIT = '127.0.0.1'

interface Setup {
  clock: ManualClock
  tracker: ConnectionTracker
  port: number
  closes: ConnectionRecord[]
  /** Request bodies fully read by the handler, by path. */
  uploaded: Map<string, number>
}

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  destroyClients()
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/** A plain server answering 'ok' once the request body (if any) is read. */
async function setup(options: ConnectionTrackerOptions): Promise<Setup> {
  const clock = new ManualClock()
  const tracker = new ConnectionTracker({ sweepInterval: 60_000, clock, ...options })
  const uploaded = new Map<string, number>()
  const server = http.createServer((req, res) => {
    let n = 0
    req.on('data', (chunk: Buffer) => {
      n += chunk.length
    })
    req.on('end', () => {
      uploaded.set(req.url ?? '', n)
      res.end('ok')
    })
  })
  tracker.attach(server)
  const closes: ConnectionRecord[] = []
  tracker.on('close', (rec) => closes.push(rec))
  const port = await listen(server)
  cleanups.push(async () => {
    tracker.close()
    await closeServer(server)
  })
  return { clock, tracker, port, closes, uploaded }
}

async function until(pred: () => boolean, what = 'condition'): Promise<void> {
  const end = Date.now() + 3_000
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

/** A connection that sends nothing, once the tracker has it. */
async function silent(s: Setup, localAddress = ATTACKER): Promise<Client> {
  const c = open(s.port, { localAddress, timeoutMs: 20_000 })
  expect(await c.ready).toBe(true)
  await until(() => recordOf(s, c) !== undefined, 'accepted')
  return c
}

/** A connection that got one response and is idle (keep-alive). */
async function idle(s: Setup, localAddress = LEGIT): Promise<Client> {
  const c = open(s.port, { localAddress, timeoutMs: 20_000 })
  expect((await c.get('/')).status).toBe(200)
  await until(() => recordOf(s, c)?.state === 'idle', 'idle')
  return c
}

/** A POST of `total` bytes whose body the test sends with `feed`. */
async function upload(s: Setup, path: string, total: number): Promise<Client> {
  const c = open(s.port, { localAddress: LEGIT, timeoutMs: 20_000 })
  expect(await c.ready).toBe(true)
  c.send(`POST ${path} HTTP/1.1\r\nHost: x\r\nContent-Length: ${total}\r\n\r\n`)
  await until(() => recordOf(s, c)?.state === 'active' && recordOf(s, c)?.requests === 1, 'head')
  return c
}

/** Sends `bytes` of body and waits until the server has read them. */
async function feed(s: Setup, c: Client, bytes: number): Promise<void> {
  const rec = recordOf(s, c) as ConnectionRecord
  const before = rec.bytesRead
  c.send(Buffer.alloc(bytes, 'a'))
  await until(() => rec.bytesRead >= before + bytes, 'body read')
}

function recordOf(s: Setup, c: Client): ConnectionRecord | undefined {
  for (const rec of s.tracker.connections()) if (rec.remotePort === c.localPort) return rec
  return s.closes.find((r) => r.remotePort === c.localPort)
}

async function closedWith(s: Setup, c: Client): Promise<CloseReason | null> {
  await c.ended
  await until(() => s.closes.some((r) => r.remotePort === c.localPort), 'close record')
  return (s.closes.find((r) => r.remotePort === c.localPort) as ConnectionRecord).closeReason
}

describe('the level', () => {
  it('is 0 below start, rises linearly to 1 at the limit, and is in snapshot(), the event and the channel', async () => {
    const s = await setup({ headersTimeout: 0, pressure: { limit: 10, start: 0.5, shedAbove: 1 } })
    const events: PressureSnapshot[] = []
    s.tracker.on('pressure', (p) => events.push(p))
    const published: unknown[] = []
    const onMessage = (m: unknown) => published.push(m)
    diagnosticsChannel.subscribe('connguard:pressure', onMessage)
    cleanups.push(() => diagnosticsChannel.unsubscribe('connguard:pressure', onMessage))

    for (let i = 0; i < 5; i++) await silent(s)
    s.tracker.sweep()
    expect(s.tracker.snapshot().pressure).toEqual({
      level: 0,
      shedding: false,
      connections: 5,
      limit: 10,
      limitSource: 'pressure.limit',
      eventLoopDelay: null,
      heapUsed: null,
    })
    expect(events).toEqual([])
    for (let i = 0; i < 3; i++) await silent(s)
    s.tracker.sweep()
    expect(s.tracker.snapshot().pressure?.level).toBeCloseTo(0.6)
    expect(events.map((e) => e.level)).toEqual([expect.closeTo(0.6)])
    expect(published).toEqual([
      expect.objectContaining({ level: expect.closeTo(0.6), tracker: s.tracker }),
    ])
    for (let i = 0; i < 2; i++) await silent(s)
    s.tracker.sweep()
    expect(s.tracker.snapshot().pressure).toMatchObject({ level: 1, connections: 10 })
    expect(events.map((e) => e.level)).toEqual([expect.closeTo(0.6), 1])
    destroyClients()
    await until(() => s.tracker.snapshot().total === 0, 'all closed')
    s.tracker.sweep()
    expect(events.at(-1)?.level).toBe(0)
  })

  it('takes maxConnections as the limit, else the open-file limit (Linux), else none', async () => {
    expect(new ConnectionTracker({ maxConnections: 40 }).snapshot().pressure).toMatchObject({
      limit: 40,
      limitSource: 'maxConnections',
    })
    const files = openFileLimit()
    const p = new ConnectionTracker().snapshot().pressure
    if (files === null) expect(p).toMatchObject({ limit: null, limitSource: null })
    else
      expect(p).toMatchObject({ limit: connectionLimitFromFiles(files), limitSource: 'open files' })
    expect(new ConnectionTracker({ pressure: false }).snapshot().pressure).toBeNull()
  })

  it('reads the soft limit from /proc/self/limits and keeps a tenth (at least 64) of it', () => {
    const limits = [
      'Limit                     Soft Limit           Hard Limit           Units     ',
      'Max processes             127431               127431               processes ',
      'Max open files            2048                 20000                files     ',
    ].join('\n')
    expect(openFileLimit(() => limits)).toBe(2048)
    expect(openFileLimit(() => limits.replace('2048 ', 'unlimited'))).toBeNull()
    expect(
      openFileLimit(() => {
        throw new Error('ENOENT')
      }),
    ).toBeNull()
    expect(connectionLimitFromFiles(2048)).toBe(2048 - 205)
    expect(connectionLimitFromFiles(256)).toBe(256 - 64)
    expect(connectionLimitFromFiles(50)).toBe(0)
  })

  it('follows heap use and event-loop delay when asked to', async () => {
    const heap = await setup({ pressure: { heapUsed: 0.000_1 } })
    heap.clock.t += 1_000
    heap.tracker.sweep()
    expect(heap.tracker.snapshot().pressure).toMatchObject({ level: 1, shedding: true })
    expect(heap.tracker.snapshot().pressure?.heapUsed).toBeGreaterThan(0)

    const loop = await setup({ pressure: { eventLoopDelay: 50 } })
    // The histogram's first tick only starts its clock.
    await new Promise((r) => setTimeout(r, 50))
    const until = Date.now() + 300
    while (Date.now() < until) {
      // Block the event loop: the histogram sees the delay.
    }
    await new Promise((r) => setTimeout(r, 30))
    loop.clock.t += 1_000
    loop.tracker.sweep()
    const p = loop.tracker.snapshot().pressure as PressureSnapshot
    expect(p.eventLoopDelay).toBeGreaterThanOrEqual(100)
    expect(p.level).toBe(1)
  })
})

describe('deadlines under pressure', () => {
  it('shrink toward their floor with the level, and relax when the pressure passes', async () => {
    // 10 connections at most, pressure from 5: 9 open is level 0.8. Shedding never (shedAbove 1).
    const s = await setup({
      headersTimeout: 0,
      keepAliveTimeout: 20_000,
      pressure: { limit: 10, start: 0.5, shedAbove: 1, floors: { keepAliveTimeout: 2_000 } },
    })
    const fillers: Client[] = []
    for (let i = 0; i < 8; i++) fillers.push(await silent(s))
    const a = await idle(s)
    s.tracker.sweep()
    expect(s.tracker.snapshot().pressure?.level).toBeCloseTo(0.8)
    // 20 s − (20 s − 2 s) × 0.8 = 5.6 s
    s.clock.t += 5_599
    expect(s.tracker.sweep()).toBe(0)
    s.clock.t += 1
    expect(s.tracker.sweep()).toBe(1)
    expect(await closedWith(s, a)).toBe('keep_alive_timeout')
    const rec = s.closes.at(-1) as ConnectionRecord
    expect(rec.duration).toBeGreaterThanOrEqual(5_600)

    // Pressure passes: a connection idle from now keeps its full 20 s.
    const b = await idle(s)
    for (const f of fillers) f.destroy()
    await until(() => s.tracker.snapshot().total === 1, 'fillers gone')
    s.tracker.sweep()
    expect(s.tracker.snapshot().pressure?.level).toBe(0)
    s.clock.t += 19_999
    expect(s.tracker.sweep()).toBe(0)
    expect(b.isOpen()).toBe(true)
    s.clock.t += 1
    expect(s.tracker.sweep()).toBe(1)
    expect(await closedWith(s, b)).toBe('keep_alive_timeout')
  })

  it('cut an unfinished request head at the floor at full pressure, with its own reason and a 408', async () => {
    const s = await setup({
      headersTimeout: 30_000,
      pressure: { limit: 4, start: 0.5, shedAbove: 1, floors: { headersTimeout: 1_500 } },
    })
    const head = await silent(s)
    head.send('GET / HTTP/1.1\r\nHost: x\r\n')
    for (let i = 0; i < 3; i++) await silent(s, LEGIT)
    s.clock.t += 1_499
    expect(s.tracker.sweep()).toBe(0)
    s.clock.t += 1
    // Level 1: every head past its 1.5 s floor goes (the other three too).
    expect(s.tracker.sweep()).toBe(4)
    expect(await closedWith(s, head)).toBe('request_headers_timeout')
    expect(head.received().toString('latin1')).toMatch(/^HTTP\/1\.1 408 /)
  })
})

describe('shedding', () => {
  it('goes unproductive first, then idle, then slow transfers, oldest first; a healthy upload survives', async () => {
    // No deadlines to shrink: only shedding closes. Line at 1 connection, one cut per sweep.
    const s = await setup({
      headersTimeout: 0,
      keepAliveTimeout: 0,
      minBodyRate: false,
      pressure: { limit: 8, start: 0.1, shedAbove: 0.125, maxShedPerSweep: 1 },
    })
    const u1 = await silent(s)
    const healthy = await upload(s, '/healthy', 100_000)
    const i1 = await idle(s)
    const slowOne = await upload(s, '/slow', 100_000)
    const u2 = await silent(s)
    const order: (Client | undefined)[] = []
    const byPort = new Map([u1, healthy, i1, slowOne, u2].map((c) => [c.localPort, c]))
    s.tracker.on('close', (rec) => order.push(byPort.get(rec.remotePort)))

    // Nothing before the 1 s floor.
    s.clock.t += 999
    expect(s.tracker.sweep()).toBe(0)
    s.clock.t += 1
    for (const expected of [u1, u2, i1]) {
      expect(s.tracker.sweep()).toBe(1)
      await until(() => order.length === [u1, u2, i1].indexOf(expected) + 1, 'shed')
      expect(order.at(-1)).toBe(expected)
      expect(await closedWith(s, expected)).toBe('shed_under_pressure')
    }
    // The transfers: rates are judged over a 1 s window.
    await feed(s, healthy, 20_000)
    await feed(s, slowOne, 100)
    expect(s.tracker.sweep()).toBe(0)
    s.clock.t += 1_000
    await feed(s, healthy, 20_000)
    await feed(s, slowOne, 100)
    expect(s.tracker.sweep()).toBe(1)
    expect(await closedWith(s, slowOne)).toBe('shed_under_pressure')
    // The healthy upload is never a victim, however long the pressure lasts.
    for (let i = 0; i < 3; i++) {
      s.clock.t += 1_000
      await feed(s, healthy, 20_000)
      expect(s.tracker.sweep()).toBe(0)
    }
    // 5 × 20 KB: the upload is complete and answered.
    await until(() => healthy.received().toString('latin1').startsWith('HTTP/1.1 200'), '200')
    expect(s.uploaded.get('/healthy')).toBe(100_000)
    expect(s.tracker.snapshot().closedByReason).toEqual({ shed_under_pressure: 4 })
  })

  it('closes at most maxShedPerSweep per sweep, and only down to the shed line', async () => {
    const s = await setup({
      headersTimeout: 0,
      pressure: { limit: 20, start: 0.5, shedAbove: 0.6, maxShedPerSweep: 3 },
    })
    for (let i = 0; i < 18; i++) await silent(s)
    s.clock.t += 1_000
    // 18 open, line at 12: 6 to shed, 3 per sweep.
    expect(s.tracker.sweep()).toBe(3)
    expect(s.tracker.snapshot().pressure?.shedding).toBe(true)
    await until(() => s.tracker.snapshot().total === 15, 'first three closed')
    expect(s.tracker.sweep()).toBe(3)
    await until(() => s.tracker.snapshot().total === 12, 'next three closed')
    expect(s.tracker.sweep()).toBe(0)
    expect(s.tracker.snapshot().pressure?.shedding).toBe(false)
    expect(s.tracker.snapshot().closedByReason).toEqual({ shed_under_pressure: 6 })
  })

  it('a sliced sweep stops at the end of its slice, goes on in the next, and the cap spans its slices', async () => {
    const s = await setup({
      headersTimeout: 0,
      pressure: { limit: 40, start: 0.4, shedAbove: 0.5, maxShedPerSweep: 10 },
    })
    for (let i = 0; i < 34; i++) await silent(s)
    s.clock.t += 1_000
    const now = s.clock.t
    // 34 open, line at 20: 14 to shed. A slice whose time is already up closes a few (the
    // clock is read every few closes), then hands over; the sweep's cap of 10 counts all slices.
    const first = engineOf(s.tracker).sweepSlice(now, 0, false)
    expect(first).toBe(-1)
    await until(() => s.tracker.snapshot().total === 30, 'first slice closed')
    let slices = 1
    let last = -1
    while (last < 0 && slices < 20) {
      last = engineOf(s.tracker).sweepSlice(now, 0, true)
      slices++
    }
    expect(slices).toBeGreaterThan(2)
    expect(last).toBeGreaterThanOrEqual(0)
    await until(() => s.tracker.snapshot().total === 24, 'the sweep cap: 10 closed')
    // A new sweep: the remaining 4 down to the line, nothing more.
    expect(engineOf(s.tracker).sweepSlice(now, Number.POSITIVE_INFINITY, false)).toBe(4)
    await until(() => s.tracker.snapshot().total === 20, 'down to the line')
    expect(s.tracker.sweep()).toBe(0)
    await until(() => s.closes.length === 14, 'close records')
    expect(s.tracker.snapshot().closedByReason).toEqual({ shed_under_pressure: 14 })
  })
})

describe('displacement above the limit', () => {
  it('a new connection displaces the oldest connection unproductive past its floor; with none, it is refused', async () => {
    const s = await setup({ headersTimeout: 0, maxConnections: 3 })
    const old = [await silent(s), await silent(s), await silent(s)]
    s.clock.t += 1_000
    // No sweep in between: the oldest few are looked at directly.
    const fresh = [await silent(s, LEGIT), await silent(s, LEGIT), await silent(s, LEGIT)]
    for (const c of old) expect(await closedWith(s, c)).toBe('shed_under_pressure')
    expect(fresh.every((c) => c.isOpen())).toBe(true)
    // Now every connection is younger than its floor: the next one is refused.
    const refused = open(s.port, { localAddress: LEGIT })
    expect(await closedWith(s, refused)).toBe('max_concurrent_connections_exceeded')
    expect(fresh.every((c) => c.isOpen())).toBe(true)
    expect(s.tracker.snapshot()).toMatchObject({
      total: 3,
      closedByReason: { shed_under_pressure: 3, max_concurrent_connections_exceeded: 1 },
    })
  })

  it('an idle keep-alive connection is never displaced, and displace: false refuses as the cap alone does', async () => {
    const s = await setup({ headersTimeout: 0, maxConnections: 2 })
    await idle(s)
    await idle(s)
    s.clock.t += 5_000
    const refused = open(s.port, { localAddress: LEGIT })
    expect(await closedWith(s, refused)).toBe('max_concurrent_connections_exceeded')

    const t = await setup({ headersTimeout: 0, maxConnections: 1, pressure: { displace: false } })
    await silent(t)
    t.clock.t += 5_000
    const again = open(t.port, { localAddress: LEGIT })
    expect(await closedWith(t, again)).toBe('max_concurrent_connections_exceeded')
  })
})

describe('per-address share', () => {
  it('an address over its share is refused at accept and shed down to it; another address is served', async () => {
    const s = await setup({
      headersTimeout: 0,
      pressure: { limit: 10, start: 0.5, shedAbove: 0.9, perIpShare: 0.3 },
    })
    const attackers: Client[] = []
    for (let i = 0; i < 6; i++) attackers.push(await silent(s))
    s.clock.t += 1_000
    // Level 0.2: 127.0.0.2 holds 6 of a share of 3; the 3 oldest go.
    expect(s.tracker.sweep()).toBe(3)
    for (const c of attackers.slice(0, 3))
      expect(await closedWith(s, c)).toBe('shed_under_pressure')
    expect(attackers.slice(3).every((c) => c.isOpen())).toBe(true)
    const more = open(s.port, { localAddress: ATTACKER })
    expect(await closedWith(s, more)).toBe('shed_under_pressure')
    expect((s.closes.at(-1) as ConnectionRecord).stateAtClose).toBe('new')
    const legit = await idle(s, LEGIT)
    expect(legit.isOpen()).toBe(true)
  })

  it('is off by default: behind a proxy every client has the same address', async () => {
    const s = await setup({ headersTimeout: 0, pressure: { limit: 10, start: 0.5, shedAbove: 1 } })
    for (let i = 0; i < 9; i++) await silent(s)
    s.clock.t += 1_000
    expect(s.tracker.sweep()).toBe(0)
    const tenth = await silent(s)
    expect(tenth.isOpen()).toBe(true)
  })
})

describe('without pressure', () => {
  it('pressure: false keeps the cap alone: no level, no shedding, refused above maxConnections', async () => {
    const s = await setup({ headersTimeout: 0, maxConnections: 2, pressure: false })
    await silent(s)
    await silent(s)
    s.clock.t += 60_000
    expect(s.tracker.sweep()).toBe(0)
    expect(s.tracker.snapshot().pressure).toBeNull()
    const refused = open(s.port, { localAddress: LEGIT })
    expect(await closedWith(s, refused)).toBe('max_concurrent_connections_exceeded')
  })
})

describe('options', () => {
  it('defaults: on, with 60% / 80% / 1 s floors / 100 per sweep / 1 KiB/s, no per-address share', () => {
    expect(resolveOptions().pressure).toEqual({
      limit: 0,
      eventLoopDelay: 0,
      heapUsed: 0,
      start: 0.6,
      shedAbove: 0.8,
      floors: { handshakeTimeout: 1_000, headersTimeout: 1_000, keepAliveTimeout: 1_000 },
      maxShedPerSweep: 100,
      perIpShare: 0,
      slowRate: 1_024,
      displace: true,
    })
    expect(resolveOptions({ pressure: true }).pressure).toEqual(resolveOptions().pressure)
    expect(resolveOptions({ pressure: false }).pressure).toBeNull()
  })

  it.each([
    ['pressure', 'on'],
    ['pressure.limit', { limit: 0 }],
    ['pressure.start', { start: 1 }],
    ['pressure.start', { start: -0.1 }],
    ['pressure.shedAbove', { shedAbove: 1.5 }],
    ['pressure.shedAbove', { start: 0.8, shedAbove: 0.7 }],
    ['pressure.heapUsed', { heapUsed: 0 }],
    ['pressure.eventLoopDelay', { eventLoopDelay: 2.5 }],
    ['pressure.floors.headersTimeout', { floors: { headersTimeout: 0 } }],
    ['pressure.maxShedPerSweep', { maxShedPerSweep: 0 }],
    ['pressure.perIpShare', { perIpShare: 2 }],
    ['pressure.slowRate', { slowRate: '1k' }],
    ['pressure.displace', { displace: 'yes' }],
  ])('rejects %s (%o) with a typed error naming it', (option, value) => {
    try {
      resolveOptions({ pressure: value as never })
      expect.unreachable()
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidOptionError)
      expect((err as InvalidOptionError).code).toBe('CONNGUARD_ERR_INVALID_OPTION')
      expect((err as InvalidOptionError).option).toBe(option)
    }
  })

  it('rejects unknown names inside pressure and its floors, suggesting the near one', () => {
    for (const [value, suggestion] of [
      [{ sheddAbove: 0.9 }, 'shedAbove'],
      [{ floors: { headerTimeout: 1 } }, 'headersTimeout'],
    ] as const) {
      try {
        resolveOptions({ pressure: value as never })
        expect.unreachable()
      } catch (err) {
        expect(err).toBeInstanceOf(UnknownOptionError)
        expect((err as UnknownOptionError).code).toBe('CONNGUARD_ERR_UNKNOWN_OPTION')
        expect((err as UnknownOptionError).suggestion).toBe(suggestion)
      }
    }
  })
})
