/**
 * Adopt, never override: a timeout the application set on its server (or its framework set for
 * it) becomes the default of the matching connguard option, so attaching the guard takes
 * nothing away. What counts as "set" is a value that differs from what the runtime (or the
 * framework) puts there by default (`NODE_DEFAULTS`).
 */
import type { OptionSource, ResolvedOptions } from './options.js'

export type { OptionSource }

/** The connguard options a setting of the server or of its framework maps onto. */
export type AdoptableOption =
  | 'handshakeTimeout'
  | 'headersTimeout'
  | 'keepAliveTimeout'
  | 'requestTimeout'
  | 'maxRequestsPerConnection'

/** The `http.Server` properties that are read, and the connguard option each maps onto. */
export type NodeSetting =
  | 'headersTimeout'
  | 'requestTimeout'
  | 'keepAliveTimeout'
  | 'maxRequestsPerSocket'
  | 'handshakeTimeout'

const OPTION_OF: Readonly<Record<NodeSetting, AdoptableOption>> = {
  headersTimeout: 'headersTimeout',
  requestTimeout: 'requestTimeout',
  keepAliveTimeout: 'keepAliveTimeout',
  maxRequestsPerSocket: 'maxRequestsPerConnection',
  handshakeTimeout: 'handshakeTimeout',
}

/** One setting the application made, in connguard's terms (ms or a count; 0 = off). */
export interface ServerSetting {
  readonly option: AdoptableOption
  /** As the application wrote it: `server.keepAliveTimeout`, `Fastify's keepAliveTimeout`. */
  readonly name: string
  readonly value: number
  readonly source: 'server' | 'fastify'
}

/**
 * For the adapters (not a stable API): what a framework put on the server it created: per Node property, its own default
 * (not the application's choice) and the value the application's options gave.
 */
export interface FrameworkSettings {
  readonly source: 'fastify'
  readonly defaults: Partial<Record<NodeSetting, number>>
  readonly values: Partial<Record<NodeSetting, number>>
}

/**
 * Node's own defaults of the settings read: the same on Node 20, 22, 24 and 26 (headersTimeout
 * 60 s, requestTimeout 300 s, keepAliveTimeout 5 s, no request cap, TLS handshake 120 s; a test
 * compares them with a fresh `http.Server` and `https.Server` of the running Node, so a change
 * shows). Constants, not read from servers built at attach as before: building an `http.Server`
 * and an `https.Server` inside the guard made every later request of the application's server
 * cost ~700 instructions more, with nothing else of the guard running (Node 26, Fastify
 * keep-alive, callgrind: 38.2k → 38.9k a request; the same two servers built by the
 * application cost nothing; V8's reason not found).
 */
export const NODE_DEFAULTS: Readonly<Record<NodeSetting, number>> = Object.freeze({
  headersTimeout: 60_000,
  requestTimeout: 300_000,
  keepAliveTimeout: 5_000,
  maxRequestsPerSocket: 0,
  handshakeTimeout: 120_000,
})

/** tls.Server keeps its handshake timeout under a private symbol; the TLSSocket reads it at accept. */
export function handshakeKeyOf(server: object): symbol | undefined {
  return Object.getOwnPropertySymbols(server).find((s) => s.description === 'handshake-timeout')
}

/**
 * The settings the application made on `server` before the guard was attached: each of its
 * timeouts that differs from the runtime's default (or, for a property `framework` set, from the
 * framework's default).
 */
export function readServerSettings(
  server: object,
  framework: FrameworkSettings | undefined,
): ServerSetting[] {
  const defaults = NODE_DEFAULTS
  const s = server as Record<string | symbol, unknown>
  const key = handshakeKeyOf(server)
  const found: ServerSetting[] = []
  for (const setting of Object.keys(OPTION_OF) as NodeSetting[]) {
    const raw =
      setting === 'handshakeTimeout' ? (key === undefined ? undefined : s[key]) : s[setting]
    // An HTTP/2 server without HTTP/1 fallback has no header, request or keep-alive timeout.
    if (typeof raw !== 'number' && !(setting === 'maxRequestsPerSocket' && raw === null)) continue
    const value = typeof raw === 'number' ? raw : 0
    const given = framework?.values[setting]
    let source: ServerSetting['source'] = 'server'
    let baseline = defaults[setting]
    if (given !== undefined && value === given) {
      // Still what the framework put there: the application's choice only if not its default.
      source = framework?.source ?? 'server'
      baseline = framework?.defaults[setting] ?? baseline
    }
    if (value === baseline) continue
    found.push({
      option: OPTION_OF[setting],
      name: source === 'server' ? `server.${setting}` : `Fastify's ${setting}`,
      // Node reads maxRequestsPerSocket null as 0 (no limit); a timeout past the timer range
      // is clamped where connguard validates durations.
      value: Math.max(0, Math.min(value, 2_147_483_647)),
      source,
    })
  }
  return found
}

/** A duration as a sentence reads it: `10000 ms`, `off`. */
function shown(option: AdoptableOption, value: number): string {
  if (value === 0) return 'off (0)'
  return option === 'maxRequestsPerConnection' ? String(value) : `${value} ms`
}

/**
 * The options with the application's settings adopted: each becomes the default of its
 * connguard option; an option given to connguard explicitly wins, and is reported as replacing
 * it. `first`: no other server is guarded by this tracker yet; otherwise nothing is adopted (one
 * tracker has one set of deadlines) and each differing setting is reported as not adopted.
 * Both reports end up as warnings (warnings.ts), said once.
 */
export function adoptSettings(
  options: ResolvedOptions,
  settings: readonly ServerSetting[],
  first: boolean,
): { options: ResolvedOptions; replaced: string[]; notAdopted: string[] } {
  const replaced: string[] = []
  const notAdopted: string[] = []
  let adopted: Record<string, unknown> | null = null
  let sources: Record<string, OptionSource> | null = null
  for (const s of settings) {
    const current = options[s.option]
    const source = options.sources[s.option]
    if (source === 'connguard') {
      if (current !== s.value)
        replaced.push(
          `option ${s.option}: ${shown(s.option, current)} replaces ${s.name}: ${shown(s.option, s.value)}`,
        )
    } else if (!first) {
      if (current !== s.value)
        notAdopted.push(
          `${s.name}: ${shown(s.option, s.value)} gives way to ${s.option}: ${shown(s.option, current)}`,
        )
    } else {
      adopted ??= { ...options }
      sources ??= { ...options.sources }
      adopted[s.option] = s.value
      sources[s.option] = s.source
      if (s.option === 'requestTimeout') adopted.requestTimeoutUntil = 'received'
    }
  }
  if (adopted === null || sources === null) return { options, replaced, notAdopted }
  // Node's requestTimeout also bounds the head (its check starts at the connection for the
  // first request, and createServer clamps headersTimeout to it): a header deadline left at
  // connguard's default follows an adopted shorter requestTimeout.
  const request = adopted.requestTimeout as number
  if (
    sources.requestTimeout !== 'default' &&
    sources.headersTimeout === 'default' &&
    request > 0 &&
    request < (adopted.headersTimeout as number)
  ) {
    adopted.headersTimeout = request
    sources.headersTimeout = sources.requestTimeout as OptionSource
  }
  adopted.sources = Object.freeze(sources)
  return { options: adopted as unknown as ResolvedOptions, replaced, notAdopted }
}
