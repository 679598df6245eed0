/**
 * Churn, small: a few thousand connections opened and closed in batches against a guarded
 * plain + TLS `node:http(s)` server, mixed healthy (keep-alive, one-shot, HTTPS) and timed
 * out (silent, slowloris, stalled TLS, idle keep-alive cut). After each batch, once no
 * connection is left: no tracker record, the same active resources (handles) by type and the
 * same server listeners as before the churn, and one close per open. Counts only, no timing:
 * the full 100,000-connection run with heap and RSS is a benchmark (bench/churn.mjs), and so
 * are its figures (bench/RESULTS.md). The clients are the benchmark's (bench/lib/churn.mjs).
 */
import http from 'node:http'
import https from 'node:https'
import { CLOSE_REASONS, ConnectionTracker } from '@connguard/core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import {
  activeResources,
  connectionsOf,
  countDiff,
  KINDS,
  listenerCounts,
  mixOf,
  runBatch,
  settle,
} from '../bench/lib/churn.mjs'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const BATCHES = 3
const BATCH = 1_000
const CONCURRENCY = 100

type Counts = Record<string, number>
type Outcomes = Record<string, { ok: number; unexpected: number; refused: number; timeout: number }>

describe('churn: records, handles and listeners return to their baseline', () => {
  const handler: http.RequestListener = (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 2 })
    res.end('ok')
  }
  const plain = http.createServer(handler)
  const secure = https.createServer(tlsOptions, handler)
  const tracker = new ConnectionTracker({
    handshakeTimeout: 300,
    headersTimeout: 300,
    keepAliveTimeout: 200,
    sweepInterval: 50,
  })
  let opened = 0
  let closed = 0
  const reasons: Counts = {}
  const ports = { port: 0, tlsPort: 0 }

  beforeAll(async () => {
    tracker.attach(plain).attach(secure)
    tracker.on('open', () => {
      opened++
    })
    tracker.on('close', (rec) => {
      closed++
      const r = rec.closeReason as string
      reasons[r] = (reasons[r] ?? 0) + 1
    })
    ports.port = await listen(plain)
    ports.tlsPort = await listen(secure)
  })
  afterAll(async () => {
    tracker.close()
    await Promise.all([closeServer(plain), closeServer(secure)])
  })

  /** Waits until neither the tracker nor Node has a connection left; then the counts. */
  async function quiet() {
    const settled = await settle(
      async () =>
        tracker.snapshot().total === 0 &&
        (await connectionsOf(plain)) === 0 &&
        (await connectionsOf(secure)) === 0,
      10_000,
    )
    return {
      settled,
      records: tracker.snapshot().total,
      listed: [...tracker.connections()].length,
      resources: activeResources() as Counts,
      listeners: {
        http: listenerCounts(plain) as Counts,
        https: listenerCounts(secure) as Counts,
      },
    }
  }

  it(`${BATCHES} batches of ${BATCH} connections, ${CONCURRENCY} at a time`, async () => {
    // Warm-up: whatever is created lazily (TLS context, parser pool) is in the baseline.
    await runBatch(mixOf(200), { ...ports, concurrency: CONCURRENCY, timeoutMs: 10_000 })
    const base = await quiet()
    expect(base.settled).toBe(true)
    const openedBefore = opened
    for (let b = 1; b <= BATCHES; b++) {
      const outcomes = (await runBatch(mixOf(BATCH), {
        ...ports,
        concurrency: CONCURRENCY,
        timeoutMs: 10_000,
      })) as Outcomes
      const now = await quiet()
      const where = `after batch ${b}`
      expect(now.settled, `${where}: every connection closed`).toBe(true)
      expect(now.records, `${where}: tracker records`).toBe(0)
      expect(now.listed, `${where}: tracker.connections()`).toBe(0)
      expect(countDiff(base.resources, now.resources), `${where}: active resources`).toEqual([])
      expect(
        countDiff(base.listeners.http, now.listeners.http),
        `${where}: http listeners`,
      ).toEqual([])
      expect(
        countDiff(base.listeners.https, now.listeners.https),
        `${where}: https listeners`,
      ).toEqual([])
      expect(closed, `${where}: one close per open`).toBe(opened)
      // The server closed every connection a client left waiting (the client gives up at 10 s).
      for (const kind of KINDS) {
        expect(outcomes[kind]?.timeout, `${where}: ${kind} clients the server never closed`).toBe(0)
        expect(outcomes[kind]?.refused, `${where}: ${kind} connections refused`).toBe(0)
      }
    }
    expect(opened - openedBefore).toBe(BATCHES * BATCH)
    for (const reason of Object.keys(reasons)) expect(CLOSE_REASONS).toContain(reason)
    // 10–14 s on the 2-core machine under load; a cap, not a timing assertion.
  }, 60_000)
})
