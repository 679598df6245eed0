/**
 * Fastify HTTP/2 over TLS drains lose nothing with a client that handles GOAWAY as RFC 9113
 * §6.8 and §8.7 describe: undici 8 (`allowH2`) requeues the requests above a GOAWAY's last
 * stream id on a new connection and retries a REFUSED_STREAM once. Node's server ignores every
 * stream opened after its first GOAWAY (test/drain-load.test.ts pins that, and counts what
 * Node's own http2 client loses to it); with undici 8 the drain must fail no request on a
 * connection the client had open, and end within the idle grace plus the longest request,
 * never at `drainTimeout`. A new connection the closed listening socket refuses is not such a
 * failure (a load balancer sends it elsewhere): ECONNREFUSED, or, on a busy machine, ECONNRESET
 * at connect, when the kernel had completed the handshake but Fastify's `server.close()` came
 * before Node accepted it. They are counted apart, in the summary.
 *
 * Runs only where undici 8 is what `undici` loads: CONNGUARD_UNDICI=8 on Node 22.19 or newer
 * (vitest.config.ts; .ci/run runs this file so on Node 22, 24 and 26). Skipped otherwise,
 * the reason in the test's name.
 */
import { createRequire } from 'node:module'
import { performance } from 'node:perf_hooks'
import { afterEach, describe, expect, it } from 'vitest'
import {
  dispatcherLoad,
  fastifyServedWith,
  type LoadDispatcher,
  type LoadFailure,
} from './helpers/drain-load.js'
import { sleep } from './helpers/records.js'
import { clientTlsOptions } from './helpers/tls.js'

const DRAINS = 10
const LOAD_MS = 300
const LOOPS = 12
const SESSIONS = 4
/** The plugin's default `drainIdleGrace`. */
const IDLE_GRACE_MS = 1_000
/** The longest request (a 1 ms handler) plus a loaded 2-core machine's margin. */
const LONGEST_REQUEST_MARGIN_MS = 1_500
/** The plugin's default `drainTimeout`: a drain that reached it failed this test long before. */
const DRAIN_TIMEOUT_MS = 30_000

type PoolClass = new (
  origin: string,
  options: Record<string, unknown>,
) => LoadDispatcher & { on(event: 'connect', listener: () => void): unknown }

/** The undici `undici` resolves to here, and which major it is (from the file Node loaded). */
async function loadUndici(): Promise<{ Pool: PoolClass | null; skip: string | null }> {
  try {
    const undici = (await import('undici')) as unknown as { Pool: PoolClass }
    const majors = Object.keys(createRequire(import.meta.url).cache)
      .map(
        (file) =>
          /[\\/]undici@(\d+)\.\d+\.\d+[\\/]node_modules[\\/]undici[\\/]index\.js$/.exec(file)?.[1],
      )
      .filter((major) => major !== undefined)
    if (majors.length === 1 && majors[0] === '8') return { Pool: undici.Pool, skip: null }
    return {
      Pool: null,
      skip: `undici ${majors.join(', ') || '?'} loaded; needs undici 8 (CONNGUARD_UNDICI=8, Node >= 22.19)`,
    }
  } catch (err) {
    return {
      Pool: null,
      skip: `undici did not load on Node ${process.versions.node}: ${(err as Error).message}`,
    }
  }
}

const { Pool, skip } = await loadUndici()
if (skip !== null) console.info(`drain-h2-undici skipped: ${skip}`)

const cleanups: (() => unknown)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

describe.skipIf(skip !== null)(
  `Fastify HTTP/2 over TLS, undici 8 allowH2${skip === null ? '' : ` (skipped: ${skip})`}`,
  () => {
    it(`${DRAINS} drains under load: no request fails on an open connection; each drain ends within the idle grace plus the longest request, none forced`, async () => {
      if (Pool === null) throw new Error('unreachable: skipped without undici 8')
      let ok = 0
      let unavailable = 0
      let handled = 0
      let sessions = 0
      const connectRefused: Record<string, number> = {}
      const failures: Record<string, number> = {}
      const details: LoadFailure[] = []
      const durations: number[] = []
      const forced: number[] = []
      for (let i = 0; i < DRAINS; i++) {
        const served = await fastifyServedWith(true, cleanups)
        served.app.server.on('session', () => sessions++)
        let t0 = Number.NaN
        const pool = new Pool(`https://127.0.0.1:${served.port}`, {
          allowH2: true,
          connections: SESSIONS,
          // A session takes LOOPS / SESSIONS streams at once, so the load spreads over
          // SESSIONS sessions (undici fills one session up to 100 streams otherwise).
          h2Options: { maxConcurrentStreams: LOOPS / SESSIONS },
          connect: clientTlsOptions,
        })
        const load = dispatcherLoad(pool, LOOPS, {
          // Where the drain was when a request failed: the phase and ms since app.close().
          context: () => ({
            drain: i,
            phase: served.app.connguard.drainPhase,
            ms: Math.round(performance.now() - t0),
          }),
        })
        // Stops the loops should an assertion or the close throw before `load.stop()` below.
        cleanups.push(() => load.stop().catch(() => {}))
        await sleep(LOAD_MS)
        t0 = performance.now()
        await served.shutdown()
        durations.push(performance.now() - t0)
        // drain() again returns the drain app.close() ran: its result.
        forced.push((await served.app.connguard.drain()).forced)
        const r = await load.stop()
        ok += r.ok
        unavailable += r.unavailable
        for (const [code, n] of Object.entries(r.connectRefused))
          connectRefused[code] = (connectRefused[code] ?? 0) + n
        handled += served.handled()
        for (const [code, n] of Object.entries(r.failures))
          failures[code] = (failures[code] ?? 0) + n
        details.push(...load.details)
        for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
      }
      const summary = JSON.stringify({
        ok,
        unavailable,
        handled,
        sessions,
        connectRefused,
        durations: durations.map(Math.round),
        failures,
        details: details.slice(0, 20),
      })
      expect(failures, summary).toEqual({})
      // Every request the application handled reached the client.
      expect(ok, summary).toBe(handled)
      // The load did run, over several sessions per drain.
      expect(ok, summary).toBeGreaterThan(DRAINS * 10)
      expect(sessions, summary).toBeGreaterThanOrEqual(DRAINS * 2)
      expect(forced, summary).toEqual(Array(DRAINS).fill(0))
      for (const ms of durations) {
        expect(ms, summary).toBeLessThan(IDLE_GRACE_MS + LONGEST_REQUEST_MARGIN_MS)
        expect(ms).toBeLessThan(DRAIN_TIMEOUT_MS)
      }
      console.info(`drain-h2-undici: ${summary}`)
    }, 60_000)
  },
)
