export type { Clock } from './clock.js'
export { CLOSE_REASONS, type CloseReason } from './close-reasons.js'
export {
  AlreadyAttachedError,
  ConnguardError,
  InvalidOptionError,
  TrackerClosedError,
  UnknownOptionError,
  UnsupportedServerError,
} from './errors.js'
export {
  type ConnectionTrackerOptions,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HEADERS_TIMEOUT,
  DEFAULT_KEEP_ALIVE_TIMEOUT,
  DEFAULT_REQUEST_TIMEOUT,
  DEFAULT_SWEEP_INTERVAL,
  MAX_DURATION,
  type RequestOverrides,
  type ResolvedOptions,
  ResolvedRequestOverrides,
  resolveOptions,
  resolveRequestOverrides,
} from './options.js'
export {
  ConnectionRecord,
  type DeadlineKind,
  type StateDurations,
  type TlsInfo,
} from './record.js'
export { type ConnectionState, LIVE_STATES, type LiveState } from './states.js'
export { ConnectionTracker, type ConnectionTrackerEvents, type Snapshot } from './tracker.js'
