/**
 * Shared helpers for the benchmarks: statistics, tables, child processes and the fixture
 * certificate. Benchmarks print tables; they are not tests.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { readdirSync, readFileSync } from 'node:fs'
import os from 'node:os'
import { fileURLToPath } from 'node:url'

export const HOST = '127.0.0.1'
export const benchDir = fileURLToPath(new URL('..', import.meta.url))

const fixtures = new URL('../../test/fixtures/', import.meta.url)
/** The repository's throwaway self-signed P-256 test certificate (test/fixtures/README.md). */
export const tlsOptions = {
  key: readFileSync(new URL('key.pem', fixtures)),
  cert: readFileSync(new URL('cert.pem', fixtures)),
}

/** Full GCs until the heap settles (the process must run with --expose-gc). */
export async function fullGc() {
  for (let i = 0; i < 4; i++) {
    globalThis.gc()
    await new Promise((resolve) => setImmediate(resolve))
  }
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** Sorted copy. */
export const sorted = (values) => Float64Array.from(values).sort()

/** Nearest-rank percentile (p in 0..100) of a sorted array. */
export function pct(sortedValues, p) {
  const n = sortedValues.length
  if (n === 0) return Number.NaN
  const i = Math.min(n - 1, Math.max(0, Math.ceil((p / 100) * n) - 1))
  return sortedValues[i]
}

export function median(values) {
  return pct(sorted(values), 50)
}

export function mean(values) {
  let s = 0
  for (const v of values) s += v
  return s / values.length
}

/** A fixed-resolution latency histogram (10 µs buckets up to 10 s): cheap to record into. */
export class Histogram {
  constructor(resolutionMs = 0.01, maxMs = 10_000) {
    this.res = resolutionMs
    this.counts = new Uint32Array(Math.ceil(maxMs / resolutionMs) + 1)
    this.n = 0
    this.max = 0
  }
  record(ms) {
    const i = Math.min(this.counts.length - 1, Math.max(0, Math.round(ms / this.res)))
    this.counts[i]++
    this.n++
    if (ms > this.max) this.max = ms
  }
  percentile(p) {
    if (this.n === 0) return Number.NaN
    const rank = Math.max(1, Math.ceil((p / 100) * this.n))
    let seen = 0
    for (let i = 0; i < this.counts.length; i++) {
      seen += this.counts[i]
      if (seen >= rank) return i * this.res
    }
    return this.max
  }
}

/** Prints an aligned text table (also valid Markdown). */
export function table(headers, rows) {
  const cells = [headers, ...rows].map((r) => r.map((c) => String(c)))
  const widths = headers.map((_, i) => Math.max(...cells.map((r) => r[i].length)))
  const line = (r) => `| ${r.map((c, i) => c.padEnd(widths[i])).join(' | ')} |`
  const out = [line(cells[0]), `|${widths.map((w) => '-'.repeat(w + 2)).join('|')}|`]
  for (const r of cells.slice(1)) out.push(line(r))
  console.log(out.join('\n'))
}

export const fmt = (v, digits = 2) => (Number.isFinite(v) ? v.toFixed(digits) : String(v))

/** One line describing where a benchmark ran. */
export function machine() {
  const cpu = os.cpus()[0]?.model ?? 'unknown CPU'
  const mem = (os.totalmem() / 2 ** 30).toFixed(1)
  const load = os
    .loadavg()
    .map((l) => l.toFixed(2))
    .join(' ')
  return `${os.availableParallelism()} CPU (${cpu}), ${mem} GiB, Node ${process.version}, load ${load}`
}

/** Parses `--name value` and `--flag` arguments. */
export function parseArgs(argv = process.argv.slice(2)) {
  const args = {}
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]
    if (!a.startsWith('--')) continue
    const key = a.slice(2)
    const next = argv[i + 1]
    if (next === undefined || next.startsWith('--')) args[key] = true
    else {
      args[key] = next
      i++
    }
  }
  return args
}

/**
 * Starts `script` in a child Node process with an IPC channel. With `nofile`, it runs under
 * `bash -c 'ulimit -n N && exec node …'` so the limit applies to that process only.
 * Resolves once the child sends `{ type: 'ready', … }`.
 */
export async function startChild(script, args = [], { nofile, nodeArgs = [], env } = {}) {
  const nodeArgv = [...nodeArgs, script, ...args]
  const child =
    nofile === undefined
      ? spawn(process.execPath, nodeArgv, {
          stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
          env: { ...process.env, ...env },
        })
      : spawn(
          'bash',
          ['-c', `ulimit -n ${Number(nofile)} && exec "$0" "$@"`, process.execPath, ...nodeArgv],
          { stdio: ['ignore', 'inherit', 'inherit', 'ipc'], env: { ...process.env, ...env } },
        )
  const ready = new Promise((resolve, reject) => {
    const onMessage = (m) => {
      if (m?.type === 'ready') {
        child.off('exit', onExit)
        child.off('message', onMessage)
        resolve(m)
      }
    }
    const onExit = (code) => reject(new Error(`${script} exited with ${code} before it was ready`))
    child.on('message', onMessage)
    child.once('exit', onExit)
  })
  const info = await ready
  return { child, info, request: (msg) => request(child, msg), stop: () => stopChild(child) }
}

let nextRequestId = 1
/** Sends `msg` to a child and resolves with its reply (matched by id). */
export function request(child, msg) {
  const id = nextRequestId++
  return new Promise((resolve, reject) => {
    const onMessage = (m) => {
      if (m?.id !== id) return
      child.off('message', onMessage)
      child.off('exit', onExit)
      resolve(m)
    }
    const onExit = (code) => reject(new Error(`child exited with ${code} during ${msg.type}`))
    child.on('message', onMessage)
    child.once('exit', onExit)
    child.send({ ...msg, id })
  })
}

/** Ends a child this process started, by its own pid only: SIGTERM, then SIGKILL after 3 s. */
export async function stopChild(child) {
  if (child.exitCode !== null || child.signalCode !== null) return
  const exited = once(child, 'exit')
  child.kill('SIGTERM')
  const timer = setTimeout(() => child.kill('SIGKILL'), 3_000)
  await exited
  clearTimeout(timer)
}

/**
 * Child side: answers requests from the parent. `handlers[type](msg)` may return a value or
 * a promise; the reply is `{ id, ...value }`. The child exits when its parent goes away.
 */
export function serveParent(handlers) {
  process.on('message', async (msg) => {
    const handler = handlers[msg?.type]
    if (handler === undefined) return
    const value = await handler(msg)
    process.send({ ...value, id: msg.id })
  })
  process.on('disconnect', () => process.exit(0))
  process.on('SIGTERM', () => process.exit(0))
}

/** Open file descriptors of this process (Linux). */
export function openFiles() {
  try {
    return readdirSync('/proc/self/fd').length
  } catch {
    return Number.NaN
  }
}
