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
 * For -X the cut must reset the connection: a plain close would leave the FIN queued behind
 * megabytes the kernel still holds for the slow reader, and the tool would never see it.
 *
 * Bounded: at most 200 connections per run (50 for -X), a test length of at most 10 s, the
 * process killed by its pid (SIGINT, then SIGKILL) 5 s past that; 127.0.0.1 only. ~16 s.
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
import type { CloseReason } from '@connguard/core'
import type { ConnguardFastifyOptions } from '@connguard/fastify'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { type GuardedApp, startGuarded, stopApps } from './helpers/fastify-app.js'
import { sleep } from './helpers/records.js'

const BINARY = 'slowhttptest'

/** `slowhttptest <version>`, or null when it cannot be started. */
function probeBinary(): string | null {
  const r = spawnSync(BINARY, ['-h'], { encoding: 'utf8', timeout: 5_000 })
  if (r.error !== undefined) return null
  const v = /version\s+(\S+)/i.exec(`${r.stdout}${r.stderr}`)?.[1]
  return `${BINARY} ${v ?? '(version unknown)'}`
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

/** Connections per second the tool opens. */
const RATE = 100
/** Extra seconds past the tool's own test length (-l) before it is killed by pid. */
const HARD_TIMEOUT_SLACK_MS = 5_000

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
  rows: CsvRow[]
  /** Most orphaned TCP sockets (closed by their process, still held by the kernel) seen during the run, machine-wide; null where /proc/net/sockstat is unreadable. */
  maxOrphans: number | null
  /** Most kernel TCP memory seen during the run, MiB, machine-wide. */
  maxTcpMemMiB: number | null
}

const running = new Set<ChildProcess>()

/** Orphaned sockets and TCP memory pages from /proc/net/sockstat (Linux), or null. */
function sockstat(): { orphans: number; memPages: number } | null {
  try {
    const line = readFileSync('/proc/net/sockstat', 'utf8')
      .split('\n')
      .find((l) => l.startsWith('TCP:'))
    const orphans = /orphan (\d+)/.exec(line ?? '')?.[1]
    const mem = /mem (\d+)/.exec(line ?? '')?.[1]
    return orphans === undefined || mem === undefined
      ? null
      : { orphans: Number(orphans), memPages: Number(mem) }
  } catch {
    return null
  }
}

/**
 * Run the tool (test length `lengthS`) in a scratch directory; kill it by pid if it is
 * still running `HARD_TIMEOUT_SLACK_MS` after that.
 */
function runTool(args: string[], lengthS: number): Promise<ToolRun> {
  const dir = mkdtempSync(join(tmpdir(), 'connguard-slowhttptest-'))
  const fullArgs = [...args, '-l', String(lengthS), '-g', '-o', join(dir, 'report')]
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
  const hard = setTimeout(
    () => {
      killed = true
      killChild(child)
    },
    lengthS * 1_000 + HARD_TIMEOUT_SLACK_MS,
  )
  let maxOrphans: number | null = null
  let maxMemPages: number | null = null
  const sample = setInterval(() => {
    const s = sockstat()
    if (s === null) return
    maxOrphans = Math.max(maxOrphans ?? 0, s.orphans)
    maxMemPages = Math.max(maxMemPages ?? 0, s.memPages)
  }, 250)
  return new Promise((resolve, reject) => {
    child.once('error', (err) => {
      clearTimeout(hard)
      clearInterval(sample)
      running.delete(child)
      rmSync(dir, { recursive: true, force: true })
      reject(err)
    })
    child.once('close', (exitCode, signal) => {
      clearTimeout(hard)
      clearInterval(sample)
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
        rows,
        maxOrphans,
        maxTcpMemMiB: maxMemPages === null ? null : Math.round((maxMemPages * 4096) / 2 ** 20),
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
  /** -c: connections the tool opens. */
  connections: number
  /** -l: the tool's test length, seconds (it also stops once every connection is closed). */
  lengthS: number
  extra: string[]
  reason: CloseReason
  /**
   * Whether the tool can see the server's close within the run. False for -X, a KNOWN
   * LIBRARY BUG: the cut `socket.destroy()`s a connection whose kernel send buffer still
   * holds ~4 MB; the kernel keeps that orphaned socket and goes on feeding the slow reader
   * (its FIN queued behind the data), so the attacker sees its connection alive long after
   * the tracker recorded the close. A reset (`socket.resetAndDestroy()`) ends it at once.
   * Once packages/core/src/http1.ts cuts such connections with a reset, set this to true.
   */
  toolSeesCloses: boolean
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
    connections: 200,
    lengthS: 10,
    // A header line every second: an unguarded server keeps these until its own timers.
    extra: ['-i', '1'],
    reason: 'request_headers_timeout',
    toolSeesCloses: true,
  },
  {
    mode: '-B',
    name: 'slow body',
    path: '/upload',
    connections: 200,
    lengthS: 10,
    // Content-Length 8192, then a few bytes of body every second.
    extra: ['-i', '1', '-s', '8192'],
    reason: 'min_request_body_data_rate',
    toolSeesCloses: true,
  },
  {
    mode: '-X',
    name: 'slow read',
    path: '/big',
    // Fewer connections: each one pins ~4 MB of kernel send buffer on the server side until
    // it is cut, ~190 MB in all, on a shared machine.
    connections: 50,
    // As long as the other modes: the tool stops by itself once no connection is left, so
    // the length is only a margin for a loaded machine.
    lengthS: 10,
    // Receive window 512..1024 bytes, at most 1 KB read per second: a 5 MB response fills
    // the server's send buffer and then moves at ~1 KB/s, far below the 10 KB/s minimum.
    extra: ['-w', '512', '-y', '1024', '-n', '1', '-z', '1024', '-k', '1'],
    reason: 'min_response_data_rate',
    toolSeesCloses: true,
  },
]

const describeTool = describe.skipIf(missing && !process.env.CI)

describeTool(`${BINARY} against a guarded Fastify server (${version ?? 'not installed'})`, () => {
  if (missing) {
    it(`${BINARY} is installed`, () => {
      throw new Error(
        `'${BINARY}' not found on PATH and CI is set: install it (apt-get install -y slowhttptest; .ci/run does); this suite must not be skipped in CI`,
      )
    })
    return
  }

  it.each(MODES)(
    '$mode ($name): legit client served, tool connections closed with $reason',
    async ({ mode, path, connections, lengthS, extra, reason, toolSeesCloses }) => {
      const { app, port, closes } = await startTarget()
      const legit = legitClient(port)
      const run = await runTool(
        [
          mode,
          '-c',
          String(connections),
          '-r',
          String(RATE),
          '-p',
          '2',
          '-u',
          `http://127.0.0.1:${port}${path}`,
          ...extra,
        ],
        lengthS,
      )
      const legitResult = await legit.stop()
      const snap = app.connguard.snapshot()
      const last = run.rows.at(-1)
      const total = legitResult.ok + legitResult.failed
      const available = run.rows.every((r) => r.serviceAvailable > 0)
      const cutAfter = closes.records
        .filter((r) => r.closeReason === reason)
        .map((r) => r.duration ?? Number.NaN)
        .sort((x, y) => x - y)
      summaries.push(
        [
          `${mode}: ${BINARY} ${run.args.join(' ')}`,
          `  tool: exit ${run.exitCode ?? run.signal}${run.killed ? ' (killed)' : ''} after ${(run.elapsedMs / 1000).toFixed(1)} s, "${run.exitStatus}"; last row: second ${last?.seconds}, closed ${last?.closed}, pending ${last?.pending}, connected ${last?.connected}, service available ${available ? 'YES' : 'NO'} throughout`,
          `  csv (s:closed/pending/connected): ${run.rows.map((r) => `${r.seconds}:${r.closed}/${r.pending}/${r.connected}`).join(' ')}`,
          `  legit client: ${legitResult.ok}/${total} ok${legitResult.errors.length > 0 ? ` ${JSON.stringify(legitResult.errors)}` : ''}`,
          `  tracker: closedByReason ${JSON.stringify(snap.closedByReason)}, live ${snap.total}; ${reason} ${cutAfter[0]?.toFixed(0)}..${cutAfter.at(-1)?.toFixed(0)} ms after accept (median ${cutAfter[cutAfter.length >> 1]?.toFixed(0)})`,
          `  kernel (machine-wide, max during run): ${run.maxOrphans} orphaned TCP sockets, ${run.maxTcpMemMiB} MiB TCP memory`,
        ].join('\n'),
      )

      // (a) The legitimate client kept being served.
      expect(total, 'legit client made requests').toBeGreaterThan(5)
      expect(legitResult.ok / total, JSON.stringify(legitResult)).toBeGreaterThanOrEqual(0.95)
      expect(available, "the tool's probe saw the service unavailable").toBe(true)

      // (c) The tracker closed (nearly) every tool connection for this mode's reason. The
      // rest of closedByReason is the legit client's and the tool's probe connections.
      expect(snap.closedByReason[reason] ?? 0, JSON.stringify(snap.closedByReason)).toBeGreaterThan(
        connections * 0.9,
      )

      // (b) The tool's own report.
      const csv = `tool CSV: ${JSON.stringify(run.rows)}; output tail:\n${run.output.slice(-1500)}`
      expect(run.rows.length, csv).toBeGreaterThan(0)
      if (toolSeesCloses) {
        // Its connections were closed, not held at the maximum: it stopped before its test
        // length because none was left. Its CSV is sampled once a second, so closes that all
        // land within the last second (the -X connections open within half a second and are
        // cut in one sweep) can miss the last row: the exit status is the tool's own count.
        expect(run.exitStatus, csv).toMatch(/No open connections left/)
        expect(run.elapsedMs, csv).toBeLessThan(lengthS * 1_000)
      } else {
        // KNOWN BUG (see toolSeesCloses): every connection the tracker closed still counts as
        // connected for the tool until its test length runs out. When this fails because
        // the tool now sees the closes, the bug is fixed: set toolSeesCloses to true.
        expect(last?.closed, `${csv}\nslow-read closes now reach the tool: bug fixed?`).toBe(0)
        expect(run.exitStatus, csv).toMatch(/Hit test time limit/)
      }
    },
  )
})
