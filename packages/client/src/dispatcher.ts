import { Agent } from 'undici'
import { baseConnector, guardedConnector } from './connector.js'
import { type ClientOptions, resolveClientOptions } from './options.js'
import { ClientTracker } from './tracker.js'

/**
 * An undici 7 `Agent` whose connections are tracked and, over HTTP/2, kept
 * honest by PING: after `readIdleTimeout` ms without a byte from the server a
 * PING goes out, and no ACK within `pingTimeout` ms closes the connection
 * (`ping_timeout`; requests in flight on it fail with `PingTimeoutError`) so
 * the next request connects afresh instead of timing out on a dead route.
 * Usable wherever undici takes a dispatcher: `fetch(url, { dispatcher })` (the
 * global fetch on Node 20 and newer, and npm undici's), `request`, `stream`,
 * `setGlobalDispatcher`.
 */
export class ConnguardDispatcher extends Agent {
  /** The connections' records, states and events. */
  readonly tracker: ClientTracker

  constructor(options?: ClientOptions) {
    const { liveness, agent } = resolveClientOptions(options)
    // PING liveness needs HTTP/2: offered by default; `allowH2: false` keeps HTTP/1.1 only.
    const allowH2 = agent.allowH2 ?? true
    const resolvedAgent = { ...agent, allowH2 }
    const tracker = new ClientTracker(liveness)
    const base = baseConnector(resolvedAgent, liveness)
    const userConnector = typeof agent.connect === 'function'
    super({
      ...resolvedAgent,
      connect: guardedConnector(
        tracker,
        base,
        liveness,
        userConnector && liveness.tcpKeepAlive > 0,
      ),
    })
    this.tracker = tracker
  }

  override close(callback: () => void): void
  override close(): Promise<void>
  override close(callback?: () => void): Promise<void> | void {
    this.tracker._shutdown()
    if (typeof callback === 'function') {
      super.close(() => {
        this.tracker.close()
        callback()
      })
      return
    }
    return super.close().finally(() => this.tracker.close())
  }

  override destroy(err: Error | null, callback: () => void): void
  override destroy(callback: () => void): void
  override destroy(err: Error | null): Promise<void>
  override destroy(): Promise<void>
  override destroy(
    errOrCallback?: Error | null | (() => void),
    callback?: () => void,
  ): Promise<void> | void {
    this.tracker._shutdown()
    const cb = typeof errOrCallback === 'function' ? errOrCallback : callback
    const err = typeof errOrCallback === 'function' ? null : (errOrCallback ?? null)
    if (typeof cb === 'function') {
      super.destroy(err, () => {
        this.tracker.close()
        cb()
      })
      return
    }
    return super.destroy(err).finally(() => this.tracker.close())
  }
}

/**
 * The `dispatcher` type of Node's global `fetch` (`undici-types`, through @types/node), or
 * `unknown` where the global `RequestInit` has none (DOM typings). The installed undici's
 * `Agent` and Node's bundled copy are separate declarations that do not match structurally
 * (their `FormData` iterators differ), while at run time the global `fetch` takes either.
 */
export type GlobalFetchDispatcher = RequestInit extends { dispatcher?: infer D }
  ? NonNullable<D>
  : unknown

/**
 * `createDispatcher({ readIdleTimeout, pingTimeout, ...undiciAgentOptions })`:
 * a `ConnguardDispatcher` (an undici `Agent`) with `dispatcher.tracker`, typed to be
 * accepted by both undici's own `fetch`/`request` and Node's global `fetch`.
 * Throws `InvalidOptionError` / `UnknownOptionError` for bad connguard options.
 */
export function createDispatcher(
  options?: ClientOptions,
): ConnguardDispatcher & GlobalFetchDispatcher {
  return new ConnguardDispatcher(options) as ConnguardDispatcher & GlobalFetchDispatcher
}
