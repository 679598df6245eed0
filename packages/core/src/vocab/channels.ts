import diagnosticsChannel from 'node:diagnostics_channel'

/**
 * The tracker's events, also published on `node:diagnostics_channel` so APM
 * agents and loggers can observe every guarded server without a reference to
 * its tracker. Publishing happens only when a channel has subscribers.
 */
export const openChannel = diagnosticsChannel.channel('connguard:connection:open')
export const transitionChannel = diagnosticsChannel.channel('connguard:connection:transition')
export const closeChannel = diagnosticsChannel.channel('connguard:connection:close')
/** The tracker's `'pressure'` event: `{ ...PressureSnapshot, tracker }`. */
export const pressureChannel = diagnosticsChannel.channel('connguard:pressure')
/** The tracker's `'drain'` event: `{ phase, tracker }` as a drain enters `delay`, `closing`, `done`. */
export const drainChannel = diagnosticsChannel.channel('connguard:drain')
/** HTTP/2: one stream was reset by the guard while its session went on. */
export const streamCutChannel = diagnosticsChannel.channel('connguard:stream:cut')
