/**
 * The client tests run against the undici major CONNGUARD_UNDICI names (7 by default, 8
 * through the `undici8` alias; see vitest.config.ts): this proves the alias took effect,
 * so a run reported as undici 8 did not silently test undici 7; and what an undici 8
 * dispatcher does with the global fetch of a Node that bundles an older undici.
 */
import http from 'node:http'
import { createRequire } from 'node:module'
import type { AddressInfo } from 'node:net'
import { createDispatcher } from '@connguard/client'
import { Agent, fetch as undiciFetch } from 'undici'
import { expect, it } from 'vitest'
import { globalFetchTakesDispatcher } from './helpers/undici.js'

it('loads the undici major CONNGUARD_UNDICI names', () => {
  expect(typeof Agent).toBe('function')
  const major = process.env.CONNGUARD_UNDICI ?? '7'
  const loaded = Object.keys(createRequire(import.meta.url).cache).filter((file) =>
    /[\\/]undici@\d+\.\d+\.\d+[\\/]node_modules[\\/]undici[\\/]index\.js$/.test(file),
  )
  expect(loaded.map((file) => /undici@(\d+)\./.exec(file)?.[1])).toEqual([major])
})

it.runIf(!globalFetchTakesDispatcher)(
  "an undici 8 dispatcher is refused by an older Node's global fetch, as documented",
  async () => {
    const server = http.createServer((_req, res) => res.end('ok'))
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve))
    const { port } = server.address() as AddressInfo
    const dispatcher = createDispatcher()
    try {
      const init = { dispatcher } as RequestInit
      const err = await fetch(`http://127.0.0.1:${port}/`, init).then(
        () => undefined,
        (e: unknown) => e as Error & { cause?: Error },
      )
      expect(err?.cause?.message).toMatch(/onRequestStart/)
      // undici's own fetch takes it.
      expect(await (await undiciFetch(`http://127.0.0.1:${port}/`, { dispatcher })).text()).toBe(
        'ok',
      )
    } finally {
      await dispatcher.close()
      server.close()
    }
  },
)
