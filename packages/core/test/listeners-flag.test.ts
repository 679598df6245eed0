/**
 * The request path asks `listenerCount` only once 'open', 'transition' or 'close' ever had a
 * listener (a 'newListener' listener of the tracker's own sets the flag). Listeners added
 * late, or after `removeAllListeners()`, must still get every event.
 */
import { once } from 'node:events'
import http from 'node:http'
import { afterEach, describe, expect, it } from 'vitest'
import { keepAliveRequests } from '../../../test/helpers/clients.js'
import { closeServer, listen } from '../../../test/helpers/server.js'
import { type ConnectionRecord, ConnectionTracker } from '../src/index.js'

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

async function guarded(): Promise<{ tracker: ConnectionTracker; port: number }> {
  const tracker = new ConnectionTracker()
  const server = http.createServer((_req, res) => res.end('ok'))
  tracker.attach(server)
  const port = await listen(server)
  cleanups.push(
    () => closeServer(server),
    () => tracker.close(),
  )
  return { tracker, port }
}

describe('listeners added after requests were served', () => {
  it('get every transition and the close, also after removeAllListeners()', async () => {
    const { tracker, port } = await guarded()
    // Served with no listener at all: the request path skipped listenerCount.
    expect((await keepAliveRequests(port, { count: 2 })).statuses).toEqual([200, 200])
    await expect.poll(() => tracker.snapshot().total).toBe(0)
    tracker.removeAllListeners()
    const transitions: string[] = []
    tracker.on('transition', (_rec, from, to) => transitions.push(`${from}>${to}`))
    const closed = once(tracker, 'close') as Promise<[ConnectionRecord]>
    expect((await keepAliveRequests(port, { count: 2 })).statuses).toEqual([200, 200])
    const [rec] = await closed
    expect(transitions).toEqual([
      'new>active',
      'active>idle',
      'idle>active',
      'active>idle',
      'idle>closed',
    ])
    expect(rec.requests).toBe(2)
    // A close listener wants the peer's address: read before the handle went.
    expect(rec.remoteAddress).toBe('127.0.0.1')
  })

  it("removeAllListeners('newListener') leaves the tracker's own in place", async () => {
    const { tracker, port } = await guarded()
    tracker.removeAllListeners('newListener' as 'close')
    const opened = once(tracker, 'open') as Promise<[ConnectionRecord]>
    const result = keepAliveRequests(port, { count: 1 })
    const [rec] = await opened
    expect(rec.state).toBe('new')
    expect((await result).statuses).toEqual([200])
  })
})
