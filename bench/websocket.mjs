#!/usr/bin/env node
/**
 * WebSockets: memory per idle WebSocket with and without the guard, the CPU its PING
 * liveness costs per idle WebSocket, and the cost of one sweep with N idle WebSockets.
 * Four servers: bare `ws`; `heartbeat` (ws's README heartbeat, written by hand: what
 * connguard replaces); `attached` (a tracker with `webSocket: false`: what guarding the
 * connection costs); `guarded` (linked by `watchWebSockets`, PING liveness on). Each server
 * (`ws` on node:http) runs in its own process with --expose-gc; this process holds the N
 * `ws` clients, which answer pings as any `ws` peer does.
 *
 *   node bench/websocket.mjs [--n 10000]
 *
 * Guarded, the tracker's clock is driven by the benchmark, so one ping interval (30 s by
 * default) runs in as long as the pings and pongs take: its CPU is what one idle WebSocket
 * costs per 30 s.
 */
import http from 'node:http'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import { ConnectionTracker } from '@connguard/core'
import WebSocket, { WebSocketServer } from 'ws'
import {
  fmt,
  HOST,
  machine,
  median,
  parseArgs,
  pct,
  sorted,
  startChild,
  table,
} from './lib/common.mjs'

import { startRelay } from './lib/relay.mjs'

const args = parseArgs()
/** How long the bare server's dead WebSocket is watched before the measurement stops. */
const DEAD_WATCH_MS = Number(args['dead-watch'] ?? 120_000)
const N = Number(args.n ?? 10_000)
const serverScript = fileURLToPath(new URL('./lib/ws-server.mjs', import.meta.url))

async function openClients(port, n) {
  const clients = []
  let next = 0
  const worker = async () => {
    while (next < n) {
      next++
      const ws = new WebSocket(`ws://${HOST}:${port}/`)
      await new Promise((resolve, reject) => {
        ws.once('open', resolve)
        ws.once('error', reject)
      })
      ws.on('error', () => {})
      clients.push(ws)
    }
  }
  await Promise.all(Array.from({ length: 64 }, worker))
  return clients
}

async function run(variant) {
  const s = await startChild(serverScript, [variant], {
    nodeArgs: ['--expose-gc', ...(process.env.WS_TRACE_GC ? ['--trace-gc'] : [])],
  })
  try {
    const before = await s.request({ type: 'measure' })
    const t0 = performance.now()
    const clients = await openClients(s.info.port, N)
    const openMs = performance.now() - t0
    // Let the server finish the handshakes' bookkeeping before measuring.
    await new Promise((resolve) => setTimeout(resolve, 500))
    const after = await s.request({ type: 'measure' })
    const sweeps = variant === 'guarded' ? await s.request({ type: 'sweeps' }) : null
    const round = variant === 'heartbeat' ? await s.request({ type: 'heartbeat' }) : null
    for (const ws of clients) ws.terminate()
    return { variant, before, after, openMs, sweeps, round }
  } finally {
    await s.stop()
  }
}

console.log(`## WebSockets: ${N} idle \`ws\` connections\n\n${machine()}`)
const bare = await run('bare')
const heartbeat = await run('heartbeat')
const attached = await run('attached')
const guarded = await run('guarded')
const per = (r, key) => (r.after[key] - r.before[key]) / N
const rows = [bare, heartbeat, attached, guarded].map((r) => [
  r.variant,
  String(r.after.clients),
  fmt(per(r, 'heapUsed'), 0),
  fmt(per(r, 'rss'), 0),
  fmt(r.openMs / 1000, 1),
])
console.log('')
table(['server', 'WebSockets', 'heap B/WebSocket', 'RSS B/WebSocket', 'open s'], rows)
console.log(
  `\nattached (tracker, webSocket: false) − bare: heap ${fmt(per(attached, 'heapUsed') - per(bare, 'heapUsed'), 0)} B per connection; guarded (linked, PING liveness) − attached: ${fmt(per(guarded, 'heapUsed') - per(attached, 'heapUsed'), 0)} B per WebSocket`,
)
console.log(
  `guard − bare: heap ${fmt(per(guarded, 'heapUsed') - per(bare, 'heapUsed'), 0)} B per WebSocket, RSS ${fmt(per(guarded, 'rss') - per(bare, 'rss'), 0)} B (RSS is noisy)`,
)
const sw = guarded.sweeps
const idle = sorted(sw.idleSweeps)
console.log('')
table(
  [`sweep with ${sw.n} idle WebSockets`, 'ms'],
  [
    ['nothing due (median of 200)', fmt(median(sw.idleSweeps), 4)],
    ['nothing due (p99)', fmt(pct(idle, 99), 4)],
    ['the sweep that pings all of them (sum of its 4 ms slices)', fmt(sw.pingSweep, 1)],
    ['its longest slice (the event loop runs between slices)', fmt(sw.longestSlice, 1)],
    ['… of which CPU (the rest: the process was not running)', fmt(sw.longestSliceCpu, 1)],
    ['a sweep of read checks for all (after the pongs)', fmt(sw.steps.at(-1), 1)],
  ],
)
console.log(
  `\none ping interval (30 s) for ${sw.n} idle WebSockets: ${fmt(sw.cpuMicros / 1000, 1)} ms of server CPU (checks, pings, pongs handled by ws and the tracker) = ${fmt(sw.cpuMicros / sw.n, 1)} µs per WebSocket per 30 s (${fmt((sw.cpuMicros / sw.n / 30_000_000) * 1e6, 2)} ppm of a core); pongs ${sw.pongs}`,
)
const hb = heartbeat.round
console.log(
  `ws's README heartbeat, one round for ${hb.n} WebSockets (the loop: ${fmt(hb.loopMs, 1)} ms in one piece): ${fmt(hb.cpuMicros / 1000, 1)} ms of CPU = ${fmt(hb.cpuMicros / hb.n, 1)} µs per WebSocket; heartbeat − bare heap: ${fmt(per(heartbeat, 'heapUsed') - per(bare, 'heapUsed'), 0)} B per WebSocket`,
)

/**
 * Before/after: a WebSocket whose route dies (the relay drops everything), on a bare `ws`
 * server and on one guarded with the defaults (ping after 30 s of silence, 20 s for the
 * pong). How long each server keeps the dead socket; the bare one is watched for
 * DEAD_WATCH_MS at most. Both run at once, in this process (a few sockets).
 */
async function deadPeer(guard) {
  const server = http.createServer()
  const tracker = guard ? new ConnectionTracker().attach(server) : null
  const wss = new WebSocketServer({ server })
  tracker?.watchWebSockets(wss)
  await new Promise((resolve) => server.listen(0, HOST, resolve))
  const relay = await startRelay(server.address().port)
  const closed = new Promise((resolve) =>
    wss.once('connection', (ws) => ws.once('close', (code) => resolve({ code }))),
  )
  const reason = guard
    ? new Promise((resolve) => tracker.on('close', (rec) => resolve(rec.closeReason)))
    : Promise.resolve(null)
  const client = new WebSocket(`ws://${HOST}:${relay.port}/`)
  client.on('error', () => {})
  await new Promise((resolve) => client.once('open', resolve))
  relay.stop()
  const t0 = performance.now()
  const result = await Promise.race([
    closed,
    // connguard's close is due at about 50 s with the defaults: it is always waited for.
    new Promise((resolve) =>
      setTimeout(() => resolve(null), guard ? 120_000 : DEAD_WATCH_MS).unref(),
    ),
  ])
  const ms = performance.now() - t0
  const row = [
    guard ? 'connguard (defaults)' : 'ws alone',
    result === null
      ? `still open after ${fmt(ms / 1000, 0)} s`
      : `closed after ${fmt(ms / 1000, 1)} s`,
    result === null ? '-' : String(result.code),
    guard ? String(await reason) : '-',
  ]
  client.terminate()
  relay.close()
  for (const ws of wss.clients) ws.terminate()
  tracker?.close()
  server.close()
  return row
}

console.log(`\n### A WebSocket whose route died (relay drops everything after the handshake)\n`)
table(
  ['server', 'the dead WebSocket', 'ws close code', 'close reason'],
  await Promise.all([deadPeer(false), deadPeer(true)]),
)
