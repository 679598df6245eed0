#!/usr/bin/env node
/**
 * Churn and leaks: 100,000 connections opened and closed in batches against a guarded server
 * (plain and TLS `node:http(s)`, one ConnectionTracker), mixed healthy and timed out (see
 * lib/churn.mjs for the kinds). After a warm-up batch the server's state is the baseline;
 * after every batch, once no connection is left, it must be back there: heap after full GCs
 * within a bound, the same active resources (handles) by type, no tracker record, the same
 * listeners on both servers, and one close for every open. A check, not a timing test: it
 * prints a table and a verdict, and exits 1 when the verdict is a leak.
 *
 *   node bench/churn.mjs [--connections 100000] [--batch 5000] [--concurrency 256]
 *                        [--heap-bound 40] (B per connection, at least 2 MB in all)
 *                        [--deadline 1000] [--keep-alive 500]
 *                        [--simulate-leak]   the server keeps every closed record: must fail
 */
import { fileURLToPath } from 'node:url'
import {
  countDiff,
  DEFAULT_MIX,
  EXPECTED_REASON,
  expectedReasons,
  KINDS,
  mixOf,
  runBatch,
  sumOf,
} from './lib/churn.mjs'
import { fmt, machine, parseArgs, startChild, table } from './lib/common.mjs'

const serverScript = fileURLToPath(new URL('./lib/churn-server.mjs', import.meta.url))
const MB = 2 ** 20

export async function main(argv) {
  const args = parseArgs(argv)
  const total = Number(args.connections ?? 100_000)
  const batch = Number(args.batch ?? 5_000)
  const concurrency = Number(args.concurrency ?? 256)
  // Generous: one closure kept per connection is ~50–100 B; the noise here is ~0.3 MB.
  const heapBound = Math.max(2 * MB, Number(args['heap-bound'] ?? 40) * total)
  const deadline = Number(args.deadline ?? 1_000)
  const keepAlive = Number(args['keep-alive'] ?? 500)
  const options = {
    handshakeTimeout: deadline,
    headersTimeout: deadline,
    keepAliveTimeout: keepAlive,
    sweepInterval: 50,
  }
  const mixLine = KINDS.map((k) => `${k} ${DEFAULT_MIX[k]}`).join(', ')
  console.log(`\n## Churn and leaks (${machine()})`)
  console.log(
    `\n${total.toLocaleString('en')} connections in batches of ${batch.toLocaleString('en')}, ` +
      `at most ${concurrency} open at once; mix per 12: ${mixLine}. Guard: ${JSON.stringify(options)}. ` +
      `Server measured after each batch once no connection is left, after full GCs.\n`,
  )
  const serverArgs = [
    JSON.stringify(options),
    ...(args['simulate-leak'] ? ['--simulate-leak'] : []),
  ]
  if (args['simulate-leak'])
    console.log('**--simulate-leak: the server keeps every closed record.**\n')
  const server = await startChild(serverScript, serverArgs, {
    nodeArgs: ['--expose-gc'],
  })
  const ports = { port: server.info.port, tlsPort: server.info.tlsPort }
  const clientTimeout = deadline * 2 + 10_000
  const outcomes = {}
  for (const k of KINDS) outcomes[k] = { ok: 0, unexpected: 0, refused: 0, timeout: 0 }
  const add = (o) => {
    for (const k of KINDS) for (const [key, n] of Object.entries(o[k])) outcomes[k][key] += n
  }
  try {
    // Warm-up: lazily created state (parser pool, TLS context, JIT, the deadline heap at its
    // peak size) belongs in the baseline.
    await runBatch(mixOf(Math.min(batch, 2_000)), {
      ...ports,
      concurrency,
      timeoutMs: clientTimeout,
    })
    const base = await server.request({ type: 'measure' })
    const openedBefore = base.opened
    const rows = []
    const samples = []
    let done = 0
    const row = (label, m, seconds) => [
      label,
      done.toLocaleString('en'),
      fmt(m.heapUsed / MB, 2),
      fmt((m.heapUsed - base.heapUsed) / MB, 2),
      fmt(m.rss / MB, 1),
      sumOf(m.resources),
      m.records,
      sumOf(m.listeners.http) + sumOf(m.listeners.https),
      seconds,
    ]
    rows.push(row('baseline', base, '-'))
    let last = base
    while (done < total) {
      const n = Math.min(batch, total - done)
      const t0 = performance.now()
      add(await runBatch(mixOf(n), { ...ports, concurrency, timeoutMs: clientTimeout }))
      const seconds = fmt((performance.now() - t0) / 1000, 1)
      done += n
      last = await server.request({ type: 'measure' })
      samples.push({ done, heap: last.heapUsed })
      rows.push(row(String(rows.length), last, seconds))
      console.error(
        `  batch ${rows.length - 1}: ${done} connections, heap ${fmt(last.heapUsed / MB, 2)} MB, ` +
          `records ${last.records}, ${seconds} s`,
      )
    }
    table(
      [
        'batch',
        'connections so far',
        'heap MB',
        'Δ heap MB',
        'RSS MB',
        'handles',
        'records',
        'listeners',
        'batch s',
      ],
      rows,
    )

    // Every connection the tracker opened got exactly one close, with the reason of its kind.
    const expected = expectedReasons(outcomes)
    const reasons = new Set([...Object.keys(expected), ...Object.keys(last.closedByReason)])
    console.log('\nCloses by reason over the run (warm-up excluded):\n')
    table(
      ['reason', 'expected (by client kind)', 'recorded'],
      [...reasons].sort().map((r) => {
        const recorded = (last.closedByReason[r] ?? 0) - (base.closedByReason[r] ?? 0)
        return [r, expected[r] ?? 0, recorded]
      }),
    )
    console.log('\nClient outcomes:\n')
    table(
      ['kind', 'expected reason', 'ok', 'unexpected', 'refused', 'timeout'],
      KINDS.map((k) => [
        k,
        EXPECTED_REASON[k],
        outcomes[k].ok,
        outcomes[k].unexpected,
        outcomes[k].refused,
        outcomes[k].timeout,
      ]),
    )

    // Heap slope over the second half: a per-connection leak shows as a steady climb.
    const half = samples.slice(Math.floor(samples.length / 2))
    const slope = slopeOf(
      half.map((s) => s.done),
      half.map((s) => s.heap),
    )
    const heapDelta = last.heapUsed - base.heapUsed
    const resourceDiff = countDiff(base.resources, last.resources)
    const listenerDiff = [
      ...countDiff(base.listeners.http, last.listeners.http).map((d) => `http ${d}`),
      ...countDiff(base.listeners.https, last.listeners.https).map((d) => `https ${d}`),
    ]
    const opened = last.opened - openedBefore
    const closed = last.closed - base.closed
    const checks = [
      [
        'heap after GC back within the bound',
        heapDelta <= heapBound,
        `${fmt(heapDelta / MB, 2)} MB vs baseline (bound ${fmt(heapBound / MB, 2)} MB: ` +
          `${fmt(heapBound / total, 0)} B per connection); slope over the second half ` +
          `${fmt(slope, 1)} B per connection`,
      ],
      [
        'active resources (handles) by type back to baseline',
        resourceDiff.length === 0,
        resourceDiff.length === 0 ? JSON.stringify(last.resources) : resourceDiff.join(', '),
      ],
      [
        'tracker records back to 0',
        last.records === 0 && last.listed === 0 && last.connections === 0,
        `${last.records} records, ${last.listed} listed by connections(), ${last.connections} open sockets`,
      ],
      [
        'server listeners back to baseline',
        listenerDiff.length === 0,
        listenerDiff.length === 0
          ? `http ${sumOf(last.listeners.http)}, https ${sumOf(last.listeners.https)}`
          : listenerDiff.join(', '),
      ],
      [
        'one close per open',
        opened === closed,
        `${opened.toLocaleString('en')} opened, ${closed.toLocaleString('en')} closed`,
      ],
    ]
    console.log('\nVerdict:\n')
    table(
      ['check', 'result', 'measured'],
      checks.map(([what, ok, measured]) => [what, ok ? 'met' : 'MISSED', measured]),
    )
    const leaked = checks.some(([, ok]) => !ok)
    console.log(`\n${leaked ? 'LEAK: a check missed (see above)' : 'no leak: every check met'}`)
    if (leaked) process.exitCode = 1
  } finally {
    await server.stop()
  }
}

/** Least-squares slope of y over x. */
function slopeOf(xs, ys) {
  const n = xs.length
  if (n < 2) return Number.NaN
  const mx = xs.reduce((s, x) => s + x, 0) / n
  const my = ys.reduce((s, y) => s + y, 0) / n
  let num = 0
  let den = 0
  for (let i = 0; i < n; i++) {
    num += (xs[i] - mx) * (ys[i] - my)
    den += (xs[i] - mx) ** 2
  }
  return num / den
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2))
