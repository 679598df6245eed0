import { availableParallelism } from 'node:os'
import { fileURLToPath } from 'node:url'
import { defineConfig } from 'vitest/config'

/** Absolute path of a workspace package's source entry. */
const sourceEntry = (name: string): string =>
  fileURLToPath(new URL(`./packages/${name}/src/index.ts`, import.meta.url))

/**
 * The undici the client package and its tests load: 7 (`undici`) by default, 8 with
 * CONNGUARD_UNDICI=8 (the `undici8` alias dev dependency: one frozen lockfile holds both).
 * undici 8 needs Node 22.19 or newer; .ci/run runs the client tests with it there.
 */
const undiciMajor = process.env.CONNGUARD_UNDICI ?? '7'
if (undiciMajor !== '7' && undiciMajor !== '8') {
  throw new Error(`CONNGUARD_UNDICI must be 7 or 8, got ${undiciMajor}`)
}

export default defineConfig({
  resolve: {
    // Tests run against source, not dist: no build step between an edit and a test run.
    // Exact-match regexes so `@connguard/core/package.json` still resolves normally.
    alias: [
      ...['core', 'fastify', 'express', 'prometheus', 'opentelemetry', 'client'].map((name) => ({
        find: new RegExp(`^@connguard/${name}$`),
        replacement: sourceEntry(name),
      })),
      {
        find: /^@connguard\/core\/internal$/,
        replacement: fileURLToPath(new URL('./packages/core/src/internal.ts', import.meta.url)),
      },
      ...(undiciMajor === '8' ? [{ find: /^undici$/, replacement: 'undici8' }] : []),
    ],
  },
  test: {
    include: ['test/**/*.test.ts', 'packages/*/test/**/*.test.ts'],
    environment: 'node',
    // Child processes, not worker threads: tests open real sockets and servers, and a
    // crashed or leaking test file must not take the others down with it.
    pool: 'forks',
    // Integration tests assert timing bounds (100–1000 ms deadlines with margins). On the
    // 2-core CI machine more than two busy files at once turns event-loop lag into flakes.
    maxWorkers: Math.min(2, availableParallelism()),
    testTimeout: 30_000,
    // beforeAll/afterAll start and stop servers; give them the same budget as a test.
    hookTimeout: 30_000,
    // Coverage is deliberately not configured.
  },
})
