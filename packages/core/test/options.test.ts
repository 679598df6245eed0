import { describe, expect, it } from 'vitest'
import {
  ConnguardError,
  DEFAULT_HANDSHAKE_TIMEOUT,
  DEFAULT_HEADERS_TIMEOUT,
  DEFAULT_KEEP_ALIVE_TIMEOUT,
  DEFAULT_SWEEP_INTERVAL,
  InvalidOptionError,
  ResolvedRequestOverrides,
  resolveRequestOverrides,
  UnknownOptionError,
} from '../src/index.js'
import { resolveOptions } from '../src/internal.js'

function thrown(fn: () => unknown): ConnguardError {
  try {
    fn()
  } catch (err) {
    expect(err).toBeInstanceOf(ConnguardError)
    return err as ConnguardError
  }
  throw new Error('expected a throw')
}

describe('resolveOptions', () => {
  it('fills production defaults', () => {
    const o = resolveOptions()
    expect(o.handshakeTimeout).toBe(DEFAULT_HANDSHAKE_TIMEOUT)
    expect(o.headersTimeout).toBe(DEFAULT_HEADERS_TIMEOUT)
    expect(o.keepAliveTimeout).toBe(DEFAULT_KEEP_ALIVE_TIMEOUT)
    expect(o.requestTimeout).toBe(0)
    expect(o.sweepInterval).toBe(DEFAULT_SWEEP_INTERVAL)
    expect(typeof o.clock.now()).toBe('number')
  })

  it('treats false and 0 as off', () => {
    const o = resolveOptions({ handshakeTimeout: false, headersTimeout: 0, requestTimeout: 5000 })
    expect(o.handshakeTimeout).toBe(0)
    expect(o.headersTimeout).toBe(0)
    expect(o.requestTimeout).toBe(5000)
  })

  it.each([
    ['headersTimeout', -1],
    ['headersTimeout', 1.5],
    ['keepAliveTimeout', '5000'],
    ['requestTimeout', true],
    ['handshakeTimeout', Number.NaN],
    ['handshakeTimeout', 2 ** 31],
    ['sweepInterval', 0],
    ['sweepInterval', false],
    ['clock', { now: 1 }],
    ['clock', { now: () => -5 }],
    ['clock', { now: () => Number.NaN }],
    ['clock', { now: () => '5' }],
  ])('rejects %s = %o with a typed error naming the option', (option, value) => {
    const err = thrown(() => resolveOptions({ [option]: value }))
    expect(err).toBeInstanceOf(InvalidOptionError)
    expect(err.code).toBe('CONNGUARD_ERR_INVALID_OPTION')
    expect((err as InvalidOptionError).option).toBe(option)
    expect(err.message).toContain(option)
  })

  it('rejects unknown names and suggests the near one', () => {
    const err = thrown(() => resolveOptions({ headerTimeout: 1000 } as never))
    expect(err).toBeInstanceOf(UnknownOptionError)
    expect(err.code).toBe('CONNGUARD_ERR_UNKNOWN_OPTION')
    expect((err as UnknownOptionError).suggestion).toBe('headersTimeout')
  })

  it('rejects a non-object', () => {
    expect(thrown(() => resolveOptions(42 as never)).code).toBe('CONNGUARD_ERR_INVALID_OPTION')
  })
})

describe('resolveRequestOverrides', () => {
  it('validates once and brands the result', () => {
    const r = resolveRequestOverrides({ requestTimeout: false })
    expect(r.requestTimeout).toBe(0)
    expect(ResolvedRequestOverrides.is(r)).toBe(true)
    expect(ResolvedRequestOverrides.is({ requestTimeout: 0 })).toBe(false)
    expect(resolveRequestOverrides({}).requestTimeout).toBeUndefined()
  })

  it('rejects bad values and unknown names', () => {
    expect(thrown(() => resolveRequestOverrides({ requestTimeout: 'x' as never })).code).toBe(
      'CONNGUARD_ERR_INVALID_OPTION',
    )
    expect(thrown(() => resolveRequestOverrides({ minBodyRat: 1 } as never)).code).toBe(
      'CONNGUARD_ERR_UNKNOWN_OPTION',
    )
  })
})
