import type { Socket } from 'node:net'

/**
 * Progress read from the counters libuv already keeps on the accepted TCP
 * socket (`raw`; for TLS the TLSSocket's parent, which counts ciphertext), so
 * the hot path adds no per-chunk listener. Measured on Node 20, 22 and 24,
 * plain and TLS (see docs/ARCHITECTURE.md, "Data rates"): nothing on the
 * TLSSocket or the ServerResponse moves with real progress; the raw handle's
 * counters do.
 */

type Handle =
  | { bytesWritten?: number; writeQueueSize?: number; reading?: boolean }
  | null
  | undefined
const handleOf = (s: Socket): Handle => (s as unknown as { _handle?: Handle })._handle

/**
 * The server is not reading the connection: once the application's buffer for
 * the body is full, Node stops reading the handle and the client's bytes wait
 * in the kernel. Such time does not count against the client. (`isPaused()`
 * does not show it under TLS; the raw handle's `reading` does, in both.)
 */
export function bodyReadPaused(raw: Socket): boolean {
  return handleOf(raw)?.reading === false
}

/**
 * The client is not taking response bytes as fast as they come: libuv holds
 * bytes the kernel would not accept. Otherwise the application has nothing
 * queued (a slow handler, an SSE stream between events), and that time does
 * not count.
 */
export function responseBlocked(raw: Socket): boolean {
  return (handleOf(raw)?.writeQueueSize ?? 0) > 0
}

/**
 * Bytes the kernel has accepted from this connection: handed to libuv, less
 * what libuv still holds. (`socket.bytesWritten` also counts bytes still
 * buffered in JS, and walks that buffer on every call.)
 */
export function acceptedBytes(raw: Socket): number {
  const h = handleOf(raw)
  if (h == null) return raw.bytesWritten
  return (h.bytesWritten ?? 0) - (h.writeQueueSize ?? 0)
}
