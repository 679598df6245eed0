/**
 * HTTP/2 with other peers than a bare node:http2 server, over real sockets on 127.0.0.1:
 *
 * - Fastify `http2: true` (h2c) and `{ http2: true, https }`: connguard registered as a
 *   plugin, requests over `http2.connect` succeed and the records close with the right
 *   reason when the client closes its session (`client_closed`) or idles
 *   (`keep_alive_timeout`);
 * - a real HTTP/2 client implementation: nghttp2's `h2load` (Debian package
 *   `nghttp2-client`) drives a guarded node:http2 server, h2c and TLS, with 2000 requests
 *   over 10 sessions × 10 concurrent streams, and every request must succeed; `nghttp` and
 *   `curl --http2-prior-knowledge` make one request each.
 *
 * Where h2load/nghttp are missing (`apt-get install nghttp2-client`; .ci/run installs it):
 * with `CI` set those tests FAIL saying so; elsewhere they are skipped with a console warning.
 * curl is optional everywhere. Tools run as child processes with a hard timeout, killed by
 * their pid only.
 */
import { spawn, spawnSync } from 'node:child_process'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import type { ConnectionRecord } from '@connguard/core'
import { connguard } from '@connguard/fastify'
import Fastify, { type FastifyInstance } from 'fastify'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { printTimings, type TimingRow } from './helpers/guard-timing.js'
import {
  connectH2,
  destroyH2Clients,
  type H2Server,
  h2get,
  startH2,
  stopH2Servers,
} from './helpers/http2.js'
import {
  type CloseWatcher,
  expectConsistentRecord,
  expectCutWithin,
  waitUntil,
  watchCloses,
} from './helpers/records.js'
import { tlsOptions } from './helpers/tls.js'

const SWEEP = 50
const FAR = 30_000
const CERT = fileURLToPath(new URL('./fixtures/cert.pem', import.meta.url))

const timings: TimingRow[] = []
afterAll(() => printTimings(timings))

const MODES = [
  { mode: 'h2c', secure: false },
  { mode: 'h2 (TLS)', secure: true },
] as const

// ---- Fastify -------------------------------------------------------------------------------

interface FastifyH2 {
  app: FastifyInstance
  origin: string
  closes: CloseWatcher
}

const apps: FastifyInstance[] = []

async function startFastifyH2(secure: boolean, keepAliveTimeout: number): Promise<FastifyH2> {
  const app = (secure
    ? Fastify({ http2: true, https: tlsOptions })
    : Fastify({ http2: true })) as unknown as FastifyInstance
  apps.push(app)
  await app.register(connguard, {
    sweepInterval: SWEEP,
    keepAliveTimeout,
    headersTimeout: FAR,
    drainTimeout: 1_000,
  })
  app.get('/', async () => 'ok')
  app.get('/json', async (request) => ({
    httpVersion: request.raw.httpVersion,
    tracked: request.connguard.record?.httpVersion ?? null,
  }))
  await app.ready()
  const closes = watchCloses(app.connguard)
  const address = await app.listen({ host: '127.0.0.1', port: 0 })
  return { app, origin: address.replace('localhost', '127.0.0.1'), closes }
}

describe.each(MODES)('Fastify http2, $mode', ({ mode, secure }) => {
  afterEach(async () => {
    destroyH2Clients()
    for (const app of apps.splice(0)) await app.close()
  })

  it('serves requests and records client_closed when the client ends its session', async () => {
    const { app, origin, closes } = await startFastifyH2(secure, FAR)
    const client = await connectH2(origin)
    const results = await Promise.all([h2get(client, '/'), h2get(client, '/'), h2get(client, '/')])
    for (const res of results) expect(res).toMatchObject({ status: 200, body: 'ok' })
    const json = JSON.parse((await h2get(client, '/json')).body)
    expect(json.httpVersion).toBe('2.0')
    expect(app.connguard.snapshot()).toMatchObject({ total: 1, idle: 1 })

    client.session.close()
    const closed = await closes.next(undefined, 5_000)
    expect(closed.closeReason).toBe('client_closed')
    expect(closed.httpVersion).toBe('2.0')
    expect(closed.requests).toBe(4)
    expect(closed.peakConcurrentStreams).toBeGreaterThanOrEqual(1)
    expect(closed.secure).toBe(secure)
    if (secure) expect(closed.tls?.alpnProtocol).toBe('h2')
    expectConsistentRecord(closed)
  })

  it('closes an idle session at keepAliveTimeout: keep_alive_timeout', async () => {
    const KEEP_ALIVE = 500
    const { origin, closes } = await startFastifyH2(secure, KEEP_ALIVE)
    const client = await connectH2(origin)
    const res = await h2get(client, '/')
    expect(res).toMatchObject({ status: 200, body: 'ok' })
    const closed = await closes.next(undefined, 5_000)
    const clientClosedAt = await client.closed
    const idleMs = closes.closedAt(closed) - closes.lastEntered(closed, 'idle')
    expect(closed.closeReason).toBe('keep_alive_timeout')
    expect(closed.requests).toBe(1)
    expect(client.goawayCode()).toBe(0)
    expectCutWithin(idleMs, KEEP_ALIVE, SWEEP, 'server')
    expectCutWithin(clientClosedAt - res.endedAt, KEEP_ALIVE, SWEEP, 'client')
    expectConsistentRecord(closed)
    timings.push({
      suite: `Fastify ${mode}`,
      scenario: 'idle session',
      deadlineMs: KEEP_ALIVE,
      clientMs: clientClosedAt - res.endedAt,
      serverMs: idleMs,
      reason: closed.closeReason,
    })
  })
})

// ---- real peers: h2load, nghttp, curl --------------------------------------------------------

/** First line of `cmd --version`, or null when it cannot be started. */
function probe(cmd: string): string | null {
  const r = spawnSync(cmd, ['--version'], { encoding: 'utf8', timeout: 5_000 })
  if (r.error !== undefined || r.status !== 0) return null
  return `${r.stdout}${r.stderr}`.split('\n')[0]?.trim() || cmd
}

const h2load = probe('h2load')
const nghttp = probe('nghttp')
const curl = probe('curl')
const curlHasHttp2 =
  curl !== null && /\bHTTP2\b/.test(spawnSync('curl', ['--version'], { encoding: 'utf8' }).stdout)
for (const [name, version] of [
  ['h2load', h2load],
  ['nghttp', nghttp],
] as const) {
  if (version === null && !process.env.CI) {
    console.warn(
      `test/http2-peers.test.ts: '${name}' tests SKIPPED: not installed ` +
        '(apt-get install nghttp2-client). With CI set, they fail instead.',
    )
  }
}

/** Skipped where the tool is missing, unless CI is set: then the test runs and fails. */
const withTool = (version: string | null) => (version !== null || process.env.CI ? it : it.skip)

interface Run {
  code: number | null
  signal: NodeJS.Signals | null
  stdout: string
  stderr: string
  ms: number
}

const children = new Set<ReturnType<typeof spawn>>()
afterAll(() => {
  for (const child of children) {
    if (child.pid !== undefined && child.exitCode === null) {
      try {
        process.kill(child.pid, 'SIGKILL')
      } catch {
        // Exited meanwhile.
      }
    }
  }
})

/** Run `cmd args`; killed by its pid (SIGTERM, then SIGKILL) after `timeoutMs`. */
function run(cmd: string, args: string[], timeoutMs: number): Promise<Run> {
  return new Promise((resolve, reject) => {
    const started = performance.now()
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
    children.add(child)
    let stdout = ''
    let stderr = ''
    child.stdout.setEncoding('utf8').on('data', (s: string) => {
      stdout += s
    })
    child.stderr.setEncoding('utf8').on('data', (s: string) => {
      stderr += s
    })
    const term = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGTERM')
    }, timeoutMs)
    const kill = setTimeout(() => {
      if (child.pid !== undefined && child.exitCode === null) process.kill(child.pid, 'SIGKILL')
    }, timeoutMs + 2_000)
    child.on('error', (err) => {
      clearTimeout(term)
      clearTimeout(kill)
      children.delete(child)
      reject(new Error(`${cmd} could not be started: ${err.message}`))
    })
    child.on('close', (code, signal) => {
      clearTimeout(term)
      clearTimeout(kill)
      children.delete(child)
      resolve({ code, signal, stdout, stderr, ms: performance.now() - started })
    })
  })
}

/** h2load's `requests: N total, N started, N done, N succeeded, N failed, ...` line. */
function parseRequests(output: string): Record<string, number> | null {
  const line = output.split('\n').find((l) => l.startsWith('requests:'))
  if (line === undefined) return null
  const counts: Record<string, number> = {}
  for (const m of line.matchAll(/(\d+) (\w+)/g)) counts[m[2] as string] = Number(m[1])
  return counts
}

describe.each(MODES)(
  'real HTTP/2 peers against a guarded node:http2 server, $mode',
  ({ mode, secure }) => {
    afterEach(async () => {
      destroyH2Clients()
      await stopH2Servers()
    })

    const guarded = (): Promise<H2Server> =>
      startH2({ sweepInterval: SWEEP, keepAliveTimeout: 5_000, headersTimeout: 5_000 }, { secure })

    withTool(h2load)('h2load: 2000 requests, 10 sessions × 10 streams, all succeed', async () => {
      expect(h2load, 'h2load is not installed (apt-get install nghttp2-client)').not.toBeNull()
      const h2 = await guarded()
      const N = 2_000
      const C = 10
      const result = await run(
        'h2load',
        ['-n', String(N), '-c', String(C), '-m', '10', `${h2.origin}/`],
        20_000,
      )
      const output = `${result.stdout}\n${result.stderr}`
      const counts = parseRequests(output)
      expect(counts, `h2load output:\n${output}`).not.toBeNull()
      expect(counts, `h2load output:\n${output}`).toMatchObject({
        total: N,
        started: N,
        done: N,
        succeeded: N,
        failed: 0,
      })
      expect(result.code, output).toBe(0)
      expect(output).toMatch(new RegExp(`status codes: ${N} 2xx`))
      if (secure) expect(output).toMatch(/Application protocol: h2/)

      // h2load hangs up every session when done: all of them closed by the client.
      await waitUntil(() => h2.closes.records.length === C, {
        timeoutMs: 5_000,
        what: `${C} sessions closed`,
      })
      const records = h2.closes.records as ConnectionRecord[]
      expect(records.reduce((sum, r) => sum + r.requests, 0)).toBe(N)
      for (const rec of records) {
        expect(rec.httpVersion).toBe('2.0')
        expect(rec.closeReason, JSON.stringify(rec)).toBe('client_closed')
        expect(rec.peakConcurrentStreams).toBeGreaterThanOrEqual(1)
        expect(rec.peakConcurrentStreams).toBeLessThanOrEqual(10)
        expectConsistentRecord(rec)
      }
      expect(Math.max(...records.map((r) => r.peakConcurrentStreams))).toBeGreaterThan(1)
      expect(h2.tracker.snapshot().total).toBe(0)
      timings.push({
        suite: mode,
        scenario: `h2load -n ${N} -c ${C} -m 10: all ${N} succeeded`,
        deadlineMs: null,
        clientMs: result.ms,
        serverMs: null,
        reason: records[0]?.closeReason ?? null,
      })
    })

    withTool(nghttp)('nghttp: one request', async () => {
      expect(nghttp, 'nghttp is not installed (apt-get install nghttp2-client)').not.toBeNull()
      const h2 = await guarded()
      const result = await run('nghttp', ['-s', `${h2.origin}/`], 10_000)
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout).toContain('ok')
      const closed = await h2.closes.next(undefined, 5_000)
      expect(closed.httpVersion).toBe('2.0')
      expect(closed.requests).toBe(1)
      expect(closed.closeReason).toBe('client_closed')
      expectConsistentRecord(closed)
    })

    ;(curlHasHttp2 ? it : it.skip)('curl --http2: one request', async () => {
      const h2 = await guarded()
      // TLS: trust exactly the fixture certificate (issued to localhost), ALPN h2.
      const target = secure
        ? [
            '--http2',
            '--cacert',
            CERT,
            '--resolve',
            `localhost:${h2.port}:127.0.0.1`,
            `https://localhost:${h2.port}/`,
          ]
        : ['--http2-prior-knowledge', `${h2.origin}/`]
      const result = await run(
        'curl',
        ['-sS', '--max-time', '5', '-w', '\\n%{http_version} %{http_code}', ...target],
        10_000,
      )
      expect(result.code, result.stderr).toBe(0)
      expect(result.stdout.trim().split('\n')).toEqual(['ok', '2 200'])
      const closed = await h2.closes.next(undefined, 5_000)
      expect(closed.httpVersion).toBe('2.0')
      expect(closed.requests).toBe(1)
      expect(closed.closeReason).toBe('client_closed')
      expectConsistentRecord(closed)
    })
  },
)
