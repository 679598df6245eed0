/**
 * With the guard attached, Node's own timers neither cut what the guard's
 * policy allows nor keep what it cuts. Each case runs once without the guard
 * (showing what Node does, so the test can fail) and once with it.
 */
import http from 'node:http'
import https from 'node:https'
import { ConnectionTracker } from '@connguard/core'
import { afterEach, describe, expect, it } from 'vitest'
import { partialClientHello, rawHttp, slowUpload } from './helpers/clients.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

/** Reads the whole body, then answers 200 with its length. */
const drain: http.RequestListener = (req, res) => {
  let n = 0
  req.on('data', (c: Buffer) => {
    n += c.length
  })
  req.on('end', () => res.end(String(n)))
}

async function start(
  server: http.Server | https.Server,
  guard?: ConnectionTracker,
): Promise<number> {
  guard?.attach(server)
  const port = await listen(server)
  cleanups.push(async () => {
    guard?.close()
    await closeServer(server)
  })
  return port
}

// Node checks header/request deadlines every connectionsCheckingInterval; 100 ms makes its cut prompt.
const nodeStrict = { requestTimeout: 600, headersTimeout: 400, connectionsCheckingInterval: 100 }
const upload = { totalBytes: 30 * 1_000, chunkBytes: 1_000, intervalMs: 50 } // ~1.5 s at 20 KB/s

describe("Node's requestTimeout and headersTimeout", () => {
  it('without the guard, Node cuts a healthy 1.5 s upload at requestTimeout', async () => {
    const port = await start(http.createServer(nodeStrict, drain))
    const result = await slowUpload(port, { ...upload, path: '/up' })
    expect(result.status === 0 || result.status === 408).toBe(true)
    expect(result.sentBytes).toBeLessThan(upload.totalBytes)
  })

  it('with the guard, the same upload completes with 200', async () => {
    const guard = new ConnectionTracker({ headersTimeout: 400, sweepInterval: 50 })
    const port = await start(http.createServer(nodeStrict, drain), guard)
    const result = await slowUpload(port, { ...upload, path: '/up' })
    expect(result.status).toBe(200)
    expect(result.body.toString()).toBe(String(upload.totalBytes))
  })
})

describe("Node's TLS handshake timeout", () => {
  it('yields to the guard: a stalled handshake is cut at the guard deadline, with its reason', async () => {
    const guard = new ConnectionTracker({ handshakeTimeout: 1_000, sweepInterval: 50 })
    const reasons: string[] = []
    guard.on('close', (r) => reasons.push(r.closeReason as string))
    const port = await start(
      https.createServer({ ...tlsOptions, handshakeTimeout: 200 }, drain),
      guard,
    )
    const result = await partialClientHello(port)
    expect(result.heldMs).toBeGreaterThanOrEqual(1_000 - 20)
    expect(result.heldMs).toBeLessThan(1_000 + 50 + 400)
    await new Promise((r) => setTimeout(r, 50))
    expect(reasons).toEqual(['tls_handshake_timeout'])
  })
})

describe('Node behaviour kept', () => {
  it('a malformed request still gets 400 from Node, and is recorded as invalid_request', async () => {
    const guard = new ConnectionTracker({ sweepInterval: 50 })
    const closes: { reason: unknown; code: unknown }[] = []
    guard.on('close', (r) => closes.push({ reason: r.closeReason, code: r.errorCode }))
    const port = await start(http.createServer(drain), guard)
    const result = await rawHttp(port, 'NOT A REQUEST\r\n\r\n')
    expect(result.received.toString('latin1')).toMatch(/^HTTP\/1\.1 400 /)
    await new Promise((r) => setTimeout(r, 50))
    expect(closes).toEqual([{ reason: 'invalid_request', code: expect.stringMatching(/^HPE_/) }])
  })

  it('an oversized head still gets 431 from Node', async () => {
    const guard = new ConnectionTracker({ sweepInterval: 50 })
    const port = await start(http.createServer({ maxHeaderSize: 1024 }, drain), guard)
    const result = await rawHttp(
      port,
      `GET / HTTP/1.1\r\nHost: x\r\nX-Big: ${'a'.repeat(4096)}\r\n\r\n`,
    )
    expect(result.received.toString('latin1')).toMatch(/^HTTP\/1\.1 431 /)
  })
})
