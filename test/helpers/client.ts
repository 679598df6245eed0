/**
 * Helpers for the @connguard/client integration tests (test/client-*.test.ts): plain
 * (unguarded) servers for the client to talk to — node:http2 over TLS with the fixture
 * certificate, and node:http keep-alive — and a watcher of a client tracker's records.
 * The dead route itself is test/helpers/http2.ts's relay (`stopExisting()`).
 */
import { spawn } from 'node:child_process'
import http, { type IncomingMessage, type ServerResponse } from 'node:http'
import http2, { type Http2SecureServer, type ServerHttp2Session } from 'node:http2'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import type { ClientConnectionRecord, ClientTracker } from '@connguard/client'
import { handler } from './http2.js'
import { clientTlsOptions, tlsOptions } from './tls.js'

export interface PlainServer {
  port: number
  /** Connections (HTTP/1.1 sockets or HTTP/2 sessions) the server has accepted. */
  accepted(): number
  /** HTTP/1.1 servers: end (FIN) every open connection, as a server closing idle ones does. */
  endAll(): void
  close(): Promise<void>
}

/** A node:http2 TLS server (fixture certificate), unguarded, routes as test/helpers/http2.ts. */
export async function startH2Server(): Promise<PlainServer> {
  const server: Http2SecureServer = http2.createSecureServer(tlsOptions, handler)
  const sessions = new Set<ServerHttp2Session>()
  let accepted = 0
  server.on('session', (session: ServerHttp2Session) => {
    accepted++
    sessions.add(session)
    session.on('error', () => {})
    session.once('close', () => sessions.delete(session))
  })
  const port = await listen(server)
  return {
    port,
    accepted: () => accepted,
    endAll: () => {
      for (const session of sessions) session.close()
    },
    close: () => {
      for (const session of sessions) session.destroy()
      return closeServer(server)
    },
  }
}

/** A node:http keep-alive server, unguarded: `/` → 'ok', `/slow?ms=N`, `/hang`. */
export async function startH1Server(
  options: { keepAliveTimeout?: number } = {},
): Promise<PlainServer> {
  const server = http.createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://localhost')
    if (url.pathname === '/hang') return
    if (url.pathname === '/slow') {
      const timer = setTimeout(() => res.end('slow'), Number(url.searchParams.get('ms') ?? 0))
      res.on('close', () => clearTimeout(timer))
      return
    }
    res.end('ok')
  })
  server.keepAliveTimeout = options.keepAliveTimeout ?? 30_000
  const sockets = new Set<net.Socket>()
  let accepted = 0
  server.on('connection', (socket: net.Socket) => {
    accepted++
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  const port = await listen(server)
  return {
    port,
    accepted: () => accepted,
    endAll: () => {
      for (const socket of sockets) socket.end()
    },
    close: () => {
      for (const socket of sockets) socket.destroy()
      return closeServer(server)
    },
  }
}

/**
 * A port on 127.0.0.1 where a TCP connect never completes: a listener in a child process
 * (backlog 1) whose event loop is blocked, so it never accepts, and whose accept queue
 * is filled here; the kernel then drops further SYNs, as for a server behind a firewall
 * that black-holes them. The child ends itself after 20 s at most; `close()` ends it now.
 */
export async function startUnacceptingPort(): Promise<{ port: number; close(): void }> {
  const child = spawn(
    process.execPath,
    [
      '-e',
      `const s = require('node:net').createServer()
       s.listen({ port: 0, host: '127.0.0.1', backlog: 1 }, () => {
         process.stdout.write(s.address().port + '\\n')
         Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 20000)
         process.exit(0)
       })`,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'] },
  )
  const port = await new Promise<number>((resolve, reject) => {
    child.stdout?.once('data', (d: Buffer) => resolve(Number(String(d).trim())))
    child.once('exit', () => reject(new Error('the listener process ended early')))
  })
  const fillers: net.Socket[] = []
  const close = () => {
    for (const socket of fillers) socket.destroy()
    child.kill()
  }
  // Connect until one connect hangs: the accept queue is full from then on.
  for (let i = 0; i < 8; i++) {
    const socket = net.connect(port, '127.0.0.1')
    socket.on('error', () => {})
    fillers.push(socket)
    const connected = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 300)
      socket.once('connect', () => {
        clearTimeout(timer)
        resolve(true)
      })
    })
    if (!connected) return { port, close }
  }
  close()
  throw new Error('the accept queue never filled')
}

/** undici `connect` options that trust the fixture certificate. */
export const clientConnect = { ...clientTlsOptions } as { ca: string | Buffer; servername: string }

export interface ClientWatch {
  /** Every record opened, in order. */
  readonly opened: ClientConnectionRecord[]
  /** Every record closed, in close order. */
  readonly closed: ClientConnectionRecord[]
  /** Every transition seen: [record id, from, to]. */
  readonly transitions: [number, string, string][]
  /** performance.now() when `rec` closed, NaN if it has not. */
  closedAt(rec: ClientConnectionRecord): number
  /** Resolves when `rec` closes; rejects after `timeoutMs`. */
  closeOf(rec: ClientConnectionRecord, timeoutMs?: number): Promise<ClientConnectionRecord>
}

/** Records a client tracker's events, stamped with performance.now(). */
export function watchClient(tracker: ClientTracker): ClientWatch {
  const opened: ClientConnectionRecord[] = []
  const closed: ClientConnectionRecord[] = []
  const transitions: [number, string, string][] = []
  const stamps = new Map<ClientConnectionRecord, number>()
  const waiters = new Set<() => void>()
  tracker.on('open', (rec) => opened.push(rec))
  tracker.on('transition', (rec, from, to) => transitions.push([rec.id, from, to]))
  tracker.on('close', (rec) => {
    stamps.set(rec, performance.now())
    closed.push(rec)
    for (const wake of [...waiters]) wake()
  })
  return {
    opened,
    closed,
    transitions,
    closedAt: (rec) => stamps.get(rec) ?? Number.NaN,
    closeOf: (rec, timeoutMs = 5_000) =>
      new Promise((resolve, reject) => {
        const check = () => {
          if (!stamps.has(rec)) return
          waiters.delete(check)
          clearTimeout(timer)
          resolve(rec)
        }
        const timer = setTimeout(() => {
          waiters.delete(check)
          reject(new Error(`record ${rec.id} did not close within ${timeoutMs} ms`))
        }, timeoutMs)
        waiters.add(check)
        check()
      }),
  }
}

/** The only live record of `tracker` (the tests keep one connection open at a time). */
export function onlyLive(tracker: ClientTracker): ClientConnectionRecord {
  const live = [...tracker.connections()]
  if (live.length !== 1) throw new Error(`expected 1 live client connection, found ${live.length}`)
  return live[0] as ClientConnectionRecord
}

function listen(server: net.Server): Promise<number> {
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve((server.address() as net.AddressInfo).port)
    })
  })
}

function closeServer(server: net.Server): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, 2_000)
    server.close(() => {
      clearTimeout(timer)
      resolve()
    })
  })
}
