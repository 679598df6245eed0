import { ConnguardError } from '@connguard/core'

/**
 * An HTTP/2 connection went `pingTimeout` ms without the ACK of the PING sent
 * after `readIdleTimeout` ms of read silence: the route to the server is dead
 * (the seed article's case). The connection was destroyed with this error, so
 * every request in flight on it fails with it at once: undici's `request()`
 * rejects with it, `fetch` with a `TypeError` whose `cause` is it. Requests
 * sent after it go out on a new connection.
 */
export class PingTimeoutError extends ConnguardError {
  /** The origin the connection went to (`https://host:port`). */
  readonly origin: string
  /** Read silence before the PING was sent, ms. */
  readonly silence: number
  /** How long the ACK was waited for, ms. */
  readonly pingTimeout: number

  constructor(origin: string, silence: number, pingTimeout: number) {
    super(
      'CONNGUARD_ERR_PING_TIMEOUT',
      `connguard: connection to ${origin} is dead: no HTTP/2 PING ACK within ${pingTimeout} ms ` +
        `(PING sent after ${Math.round(silence)} ms without a byte from the server); ` +
        'it was closed and the next request opens a new one',
    )
    this.origin = origin
    this.silence = silence
    this.pingTimeout = pingTimeout
  }
}
