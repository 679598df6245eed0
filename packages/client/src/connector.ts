import type { Socket } from 'node:net'
import { type Agent, buildConnector } from 'undici'
import type { ResolvedClientOptions } from './options.js'
import type { ClientTracker } from './tracker.js'

type Connector = buildConnector.connector
type ConnectOptions = Partial<buildConnector.BuildOptions>

/**
 * The connector undici would have built from these Agent options, with
 * connguard's TCP keepalive delay unless `connect` sets keepalive itself.
 * Mirrors undici 7's Client constructor (lib/dispatcher/client.js): a function
 * `connect` is used as given; otherwise `tls`, `maxCachedSessions`, `allowH2`,
 * `socketPath`, `connectTimeout` and `autoSelectFamily*` build one, `connect`'s
 * fields last. `allowH2` has to be given here: undici passes it to a function
 * connector per call, but `buildConnector` only reads it when built.
 */
export function baseConnector(agent: Agent.Options, liveness: ResolvedClientOptions): Connector {
  const connect = agent.connect
  if (typeof connect === 'function') return connect
  const own: ConnectOptions = connect ?? {}
  const keepAlive: ConnectOptions =
    liveness.tcpKeepAlive > 0 && own.keepAlive !== false && own.keepAliveInitialDelay == null
      ? { keepAlive: true, keepAliveInitialDelay: liveness.tcpKeepAlive }
      : {}
  const a = agent as Agent.Options & { useH2c?: boolean }
  return buildConnector({
    ...(a.tls as object | null | undefined),
    maxCachedSessions: a.maxCachedSessions,
    allowH2: a.allowH2,
    useH2c: a.useH2c,
    socketPath: a.socketPath,
    timeout: a.connectTimeout,
    ...(typeof a.autoSelectFamily === 'boolean'
      ? {
          autoSelectFamily: a.autoSelectFamily,
          autoSelectFamilyAttemptTimeout: a.autoSelectFamilyAttemptTimeout,
        }
      : undefined),
    ...keepAlive,
    ...own,
  } as unknown as buildConnector.BuildOptions)
}

/**
 * Wraps `base` so every connection it makes is tracked: a record at the call
 * (`new`), `handshaking` once TCP connects (TLS), `idle` when the connector
 * calls back, and, right after undici has taken the socket (its HTTP/2
 * session is created synchronously in that callback), the session found and
 * watched for read silence.
 */
export function guardedConnector(
  tracker: ClientTracker,
  base: Connector,
  liveness: ResolvedClientOptions,
  setKeepAlive: boolean,
): Connector {
  return function connect(opts, callback) {
    const secure = opts.protocol === 'https:'
    const host = opts.host ?? `${opts.hostname}${opts.port ? `:${opts.port}` : ''}`
    const rec = tracker._connecting(`${opts.protocol}//${host}`, secure)
    const socket = (base as (...args: Parameters<Connector>) => unknown)(opts, (err, sock) => {
      if (err !== null || sock === null) {
        tracker._connectFailed(rec, err ?? new Error('connector returned no socket'))
        callback(err as Error, null)
        return
      }
      // A function `connect` is the user's: connguard sets the keepalive delay itself.
      if (setKeepAlive) sock.setKeepAlive(true, liveness.tcpKeepAlive)
      tracker._established(rec, sock)
      callback(null, sock)
      tracker._handedOver(rec, sock)
    })
    if (isSocket(socket)) tracker._socket(rec, socket)
    return socket as undefined
  }
}

function isSocket(value: unknown): value is Socket {
  return typeof value === 'object' && value !== null && typeof (value as Socket).once === 'function'
}
