/**
 * examples/client.mjs --smoke: the before/after of the seed article's dead route, run as a
 * user would (global fetch, the built @connguard/client): plain undici stays stuck on the
 * dead HTTP/2 connection, connguard closes it with ping_timeout and recovers, and the
 * Prometheus scrape shows the client metrics.
 */
import { execFile } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { beforeAll, expect, it } from 'vitest'
import { buildIfMissing } from './helpers/build.js'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))

beforeAll(() => buildIfMissing(['core', 'client', 'prometheus']), 250_000)

it('examples/client.mjs --smoke: plain undici stays stuck, connguard recovers, exit 0', async () => {
  const { stdout } = await run('node', ['examples/client.mjs', '--smoke'], {
    cwd: root,
    timeout: 25_000,
  })
  expect(stdout).toContain('closed: ping_timeout')
  expect(stdout).toMatch(/failed: TimeoutError/)
  expect(stdout).toMatch(
    /connguard_http_client_connection_duration_seconds_count\{reason="ping_timeout",[^}]*protocol_version="2"\} 1/,
  )
  expect(stdout).toMatch(/connguard_http_client_open_connections\{state="idle",[^}]*\} 1/)
  expect(stdout).toContain('OK: connguard recovered, plain undici did not')
}, 30_000)
