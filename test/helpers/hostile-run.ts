/**
 * Runs batches of hostile connections (helpers/hostile-http1.ts, hostile-h2.ts) against a guarded server and
 * checks what test/hostile.test.ts promises after each batch:
 * - every connection the batch opened got exactly one record, closed with a reason from
 *   CLOSE_REASONS, consistent (`expectConsistentRecord`), matched to its client by port;
 * - a client that waits is cut by the server (every deadline is short), never left hanging;
 * - the tracker ends with zero live records;
 * - no error escaped to the process (an uncaught exception is collected, not swallowed).
 */
import { performance } from 'node:perf_hooks'
import type { TLSSocket } from 'node:tls'
import { CLOSE_REASONS, type ConnectionRecord, type ConnectionTracker } from '@connguard/core'
import { expect } from 'vitest'
import type { Generator, HostileCase, Rng } from './hostile-rng.js'
import { expectConsistentRecord, sleep, waitUntil } from './records.js'
import { type Conn, openSocket } from './socket.js'

/** How a hostile client leaves after sending. */
export type Ending = 'wait' | 'end' | 'reset' | 'destroy'
const ENDINGS: readonly Ending[] = [
  'wait',
  'wait',
  'wait',
  'end',
  'end',
  'reset',
  'reset',
  'destroy',
]

/** How the bytes travel: raw TCP, or inside an established TLS connection with this ALPN. */
export type Carrier = { tls: false } | { tls: true; alpn?: string[] }

/**
 * A client that waits (or sent FIN) must be closed by the server within this. The slowest cut
 * the hostile options allow is about 2 s (a body-rate check fails one to two 1 s windows in;
 * an HTTP/2 PING goes out after 500 ms of silence and waits 500 ms), plus one sweep; the rest
 * is margin for a loaded 2-core machine. Far below any Node default (120 s, 300 s).
 */
export const SERVER_CLOSE_CAP_MS = 6_000

export interface CaseOutcome {
  label: string
  kind: string
  ending: Ending
  bytes: number
  clientPort: number | undefined
  /** How the connection ended from the client's side, or why the case failed. */
  how: string
  /** Set when the server did not close a waiting client in time, or the client could not connect. */
  failure?: string
  record?: ConnectionRecord
}

export interface BatchReport {
  outcomes: CaseOutcome[]
  /** Reason → count over the batch's records. */
  reasons: Record<string, number>
}

/** Uncaught exceptions while hostile batches run; each batch asserts there were none. */
export class UncaughtCollector {
  readonly errors: unknown[] = []
  readonly #onError = (err: unknown) => {
    this.errors.push(err)
  }
  install(): void {
    process.on('uncaughtException', this.#onError)
  }
  uninstall(): void {
    process.off('uncaughtException', this.#onError)
  }
}

/** Run `count` hostile cases from `generators` against 127.0.0.1:`port`, `concurrency` at once. */
export async function runBatch({
  label,
  rng,
  port,
  tracker,
  generators,
  carrier,
  count,
  concurrency,
  uncaught,
}: {
  label: string
  rng: Rng
  port: number
  tracker: ConnectionTracker
  generators: Record<string, Generator>
  carrier: Carrier
  count: number
  concurrency: number
  uncaught: UncaughtCollector
}): Promise<BatchReport> {
  const opened: ConnectionRecord[] = []
  const closed: ConnectionRecord[] = []
  const onOpen = (rec: ConnectionRecord) => opened.push(rec)
  const onClose = (rec: ConnectionRecord) => closed.push(rec)
  tracker.on('open', onOpen)
  tracker.on('close', onClose)
  const names = Object.keys(generators)
  // Draw every case up front, in order: the bytes depend on the seed only, not on timing.
  const plans = Array.from({ length: count }, (_, i) => {
    const kind = names[i % names.length] as string
    const hostile = (generators[kind] as Generator)(rng)
    const ending = rng.pick(ENDINGS)
    return {
      hostile,
      ending: hostile.stall ? 'wait' : ending,
      pauses: hostile.parts.map(() => rng.int(0, 15)),
      endDelay: rng.int(0, 60),
    }
  })
  const outcomes: CaseOutcome[] = []
  try {
    let next = 0
    const worker = async () => {
      while (next < plans.length) {
        const i = next++
        const plan = plans[i] as (typeof plans)[number]
        outcomes[i] = await runCase(`${label} #${i}`, port, carrier, plan)
      }
    }
    await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker))
    // Every client has closed: the server sees it within a few ms; 5 s is for a loaded machine.
    await waitUntil(() => opened.length >= count && opened.every((rec) => rec.state === 'closed'), {
      timeoutMs: 5_000,
    }).catch(() => {})
  } finally {
    tracker.off('open', onOpen)
    tracker.off('close', onClose)
  }
  // Only this batch's records: a healthy check's connection may close while it runs.
  const mine = new Set(opened)
  const ended = closed.filter((rec) => mine.has(rec))
  const live = opened.filter((rec) => rec.state !== 'closed')
  // Match each client to its record by the client's local port (the record's remotePort).
  const byPort = new Map<number | undefined, ConnectionRecord[]>()
  for (const rec of [...ended, ...live]) {
    const list = byPort.get(rec.remotePort) ?? []
    list.push(rec)
    byPort.set(rec.remotePort, list)
  }
  for (const outcome of outcomes) outcome.record = byPort.get(outcome.clientPort)?.shift()
  // A socket reset before the server accepted it has no peer address left to read, and a
  // client that failed to connect never learnt its port: pair what is left, for the report.
  const anonymous = byPort.get(undefined) ?? []
  byPort.delete(undefined)
  const leftover = [...anonymous, ...[...byPort.values()].flat()]
  for (const outcome of outcomes)
    if (outcome.record === undefined) outcome.record = leftover.shift()
  if (process.env.CONNGUARD_FUZZ_REPORT === '1')
    for (const o of outcomes) console.log(describeOutcome(o))

  const failures = outcomes.filter((o) => o.failure !== undefined)
  expect(failures.map(describeOutcome), `${label}: cases that failed`).toEqual([])
  expect(uncaught.errors, `${label}: uncaught exceptions`).toEqual([])
  const stuck = outcomes.filter((o) => o.record !== undefined && o.record.state !== 'closed')
  expect(
    stuck.map(describeOutcome),
    `${label}: records still live after every client closed (snapshot ${JSON.stringify(tracker.snapshot())})`,
  ).toEqual([])
  expect(opened.length, `${label}: one record per connection`).toBe(count)
  expect(ended.length, `${label}: every record closed`).toBe(count)
  const reasons: Record<string, number> = {}
  for (const rec of ended) {
    expect(CLOSE_REASONS, `${label}: record ${rec.id}`).toContain(rec.closeReason)
    expectConsistentRecord(rec)
    reasons[rec.closeReason as string] = (reasons[rec.closeReason as string] ?? 0) + 1
  }
  for (const outcome of outcomes)
    expect(outcome.record, `${describeOutcome(outcome)}: no record`).toBeDefined()
  expect(tracker.snapshot().total, `${label}: snapshot().total once every client closed`).toBe(0)
  return { outcomes, reasons }
}

async function runCase(
  label: string,
  port: number,
  carrier: Carrier,
  plan: { hostile: HostileCase; ending: Ending; pauses: number[]; endDelay: number },
): Promise<CaseOutcome> {
  const { hostile, ending } = plan
  const outcome: CaseOutcome = {
    label,
    kind: hostile.kind,
    ending,
    bytes: hostile.parts.reduce((n, p) => n + p.length, 0),
    clientPort: undefined,
    how: 'pending',
  }
  let conn: Conn
  try {
    conn = await openSocket(port, {
      timeoutMs: SERVER_CLOSE_CAP_MS,
      ...(carrier.tls && {
        tls: true,
        tlsOptions: { ALPNProtocols: carrier.alpn ?? ['http/1.1'] },
      }),
    })
  } catch (err) {
    outcome.failure = `could not connect: ${(err as Error).message}`
    return outcome
  }
  outcome.clientPort = (conn.socket as TLSSocket).localPort
  for (const [i, part] of hostile.parts.entries()) {
    if (!conn.send(part)) break
    const pauseMs = plan.pauses[i] ?? 0
    if (pauseMs > 0 && i < hostile.parts.length - 1) await sleep(pauseMs)
  }
  if (ending !== 'wait' && plan.endDelay > 0 && conn.isOpen()) await sleep(plan.endDelay)
  const startedWaiting = performance.now()
  if (ending === 'reset') conn.reset()
  else if (ending === 'destroy') conn.destroy()
  else if (ending === 'end' && conn.isOpen()) conn.socket.end()
  try {
    const info = await conn.closed
    outcome.how = info.error?.code ?? info.how
  } catch {
    outcome.how = 'client timeout'
    outcome.failure = `server still held the connection ${Math.round(performance.now() - startedWaiting)} ms after the client ${ending === 'end' ? 'sent FIN' : 'stopped sending'}`
  } finally {
    conn.destroy()
  }
  return outcome
}

export function describeOutcome(o: CaseOutcome): string {
  const rec = o.record
  const server =
    rec === undefined
      ? ''
      : rec.state !== 'closed'
        ? ` → still ${rec.state} (record #${rec.id}, requests ${rec.requests})`
        : ` → ${rec.closeReason} in ${rec.stateAtClose} (${rec.errorCode ?? 'no error'}, ${Math.round(rec.duration ?? 0)} ms)`
  return `${o.label} [${o.kind}, ${o.bytes} B, ${o.ending}, port ${o.clientPort}] client: ${o.how}${server}${o.failure === undefined ? '' : `: ${o.failure}`}`
}

/** Listener functions per event, to compare before attach and after `tracker.close()`. */
export function listenersOf(emitter: {
  eventNames(): (string | symbol)[]
  rawListeners(event: string | symbol): unknown[]
}): Map<string | symbol, unknown[]> {
  return new Map(emitter.eventNames().map((e) => [e, [...emitter.rawListeners(e)]]))
}
