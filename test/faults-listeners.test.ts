/**
 * A user listener on the tracker that throws (see docs/faults.md): the tracker stays
 * consistent (counts, records, later connections tracked and cut), and the error surfaces as
 * an uncaught exception on the next tick, as the user's own error. The test installs its own
 * 'uncaughtException' listener for the duration (vitest then leaves the error to it).
 */
import http from 'node:http'
import { type ConnectionRecord, ConnectionTracker } from '@connguard/core'
import { afterEach, describe, expect, it } from 'vitest'
import { keepAliveRequests, silentTcp } from './helpers/clients.js'
import { expectConsistentRecord, waitUntil } from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'

const SWEEP = 50
const HEADERS = 300

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/** Collects uncaught exceptions until the test ends. */
function catchUncaught(): unknown[] {
  const errors: unknown[] = []
  const onError = (err: unknown) => errors.push(err)
  process.on('uncaughtException', onError)
  cleanups.push(() => process.off('uncaughtException', onError))
  return errors
}

async function guardedServer() {
  const server = http.createServer((_req, res) => res.end('ok'))
  const tracker = new ConnectionTracker({ headersTimeout: HEADERS, sweepInterval: SWEEP })
  tracker.attach(server)
  const port = await listen(server)
  cleanups.push(async () => {
    tracker.close()
    await closeServer(server)
  })
  return { tracker, port }
}

describe.each(['open', 'transition', 'close'] as const)("a '%s' listener that throws", (event) => {
  it('surfaces as the user’s error on the next tick; counts stay right; later connections are tracked and cut', async () => {
    const uncaught = catchUncaught()
    const { tracker, port } = await guardedServer()
    const userError = new Error(`user ${event} listener failed`)
    let calls = 0
    tracker.on(event, () => {
      calls++
      throw userError
    })
    const closed: ConnectionRecord[] = []
    // Registered before the throwing one: it sees every close whatever the other does.
    tracker.prependListener('close', (rec) => closed.push(rec))

    // A healthy connection, closed by its client.
    const healthy = await keepAliveRequests(port, { count: 2 })
    expect(healthy.statuses).toEqual([200, 200])
    await waitUntil(() => closed.length === 1, { what: 'first close' })
    await waitUntil(() => uncaught.length === calls, { what: 'errors surfaced' })
    expect(calls).toBeGreaterThan(0)
    expect(new Set(uncaught)).toEqual(new Set([userError]))
    expect(tracker.snapshot()).toMatchObject({
      total: 0,
      new: 0,
      idle: 0,
      active: 0,
      closedByReason: { client_closed: 1 },
    })

    // A later connection is tracked and its deadline still enforced.
    const callsBefore = calls
    const silent = await silentTcp(port)
    expect(silent.heldMs).toBeLessThan(HEADERS + SWEEP + 400)
    await waitUntil(() => closed.length === 2, { what: 'second close' })
    await waitUntil(() => uncaught.length === calls, { what: 'errors surfaced' })
    expect(calls).toBeGreaterThan(callsBefore)
    expect(closed[1]?.closeReason).toBe('request_headers_timeout')
    expect(tracker.snapshot()).toMatchObject({
      total: 0,
      closedByReason: { client_closed: 1, request_headers_timeout: 1 },
    })
    for (const rec of closed) expectConsistentRecord(rec)
    expect(closed[0]?.requests).toBe(2)
  })
})

it("a 'close' listener registered after a throwing one still receives every close (an exporter's view stays whole)", async () => {
  const uncaught = catchUncaught()
  const { tracker, port } = await guardedServer()
  tracker.on('close', () => {
    throw new Error('user close listener failed')
  })
  // What @connguard/prometheus, /opentelemetry, logCloses and liveView do: tracker.on('close').
  const exported: ConnectionRecord[] = []
  tracker.on('close', (rec) => exported.push(rec))
  await keepAliveRequests(port, { count: 1 })
  await silentTcp(port)
  await waitUntil(() => uncaught.length === 2, { what: 'both errors surfaced' })
  const counted = Object.values(tracker.snapshot().closedByReason).reduce((a, b) => a + b, 0)
  expect(counted).toBe(2)
  expect(exported.length, 'closes the later listener saw, of the 2 the tracker counted').toBe(2)
})
