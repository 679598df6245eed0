/**
 * Rate windows are pooled: a request head takes the windows a finished request gave back,
 * so the request path allocates none. A reused object must start exactly as a new one.
 */
import { describe, expect, it } from 'vitest'
import type { ResolvedRate } from '../src/options/options.js'
import {
  type RateOwner,
  type RateProgress,
  RateWindows,
  startRates,
  stopRates,
} from '../src/policy/rates.js'
import { NEVER } from '../src/time/deadline-queue.js'

const progress: RateProgress<RateOwner> = {
  bodyDone: () => false,
  bodyPaused: () => false,
  bodyBytes: () => 500,
  responseWaiting: () => false,
  responseBytes: () => 0,
}
const rate = (bytesPerSecond: number, windowMs: number): ResolvedRate => ({
  bytesPerSecond,
  graceMs: windowMs,
  windowMs,
})

describe('pooled rate windows', () => {
  it('a window given back is reused for the next head, reset as if new', () => {
    const body = rate(100, 1_000)
    const response = rate(200, 2_000)
    const a: RateOwner = { rates: null }
    startRates(a, progress, true, body, response, 10)
    const first = a.rates as RateWindows
    // Everything a request can leave behind.
    first.bodyPaused = true
    first.responseWindowAt = 50
    first.responseWindowBytes = 77
    first.bodyWindowBytes = 999
    stopRates(a)
    expect(a.rates).toBeNull()

    const b: RateOwner = { rates: null }
    startRates(b, progress, false, body, response, 20)
    expect(b.rates).toBe(first)
    const fresh = new RateWindows(false, body, response, 20, 0)
    fresh.checkAt = 20 + 2_000
    expect({ ...(b.rates as RateWindows) }).toEqual({ ...fresh })
    expect(b.rates?.checkAt).not.toBe(NEVER)
  })

  it('stopping twice gives a window back once', () => {
    const a: RateOwner = { rates: null }
    startRates(a, progress, false, rate(0, 1_000), rate(100, 1_000), 0)
    const w = a.rates
    stopRates(a)
    stopRates(a)
    const b: RateOwner = { rates: null }
    const c: RateOwner = { rates: null }
    startRates(b, progress, false, rate(0, 1_000), rate(100, 1_000), 0)
    startRates(c, progress, false, rate(0, 1_000), rate(100, 1_000), 0)
    expect(b.rates).toBe(w)
    expect(c.rates).not.toBe(w)
  })
})
