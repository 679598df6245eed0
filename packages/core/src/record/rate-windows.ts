import type { ResolvedRate } from '../options/options.js'
import { NEVER } from '../time/deadline-queue.js'

/**
 * The state of one request's rate checks (policy/rates.ts decides with it). Data only:
 * a record (HTTP/1) or a stream guard (HTTP/2) holds one while a request is in flight.
 */

/**
 * The rate windows of the request in flight. Taken from a small pool at the
 * request head and given back when it ends: an idle keep-alive connection
 * carries none of this, and a request allocates nothing.
 */
export class RateWindows {
  /** The current request's body rate (per-route overrides applied). */
  bodyRate: ResolvedRate
  /** The current request's response rate. */
  responseRate: ResolvedRate
  /** The request has a body (HTTP/1: Content-Length > 0 or chunked; HTTP/2: its HEADERS did not end the stream). */
  hasBody: boolean
  /** The last check found the server not reading the body. */
  bodyPaused = false
  /** Start of the body window (clock ms), -1 when no body is being measured. */
  bodyWindowAt: number
  /** Body bytes at the start of the body window. */
  bodyWindowBytes: number
  /** Start of the response window, -1 when nothing waits for the client. */
  responseWindowAt = -1
  /** Response progress at the start of the response window. */
  responseWindowBytes = 0
  /** Due time of the next check, clock ms; NEVER when none. Kept here: an idle owner has none. */
  checkAt = NEVER

  constructor(
    hasBody: boolean,
    bodyRate: ResolvedRate,
    responseRate: ResolvedRate,
    now: number,
    bytesRead: number,
  ) {
    this.hasBody = hasBody
    this.bodyRate = bodyRate
    this.responseRate = responseRate
    this.bodyWindowAt = hasBody && bodyRate.bytesPerSecond > 0 ? now : -1
    this.bodyWindowBytes = bytesRead
  }

  /** As the constructor, on a pooled object: every field is set again. */
  reset(
    hasBody: boolean,
    bodyRate: ResolvedRate,
    responseRate: ResolvedRate,
    now: number,
    bytesRead: number,
  ): this {
    this.hasBody = hasBody
    this.bodyRate = bodyRate
    this.responseRate = responseRate
    this.bodyPaused = false
    this.bodyWindowAt = hasBody && bodyRate.bytesPerSecond > 0 ? now : -1
    this.bodyWindowBytes = bytesRead
    this.responseWindowAt = -1
    this.responseWindowBytes = 0
    this.checkAt = NEVER
    return this
  }
}

/** What carries rate windows: a connection record (HTTP/1) or a stream guard (HTTP/2). */
export interface RateOwner {
  rates: RateWindows | null
}
