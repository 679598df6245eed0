/**
 * Pressure over real sockets and real time: a Fastify server guarded with connguard's
 * default deadlines and `maxConnections: 50`, attacked from 127.0.0.2 while a legitimate
 * client on 127.0.0.1 sends requests on fresh connections.
 *
 * - slowloris (request heads that never end), 100 new connections a second: with pressure
 *   the legitimate client is served throughout, the attackers' connections are shed with
 *   `shed_under_pressure` (or cut at their shrunken header deadline), and a healthy upload
 *   in progress survives; with `pressure: false` the same attack fills the 50 slots for the
 *   30 s header deadline and the legitimate client is refused.
 * - stalled TLS handshakes with `perIpShare`: 127.0.0.2 never holds more than its share.
 * - after the attack the level returns to 0 and deadlines relax to their configured values.
 *
 * Floors are 300 ms (1 s by default) so that the attack rate times the floor (30) stays
 * under the limit, as 1 s does for a limit in the thousands. Bounded: each attack opens at
 * most 300 connections over 3 s and every socket is destroyed at the end; 127.0.0.x only.
 */
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import type { ConnectionRecord, ConnguardFastifyOptions } from '@connguard/fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { slowUpload } from './helpers/clients.js'
import { destroyClients, open } from './helpers/dial.js'
import { type GuardedApp, startGuarded, stopApps } from './helpers/fastify-app.js'
import { sleep, waitUntil } from './helpers/records.js'

const ATTACKER = '127.0.0.2'
const LEGIT = '127.0.0.1'
const LIMIT = 50
const FLOOR = 300
const RATE = 100
const ATTACK_MS = 3_000
/** Most attack connections opened in one 10 ms tick: 100/s holds while ticks stretch to 50 ms. */
const MAX_BURST = 5

const GUARD: ConnguardFastifyOptions = {
  maxConnections: LIMIT,
  sweepInterval: 50,
  pressure: { floors: { handshakeTimeout: FLOOR, headersTimeout: FLOOR, keepAliveTimeout: FLOOR } },
  drainTimeout: 500,
}

const attackSockets = new Set<net.Socket>()
afterEach(async () => {
  for (const s of attackSockets) s.destroy()
  attackSockets.clear()
  destroyClients()
  await stopApps()
})

/**
 * Opens `RATE` connections a second from 127.0.0.2 for `ms`: slowloris (a request head,
 * then one more header line every 200 ms) or, with `tlsStall`, TCP to the TLS port and
 * nothing. Resolves with how many it opened once the opening stops; sockets stay open
 * until the server closes them or the test ends.
 */
async function attack(port: number, { tlsStall = false, ms = ATTACK_MS } = {}): Promise<number> {
  let opened = 0
  let scheduled = 0
  const start = performance.now()
  while (performance.now() - start < ms) {
    const due = Math.floor(((performance.now() - start) * RATE) / 1000)
    // At most MAX_BURST per tick; openings a stall of this process skipped are dropped, not
    // caught up. On a loaded machine the catch-up after a stall released dozens of
    // connections at once: more fresh connections than the limit, none yet unproductive for
    // its floor, so the legitimate client's next connections were (rightly) refused. That burst is the
    // test's own stall, not the 100/s attack this file is about.
    const burst = Math.min(due - scheduled, MAX_BURST)
    scheduled = due
    for (let i = 0; i < burst; i++) {
      opened++
      const s = net.connect({ host: '127.0.0.1', port, localAddress: ATTACKER })
      attackSockets.add(s)
      s.on('error', () => {})
      s.on('close', () => attackSockets.delete(s))
      if (!tlsStall) {
        let timer: NodeJS.Timeout | undefined
        s.once('connect', () => {
          s.write('GET / HTTP/1.1\r\nHost: x\r\n')
          timer = setInterval(() => s.writable && s.write('X-a: b\r\n'), 200)
        })
        s.once('close', () => clearInterval(timer))
      }
    }
    await sleep(10)
  }
  return opened
}

interface LegitRun {
  statuses: number[]
  failures: string[]
}

/** One GET on a fresh connection from 127.0.0.1 every 50 ms while `during` runs. */
async function legit(port: number, during: Promise<unknown>, secure = false): Promise<LegitRun> {
  const run: LegitRun = { statuses: [], failures: [] }
  let done = false
  during.finally(() => {
    done = true
  })
  const pending: Promise<void>[] = []
  while (!done) {
    const c = open(port, { localAddress: LEGIT, secure, timeoutMs: 5_000 })
    pending.push(
      c.get('/').then(
        (res) => {
          run.statuses.push(res.status)
          c.destroy()
        },
        (err: Error) => {
          run.failures.push(err.message)
          c.destroy()
        },
      ),
    )
    await sleep(50)
  }
  await Promise.all(pending)
  return run
}

/** Records of 127.0.0.2 closed so far, by reason. */
function attackerReasons(g: GuardedApp): Record<string, number> {
  const out: Record<string, number> = {}
  for (const rec of g.closes.records) {
    if (rec.remoteAddress !== ATTACKER) continue
    const r = rec.closeReason ?? 'none'
    out[r] = (out[r] ?? 0) + 1
  }
  return out
}

function legitRecords(g: GuardedApp): ConnectionRecord[] {
  return g.closes.records.filter((r) => r.remoteAddress === LEGIT)
}

describe('under a slowloris attack at 100 connections/s, maxConnections 50', () => {
  it('with pressure, the legitimate client is served throughout, attackers are shed, a healthy upload survives', async () => {
    const g = await startGuarded(GUARD)
    let maxLevel = 0
    let maxLive = 0
    g.app.connguard.on('pressure', (p) => {
      maxLevel = Math.max(maxLevel, p.level)
    })
    const sampler = setInterval(() => {
      maxLive = Math.max(maxLive, g.app.connguard.snapshot().total)
    }, 10)
    try {
      const attacking = attack(g.port)
      // A healthy upload from the legitimate address: 100 KB at ~33 KB/s, across the attack.
      const uploading = sleep(500).then(() =>
        slowUpload(g.port, {
          path: '/upload',
          totalBytes: 100_000,
          chunkBytes: 5_000,
          intervalMs: 150,
        }),
      )
      const run = await legit(g.port, attacking)
      const up = await uploading

      // Server, attackers and this client share one event loop here: on a loaded CI machine a
      // stall longer than a floor can cost a legitimate connection (the benchmark, with the
      // server in its own process, measures the success rate). After a stall the server
      // accepts the attackers queued meanwhile at once, all younger than their floor, so none
      // can be displaced and a legitimate connection among them is refused: 2 of 37–45 were,
      // three times, with both cores busy. Up to 5%, at least 2, is allowed; more fails.
      const issued = run.statuses.length + run.failures.length
      const allowed = Math.max(2, Math.floor(issued * 0.05))
      const legitReasons = legitRecords(g).map((r) => r.closeReason)
      expect(
        run.failures.length,
        `${run.failures.slice(0, 5).join('; ')}; legit closes: ${JSON.stringify(legitReasons)}`,
      ).toBeLessThanOrEqual(allowed)
      // Requests throughout the attack: one every 50 ms nominally (60); a loaded machine
      // stretches the client's own sleeps, so the count is a floor, not the 60.
      expect(issued).toBeGreaterThanOrEqual(15)
      expect(run.statuses.every((s) => s === 200)).toBe(true)
      expect(up.status, `upload: ${up.close?.how ?? ''}`).toBe(200)
      expect(JSON.parse(up.body.toString())).toEqual({ bytes: 100_000 })

      const reasons = attackerReasons(g)
      expect(reasons.shed_under_pressure ?? 0, JSON.stringify(reasons)).toBeGreaterThan(50)
      // Refused at accept is right too when every slot holds a connection younger than its
      // floor (none to displace): seen on a loaded machine, where accepts come in bursts.
      for (const r of Object.keys(reasons)) {
        expect([
          'shed_under_pressure',
          'request_headers_timeout',
          'max_concurrent_connections_exceeded',
        ]).toContain(r)
      }
      // Nothing of the legitimate address was shed or refused (but what the stalls above allow).
      const lost = legitRecords(g).filter(
        (r) => r.closeReason !== 'client_closed' && r.closeReason !== 'connection_reset',
      )
      expect(
        lost.length,
        JSON.stringify(lost.map((r) => [r.closeReason, r.stateAtClose])),
      ).toBeLessThanOrEqual(Math.min(allowed, run.failures.length))
      expect(maxLevel).toBeGreaterThan(0.5)
      // Never more than the limit, give or take connections shed and not yet closed.
      expect(maxLive).toBeLessThanOrEqual(LIMIT + 10)
      expect(g.app.connguard.snapshot().closedByReason.shed_under_pressure).toBeGreaterThan(50)
    } finally {
      clearInterval(sampler)
    }
  })

  it('with pressure: false, the same attack fills the slots and the legitimate client is refused', async () => {
    const g = await startGuarded({ ...GUARD, pressure: false })
    const run = await legit(g.port, attack(g.port, { ms: 2_000 }))
    expect(run.failures.length + run.statuses.filter((s) => s !== 200).length).toBeGreaterThan(10)
    expect(
      legitRecords(g).some((r) => r.closeReason === 'max_concurrent_connections_exceeded'),
    ).toBe(true)
    expect(attackerReasons(g).shed_under_pressure).toBeUndefined()
  })
})

describe('per-address share under stalled TLS handshakes', () => {
  it('127.0.0.2 keeps at most its share while 127.0.0.1 is served over HTTPS', async () => {
    const SHARE = 0.4
    const g = await startGuarded(
      { ...GUARD, pressure: { ...(GUARD.pressure as object), perIpShare: SHARE } },
      { tls: true },
    )
    const held: number[] = []
    const sampler = setInterval(() => {
      let n = 0
      for (const rec of g.app.connguard.connections()) if (rec.remoteAddress === ATTACKER) n++
      held.push(n)
    }, 20)
    try {
      const run = await legit(g.port, attack(g.port, { tlsStall: true }), true)
      expect(run.failures, run.failures.slice(0, 5).join('; ')).toEqual([])
      expect(run.statuses.every((s) => s === 200)).toBe(true)
      const share = Math.floor(SHARE * LIMIT)
      // Before the level first rises (60% of the limit, seen at the next sweep) nothing is
      // per address; from then on the share holds, and keeps holding while the shedding it
      // causes brings the level back down.
      expect(Math.max(...held)).toBeLessThanOrEqual(LIMIT)
      expect(Math.max(...held.slice(held.length / 2))).toBeLessThanOrEqual(share + 2)
      expect(attackerReasons(g).shed_under_pressure ?? 0).toBeGreaterThan(100)
    } finally {
      clearInterval(sampler)
    }
  })
})

describe('after the attack', () => {
  it('the level returns to 0 and a new idle connection keeps its full keep-alive deadline', async () => {
    const g = await startGuarded({ ...GUARD, keepAliveTimeout: 5_000 })
    const levels: number[] = []
    g.app.connguard.on('pressure', (p) => levels.push(p.level))
    await attack(g.port, { ms: 1_500 })
    for (const s of attackSockets) s.destroy()
    await waitUntil(() => g.app.connguard.snapshot().pressure?.level === 0, {
      timeoutMs: 5_000,
      what: 'pressure to pass',
    })
    expect(Math.max(...levels)).toBeGreaterThan(0.5)
    expect(levels.at(-1)).toBe(0)
    const c = open(g.port, { localAddress: LEGIT })
    expect((await c.get('/')).status).toBe(200)
    const idleFrom = performance.now()
    // Seven floors later it is still open: the 300 ms floor no longer applies.
    await sleep(7 * FLOOR)
    expect(c.isOpen()).toBe(true)
    const ended = await c.ended
    expect(ended.at - idleFrom).toBeGreaterThan(5_000 - 100)
    expect(ended.at - idleFrom).toBeLessThan(5_000 + 1_000)
    // By address too: an attacker's connection (from 127.0.0.2, shed earlier) may have had
    // the same port.
    const rec = await g.closes.forClientPort(c.localPort, undefined, LEGIT)
    expect(rec.closeReason).toBe('keep_alive_timeout')
  })
})
