import type { ResolvedOptions } from '../options/options.js'
import type { ConnectionRecord } from '../record/record.js'
import type { CloseReason } from '../vocab/close-reasons.js'

/**
 * The caps checked at accept. A just-accepted connection is already counted,
 * so "over the cap" is `>`; the tracker cuts it at once with the reason.
 */
export class Admission {
  readonly #options: ResolvedOptions
  /** Live connections per remote address, kept only when maxConnectionsPerIp is set. */
  readonly #perIp = new Map<string, number>()

  /**
   * Whether any cap is set: without one, an accept needs no call here (see `Engine.open`; the
   * options are resolved once, so this never changes).
   */
  readonly capped: boolean

  constructor(options: ResolvedOptions) {
    this.#options = options
    this.capped =
      options.maxConnectionsPerIp > 0 || options.maxConnections > 0 || options.maxHandshakes > 0
  }

  /**
   * Counts `rec` in, and returns the cap it exceeds, if any. `full`: the pressure limit
   * (which may be the open-file limit) is exceeded, a connection cap like `maxConnections`.
   */
  admit(
    rec: ConnectionRecord,
    live: number,
    handshaking: number,
    full = false,
  ): CloseReason | null {
    const o = this.#options
    if (o.maxConnectionsPerIp > 0) this.#count(rec, 1)
    if (full || (o.maxConnections > 0 && live > o.maxConnections))
      return 'max_concurrent_connections_exceeded'
    return this.recheck(rec, handshaking)
  }

  /** The caps other than the connection cap, for a connection already counted in. */
  recheck(rec: ConnectionRecord, handshaking: number): CloseReason | null {
    const o = this.#options
    if (
      o.maxConnectionsPerIp > 0 &&
      (this.#perIp.get(rec.remoteAddress ?? '') ?? 0) > o.maxConnectionsPerIp
    )
      return 'max_connections_per_ip_exceeded'
    if (o.maxHandshakes > 0 && handshaking > o.maxHandshakes)
      return 'max_concurrent_handshakes_exceeded'
    return null
  }

  /** Counts `rec` out. */
  release(rec: ConnectionRecord): void {
    if (this.#options.maxConnectionsPerIp > 0) this.#count(rec, -1)
  }

  #count(rec: ConnectionRecord, delta: 1 | -1): number {
    const ip = rec.remoteAddress ?? ''
    const n = (this.#perIp.get(ip) ?? 0) + delta
    if (n > 0) this.#perIp.set(ip, n)
    else this.#perIp.delete(ip)
    return n
  }
}
