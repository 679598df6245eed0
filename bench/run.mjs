#!/usr/bin/env node
/**
 * Runs the benchmarks, each in its own Node process, and prints their tables.
 *
 *   node bench/run.mjs                       all of them, shortened to stay under 10 minutes
 *                                            on 2 cores: overhead 3 pairs of 3 s, memory at
 *                                            10,000 connections, churn of 30,000 connections,
 *                                            instructions per request (callgrind) of Fastify
 *                                            keep-alive on this Node
 *   node bench/run.mjs sweep accuracy        only these
 *   node bench/run.mjs --full                overhead 5 pairs of 5 s with the wrk cross-check,
 *                                            memory up to the file limit, churn of 100,000
 *                                            (what RESULTS.md reports; about 17 minutes), and
 *                                            instructions per request for Fastify and Express,
 *                                            keep-alive and close, on this Node, 24 and 26
 *                                            (callgrind; about an hour more)
 *   node bench/run.mjs overhead -- --only fastify-http-ka --pairs 7
 *                                            arguments after `--` go to each named benchmark
 *
 * `pnpm bench` builds the packages first: the benchmarks load their dist builds.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { fileURLToPath } from 'node:url'
import { machine } from './lib/common.mjs'

const BENCHMARKS = {
  sweep: { nodeArgs: ['--expose-gc'], args: [] },
  memory: { nodeArgs: [], args: ['--sizes', '10000'] },
  accuracy: { nodeArgs: [], args: [] },
  overhead: { nodeArgs: [], args: ['--pairs', '3', '--duration', '3'] },
  attack: { nodeArgs: [], args: [] },
  // Its server process runs with --expose-gc (started by churn.mjs).
  churn: { nodeArgs: [], args: ['--connections', '30000'] },
  websocket: { nodeArgs: [], args: ['--n', '10000'] },
  // HTTP/1.1 only in the short run; --full adds HTTP/2 over TLS and 10 drains.
  drain: { nodeArgs: [], args: ['--drains', '3'] },
  // Skips with a message when valgrind is not installed.
  instructions: { nodeArgs: [], args: [] },
  // The tracker's request path alone (callgrind, no socket): about a minute a runtime.
  'tracker-path': { nodeArgs: [], args: [] },
  // Node's connections list, read once a sweep: 1k/10k/50k parsers, this Node and 24/26.
  'heads-list': { nodeArgs: [], args: [] },
}
const FULL = {
  overhead: ['--pairs', '5', '--duration', '5', '--wrk'],
  memory: ['--sizes', '10000,max'],
  churn: ['--connections', '100000'],
  drain: ['--drains', '10', '--h2'],
  instructions: ['--full'],
  'tracker-path': ['--nodes', 'this,24,26'],
}

const argv = process.argv.slice(2)
const dash = argv.indexOf('--')
const own = dash < 0 ? argv : argv.slice(0, dash)
const passThrough = dash < 0 ? [] : argv.slice(dash + 1)
const full = own.includes('--full')
const names = own.filter((a) => !a.startsWith('--'))
for (const name of names) {
  if (!(name in BENCHMARKS)) {
    console.error(`unknown benchmark ${name}; one of: ${Object.keys(BENCHMARKS).join(', ')}`)
    process.exit(2)
  }
}
const selected = names.length > 0 ? names : Object.keys(BENCHMARKS)

console.log(`# connguard benchmarks\n\n${machine()}; started ${new Date().toISOString()}`)
const started = performance.now()
let failed = 0
for (const name of selected) {
  const b = BENCHMARKS[name]
  const args = passThrough.length > 0 ? passThrough : full && FULL[name] ? FULL[name] : b.args
  const script = fileURLToPath(new URL(`./${name}.mjs`, import.meta.url))
  const t0 = performance.now()
  const child = spawn(process.execPath, [...b.nodeArgs, script, ...args], { stdio: 'inherit' })
  const [code] = await once(child, 'exit')
  const seconds = ((performance.now() - t0) / 1000).toFixed(0)
  console.log(`\n(${name}: ${seconds} s${code === 0 ? '' : `, exit code ${code}`})`)
  if (code !== 0) failed++
}
console.log(`\nall done in ${((performance.now() - started) / 60_000).toFixed(1)} min`)
process.exitCode = failed > 0 ? 1 : 0
