/**
 * Healthy and misbehaving HTTP/1.1 clients over real sockets to 127.0.0.1, for tests that
 * check when, and how, a server ends a connection.
 *
 * Rules every helper keeps:
 * - node:net / node:tls only: node:http would not let a client stall mid-head or mid-body.
 * - Bounded: each rides on one `openSocket` connection whose hard life (`timeoutMs`, default
 *   20 s) bounds the whole helper; past it the helper rejects with ClientTimeoutError.
 * - Reported, not thrown: a server closing the connection is the behaviour under test, so
 *   helpers resolve with when and how it happened. They reject on the hard timeout, on bytes
 *   that are not HTTP, and where a close breaks their premise (no 101 for upgradeRequest,
 *   no response to slowloris' `firstRequest`).
 * - Clean: every helper destroys its socket before it settles, except `upgradeRequest`,
 *   which hands the open connection to the test (still under its hard life).
 */
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import {
  type ParsedResponse,
  parseHead,
  parseResponse,
  parseResponses,
  type ResponseHead,
} from './http-response.js'
import {
  type ClientOptions,
  type CloseInfo,
  type Conn,
  ConnectionClosedError,
  openSocket,
} from './socket.js'
import { clientTlsOptions } from './tls.js'

export {
  type ClientOptions,
  ClientTimeoutError,
  type CloseInfo,
  type Conn,
  ConnectionClosedError,
  DEFAULT_TIMEOUT_MS,
  openSocket,
} from './socket.js'

/** CloseInfo plus when the connection opened and how long the server held it. */
export interface CloseResult extends CloseInfo {
  /** TCP connected. */
  openedAt: number
  /** TLS established (equals `openedAt` without TLS). */
  establishedAt: number
  /** `at - openedAt`: from accept, the start of every server-side phase. */
  heldMs: number
}

/** Wait for the server to end `conn`; CloseResult on close, ClientTimeoutError on the cap. */
async function heldUntilClosed(conn: Conn): Promise<CloseResult> {
  try {
    const info = await conn.closed
    const { openedAt, establishedAt } = conn
    return { ...info, openedAt, establishedAt, heldMs: info.at - openedAt }
  } finally {
    conn.destroy()
  }
}

/** Sleep `ms`, cut short if `conn` ends meanwhile: a pause never outlives its connection. */
function pause(ms: number, conn: Conn): Promise<void> {
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, ms)
    const wake = () => {
      clearTimeout(timer)
      resolve()
    }
    conn.closed.then(wake, wake)
  })
}

/**
 * Wait for the next final response starting at `offset`, skipping interim 1xx ones
 * (100 Continue, 103 Early Hints) but not 101, which ends HTTP/1.1 on this connection.
 */
async function nextResponse(conn: Conn, offset: number): Promise<ParsedResponse> {
  for (;;) {
    const response = await conn.waitFor((buf, eof) => parseResponse(buf, offset, { eof }))
    if (response.status >= 200 || response.status === 101) return response
    offset = response.end
  }
}

/** A minimal valid GET request head (keep-alive is HTTP/1.1's default). */
export function getRequest(path = '/', headers: Record<string, string> = {}): string {
  return `GET ${path} HTTP/1.1\r\nHost: localhost\r\n${formatHeaders(headers)}\r\n`
}

/** Connect over plain TCP and send nothing until the server closes the connection. */
export async function silentTcp(
  port: number,
  { timeoutMs }: Omit<ClientOptions, 'tls'> = {},
): Promise<CloseResult> {
  return heldUntilClosed(await openSocket(port, { timeoutMs }))
}

/** Complete a TLS handshake, then send nothing until the server closes the connection. */
export async function tlsThenSilence(
  port: number,
  { timeoutMs }: Omit<ClientOptions, 'tls'> = {},
): Promise<CloseResult> {
  return heldUntilClosed(await openSocket(port, { tls: true, timeoutMs }))
}

let clientHello: Promise<Buffer> | undefined

/**
 * A real TLS ClientHello record, captured once per test file: a `tls.connect` to a throwaway
 * local TCP server that reads its first record and hangs up. Real bytes, so the server's TLS
 * stack parses a genuine record header and handshake header and then waits for the rest.
 */
export function captureClientHello({ timeoutMs = 5_000 } = {}): Promise<Buffer> {
  clientHello ??= new Promise<Buffer>((resolve, reject) => {
    let client: tls.TLSSocket | undefined
    const cleanup = () => {
      clearTimeout(timer)
      client?.destroy()
      server.close()
    }
    const timer = setTimeout(() => {
      cleanup()
      reject(new Error(`no ClientHello captured within ${timeoutMs} ms`))
    }, timeoutMs)
    const server = net.createServer((socket) => {
      const chunks: Buffer[] = []
      socket.on('data', (chunk: Buffer) => {
        chunks.push(chunk)
        const record = Buffer.concat(chunks)
        // TLS record: type(1) version(2) length(2), then `length` bytes (RFC 8446 §5.1).
        if (record.length >= 5 && record.length >= 5 + record.readUInt16BE(3)) {
          socket.destroy()
          cleanup()
          resolve(record.subarray(0, 5 + record.readUInt16BE(3)))
        }
      })
      socket.on('error', () => {})
    })
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo
      client = tls.connect({ host: '127.0.0.1', port, ...clientTlsOptions })
      // The capture server hangs up mid-handshake on purpose.
      client.on('error', () => {})
    })
  }).catch((err) => {
    clientHello = undefined
    throw err
  })
  return clientHello
}

/**
 * Open raw TCP and send the first `bytes` of a real ClientHello (default: half of it, so the
 * record header promises more than arrives), then stay silent until the server closes.
 * Models a client stuck in the TLS handshake.
 */
export async function partialClientHello(
  port: number,
  { bytes, timeoutMs }: Omit<ClientOptions, 'tls'> & { bytes?: number } = {},
): Promise<CloseResult & { sent: number }> {
  const hello = await captureClientHello()
  const sent = Math.min(bytes ?? Math.floor(hello.length / 2), hello.length - 1)
  const conn = await openSocket(port, { timeoutMs })
  conn.send(hello.subarray(0, sent))
  return { ...(await heldUntilClosed(conn)), sent }
}

export interface SlowlorisOptions extends ClientOptions {
  /** Time between header lines. */
  intervalMs: number
  /** A complete request sent first; its whole response is read before the slow request. */
  firstRequest?: string
  /** Wait this long after the first response before starting the slow request. */
  pauseMs?: number
  path?: string
}

export interface SlowlorisResult extends CloseResult {
  /** `performance.now()` when the slow request's first byte was sent. */
  slowStartedAt: number
  /** Header lines sent after the request line. */
  headerLinesSent: number
  /** The response to `firstRequest`, if one was sent. */
  firstResponse?: ParsedResponse
  /** A response the server sent to the slow request before closing (e.g. 408), if any. */
  response?: ParsedResponse
}

/**
 * Send a request line, then one header line every `intervalMs`, never the blank line that
 * ends the head, until the server closes the connection. A slow drip that resets any
 * per-socket inactivity timer; only a headers deadline stops it.
 */
export async function slowloris(
  port: number,
  { intervalMs, firstRequest, pauseMs = 0, path = '/', ...options }: SlowlorisOptions,
): Promise<SlowlorisResult> {
  const conn = await openSocket(port, options)
  let timer: NodeJS.Timeout | undefined
  try {
    let firstResponse: ParsedResponse | undefined
    if (firstRequest !== undefined) {
      conn.send(firstRequest)
      firstResponse = await nextResponse(conn, 0)
      if (pauseMs > 0) await pause(pauseMs, conn)
    }
    const slowStartedAt = performance.now()
    let headerLinesSent = 0
    conn.send(`GET ${path} HTTP/1.1\r\nHost: localhost\r\n`)
    timer = setInterval(() => {
      if (conn.send(`X-Slowloris-${headerLinesSent + 1}: ${headerLinesSent + 1}\r\n`))
        headerLinesSent++
    }, intervalMs)
    const result = await heldUntilClosed(conn)
    const [response] = parseResponses(result.received, {
      eof: true,
      offset: firstResponse?.end ?? 0,
    })
    return {
      ...result,
      slowStartedAt,
      headerLinesSent,
      ...(firstResponse && { firstResponse }),
      ...(response && { response }),
    }
  } finally {
    clearInterval(timer)
    conn.destroy()
  }
}

export interface SlowUploadOptions extends ClientOptions {
  path?: string
  /** Content-Length announced in the head. */
  totalBytes: number
  chunkBytes: number
  /** Time between chunks; the first chunk goes right after the head. */
  intervalMs: number
}

export interface SlowUploadResult {
  /** 0 when the connection ended without a complete response. */
  status: number
  headers: Record<string, string>
  body: Buffer
  /** `performance.now()` when the response was complete, or the connection ended. */
  at: number
  /** `performance.now()` when the request head was sent. */
  startedAt: number
  /** Body bytes handed to the socket; less than totalBytes if the server cut the upload. */
  sentBytes: number
  /** The connection ended before a complete response: how. */
  close?: CloseInfo
}

/**
 * POST `totalBytes` with Content-Length, `chunkBytes` every `intervalMs`, and read the
 * response. Stops sending as soon as a response arrives or the connection ends, so an early
 * 408/413 or a cut upload shows up as such (`status`, `sentBytes`, `close`), not as a throw.
 */
export async function slowUpload(
  port: number,
  { path = '/', totalBytes, chunkBytes, intervalMs, ...options }: SlowUploadOptions,
): Promise<SlowUploadResult> {
  const conn = await openSocket(port, options)
  try {
    const startedAt = performance.now()
    conn.send(
      `POST ${path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/octet-stream\r\nContent-Length: ${totalBytes}\r\n\r\n`,
    )
    let answered = false
    const response = nextResponse(conn, 0).finally(() => {
      answered = true
    })
    // Observed through `response` below; keep an early rejection from being unhandled meanwhile.
    response.catch(() => {})
    const chunk = Buffer.alloc(chunkBytes, 'a')
    let sentBytes = 0
    while (sentBytes < totalBytes && !answered && conn.isOpen()) {
      const size = Math.min(chunkBytes, totalBytes - sentBytes)
      if (!conn.send(size === chunkBytes ? chunk : chunk.subarray(0, size))) break
      sentBytes += size
      if (sentBytes < totalBytes) await pause(intervalMs, conn)
    }
    try {
      const { status, headers, body } = await response
      return { status, headers, body, at: performance.now(), startedAt, sentBytes }
    } catch (err) {
      if (!(err instanceof ConnectionClosedError)) throw err
      const { close } = err
      return {
        status: 0,
        headers: {},
        body: Buffer.alloc(0),
        at: close.at,
        startedAt,
        sentBytes,
        close,
      }
    }
  } finally {
    conn.destroy()
  }
}

export interface KeepAliveOptions extends ClientOptions {
  count: number
  /** Pause after each response before the next request. */
  pauseMs?: number
  path?: string
}

export interface KeepAliveResult {
  /** One per response received; fewer than `count` if the server closed the connection. */
  statuses: number[]
  responses: ParsedResponse[]
  /** `performance.now()` when each response was complete. */
  respondedAt: number[]
  /** Set when the server ended the connection before all `count` responses. */
  close?: CloseInfo
}

/**
 * Send `count` GETs one after another on ONE connection, each after the previous response
 * and `pauseMs`. A server-side close ends the sequence early and is reported, not thrown.
 */
export async function keepAliveRequests(
  port: number,
  { count, pauseMs = 0, path = '/', ...options }: KeepAliveOptions,
): Promise<KeepAliveResult> {
  const conn = await openSocket(port, options)
  const result: KeepAliveResult = { statuses: [], responses: [], respondedAt: [] }
  try {
    let offset = 0
    for (let i = 0; i < count; i++) {
      if (i > 0 && pauseMs > 0) await pause(pauseMs, conn)
      if (!conn.send(getRequest(path))) break
      const response = await nextResponse(conn, offset)
      result.respondedAt.push(performance.now())
      result.responses.push(response)
      result.statuses.push(response.status)
      offset = response.end
    }
  } catch (err) {
    if (!(err instanceof ConnectionClosedError)) throw err
  } finally {
    conn.destroy()
  }
  if (result.statuses.length < count) {
    // Already settled: the loop only stops early once the connection has ended.
    result.close = await conn.closed
  }
  return result
}

export interface RawHttpResult {
  openedAt: number
  /** `performance.now()` when the connection ended, or when the awaited response was complete. */
  at: number
  /** Everything the server sent. */
  received: Buffer
  /** Every complete response in `received`. */
  responses: ParsedResponse[]
  /** How the connection ended; absent with `until: 'response'` (the client hung up). */
  close?: CloseInfo
}

/**
 * Send `bytes` as they are and collect what comes back: until the server closes (default),
 * or until one complete final response when `until: 'response'`.
 */
export async function rawHttp(
  port: number,
  bytes: string | Buffer,
  { until = 'close', ...options }: ClientOptions & { until?: 'close' | 'response' } = {},
): Promise<RawHttpResult> {
  const conn = await openSocket(port, options)
  try {
    conn.send(bytes)
    if (until === 'response') {
      await nextResponse(conn, 0)
      const received = conn.received()
      return {
        openedAt: conn.openedAt,
        at: performance.now(),
        received,
        responses: parseResponses(received),
      }
    }
    const close = await conn.closed
    const { at, received } = close
    const responses = parseResponses(received, { eof: true })
    return { openedAt: conn.openedAt, at, received, responses, close }
  } finally {
    conn.destroy()
  }
}

/**
 * Send a WebSocket-style upgrade request and resolve once the `101` head arrives. The
 * connection is handed over OPEN (still under its hard life): check `conn.isOpen()` later,
 * and `conn.destroy()` when done. Any other status, or a close, rejects.
 */
export async function upgradeRequest(
  port: number,
  { path = '/', ...options }: ClientOptions & { path?: string } = {},
): Promise<{ conn: Conn; head: ResponseHead; at: number }> {
  const conn = await openSocket(port, options)
  try {
    conn.send(
      getRequest(path, {
        Connection: 'Upgrade',
        Upgrade: 'websocket',
        // The sample nonce from RFC 6455 §1.3; servers in these tests do not check it.
        'Sec-WebSocket-Key': 'dGhlIHNhbXBsZSBub25jZQ==',
        'Sec-WebSocket-Version': '13',
      }),
    )
    const head = await conn.waitFor((buf) => parseHead(buf))
    if (head.status !== 101) throw new Error(`expected 101 Switching Protocols, got ${head.status}`)
    return { conn, head, at: performance.now() }
  } catch (err) {
    conn.destroy()
    throw err
  }
}

function formatHeaders(headers: Record<string, string>): string {
  return Object.entries(headers)
    .map(([name, value]) => `${name}: ${value}\r\n`)
    .join('')
}
