/**
 * Closes nobody timed, over real sockets, for Fastify (which has its own
 * 'clientError' listener, so errors never reach the socket's 'error' event)
 * and for a bare node:http/https server (Node's default error handling).
 */
import http from 'node:http'
import https from 'node:https'
import { setTimeout as delay } from 'node:timers/promises'
import { type ConnectionRecord, ConnectionTracker } from '@connguard/core'
import { connguard } from '@connguard/fastify'
import Fastify from 'fastify'
import { afterEach, describe, expect, it } from 'vitest'
import { getRequest, openSocket } from './helpers/clients.js'
import { closeServer, listen } from './helpers/server.js'
import { tlsOptions } from './helpers/tls.js'

const cleanups: (() => Promise<void> | void)[] = []
afterEach(async () => {
  for (const fn of cleanups.splice(0).reverse()) await fn()
})

interface Target {
  port: number
  closes: ConnectionRecord[]
  tracker: ConnectionTracker
}

const handler = (
  url: string | undefined,
  destroy: () => void,
  reply: (body: string) => void,
): void => {
  if (url === '/destroy') destroy()
  else reply('ok')
}

async function fastifyTarget(tls: boolean): Promise<Target> {
  const app = tls ? Fastify({ https: tlsOptions }) : Fastify()
  await app.register(connguard, { sweepInterval: 50 })
  app.get('/*', (request, reply) => {
    handler(
      request.url,
      () => request.raw.socket.destroy(),
      (body) => reply.send(body),
    )
  })
  await app.ready()
  const closes: ConnectionRecord[] = []
  app.connguard.on('close', (r) => closes.push(r))
  const port = await listen(app.server)
  cleanups.push(async () => {
    await closeServer(app.server)
    await app.close()
  })
  return { port, closes, tracker: app.connguard }
}

async function nodeTarget(tls: boolean): Promise<Target> {
  const listener: http.RequestListener = (req, res) =>
    handler(
      req.url,
      () => req.socket.destroy(),
      (body) => res.end(body),
    )
  const server = tls ? https.createServer(tlsOptions, listener) : http.createServer(listener)
  const tracker = new ConnectionTracker({ sweepInterval: 50 }).attach(server)
  const closes: ConnectionRecord[] = []
  tracker.on('close', (r) => closes.push(r))
  const port = await listen(server)
  cleanups.push(async () => {
    tracker.close()
    await closeServer(server)
  })
  return { port, closes, tracker }
}

async function closedRecord(t: Target): Promise<ConnectionRecord> {
  for (let i = 0; i < 200 && t.closes.length === 0; i++) await delay(10)
  expect(t.closes).toHaveLength(1)
  expect(t.tracker.snapshot().total).toBe(0)
  return t.closes[0] as ConnectionRecord
}

const okResponse = (b: Buffer) => (b.toString('latin1').endsWith('\r\n\r\nok') ? true : undefined)

describe.each([
  ['fastify', 'http', fastifyTarget, false],
  ['fastify', 'https', fastifyTarget, true],
  ['node', 'http', nodeTarget, false],
  ['node', 'https', nodeTarget, true],
] as const)('%s over %s', (_name, _proto, make, tls) => {
  it('a client reset after a response is connection_reset', async () => {
    const t = await make(tls)
    const conn = await openSocket(t.port, { tls })
    conn.send(getRequest('/'))
    await conn.waitFor(okResponse)
    conn.reset()
    const rec = await closedRecord(t)
    expect(rec).toMatchObject({
      closeReason: 'connection_reset',
      stateAtClose: 'idle',
      requests: 1,
    })
    expect(rec.errorCode).toBe('ECONNRESET')
  })

  it('a client FIN while idle is client_closed', async () => {
    const t = await make(tls)
    const conn = await openSocket(t.port, { tls })
    conn.send(getRequest('/'))
    await conn.waitFor(okResponse)
    conn.socket.end()
    const rec = await closedRecord(t)
    expect(rec).toMatchObject({ closeReason: 'client_closed', stateAtClose: 'idle', requests: 1 })
  })

  it('Connection: close from the client is client_closed', async () => {
    const t = await make(tls)
    const conn = await openSocket(t.port, { tls })
    conn.send(getRequest('/', { Connection: 'close' }))
    await conn.closed
    const rec = await closedRecord(t)
    expect(rec).toMatchObject({ closeReason: 'client_closed', requests: 1 })
  })

  it('malformed bytes are invalid_request, answered 400', async () => {
    const t = await make(tls)
    const conn = await openSocket(t.port, { tls })
    conn.send('\x00\x01 NOT HTTP\r\n\r\n')
    const info = await conn.closed
    expect(info.received.toString('latin1')).toMatch(/^HTTP\/1\.1 400 /)
    const rec = await closedRecord(t)
    expect(rec.closeReason).toBe('invalid_request')
    expect(rec.errorCode).toMatch(/^HPE_/)
  })

  it('a handler that destroys the socket is server_closed', async () => {
    const t = await make(tls)
    const conn = await openSocket(t.port, { tls })
    conn.send(getRequest('/destroy'))
    await conn.closed
    const rec = await closedRecord(t)
    expect(rec).toMatchObject({ closeReason: 'server_closed', stateAtClose: 'active', requests: 1 })
  })
})

describe("an application 'clientError' listener", () => {
  it('still lets the record carry the error it handled', async () => {
    const server = http.createServer((_req, res) => res.end('ok'))
    const tracker = new ConnectionTracker({ sweepInterval: 50 }).attach(server)
    // Added after attach, as most code does; it swallows the error and closes quietly.
    const onClientError = (_err: Error, socket: import('node:net').Socket) => socket.destroy()
    server.on('clientError', onClientError)
    const closes: ConnectionRecord[] = []
    tracker.on('close', (r) => closes.push(r))
    const port = await listen(server)
    cleanups.push(async () => {
      tracker.close()
      await closeServer(server)
    })
    const t: Target = { port, closes, tracker }
    const conn = await openSocket(port)
    conn.send('\x00\x01 NOT HTTP\r\n\r\n')
    await conn.closed
    const rec = await closedRecord(t)
    expect(rec.closeReason).toBe('invalid_request')
    expect(rec.errorCode).toMatch(/^HPE_/)
    // Ours is there only while the application's is.
    expect(server.listenerCount('clientError')).toBe(2)
    server.removeListener('clientError', onClientError)
    expect(server.listenerCount('clientError')).toBe(0)
  })
})
