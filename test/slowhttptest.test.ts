/**
 * connguard against a real attack tool: Debian's `slowhttptest` (1.8.x) run as a child
 * process against a guarded Fastify server on 127.0.0.1, one test per attack mode:
 *
 * - `-H` slowloris: request heads that never end     → `request_headers_timeout`
 * - `-B` slow body (R-U-Dead-Yet): bodies that trickle → `min_request_body_data_rate`
 * - `-X` slow read: a tiny receive window on a 5 MB response → `min_response_data_rate`
 *
 * While the tool runs, a legitimate client (node:http, a fresh connection per request)
 * asks for `GET /` every 200 ms. Each test asserts that (a) the legitimate client keeps
 * being served, (b) the tool's own report (its CSV, written with `-g -o`) shows its
 * connections being closed rather than held at the maximum, and (c) the tracker closed the
 * tool's connections with the reason that mode's deadline gives.
 *
 * Bounded: at most 200 connections per run, the tool's test length is 10 s and the process
 * is killed by its pid (SIGINT, then SIGKILL) at a hard timeout; 127.0.0.1 only.
 *
 * Where the binary is missing (`apt-get install slowhttptest`; .ci/run installs it): with
 * `CI` set the suite FAILS with a message saying so (CI must not silently lose this
 * coverage); elsewhere it is skipped, with a console warning naming the missing binary.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process'
import { mkdtempSync, readFileSync, rmSync } from 'node:fs'
import http from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import type { ConnguardFastifyOptions } from '@connguard/fastify'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { type GuardedApp, startGuarded, stopApps } from './helpers/fastify-app.js'
import { sleep } from './helpers/records.js'

const BINARY = 'slowhttptest'

/** The tool's version line, or null when it cannot be started. */
function probeBinary(): string | null {
  const r = spawnSync(BINARY, ['-h'], { encoding: 'utf8', timeout: 5_000 })
  if (r.error !== undefined) return null
  const line = `${r.stdout}${r.stderr}`.split('\n').find((l) => /version/i.test(l))
  return line?.trim() ?? 'slowhttptest (version unknown)'
}

const version = probeBinary()
const missing = version === null
if (missing && !process.env.CI) {
  console.warn(
    `test/slowhttptest.test.ts SKIPPED: '${BINARY}' is not installed ` +
      '(apt-get install slowhttptest). With CI set, this suite fails instead.',
  )
}

/** Guard settings: short deadlines, so each attack is cut within a couple of seconds. */
const GUARD: ConnguardFastifyOptions = {
  headersTimeout: 2_000,
  keepAliveTimeout: 5_000,
  minBodyRate: { bytesPerSecond: 1_000, graceMs: 1_000 },
  minResponseRate: { bytesPerSecond: 10_000, graceMs: 1_000 },
  sweepInterval: 100,
  drainTimeout: 1_000,
}

/** Body of `GET /big`: large enough that the kernel cannot take it all up front. */
const BIG = Buffer.alloc(5 * 1024 * 1024, 'x')

/** Connections the tool opens per run, and how fast. */
const CONNECTIONS = 200
const RATE = 100
/** The tool's own test length (-l), seconds; it also stops once every connection closed. */
const TEST_LENGTH_S = 10
/** Killed by pid after this, whatever it is doing. */
const HARD_TIMEOUT_MS = (TEST_LENGTH_S + 5) * 1_000

/** One row of the tool's CSV: its socket counts at each second of the test. */
interface CsvRow {
  seconds: number
  closed: number
  pending: number
  connected: number
  /** The tool writes the connection target here while its probe gets an answer, 0 when not. */
  serviceAvailable: number
}

interface ToolRun {
  args: string[]
  exitCode: number | null
  signal: NodeJS.Signals | null
  killed: boolean
  elapsedMs: number
  /** stdout + stderr without terminal escapes. */
  output: string
  /** `Exit status:` line of the final report. */
  exitStatus: string | null
  /** The last `slow HTTP test status` block printed. */
  lastStatus: Record<string, string>
  rows: CsvRow[]
}

const running = new Set<ChildProcess>()

/** Run the tool in a scratch directory; kill it by pid at the hard timeout. */
function runTool(args: string[]): Promise<ToolRun> {
  const dir = mkdtempSync(join(tmpdir(), 'connguard-slowhttptest-'))
  const fullArgs = [...args, '-g', '-o', join(dir, 'report')]
  const started = performance.now()
  const child = spawn(BINARY, fullArgs, { cwd: dir, stdio: ['ignore', 'pipe', 'pipe'] })
  running.add(child)
  let output = ''
  child.stdout?.setEncoding('utf8').on('data', (s: string) => {
    output += s
  })
  child.stderr?.setEncoding('utf8').on('data', (s: string) => {
    output += s
  })
  let killed = false
  const hard = setTimeout(() => {
    killed = true
    killChild(child)
  }, HARD_TIMEOUT_MS)
  return new Promise((resolve, reject) => {
    child.once('error', (err) => {
      clearTimeout(hard)
      running.delete(child)
      rmSync(dir, { recursive: true, force: true })
      reject(err)
    })
    child.once('close', (exitCode, signal) => {
      clearTimeout(hard)
      running.delete(child)
      const text = stripAnsi(output)
      let rows: CsvRow[] = []
      try {
        rows = parseCsv(readFileSync(join(dir, 'report.csv'), 'utf8'))
      } catch {
        // No CSV (killed before writing it): the assertions on rows report it.
      }
      rmSync(dir, { recursive: true, force: true })
      resolve({
        args: fullArgs,
        exitCode,
        signal,
        killed,
        elapsedMs: performance.now() - started,
        output: text,
        exitStatus: /Exit status:\s*(.+)/.exec(text)?.[1]?.trim() ?? null,
        lastStatus: lastStatusBlock(text),
        rows,
      })
    })
  })
}

/** SIGINT (the tool then writes its reports), SIGKILL a second later if still there. */
function killChild(child: ChildProcess): void {
  if (child.pid === undefined || child.exitCode !== null || child.signalCode !== null) return
  const pid = child.pid
  try {
    process.kill(pid, 'SIGINT')
  } catch {
    return
  }
  setTimeout(() => {
    if (child.exitCode === null && child.signalCode === null) {
      try {
        process.kill(pid, 'SIGKILL')
      } catch {
        // Already gone.
      }
    }
  }, 1_000).unref()
}

// biome-ignore lint/suspicious/noControlCharactersInRegex: terminal escapes are the point
const ANSI = /\x1b\[[0-9;]*[A-Za-z]/g
const stripAnsi = (s: string): string => s.replace(ANSI, '')

/** `Seconds,Closed,Pending,Connected,Service Available` (1.8.x), by header name. */
function parseCsv(text: string): CsvRow[] {
  const lines = text.trim().split('\n')
  const header = (lines.shift() ?? '').split(',').map((h) => h.trim().toLowerCase())
  const col = (name: string) => {
    const i = header.indexOf(name)
    if (i < 0) throw new Error(`slowhttptest CSV has no '${name}' column: ${header.join(',')}`)
    return i
  }
  const idx = {
    seconds: col('seconds'),
    closed: col('closed'),
    pending: col('pending'),
    connected: col('connected'),
    serviceAvailable: col('service available'),
  }
  return lines
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const cells = l.split(',').map(Number)
      return {
        seconds: cells[idx.seconds] ?? Number.NaN,
        closed: cells[idx.closed] ?? Number.NaN,
        pending: cells[idx.pending] ?? Number.NaN,
        connected: cells[idx.connected] ?? Number.NaN,
        serviceAvailable: cells[idx.serviceAvailable] ?? Number.NaN,
      }
    })
}

/** `name: value` pairs of the last status block the tool printed. */
function lastStatusBlock(text: string): Record<string, string> {
  const at = text.lastIndexOf('slow HTTP test status on')
  if (at < 0) return {}
  const block: Record<string, string> = {}
  const head = /slow HTTP test status on (\d+)th second/.exec(text.slice(at))
  if (head?.[1] !== undefined) block.second = head[1]
  for (const line of text.slice(at).split('\n').slice(1, 10)) {
    const m = /^\s*([a-z ]+):\s*(\S+)\s*$/.exec(line)
    if (m?.[1] !== undefined && m[2] !== undefined) block[m[1].trim()] = m[2]
  }
  return block
}

interface LegitResult {
  ok: number
  failed: number
  errors: string[]
}

/** One `GET /` on a fresh connection; true when answered 200 'ok' within 2 s. */
function legitRequest(port: number): Promise<true | string> {
  return new Promise((resolve) => {
    const req = http.get(
      { host: '127.0.0.1', port, path: '/', agent: false, timeout: 2_000 },
      (res) => {
        let body = ''
        res.setEncoding('utf8')
        res.on('data', (c: string) => {
          body += c
        })
        res.on('end', () =>
          resolve(res.statusCode === 200 && body === 'ok' ? true : `${res.statusCode} ${body}`),
        )
        res.on('error', (err) => resolve(err.message))
      },
    )
    req.on('timeout', () => req.destroy(new Error('no answer within 2 s')))
    req.on('error', (err) => resolve(err.message))
  })
}

/** A request every `everyMs` until `stop()`; resolves with the tally once stopped. */
function legitClient(port: number, everyMs = 200): { stop: () => Promise<LegitResult> } {
  const result: LegitResult = { ok: 0, failed: 0, errors: [] }
  let stopped = false
  const loop = (async () => {
    while (!stopped) {
      const tick = performance.now()
      const r = await legitRequest(port)
      if (r === true) result.ok++
      else {
        result.failed++
        if (result.errors.length < 5) result.errors.push(r)
      }
      await sleep(Math.max(0, everyMs - (performance.now() - tick)))
    }
  })()
  return {
    stop: async () => {
      stopped = true
      await loop
      return result
    },
  }
}

async function startTarget(): Promise<GuardedApp> {
  return startGuarded(GUARD, {
    setup: (app) => {
      // slowhttptest -B posts application/x-www-form-urlencoded: read it like any body
      // (without a parser Fastify answers 415 before reading, and the attack tests nothing).
      app.addContentTypeParser(
        'application/x-www-form-urlencoded',
        { parseAs: 'buffer' },
        (_req, body, done) => done(null, body),
      )
      app.get('/big', async (_request, reply) => {
        reply.header('content-type', 'application/octet-stream')
        return BIG
      })
    },
  })
}

interface ModeCase {
  mode: '-H' | '-B' | '-X'
  name: string
  path: string
  extra: string[]
  reason: string
}

const summaries: string[] = []

afterEach(async () => {
  for (const child of running) killChild(child)
  await stopApps()
})

afterAll(() => {
  if (summaries.length > 0) console.log(['slowhttptest runs:', ...summaries].join('\n'))
})

const MODES: ModeCase[] = [
  {
    mode: '-H',
    name: 'slowloris',
    path: '/',
    // A header line every second: an unguarded server would keep these for ever.
    extra: ['-i', '1'],
    reason: 'request_headers_timeout',
  },
  {
    mode: '-B',
    name: 'slow body',
    path: '/upload',
    // Content-Length 8192, then a few bytes every second.
    extra: ['-i', '1', '-s', '8192'],
    reason: 'min_request_body_data_rate',
  },
  {
    mode: '-X',
    name: 'slow read',
    path: '/big',
    // Advertised window 512..1024 bytes, 32 bytes read every second.
    extra: ['-w', '512', '-y', '1024', '-n', '1', '-z', '32', '-k', '1'],
    reason: 'min_response_data_rate',
  },
]

describe.skipIf(missing && !process.env.CI)(`${BINARY} against a guarded Fastify server`, () => {
  if (missing) {
    it(`${BINARY} is installed`, () => {
      throw new Error(
        `'${BINARY}' not found on PATH and CI is set: install it (apt-get install -y slowhttptest; .ci/run does) — this suite must not be skipped in CI`,
      )
    })
    return
  }

  it.each(MODES)(
    '$mode ($name): legit client served, tool connections closed with $reason',
    async ({ mode, path, extra, reason }) => {
      const { app, port } = await startTarget()
      const legit = legitClient(port)
      const run = await runTool([
        mode,
        '-c',
        String(CONNECTIONS),
        '-r',
        String(RATE),
        '-l',
        String(TEST_LENGTH_S),
        '-p',
        '2',
        '-u',
        `http://127.0.0.1:${port}${path}`,
        ...extra,
      ])
      const legitResult = await legit.stop()
      const snap = app.connguard.snapshot()
      const last = run.rows.at(-1)
      const total = legitResult.ok + legitResult.failed
      summaries.push(
        [
          `${mode}: ${BINARY} ${run.args.join(' ')}`,
          `  tool: exit ${run.exitCode ?? run.signal}${run.killed ? ' (killed)' : ''} after ${(run.elapsedMs / 1000).toFixed(1)} s; "${run.exitStatus}"; last status ${JSON.stringify(run.lastStatus)}`,
          `  csv: ${run.rows.map((r) => `${r.seconds}s c${r.closed}/p${r.pending}/k${r.connected}/a${r.serviceAvailable}`).join(' ')}`,
          `  legit: ${legitResult.ok}/${total} ok ${legitResult.errors.length > 0 ? JSON.stringify(legitResult.errors) : ''}`,
          `  tracker: closedByReason ${JSON.stringify(snap.closedByReason)}; live ${snap.total}`,
        ].join('\n'),
      )

      // (a) the legitimate client kept being served.
      expect(total, 'legit client made requests').toBeGreaterThan(5)
      expect(legitResult.ok / total, JSON.stringify(legitResult)).toBeGreaterThanOrEqual(0.95)

      // (b) the tool's own report: connections closed, not held at the maximum.
      expect(run.rows.length, `no CSV rows; output:\n${run.output.slice(-2000)}`).toBeGreaterThan(0)
      expect(last?.closed, 'tool reports closed connections').toBeGreaterThan(0)
      expect((last?.pending ?? 0) + (last?.connected ?? 0)).toBeLessThan(CONNECTIONS)
      // Its probe was answered throughout.
      expect(
        run.rows.every((r) => r.serviceAvailable > 0),
        'tool saw service unavailable',
      ).toBe(true)

      // (c) the tracker closed them for this mode's reason.
      expect(snap.closedByReason[reason as keyof typeof snap.closedByReason] ?? 0).toBeGreaterThan(
        CONNECTIONS * 0.9,
      )
    },
  )
})
