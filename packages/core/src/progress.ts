import type { Socket } from 'node:net'

/**
 * Progress read from the counters Node and libuv already keep, so the hot
 * path adds no per-chunk listener. `raw` is the accepted TCP socket (for TLS,
 * the TLSSocket's parent: it counts what crosses the wire); `socket` is the
 * one HTTP runs on (the TLSSocket, or the raw socket itself).
 */

type Handle = { writeQueueSize?: number; reading?: boolean } | null | undefined
const handleOf = (s: Socket): Handle => (s as unknown as { _handle?: Handle })._handle

/**
 * The application is not reading the request body: once its buffer is full
 * Node pauses the socket and stops reading the handle, so the client's bytes
 * wait in the kernel. Such time does not count against the client.
 */
export function bodyReadPaused(socket: Socket): boolean {
  return socket.isPaused() || handleOf(socket)?.reading === false
}

/** Response bytes the application has handed over that the kernel has not taken yet. */
export function queuedResponseBytes(raw: Socket, socket: Socket): number {
  const inKernelQueue = handleOf(raw)?.writeQueueSize ?? 0
  return inKernelQueue + socket.writableLength + (socket === raw ? 0 : raw.writableLength)
}

/**
 * Bytes the kernel has taken from this connection so far: everything handed
 * to the raw socket, less what libuv still holds. Moves only as the client
 * reads (once its receive window and our send buffer are full).
 */
export function acceptedBytes(raw: Socket): number {
  return raw.bytesWritten - raw.writableLength - (handleOf(raw)?.writeQueueSize ?? 0)
}
