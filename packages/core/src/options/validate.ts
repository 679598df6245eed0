/**
 * The checks every option goes through, shared by every option group (options.ts,
 * pressure-options.ts, websocket-options.ts, the drain's, the close log's and the live
 * view's) so each validates with the same messages. Each throws a typed
 * `InvalidOptionError` or `UnknownOptionError` naming the option.
 */
import { InvalidOptionError, UnknownOptionError } from '../vocab/errors.js'

/** The longest duration accepted: 2^31 - 1 ms (about 24.8 days), the range of Node's timers. */
export const MAX_DURATION = 2_147_483_647
export const MAX_COUNT = 2 ** 31 - 1

export function assertPlainObject(
  name: string,
  value: unknown,
  expected = 'an object',
): asserts value is Record<string, unknown> {
  if (value === null || typeof value !== 'object' || Array.isArray(value)) {
    throw new InvalidOptionError(name, value, expected)
  }
}

export function rejectUnknown(given: object, known: readonly string[], where: string): void {
  for (const key of Object.keys(given)) {
    if (!known.includes(key)) throw new UnknownOptionError(key, known, where)
  }
}

export function duration(name: string, value: unknown, fallback: number): number {
  if (value === undefined) return fallback
  if (value === false) return 0
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_DURATION) {
    throw new InvalidOptionError(
      name,
      value,
      `a whole number of milliseconds from 0 to ${MAX_DURATION}, or false (0 and false switch it off)`,
    )
  }
  return value
}

export function count(name: string, value: unknown): number {
  if (value === undefined || value === false) return 0
  if (typeof value !== 'number' || !Number.isInteger(value) || value < 0 || value > MAX_COUNT) {
    throw new InvalidOptionError(
      name,
      value,
      `a whole number from 0 to ${MAX_COUNT}, or false (0 and false switch it off)`,
    )
  }
  return value
}
