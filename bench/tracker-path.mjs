#!/usr/bin/env node
/**
 * Instructions the tracker's own request path costs, without a socket: the engine's
 * `requestBegin`, `requestHead` and `responseEnd` of a keep-alive GET, called directly on four records of
 * one tracker (fake sockets, default options), counted by valgrind's callgrind. What the
 * parser hook and the two diagnostics channels cost to reach it is not in this count (see
 * instructions.mjs for the whole server); what is, is deterministic to a few instructions,
 * so a change of the path shows here even when a server's slope scatters by thousands.
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

async function child(n) {
  const { ConnectionTracker } = await import('@connguard/core')
  const { engineOf } = await import('@connguard/core/internal')
  const tracker = new ConnectionTracker()
  // The engine, as the server bindings call it.
  const t = engineOf(tracker)
  const noop = () => {}
  const binding = {
    sink: t,
    listenEnd: () => null,
    cut: noop,
    endAfterResponse: noop,
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
    t.requestBegin(rec)
    t.requestHead(rec, res.req, res)
    t.responseEnd(rec, null)
  }
  for (let i = 0; i < WARM; i++) one(i)
  for (let i = 0; i < n; i++) one(i)
  if (recs[0].requests !== (WARM + n) / 4) throw new Error('requests not counted')
  tracker.close()
}

function count(bin, n, dir) {
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
  if (args.child !== undefined) return child(Number(args.child))
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
      for (let i = 0; i < repeat; i++) {
        slopes.push((count(bin, N2, dir) - count(bin, N1, dir)) / (N2 - N1))
      }
      rows.push([
        version,
        fmt(median(slopes), 0),
        `${fmt(Math.min(...slopes), 0)}–${fmt(Math.max(...slopes), 0)}`,
      ])
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  table(['Node', 'instructions per request (median)', 'range'], rows)
  console.log(
    `\nbegin + head + end of a keep-alive GET on one of 4 records; slope between ${N1.toLocaleString('en')} and ${N2.toLocaleString('en')} requests after ${WARM.toLocaleString('en')}.`,
  )
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2))
