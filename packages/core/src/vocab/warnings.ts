/**
 * Every process warning connguard emits, declared once with its stable code (as Fastify's
 * `lib/warnings.js`): match on `warning.code`, never on the text. Each is emitted through
 * `process.emitWarning` with type `ConnguardWarning`, once per distinct message in a process:
 * a setting replaced on a hundred servers alike warns once, a second setting on its own.
 */

export const WARNING_TYPE = 'ConnguardWarning'

/**
 * The messages said per code, shared by every copy of this module in the process (the ESM and
 * CommonJS builds, the internal entry's bundle), so a warning is said once however many
 * copies emit it.
 */
const SAID = Symbol.for('connguard.warnings.said')

function said(code: string): Set<string> {
  const g = globalThis as { [SAID]?: Map<string, Set<string>> }
  g[SAID] ??= new Map()
  const all = g[SAID]
  let set = all.get(code)
  if (set === undefined) {
    set = new Set()
    all.set(code, set)
  }
  return set
}

export interface ConnguardWarning<A extends unknown[]> {
  readonly code: string
  /** Emits the warning unless this exact message was emitted before in this process. */
  emit(...args: A): void
  /** The messages emitted so far (tests clear it). */
  readonly emitted: Set<string>
}

function declare<A extends unknown[]>(
  code: string,
  message: (...args: A) => string,
): ConnguardWarning<A> {
  const emitted = said(code)
  return {
    code,
    emitted,
    emit(...args: A): void {
      const text = message(...args)
      if (emitted.has(text)) return
      emitted.add(text)
      process.emitWarning(text, { type: WARNING_TYPE, code })
    },
  }
}

/** Express: the middleware attached the guard on the first request, not at server creation. */
export const LATE_ATTACH = declare(
  'CONNGUARD_LATE_ATTACH',
  () =>
    'connguard attached itself on the first request: connections accepted before were not ' +
    'guarded. Call guard.attach(server) on the server right after creating it.',
)

/** Express: attaching on the first request failed; the guard guards nothing. */
export const LATE_ATTACH_FAILED = declare(
  'CONNGUARD_LATE_ATTACH_FAILED',
  (detail: string) => `connguard could not attach on the first request: ${detail}`,
)

/**
 * An option given to connguard explicitly replaces a timeout the application set on the
 * server or in its framework (README, "Migrating from Node, Fastify and Express timeouts").
 */
export const SETTING_REPLACED = declare(
  'CONNGUARD_WARN_SETTING_REPLACED',
  (replaced: string) =>
    `connguard: ${replaced}. The connguard option is the one in force; leave it out to keep ` +
    'the application setting.',
)

/**
 * A tracker guards several servers with one set of deadlines: a later server's own timeout
 * that differs from them is not adopted.
 */
export const SETTING_NOT_ADOPTED = declare(
  'CONNGUARD_WARN_SETTING_NOT_ADOPTED',
  (settings: string) =>
    `connguard: this tracker already guards another server with its own deadlines; ${settings}. ` +
    'Give each server its own tracker, or set the connguard option explicitly.',
)

/**
 * Node 22 and 24.6+: `server.keepAliveTimeoutBuffer` set by the application. Node closed idle
 * connections that long after the advertised keep-alive timeout; the guard closes at it.
 */
export const KEEP_ALIVE_BUFFER_REPLACED = declare(
  'CONNGUARD_WARN_KEEP_ALIVE_BUFFER_REPLACED',
  (buffer: number, keepAlive: number) =>
    `connguard: server.keepAliveTimeoutBuffer (${buffer} ms) no longer applies while attached: ` +
    `idle connections close at keepAliveTimeout (${keepAlive} ms), as advertised in ` +
    'Keep-Alive: timeout=. Raise the keepAliveTimeout option to keep them longer.',
)

/** Fastify: routes registered before the plugin get no `config.connguard` (nor its check). */
export const ROUTES_BEFORE_PLUGIN = declare(
  'CONNGUARD_WARN_ROUTES_BEFORE_PLUGIN',
  (routes: string) =>
    `connguard was registered after these routes, whose config.connguard is not applied: ${routes}. ` +
    'Register @connguard/fastify before the routes.',
)

/** This Node keeps no handle on HTTP/2 streams where expected. */
export const NO_H2_STREAM_HANDLE = declare(
  'CONNGUARD_WARN_NO_H2_STREAM_HANDLE',
  () =>
    'connguard: this Node.js keeps no handle on HTTP/2 streams where expected; per-stream data rates are off',
)

/** Client: this undici keeps its HTTP/2 session where connguard cannot reach it. */
export const NO_H2_SESSION = declare(
  'CONNGUARD_WARN_NO_H2_SESSION',
  () =>
    'connguard: cannot reach the HTTP/2 session of this undici version; PING liveness is off ' +
    '(TCP keepalive still applies). Please report the undici version.',
)

/** closeLog: a level() picker returned something that is not a level. */
export const BAD_LOG_LEVEL = declare(
  'CONNGUARD_BAD_LOG_LEVEL',
  (chosen: string, levels: string, fallback: string) =>
    `connguard: closeLog level() returned ${chosen}, not one of ${levels}; using ${fallback}`,
)

/** An exporter's recording of a closed connection threw. */
export const METRICS_FAILED = declare(
  'CONNGUARD_METRICS_FAILED',
  (err: string) => `connguard: recording a closed connection's metrics failed: ${err}`,
)
