/**
 * The live connections view over real HTTP on 127.0.0.1, for Fastify (`liveView: { path }`)
 * and Express (`app.use(path, guard.liveView())`): the JSON lists a live idle keep-alive
 * connection with its deadline and the time left on it (decreasing), and after it closes the
 * recent closes list it with its reason. Nothing is exposed unless enabled.
 */
import http from 'node:http'
import {
  ConnectionTracker,
  type LiveConnection,
  type LiveViewData,
  liveView,
} from '@connguard/core'
import { connguard as expressGuard } from '@connguard/express'
import { connguard } from '@connguard/fastify'
import express from 'express'
import Fastify from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { getRequest, openSocket } from './helpers/clients.js'
import { startGuarded, stopApps } from './helpers/fastify-app.js'
import { parseResponse } from './helpers/http-response.js'
import { sleep, waitUntil } from './helpers/records.js'
import { closeServer, listen } from './helpers/server.js'

const SWEEP = 50
const PATH = '/_connguard'

interface Got {
  status: number
  headers: http.IncomingHttpHeaders
  body: string
}

/** One request on its own connection (`Connection: close`), so no pooled socket lingers. */
function get(port: number, path: string, method = 'GET'): Promise<Got> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: '127.0.0.1', port, path, method, agent: false, timeout: 5_000 },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (chunk) => {
          body += chunk
        })
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }))
      },
    )
    req.on('timeout', () => req.destroy(new Error(`GET ${path} timed out`)))
    req.on('error', reject)
    req.end()
  })
}

async function getJson(port: number, path = `${PATH}/json`): Promise<LiveViewData> {
  const res = await get(port, path)
  expect(res.status, res.body).toBe(200)
  expect(res.headers['content-type']).toMatch(/^application\/json/)
  expect(res.headers['cache-control']).toBe('no-store')
  return JSON.parse(res.body) as LiveViewData
}

/** A keep-alive connection that made one request and now sits idle. */
async function idleClient(port: number) {
  const conn = await openSocket(port)
  const request = getRequest('/')
  conn.send(request)
  await conn.waitFor((buf) => parseResponse(buf))
  return { conn, clientPort: conn.socket.localPort as number, requestBytes: request.length }
}

/** GET the JSON until `done(data)`, every 50 ms, for at most 3 s. */
async function pollJson(
  port: number,
  done: (data: LiveViewData) => boolean,
): Promise<LiveViewData> {
  const until = Date.now() + 3_000
  for (;;) {
    const data = await getJson(port)
    if (done(data)) return data
    if (Date.now() > until) throw new Error(`live view never matched: ${JSON.stringify(data)}`)
    await sleep(50)
  }
}

const find = (data: LiveViewData, clientPort: number): LiveConnection | undefined =>
  data.connections.find((c) => c.remotePort === clientPort)

/** The page: self-contained (no external asset of any kind) and locked down by its headers. */
function expectPage(res: Got, base: string): void {
  expect(res.status).toBe(200)
  expect(res.headers['content-type']).toBe('text/html; charset=utf-8')
  expect(res.headers['content-security-policy']).toMatch(/default-src 'none'/)
  expect(res.headers['content-security-policy']).toMatch(/connect-src 'self'/)
  expect(res.headers['x-frame-options']).toBe('DENY')
  expect(res.body).toContain(`data-base="${base}"`)
  expect(res.body).not.toMatch(/<link|<img|<iframe|\ssrc=|\shref=|@import|url\(|https?:\/\//i)
}

afterEach(async () => {
  await stopApps()
})

describe('Fastify liveView option', () => {
  it('JSON lists an idle keep-alive connection with its deadline counting down, then its close', async () => {
    const KEEP_ALIVE = 1_500
    const { port } = await startGuarded({
      liveView: { path: PATH },
      keepAliveTimeout: KEEP_ALIVE,
      sweepInterval: SWEEP,
    })
    const { conn, clientPort, requestBytes } = await idleClient(port)

    const first = await getJson(port)
    const live = find(first, clientPort)
    expect(live, JSON.stringify(first.connections)).toMatchObject({
      state: 'idle',
      deadline: { kind: 'keep_alive_timeout' },
      requests: 1,
      bytesRead: requestBytes,
      remoteAddress: '127.0.0.1',
      httpVersion: '1.1',
      secure: false,
      tlsVersion: null,
    })
    const left1 = live?.deadline?.msLeft as number
    expect(left1).toBeGreaterThan(0)
    expect(left1).toBeLessThanOrEqual(KEEP_ALIVE)
    expect(first.snapshot.idle).toBeGreaterThanOrEqual(1)
    expect(first.snapshot.total).toBeGreaterThanOrEqual(2) // it, and the one asking
    expect(first.truncated).toBe(false)

    await sleep(300)
    const second = await getJson(port)
    const again = find(second, clientPort)
    const left2 = again?.deadline?.msLeft as number
    expect(left2, 'ms left decreases').toBeLessThan(left1)
    expect(left1 - left2).toBeGreaterThanOrEqual(250)
    expect(again?.ageMs).toBeGreaterThan(live?.ageMs as number)

    // The keep-alive deadline cuts it; the view then lists it among the recent closes.
    await conn.closed
    const after = await pollJson(port, (d) => find(d, clientPort) === undefined)
    const closed = after.recentCloses.find((c) => c.remotePort === clientPort)
    expect(closed).toMatchObject({
      id: live?.id,
      reason: 'keep_alive_timeout',
      stateAtClose: 'idle',
      requests: 1,
      remoteAddress: '127.0.0.1',
    })
    expect(closed?.durationMs).toBeGreaterThanOrEqual(KEEP_ALIVE - 20)
    expect(after.recentClosesByReason.keep_alive_timeout).toBe(1)
    expect(after.snapshot.closedByReason.keep_alive_timeout).toBe(1)
    // Newest first.
    const times = after.recentCloses.map((c) => c.closedAt)
    expect([...times].sort((a, b) => b - a)).toEqual(times)
  })

  it('serves a self-contained page at the path that polls <path>/json', async () => {
    const { port } = await startGuarded({ liveView: { path: `${PATH}/` } })
    expectPage(await get(port, PATH), PATH)
    const head = await get(port, PATH, 'HEAD')
    expect(head.status).toBe(200)
  })

  it('is off by default: nothing is served', async () => {
    const { port } = await startGuarded({})
    expect((await get(port, PATH)).status).toBe(404)
    expect((await get(port, `${PATH}/json`)).status).toBe(404)
  })

  it('goes behind an onRequest hook like any route', async () => {
    const { port } = await startGuarded(
      { liveView: { path: PATH } },
      {
        setup: (app) =>
          app.addHook('onRequest', async (request, reply) => {
            if (request.url.startsWith(PATH) && request.headers.authorization !== 'Bearer ok') {
              await reply.code(401).send({ error: 'unauthorized' })
            }
          }),
      },
    )
    expect((await get(port, PATH)).status).toBe(401)
    expect((await get(port, `${PATH}/json`)).status).toBe(401)
  })

  it.each([
    [{ liveView: true }, 'CONNGUARD_ERR_INVALID_OPTION'],
    [{ liveView: { path: 'x' } }, 'CONNGUARD_ERR_INVALID_OPTION'],
    [{ liveView: { path: '/x/:id' } }, 'CONNGUARD_ERR_INVALID_OPTION'],
    [{ liveView: {} }, 'CONNGUARD_ERR_INVALID_OPTION'],
    [{ liveView: { path: '/x', recentCloses: -1 } }, 'CONNGUARD_ERR_INVALID_OPTION'],
    [{ liveView: { path: '/x', recent: 10 } }, 'CONNGUARD_ERR_UNKNOWN_OPTION'],
  ])('rejects %j at register with %s', async (options, code) => {
    const app = Fastify()
    await expect(app.register(connguard, options as never).ready()).rejects.toMatchObject({
      code,
    })
    await app.close()
  })
})

describe('Express guard.liveView()', () => {
  const servers: http.Server[] = []
  const trackers: ConnectionTracker[] = []
  afterEach(async () => {
    for (const server of servers.splice(0)) await closeServer(server)
    for (const tracker of trackers.splice(0)) tracker.close()
  })

  async function startExpress(mount: boolean) {
    const guard = expressGuard({ keepAliveTimeout: 5_000, sweepInterval: SWEEP })
    trackers.push(guard.tracker)
    const app = express()
    app.use(guard)
    const view = guard.liveView({ recentCloses: 10 })
    if (mount) app.use(PATH, view)
    app.get('/', (_req, res) => {
      res.send('ok')
    })
    const server = guard.attach(http.createServer(app))
    servers.push(server)
    return { port: await listen(server), view }
  }

  it('mounted with app.use(path, …): JSON of live connections and recent closes, and the page', async () => {
    const { port, view } = await startExpress(true)
    const { conn, clientPort } = await idleClient(port)

    const first = await getJson(port)
    const live = find(first, clientPort)
    expect(live).toMatchObject({ state: 'idle', deadline: { kind: 'keep_alive_timeout' } })
    await sleep(250)
    const left = find(await getJson(port), clientPort)?.deadline?.msLeft as number
    expect(left).toBeLessThan(live?.deadline?.msLeft as number)

    conn.destroy()
    await waitUntil(() => view.view.json().recentCloses.some((c) => c.remotePort === clientPort), {
      what: 'the close recorded',
    })
    const after = await getJson(port)
    expect(find(after, clientPort)).toBeUndefined()
    expect(after.recentCloses.find((c) => c.remotePort === clientPort)).toMatchObject({
      id: live?.id,
      reason: 'client_closed',
    })

    expectPage(await get(port, PATH), PATH)
    expectPage(await get(port, `${PATH}/?refresh=1`), PATH)
    // Other methods and paths under the mount fall through to Express (404 here).
    expect((await get(port, `${PATH}/json`, 'POST')).status).toBe(404)
    expect((await get(port, `${PATH}/other`)).status).toBe(404)
  })

  it('serves nothing unless mounted', async () => {
    const { port } = await startExpress(false)
    expect((await get(port, PATH)).status).toBe(404)
    expect((await get(port, `${PATH}/json`)).status).toBe(404)
  })
})

describe('LiveView (core)', () => {
  it('keeps the last N closes only while open, and escapes the base path into the page', async () => {
    const server = http.createServer((_req, res) => res.end('ok'))
    const tracker = new ConnectionTracker({ sweepInterval: SWEEP }).attach(server)
    const port = await listen(server)
    try {
      const view = liveView(tracker, { recentCloses: 2 })
      expect(tracker.listenerCount('close')).toBe(1)
      for (let i = 0; i < 3; i++) {
        const { conn } = await idleClient(port)
        conn.destroy()
        await conn.closed
      }
      await waitUntil(() => tracker.snapshot().closedByReason.client_closed === 3, {
        what: 'three closes',
      })
      const data = view.json()
      expect(data.recentCloses).toHaveLength(2)
      expect(data.recentCloses[0]?.id).toBeGreaterThan(data.recentCloses[1]?.id as number)
      expect(data.recentClosesByReason).toEqual({ client_closed: 2 })

      view.close()
      view.close()
      expect(tracker.listenerCount('close')).toBe(0)
      const { conn } = await idleClient(port)
      conn.destroy()
      await waitUntil(() => tracker.snapshot().closedByReason.client_closed === 4)
      expect(view.json().recentCloses).toHaveLength(2)

      const page = view.html('/a"><script>alert(1)</script>')
      expect(page).toContain('data-base="/a&quot;&gt;&lt;script&gt;alert(1)&lt;/script&gt;"')
      expect(page).not.toContain('<script>alert')

      expect(() => liveView(tracker, { listLimit: 0 })).toThrow(
        expect.objectContaining({ code: 'CONNGUARD_ERR_INVALID_OPTION' }),
      )
    } finally {
      await closeServer(server)
      tracker.close()
    }
  })
})
