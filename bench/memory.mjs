#!/usr/bin/env node
/**
 * Memory per connection: N idle keep-alive connections (each served one request, then left
 * open), guarded vs bare, heap and RSS measured in the server process after full GCs. The
 * difference guarded − bare, per connection, is what connguard costs.
 *
 *   node bench/memory.mjs [--sizes 10000,max] [--rounds 1] [--cases node-http,fastify-http,node-https]
 *
 * HTTPS runs at 2,000 connections (10,000 full handshakes take minutes on a small machine;
 * the per-connection figure does not depend on the count), Fastify at 10,000.
 * `max` is as many as this process's open-file limit allows (`ulimit -n`, less headroom):
 * the client holds one end of every connection and the server the other, each in its own
 * process. The limit cannot be raised above the hard limit without privileges; check
 * `ulimit -Hn` and raise it in the shell that runs the benchmark to go further.
 * Target: ≤ 400 bytes per connection.
 */
import { execFileSync } from 'node:child_process'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import { fileURLToPath } from 'node:url'
import { fmt, HOST, machine, median, parseArgs, startChild, table } from './lib/common.mjs'

const serverScript = fileURLToPath(new URL('./lib/idle-server.mjs', import.meta.url))

function fileLimit() {
  try {
    return Number(execFileSync('bash', ['-c', 'ulimit -n'], { encoding: 'utf8' }).trim())
  } catch {
    return 1024
  }
}

const REQUEST = Buffer.from(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`)

/** Opens `n` connections, 256 at a time; each sends one request and keeps the connection. */
async function openIdle(port, secure, n) {
  const sockets = []
  let next = 0
  let failed = 0
  const one = () =>
    new Promise((resolve) => {
      const socket = secure
        ? tls.connect({ port, host: HOST, rejectUnauthorized: false })
        : net.connect(port, HOST)
      let got = ''
      const done = (ok) => {
        socket.removeAllListeners('data')
        if (ok) sockets.push(socket)
        else {
          failed++
          socket.destroy()
        }
        resolve()
      }
      socket.once(secure ? 'secureConnect' : 'connect', () => socket.write(REQUEST))
      socket.on('data', (chunk) => {
        got += chunk.toString('latin1')
        if (got.includes('\r\n\r\n') && got.startsWith('HTTP/1.1 200')) done(true)
      })
      socket.on('error', () => done(false))
    })
  const worker = async () => {
    while (next < n) {
      next++
      await one()
    }
  }
  await Promise.all(Array.from({ length: 256 }, worker))
  return { sockets, failed }
}

async function measureOnce(name, variant, n) {
  const [framework, protocol] = name.split('-')
  const secure = protocol === 'https'
  const server = await startChild(serverScript, [variant, framework, protocol], {
    nodeArgs: ['--expose-gc'],
  })
  try {
    // One connection first so lazily created things (parsers pool, TLS context) are in the baseline.
    const warm = await openIdle(server.info.port, secure, 50)
    for (const s of warm.sockets) s.destroy()
    await new Promise((resolve) => setTimeout(resolve, 200))
    const before = await server.request({ type: 'measure' })
    // In two halves: the second half's cost excludes what the first paid once (code V8
    // compiles and optimizes as the connections come, TLS caches), which a run of 2,000
    // connections otherwise spreads over each of them.
    const first = await openIdle(server.info.port, secure, Math.floor(n / 2))
    const mid = await server.request({ type: 'measure' })
    const second = await openIdle(server.info.port, secure, n - Math.floor(n / 2))
    const after = await server.request({ type: 'measure' })
    const sockets = [...first.sockets, ...second.sockets]
    const failed = first.failed + second.failed
    for (const s of sockets) s.destroy()
    const live = after.connections - before.connections
    const secondLive = after.connections - mid.connections
    if (variant === 'guarded' && after.idle < live)
      throw new Error(`${after.idle} idle tracked, ${live} open`)
    return {
      live,
      failed,
      heap: (after.heapUsed - before.heapUsed) / live,
      heapSecond: (after.heapUsed - mid.heapUsed) / secondLive,
      external: (after.external - before.external) / live,
      rss: (after.rss - before.rss) / live,
    }
  } finally {
    await server.stop()
  }
}

export async function main(argv) {
  const args = parseArgs(argv)
  const limit = fileLimit()
  const max = Math.min(limit - 200, 28_000) // headroom for the process's other files; port range
  const sizes = String(args.sizes ?? '10000,max')
    .split(',')
    .map((s) => (s === 'max' ? max : Number(s)))
  const rounds = Number(args.rounds ?? 1)
  const cases = String(args.cases ?? 'node-http,fastify-http,node-https').split(',')
  console.log(`\n## Memory per idle keep-alive connection (${machine()})`)
  console.log(
    `\nopen-file limit here: ${limit} (ulimit -n; hard ${hardLimit()}); ` +
      `sizes ${sizes.join(', ')}; ${rounds} alternated rounds, median.\n`,
  )
  const rows = []
  for (const name of cases) {
    const caseSizes = name.endsWith('https')
      ? [Math.min(2_000, ...sizes)]
      : name.startsWith('fastify')
        ? [Math.min(...sizes)]
        : sizes
    for (const n of caseSizes) {
      const t0 = performance.now()
      const r = { bare: [], guarded: [] }
      for (let i = 0; i < rounds; i++) {
        const order = i % 2 === 0 ? ['bare', 'guarded'] : ['guarded', 'bare']
        for (const v of order) r[v].push(await measureOnce(name, v, n))
      }
      const m = (v, k) => median(r[v].map((x) => x[k]))
      const heapDiff = m('guarded', 'heap') - m('bare', 'heap')
      const rssDiff = m('guarded', 'rss') - m('bare', 'rss')
      rows.push([
        name,
        m('guarded', 'live').toLocaleString('en'),
        fmt(m('bare', 'heap'), 0),
        fmt(m('guarded', 'heap'), 0),
        fmt(heapDiff, 0),
        fmt(m('guarded', 'heapSecond') - m('bare', 'heapSecond'), 0),
        fmt(m('guarded', 'external') - m('bare', 'external'), 0),
        fmt(m('bare', 'rss'), 0),
        fmt(m('guarded', 'rss'), 0),
        fmt(rssDiff, 0),
        heapDiff <= 400 ? 'met' : 'MISSED',
      ])
      console.error(
        `  ${name} ${n}: heap +${fmt(heapDiff, 0)} B/conn, rss +${fmt(rssDiff, 0)} ` +
          `(${fmt((performance.now() - t0) / 1000, 0)} s)`,
      )
    }
  }
  table(
    [
      'case',
      'connections',
      'heap B/conn bare',
      'guarded',
      'connguard heap',
      'connguard heap, 2nd half',
      'connguard external',
      'RSS B/conn bare',
      'guarded',
      'connguard RSS',
      '≤ 400 B (heap)',
    ],
    rows,
  )
  console.log(
    '\nPer connection = (after − before) / connections, in the server process after full GCs. ' +
      'RSS includes allocator and page granularity: heap is the precise figure. ' +
      '"2nd half": the second half of the connections alone, without what the first half paid ' +
      'once (code compiled on the way, caches); the target is judged on the whole.',
  )
}

function hardLimit() {
  try {
    return execFileSync('bash', ['-c', 'ulimit -Hn'], { encoding: 'utf8' }).trim()
  } catch {
    return '?'
  }
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2))
