/**
 * What the guard leaves on each socket, over real loopback connections: no listener of
 * its own (a guarded socket's listeners are exactly a bare one's, so Node's per-request
 * listener does not grow an array), its close still reported with the reason, and after
 * `tracker.close()` a socket that is a plain socket again.
 */
import http from 'node:http'
import type { Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { type ConnectionRecord, ConnectionTracker } from '../packages/core/src/index.js'
import { destroyClients, open } from './helpers/dial.js'
import { closeServer, listen } from './helpers/server.js'

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  destroyClients()
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

interface Served {
  port: number
  sockets: Socket[]
}

async function serve(tracker: ConnectionTracker | null): Promise<Served> {
  const sockets: Socket[] = []
  const server = http.createServer((req, res) => {
    sockets.push(req.socket)
    res.end('ok')
  })
  tracker?.attach(server)
  const port = await listen(server)
  cleanups.push(async () => {
    tracker?.close()
    await closeServer(server)
  })
  return { port, sockets }
}

/** Every event a socket has listeners for, with how many. */
function listenersOf(socket: Socket): Record<string, number> {
  const out: Record<string, number> = {}
  for (const name of socket.eventNames()) out[String(name)] = socket.listenerCount(name)
  return out
}

async function waitFor(pred: () => boolean, what: string): Promise<void> {
  const end = Date.now() + 3_000
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 5))
  }
}

describe('a guarded socket', () => {
  it('carries the same listeners as a bare one, before and after keep-alive requests', async () => {
    const tracker = new ConnectionTracker({ keepAliveTimeout: 30_000 })
    const bare = await serve(null)
    const guarded = await serve(tracker)
    const a = open(bare.port)
    const b = open(guarded.port)
    for (let i = 0; i < 3; i++) {
      expect((await a.get('/')).status).toBe(200)
      expect((await b.get('/')).status).toBe(200)
    }
    await waitFor(() => tracker.snapshot().idle === 1, 'idle')
    const [bareSocket] = bare.sockets as [Socket]
    const [guardedSocket] = guarded.sockets as [Socket]
    expect(listenersOf(guardedSocket)).toEqual(listenersOf(bareSocket))
    // Its close is seen through the socket's own emit instead.
    expect(Object.hasOwn(guardedSocket, 'emit')).toBe(true)
    expect(Object.hasOwn(bareSocket, 'emit')).toBe(false)
  })

  it('reports its close once, after the listeners of the socket ran', async () => {
    const tracker = new ConnectionTracker({ keepAliveTimeout: 30_000 })
    const closes: ConnectionRecord[] = []
    const order: string[] = []
    tracker.on('close', (rec) => {
      closes.push(rec)
      order.push('tracker')
    })
    const s = await serve(tracker)
    const c = open(s.port)
    expect((await c.get('/')).status).toBe(200)
    const [socket] = s.sockets as [Socket]
    socket.on('close', () => order.push('socket listener'))
    c.destroy()
    await waitFor(() => closes.length === 1, 'close record')
    await new Promise((r) => setTimeout(r, 50))
    expect(closes).toHaveLength(1)
    expect(closes[0]?.closeReason).toBe('client_closed')
    expect(order).toEqual(['socket listener', 'tracker'])
  })

  it('is a plain socket again after tracker.close(): prototype emit, no report', async () => {
    const tracker = new ConnectionTracker({ keepAliveTimeout: 30_000 })
    const closes: ConnectionRecord[] = []
    tracker.on('close', (rec) => closes.push(rec))
    const s = await serve(tracker)
    const c = open(s.port)
    expect((await c.get('/')).status).toBe(200)
    const [socket] = s.sockets as [Socket]
    tracker.close()
    expect(socket.emit).toBe((Object.getPrototypeOf(socket) as Socket).emit)
    // Node goes on serving it.
    expect((await c.get('/')).status).toBe(200)
    let closed = false
    socket.on('close', () => {
      closed = true
    })
    c.destroy()
    await waitFor(() => closed, 'socket close')
    expect(closes).toEqual([])
  })
})
