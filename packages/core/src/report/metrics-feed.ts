import type { ConnectionRecordLike } from '../record/record-shape.js'
import { METRICS_FAILED } from '../vocab/warnings.js'
import { type ConnectionMeasures, measureConnection } from './measures.js'

/** Either tracker, server or client, as far as its 'close' event goes. */
export interface ClosingTracker {
  on(event: 'close', listener: (rec: ConnectionRecordLike) => void): unknown
  off(event: 'close', listener: (rec: ConnectionRecordLike) => void): unknown
}

/**
 * Internal, for the exporters: hands every record `tracker` closes, measured, to `record`,
 * until the returned function is called. A `record` that throws must not become an
 * uncaught exception (the tracker re-throws a throwing listener): the error is swallowed
 * and reported once per feed as a process warning (code `CONNGUARD_METRICS_FAILED`).
 */
export function feedClosedRecords(
  tracker: ClosingTracker,
  record: (measures: ConnectionMeasures) => void,
): () => void {
  let warned = false
  const onClose = (rec: ConnectionRecordLike): void => {
    try {
      record(measureConnection(rec))
    } catch (err) {
      if (!warned) {
        warned = true
        METRICS_FAILED.emit(String(err))
      }
    }
  }
  tracker.on('close', onClose)
  return () => {
    tracker.off('close', onClose)
  }
}
