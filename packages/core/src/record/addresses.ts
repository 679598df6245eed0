import type { Socket } from 'node:net'

/**
 * The two ends of an accepted connection, read once while its handle is open
 * (after close Node can no longer tell); when, is the tracker's choice
 * (docs/ARCHITECTURE.md, "The peer's address").
 *
 * `socket.remoteAddress` and `localAddress` make Node cache an
 * `{ address, family, port }` object on the socket for each end (~56 bytes
 * each) that the record then keeps alive for the connection's life. Where the
 * socket has a TCP handle and nothing cached the ends yet, they are read from
 * the handle into one scratch object instead. The local end is usually the
 * same for every connection of a server: records point at one shared
 * `{ address, port }` while it repeats; a remote address equal to the previous
 * connection's reuses its string.
 */

interface Name {
  address?: string
  port?: number
}
interface NamedHandle {
  getpeername?: (out: Name) => number
  getsockname?: (out: Name) => number
}
type WithHandle = Socket & {
  _handle?: NamedHandle | null
  _peername?: unknown
  _sockname?: unknown
}

/** Filled by `readEnds`; read at once, overwritten by the next call. */
export const ends = {
  remoteAddress: undefined as string | undefined,
  remotePort: undefined as number | undefined,
  local: { address: undefined, port: undefined } as LocalEnd,
}

/** A connection's local end. Records share one object while the local end repeats. */
export interface LocalEnd {
  readonly address: string | undefined
  readonly port: number | undefined
}

const scratch: Name = {}
/** The last local end read from a socket: a wildcard listener's connections mostly share one. */
let lastLocal: LocalEnd = { address: undefined, port: undefined }
/**
 * The last remote address read: the kernel hands a new string for every connection, but
 * consecutive connections often come from one address (a proxy, a load balancer, a NAT):
 * keeping the previous string instead saves one string per connection (~32 B).
 */
let lastRemoteAddress: string | undefined

/** A server's listening address when it is one address (not a wildcard): every connection's local end. */
export interface ListenEnd extends LocalEnd {
  readonly address: string
  readonly port: number
}

/**
 * The listening end of `server` when its connections' local end is known
 * without asking the kernel: it listens on one address. Null for a wildcard
 * (`0.0.0.0`, `::`), a pipe, or a server not listening.
 */
export function listenEnd(server: { address(): unknown }): ListenEnd | null {
  const a = server.address() as { address?: unknown; port?: unknown } | string | null
  if (a === null || typeof a !== 'object') return null
  const { address, port } = a
  if (typeof address !== 'string' || typeof port !== 'number') return null
  if (address === '0.0.0.0' || address === '::' || address === '') return null
  return { address, port }
}

/**
 * Reads both ends of `socket` into `ends`. `local`, when given, is the local
 * end already known (`listenEnd`): reading it from the kernel costs a system
 * call per connection (getsockname measured at 2–6 µs on a small VM).
 */
export function readEnds(socket: Socket, local: ListenEnd | null = null): typeof ends {
  const s = socket as WithHandle
  const handle = s._handle ?? null
  if (fromHandle(handle, handle?.getpeername, s._peername)) {
    ends.remoteAddress = scratch.address
    ends.remotePort = scratch.port
  } else {
    ends.remoteAddress = socket.remoteAddress
    ends.remotePort = socket.remotePort
  }
  const remote = ends.remoteAddress
  if (remote === lastRemoteAddress) ends.remoteAddress = lastRemoteAddress
  else lastRemoteAddress = remote
  if (local !== null) {
    ends.local = local
    return ends
  }
  let address: string | undefined
  let port: number | undefined
  if (fromHandle(handle, handle?.getsockname, s._sockname)) {
    address = scratch.address
    port = scratch.port
  } else {
    address = socket.localAddress
    port = socket.localPort
  }
  if (address !== lastLocal.address || port !== lastLocal.port) lastLocal = { address, port }
  ends.local = lastLocal
  return ends
}

/** Reads one end into `scratch` with `read` (getpeername/getsockname), unless Node already cached it. */
function fromHandle(
  handle: NamedHandle | null,
  read: ((out: Name) => number) | undefined,
  cached: unknown,
): boolean {
  if (handle === null || typeof read !== 'function' || cached != null) return false
  scratch.address = undefined
  scratch.port = undefined
  return read.call(handle, scratch) === 0 && scratch.address !== undefined
}
