/**
 * Smoke tests for the test helpers themselves, against plain node:http / node:https servers
 * with NO connguard: if these fail, integration test failures mean nothing.
 */
import http from 'node:http'
import https from 'node:https'
import type { Socket } from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import {
  ClientTimeoutError,
  keepAliveRequests,
  openSocket,
  partialClientHello,
  rawHttp,
  silentTcp,
  slowloris,
  slowUpload,
  tlsThenSilence,
  upgradeRequest,
} from './helpers/clients.js'
import { parseResponse, parseResponses } from './helpers/http-response.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const BIG_BYTES = 8 * 1024 * 1024

/** Echoes the request body length; '/chunked' answers chunked, '/big' with 8 MiB. */
const handler: http.RequestListener = (req, res) => {
  let bytes = 0
  req.on('data', (chunk: Buffer) => {
    bytes += chunk.length
  })
  req.on('end', () => {
    if (req.url === '/big') {
      res.end(Buffer.alloc(BIG_BYTES, 'b'))
    } else if (req.url === '/chunked') {
      res.write('hello ')
      res.end('world')
    } else {
      res.end(String(bytes))
    }
  })
}

const servers: http.Server[] = []

/** Start a server on 127.0.0.1 that afterEach closes. */
async function start<S extends http.Server>(server: S): Promise<number> {
  servers.push(server)
  return listen(server)
}

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => closeServer(server)))
})

describe('http-response parser', () => {
  it('completes a chunked body with extensions and trailers only at its last byte', () => {
    const raw = Buffer.from(
      'HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nSet-Cookie: a\r\nSet-Cookie: b\r\n\r\n' +
        '5;ext=1\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\nX-Trailer: t\r\n\r\n' +
        'HTTP/1.1 204 No Content\r\n\r\n',
    )
    const firstEnd = raw.indexOf('HTTP/1.1 204')
    for (let cut = 0; cut < firstEnd; cut++) {
      expect(parseResponse(raw.subarray(0, cut))).toBeUndefined()
    }
    const first = parseResponse(raw)
    expect(first?.body.toString()).toBe('hello world')
    expect(first?.headers['set-cookie']).toBe('a, b')
    expect(first?.end).toBe(firstEnd)
    expect(parseResponses(raw).map((r) => r.status)).toEqual([200, 204])
  })

  it('frames a body without length by the end of the connection', () => {
    const raw = Buffer.from('HTTP/1.0 200 OK\r\n\r\nbody')
    expect(parseResponse(raw)).toBeUndefined()
    expect(parseResponse(raw, 0, { eof: true })?.body.toString()).toBe('body')
  })
})

describe('clients against node:http', () => {
  it('keepAliveRequests: 3 × 200 on one connection, Content-Length and chunked', async () => {
    const port = await start(http.createServer(handler))
    const sockets = new Set<Socket>()
    servers[0]?.on('connection', (socket: Socket) => sockets.add(socket))

    const plain = await keepAliveRequests(port, { count: 3, pauseMs: 10 })
    expect(plain.statuses).toEqual([200, 200, 200])
    expect(plain.responses.map((r) => r.body.toString())).toEqual(['0', '0', '0'])
    expect(plain.close).toBeUndefined()

    const chunked = await keepAliveRequests(port, { count: 3, path: '/chunked' })
    expect(chunked.statuses).toEqual([200, 200, 200])
    expect(chunked.responses[2]?.headers['transfer-encoding']).toBe('chunked')
    expect(chunked.responses.map((r) => r.body.toString())).toEqual(Array(3).fill('hello world'))
    // One connection per call, not one per request.
    expect(sockets.size).toBe(2)
  })

  it('keepAliveRequests: reads multi-MiB bodies without slowing down', async () => {
    const port = await start(http.createServer(handler))
    const started = performance.now()
    const result = await keepAliveRequests(port, { count: 2, path: '/big' })
    expect(result.responses.map((r) => r.body.length)).toEqual([BIG_BYTES, BIG_BYTES])
    expect(performance.now() - started).toBeLessThan(2000)
  })

  it('keepAliveRequests: reports, not throws, a server that closes between requests', async () => {
    // Not `server.keepAliveTimeout`: Node 20.20 adds a fixed 1000 ms to it
    // (HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER in _http_server.js), too slow for a smoke test.
    const server = http.createServer((req, res) => {
      res.end('ok')
      setTimeout(() => req.socket.end(), 100)
    })
    const port = await start(server)
    const result = await keepAliveRequests(port, { count: 3, pauseMs: 400 })
    expect(result.statuses).toEqual([200])
    expect(result.close?.how).toBe('end')
    const idleMs = (result.close?.at ?? 0) - (result.respondedAt[0] ?? 0)
    // The server's 100 ms start when it answers, the client's clock when it has parsed the
    // answer: under load the latter lags by tens of ms, so only a loose lower bound holds.
    expect(idleMs).toBeGreaterThanOrEqual(50)
    expect(idleMs).toBeLessThan(400)
  })

  it('slowUpload: completes with 200 after sending every chunk', async () => {
    const port = await start(http.createServer(handler))
    const result = await slowUpload(port, {
      totalBytes: 1000,
      chunkBytes: 100,
      intervalMs: 20,
    })
    expect(result.status).toBe(200)
    expect(result.body.toString()).toBe('1000')
    expect(result.sentBytes).toBe(1000)
    // 9 pauses of 20 ms between 10 chunks.
    expect(result.at - result.startedAt).toBeGreaterThanOrEqual(170)
  })

  it('slowUpload: status 0 and fewer bytes sent when the server cuts the upload', async () => {
    const server = http.createServer((req) => {
      setTimeout(() => req.socket.destroy(), 150)
    })
    const port = await start(server)
    const result = await slowUpload(port, { totalBytes: 10_000, chunkBytes: 10, intervalMs: 20 })
    expect(result.status).toBe(0)
    expect(result.close).toBeDefined()
    expect(result.sentBytes).toBeLessThan(10_000)
  })

  it('upgradeRequest: receives 101 and the connection stays open', async () => {
    const server = http.createServer(handler)
    server.on('upgrade', (req, socket: Socket) => {
      expect(req.headers.upgrade).toBe('websocket')
      socket.write(
        'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n',
      )
    })
    const port = await start(server)
    const { conn, head } = await upgradeRequest(port)
    expect(head.status).toBe(101)
    expect(head.headers.upgrade).toBe('websocket')
    await new Promise((resolve) => setTimeout(resolve, 100))
    expect(conn.isOpen()).toBe(true)
    conn.destroy()
    expect(conn.isOpen()).toBe(false)
  })

  it('upgradeRequest: rejects when the server answers without switching', async () => {
    const port = await start(http.createServer(handler))
    await expect(upgradeRequest(port)).rejects.toThrow(/expected 101/)
  })

  it('silentTcp: resolves when the server destroys the socket', async () => {
    const server = http.createServer(handler)
    let destroyedAt = Number.NaN
    server.on('connection', (socket: Socket) =>
      setTimeout(() => {
        destroyedAt = performance.now()
        socket.destroy()
      }, 100),
    )
    const port = await start(server)
    const result = await silentTcp(port)
    expect(result.received.length).toBe(0)
    // Held until the server's destroy (causality, not a timer bound: see partialClientHello).
    expect(result.at).toBeGreaterThanOrEqual(destroyedAt)
    expect(result.heldMs).toBeLessThan(1000)
  })

  it('silentTcp: rejects with ClientTimeoutError and hangs up when the server never closes', async () => {
    const server = http.createServer(handler)
    const serverSide = new Promise<Socket>((resolve) => server.on('connection', resolve))
    const port = await start(server)
    await expect(silentTcp(port, { timeoutMs: 150 })).rejects.toBeInstanceOf(ClientTimeoutError)
    const socket = await serverSide
    // The client destroyed its end: the server sees the close soon after.
    if (!socket.destroyed) await new Promise((resolve) => socket.once('close', resolve))
  })

  it('slowloris: drips header lines until the server closes, after a keep-alive request', async () => {
    const server = http.createServer(handler)
    // Cut the connection 200 ms into the second (slow) request's head.
    let destroyedAt = Number.NaN
    server.on('connection', (socket: Socket) => {
      socket.once('data', () => {
        socket.once('data', () =>
          setTimeout(() => {
            destroyedAt = performance.now()
            socket.destroy()
          }, 200),
        )
      })
    })
    const port = await start(server)
    const result = await slowloris(port, {
      intervalMs: 30,
      firstRequest: 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n',
    })
    expect(result.firstResponse?.status).toBe(200)
    expect(result.headerLinesSent).toBeGreaterThanOrEqual(3)
    // Held until the server's destroy (causality, not a timer bound: see partialClientHello).
    expect(result.at).toBeGreaterThanOrEqual(destroyedAt)
    expect(result.at - result.slowStartedAt).toBeLessThan(1000)
  })

  it('rawHttp: collects a response until the server closes', async () => {
    const port = await start(http.createServer(handler))
    const result = await rawHttp(
      port,
      'GET /chunked HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n',
    )
    expect(result.close?.how).toBe('end')
    expect(result.responses.map((r) => [r.status, r.body.toString()])).toEqual([
      [200, 'hello world'],
    ])
    const bad = await rawHttp(port, 'NOT HTTP\r\n\r\n')
    expect(bad.responses[0]?.status).toBe(400)
  })
})

describe('openSocket', () => {
  for (const tls of [false, true]) {
    it(`reset() makes the server see ECONNRESET${tls ? ' under TLS' : ''}`, async () => {
      const server = tls ? https.createServer(tlsOptions, handler) : http.createServer(handler)
      // Node reports a reset of an established HTTP(S) connection as 'clientError' (under TLS
      // the TLSSocket emits no 'error' of its own that a test could listen for).
      const serverSaw = new Promise<string | undefined>((resolve) =>
        server.on('clientError', (err: NodeJS.ErrnoException, socket: Socket) => {
          socket.destroy()
          resolve(err.code)
        }),
      )
      const port = await start(server)
      const conn = await openSocket(port, { tls })
      conn.reset()
      expect(await serverSaw).toBe('ECONNRESET')
      expect((await conn.closed).how).toBe('destroyed')
    })

    it(`rejects with the connect error${tls ? ' under TLS' : ''}`, async () => {
      const server = http.createServer(handler)
      const port = await start(server)
      await closeServer(server)
      await expect(openSocket(port, { tls })).rejects.toMatchObject({ code: 'ECONNREFUSED' })
    })
  }
})

describe('clients against node:https', () => {
  it('keepAliveRequests over TLS', async () => {
    const port = await start(https.createServer(tlsOptions, handler))
    const result = await keepAliveRequests(port, { tls: true, count: 3, path: '/chunked' })
    expect(result.statuses).toEqual([200, 200, 200])
  })

  it('partialClientHello: the server reads the bytes and holds the handshake open', async () => {
    const server = https.createServer({ ...tlsOptions, handshakeTimeout: 200 }, handler)
    const raw = new Promise<Socket>((resolve) => server.on('connection', resolve))
    const timedOut = new Promise<{ at: number; message: string }>((resolve) =>
      server.on('tlsClientError', (err) =>
        resolve({ at: performance.now(), message: err.message }),
      ),
    )
    const port = await start(server)
    const result = await partialClientHello(port)
    const socket = await raw
    expect(result.sent).toBeGreaterThan(9)
    expect(socket.bytesRead).toBe(result.sent)
    // Node's own handshake timeout (200 ms here) is what cut it, and the client saw the close
    // only after that. Not a lower bound on heldMs: Node arms its timer from the event loop's
    // cached time, which lags the client's clock after a stall of this process (51 ms held
    // against 200 ms was seen with both cores busy).
    const timeout = await timedOut
    expect(timeout.message).toMatch(/handshake timeout/i)
    expect(result.at).toBeGreaterThanOrEqual(timeout.at)
    expect(result.heldMs).toBeLessThan(1000)
  })

  it('tlsThenSilence: completes the handshake, then waits for the server to close', async () => {
    const server = https.createServer(tlsOptions, handler)
    let destroyedAt = Number.NaN
    server.on('secureConnection', (socket) =>
      setTimeout(() => {
        destroyedAt = performance.now()
        socket.destroy()
      }, 100),
    )
    const port = await start(server)
    const result = await tlsThenSilence(port)
    expect(result.establishedAt).toBeGreaterThanOrEqual(result.openedAt)
    // Held until the server's destroy (causality, not a timer bound: see partialClientHello).
    expect(result.at).toBeGreaterThanOrEqual(destroyedAt)
    expect(result.heldMs).toBeLessThan(1000)
  })

  it('slowUpload over TLS', async () => {
    const port = await start(https.createServer(tlsOptions, handler))
    const result = await slowUpload(port, {
      tls: true,
      totalBytes: 300,
      chunkBytes: 100,
      intervalMs: 10,
    })
    expect(result.status).toBe(200)
    expect(result.body.toString()).toBe('300')
  })
})
