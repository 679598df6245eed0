/** Internal, for @connguard/client: the error codes both sides read as a reset. */

export {
  DEFAULT_DRAIN_IDLE_GRACE,
  type DrainOptions,
  type DrainPhase,
  type DrainResult,
  type ResolvedDrainOptions,
  resolveDrainOptions,
} from './engine/drain.js'
export { RequestController } from './engine/request-controller.js'
export {
  ConnectionTracker,
  type ConnectionTrackerEvents,
  type Snapshot,
} from './engine/tracker.js'
export type { WebSocketInfo, WebSocketLike, WebSocketServerLike } from './engine/websocket.js'
export type {
  AdoptableOption,
  FrameworkSettings,
  OptionSource,
  ServerSetting,
} from './options/adopt.js'
export {
  type ConnectionTrackerOptions,
  clock as validateClock,
  type DataRate,
  DEFAULT_DRAIN_TIMEOUT,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HEADERS_TIMEOUT,
  DEFAULT_KEEP_ALIVE_TIMEOUT,
  DEFAULT_MIN_BODY_RATE,
  DEFAULT_MIN_RESPONSE_RATE,
  DEFAULT_REQUEST_TIMEOUT,
  DEFAULT_SWEEP_INTERVAL,
  MAX_DURATION,
  type OptionName,
  type RequestOverrides,
  type ResolvedOptions,
  type ResolvedRate,
  ResolvedRequestOverrides,
  resolveDrainTimeout,
  resolveOptions,
  resolveRequestOverrides,
  sweepInterval as validateSweepInterval,
} from './options/options.js'
export {
  DEFAULT_MAX_SHED_PER_SWEEP,
  DEFAULT_PRESSURE_FLOOR,
  DEFAULT_PRESSURE_SHED_ABOVE,
  DEFAULT_PRESSURE_START,
  DEFAULT_SLOW_RATE,
  type PressureFloors,
  type PressureLimitSource,
  type PressureOptions,
  type ResolvedPressure,
  resolvePressure,
} from './options/pressure-options.js'
export { duration as validateDuration } from './options/validate.js'
export {
  DEFAULT_WS_IDLE_TIMEOUT,
  DEFAULT_WS_PING_INTERVAL,
  DEFAULT_WS_PING_TIMEOUT,
  DEFAULT_WS_TCP_KEEP_ALIVE,
  type ResolvedWebSocket,
  resolveWebSocket,
  type WebSocketOptions,
} from './options/websocket-options.js'
export { RESET_CODES } from './policy/classify.js'
export {
  connectionLimitFromFiles,
  openFileLimit,
  type PressureSnapshot,
} from './policy/pressure.js'
export { STREAM_CUT_REASONS, type StreamCutReason } from './policy/streams.js'
export {
  ConnectionRecord,
  type DeadlineKind,
  type StateDurations,
  type TlsInfo,
} from './record/record.js'
export {
  type ClientConnectionRecordLike,
  type ClientTrackerLike,
  type ConnectionRecordLike,
  connectionRecordJSON,
  isClientRecord,
  isClientTracker,
} from './record/record-shape.js'
export {
  type CloseLogger,
  type CloseLogLine,
  type CloseLogOptions,
  closeLogLine,
  closeLogMessage,
  DEFAULT_CLOSE_LOG_LEVELS,
  LOG_LEVELS,
  type LogLevel,
  logCloses,
  resolveCloseLogOptions,
} from './report/close-log.js'
export {
  DEFAULT_LIST_LIMIT,
  DEFAULT_RECENT_CLOSES,
  type LiveConnection,
  LiveView,
  type LiveViewData,
  type LiveViewOptions,
  liveView,
  type RecentClose,
  resolveLiveViewOptions,
} from './report/live-view.js'
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
export { type ClosingTracker, feedClosedRecords } from './report/metrics-feed.js'
export {
  DRAINING_BODY,
  READINESS_HEADERS,
  READY_BODY,
  readinessHandler,
  readinessState,
} from './report/readiness.js'
export type { Clock } from './time/clock.js'
export { CLOSE_REASONS, type CloseReason } from './vocab/close-reasons.js'
/**
 * Internal, for the other @connguard packages (the client validates its options with
 * the same rules and messages): exported, but not a stable API; may change in any release.
 */
export {
  AlreadyAttachedError,
  ConnguardError,
  closest as closestOptionName,
  InvalidOptionError,
  RequestTimeoutError,
  TrackerClosedError,
  UnknownOptionError,
  UnsupportedServerError,
  UnsupportedWebSocketError,
} from './vocab/errors.js'
export { type ConnectionState, LIVE_STATES, type LiveState } from './vocab/states.js'
/** Every process warning connguard emits, with its stable code (internal: the packages emit through it). */
export * as WARNINGS from './vocab/warnings.js'
