/**
 * `@connguard/core/internal`: what the other @connguard packages (client, exporters,
 * adapters) and the benchmarks share with core beyond its public API. Not a stable API: it
 * may change in any release.
 *
 * Stateless modules only. The build splits what both entries use into shared chunks, so a
 * process that loads both gets one copy of each module per format (one `ConnguardError`
 * class: test/packaging.test.ts checks it from the packed files); still, nothing here may
 * hold state that must be one per process (the live connection count, the channels'
 * subscriber counts, local symbols), in case a bundler of the application copies it.
 * Warnings keep the messages already said in a cross-copy registry (vocab/warnings.ts), and
 * `engineOf` reads a cross-copy key.
 */
import type { ConnectionTracker } from './engine/tracker.js'
import type { ConnectionRecord } from './record/record.js'
import { kEngine } from './vocab/symbols.js'

/** Every process warning connguard emits, with its stable code (the packages emit through it). */
export * as WARNINGS from './vocab/warnings.js'

/**
 * What the benchmarks and tests call on a tracker's engine, driving it without sockets. A
 * narrow view on purpose: the published declarations must not carry the engine's own types
 * (its heap of records names members `stripInternal` removes). Not an API.
 */
export interface EngineHandle {
  /** One slice of a sweep (the sweeper's unit): -1 when more is due. */
  sweepSlice(now: number, until: number, continued: boolean): number
  /** What a binding reports, for the request-path benchmarks. */
  open(rawSocket: unknown, secure: boolean, binding: unknown): ConnectionRecord
  requestBegin(rec: ConnectionRecord): void
  /** True when `responseEnd` is wanted for the request (see `BindingSink.requestHead`). */
  requestHead(rec: ConnectionRecord, req: unknown, res: unknown): boolean
  responseEnd(rec: ConnectionRecord, last: 'client' | 'server' | null): void
  /** A connection's parser could not be hooked: idle connections are polled from now on. */
  unhooked(): void
}

/** The engine behind a tracker (a cross-copy, non-enumerable key on the tracker). */
export function engineOf(tracker: ConnectionTracker): EngineHandle {
  return (tracker as unknown as Record<symbol, EngineHandle>)[kEngine] as EngineHandle
}

export { resolveDrainOptions } from './engine/drain.js'
export type {
  AdoptableOption,
  ServerSetting,
} from './options/adopt.js'
export { NODE_DEFAULTS } from './options/adopt.js'
export {
  clock as validateClock,
  resolveDrainTimeout,
  resolveOptions,
  sweepInterval as validateSweepInterval,
} from './options/options.js'
export { resolvePressure } from './options/pressure-options.js'
export { duration as validateDuration } from './options/validate.js'
export { resolveWebSocket } from './options/websocket-options.js'
export { RESET_CODES } from './policy/classify.js'
export {
  connectionLimitFromFiles,
  openFileLimit,
} from './policy/pressure.js'
export {
  type ClientConnectionRecordLike,
  type ClientTrackerLike,
  type ConnectionRecordLike,
  connectionRecordJSON,
  isClientRecord,
  isClientTracker,
} from './record/record-shape.js'
export { resolveCloseLogOptions } from './report/close-log.js'
export { resolveLiveViewOptions } from './report/live-view.js'
export {
  activeTlsHandshakes,
  BYTE_BUCKETS,
  CLEAN_REASONS,
  type ConnectionMeasures,
  liveStates,
  measureConnection,
  type OpenClientConnections,
  type OriginParts,
  openClientConnections,
  originParts,
  PHASES,
  type Phase,
  pressureLevel,
  REJECT_REASONS,
  REQUEST_BUCKETS,
  TIME_BUCKETS,
} from './report/measures.js'
export {
  type ClosingTracker,
  feedClosedRecords,
} from './report/metrics-feed.js'
export {
  DRAINING_BODY,
  READINESS_HEADERS,
  READY_BODY,
} from './report/readiness.js'
export { closest as closestOptionName } from './vocab/errors.js'
