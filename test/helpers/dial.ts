/**
 * A raw HTTP/1 client (plain or TLS) that can bind its local address, so tests can play
 * attackers on 127.0.0.2 and a legitimate client on 127.0.0.1, and read responses from a
 * keep-alive connection one by one.
 */
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import { getRequest } from './clients.js'
import { type ParsedResponse, parseResponses } from './http-response.js'
import { clientTlsOptions } from './tls.js'

export interface Ended {
  at: number
  how: 'end' | 'error' | 'close' | 'destroyed'
  error?: NodeJS.ErrnoException
}

export interface Client {
  socket: net.Socket
  /** Local port of the TCP socket (the server's `remotePort`), kept after it closes. */
  readonly localPort: number | undefined
  /** performance.now() at TCP connect. */
  readonly openedAt: number
  /** True on connect (TCP) / secureConnect (TLS); false if the connection ended first. */
  ready: Promise<boolean>
  /** Settles once when the connection ends; rejects on the hard life. */
  ended: Promise<Ended>
  received(): Buffer
  isOpen(): boolean
  send(data: string | Buffer): boolean
  /** Send a GET and resolve with its response (requests on one client are sequential). */
  get(path?: string): Promise<ParsedResponse>
  destroy(): void
}

export function dial(
  port: number,
  {
    secure = false,
    localAddress,
    timeoutMs = 10_000,
  }: { secure?: boolean; localAddress?: string; timeoutMs?: number } = {},
): Client {
  const tcp = net.connect({ host: '127.0.0.1', port, ...(localAddress && { localAddress }) })
  const socket = secure ? tls.connect({ ...clientTlsOptions, socket: tcp }) : tcp
  let buf = Buffer.alloc(0)
  let openedAt = Number.NaN
  let localPort: number | undefined
  let settled = false
  let answered = 0
  const waiters = new Set<() => void>()
  let resolveEnded!: (e: Ended) => void
  let rejectEnded!: (err: Error) => void
  const ended = new Promise<Ended>((resolve, reject) => {
    resolveEnded = resolve
    rejectEnded = reject
  })
  ended.catch(() => {})
  const finish = (how: Ended['how'], error?: NodeJS.ErrnoException) => {
    if (settled) return
    settled = true
    clearTimeout(hard)
    resolveEnded({ at: performance.now(), how, ...(error && { error }) })
    socket.destroy()
    tcp.destroy()
    for (const wake of [...waiters]) wake()
  }
  const hard = setTimeout(() => {
    if (settled) return
    settled = true
    rejectEnded(new Error(`client hard life of ${timeoutMs} ms ran out`))
    socket.destroy()
    tcp.destroy()
    for (const wake of [...waiters]) wake()
  }, timeoutMs)
  tcp.once('connect', () => {
    openedAt = performance.now()
    localPort = tcp.localPort
  })
  socket.on('data', (chunk: Buffer) => {
    buf = Buffer.concat([buf, chunk])
    for (const wake of [...waiters]) wake()
  })
  socket.once('end', () => finish('end'))
  socket.once('error', (err) => finish('error', err))
  if (socket !== tcp) tcp.once('error', (err) => finish('error', err))
  socket.once('close', () => finish('close'))
  const ready = new Promise<boolean>((resolve) => {
    socket.once(secure ? 'secureConnect' : 'connect', () => resolve(true))
    ended.then(
      () => resolve(false),
      () => resolve(false),
    )
  })
  const nth = (n: number) =>
    new Promise<ParsedResponse>((resolve, reject) => {
      const check = () => {
        const responses = parseResponses(buf, { eof: settled })
        if (responses.length >= n) {
          waiters.delete(check)
          resolve(responses[n - 1] as ParsedResponse)
        } else if (settled) {
          waiters.delete(check)
          reject(new Error(`connection ended before response #${n} (${buf.length} bytes in)`))
        }
      }
      waiters.add(check)
      check()
    })
  const client: Client = {
    socket,
    get localPort() {
      return localPort
    },
    get openedAt() {
      return openedAt
    },
    ready,
    ended,
    received: () => buf,
    isOpen: () => !settled,
    send: (data) => {
      if (settled || !socket.writable) return false
      socket.write(data)
      return true
    },
    get: async (path = '/') => {
      if (!(await ready)) throw new Error('connection ended before it was established')
      answered++
      client.send(getRequest(path))
      return nth(answered)
    },
    destroy: () => finish('destroyed'),
  }
  return client
}

/** Clients opened since the last `destroyClients()` (call it in afterEach). */
const clients: Client[] = []

/** `dial`, remembered for `destroyClients()`. */
export function open(port: number, options?: Parameters<typeof dial>[1]): Client {
  const c = dial(port, options)
  clients.push(c)
  return c
}

/** Destroys every client `open` made since the last call. */
export function destroyClients(): void {
  for (const c of clients.splice(0)) c.destroy()
}
