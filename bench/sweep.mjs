#!/usr/bin/env node
/**
 * Sweep cost: how long one `tracker.sweep()` takes with N tracked connections, driven through
 * the core with an injected clock (no sockets: records are opened with fake socket objects and
 * a fake server binding, then moved to idle the way the HTTP binding would).
 *
 *   node bench/sweep.mjs            (run with --expose-gc for steadier numbers; run.mjs does)
 *
 * Target: under 0.5 ms for 50,000 idle connections with nothing expiring, and a cost that
 * grows with the number expired, not the number tracked.
 */
import { ConnectionTracker } from '@connguard/core'
import { engineOf } from '@connguard/core/internal'
import { fmt, machine, median, pct, sorted, table } from './lib/common.mjs'

const gc = globalThis.gc ?? (() => {})
const KEEP_ALIVE = 72_000

function fakeSocket(i) {
  return {
    bytesRead: 0,
    bytesWritten: 0,
    remoteAddress: '127.0.0.1',
    remotePort: 1024 + (i % 60_000),
    localAddress: '127.0.0.1',
    localPort: 8080,
    destroyed: false,
    on() {},
    once() {},
    removeListener() {},
    destroy() {},
    _handle: null,
  }
}

/** A server binding that does nothing: the tracker's bookkeeping alone is measured. */
function fakeBinding(tracker) {
  return {
    sink: engineOf(tracker),
    cut() {},
    release() {},
    endAfterResponse() {},
    finishedResponse() {
      return null
    },
    reportEnd() {},
    ping() {},
    goaway() {},
    detach() {},
    headsListed: false,
    sweepHeads() {},
    listenEnd() {
      return null
    },
  }
}

/**
 * A tracker (never attached: no sweeper timer) with a manual clock and a no-op binding.
 * Pressure is off unless asked for: 50,000 fake sockets are more than this process's
 * open-file limit, which would put a default tracker at full pressure.
 */
function makeTracker(options = {}) {
  const clock = { t: 0, now: () => clock.t }
  const tracker = new ConnectionTracker({ pressure: false, ...options, clock })
  const binding = fakeBinding(tracker)
  return { tracker, clock, binding }
}

// As Node's IncomingMessage: the guard reads `rawHeaders` (the parser's array), not `headers`.
const idleReq = {
  httpVersion: '1.1',
  rawHeaders: [],
  headers: {},
  complete: true,
  destroyed: false,
}
const idleRes = { req: idleReq, shouldKeepAlive: true, headersSent: false }

/**
 * `n` plain connections that each served one request and went idle, one per ms of fake
 * time: connection i's keep-alive deadline is at i + 72 s.
 */
function idleTracker(n, options, { settle = true } = {}) {
  // A 1 s header deadline: the heap keys the records keep from it (keys may be early; a
  // deadline that moves later leaves the heap alone) all fall before the first keep-alive
  // deadline, so one settling sweep re-queues every record at its real time, as the
  // sweeper does in a live server, before anything is measured.
  const t = makeTracker({ headersTimeout: 1_000, ...options })
  const { tracker, clock, binding } = t
  for (let i = 0; i < n; i++) {
    clock.t = i
    const rec = engineOf(tracker).open(fakeSocket(i), false, binding)
    engineOf(tracker).requestBegin(rec)
    engineOf(tracker).requestHead(rec, idleReq, idleRes)
    engineOf(tracker).responseEnd(rec, null)
  }
  if (settle) {
    const t0 = process.hrtime.bigint()
    const cut = tracker.sweep(n + 1_000)
    t.settleNs = Number(process.hrtime.bigint() - t0)
    if (cut !== 0) throw new Error(`the settling sweep cut ${cut}`)
  }
  return t
}

/** Mean ns per call of a sweep that finds nothing due, over many calls. */
function sweepNothingDue(tracker, now, calls) {
  for (let i = 0; i < 1000; i++) tracker.sweep(now) // warm up
  gc()
  const single = new Float64Array(2000)
  for (let i = 0; i < single.length; i++) {
    const t0 = process.hrtime.bigint()
    tracker.sweep(now)
    single[i] = Number(process.hrtime.bigint() - t0)
  }
  const t0 = process.hrtime.bigint()
  for (let i = 0; i < calls; i++) tracker.sweep(now)
  const meanNs = Number(process.hrtime.bigint() - t0) / calls
  const s = sorted(single)
  return { meanNs, p99Ns: pct(s, 99), maxNs: s[s.length - 1] }
}

/** One sweep that finds `expired` connections due (a fresh tracker each repetition). */
function sweepExpiring(n, expired, reps, options) {
  const times = []
  let cut = 0
  for (let r = 0; r < reps; r++) {
    const { tracker } = idleTracker(n, options)
    // Deadlines are at i + 72 s: at 72 s + expired - 1, exactly `expired` are due.
    const now = KEEP_ALIVE + expired - 1
    gc()
    const t0 = process.hrtime.bigint()
    cut = tracker.sweep(now)
    times.push(Number(process.hrtime.bigint() - t0))
    tracker.close()
  }
  if (cut !== expired) throw new Error(`expected ${expired} cut, got ${cut}`)
  return median(times)
}

const us = (ns) => fmt(ns / 1000, 1)
const ms = (ns) => fmt(ns / 1e6, 3)

export async function main() {
  console.log(`\n## Sweep cost (${machine()})\n`)
  const sizes = [1_000, 10_000, 50_000]
  const reps = 15
  // Warm the cut path up first (JIT), as it is in a server that has been cutting for a while.
  for (let r = 0; r < 10; r++) sweepExpiring(10_000, 1_000, 1)

  // 1. Nothing due, and 1% / a fixed 100 due, at each size.
  const rows = []
  for (const n of sizes) {
    const { tracker } = idleTracker(n)
    const idle = sweepNothingDue(tracker, KEEP_ALIVE - 1, 200_000)
    if (tracker.snapshot().idle !== n) throw new Error('records did not reach idle')
    tracker.close()
    const onePct = n / 100
    const tOnePct = sweepExpiring(n, onePct, reps)
    const tHundred = sweepExpiring(n, 100, reps)
    rows.push([
      n.toLocaleString('en'),
      `${fmt(idle.meanNs, 0)} ns`,
      `${fmt(idle.p99Ns, 0)} ns`,
      `${onePct} → ${us(tOnePct)} µs (${fmt(tOnePct / onePct, 0)} ns each)`,
      `${us(tHundred)} µs (${fmt(tHundred / 100, 0)} ns each)`,
    ])
  }
  console.log('One sweep of N idle keep-alive connections (median of', reps, 'for the expiring)')
  table(
    [
      'tracked (idle)',
      'nothing due: mean',
      'nothing due: p99 single',
      '1% expiring',
      '100 expiring',
    ],
    rows,
  )

  // 2. Cost against expired count at a fixed size: linear in expired.
  const curve = []
  for (const expired of [10, 100, 1_000, 5_000]) {
    const t = sweepExpiring(50_000, expired, 7)
    curve.push([expired.toLocaleString('en'), `${ms(t)} ms`, `${fmt(t / expired, 0)} ns`])
  }
  console.log('\nOne sweep at 50,000 tracked, by number expired (median of 7)')
  table(['expired', 'sweep', 'per expired'], curve)
  // The price of early heap keys: a burst of connections served at once leaves their keys
  // due together, and one sweep re-queues them all (the live sweeper does it in 4 ms slices).
  const settle = median(Array.from({ length: 5 }, () => idleTracker(50_000).settleNs))
  console.log(
    `\n50,000 records served in a burst: the sweep that re-queues their early keys once ${ms(settle)} ms (${fmt(settle / 50_000, 0)} ns each)`,
  )

  // 3. Rate checks: 5,000 connections with a request body in progress.
  console.log(
    '\n5,000 connections with a request body in progress (minBodyRate: 240 B/s, 5 s window)',
  )
  table(['case', 'per sweep', 'checks due', 'per check'], bodyInProgress(5_000))

  // 4. What is not O(expired): TLS connections with no byte yet, and the parser-hook fallback.
  const extra = []
  {
    const { tracker, clock, binding } = makeTracker()
    for (let i = 0; i < 50_000; i++) engineOf(tracker).open(fakeSocket(i), true, binding)
    clock.t = 1
    const r = sweepNothingDue(tracker, 1, 200)
    extra.push([
      '50,000 TLS connections accepted, no byte yet (polled for `handshaking`)',
      `${ms(r.meanNs)} ms`,
    ])
    tracker.close()
  }
  {
    const { tracker, clock, binding } = idleTracker(50_000)
    // A connection whose parser could not be hooked switches the tracker to polling (fallback).
    clock.t = 50_000
    engineOf(tracker).unhooked()
    const rec = engineOf(tracker).open(fakeSocket(1), false, binding)
    engineOf(tracker).requestHead(rec, idleReq, idleRes)
    engineOf(tracker).responseEnd(rec, null)
    const r = sweepNothingDue(tracker, KEEP_ALIVE - 1, 200)
    extra.push(['50,000 idle, parser hook unavailable (fallback polling)', `${ms(r.meanNs)} ms`])
    tracker.close()
  }
  console.log('\nSweeps that are O(connections) by design (mean per sweep)')
  table(['case', 'per sweep'], extra)

  // 5. The tracker's bookkeeping per request, without sockets or Node's HTTP code.
  const perRequest = []
  for (const n of [50, 10_000]) {
    const r = requestBookkeeping(n)
    perRequest.push([n.toLocaleString('en'), `${fmt(r, 0)} ns`])
  }
  console.log(
    '\nTracker bookkeeping per keep-alive request (request begin, head, response end; ' +
      'hot loop, real clock, round-robin over N connections; median of 5)',
  )
  table(['connections', 'per request'], perRequest)

  // 7. Keep-alive requests settled by the sweep: what a sweep pays for them.
  const settled = []
  for (const n of sizes) {
    const done = median(Array.from({ length: 5 }, () => settleSweep(n, true)))
    const going = median(Array.from({ length: 5 }, () => settleSweep(n, false)))
    settled.push([
      n.toLocaleString('en'),
      `${ms(done)} ms (${fmt(done / n, 0)} ns each)`,
      `${ms(going)} ms (${fmt(going / n, 0)} ns each)`,
    ])
  }
  console.log(
    '\nThe sweep after every one of N keep-alive connections served a later request since the ' +
      "last (settled by the sweep: engine.ts `settleAll`; Node's clock; median of 5)",
  )
  table(['connections', 'requests ended: → idle', 'requests in flight: → active'], settled)

  // 6. Pressure: what it adds without pressure, and the pass it makes under pressure.
  console.log(
    '\nPressure at 50,000 idle keep-alive connections (mean per sweep; cuts capped at 100)',
  )
  table(['case', 'per sweep', 'cut'], pressureSweeps(50_000))
}

/** Sweeps of `n` idle connections with pressure off, on at level 0, and under pressure. */
function pressureSweeps(n) {
  const rows = []
  for (const [label, pressure] of [
    ['pressure off, nothing due', false],
    ['pressure on, level 0, nothing due', { limit: n * 10 }],
    // 65% of the limit: level 0.125 with `start` 0.6; keep-alive 72 s shrinks by 8.9 s, so
    // the oldest record (idle since 0) is due at 63.1 s, after `now` (n ms): nothing cut.
    [
      'pressure level 0.125, the pass finds nothing to cut',
      { limit: Math.round(n / 0.65), shedAbove: 0.9 },
    ],
  ]) {
    const { tracker, clock } = idleTracker(n, { pressure })
    clock.t = n
    const r = sweepNothingDue(
      tracker,
      n,
      pressure === false || pressure.limit > n * 2 ? 20_000 : 50,
    )
    rows.push([label, `${fmt(r.meanNs / 1000, 1)} µs`, 0])
    tracker.close()
  }
  {
    // Level 1 and the shed line at 80%: 10,000 to shed, 100 per sweep, oldest idle first.
    const times = []
    let cut = 0
    for (let r = 0; r < 7; r++) {
      // No settling sweep: this first sweep at level 1 is the one measured.
      const { tracker, clock } = idleTracker(
        n,
        { pressure: { limit: n, shedAbove: 0.8 } },
        { settle: false },
      )
      clock.t = n + 1_000
      gc()
      const t0 = process.hrtime.bigint()
      cut = tracker.sweep(n + 1_000)
      times.push(Number(process.hrtime.bigint() - t0))
      tracker.close()
    }
    rows.push([
      'level 1: shrunken deadlines and shedding, first sweep (it also re-queues the 50,000 early heap keys; median of 7)',
      `${fmt(median(times) / 1000, 1)} µs`,
      cut,
    ])
  }
  return rows
}

/**
 * ns of the one sweep after each of `n` connections (tracker on Node's clock, where a later
 * keep-alive request is settled by the sweep) took a request past its first: `ended`, its
 * response has finished (→ idle, its keep-alive deadline), else still going (→ active, its
 * end reported from then).
 */
function settleSweep(n, ended) {
  const tracker = new ConnectionTracker({ pressure: false })
  const binding = fakeBinding(tracker)
  const finished = ended ? null : undefined
  binding.finishedResponse = () => finished
  const engine = engineOf(tracker)
  const recs = []
  for (let i = 0; i < n; i++) {
    const rec = engine.open(fakeSocket(i), false, binding)
    if (engine.requestHead(rec, idleReq, idleRes)) engine.responseEnd(rec, null)
    recs.push(rec)
  }
  tracker.sweep()
  for (const rec of recs) {
    if (engine.requestHead(rec, idleReq, idleRes)) throw new Error('not settled by the sweep')
  }
  gc()
  const t0 = process.hrtime.bigint()
  tracker.sweep()
  const ns = Number(process.hrtime.bigint() - t0)
  const want = ended ? 'idle' : 'active'
  if (tracker.snapshot()[want] !== n) throw new Error(`records did not settle ${want}`)
  tracker.close()
  return ns
}

/** ns per request of the engine's `requestBegin` + `requestHead` + `responseEnd`, as the binding calls them. */
function requestBookkeeping(n) {
  const tracker = new ConnectionTracker()
  const binding = fakeBinding(tracker)
  const handle = { bytesRead: 0 }
  const recs = []
  for (let i = 0; i < n; i++) {
    const socket = fakeSocket(i)
    socket._handle = handle
    Object.defineProperty(socket, 'bytesRead', { get: () => handle.bytesRead })
    recs.push(engineOf(tracker).open(socket, false, binding))
  }
  const engine = engineOf(tracker)
  const run = (count) => {
    for (let i = 0; i < count; i++) {
      const rec = recs[i % n]
      engine.requestBegin(rec)
      engine.requestHead(rec, idleReq, idleRes)
      engine.responseEnd(rec, null)
    }
  }
  run(200_000)
  const times = []
  for (let k = 0; k < 5; k++) {
    const t0 = process.hrtime.bigint()
    run(300_000)
    times.push(Number(process.hrtime.bigint() - t0) / 300_000)
  }
  tracker.close()
  return median(times)
}

/**
 * 5,000 requests whose bodies arrive at 1 KB/s (above the rate): (a) all opened at once, so
 * every check falls due in the same sweep; (b) opened one per ms over 5 s, the steady state,
 * where each 250 ms sweep finds about 1/20 of them due.
 */
function bodyInProgress(n) {
  const rows = []
  const bodyReq = () => ({
    httpVersion: '1.1',
    rawHeaders: ['Content-Length', '10000000'],
    headers: { 'content-length': '10000000' },
    complete: false,
    destroyed: false,
  })
  const open = (t, spreadMs) => {
    const { tracker, clock, binding } = t
    const sockets = []
    for (let i = 0; i < n; i++) {
      clock.t = spreadMs === 0 ? 0 : Math.floor((i * spreadMs) / n)
      const socket = fakeSocket(i)
      sockets.push(socket)
      const rec = engineOf(tracker).open(socket, false, binding)
      engineOf(tracker).requestBegin(rec)
      // As Node's ServerResponse: it carries its request (`res.req`).
      const req = bodyReq()
      engineOf(tracker).requestHead(rec, req, { req, shouldKeepAlive: true, headersSent: false })
    }
    return sockets
  }
  // (a) all due at once
  {
    const times = []
    for (let r = 0; r < 9; r++) {
      const t = makeTracker()
      const sockets = open(t, 0)
      for (const s of sockets) s.bytesRead += 5_000 // 1 KB/s over the 5 s window
      gc()
      const t0 = process.hrtime.bigint()
      const cut = t.tracker.sweep(5_000)
      times.push(Number(process.hrtime.bigint() - t0))
      if (cut !== 0) throw new Error('a healthy body was cut')
      t.tracker.close()
    }
    const m = median(times)
    rows.push(['all 5,000 checks due in one sweep', `${ms(m)} ms`, n, `${fmt(m / n, 0)} ns`])
  }
  // (b) steady state: sweeps every 250 ms for 30 s of fake time
  {
    const t = makeTracker()
    const sockets = open(t, 5_000)
    const per = []
    for (let now = 5_000; now <= 35_000; now += 250) {
      // 1 KB/s since each request began (request i began at i ms).
      for (let i = 0; i < n; i++) sockets[i].bytesRead = now - Math.floor((i * 5_000) / n)
      const t0 = process.hrtime.bigint()
      if (t.tracker.sweep(now) !== 0) throw new Error('a healthy body was cut')
      per.push(Number(process.hrtime.bigint() - t0))
    }
    const m = median(per)
    rows.push([
      'spread over the window, sweep every 250 ms (median)',
      `${ms(m)} ms`,
      `~${n / 20}`,
      `${fmt(m / (n / 20), 0)} ns`,
    ])
    rows.push(['  same, p99 of 121 sweeps', `${ms(pct(sorted(per), 99))} ms`, '', ''])
    t.tracker.close()
  }
  // (c) nothing due between checks
  {
    const t = makeTracker()
    open(t, 0)
    const r = sweepNothingDue(t.tracker, 4_999, 100_000)
    rows.push(['no check due (between windows)', `${fmt(r.meanNs, 0)} ns`, 0, '-'])
    t.tracker.close()
  }
  return rows
}

if (import.meta.url === `file://${process.argv[1]}`) await main()
