/**
 * One client connection to 127.0.0.1 that records what the server sends and when, and
 * settles exactly once when the connection ends: the building block of clients.ts.
 *
 * - Timestamps are `performance.now()`, the clock the server in the same test process sees,
 *   so a test can assert "closed between deadline and deadline + sweep + margin".
 * - Bounded: the socket has a hard life of `timeoutMs` (default 20 s); then it is destroyed
 *   and `closed` rejects with ClientTimeoutError, so a server that never cuts the connection
 *   fails a test instead of hanging it.
 */
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import { clientTlsOptions } from './tls.js'

export const DEFAULT_TIMEOUT_MS = 20_000

export interface ClientOptions {
  /** TLS with the fixture CA and SNI `localhost` instead of plain TCP. */
  tls?: boolean
  /** Hard cap on the socket's life, and so on the helper; default 20 s. */
  timeoutMs?: number
  /** With `tls`: extra client options over the fixture defaults (ALPN, session, ...). */
  tlsOptions?: tls.ConnectionOptions
  /** A loopback address to connect to; default 127.0.0.1. */
  host?: '127.0.0.1' | '127.0.0.2' | '::1'
}

/** How the connection ended, seen from the client. */
export interface CloseInfo {
  /** `performance.now()` when the end was first seen. */
  at: number
  /** Everything the server sent, in order. */
  received: Buffer
  /**
   * 'end': the server sent FIN; 'error': a reset or similar (see `error`); 'close': the socket
   * closed without either; 'destroyed': this side hung up (`conn.destroy()`).
   */
  how: 'end' | 'error' | 'close' | 'destroyed'
  /** Set when `how` is 'error' (ECONNRESET when the server destroyed an unread socket). */
  error?: NodeJS.ErrnoException
}

/** A connected client socket that records what it receives and when it closes. */
export interface Conn {
  socket: net.Socket
  /** `performance.now()` when TCP connected (before any TLS handshake). */
  openedAt: number
  /** `performance.now()` when TLS was established; equals `openedAt` for plain TCP. */
  establishedAt: number
  /** Settles once: resolves when the connection ends, rejects on the hard timeout. */
  closed: Promise<CloseInfo>
  /** Everything received so far. */
  received(): Buffer
  isOpen(): boolean
  /** Write if the socket is still writable; false if it is not (the server closed it). */
  send(data: string | Buffer): boolean
  /**
   * Resolve with the first non-undefined value `parse(received)` returns, checked now and on
   * every chunk. Rejects with ConnectionClosedError if the connection ends first (after one
   * last look with `eof = true`), or with ClientTimeoutError on the hard timeout.
   */
  waitFor<T>(parse: (received: Buffer, eof: boolean) => T | undefined): Promise<T>
  /**
   * Hang up: close(2), so a FIN, or an RST when received bytes are still unread (under TLS a
   * session ticket often is, and the server sees ECONNRESET). After a FIN, Node's HTTP server
   * sockets stay half-open: an upgraded socket nobody reads or ends on 'end' stays open.
   */
  destroy(): void
  /** Hang up abortively (TCP RST, also under TLS): the server sees ECONNRESET at once. */
  reset(): void
}

/** The hard timeout ran out: the server kept the connection longer than the test allows. */
export class ClientTimeoutError extends Error {
  readonly code = 'CLIENT_TIMEOUT'
  constructor(timeoutMs: number, received: Buffer) {
    super(`client gave up after ${timeoutMs} ms; received ${describe(received)}`)
  }
}

/** The connection ended before what a helper was waiting for arrived. */
export class ConnectionClosedError extends Error {
  readonly code = 'CLIENT_CONNECTION_CLOSED'
  constructor(readonly close: CloseInfo) {
    super(
      `connection closed (${close.how}) before the expected data; received ${describe(close.received)}`,
    )
  }
}

/** Connect to 127.0.0.1:`port` (or `host`, loopback; and finish the TLS handshake when `tls`). */
export function openSocket(
  port: number,
  {
    tls: secure = false,
    timeoutMs = DEFAULT_TIMEOUT_MS,
    tlsOptions,
    host = '127.0.0.1',
  }: ClientOptions = {},
): Promise<Conn> {
  // TLS runs over a TCP socket we create, so `reset()` can reach it: `resetAndDestroy()`
  // throws ERR_INVALID_HANDLE_TYPE on a TLSSocket (its handle is a TLSWrap, not TCP).
  const tcp = net.connect({ host, port })
  const socket: net.Socket = secure
    ? tls.connect({ ...clientTlsOptions, ...tlsOptions, socket: tcp })
    : tcp
  // Received bytes in one buffer that doubles as it fills: waitFor re-parses on every chunk,
  // and concatenating a chunk list each time would be quadratic on multi-MB responses.
  let store = Buffer.alloc(16 * 1024)
  let length = 0
  // A view, not a copy: later bytes go past `length` or into a new store, never into it.
  const received = () => store.subarray(0, length)
  const waiters = new Set<() => void>()
  let settled = false
  let openedAt = Number.NaN
  let resolveClosed!: (info: CloseInfo) => void
  let rejectClosed!: (err: Error) => void
  const closed = new Promise<CloseInfo>((resolve, reject) => {
    resolveClosed = resolve
    rejectClosed = reject
  })
  // A test may never await `closed` (e.g. it destroys the socket itself); that is not an error.
  closed.catch(() => {})

  const finish = (how: CloseInfo['how'], error?: NodeJS.ErrnoException, destroy = true) => {
    if (settled) return
    settled = true
    clearTimeout(hardTimer)
    resolveClosed({ at: performance.now(), received: received(), how, ...(error && { error }) })
    if (destroy) {
      socket.destroy()
      tcp.destroy()
    }
    for (const wake of waiters) wake()
  }
  // One timer for the socket's whole life, never one per helper step.
  const hardTimer = setTimeout(() => {
    if (settled) return
    settled = true
    rejectClosed(new ClientTimeoutError(timeoutMs, received()))
    socket.destroy()
    tcp.destroy()
    for (const wake of waiters) wake()
  }, timeoutMs)

  socket.on('data', (chunk: Buffer) => {
    if (length + chunk.length > store.length) {
      const grown = Buffer.alloc(Math.max(store.length * 2, length + chunk.length))
      store.copy(grown, 0, 0, length)
      store = grown
    }
    chunk.copy(store, length)
    length += chunk.length
    for (const wake of waiters) wake()
  })
  tcp.once('connect', () => {
    openedAt = performance.now()
  })
  socket.once('end', () => finish('end'))
  socket.once('error', (err) => finish('error', err))
  // Under TLS, errors of the TCP socket we passed in (refused, reset) are not always
  // re-emitted on the TLSSocket.
  if (socket !== tcp) tcp.once('error', (err) => finish('error', err))
  socket.once('close', () => finish('close'))

  const conn: Conn = {
    socket,
    get openedAt() {
      return openedAt
    },
    establishedAt: Number.NaN,
    closed,
    received,
    isOpen: () => !settled,
    send: (data) => {
      if (settled || !socket.writable) return false
      socket.write(data)
      return true
    },
    waitFor: (parse) =>
      new Promise((resolve, reject) => {
        const check = () => {
          try {
            const value = parse(received(), settled)
            if (value !== undefined) return done(() => resolve(value))
          } catch (err) {
            return done(() => reject(err))
          }
          if (settled)
            closed.then(
              (info) => done(() => reject(new ConnectionClosedError(info))),
              (err) => done(() => reject(err)),
            )
        }
        const done = (settle: () => void) => {
          waiters.delete(check)
          settle()
        }
        waiters.add(check)
        check()
      }),
    destroy: () => finish('destroyed'),
    reset: () => {
      if (settled) return
      // Also closes the TLSSocket, which shares the TCP handle. Destroying the TLSSocket
      // right after segfaults Node 20.20 (measured), so finish() must not touch it here.
      tcp.resetAndDestroy()
      finish('destroyed', undefined, false)
    },
  }

  return new Promise((resolve, reject) => {
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      conn.establishedAt = performance.now()
      resolve(conn)
    })
    // Failing to connect (refused, reset mid-handshake, timeout) rejects the open itself.
    closed.then(
      (info) => reject(info.error ?? new ConnectionClosedError(info)),
      (err) => reject(err),
    )
  })
}

/** Short, printable summary of received bytes for error messages. */
function describe(buf: Buffer): string {
  if (buf.length === 0) return 'nothing'
  const text = buf.toString('latin1', 0, 120).replace(/[^\x20-\x7e]/g, '.')
  return `${buf.length} bytes: ${JSON.stringify(text)}${buf.length > 120 ? '…' : ''}`
}
