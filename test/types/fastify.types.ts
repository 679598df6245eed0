/**
 * Type tests for @connguard/fastify, checked by `tsc -p test/tsconfig.json` (never run).
 * Each `@ts-expect-error` is an assertion: tsc fails if the line below it compiles.
 */
import connguardDefault, {
  type CloseReason,
  type ConnectionRecord,
  type ConnectionState,
  type ConnectionTracker,
  type ConnguardFastifyOptions,
  type ConnguardRouteConfig,
  connguard,
  type LiveState,
  type RequestOverrides,
  type Snapshot,
  type TlsInfo,
} from '@connguard/fastify'
import Fastify from 'fastify'
import { tlsOptions } from '../helpers/tls.js'

/** True when A and B are the same type (not merely assignable). */
type Equal<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
function assertType<_T extends true>(): void {}

// ---- registration and the decorator ------------------------------------------------

const app = Fastify()
await app.register(connguard, {
  handshakeTimeout: 10_000,
  headersTimeout: false,
  keepAliveTimeout: 5_000,
  requestTimeout: 0,
  sweepInterval: 100,
})
await app.register(connguardDefault)
await app.register(connguard, {})

assertType<Equal<typeof connguardDefault, typeof connguard>>()
assertType<Equal<typeof app.connguard, ConnectionTracker>>()
const tracker: ConnectionTracker = app.connguard
void tracker

// Every Fastify flavour carries the decorator.
const secureApp = Fastify({ https: tlsOptions })
assertType<Equal<typeof secureApp.connguard, ConnectionTracker>>()

const options: ConnguardFastifyOptions = { keepAliveTimeout: false, requestTimeout: 30_000 }
void options
// @ts-expect-error a duration is a number of ms or false, not a string
const badDuration: ConnguardFastifyOptions = { keepAliveTimeout: '5s' }
// @ts-expect-error a typo is not an option
const typo: ConnguardFastifyOptions = { headerTimeout: 5 }
// @ts-expect-error true is not a duration (only false switches a deadline off)
const badTrue: ConnguardFastifyOptions = { requestTimeout: true }
void badDuration
void typo
void badTrue

// ---- events, snapshot, records -------------------------------------------------------

app.connguard.on('open', (rec) => {
  assertType<Equal<typeof rec, ConnectionRecord>>()
})
app.connguard.on('transition', (rec, from, to) => {
  assertType<Equal<typeof rec, ConnectionRecord>>()
  assertType<Equal<typeof from, ConnectionState>>()
  assertType<Equal<typeof to, ConnectionState>>()
})
app.connguard.on('close', (rec) => {
  assertType<Equal<typeof rec.closeReason, CloseReason | null>>()
  assertType<Equal<typeof rec.stateAtClose, LiveState | null>>()
  assertType<Equal<typeof rec.tls, TlsInfo | null>>()
  assertType<Equal<typeof rec.errorCode, string | null>>()
  const numbers: number[] = [
    rec.id,
    rec.openedAt,
    rec.requests,
    rec.bytesRead,
    rec.bytesWritten,
    rec.stateDurations.new,
    rec.stateDurations.handshaking,
    rec.stateDurations.idle,
    rec.stateDurations.active,
    rec.stateDurations.upgraded,
  ]
  const maybe: (number | null)[] = [
    rec.handshakeDuration,
    rec.timeToFirstRequest,
    rec.closedAt,
    rec.duration,
  ]
  const secure: boolean = rec.secure
  const where: [string | undefined, number | undefined, number | undefined] = [
    rec.remoteAddress,
    rec.remotePort,
    rec.localPort,
  ]
  const version: string | null = rec.httpVersion
  if (rec.tls !== null) {
    const info: [string | null, string | null, string | false | null, string | null, boolean] = [
      rec.tls.protocol,
      rec.tls.cipher,
      rec.tls.alpnProtocol,
      rec.tls.servername,
      rec.tls.resumed,
    ]
    void info
  }
  void [numbers, maybe, secure, where, version]
})
// @ts-expect-error not an event of the tracker
app.connguard.on('closed', () => {})
// @ts-expect-error 'close' listeners get a record, not a string
app.connguard.on('close', (reason: string) => reason)

const snapshot: Snapshot = app.connguard.snapshot()
const counts: number[] = [
  snapshot.total,
  snapshot.new,
  snapshot.handshaking,
  snapshot.idle,
  snapshot.active,
  snapshot.upgraded,
]
const closedTimeouts: number | undefined = snapshot.closedByReason.request_headers_timeout
// @ts-expect-error closedByReason is keyed by close reason
const notAReason = snapshot.closedByReason.timeout
void [counts, closedTimeouts, notAReason]

for (const rec of app.connguard.connections()) {
  assertType<Equal<typeof rec, ConnectionRecord>>()
}

// ---- per-route overrides ---------------------------------------------------------------

app.post('/upload', { config: { connguard: { requestTimeout: false } } }, async () => 'ok')
app.post('/report', { config: { connguard: { requestTimeout: 120_000 } } }, async () => 'ok')
app.get('/plain', { config: {} }, async () => 'ok')
app.route({
  method: 'PUT',
  url: '/put',
  config: { connguard: { requestTimeout: 5_000 } },
  handler: async () => 'ok',
})
// @ts-expect-error a string is not a request timeout
app.post('/bad', { config: { connguard: { requestTimeout: 'x' } } }, async () => 'ok')
// @ts-expect-error true is not a request timeout
app.post('/bad-true', { config: { connguard: { requestTimeout: true } } }, async () => 'ok')
// Not caught by types: Fastify infers the route's ContextConfig from the literal and
// intersects it with FastifyContextConfig, so an extra key is allowed. The plugin rejects it
// at registration instead (CONNGUARD_ERR_UNKNOWN_OPTION; see fastify.test.ts).
app.post('/typo', { config: { connguard: { requestTimout: 5 } } }, async () => 'ok')
// Checked at compile time with `satisfies RequestOverrides` (README: "Per-route limits"):
// a typo reads "Object literal may only specify known properties … Did you mean
// 'requestTimeout'?", a wrong type names the allowed ones.
app.post(
  '/checked',
  { config: { connguard: { requestTimeout: 5, minBodyRate: false } satisfies RequestOverrides } },
  async () => 'ok',
)
app.post(
  '/checked-typo',
  // @ts-expect-error a typo of requestTimeout
  { config: { connguard: { requestTimout: 5 } satisfies RequestOverrides } },
  async () => 'ok',
)
app.post(
  '/checked-type',
  // @ts-expect-error a string is not a request timeout
  { config: { connguard: { requestTimeout: '5s' } satisfies RequestOverrides } },
  async () => 'ok',
)
app.post(
  '/checked-rate',
  // @ts-expect-error a rate needs bytesPerSecond
  { config: { connguard: { minBodyRate: { graceMs: 5 } } satisfies RequestOverrides } },
  async () => 'ok',
)

app.get('/read', async (request) => {
  const override = request.routeOptions.config.connguard
  assertType<Equal<typeof override, ConnguardRouteConfig | undefined>>()
  const timeout: number | false | undefined = override?.requestTimeout
  return String(timeout)
})
