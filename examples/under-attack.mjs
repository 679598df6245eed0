#!/usr/bin/env node
/**
 * Under attack: the same slowloris flood against two Fastify servers (plain HTTP, at most
 * 100 connections each, connguard's default 30 s header deadline), one with pressure (the
 * default) and one with `pressure: false`, while a legitimate client asks for `GET /` on a
 * fresh connection 20 times a second.
 *
 * Without pressure the attackers fill the 100 slots and hold them for the header deadline:
 * the legitimate client is refused (`max_concurrent_connections_exceeded`). With pressure,
 * the level rises as the slots fill, the attackers' connections are shed oldest first
 * (`shed_under_pressure`) or cut at their shrunken header deadline, and every legitimate
 * request is served. Prints one line a second per server and the closes by reason.
 *
 *   node examples/under-attack.mjs           5 s of attack per server, then exit
 *   node examples/under-attack.mjs --smoke   3 s per server; exit 0 only if the guarded one
 *                                            served every legitimate request and shed attackers
 *
 * Everything runs on 127.0.0.1 and stops by itself; at most 60 attacker connections a second.
 */
import net from 'node:net'
import { connguard } from '@connguard/fastify'
import Fastify from 'fastify'

const smoke = process.argv.includes('--smoke') || process.env.SMOKE === '1'
const SECONDS = smoke ? 3 : 5
const ATTACK_RATE = 60
const LEGIT_RATE = 20
const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** A guarded hello-world server; `pressure` as given (undefined: the default, on). */
async function start(pressure) {
  const app = Fastify()
  await app.register(connguard, {
    maxConnections: 100,
    sweepInterval: 100,
    drainTimeout: 500,
    ...(pressure === undefined ? {} : { pressure }),
  })
  app.get('/', async () => 'hello')
  await app.listen({ host: '127.0.0.1', port: 0 })
  return app
}

/** Slowloris: a request head that never ends, one more header line every second. */
function attacker(port, sockets) {
  const s = net.connect({ host: '127.0.0.1', port })
  sockets.add(s)
  s.on('error', () => {})
  let timer
  s.once('connect', () => {
    s.write('GET / HTTP/1.1\r\nHost: localhost\r\n')
    timer = setInterval(() => s.writable && s.write('X-Keep: waiting\r\n'), 1_000)
  })
  s.once('close', () => {
    clearInterval(timer)
    sockets.delete(s)
  })
}

/** One GET on a new connection: resolves true for a 200 within 3 s. */
function legit(port) {
  return new Promise((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port })
    let data = ''
    const done = (ok) => {
      clearTimeout(timer)
      s.destroy()
      resolve(ok)
    }
    const timer = setTimeout(() => done(false), 3_000)
    s.on('error', () => done(false))
    s.on('close', () => done(data.startsWith('HTTP/1.1 200')))
    s.once('connect', () =>
      s.write('GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n'),
    )
    s.on('data', (chunk) => {
      data += chunk
    })
  })
}

async function run(label, pressure) {
  const app = await start(pressure)
  const { port } = app.server.address()
  const sockets = new Set()
  const results = []
  const settled = []
  console.log(`\n${label}`)
  const t0 = Date.now()
  let second = 0
  let opened = 0
  while (Date.now() - t0 < SECONDS * 1000) {
    const elapsed = Date.now() - t0
    while (opened < (elapsed * ATTACK_RATE) / 1000) {
      attacker(port, sockets)
      opened++
    }
    if (Math.floor(elapsed / (1000 / LEGIT_RATE)) >= results.length) {
      results.push(legit(port).then((ok) => settled.push(ok)))
    }
    if (elapsed >= (second + 1) * 1000) {
      second++
      const snap = app.connguard.snapshot()
      const level = snap.pressure === null ? '   -' : snap.pressure.level.toFixed(2)
      console.log(
        `  ${second} s: ${String(snap.total).padStart(3)} connections, pressure level ${level}, ` +
          `legitimate ${settled.filter(Boolean).length}/${settled.length} served so far`,
      )
    }
    await sleep(10)
  }
  await Promise.all(results)
  const served = settled
  for (const s of sockets) s.destroy()
  const { closedByReason } = app.connguard.snapshot()
  console.log(`  closes by reason: ${JSON.stringify(closedByReason)}`)
  await app.close()
  return { served: served.filter(Boolean).length, total: served.length, closedByReason }
}

const bare = await run('pressure: false (deadlines and the cap alone)', false)
const guarded = await run('pressure on (the default)', undefined)

console.log(
  `\nlegitimate requests served: ${guarded.served}/${guarded.total} with pressure, ` +
    `${bare.served}/${bare.total} without`,
)
const shed = guarded.closedByReason.shed_under_pressure ?? 0
const ok = guarded.served === guarded.total && shed > 0
console.log(
  ok
    ? `OK: every legitimate request served; ${shed} attacker connections shed_under_pressure`
    : 'FAILED: the guarded server did not serve every legitimate request',
)
process.exitCode = ok || !smoke ? 0 : 1
