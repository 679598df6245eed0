/**
 * The public API of @connguard/core: what the README documents. The framework adapters
 * re-export exactly this. What the other @connguard packages share with core beyond it is in
 * `@connguard/core/internal` (internal.ts), not a stable API.
 */

export {
  DEFAULT_DRAIN_IDLE_GRACE,
  type DrainOptions,
  type DrainPhase,
  type DrainResult,
  type ResolvedDrainOptions,
} from './engine/drain.js'
export { RequestController } from './engine/request-controller.js'
export {
  ConnectionTracker,
  type ConnectionTrackerEvents,
  type Snapshot,
} from './engine/tracker.js'
export type {
  WebSocketInfo,
  WebSocketLike,
  WebSocketServerLike,
} from './engine/websocket.js'
export type {
  FrameworkSettings,
  OptionSource,
} from './options/adopt.js'
export {
  type ConnectionTrackerOptions,
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
  type OverridableRequest,
  type RequestOverrides,
  type ResolvedOptions,
  type ResolvedRate,
  ResolvedRequestOverrides,
  resolveRequestOverrides,
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
} from './options/pressure-options.js'
export {
  DEFAULT_WS_IDLE_TIMEOUT,
  DEFAULT_WS_PING_INTERVAL,
  DEFAULT_WS_PING_TIMEOUT,
  DEFAULT_WS_TCP_KEEP_ALIVE,
  type ResolvedWebSocket,
  type WebSocketOptions,
} from './options/websocket-options.js'
export type { PressureSnapshot } from './policy/pressure.js'
export {
  STREAM_CUT_REASONS,
  type StreamCutReason,
} from './policy/streams.js'
export {
  ConnectionRecord,
  type DeadlineKind,
  type StateDurations,
  type TlsInfo,
} from './record/record.js'
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
} from './report/live-view.js'
export {
  readinessHandler,
  readinessState,
} from './report/readiness.js'
export type { Clock } from './time/clock.js'
export {
  CLOSE_REASONS,
  type CloseReason,
} from './vocab/close-reasons.js'
export {
  AlreadyAttachedError,
  ConnguardError,
  InvalidOptionError,
  RequestTimeoutError,
  TrackerClosedError,
  UnknownOptionError,
  UnsupportedServerError,
  UnsupportedWebSocketError,
} from './vocab/errors.js'
export {
  type ConnectionState,
  LIVE_STATES,
  type LiveState,
} from './vocab/states.js'
