export { ConnguardDispatcher, createDispatcher, type GlobalFetchDispatcher } from './dispatcher.js'
export { PingTimeoutError } from './errors.js'
export {
  type ClientClock,
  type ClientLivenessOptions,
  type ClientOptions,
  DEFAULT_PING_TIMEOUT,
  DEFAULT_READ_IDLE_TIMEOUT,
  DEFAULT_TCP_KEEP_ALIVE,
  type ResolvedClientOptions,
  resolveClientOptions,
} from './options.js'
export { ClientConnectionRecord } from './record.js'
export { createClientTracker } from './session.js'
export { type ClientSnapshot, ClientTracker, type ClientTrackerEvents } from './tracker.js'
