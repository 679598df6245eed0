/**
 * connguard's process warnings, captured per test: each test starts with an empty list and
 * with the warnings' once-per-message memory cleared, so a warning said in an earlier test
 * is said again.
 */
import { WARNINGS } from '@connguard/core/internal'
import { beforeEach } from 'vitest'

export interface CapturedWarning {
  code: string
  message: string
}

/** Registers the capture for every test of the file; returns the list it fills. */
export function captureWarnings(): CapturedWarning[] {
  const warnings: CapturedWarning[] = []
  const onWarning = (w: Error & { code?: string }) => {
    if (w.code?.startsWith('CONNGUARD_') === true)
      warnings.push({ code: w.code, message: w.message })
  }
  beforeEach(() => {
    warnings.length = 0
    for (const w of Object.values(WARNINGS)) {
      if (typeof w === 'object' && 'emitted' in w) w.emitted.clear()
    }
    process.on('warning', onWarning)
    return () => {
      process.off('warning', onWarning)
    }
  })
  return warnings
}

/** Node emits process warnings on the next tick: wait for them. */
export const warningsSettled = (): Promise<unknown> => new Promise((r) => setImmediate(r))
