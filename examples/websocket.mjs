#!/usr/bin/env node
/**
 * WebSockets that cannot die silently (Fastify + @fastify/websocket, plain HTTP).
 *
 * connguard pings every WebSocket that has been silent for `webSocket.pingInterval` through
 * `ws`'s own API and terminates it with `ping_timeout` when no pong comes within
 * `webSocket.pingTimeout`. Nothing to write in the route: registering both plugins is all.
 *
 * - GET /echo      a WebSocket that echoes; a peer that vanishes is closed by connguard
 * - GET /raw       the same, opted out of the ping (`config.connguard.webSocket: false`)
 *
 *   node examples/websocket.mjs            serve on $HOST:$PORT (default 127.0.0.1, a free port)
 *   node examples/websocket.mjs --smoke    echo once, then kill the client's route (a relay
 *                                          that drops everything) and wait for ping_timeout
 */
import net from 'node:net'
import { connguard } from '@connguard/fastify'
import websocket from '@fastify/websocket'
import Fastify from 'fastify'
import WebSocket from 'ws'

const smoke = process.argv.includes('--smoke') || process.env.SMOKE === '1'
const app = Fastify()

await app.register(connguard, {
  // The defaults are 30 s and 20 s; the smoke run shortens them to finish in seconds.
  webSocket: smoke ? { pingInterval: 500, pingTimeout: 500 } : {},
  maxUpgradedConnections: 10_000,
})
await app.register(websocket)

app.get('/echo', { websocket: true }, (socket) => {
  socket.on('message', (message) => socket.send(message))
})
app.get('/raw', { websocket: true, config: { connguard: { webSocket: false } } }, (socket) => {
  socket.on('message', (message) => socket.send(message))
})

app.connguard.on('close', (rec) => {
  if (rec.webSocket === null) return
  const { pingsSent, pingRtt, closeCode } = rec.webSocket
  console.log(
    `WebSocket #${rec.id} closed: ${rec.closeReason} (ws code ${closeCode}) after ${pingsSent} pings, last RTT ${pingRtt} ms`,
  )
})

await app.listen({ host: process.env.HOST ?? '127.0.0.1', port: Number(process.env.PORT ?? 0) })
const { port } = app.server.address()
console.log(`listening on ws://127.0.0.1:${port}/echo and /raw`)

if (smoke) {
  // A relay standing for the network: once `dead` is set, it drops everything both ways and
  // passes no FIN on, like a phone that went to sleep or a NAT that forgot the flow.
  let dead = false
  const relay = net.createServer({ allowHalfOpen: true }, (down) => {
    const up = net.connect({ port, host: '127.0.0.1', allowHalfOpen: true })
    for (const s of [down, up]) s.on('error', () => {})
    down.on('data', (chunk) => dead || up.write(chunk))
    up.on('data', (chunk) => dead || down.write(chunk))
  })
  await new Promise((resolve) => relay.listen(0, '127.0.0.1', resolve))
  const client = new WebSocket(`ws://127.0.0.1:${relay.address().port}/echo`)
  client.on('error', () => {})
  await new Promise((resolve) => client.once('open', resolve))
  const echoed = new Promise((resolve) => client.once('message', (m) => resolve(String(m))))
  client.send('hello')
  console.log(`echo: ${await echoed}`)
  const closed = new Promise((resolve) =>
    app.connguard.once('close', (rec) => resolve(rec.closeReason)),
  )
  dead = true
  const t0 = performance.now()
  const reason = await Promise.race([
    closed,
    new Promise((resolve) => setTimeout(() => resolve('still open'), 10_000)),
  ])
  const ms = Math.round(performance.now() - t0)
  client.terminate()
  relay.close()
  await app.close()
  if (reason !== 'ping_timeout') {
    console.error(`FAIL: the dead WebSocket ended with ${reason}`)
    process.exit(1)
  }
  console.log(`OK: the dead WebSocket was closed with ping_timeout ${ms} ms after its route died`)
}
