/**
 * A `ws` WebSocketServer on a plain http server, for the WebSocket benchmark. Run with
 * --expose-gc.
 *
 *   node --expose-gc ws-server.mjs <bare|heartbeat|attached|guarded>
 *
 * Guarded: a ConnectionTracker with an injected clock (`webSocket` defaults: 30 s / 20 s)
 * linked by `watchWebSockets(wss)`, so the benchmark drives the PING rounds itself.
 * Answers `measure` (memory after full GCs) and, guarded, `sweeps` (the cost of sweeps with
 * nothing due, and of one full ping interval: its checks, the pings, the pongs handled).
 */
import http from 'node:http'
import { performance } from 'node:perf_hooks'
import { WebSocketServer } from 'ws'
import { fullGc, HOST, serveParent } from './common.mjs'

const [variant] = process.argv.slice(2)
const server = http.createServer((_req, res) => res.end('ok'))
const wss = new WebSocketServer({ server })
let tracker = null
/** Its engine: the sweep's slices are run directly below. */
let engine = null
const clock = { t: 1_000, now: () => clock.t }
let pongs = 0
wss.on('connection', (ws) => {
  ws.on('message', () => {})
  ws.on('pong', () => pongs++)
})
// `heartbeat`: the hand-written heartbeat from ws's README, what connguard replaces: each
// WebSocket gets `isAlive` and a pong listener; every 30 s one loop terminates those that
// did not answer and pings the rest. Its round is run on request, not on a timer.
function heartbeat() {
  this.isAlive = true
}
if (variant === 'heartbeat') {
  wss.on('connection', (ws) => {
    ws.isAlive = true
    ws.on('pong', heartbeat)
  })
}
function heartbeatRound() {
  for (const ws of wss.clients) {
    if (ws.isAlive === false) {
      ws.terminate()
      continue
    }
    ws.isAlive = false
    ws.ping()
  }
}
if (variant !== 'bare' && variant !== 'heartbeat') {
  const { ConnectionTracker } = await import('@connguard/core')
  const { engineOf } = await import('@connguard/core/internal')
  // Pressure off: 10,000 connections are half this process's open-file limit.
  tracker = new ConnectionTracker({
    clock,
    pressure: false,
    ...(variant === 'attached' ? { webSocket: false } : {}),
  }).attach(server)
  engine = engineOf(tracker)
  if (variant === 'guarded') tracker.watchWebSockets(wss)
}
await new Promise((resolve) => server.listen({ host: HOST, port: 0, backlog: 4096 }, resolve))

const waitFor = async (condition, ms = 60_000) => {
  const until = performance.now() + ms
  while (!condition()) {
    if (performance.now() > until) throw new Error('timed out')
    await new Promise((resolve) => setTimeout(resolve, 5))
  }
}

serveParent({
  heartbeat: async () => {
    const n = wss.clients.size
    const before = pongs
    const cpu0 = process.cpuUsage()
    const t0 = performance.now()
    heartbeatRound()
    const loopMs = performance.now() - t0
    await waitFor(() => pongs - before >= n)
    const cpu = process.cpuUsage(cpu0)
    return { n, loopMs, cpuMicros: cpu.user + cpu.system }
  },
  measure: async () => {
    await fullGc()
    const m = process.memoryUsage()
    return {
      heapUsed: m.heapUsed,
      external: m.external + m.arrayBuffers,
      rss: m.rss,
      clients: wss.clients.size,
      upgraded: tracker?.snapshot().upgraded ?? null,
    }
  },
  sweeps: async () => {
    const n = wss.clients.size
    const interval = tracker.options.webSocket.pingInterval
    // Nothing due: the heap's top is in the future.
    const idle = []
    for (let i = 0; i < 200; i++) {
      const t0 = performance.now()
      tracker.sweep()
      idle.push(performance.now() - t0)
    }
    // One full interval and a quarter, in the checks' steps (pingInterval / 4): every
    // WebSocket is checked four times and pinged once; the pongs are handled as they come.
    const steps = []
    const cpu0 = process.cpuUsage()
    const wall0 = performance.now()
    let pingSweep = 0
    let longestSlice = 0
    let longestSliceCpu = 0
    let slices = 0
    for (let k = 0; k < 5; k++) {
      clock.t += interval / 4
      const before = pongs
      // As the sweeper runs it: slices of 4 ms, the rest after a turn of the event loop.
      let ms = 0
      for (let continued = false; ; continued = true) {
        const c0 = process.cpuUsage()
        const t0 = performance.now()
        const done = engine.sweepSlice(clock.t, t0 + 4, continued) >= 0
        const slice = performance.now() - t0
        const c = process.cpuUsage(c0)
        ms += slice
        slices++
        if (slice > longestSlice) {
          longestSlice = slice
          longestSliceCpu = (c.user + c.system) / 1000
        }
        if (done) break
        await new Promise((resolve) => setImmediate(resolve))
      }
      steps.push(ms)
      const sent = [...tracker.connections()].reduce((s, r) => s + (r.webSocket?.pingsSent ?? 0), 0)
      if (sent > before) {
        pingSweep = ms
        await waitFor(() => pongs >= sent)
      }
    }
    const cpu = process.cpuUsage(cpu0)
    return {
      n,
      idleSweeps: idle,
      steps,
      pingSweep,
      longestSlice,
      longestSliceCpu,
      slices,
      pongs,
      cpuMicros: cpu.user + cpu.system,
      wallMs: performance.now() - wall0,
    }
  },
})
process.send({ type: 'ready', port: server.address().port })
