import { InvalidOptionError } from '../vocab/errors.js'
import type { PingLimits } from './ping-limits.js'
import { duration, rejectUnknown } from './validate.js'

/**
 * Defaults of the `webSocket` option, each with its reason. A WebSocket is not an HTTP/2
 * session: nothing else closes an idle one (no keep-alive deadline), it often sits behind
 * proxies that cut 60 s of silence, and its peers are phones and laptops that vanish
 * without a FIN. So its PING runs sooner than HTTP/2's 60 s.
 */
/**
 * 30 s of read silence before a PING: the heartbeat `ws`'s README shows, inside the 60 s
 * idle limits of common proxies (nginx `proxy_read_timeout`, AWS ALB), so a healthy idle
 * WebSocket is kept open through them too; socket.io pings every 25 s.
 */
export const DEFAULT_WS_PING_INTERVAL = 30_000
/** 20 s for the pong, as socket.io's pingTimeout and Kestrel's KeepAlivePingTimeout. */
export const DEFAULT_WS_PING_TIMEOUT = 20_000
/**
 * Off: a WebSocket may be silent by design (a dashboard that only listens), and one that no
 * library answers pings for cannot be told apart from a dead one by silence alone.
 */
export const DEFAULT_WS_IDLE_TIMEOUT = 0
/**
 * 60 s before the kernel's first TCP keepalive probe on an upgraded socket: a backstop for
 * what no PING covers (a socket no library is linked to). Linux then probes every 75 s,
 * 9 times, so a dead peer is found in about 12 minutes instead of hours; probes are sent
 * only while the connection is silent.
 */
export const DEFAULT_WS_TCP_KEEP_ALIVE = 60_000

/** Liveness of upgraded WebSocket connections; see README "WebSockets". */
export interface WebSocketOptions {
  /**
   * A WebSocket linked to the tracker (`watchWebSockets`, @fastify/websocket) gets a ping
   * through its library after this much read silence, ms (default 30 s; `false`: never).
   */
  pingInterval?: number | false
  /** No pong within this long terminates it with `ping_timeout`, ms (default 20 s). */
  pingTimeout?: number | false
  /**
   * A WebSocket upgrade no library is linked to is closed with `upgrade_idle_timeout` after
   * this long with no byte either way, ms (default off).
   */
  idleTimeout?: number | false
  /** TCP keepalive on upgraded WebSocket sockets, first probe after this much silence, ms (default 60 s; `false`: left as is). */
  tcpKeepAlive?: number | false
}

/** `webSocket` as validated once at construction; 0 = off. */
export interface ResolvedWebSocket extends PingLimits {
  readonly idleTimeout: number
  readonly tcpKeepAlive: number
}

const NAMES = ['pingInterval', 'pingTimeout', 'idleTimeout', 'tcpKeepAlive'] as const

/** Validates `webSocket` (`undefined`: the defaults; `false`: everything off). */
export function resolveWebSocket(value: unknown, sweepInterval: number): ResolvedWebSocket {
  if (value === false) {
    return Object.freeze({
      pingInterval: 0,
      pingTimeout: 0,
      idleTimeout: 0,
      tcpKeepAlive: 0,
      sweepInterval,
    })
  }
  const given = value === undefined ? {} : value
  if (given === null || typeof given !== 'object' || Array.isArray(given)) {
    throw new InvalidOptionError(
      'webSocket',
      value,
      '{ pingInterval?, pingTimeout?, idleTimeout?, tcpKeepAlive? } (ms or false each), or false',
    )
  }
  rejectUnknown(given, NAMES, 'webSocket field')
  const o = given as Record<string, unknown>
  return Object.freeze({
    pingInterval: duration('webSocket.pingInterval', o.pingInterval, DEFAULT_WS_PING_INTERVAL),
    pingTimeout: duration('webSocket.pingTimeout', o.pingTimeout, DEFAULT_WS_PING_TIMEOUT),
    idleTimeout: duration('webSocket.idleTimeout', o.idleTimeout, DEFAULT_WS_IDLE_TIMEOUT),
    tcpKeepAlive: duration('webSocket.tcpKeepAlive', o.tcpKeepAlive, DEFAULT_WS_TCP_KEEP_ALIVE),
    sweepInterval,
  })
}
