/**
 * The metrics examples' self-tests: examples/metrics.mjs (Fastify, Prometheus /metrics and
 * an OpenTelemetry reader) and examples/metrics-cluster.mjs (2 node:cluster workers, the
 * primary aggregating their registries). They import the built packages, as a user would.
 */
import { execFile } from 'node:child_process'
import { existsSync, readdirSync, statSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { beforeAll, describe, expect, it } from 'vitest'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))

/** A package whose dist is missing, or older than a file of its src. */
function stale(name: string, { ifOlder }: { ifOlder: boolean }): boolean {
  const dist = `${root}packages/${name}/dist/index.js`
  if (!existsSync(dist)) return true
  if (!ifOlder) return false
  const built = statSync(dist).mtimeMs
  const src = `${root}packages/${name}/src`
  return readdirSync(src).some((file) => statSync(`${src}/${file}`).mtimeMs > built)
}

beforeAll(async () => {
  // The exporters are rebuilt when their sources changed; core and fastify only when never
  // built (test/examples.test.ts does the same for them).
  const names = [
    ...['core', 'fastify'].filter((n) => stale(n, { ifOlder: false })),
    ...['prometheus', 'opentelemetry'].filter((n) => stale(n, { ifOlder: true })),
  ]
  if (names.length > 0) {
    const filters = names.flatMap((n) => ['--filter', `@connguard/${n}`])
    // One pnpm run: it builds the packages in dependency order (core first).
    await run('npx', ['-y', 'pnpm@10', '-r', ...filters, 'run', 'build'], {
      cwd: root,
      timeout: 240_000,
    })
  }
}, 250_000)

describe('metrics examples', () => {
  it('metrics.mjs --smoke scrapes /metrics and reads the OpenTelemetry reader, and exits 0', async () => {
    const { stdout } = await run('node', ['examples/metrics.mjs', '--smoke'], {
      cwd: root,
      timeout: 20_000,
    })
    expect(stdout).toContain('GET /metrics → 200')
    expect(stdout).toContain(
      'connguard_connections_closed_total{reason="request_headers_timeout"} 1',
    )
    expect(stdout).toContain('connguard.connection.duration (s)')
    expect(stdout).toMatch(/OK: /)
  }, 30_000)

  it('metrics-cluster.mjs --smoke sums two workers’ metrics in the primary, and exits 0', async () => {
    const { stdout } = await run('node', ['examples/metrics-cluster.mjs', '--smoke'], {
      cwd: root,
      timeout: 25_000,
    })
    const workers = new Set(stdout.match(/worker \d+/g))
    expect(workers.size).toBe(2)
    expect(stdout).toContain('connguard_connections_closed_total{reason="client_closed"} 6')
    expect(stdout).toMatch(/OK: 6 connections/)
  }, 30_000)
})
