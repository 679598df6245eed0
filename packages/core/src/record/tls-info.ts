import type { TlsInfo } from './record.js'

/**
 * What TLS negotiated, read once when a handshake completes. Node hands new strings on every
 * call (protocol, cipher, ALPN) and the SNI name is the client's, yet a server's connections
 * nearly all negotiate one of a few combinations (full or resumed, h2 or http/1.1): records
 * with equal facts share one frozen object (~70–150 B saved per connection, measured). The
 * SNI name comes from the client, so the set is capped: past it, a record gets its own object.
 */

const MAX_SHARED = 64
const shared = new Map<string, TlsInfo>()

/** A TLSSocket, or the socket proxy of an HTTP/2 session over TLS (methods it may lack). */
export interface TlsView {
  readonly alpnProtocol?: string | false | null
  readonly servername?: string | false | null
  getProtocol?(): string | null
  getCipher?(): { name?: string } | undefined
  isSessionReused?(): boolean
}

export function readTlsInfo(socket: TlsView): TlsInfo {
  const cipher = socket.getCipher?.()?.name ?? null
  const protocol = socket.getProtocol?.() ?? null
  const alpnProtocol = socket.alpnProtocol ?? false
  const servername = socket.servername || null
  const resumed = socket.isSessionReused?.() ?? false
  // Unambiguous for any SNI bytes, and once per handshake (which costs far more).
  const key = JSON.stringify([protocol, cipher, alpnProtocol, servername, resumed])
  const known = shared.get(key)
  if (known !== undefined) return known
  const info: TlsInfo = Object.freeze({ protocol, cipher, alpnProtocol, servername, resumed })
  if (shared.size < MAX_SHARED) shared.set(key, info)
  return info
}
