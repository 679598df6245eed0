/**
 * Connection churn, shared by the churn benchmark (bench/churn.mjs) and its small version in
 * the test suite (test/churn.test.ts): the clients, and what the server side counts.
 *
 * Clients (node:net / node:tls only, 127.0.0.1), each one connection with one expected end:
 *
 * | kind        | does                                                        | the guard records         |
 * |-------------|-------------------------------------------------------------|---------------------------|
 * | keepAlive   | 3 GETs on one connection, then FIN                          | `client_closed`           |
 * | oneShot     | 1 GET with `Connection: close`, read to the server's close  | `client_closed`           |
 * | https       | TLS (full handshake), 2 GETs, then FIN                      | `client_closed`           |
 * | silent      | TCP connect, nothing sent                                   | `request_headers_timeout` |
 * | slowloris   | half a request head, never finished                         | `request_headers_timeout` |
 * | stalledTls  | TCP to the TLS port: nothing, or 9 bytes of a ClientHello   | `tls_handshake_timeout`   |
 * | idleCut     | 1 GET, then idle until the server closes                    | `keep_alive_timeout`      |
 *
 * The server answers every GET with `ok` (Content-Length 2). Every client gives up after
 * `timeoutMs` (counted as `timeout`), so a batch always ends.
 */
import net from 'node:net'
import tls from 'node:tls'

export const HOST = '127.0.0.1'

export const KINDS = [
  'keepAlive',
  'oneShot',
  'https',
  'silent',
  'slowloris',
  'stalledTls',
  'idleCut',
]

/** The close reason the guard records for each kind. */
export const EXPECTED_REASON = {
  keepAlive: 'client_closed',
  oneShot: 'client_closed',
  https: 'client_closed',
  silent: 'request_headers_timeout',
  slowloris: 'request_headers_timeout',
  stalledTls: 'tls_handshake_timeout',
  idleCut: 'keep_alive_timeout',
}

/** Parts of each twelve connections: 7 healthy (2 of them over TLS), 5 timed out. */
export const DEFAULT_MIX = {
  keepAlive: 3,
  oneShot: 3,
  https: 1,
  silent: 1,
  slowloris: 1,
  stalledTls: 1,
  idleCut: 2,
}

const GET = Buffer.from(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`, 'latin1')
const GET_CLOSE = Buffer.from(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`)
const HALF_HEAD = Buffer.from(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nX-Slow: `, 'latin1')
/** A TLS record header and the start of a ClientHello: the handshake never completes. */
const PARTIAL_CLIENT_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])
/** The end of each response the server sends (`ok`, Content-Length 2). */
const RESPONSE_END = '\r\n\r\nok'

/** `n` kinds in a fixed interleaved order following `mix` (deterministic, no RNG). */
export function mixOf(n, mix = DEFAULT_MIX) {
  const kinds = KINDS.filter((k) => (mix[k] ?? 0) > 0)
  const total = kinds.reduce((s, k) => s + mix[k], 0)
  const credit = Object.fromEntries(kinds.map((k) => [k, 0]))
  const out = []
  for (let i = 0; i < n; i++) {
    // Smooth weighted round robin: every kind spread evenly through the batch.
    let best = kinds[0]
    for (const k of kinds) {
      credit[k] += mix[k]
      if (credit[k] > credit[best]) best = k
    }
    credit[best] -= total
    out.push(best)
  }
  return out
}

function count(haystack, needle) {
  let n = 0
  for (let i = haystack.indexOf(needle); i >= 0; i = haystack.indexOf(needle, i + 1)) n++
  return n
}

/**
 * One client connection of `kind`. Resolves (never rejects) with `{ kind, outcome }`:
 * `ok` when it ended as its kind should (all responses, and the close by whoever should
 * close), else `unexpected`, `refused` (no connection), or `timeout`.
 */
export function runOne(kind, { port, tlsPort, timeoutMs, stalledIndex = 0 }) {
  return new Promise((resolve) => {
    const secure = kind === 'https'
    const socket = secure
      ? tls.connect({ port: tlsPort, host: HOST, rejectUnauthorized: false })
      : net.connect(kind === 'stalledTls' ? tlsPort : port, HOST)
    const want = kind === 'keepAlive' ? 3 : kind === 'https' ? 2 : 1
    let received = ''
    let responses = 0
    let connected = false
    let weEnded = false
    let settled = false
    const timer = setTimeout(() => finish('timeout'), timeoutMs)
    function finish(outcome) {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve({ kind, outcome })
    }
    socket.setNoDelay(true)
    socket.on('error', () => {})
    socket.once(secure ? 'secureConnect' : 'connect', () => {
      connected = true
      if (kind === 'keepAlive' || kind === 'https' || kind === 'idleCut') socket.write(GET)
      else if (kind === 'oneShot') socket.write(GET_CLOSE)
      else if (kind === 'slowloris') socket.write(HALF_HEAD)
      else if (kind === 'stalledTls' && stalledIndex % 2 === 1) socket.write(PARTIAL_CLIENT_HELLO)
    })
    socket.on('data', (chunk) => {
      received += chunk.toString('latin1')
      const seen = count(received, RESPONSE_END)
      if (seen === responses) return
      responses = seen
      if (kind !== 'keepAlive' && kind !== 'https') return
      if (responses < want) socket.write(GET)
      else if (!weEnded) {
        weEnded = true
        socket.end()
      }
    })
    socket.on('close', () => {
      if (!connected) return finish('refused')
      const ok =
        kind === 'keepAlive' || kind === 'https'
          ? weEnded && responses === want
          : kind === 'oneShot' || kind === 'idleCut'
            ? responses === 1
            : responses === 0
      finish(ok ? 'ok' : 'unexpected')
    })
  })
}

/**
 * Runs `kinds` (one connection each) with at most `concurrency` open at once. Resolves with
 * outcome counts per kind: `{ [kind]: { ok, unexpected, refused, timeout } }`.
 */
export async function runBatch(kinds, { port, tlsPort, concurrency = 200, timeoutMs = 20_000 }) {
  const outcomes = {}
  for (const k of KINDS) outcomes[k] = { ok: 0, unexpected: 0, refused: 0, timeout: 0 }
  let next = 0
  let stalled = 0
  const worker = async () => {
    while (next < kinds.length) {
      const kind = kinds[next++]
      const stalledIndex = kind === 'stalledTls' ? stalled++ : 0
      const r = await runOne(kind, { port, tlsPort, timeoutMs, stalledIndex })
      outcomes[r.kind][r.outcome]++
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, kinds.length) }, worker))
  return outcomes
}

/** Connections each close reason should have, for these outcome counts. */
export function expectedReasons(outcomes) {
  const out = {}
  for (const [kind, o] of Object.entries(outcomes)) {
    const n = o.ok + o.unexpected + o.timeout
    if (n > 0) out[EXPECTED_REASON[kind]] = (out[EXPECTED_REASON[kind]] ?? 0) + n
  }
  return out
}

// ---- server side --------------------------------------------------------------------------

/** `process.getActiveResourcesInfo()` counted by type: what keeps the loop alive (handles, requests, ref'd timers). */
export function activeResources() {
  const counts = {}
  for (const type of process.getActiveResourcesInfo()) counts[type] = (counts[type] ?? 0) + 1
  return counts
}

/** Listener counts per event on an emitter (a server), events with none left out. */
export function listenerCounts(emitter) {
  const counts = {}
  for (const event of emitter.eventNames()) {
    const n = emitter.listenerCount(event)
    if (n > 0) counts[String(event)] = n
  }
  return counts
}

export const sumOf = (counts) => Object.values(counts).reduce((s, n) => s + n, 0)

/** Differences between two count maps, as `type: before → after`; empty when equal. */
export function countDiff(before, after) {
  const keys = new Set([...Object.keys(before), ...Object.keys(after)])
  const out = []
  for (const k of [...keys].sort()) {
    const a = before[k] ?? 0
    const b = after[k] ?? 0
    if (a !== b) out.push(`${k}: ${a} → ${b}`)
  }
  return out
}

/** Resolves once `done()` is true (checked every 20 ms), or false after `timeoutMs`. */
export async function settle(done, timeoutMs = 10_000) {
  const until = performance.now() + timeoutMs
  while (!(await done())) {
    if (performance.now() > until) return false
    await new Promise((r) => setTimeout(r, 20))
  }
  return true
}

/** Live connections of a server (Node's count). */
export function connectionsOf(server) {
  return new Promise((resolve) => server.getConnections((_err, n) => resolve(n ?? 0)))
}
