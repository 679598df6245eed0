/**
 * Type tests for linking `ws` WebSockets (README "WebSockets"), checked by
 * `tsc -p test/tsconfig.json` (never run): the objects of `ws`'s own types are accepted as
 * they are, with no cast.
 */
import http from 'node:http'
import { ConnectionTracker } from '@connguard/core'
import { connguard } from '@connguard/express'
import { type WebSocket, WebSocketServer } from 'ws'

const server = http.createServer()
const tracker = new ConnectionTracker().attach(server)
const wss = new WebSocketServer({ server })
const unlink: () => void = tracker.watchWebSockets(wss)
unlink()
wss.on('connection', (ws: WebSocket, req: http.IncomingMessage) => {
  const linked: boolean = tracker.watchWebSocket(ws, req)
  void linked
})
const guard = connguard()
guard.webSockets(wss)()
// @ts-expect-error not a WebSocket server
tracker.watchWebSockets({})
