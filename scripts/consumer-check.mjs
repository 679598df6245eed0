#!/usr/bin/env node
/**
 * The packages as a user gets them: every package is packed (`pnpm pack`), the tarballs
 * are installed in a scratch project outside the workspace with fastify 5, express 5 and
 * @types/express, prom-client, @opentelemetry/api, undici 8, ws and @fastify/websocket (one
 * `npm install`), and
 * scripts/consumer/consumer.ts — the README's examples, typed, with `@ts-expect-error`
 * lines for misspelt options — is type-checked under `strict` and `skipLibCheck: false`
 * on TypeScript 5.9 and on the latest TypeScript.
 *
 * Needs the packages built (`pnpm build`) and the npm registry. Exit code 0 when both
 * compilers accept the file. `--keep` leaves the scratch project for inspection.
 */
import { execFileSync } from 'node:child_process'
import { copyFileSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = fileURLToPath(new URL('..', import.meta.url))
const here = join(root, 'scripts', 'consumer')
const PACKAGES = ['core', 'fastify', 'express', 'prometheus', 'opentelemetry', 'client']
const COMPILERS = [
  ['TypeScript 5.9', 'ts59'],
  ['TypeScript latest', 'tslatest'],
]
const keep = process.argv.includes('--keep')

const dir = mkdtempSync(join(tmpdir(), 'connguard-consumer-'))
const started = Date.now()
let failed = false
try {
  const tarballs = join(dir, 'tarballs')
  mkdirSync(tarballs)
  for (const name of PACKAGES) {
    execFileSync('npx', ['-y', 'pnpm@10', 'pack', '--pack-destination', tarballs], {
      cwd: join(root, 'packages', name),
      stdio: ['ignore', 'ignore', 'inherit'],
    })
  }
  const files = readdirSync(tarballs)
  const tarball = (name) => {
    const file = files.find((f) => f.startsWith(`connguard-${name}-`))
    if (file === undefined) throw new Error(`no tarball for @connguard/${name}`)
    return `file:./tarballs/${file}`
  }
  const deps = Object.fromEntries(PACKAGES.map((name) => [`@connguard/${name}`, tarball(name)]))
  writeFileSync(
    join(dir, 'package.json'),
    JSON.stringify(
      {
        name: 'connguard-consumer',
        private: true,
        type: 'module',
        dependencies: {
          ...deps,
          fastify: '^5.6.0',
          express: '^5.1.0',
          '@types/express': '^5.0.3',
          '@types/node': '^24.0.0',
          'prom-client': '^15.1.3',
          '@opentelemetry/api': '^1.9.0',
          undici: '^8.0.0',
          ws: '^8.18.0',
          '@types/ws': '^8.18.0',
          '@fastify/websocket': '^11.0.0',
          ts59: 'npm:typescript@~5.9.3',
          tslatest: 'npm:typescript@latest',
        },
        // The packages' own `@connguard/core` dependency is the packed one, not the registry's.
        overrides: { '@connguard/core': deps['@connguard/core'] },
      },
      null,
      2,
    ),
  )
  copyFileSync(join(here, 'consumer.ts'), join(dir, 'consumer.ts'))
  copyFileSync(join(here, 'tsconfig.json'), join(dir, 'tsconfig.json'))
  // No --force or --legacy-peer-deps: a peer range that refuses undici 8 fails here.
  execFileSync('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], {
    cwd: dir,
    stdio: ['ignore', 'inherit', 'inherit'],
  })
  for (const [label, pkg] of COMPILERS) {
    const tsc = join(dir, 'node_modules', pkg, 'bin', 'tsc')
    const version = execFileSync(process.execPath, [tsc, '--version'], { cwd: dir })
      .toString()
      .trim()
    try {
      execFileSync(process.execPath, [tsc, '-p', 'tsconfig.json'], { cwd: dir, stdio: 'inherit' })
      console.log(`consumer types: ${label} (${version}): ok`)
    } catch {
      console.log(`consumer types: ${label} (${version}): FAILED`)
      failed = true
    }
  }
} catch (err) {
  console.error(`consumer types: ${err instanceof Error ? err.message : err}`)
  failed = true
} finally {
  if (keep) console.log(`consumer types: scratch project kept in ${dir}`)
  else rmSync(dir, { recursive: true, force: true })
}
console.log(
  `consumer types: ${failed ? 'FAILED' : 'passed'} in ${((Date.now() - started) / 1000).toFixed(0)} s`,
)
process.exit(failed ? 1 : 0)
