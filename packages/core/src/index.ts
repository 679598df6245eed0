export { ConnectionTracker, type ConnectionTrackerEvents, type Snapshot } from './tracker.js'
export {
  ConnectionRecord,
  type DeadlineKind,
  type StateDurations,
  type TlsInfo,
} from './record.js'
export {
  type ConnectionTrackerOptions,
  type RequestOverrides,
  type ResolvedOptions,
  ResolvedRequestOverrides,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HEADERS_TIMEOUT,
  DEFAULT_KEEP_ALIVE_TIMEOUT,
  DEFAULT_REQUEST_TIMEOUT,
  DEFAULT_SWEEP_INTERVAL,
  MAX_DURATION,
  resolveOptions,
  resolveRequestOverrides,
} from './options.js'
export { CLOSE_REASONS, type CloseReason } from './close-reasons.js'
export { LIVE_STATES, type ConnectionState, type LiveState } from './states.js'
export type { Clock } from './clock.js'
export {
  AlreadyAttachedError,
  ConnguardError,
  InvalidOptionError,
  TrackerClosedError,
  UnknownOptionError,
  UnsupportedServerError,
} from './errors.js'
