import type { Socket } from 'node:net'

/**
 * The two ends of an accepted connection, read once at accept (after close
 * the handle is gone and Node can no longer tell).
 *
 * `socket.remoteAddress` and `localAddress` make Node cache an
 * `{ address, family, port }` object on the socket for each end (~56 bytes
 * each) that the record then keeps alive for the connection's life. Where the
 * socket has a TCP handle and nothing cached the ends yet, they are read from
 * the handle into one scratch object instead. The local address is usually
 * the same for every connection of a server: one string is kept for all.
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
  localAddress: undefined as string | undefined,
  localPort: undefined as number | undefined,
}

const scratch: Name = {}
let sharedLocalAddress: string | undefined

export function readEnds(socket: Socket): typeof ends {
  const s = socket as WithHandle
  const handle = s._handle
  if (
    handle != null &&
    typeof handle.getpeername === 'function' &&
    s._peername == null &&
    nameOf(handle.getpeername, handle)
  ) {
    ends.remoteAddress = scratch.address
    ends.remotePort = scratch.port
  } else {
    ends.remoteAddress = socket.remoteAddress
    ends.remotePort = socket.remotePort
  }
  if (
    handle != null &&
    typeof handle.getsockname === 'function' &&
    s._sockname == null &&
    nameOf(handle.getsockname, handle)
  ) {
    ends.localAddress = scratch.address
    ends.localPort = scratch.port
  } else {
    ends.localAddress = socket.localAddress
    ends.localPort = socket.localPort
  }
  const local = ends.localAddress
  if (local === sharedLocalAddress) ends.localAddress = sharedLocalAddress
  else sharedLocalAddress = local
  return ends
}

function nameOf(read: (out: Name) => number, handle: NamedHandle): boolean {
  scratch.address = undefined
  scratch.port = undefined
  return read.call(handle, scratch) === 0 && scratch.address !== undefined
}
