/**
 * Type tests for the exporters with server and client trackers and the shared record
 * shape, checked by `tsc -p test/tsconfig.json` (never run). Each `@ts-expect-error` is an
 * assertion: tsc fails if the line below it compiles.
 */
import {
  type ClientConnectionRecord,
  createClientTracker,
  createDispatcher,
} from '@connguard/client'
import { type ConnectionRecord, ConnectionTracker } from '@connguard/core'
import {
  type ClientConnectionRecordLike,
  type ConnectionRecordLike,
  measureConnection,
} from '@connguard/core/internal'
import { registerOpenTelemetry } from '@connguard/opentelemetry'
import { registerPrometheus } from '@connguard/prometheus'

// Both record classes satisfy the shared shape; one mapping takes both.
const server = null as unknown as ConnectionRecord
const client = null as unknown as ClientConnectionRecord
const asShared: ConnectionRecordLike = server
const asClient: ClientConnectionRecordLike = client
measureConnection(asShared)
measureConnection(asClient)
// @ts-expect-error a server record has no origin: it is not a client record
const notClient: ClientConnectionRecordLike = server
void notClient

// The exporters take a server tracker, a dispatcher's tracker and a session tracker.
const stops = [
  registerPrometheus(new ConnectionTracker()),
  registerPrometheus(createDispatcher().tracker),
  registerOpenTelemetry(createClientTracker()),
  registerOpenTelemetry(new ConnectionTracker()),
]
for (const stop of stops) stop()
// @ts-expect-error a dispatcher is not a tracker
registerPrometheus(createDispatcher())
