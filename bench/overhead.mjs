#!/usr/bin/env node
/**
 * Throughput overhead: Fastify and Express hello world, keep-alive and one request per
 * connection, HTTP and HTTPS, guarded (connguard's defaults) vs bare. Both servers run in
 * child processes for the whole case; runs alternate between them in A/B, B/A order so drift
 * (thermal, other processes) hits both alike, and each ratio is taken within a pair.
 *
 *   node bench/overhead.mjs [--pairs 5] [--duration 5] [--only fastify-http-ka] [--wrk]
 *
 * Case names: <fastify|express|node>-<http|https>-<ka|close>. `--wrk` adds the cross-check of
 * fastify-http-ka with Debian's wrk (when installed).
 * Targets: guarded/bare req/s ≥ 0.97 keep-alive, ≥ 0.95 one request per connection; p99
 * within 5%.
 */
import { fileURLToPath } from 'node:url'
import { fmt, machine, median, parseArgs, startChild, table } from './lib/common.mjs'
import { keepAlive, perConnection, wrk } from './lib/load.mjs'

const serverScript = fileURLToPath(new URL('./lib/hello-server.mjs', import.meta.url))

const ALL_CASES = []
for (const framework of ['fastify', 'express'])
  for (const mode of ['ka', 'close'])
    for (const protocol of ['http', 'https']) ALL_CASES.push(`${framework}-${protocol}-${mode}`)

async function runCase(name, { pairs, durationS, load }) {
  const [framework, protocol, mode] = name.split('-')
  const secure = protocol === 'https'
  const generate = load ?? (mode === 'ka' ? keepAlive : perConnection)
  const servers = {}
  for (const variant of ['bare', 'guarded']) {
    servers[variant] = await startChild(serverScript, [framework, protocol, variant])
  }
  const once = async (variant, seconds) => {
    const s = servers[variant]
    await s.request({ type: 'mark' })
    const r = await generate({ port: s.info.port, secure, durationS: seconds })
    const m = await s.request({ type: 'measure' })
    const count = r.count ?? r.rps * seconds
    return { ...r, cpuUsPerReq: (m.cpuMs * 1000) / count, elu: m.elu, cpuShare: m.cpuMs / m.wallMs }
  }
  try {
    // Warm-up (JIT, TLS session caches, socket buffers): not measured.
    await once('bare', 2)
    await once('guarded', 2)
    const runs = { bare: [], guarded: [] }
    for (let i = 0; i < pairs; i++) {
      const order = i % 2 === 0 ? ['bare', 'guarded'] : ['guarded', 'bare']
      for (const variant of order) runs[variant].push(await once(variant, durationS))
    }
    return summarize(name, runs)
  } finally {
    for (const s of Object.values(servers)) await s.stop()
  }
}

function summarize(name, runs) {
  const ratios = (key) => runs.guarded.map((g, i) => g[key] / runs.bare[i][key])
  const med = (variant, key) => median(runs[variant].map((r) => r[key]))
  const errors = [...runs.bare, ...runs.guarded].reduce((s, r) => s + r.errors, 0)
  return {
    name,
    bareRps: med('bare', 'rps'),
    guardedRps: med('guarded', 'rps'),
    rpsRatio: median(ratios('rps')),
    rpsRatios: ratios('rps'),
    bareP99: med('bare', 'p99'),
    guardedP99: med('guarded', 'p99'),
    p99Ratio: median(ratios('p99')),
    bareCpu: med('bare', 'cpuUsPerReq'),
    guardedCpu: med('guarded', 'cpuUsPerReq'),
    cpuRatio: median(ratios('cpuUsPerReq')),
    serverCpu: med('bare', 'cpuShare'),
    errors,
  }
}

export async function main(argv) {
  const args = parseArgs(argv)
  const pairs = Number(args.pairs ?? 5)
  const durationS = Number(args.duration ?? 5)
  const cases = args.only ? String(args.only).split(',') : ALL_CASES
  console.log(`\n## Throughput overhead (${machine()})`)
  console.log(
    `\n${pairs} alternated pairs of ${durationS} s per case, 50 connections, pipelining 1; ` +
      'ratios are medians of the per-pair ratios (guarded / bare).\n',
  )
  const results = []
  for (const name of cases) {
    const r = await runCase(name, { pairs, durationS })
    results.push(r)
    console.error(
      `  ${name}: ${fmt(r.rpsRatio, 3)} (pairs ${r.rpsRatios.map((x) => fmt(x, 3)).join(' ')})`,
    )
  }
  table(
    [
      'case',
      'bare req/s',
      'guarded req/s',
      'req/s ratio',
      'target',
      'p99 bare',
      'p99 guarded',
      'p99 ratio',
      'CPU µs/req bare',
      'guarded',
      'CPU ratio',
      'server CPU',
      'errors',
    ],
    results.map((r) => {
      const target = r.name.endsWith('-ka') ? 0.97 : 0.95
      return [
        r.name,
        fmt(r.bareRps, 0),
        fmt(r.guardedRps, 0),
        fmt(r.rpsRatio, 3),
        `≥ ${target} ${r.rpsRatio >= target ? 'met' : 'MISSED'}`,
        `${fmt(r.bareP99, 2)} ms`,
        `${fmt(r.guardedP99, 2)} ms`,
        `${fmt(r.p99Ratio, 3)}${r.p99Ratio <= 1.05 ? '' : ' (>1.05)'}`,
        fmt(r.bareCpu, 1),
        fmt(r.guardedCpu, 1),
        fmt(r.cpuRatio, 3),
        `${fmt(r.serverCpu * 100, 0)}%`,
        r.errors,
      ]
    }),
  )
  console.log(
    '\nka = keep-alive (autocannon); close = one request per connection (own client, ' +
      'Connection: close; HTTPS = a full handshake each). server CPU = CPU time of the bare ' +
      'server / wall time (100% = one core saturated: the server, not the load generator, ' +
      'is the bottleneck).',
  )

  if (args.wrk) {
    const r = await runCase('fastify-http-ka', { pairs, durationS, load: wrkLoad })
    console.log('\nCross-check with wrk -t1 -c50 (fastify-http-ka)')
    table(
      [
        'case',
        'bare req/s',
        'guarded req/s',
        'req/s ratio',
        'p99 bare',
        'p99 guarded',
        'CPU ratio',
      ],
      [
        [
          'fastify-http-ka (wrk)',
          fmt(r.bareRps, 0),
          fmt(r.guardedRps, 0),
          fmt(r.rpsRatio, 3),
          `${fmt(r.bareP99, 2)} ms`,
          `${fmt(r.guardedP99, 2)} ms`,
          fmt(r.cpuRatio, 3),
        ],
      ],
    )
  }
  return results
}

async function wrkLoad(opts) {
  const r = await wrk(opts)
  if (r === null) throw new Error('wrk is not installed (apt-get install wrk)')
  return { ...r, count: r.rps * opts.durationS }
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2))
