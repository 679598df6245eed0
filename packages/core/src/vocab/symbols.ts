/**
 * Every symbol core puts on objects it does not own, in one place. Two kinds:
 *
 * - Local (`Symbol()`): one per copy of the module. If both the ESM and the CommonJS build
 *   of core are loaded, each copy sees only what its own trackers marked, so no connection
 *   or request is counted twice.
 * - Cross-copy (`Symbol.for()`): shared by every copy in the process, for what must hold
 *   across them: one tracker per server, a resolved override recognised whichever copy made
 *   it, the engine behind a tracker for the benchmarks.
 */

// ---- local -----------------------------------------------------------------------------

/** A socket (raw and TLS) → its connection record. */
export const kRecord = Symbol('connguard.record')
/** An HTTP/2 session → its connection record. */
export const kSessionRecord = Symbol('connguard.sessionRecord')
/** An HTTP/2 stream → its guard. */
export const kStreamGuard = Symbol('connguard.streamGuard')

// ---- cross-copy --------------------------------------------------------------------------

/** A guarded server → the engine guarding it: two trackers never guard one server. */
export const kTracker = Symbol.for('connguard.tracker')
/** Marks request overrides already resolved (`resolveRequestOverrides`). */
export const kResolved = Symbol.for('connguard.resolvedOverrides')
/** A tracker → its engine (not enumerable; read by the benchmarks through the internal entry). */
export const kEngine = Symbol.for('connguard.engine')
