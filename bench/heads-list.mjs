#!/usr/bin/env node
/**
 * What the sweep's look at Node's connections list costs. Each sweep asks every guarded
 * HTTP/1 server's list (`server[Symbol(http.server.connections)]`) for the parsers reading a
 * message (`active()`: a head begun on a connection idle after a response) and for those whose
 * head has been arriving past `headersTimeout` (`expired(headersTimeout, 0)`): C++ walks the
 * parsers reading a message, so the cost grows with the connections mid-request (and the ones
 * that have sent nothing yet), not with the idle ones. This measures one call with N parsers
 * in the list and none expired, the sweep's usual case, for N = 1k, 10k, 50k, on this Node and
 * on Node 24 and 26.
 *
 *   node bench/heads-list.mjs                 this Node, 24 and 26
 *   node bench/heads-list.mjs --nodes this    options: --nodes, --calls N (per size, 200)
 *
 * The parsers are Node's own (`HTTPParser` initialised with a `ConnectionsList`, as Node's
 * server does for every connection), without sockets: 50,000 connections are more than one
 * process may open here. They are reached through Node's internal binding (`process.binding`
 * on Node 20, `--expose-internals` on 22 and later). Target: ≤ 2 ms a call at 50,000 (a
 * heartbeat over connections, issue 19), and nothing at all per request.
 */
import { spawnSync } from 'node:child_process'
import { runtimes } from './instructions.mjs'
import { fmt, machine, parseArgs, table } from './lib/common.mjs'

const SIZES = [1_000, 10_000, 50_000]

/** Runs in the measured Node: prints one JSON line of per-size timings. */
const CHILD = `
const { performance } = require('node:perf_hooks')
let binding
try {
  binding = require('internal/test/binding').internalBinding('http_parser')
} catch {
  binding = process.binding('http_parser')
}
const { HTTPParser, ConnectionsList } = binding
const calls = Number(process.argv[1])
const out = []
for (const n of ${JSON.stringify(SIZES)}) {
  const list = new ConnectionsList()
  const parsers = []
  for (let i = 0; i < n; i++) {
    const p = new HTTPParser()
    p.initialize(HTTPParser.REQUEST, {}, 0, 0, list)
    parsers.push(p)
  }
  for (let i = 0; i < 20; i++) list.expired(3600000, 0)
  const t = []
  const both = []
  let seen = 0
  for (let i = 0; i < calls; i++) {
    let a = performance.now()
    const r = list.expired(3600000, 0)
    t.push(performance.now() - a)
    if (r.length !== 0) throw new Error('a parser expired')
    // The sweep's whole pass: active() and a look at each parser's socket, then expired().
    a = performance.now()
    const active = list.active()
    for (let j = 0; j < active.length; j++) if (active[j].socket != null) seen++
    list.expired(3600000, 0)
    both.push(performance.now() - a)
  }
  if (seen !== 0) throw new Error('a parser with a socket')
  t.sort((a, b) => a - b)
  both.sort((a, b) => a - b)
  out.push({
    n,
    median: t[calls >> 1],
    p99: t[Math.floor(calls * 0.99)],
    pass: both[calls >> 1],
    passP99: both[Math.floor(calls * 0.99)],
  })
  for (const p of parsers) p.remove?.()
}
console.log(JSON.stringify(out))
`

export async function main(argv) {
  const args = parseArgs(argv)
  const nodes = String(args.nodes ?? 'this,24,26').split(',')
  const calls = Number(args.calls ?? 200)
  console.log(`\n## Node's connections list, once a sweep (${machine()})\n`)
  const rows = []
  for await (const { bin, version } of runtimes(nodes)) {
    const r = spawnSync(
      bin,
      ['--expose-internals', '--no-warnings', '--no-deprecation', '-e', CHILD, String(calls)],
      { encoding: 'utf8' },
    )
    if (r.status !== 0) {
      console.log(`Node ${version}: failed (${r.stderr.split('\n').slice(-3).join(' ')})`)
      continue
    }
    for (const { n, median, p99, pass, passP99 } of JSON.parse(r.stdout)) {
      rows.push([
        version,
        n.toLocaleString('en'),
        fmt(median, 3),
        fmt(p99, 3),
        fmt(pass, 3),
        fmt(passP99, 3),
        n === 50_000 ? (pass <= 2 ? '≤ 2 ms met' : '≤ 2 ms MISSED') : '',
      ])
    }
  }
  table(
    [
      'Node',
      'parsers in the list',
      'expired(): median ms',
      'p99 ms',
      'sweep pass, active() + expired(): median ms',
      'p99 ms',
      'target (the pass)',
    ],
    rows,
  )
  console.log(
    '\nNo parser expired: the usual sweep. A sweep runs every `sweepInterval` (250 ms by ' +
      'default); Node itself runs the same call every 30 s in a bare server.',
  )
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2))
