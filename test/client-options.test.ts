/**
 * @connguard/client options: validated once in createDispatcher, connguard's own split
 * from undici's Agent options (which pass through to undici untouched), typos of
 * connguard's names rejected so liveness is never silently left at its default.
 */
import {
  ConnguardDispatcher,
  createDispatcher,
  DEFAULT_PING_TIMEOUT,
  DEFAULT_READ_IDLE_TIMEOUT,
  DEFAULT_TCP_KEEP_ALIVE,
} from '@connguard/client'
import { Agent } from 'undici'
import { afterEach, describe, expect, it } from 'vitest'

const made: ConnguardDispatcher[] = []
afterEach(async () => {
  for (const d of made.splice(0)) await d.destroy()
})
const make = (options?: Parameters<typeof createDispatcher>[0]) => {
  const d = createDispatcher(options)
  made.push(d)
  return d
}

const codeOf = (fn: () => unknown): string | undefined => {
  try {
    fn()
  } catch (err) {
    return (err as { code?: string }).code
  }
  return undefined
}

describe('createDispatcher options', () => {
  it('defaults: PING after 30 s of read silence, 15 s for the ACK, TCP keepalive after 10 s', () => {
    const d = make()
    expect(d).toBeInstanceOf(Agent)
    expect(d).toBeInstanceOf(ConnguardDispatcher)
    expect(d.tracker.options).toMatchObject({
      readIdleTimeout: DEFAULT_READ_IDLE_TIMEOUT,
      pingTimeout: DEFAULT_PING_TIMEOUT,
      tcpKeepAlive: DEFAULT_TCP_KEEP_ALIVE,
      sweepInterval: 250,
    })
    expect([DEFAULT_READ_IDLE_TIMEOUT, DEFAULT_PING_TIMEOUT, DEFAULT_TCP_KEEP_ALIVE]).toEqual([
      30_000, 15_000, 10_000,
    ])
  })

  it('the sweep defaults to a quarter of the shorter deadline, within 10–250 ms', () => {
    expect(make({ readIdleTimeout: 300, pingTimeout: 300 }).tracker.options.sweepInterval).toBe(75)
    expect(make({ readIdleTimeout: 20, pingTimeout: 1_000 }).tracker.options.sweepInterval).toBe(10)
    expect(make({ readIdleTimeout: false, pingTimeout: false }).tracker.options.sweepInterval).toBe(
      250,
    )
    expect(make({ sweepInterval: 5 }).tracker.options.sweepInterval).toBe(5)
  })

  it('false switches a check off', () => {
    expect(make({ readIdleTimeout: false, tcpKeepAlive: false }).tracker.options).toMatchObject({
      readIdleTimeout: 0,
      tcpKeepAlive: 0,
    })
  })

  it.each([
    ['readIdleTimeout', -1],
    ['readIdleTimeout', 1.5],
    ['readIdleTimeout', '300'],
    ['pingTimeout', Number.NaN],
    ['pingTimeout', 2 ** 31],
    ['tcpKeepAlive', true],
    ['sweepInterval', 0],
    ['sweepInterval', false],
    ['clock', {}],
  ])('%s = %s throws CONNGUARD_ERR_INVALID_OPTION naming it', (option, value) => {
    let err: (Error & { code?: string; option?: string }) | null = null
    try {
      createDispatcher({ [option]: value })
    } catch (e) {
      err = e as Error & { code?: string; option?: string }
    }
    expect(err?.code).toBe('CONNGUARD_ERR_INVALID_OPTION')
    expect(err?.option).toBe(option)
    expect(err?.message).toContain(option)
  })

  it('a typo of a connguard option is an error, with a suggestion', () => {
    let err: (Error & { code?: string; suggestion?: string }) | null = null
    try {
      createDispatcher({ readIdleTimout: 300 } as never)
    } catch (e) {
      err = e as Error & { code?: string; suggestion?: string }
    }
    expect(err?.code).toBe('CONNGUARD_ERR_UNKNOWN_OPTION')
    expect(err?.suggestion).toBe('readIdleTimeout')
    expect(codeOf(() => createDispatcher({ pingTimout: 1 } as never))).toBe(
      'CONNGUARD_ERR_UNKNOWN_OPTION',
    )
  })

  it("undici's Agent options pass through, and undici validates them", () => {
    expect(() => make({ keepAliveTimeout: 1_000, connections: 4, allowH2: false })).not.toThrow()
    expect(codeOf(() => createDispatcher({ maxOrigins: 0 }))).toBe('UND_ERR_INVALID_ARG')
    expect(codeOf(() => createDispatcher({ connect: 1 as never }))).toBe(
      'CONNGUARD_ERR_INVALID_OPTION',
    )
  })

  it('options that are not an object are rejected', () => {
    expect(codeOf(() => createDispatcher(null as never))).toBe('CONNGUARD_ERR_INVALID_OPTION')
    expect(codeOf(() => createDispatcher([] as never))).toBe('CONNGUARD_ERR_INVALID_OPTION')
  })

  it('close() and destroy() close the tracker; both are safe to repeat', async () => {
    const d = createDispatcher()
    await d.close()
    expect(d.tracker.closed).toBe(true)
    d.tracker.close()
    const e = createDispatcher()
    await new Promise<void>((resolve) => e.destroy(() => resolve()))
    expect(e.tracker.closed).toBe(true)
  })
})
