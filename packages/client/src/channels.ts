import diagnosticsChannel from 'node:diagnostics_channel'
import type { Socket } from 'node:net'
import type { ClientConnectionRecord } from './record.js'

/**
 * The client tracker's events, also on `node:diagnostics_channel` (published
 * only when a channel has subscribers), next to core's `connguard:connection:*`.
 */
export const clientOpenChannel = diagnosticsChannel.channel('connguard:client:connection:open')
export const clientTransitionChannel = diagnosticsChannel.channel(
  'connguard:client:connection:transition',
)
export const clientCloseChannel = diagnosticsChannel.channel('connguard:client:connection:close')

/** Marks a socket that a connguard dispatcher connected, with its record. */
export const kClientRecord = Symbol('connguard.clientRecord')
export type MarkedSocket = Socket & { [kClientRecord]?: ClientConnectionRecord }

/** What a record's tracker does with a request's start and end, and its socket's events. */
export interface RequestSink {
  _requestStart(rec: ClientConnectionRecord): void
  _requestEnd(rec: ClientConnectionRecord, error: unknown): void
  _tcpConnected(rec: ClientConnectionRecord): void
  _socketError(rec: ClientConnectionRecord, err: Error): void
  _peerEnded(rec: ClientConnectionRecord): void
  _closed(rec: ClientConnectionRecord): void
}

/** Hands a marked socket's events to its record's tracker, with shared listeners: no closure per connection. */
export function watchSocket(socket: MarkedSocket): void {
  socket.once('connect', onTcpConnect)
  socket.on('error', onSocketError)
  socket.once('end', onSocketEnd)
  socket.once('close', onSocketClose)
}

function onTcpConnect(this: MarkedSocket): void {
  const rec = this[kClientRecord]
  if (rec !== undefined) rec.owner?._tcpConnected(rec)
}

function onSocketError(this: MarkedSocket, err: Error): void {
  const rec = this[kClientRecord]
  if (rec !== undefined) rec.owner?._socketError(rec, err)
}

function onSocketEnd(this: MarkedSocket): void {
  const rec = this[kClientRecord]
  if (rec !== undefined) rec.owner?._peerEnded(rec)
}

function onSocketClose(this: MarkedSocket): void {
  const rec = this[kClientRecord]
  if (rec !== undefined) rec.owner?._closed(rec)
}

/**
 * Which connection a request runs on, from undici's own diagnostics channels:
 * `undici:client:sendHeaders` names the socket a request went out on (HTTP/1.1
 * and HTTP/2 alike), `undici:request:trailers` and `undici:request:error` say
 * when it ended. Every copy of undici publishes on the same channels, so this
 * sees requests sent by npm undici's `request`/`fetch` and by Node's bundled
 * `fetch` through a connguard dispatcher; requests on other sockets are
 * skipped at the first property read. Subscribed once per process while any
 * tracker is open (counted), like core's HTTP server channels.
 */
const requestRecords = new WeakMap<object, ClientConnectionRecord>()

interface SendHeadersMessage {
  request: object
  socket: MarkedSocket | null | undefined
}
interface RequestEndMessage {
  request: object
  error?: unknown
}

function onSendHeaders(message: unknown): void {
  const { request, socket } = message as SendHeadersMessage
  const rec = socket?.[kClientRecord]
  if (rec === undefined) return
  requestRecords.set(request, rec)
  rec.owner?._requestStart(rec)
}

function onTrailers(message: unknown): void {
  const { request } = message as RequestEndMessage
  const rec = requestRecords.get(request)
  if (rec === undefined) return
  requestRecords.delete(request)
  rec.owner?._requestEnd(rec, null)
}

function onError(message: unknown): void {
  const { request, error } = message as RequestEndMessage
  const rec = requestRecords.get(request)
  if (rec === undefined) return
  requestRecords.delete(request)
  rec.owner?._requestEnd(rec, error ?? null)
}

let subscribers = 0

export function subscribeRequests(): void {
  if (subscribers++ > 0) return
  diagnosticsChannel.subscribe('undici:client:sendHeaders', onSendHeaders)
  diagnosticsChannel.subscribe('undici:request:trailers', onTrailers)
  diagnosticsChannel.subscribe('undici:request:error', onError)
}

export function unsubscribeRequests(): void {
  if (subscribers === 0 || --subscribers > 0) return
  diagnosticsChannel.unsubscribe('undici:client:sendHeaders', onSendHeaders)
  diagnosticsChannel.unsubscribe('undici:request:trailers', onTrailers)
  diagnosticsChannel.unsubscribe('undici:request:error', onError)
}
