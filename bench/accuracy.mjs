#!/usr/bin/env node
/**
 * Deadline accuracy: how late a connection is closed after its deadline (close − deadline),
 * over real sockets on 127.0.0.1, for the header, keep-alive and TLS handshake deadlines,
 * all set to 500 ms. connguard with sweepInterval 250 (default) and 50, against Node's own
 * timers. Lateness is measured by the client, from the moment it connected (header,
 * handshake) or received the whole response (keep-alive) to the moment it saw the close;
 * connections open 10 ms apart so deadlines fall at every phase of the sweep.
 *
 *   node bench/accuracy.mjs [--connections 200]
 *
 * Target: p99 lateness ≤ sweepInterval + 20 ms.
 */
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import { fileURLToPath } from 'node:url'
import {
  fmt,
  HOST,
  machine,
  parseArgs,
  pct,
  sleep,
  sorted,
  startChild,
  table,
} from './lib/common.mjs'

const serverScript = fileURLToPath(new URL('./lib/deadline-server.mjs', import.meta.url))
const DEADLINE = 500
const GAP_MS = 10

/**
 * One connection of `kind`; resolves with its lateness in ms, or null if the server did not
 * close it within `waitMs` (then the client closes it).
 */
function probe(kind, ports, waitMs) {
  return new Promise((resolve) => {
    const port = kind === 'handshake' ? ports.https : ports.http
    const socket = net.connect(port, HOST)
    let anchor = -1
    let got = ''
    let settled = false
    const settle = (value) => {
      if (settled) return
      settled = true
      clearTimeout(timer)
      socket.destroy()
      resolve(value)
    }
    const closed = () => settle(anchor < 0 ? null : performance.now() - anchor - DEADLINE)
    const timer = setTimeout(() => settle(null), waitMs)
    socket.on('connect', () => {
      if (kind === 'header') {
        anchor = performance.now()
        socket.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n`) // and never the end of the head
      } else if (kind === 'handshake') {
        anchor = performance.now() // a TLS port, and not a byte sent
      } else {
        socket.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n\r\n`)
      }
    })
    socket.on('data', (chunk) => {
      if (kind !== 'keepalive' || anchor >= 0) return
      got += chunk.toString('latin1')
      // The response is 'ok' with Content-Length 2: complete once the body is in.
      const end = got.indexOf('\r\n\r\n')
      if (end >= 0 && got.length >= end + 4 + 2) anchor = performance.now()
    })
    socket.on('end', closed)
    socket.on('close', closed)
    socket.on('error', closed)
  })
}

async function measure(kind, ports, n, waitMs) {
  const pending = []
  for (let i = 0; i < n; i++) {
    pending.push(probe(kind, ports, waitMs))
    await sleep(GAP_MS)
  }
  const results = await Promise.all(pending)
  const late = results.filter((v) => v !== null)
  return { late: sorted(late), open: results.length - late.length }
}

export async function main(argv) {
  const args = parseArgs(argv)
  const n = Number(args.connections ?? 200)
  console.log(`\n## Deadline accuracy (${machine()})`)
  console.log(
    `\n${n} connections per row, opened ${GAP_MS} ms apart; deadlines 500 ms; lateness = ` +
      'close seen by the client − deadline.\n',
  )
  const configs = [
    {
      label: 'connguard, sweepInterval 250 (default)',
      mode: 'guarded',
      interval: 250,
      kinds: ['header', 'keepalive', 'handshake'],
      target: 270,
    },
    {
      label: 'connguard, sweepInterval 50',
      mode: 'guarded',
      interval: 50,
      kinds: ['header', 'keepalive', 'handshake'],
      target: 70,
    },
    {
      label: 'Node, connectionsCheckingInterval 250',
      mode: 'node',
      interval: 250,
      kinds: ['header', 'keepalive', 'handshake'],
    },
    {
      label: 'Node, connectionsCheckingInterval 5000',
      mode: 'node',
      interval: 5000,
      kinds: ['header'],
    },
  ]
  const names = {
    header: 'headers (request head never ends)',
    keepalive: 'keep-alive (idle after a response)',
    handshake: 'TLS handshake (no byte sent)',
  }
  const rows = []
  for (const c of configs) {
    const server = await startChild(serverScript, [c.mode, String(c.interval)])
    try {
      for (const kind of c.kinds) {
        const waitMs = DEADLINE + Math.max(3_000, c.interval * 2) + 1_000
        const { late, open } = await measure(kind, server.info, n, waitMs)
        const p99 = pct(late, 99)
        rows.push([
          c.label,
          names[kind],
          late.length,
          fmt(pct(late, 50), 1),
          fmt(pct(late, 90), 1),
          fmt(p99, 1),
          fmt(late[late.length - 1], 1),
          open,
          c.target === undefined ? '' : `≤ ${c.target} ${p99 <= c.target ? 'met' : 'MISSED'}`,
        ])
      }
    } finally {
      await server.stop()
    }
  }
  // Node's defaults, from how it enforces them (not worth minutes of waiting to observe).
  rows.push([
    "Node's defaults (computed)",
    'headers: 60 s, checked every 30 s',
    '-',
    '15000',
    '27000',
    '29700',
    '30000',
    '-',
    '',
  ])
  rows.push([
    "Node's defaults (computed)",
    'keep-alive: 5 s timer + 1 s buffer',
    '-',
    '1000',
    '1000',
    '1000',
    '1000',
    '-',
    '',
  ])
  table(
    [
      'enforced by',
      'deadline',
      'closed',
      'p50 ms',
      'p90 ms',
      'p99 ms',
      'max ms',
      'not closed',
      'target p99',
    ],
    rows,
  )
  console.log(
    "\nNode's header check runs every connectionsCheckingInterval (30 s by default) and closes " +
      'a connection at the first check after its deadline: lateness anywhere in [0, interval), ' +
      'evenly spread when deadlines cover a whole interval. The 5000 ms row measures that (its ' +
      'deadlines span 2 s of one interval, hence 2.5–4.5 s); the defaults rows are computed. ' +
      "Node's keep-alive and handshake limits are per-socket timers; Node 20 arms the keep-alive " +
      'one 1 s after keepAliveTimeout by design (HTTP_SERVER_KEEP_ALIVE_TIMEOUT_BUFFER).',
  )
}

if (import.meta.url === `file://${process.argv[1]}`) await main(process.argv.slice(2))
