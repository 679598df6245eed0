/**
 * HTTP/2 helpers for the integration tests (test/http2-*.test.ts): guarded `node:http2`
 * servers (h2c, and TLS with the fixture certificate), `http2.connect` clients that stamp
 * when they got GOAWAY and when they closed, and a loopback TCP relay that can be told to
 * drop every byte in both directions without closing anything: a route that died.
 *
 * Hazard: never write to or end() the TLS socket under a live server Http2Session (Node
 * aborts the process). Every teardown here goes through sessions (`destroy()`) or destroys
 * raw sockets; nothing writes to a server-side socket.
 */
import http2, {
  type ClientHttp2Session,
  type Http2SecureServer,
  type Http2Server,
  type Http2ServerRequest,
  type Http2ServerResponse,
  type ServerHttp2Session,
} from 'node:http2'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import {
  type ConnectionRecord,
  ConnectionTracker,
  type ConnectionTrackerOptions,
} from '@connguard/core'
import { type CloseWatcher, watchCloses } from './records.js'
import { clientTlsOptions, tlsOptions } from './tls.js'

export type AnyH2Server = Http2Server | Http2SecureServer

/**
 * The routes of every guarded HTTP/2 server here (compat API):
 * - `/`           → 200 'ok'
 * - `/slow?ms=N`  → 200 'slow' after N ms
 * - `/hang`       → never answers
 */
export function handler(req: Http2ServerRequest, res: Http2ServerResponse): void {
  const url = new URL(req.url, 'http://localhost')
  if (url.pathname === '/hang') return
  if (url.pathname === '/slow') {
    const timer = setTimeout(() => res.end('slow'), Number(url.searchParams.get('ms') ?? 0))
    res.on('close', () => clearTimeout(timer))
    return
  }
  res.end('ok')
}

export interface H2Server {
  server: AnyH2Server
  tracker: ConnectionTracker
  closes: CloseWatcher
  port: number
  /** Server-side sessions, as the 'session' event gave them. */
  sessions: Set<ServerHttp2Session>
  /** `https://` or `http://` base URL on 127.0.0.1. */
  origin: string
}

const servers = new Set<H2Server>()

/** A node:http2 server (TLS when `secure`), guarded with `options`, listening on 127.0.0.1. */
export async function startH2(
  options: ConnectionTrackerOptions,
  {
    secure = false,
    allowHTTP1 = false,
    onRequest = handler,
  }: {
    secure?: boolean
    allowHTTP1?: boolean
    /** The compat request handler; `handler` above by default. */
    onRequest?: (req: Http2ServerRequest, res: Http2ServerResponse) => void
  } = {},
): Promise<H2Server> {
  const server: AnyH2Server = secure
    ? http2.createSecureServer({ ...tlsOptions, allowHTTP1 }, onRequest)
    : http2.createServer(onRequest)
  const tracker = new ConnectionTracker(options).attach(server)
  const closes = watchCloses(tracker)
  const sessions = new Set<ServerHttp2Session>()
  server.on('session', (session: ServerHttp2Session) => {
    sessions.add(session)
    session.once('close', () => sessions.delete(session))
  })
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve((server.address() as net.AddressInfo).port)
    })
  })
  const h2: H2Server = {
    server,
    tracker,
    closes,
    port,
    sessions,
    origin: `${secure ? 'https' : 'http'}://127.0.0.1:${port}`,
  }
  servers.add(h2)
  return h2
}

/** The live record of the session whose client has local port `port` (no relay in between). */
export function recordOf(h2: H2Server, port: number | undefined): ConnectionRecord {
  const rec = [...h2.tracker.connections()].find((r) => r.remotePort === port)
  if (rec === undefined) throw new Error(`no live record for client port ${port}`)
  return rec
}

/** Tear down every server started since the last call: sessions destroyed, tracker closed. */
export async function stopH2Servers(): Promise<void> {
  await Promise.all(
    [...servers].map(async (h2) => {
      servers.delete(h2)
      h2.closes.stop()
      h2.tracker.close()
      for (const session of h2.sessions) session.destroy()
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, 2_000)
        h2.server.close(() => {
          clearTimeout(timer)
          resolve()
        })
      })
    }),
  )
}

// ---- clients ---------------------------------------------------------------------------------

export interface H2Client {
  session: ClientHttp2Session
  /** performance.now() at 'connect' (preface and SETTINGS exchanged). */
  connectedAt: number
  /** performance.now() of the first GOAWAY received, or NaN. */
  goawayAt(): number
  /** The GOAWAY's error code (0 = NO_ERROR), or null. */
  goawayCode(): number | null
  /** Resolves with performance.now() when the session closes. */
  closed: Promise<number>
  isClosed(): boolean
  /** Local port of the client's TCP socket (the server's remotePort without a relay). */
  localPort: number | undefined
  destroy(): void
}

const clients = new Set<H2Client>()

/**
 * `http2.connect` to `origin` (TLS trusting the fixture certificate), resolved at 'connect'.
 * `port` overrides the origin's (to go through a relay).
 */
export function connectH2(origin: string, { port }: { port?: number } = {}): Promise<H2Client> {
  const url = new URL(origin)
  if (port !== undefined) url.port = String(port)
  const secure = url.protocol === 'https:'
  const session = http2.connect(url.origin, secure ? { ...clientTlsOptions } : {})
  let goawayAt = Number.NaN
  let goawayCode: number | null = null
  let isClosed = false
  session.on('goaway', (code: number) => {
    if (Number.isNaN(goawayAt)) {
      goawayAt = performance.now()
      goawayCode = code
    }
  })
  // The server may reset or cut the session; the tests look at when, not how.
  session.on('error', () => {})
  const closed = new Promise<number>((resolve) => {
    session.once('close', () => {
      isClosed = true
      resolve(performance.now())
    })
  })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('http2.connect: no connect in 5 s')), 5_000)
    session.once('connect', () => {
      clearTimeout(timer)
      const client: H2Client = {
        session,
        connectedAt: performance.now(),
        goawayAt: () => goawayAt,
        goawayCode: () => goawayCode,
        closed,
        isClosed: () => isClosed,
        localPort: session.socket?.localPort,
        destroy: () => session.destroy(),
      }
      clients.add(client)
      resolve(client)
    })
    session.once('close', () => {
      clearTimeout(timer)
      reject(new Error('http2.connect: closed before connect'))
    })
  })
}

/** Destroy every client opened since the last call. */
export function destroyH2Clients(): void {
  for (const client of clients) client.destroy()
  clients.clear()
}

export interface H2Response {
  status: number
  body: string
  /** performance.now() when the response ended. */
  endedAt: number
}

/** One GET on `client`; rejects on a stream error or after `timeoutMs`. */
export function h2get(client: H2Client, path = '/', timeoutMs = 10_000): Promise<H2Response> {
  return new Promise((resolve, reject) => {
    const stream = client.session.request({ ':path': path })
    let status = 0
    let body = ''
    const timer = setTimeout(() => {
      stream.close(http2.constants.NGHTTP2_CANCEL)
      reject(new Error(`GET ${path}: no response within ${timeoutMs} ms`))
    }, timeoutMs)
    stream.setEncoding('utf8')
    stream.on('response', (headers) => {
      status = Number(headers[':status'])
    })
    stream.on('data', (chunk: string) => {
      body += chunk
    })
    stream.on('end', () => {
      clearTimeout(timer)
      if (status === 0) reject(new Error(`GET ${path}: stream ended without a response`))
      else resolve({ status, body, endedAt: performance.now() })
    })
    stream.on('error', (err) => {
      clearTimeout(timer)
      reject(err)
    })
    stream.on('close', () => {
      clearTimeout(timer)
      // After 'end' or 'error' this changes nothing.
      reject(new Error(`GET ${path}: stream closed (code ${stream.rstCode}) without a response`))
    })
  })
}

// ---- a relay whose route can die -------------------------------------------------------------

export interface Relay {
  port: number
  /** From now on, every byte in either direction is dropped; nothing is closed or ended. */
  stop(): void
  /**
   * The route of every connection open now dies as with `stop()`; connections accepted
   * later are forwarded normally (a client that reconnects finds a working route).
   */
  stopExisting(): void
  /** Connections accepted so far. */
  accepted(): number
  /** performance.now() of stop(), NaN before. */
  stoppedAt(): number
  /** Bytes dropped since stop(), per direction. */
  dropped: { toServer: number; toClient: number }
  /** Destroy every socket and close the listener. */
  close(): Promise<void>
}

/**
 * A loopback TCP relay to 127.0.0.1:`target`: each accepted client gets its own upstream
 * connection and bytes are copied both ways. After `stop()` the relay goes on reading both
 * sides (so no buffer fills and no window closes on its account) and throws it all away,
 * and ignores FIN and resets from either side: to the client and to the server it looks
 * exactly like a route that silently stopped carrying packets.
 */
export async function startRelay(target: number): Promise<Relay> {
  const sockets = new Set<net.Socket>()
  let forwarding = true
  let accepted = 0
  /** One per relayed connection: false once its route died. */
  const routes = new Set<{ alive: boolean }>()
  let stoppedAt = Number.NaN
  const dropped = { toServer: 0, toClient: 0 }
  const track = (socket: net.Socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
    socket.once('close', () => sockets.delete(socket))
  }
  const server = net.createServer({ allowHalfOpen: true }, (down) => {
    accepted++
    const route = { alive: true }
    routes.add(route)
    down.once('close', () => routes.delete(route))
    const live = () => forwarding && route.alive
    track(down)
    const up = net.connect({ host: '127.0.0.1', port: target, allowHalfOpen: true })
    track(up)
    const pending: Buffer[] = []
    let upReady = false
    up.once('connect', () => {
      upReady = true
      for (const chunk of pending.splice(0)) up.write(chunk)
    })
    down.on('data', (chunk: Buffer) => {
      if (!live()) {
        dropped.toServer += chunk.length
        return
      }
      if (upReady) up.write(chunk)
      else pending.push(chunk)
    })
    up.on('data', (chunk: Buffer) => {
      if (!live()) {
        dropped.toClient += chunk.length
        return
      }
      down.write(chunk)
    })
    // While the route is alive, an end or a close on one side is passed on to the other.
    down.on('end', () => live() && up.end())
    up.on('end', () => live() && down.end())
    down.on('close', () => live() && up.destroy())
    up.on('close', () => live() && down.destroy())
  })
  const port = await new Promise<number>((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port))
  })
  return {
    port,
    stop: () => {
      forwarding = false
      stoppedAt = performance.now()
    },
    stopExisting: () => {
      for (const route of routes) route.alive = false
      stoppedAt = performance.now()
    },
    accepted: () => accepted,
    stoppedAt: () => stoppedAt,
    dropped,
    close: () => {
      for (const socket of sockets) socket.destroy()
      return new Promise((resolve) => server.close(() => resolve()))
    },
  }
}
