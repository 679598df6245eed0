#!/usr/bin/env node
/**
 * Instructions the tracker's own request path costs, without a socket: the engine's
 * `requestHead` and `responseEnd` of a keep-alive GET whose head came in one read (what a
 * keep-alive request after a connection's first runs), called directly on four records of one
 * tracker (fake sockets, default options), with a sweep every 256 requests as a server's
 * timer would run one (it empties the list of requests waiting for their rate windows),
 * counted by valgrind's callgrind. What Node's two diagnostics channels cost to reach it is
 * not in this count (see instructions.mjs for the whole server).
 *
 * On Node's clock a request after a record's first is settled by the sweep (engine.ts
 * `settleAll`): counted at its head, its end found at the next head, its transitions, times
 * and deadlines applied once per sweep. The same path runs a second time on a clock that never moves (the tracker's
 * `clock` option), where every request takes the exact path a 'transition' listener asks for
 * (two transitions, their deadlines) without its clock reads: the difference is what settling
 * by the sweep saves besides them (each read, a monotonic `performance.now()`, costs ~275
 * instructions on Node 26).
 *
 *   node bench/tracker-path.mjs                    this Node, 3 runs
 *   node bench/tracker-path.mjs --nodes this,24,26 --repeat 3
 *
 * Each run is two processes, of n1 and n2 requests after the same warm-up: per request =
 * (I(n2) − I(n1)) / (n2 − n1), so start-up and warm-up cancel out. Loads the dist build.
 */
import { spawnSync } from 'node:child_process'
import { mkdtempSync, rmSync } from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { fileURLToPath } from 'node:url'
import { hasValgrind, nodeBinary } from './instructions.mjs'
import { fmt, median, parseArgs, table } from './lib/common.mjs'

const WARM = 50_000
const N1 = 100_000
const N2 = 300_000

/** A clock that never moves: the exact path without its clock reads. */
const FIXED_CLOCK = { now: () => 1_000 }

async function child(n, fixed) {
  const { ConnectionTracker } = await import('@connguard/core')
  const { engineOf } = await import('@connguard/core/internal')
  const tracker = new ConnectionTracker(fixed ? { clock: FIXED_CLOCK } : {})
  // The engine, as the server bindings call it.
  const t = engineOf(tracker)
  const noop = () => {}
  const binding = {
    sink: t,
    listenEnd: () => null,
    cut: noop,
    endAfterResponse: noop,
    // Every response has finished by the next head, and keeps the connection open.
    finishedResponse: () => null,
    reportEnd: noop,
    ping: noop,
    goaway: noop,
    resetStream: noop,
    release: noop,
    drainStarted: noop,
    drainEnded: noop,
    detach: noop,
  }
  const recs = []
  const responses = []
  for (let i = 0; i < 4; i++) {
    recs.push(t.open({ bytesRead: 0, bytesWritten: 0, destroyed: false }, false, binding))
    const req = { rawHeaders: ['Host', '127.0.0.1:3000'], httpVersion: '1.1', complete: true }
    responses.push({ req, shouldKeepAlive: true })
  }
  const one = (i) => {
    const k = i & 3
    const rec = recs[k]
    const res = responses[k]
    // The exact path wants the end reported (Node's 'finish'); a settled request's is found.
    if (t.requestHead(rec, res.req, res)) t.responseEnd(rec, null)
    if ((i & 255) === 255) t.sweep()
  }
  for (let i = 0; i < WARM; i++) one(i)
  for (let i = 0; i < n; i++) one(i)
  if (recs[0].requests !== (WARM + n) / 4) throw new Error('requests not counted')
  tracker.close()
}

function count(bin, n, dir, fixed) {
  const out = path.join(dir, `cg-${n}`)
  const r = spawnSync(
    'valgrind',
    [
      '--tool=callgrind',
      `--callgrind-out-file=${out}`,
      bin,
      '--single-threaded',
      fileURLToPath(import.meta.url),
      '--child',
      String(n),
      ...(fixed ? ['--fixed-clock'] : []),
    ],
    { encoding: 'utf8' },
  )
  const m = /Collected : (\d+)/.exec(r.stderr)
  if (r.status !== 0 || m === null) throw new Error(`child failed: ${r.stderr.slice(-1000)}`)
  rmSync(out, { force: true })
  return Number(m[1])
}

export async function main(argv) {
  const args = parseArgs(argv)
  if (args.child !== undefined) return child(Number(args.child), args['fixed-clock'] === true)
  console.log('\n## Tracker request path (callgrind, no socket)\n')
  if (!hasValgrind()) {
    console.log('valgrind not found: skipped (Debian: apt-get install valgrind).')
    return
  }
  const nodes = String(args.nodes ?? 'this').split(',')
  const repeat = Number(args.repeat ?? 3)
  const dir = mkdtempSync(path.join(os.tmpdir(), 'connguard-path-'))
  const rows = []
  try {
    for (const spec of nodes) {
      const bin = await nodeBinary(spec)
      const version = spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim()
      const slopes = []
      const fixed = []
      for (let i = 0; i < repeat; i++) {
        slopes.push((count(bin, N2, dir, false) - count(bin, N1, dir, false)) / (N2 - N1))
        fixed.push((count(bin, N2, dir, true) - count(bin, N1, dir, true)) / (N2 - N1))
      }
      const range = (xs) => `${fmt(Math.min(...xs), 0)}–${fmt(Math.max(...xs), 0)}`
      rows.push([
        version,
        fmt(median(slopes), 0),
        range(slopes),
        fmt(median(fixed), 0),
        range(fixed),
        fmt(median(slopes) - median(fixed), 0),
      ])
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  table(
    [
      'Node',
      'instructions per request (median)',
      'range',
      'exact transitions, fixed clock',
      'range',
      'difference',
    ],
    rows,
  )
  console.log(
    `\nhead + end of a keep-alive GET on one of 4 records, a sweep every 256 requests; slope between ${N1.toLocaleString('en')} and ${N2.toLocaleString('en')} requests after ${WARM.toLocaleString('en')}.`,
  )
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2))
