/**
 * Attaching, each case with one defined outcome (see docs/faults.md), over real sockets on
 * 127.0.0.1: `attach` twice with one tracker, two trackers (or guards, or the Fastify plugin)
 * on one server, and `attach` after `listen`.
 */
import http from 'node:http'
import { AlreadyAttachedError, type ConnectionRecord, ConnectionTracker } from '@connguard/core'
import { connguard as expressGuard } from '@connguard/express'
import { connguard as fastifyGuard } from '@connguard/fastify'
import Fastify from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { getRequest, keepAliveRequests } from './helpers/clients.js'
import { collectSockets, listenBare, open, portOf } from './helpers/fault-apps.js'
import { listenersOf } from './helpers/hostile-run.js'
import { parseResponse } from './helpers/http-response.js'
import { sleep, watchCloses } from './helpers/records.js'
import { closeServer } from './helpers/server.js'

const SWEEP = 50

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/** A bare node:http server answering 'ok', listening; torn down after the test. */
async function okServer(): Promise<{ server: http.Server; port: number }> {
  const server = http.createServer((_req, res) => res.end('ok'))
  const collected = collectSockets(server)
  const port = await listenBare(server)
  cleanups.push(async () => {
    for (const socket of collected.sockets) socket.destroy()
    await closeServer(server)
  })
  return { server, port }
}

describe('attach', () => {
  it('twice with the same tracker: a no-op (returns the tracker, same listeners, one record per connection)', async () => {
    const { server, port } = await okServer()
    const tracker = new ConnectionTracker({ sweepInterval: SWEEP })
    cleanups.push(() => tracker.close())
    expect(tracker.attach(server)).toBe(tracker)
    const once = listenersOf(server)
    expect(tracker.attach(server)).toBe(tracker)
    expect(listenersOf(server)).toEqual(once)
    const opens: ConnectionRecord[] = []
    tracker.on('open', (rec) => opens.push(rec))
    const closes = watchCloses(tracker)
    const result = await keepAliveRequests(port, { count: 2 })
    expect(result.statuses).toEqual([200, 200])
    const rec = await closes.next()
    expect(opens).toEqual([rec])
    expect(rec.requests).toBe(2)

    // The Express guard: the same, and it returns the server.
    const guard = expressGuard({ sweepInterval: SWEEP })
    const other = http.createServer()
    cleanups.push(() => guard.tracker.close())
    expect(guard.attach(other)).toBe(other)
    const guarded = listenersOf(other)
    expect(guard.attach(other)).toBe(other)
    expect(listenersOf(other)).toEqual(guarded)
  })

  it('two trackers on one server: CONNGUARD_ERR_ALREADY_ATTACHED, nothing added; the first keeps guarding', async () => {
    const { server, port } = await okServer()
    const first = new ConnectionTracker({ sweepInterval: SWEEP }).attach(server)
    const second = new ConnectionTracker({ sweepInterval: SWEEP })
    cleanups.push(
      () => first.close(),
      () => second.close(),
    )
    const withFirst = listenersOf(server)
    const timers = [server.headersTimeout, server.requestTimeout, server.keepAliveTimeout]
    let error: unknown
    try {
      second.attach(server)
    } catch (err) {
      error = err
    }
    expect(error).toBeInstanceOf(AlreadyAttachedError)
    expect((error as AlreadyAttachedError).code).toBe('CONNGUARD_ERR_ALREADY_ATTACHED')
    expect(listenersOf(server)).toEqual(withFirst)
    expect([server.headersTimeout, server.requestTimeout, server.keepAliveTimeout]).toEqual(timers)
    // An Express guard is refused the same way.
    expect(() => expressGuard().attach(server)).toThrow(
      expect.objectContaining({ code: 'CONNGUARD_ERR_ALREADY_ATTACHED' }),
    )
    const firstCloses = watchCloses(first)
    const secondCloses = watchCloses(second)
    expect((await keepAliveRequests(port, { count: 1 })).statuses).toEqual([200])
    expect((await firstCloses.next()).requests).toBe(1)
    expect(secondCloses.records).toEqual([])
    // Once the first closes, the second may take over.
    first.close()
    expect(second.attach(server)).toBe(second)
    expect((await keepAliveRequests(port, { count: 1 })).statuses).toEqual([200])
    expect((await secondCloses.next()).requests).toBe(1)
  })

  it('Fastify: registering the plugin on an app whose server is guarded fails with CONNGUARD_ERR_ALREADY_ATTACHED', async () => {
    const app = Fastify()
    cleanups.push(() => app.close())
    const tracker = new ConnectionTracker().attach(app.server)
    cleanups.push(() => tracker.close())
    const before = listenersOf(app.server)
    await expect(app.register(fastifyGuard, {})).rejects.toMatchObject({
      code: 'CONNGUARD_ERR_ALREADY_ATTACHED',
    })
    expect(listenersOf(app.server)).toEqual(before)
  })

  it('after listen: connections accepted before are not tracked (nor cut), later ones are', async () => {
    const SHORT = 300
    const { server, port } = await okServer()
    const idleBefore = await open(port)
    idleBefore.send(getRequest('/'))
    const first = await idleBefore.waitFor((buf) => parseResponse(buf, 0))
    const silentBefore = await open(port)
    const tracker = new ConnectionTracker({
      headersTimeout: SHORT,
      keepAliveTimeout: SHORT,
      sweepInterval: SWEEP,
    })
    cleanups.push(() => tracker.close())
    const opens: ConnectionRecord[] = []
    tracker.on('open', (rec) => opens.push(rec))
    const closes = watchCloses(tracker)
    tracker.attach(server)
    const silentAfter = await open(port)
    const cut = await closes.forClientPort(portOf(silentAfter))
    expect(cut.closeReason).toBe('request_headers_timeout')
    await sleep(SHORT + 3 * SWEEP)
    expect(idleBefore.isOpen()).toBe(true)
    expect(silentBefore.isOpen()).toBe(true)
    // Still served by Node, not counted by the guard.
    idleBefore.send(getRequest('/'))
    expect((await idleBefore.waitFor((buf) => parseResponse(buf, first.end))).status).toBe(200)
    expect(opens).toEqual([cut])
    idleBefore.destroy()
    silentBefore.destroy()
    await sleep(100)
    expect(closes.records).toEqual([cut])
    expect(tracker.snapshot()).toMatchObject({
      total: 0,
      closedByReason: { request_headers_timeout: 1 },
    })
  })
})
