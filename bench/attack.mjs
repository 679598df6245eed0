#!/usr/bin/env node
/**
 * Under attack: Fastify over HTTPS in a process limited to 2,048 open files
 * (`bash -c 'ulimit -n 2048 && exec node attack-server.mjs'`), attacked by slowloris —
 * Debian's `slowhttptest -H` over TLS — and stalled TLS handshakes (lib/attacker.mjs), each
 * opening `rate / 2` connections a second, while a legitimate client sends one request per
 * new TLS connection at a fixed rate. Variants:
 *
 *   shedding   connguard's defaults, pressure on (the default): deadlines 10 s / 30 s
 *   deadlines  connguard's defaults with `pressure: false`: the same deadlines, no shedding
 *   bare       Fastify's defaults (Node: handshake 120 s, headers 60 s checked every 30 s)
 *
 * Each first without the attack (3 s of warm-up, then the baseline p99), then under it. 127.0.0.1 only; every
 * phase is bounded in time; slowhttptest is stopped by its pid. Without slowhttptest
 * (`apt-get install slowhttptest`) the slowloris half comes from lib/attacker.mjs.
 *
 *   node bench/attack.mjs [--seconds 30] [--rate 200] [--max 4000] [--legit 50] [--files 2048]
 *                         [--variants shedding,deadlines,bare] [--options '{"sweepInterval":50}']
 *                         [--repeat 3] [--cpu-prof dir] [--pin]
 *
 * `--pin` (Linux, `taskset`, 2+ CPUs): the server on CPU 0, everything else (this process
 * with the legitimate client, the attackers) on CPU 1, as when the attackers are other
 * machines; without it all of them share every CPU and the server waits for one.
 *
 * Target: shedding keeps ≥ 99% success with p99 within 2× its no-attack value.
 */
import { spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import https from 'node:https'
import { availableParallelism, tmpdir } from 'node:os'
import { join } from 'node:path'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import {
  fmt,
  HOST,
  machine,
  median,
  parseArgs,
  pct,
  sleep,
  sorted,
  startChild,
  table,
} from './lib/common.mjs'

const serverScript = fileURLToPath(new URL('./lib/attack-server.mjs', import.meta.url))
const attackerScript = fileURLToPath(new URL('./lib/attacker.mjs', import.meta.url))
const LEGIT_TIMEOUT = 5_000

/** The guarded variants' options: connguard's defaults, with and without pressure. */
export const VARIANTS = {
  shedding: {},
  deadlines: { pressure: false },
  bare: null,
}

/** Seconds of legitimate traffic before each baseline, not counted. */
const WARMUP_S = 3
const SERVER_CPU = 0
const OTHERS_CPU = 1
/** Moves every thread of `pid` to one CPU (`taskset -a`); throws when taskset fails. */
function pin(pid, cpu) {
  const r = spawnSync('taskset', ['-a', '-p', '-c', String(cpu), String(pid)], { timeout: 5_000 })
  if (r.error !== undefined || r.status !== 0)
    throw new Error(`taskset failed for pid ${pid}: ${r.error?.message ?? r.stderr}`)
}

const hasSlowhttptest = spawnSync('slowhttptest', ['-h'], { timeout: 5_000 }).error === undefined

/**
 * Slowloris at `rate`/s up to `rate × seconds` connections, over TLS: `slowhttptest -H`
 * (one more header line every 5 s), stopped by its own pid; or lib/attacker.mjs.
 */
async function startSlowloris(port, rate, max, seconds) {
  if (!hasSlowhttptest) {
    const a = await startChild(attackerScript, [
      String(port),
      String(rate * 2),
      String(max),
      String(seconds),
    ])
    return { tool: 'lib/attacker.mjs (slowloris + stalled)', stop: () => a.stop() }
  }
  const child = spawn(
    'slowhttptest',
    [
      '-H',
      '-c',
      String(rate * seconds),
      '-r',
      String(rate),
      '-i',
      '5',
      '-l',
      String(seconds + 5),
      '-u',
      `https://${HOST}:${port}/`,
      '-p',
      '3',
    ],
    { stdio: 'ignore' },
  )
  child.on('error', () => {})
  return {
    tool: 'slowhttptest -H',
    stop: async () => {
      if (child.exitCode !== null || child.signalCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGINT')
      const t = setTimeout(() => child.kill('SIGKILL'), 3_000)
      await exited
      clearTimeout(t)
    },
  }
}

/** The legitimate client: one GET per new TLS connection, `perSecond`, for `seconds`. */
async function legit(port, perSecond, seconds, onResult) {
  const results = []
  const every = 1000 / perSecond
  const start = performance.now()
  const pending = []
  for (let i = 0; i < perSecond * seconds; i++) {
    const due = start + i * every
    const wait = due - performance.now()
    if (wait > 0) await sleep(wait)
    pending.push(
      new Promise((resolve) => {
        const t0 = performance.now()
        const at = (t0 - start) / 1000
        let done = false
        const finish = (ok, why) => {
          if (done) return
          done = true
          const r = { at, ok, ms: performance.now() - t0, why }
          results.push(r)
          onResult?.(r)
          resolve()
        }
        const req = https.get(
          { host: HOST, port, path: '/', agent: false, rejectUnauthorized: false },
          (res) => {
            res.resume()
            res.on('end', () => finish(res.statusCode === 200, `status ${res.statusCode}`))
            res.on('error', (err) => finish(false, err.code ?? 'error'))
          },
        )
        req.setTimeout(LEGIT_TIMEOUT, () => {
          req.destroy()
          finish(false, 'timeout')
        })
        req.on('error', (err) => finish(false, err.code ?? 'error'))
      }),
    )
  }
  await Promise.all(pending)
  return results
}

function summarize(results) {
  const ok = results.filter((r) => r.ok)
  const lat = sorted(ok.map((r) => r.ms))
  const why = {}
  for (const r of results) if (!r.ok) why[r.why] = (why[r.why] ?? 0) + 1
  return {
    n: results.length,
    success: ok.length / results.length,
    p50: pct(lat, 50),
    p99: pct(lat, 99),
    failures: Object.entries(why)
      .map(([k, v]) => `${k} ×${v}`)
      .join(', '),
  }
}

async function runVariant(variant, o) {
  const base = VARIANTS[variant]
  const args = base === null ? ['bare'] : ['guarded', JSON.stringify({ ...base, ...o.options })]
  const nodeArgs = o.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProf}/${variant}`] : []
  const server = await startChild(serverScript, args, { nofile: o.files, nodeArgs })
  if (o.pin) pin(server.child.pid, SERVER_CPU)
  const samples = []
  server.child.on('message', (m) => {
    if (m?.type === 'sample') samples.push(m)
  })
  try {
    // 0. Warm-up, not counted: run inside `pnpm bench` right after the overhead benchmark,
    // the first variant's baseline p99 read 88 ms twice (15–19 ms in every later variant
    // and standalone run): JIT and the previous benchmark's processes still winding down.
    await legit(server.info.port, o.legit, WARMUP_S)
    // 1. Baseline: the legitimate client alone.
    const base = summarize(await legit(server.info.port, o.legit, o.baseline))
    // 2. Under attack.
    const attackStart = samples.length
    const half = Math.round(o.rate / 2)
    const slowloris = await startSlowloris(server.info.port, half, o.max / 2, o.seconds)
    const attacker = hasSlowhttptest
      ? await startChild(attackerScript, [
          String(server.info.port),
          String(half),
          String(o.max / 2),
          String(o.seconds),
          'stalled',
        ])
      : null
    const attackSamples = []
    attacker?.child.on('message', (m) => {
      if (m?.type === 'sample') attackSamples.push(m)
    })
    const under = await legit(server.info.port, o.legit, o.seconds)
    const slow = under.filter((x) => !x.ok || x.ms > 500)
    if (slow.length > 0) {
      console.error(
        `  ${variant}: ${slow.length} legit requests failed or took > 500 ms; first: ` +
          slow
            .slice(0, 8)
            .map((x) => `${fmt(x.at, 1)} s ${x.ok ? `${fmt(x.ms, 0)} ms` : x.why}`)
            .join(', '),
      )
    }
    await attacker?.stop()
    await slowloris.stop()
    return {
      variant,
      base,
      attack: summarize(under),
      // After the first 10 s the attack has reached its steady state (or the file limit).
      steady: summarize(under.filter((r) => r.at >= 10)),
      under,
      serverSamples: samples.slice(attackStart),
      attackSamples,
    }
  } finally {
    await server.stop()
  }
}

function timeline(r, seconds) {
  const rows = []
  const avg = (list, key) => list.reduce((sum, x) => sum + x[key], 0) / Math.max(1, list.length)
  for (let from = 0; from < seconds; from += 5) {
    const s = summarize(r.under.filter((x) => x.at >= from && x.at < from + 5))
    const aw = r.attackSamples.slice(from, from + 5)
    const sw = r.serverSamples.slice(from, from + 5)
    const sv = sw.at(-1)
    rows.push([
      `${from}–${from + 5} s`,
      sv ? sv.connections : '-',
      sv ? sv.files : '-',
      sw.length ? `${fmt(avg(sw, 'cpu') * 100, 0)}%` : '-',
      aw.length ? `${fmt(avg(aw, 'cpu') * 100, 0)}%` : '-',
      sw.length ? fmt(Math.max(...sw.map((x) => x.loopDelayP99)), 0) : '-',
      sw.length ? fmt(avg(sw, 'runQueueWaitMs'), 0) : '-',
      sw.length ? Math.max(...sw.map((x) => x.acceptQueue)) : '-',
      sw.length ? sw.reduce((sum, x) => sum + (x.listenOverflows || 0), 0) : '-',
      r.variant !== 'bare' && sw.length
        ? `${fmt(Math.max(...sw.map((x) => x.sweepMaxMs)), 1)} (${Math.max(...sw.map((x) => x.sweepMaxSlices))})`
        : '-',
      sv?.pressure ? fmt(Math.max(...sw.map((x) => x.pressure?.level ?? 0)), 2) : '-',
      sw.length ? fmt(Math.max(...sw.map((x) => x.gcMaxMs)), 1) : '-',
      `${fmt(s.success * 100, 1)}%`,
      fmt(s.p99, 0),
      s.failures || '',
    ])
  }
  return rows
}

export async function main(argv) {
  const args = parseArgs(argv)
  const o = {
    seconds: Number(args.seconds ?? 30),
    baseline: Number(args.baseline ?? 10),
    rate: Number(args.rate ?? 200),
    max: Number(args.max ?? 4000),
    legit: Number(args.legit ?? 50),
    files: Number(args.files ?? 2048),
    options: args.options ? JSON.parse(args.options) : {},
    variants: String(args.variants ?? 'shedding,deadlines,bare').split(','),
    repeat: Number(args.repeat ?? 1),
    pin: args.pin === true,
    cpuProf: args['cpu-prof']
      ? String(
          args['cpu-prof'] === true
            ? join(tmpdir(), 'connguard-attack-profiles')
            : args['cpu-prof'],
        )
      : null,
  }
  for (const v of o.variants) {
    if (!(v in VARIANTS)) throw new Error(`unknown variant ${v}; one of ${Object.keys(VARIANTS)}`)
  }
  if (o.pin && availableParallelism() < 2) throw new Error('--pin needs 2 CPUs or more')
  console.log(`\n## Under attack (${machine()})`)
  console.log(
    `\nFastify HTTPS, server limited to ${o.files} open files; attackers open ` +
      `${o.rate}/s (half slowloris by ${hasSlowhttptest ? 'slowhttptest -H' : 'lib/attacker.mjs'}, ` +
      `half stalled TLS) up to ${o.max} at once for ${o.seconds} s; ` +
      `legitimate client: ${o.legit} req/s, each on a new TLS connection, ${LEGIT_TIMEOUT / 1000} s ` +
      `timeout. shedding = connguard's defaults (pressure on)${Object.keys(o.options).length ? ` + ${JSON.stringify(o.options)}` : ''}; ` +
      "deadlines = the same with pressure: false; bare = Fastify's defaults " +
      '(Node: handshake 120 s, headers 60 s checked every 30 s).' +
      (o.pin
        ? ` Pinned: the server alone on CPU ${SERVER_CPU}, the client and attackers on CPU ${OTHERS_CPU}.`
        : '') +
      '\n',
  )
  // Children started from here on (the attackers) inherit CPU 1; each server moves to CPU 0.
  if (o.pin) pin(process.pid, OTHERS_CPU)
  const results = []
  for (let i = 0; i < o.repeat; i++) {
    for (const variant of o.variants)
      results.push({ ...(await runVariant(variant, o)), run: i + 1 })
  }
  table(
    [
      'server',
      'run',
      'no attack: success',
      'p99 ms',
      'under attack: success',
      'p50 ms',
      'p99 ms',
      'p99 / no-attack p99',
      'server connections (max)',
      'server files (max)',
      'target',
    ],
    results.map((r) => {
      const ratio = r.attack.p99 / r.base.p99
      const held = Math.max(0, ...r.serverSamples.map((s) => s.connections))
      const numeric = r.serverSamples.map((s) => s.files).filter((f) => typeof f === 'number')
      const exhausted = r.serverSamples.some((s) => typeof s.files !== 'number')
      const files = exhausted ? `${o.files} (EMFILE)` : Math.max(0, ...numeric)
      const met = r.attack.success >= 0.99 && ratio <= 2
      return [
        r.variant,
        r.run,
        `${fmt(r.base.success * 100, 1)}%`,
        fmt(r.base.p99, 0),
        `${fmt(r.attack.success * 100, 1)}% of ${r.attack.n}`,
        fmt(r.attack.p50, 0),
        fmt(r.attack.p99, 0),
        fmt(ratio, 2),
        held,
        files,
        r.variant === 'shedding' ? (met ? 'met' : 'MISSED') : '',
      ]
    }),
  )
  const guarded = results.filter((r) => r.variant === 'shedding')
  if (guarded.length > 1) {
    const ratios = guarded.map((r) => r.attack.p99 / r.base.p99)
    const success = Math.min(...guarded.map((r) => r.attack.success))
    const m = median(ratios)
    console.log(
      `\nshedding over ${guarded.length} runs: lowest success ${fmt(success * 100, 1)}%, ` +
        `p99 ratio median ${fmt(m, 2)} (${ratios.map((x) => fmt(x, 2)).join(', ')}): ` +
        `${success >= 0.99 && m <= 2 ? 'met' : 'MISSED'}`,
    )
  }
  for (const r of results) {
    console.log(
      `\n${r.variant} (run ${r.run}): over time (counts at the end of each 5 s window; CPU = share of one core)`,
    )
    table(
      [
        'window',
        'server: connections',
        'files',
        'server CPU',
        'attacker CPU',
        'loop delay p99 ms',
        'run-queue wait ms/s',
        'accept queue (max)',
        'listen overflows',
        'longest sweep slice ms (most slices in a sweep)',
        'pressure level (max)',
        'longest GC ms',
        'legit success',
        'legit p99 ms',
        'failures',
      ],
      timeline(r, o.seconds),
    )
    const last = r.serverSamples.at(-1)
    if (last?.closedByReason) console.log('close reasons:', JSON.stringify(last.closedByReason))
  }
  return results
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2))
