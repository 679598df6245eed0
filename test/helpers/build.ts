import { execFile } from 'node:child_process'
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'

const run = promisify(execFile)
const root = fileURLToPath(new URL('../..', import.meta.url))

/**
 * Builds every workspace package (one pnpm run, dependency order) unless each of
 * `packages` already has a dist build: tests that run the examples or pack the packages
 * load dist, not sources. Up to 4 minutes on a cold machine.
 */
export async function buildIfMissing(packages: readonly string[]): Promise<void> {
  const built = packages.every((name) => existsSync(`${root}packages/${name}/dist/index.js`))
  if (built) return
  await run('npx', ['-y', 'pnpm@10', '-r', '--filter', './packages/*', 'run', 'build'], {
    cwd: root,
    timeout: 240_000,
  })
}
