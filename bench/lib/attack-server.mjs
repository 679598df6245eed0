/**
 * The attacked server: Fastify over HTTPS on 127.0.0.1, hello world. Started by attack.mjs
 * under `ulimit -n 2048`.
 *
 *   node attack-server.mjs bare               Fastify's defaults
 *   node attack-server.mjs guarded '<json>'   connguard with these options
 *
 * Sends `{ type: 'ready', port }`, then `{ type: 'sample', … }` every second: open files,
 * live connections and, when guarded, the tracker's counts.
 */
import { readFileSync } from 'node:fs'
import { monitorEventLoopDelay, PerformanceObserver, performance } from 'node:perf_hooks'
import Fastify from 'fastify'
import { HOST, openFiles, serveParent, tlsOptions } from './common.mjs'

const [variant, json] = process.argv.slice(2)
const app = Fastify({ logger: false, https: tlsOptions })
if (variant === 'guarded') {
  const { connguard } = await import('@connguard/fastify')
  await app.register(connguard, JSON.parse(json))
}
app.get('/', async () => ({ hello: 'world' }))
// Instrumentation (bench only): the sweeper runs each sweep in slices through
// the engine's `sweepSlice()`, so an own property on the engine wraps it: the longest a slice
// blocks the loop, and the most slices one sweep took.
const sweeps = { maxMs: 0, totalMs: 0, maxSlices: 0 }
if (variant === 'guarded') {
  const { engineOf } = await import('@connguard/core/internal')
  const engine = engineOf(app.connguard)
  const slice = engine.sweepSlice.bind(engine)
  let slices = 0
  engine.sweepSlice = (now, until, continued) => {
    const t = performance.now()
    const cut = slice(now, until, continued)
    const ms = performance.now() - t
    sweeps.totalMs += ms
    if (ms > sweeps.maxMs) sweeps.maxMs = ms
    slices = continued ? slices + 1 : 1
    if (slices > sweeps.maxSlices) sweeps.maxSlices = slices
    return cut
  }
}
const gc = { maxMs: 0, totalMs: 0 }
new PerformanceObserver((list) => {
  for (const e of list.getEntries()) {
    gc.totalMs += e.duration
    if (e.duration > gc.maxMs) gc.maxMs = e.duration
  }
}).observe({ entryTypes: ['gc'] })
let serverErrors = 0
app.server.on('error', () => {
  serverErrors++
})
await app.listen({ host: HOST, port: 0, backlog: 511 })

const delay = monitorEventLoopDelay({ resolution: 10 })
delay.enable()
const t0 = performance.now()
let lastCpu = process.cpuUsage()
let lastWait = runQueueWait()
let lastOverflows = listenOverflows()
let lastFiles = 0
const timer = setInterval(() => {
  const cpu = process.cpuUsage(lastCpu)
  lastCpu = process.cpuUsage()
  const overflows = listenOverflows()
  const overflowed = overflows - lastOverflows
  lastOverflows = overflows
  const wait = runQueueWait()
  const waited = wait - lastWait
  lastWait = wait
  // At the file limit, listing /proc/self/fd fails too (it needs a descriptor): report the limit.
  const files = openFiles()
  if (Number.isFinite(files)) lastFiles = files
  app.server.getConnections((_err, connections) => {
    const snap = variant === 'guarded' ? app.connguard.snapshot() : null
    process.send({
      type: 'sample',
      t: (performance.now() - t0) / 1000,
      files: Number.isFinite(files) ? files : `≥ ${Math.max(lastFiles, 2040)} (EMFILE)`,
      cpu: (cpu.user + cpu.system) / 1e6,
      // ms this process was runnable but waiting for a CPU (other processes had it)
      runQueueWaitMs: waited,
      acceptQueue: acceptQueue(),
      // Machine-wide: connections the kernel dropped because an accept queue was full.
      listenOverflows: overflowed,
      sweepMaxMs: sweeps.maxMs,
      sweepTotalMs: sweeps.totalMs,
      sweepMaxSlices: sweeps.maxSlices,
      gcMaxMs: gc.maxMs,
      gcTotalMs: gc.totalMs,
      connections,
      handshaking: snap === null ? null : snap.new + snap.handshaking,
      closedByReason: snap?.closedByReason ?? null,
      pressure: snap?.pressure ?? null,
      loopDelayP99: delay.percentile(99) / 1e6,
      serverErrors,
    })
    delay.reset()
    sweeps.maxMs = sweeps.totalMs = sweeps.maxSlices = 0
    gc.maxMs = gc.totalMs = 0
  })
}, 1_000)
timer.unref()
/** Connections completed by the kernel and waiting for accept() (LISTEN socket's rx_queue). */
function acceptQueue() {
  try {
    const hexPort = app.server.address().port.toString(16).toUpperCase().padStart(4, '0')
    for (const line of readFileSync('/proc/net/tcp', 'utf8').split('\n')) {
      const f = line.trim().split(/\s+/)
      if (f[1]?.endsWith(`:${hexPort}`) && f[3] === '0A')
        return Number.parseInt(f[4].split(':')[1], 16)
    }
  } catch {}
  return Number.NaN
}

/** TcpExt ListenOverflows (machine-wide counter): completed handshakes dropped, queue full. */
function listenOverflows() {
  try {
    const [names, values] = readFileSync('/proc/net/netstat', 'utf8')
      .split('\n')
      .filter((l) => l.startsWith('TcpExt:'))
      .map((l) => l.split(/\s+/))
    return Number(values[names.indexOf('ListenOverflows')])
  } catch {
    return Number.NaN
  }
}

/** ns → ms this process spent waiting on a run queue (Linux schedstat); NaN elsewhere. */
function runQueueWait() {
  try {
    return Number(readFileSync('/proc/self/schedstat', 'utf8').split(' ')[1]) / 1e6
  } catch {
    return Number.NaN
  }
}

serveParent({})
process.send({ type: 'ready', port: app.server.address().port, limit: null })
