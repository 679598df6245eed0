/**
 * The README's first promise: the demo runs and exits 0 by itself, and every
 * example's self-test passes. They import the built packages, as a user would.
 */
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { beforeAll, describe, expect, it } from 'vitest'
import { buildIfMissing } from './helpers/build.js'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))

beforeAll(() => buildIfMissing(['core', 'fastify', 'express']), 250_000)

describe('examples', () => {
  it('the demo cuts every stuck client with its reason, spares the upload, and exits 0', async () => {
    const { stdout } = await run('node', ['examples/demo.mjs'], {
      cwd: root,
      timeout: 60_000,
      env: { ...process.env, NO_COLOR: '1' },
    }).catch((err: Error & { stdout?: string; stderr?: string }) => {
      // A failure says what the demo printed, not only that it exited non-zero.
      throw new Error(`${err.message}\n--- stdout\n${err.stdout}\n--- stderr\n${err.stderr}`)
    })
    expect(stdout).toContain('tls_handshake_timeout')
    expect(stdout).toContain('request_headers_timeout')
    expect(stdout).toContain('keep_alive_timeout')
    expect(stdout).toMatch(/OK: /)
  }, 70_000)

  it('under-attack.mjs --smoke serves every legitimate request with pressure, not without', async () => {
    const { stdout } = await run('node', ['examples/under-attack.mjs', '--smoke'], {
      cwd: root,
      timeout: 40_000,
    })
    expect(stdout).toMatch(
      /OK: every legitimate request served; \d+ attacker connections shed_under_pressure/,
    )
    expect(stdout).toContain('max_concurrent_connections_exceeded')
  }, 50_000)

  it('websocket.mjs --smoke: a WebSocket whose route died is closed with ping_timeout', async () => {
    const { stdout } = await run('node', ['examples/websocket.mjs', '--smoke'], {
      cwd: root,
      timeout: 30_000,
    })
    expect(stdout).toContain('echo: hello')
    expect(stdout).toMatch(/closed: ping_timeout \(ws code 1006\)/)
    expect(stdout).toMatch(/OK: the dead WebSocket was closed with ping_timeout/)
  }, 40_000)

  it.each(['fastify-https.mjs', 'express-https.mjs', 'uploads-sse.mjs', 'live-view.mjs'])(
    '%s --smoke exits 0 after a successful request',
    async (file) => {
      const { stdout } = await run('node', [`examples/${file}`, '--smoke'], {
        cwd: root,
        timeout: 30_000,
      })
      expect(stdout).toMatch(/→ 200/)
    },
    40_000,
  )
})
