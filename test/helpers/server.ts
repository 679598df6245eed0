/**
 * Start and stop servers for integration tests: always 127.0.0.1 on an ephemeral port,
 * always torn down without waiting for a client or a deadline.
 */
import type { AddressInfo, Server, Socket } from 'node:net'

/** Servers from node:http, node:https, node:http2 and node:net all fit this shape. */
type AnyServer = Server & { closeAllConnections?: () => void }

/**
 * Raw sockets accepted by each server that went through `listen()`. Needed because
 * `closeAllConnections()` only knows connections that reached the HTTP parser: an https
 * socket still in its TLS handshake (exactly what these tests create) is not among them,
 * and `server.close()` would wait for it until Node's 120 s handshake timeout.
 */
const accepted = new WeakMap<Server, Set<Socket>>()

/** Listen on 127.0.0.1:0 and resolve to the port the kernel picked. */
export function listen(server: Server): Promise<number> {
  const sockets = new Set<Socket>()
  accepted.set(server, sockets)
  // Observation only: an extra 'connection' listener changes nothing about how the server
  // (or connguard) handles the socket.
  server.on('connection', (socket: Socket) => {
    sockets.add(socket)
    socket.once('close', () => sockets.delete(socket))
  })
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject)
      resolve((server.address() as AddressInfo).port)
    })
  })
}

/**
 * Close the server and every connection it still has, and wait for 'close'. Rejects after
 * `timeoutMs` rather than hang a test file's afterAll/afterEach.
 */
export function closeServer(server: Server, { timeoutMs = 5_000 } = {}): Promise<void> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(
      () => reject(new Error(`closeServer: server did not close within ${timeoutMs} ms`)),
      timeoutMs,
    )
    server.close((err?: Error & { code?: string }) => {
      clearTimeout(timer)
      // Closing a server that is not listening (already closed, or never started) is fine.
      if (err && err.code !== 'ERR_SERVER_NOT_RUNNING') reject(err)
      else resolve()
    })
    ;(server as AnyServer).closeAllConnections?.()
    for (const socket of accepted.get(server) ?? []) socket.destroy()
  })
}
