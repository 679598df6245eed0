#!/usr/bin/env node
/**
 * Under attack: Fastify over HTTPS in a process limited to 2,048 open files
 * (`bash -c 'ulimit -n 2048 && exec node attack-server.mjs'`), attackers opening slowloris
 * and stalled-TLS connections at a steady rate up to 4,000 at once, and a legitimate client
 * sending one request per new TLS connection at a fixed rate. Guarded (connguard configured
 * as one would under attack) vs Fastify's defaults; each first without the attack, for the
 * baseline p99. 127.0.0.1 only; every phase is bounded in time.
 *
 *   node bench/attack.mjs [--seconds 30] [--rate 200] [--max 4000] [--legit 20] [--cpu-prof dir]
 *                         [--variants guarded,bare] [--options '{"sweepInterval":50}'] [--repeat 3]
 *
 * Target: guarded keeps ≥ 99% success with p99 within 2× its no-attack value.
 */
import https from 'node:https'
import { tmpdir } from 'node:os'
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
const FILE_LIMIT = 2048
const LEGIT_TIMEOUT = 5_000

/** What a user would set under attack: short handshake and header limits, a handshake cap. */
export const UNDER_ATTACK = {
  handshakeTimeout: 2_000,
  headersTimeout: 2_000,
  maxHandshakes: 1_000,
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
  const args = variant === 'guarded' ? ['guarded', JSON.stringify(o.options)] : ['bare']
  const nodeArgs = o.cpuProf ? ['--cpu-prof', `--cpu-prof-dir=${o.cpuProf}/${variant}`] : []
  const server = await startChild(serverScript, args, { nofile: FILE_LIMIT, nodeArgs })
  const samples = []
  server.child.on('message', (m) => {
    if (m?.type === 'sample') samples.push(m)
  })
  try {
    // 1. Baseline: the legitimate client alone.
    const base = summarize(await legit(server.info.port, o.legit, o.baseline))
    // 2. Under attack.
    const attackStart = samples.length
    const attacker = await startChild(attackerScript, [
      String(server.info.port),
      String(o.rate),
      String(o.max),
      String(o.seconds),
    ])
    const attackSamples = []
    attacker.child.on('message', (m) => {
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
    await attacker.stop()
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
      r.variant === 'guarded' && sw.length
        ? `${fmt(Math.max(...sw.map((x) => x.sweepMaxMs)), 1)} (${Math.max(...sw.map((x) => x.sweepMaxCut))})`
        : '-',
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
    options: { ...UNDER_ATTACK, ...(args.options ? JSON.parse(args.options) : {}) },
    variants: String(args.variants ?? 'guarded,bare').split(','),
    repeat: Number(args.repeat ?? 1),
    cpuProf: args['cpu-prof']
      ? String(
          args['cpu-prof'] === true
            ? join(tmpdir(), 'connguard-attack-profiles')
            : args['cpu-prof'],
        )
      : null,
  }
  console.log(`\n## Under attack (${machine()})`)
  console.log(
    `\nFastify HTTPS, server limited to ${FILE_LIMIT} open files; attackers open ` +
      `${o.rate}/s (half slowloris, half stalled TLS) up to ${o.max} at once for ${o.seconds} s; ` +
      `legitimate client: ${o.legit} req/s, each on a new TLS connection, ${LEGIT_TIMEOUT / 1000} s ` +
      `timeout. Guarded = connguard with ${JSON.stringify(o.options)}; bare = Fastify's ` +
      'defaults (Node: handshake 120 s, headers 60 s checked every 30 s).\n',
  )
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
      const files = exhausted ? `${FILE_LIMIT} (EMFILE)` : Math.max(0, ...numeric)
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
        r.variant === 'guarded' ? (met ? 'met' : 'MISSED') : '',
      ]
    }),
  )
  const guarded = results.filter((r) => r.variant === 'guarded')
  if (guarded.length > 1) {
    const ratios = guarded.map((r) => r.attack.p99 / r.base.p99)
    const success = Math.min(...guarded.map((r) => r.attack.success))
    const m = median(ratios)
    console.log(
      `\nguarded over ${guarded.length} runs: lowest success ${fmt(success * 100, 1)}%, ` +
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
        'longest sweep ms (cuts)',
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
