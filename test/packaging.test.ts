/**
 * Each published package works for a consumer OUTSIDE the workspace, by `require` and by
 * `import`: the tarball `pnpm pack` makes is extracted into a throwaway project's
 * node_modules and loaded from a child process there. This catches what source-level tests
 * cannot: a missing dist file or type entry, a broken exports map, a `workspace:` range left
 * in the published package.json, or an ESM/CJS build that disagree on their exports.
 *
 * Assumes the packages are built (`pnpm test` builds first); builds them if dist is missing.
 * No network: third-party dependencies are symlinked from the workspace's install.
 */
import { execFile } from 'node:child_process'
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs'
import { tmpdir } from 'node:os'
import { dirname, join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { buildIfMissing } from './helpers/build.js'

const run = promisify(execFile)
const root = fileURLToPath(new URL('..', import.meta.url))
const PNPM = ['-y', 'pnpm@10']

interface PackageCase {
  name: 'core' | 'fastify' | 'express' | 'prometheus' | 'opentelemetry' | 'client'
  /** Third-party dependencies to link in from the workspace install. */
  links: string[]
  /**
   * The API a consumer relies on, checked on both the CJS and the ESM build, given
   * `typeof` of each export (plus 'default === connguard': 'true' | 'false').
   */
  expectApi: (api: Record<string, string>) => void
}

const cases: PackageCase[] = [
  {
    name: 'core',
    links: [],
    expectApi: (api) => expect(api.ConnectionTracker).toBe('function'),
  },
  {
    name: 'fastify',
    links: ['fastify', 'fastify-plugin'],
    expectApi: (api) => expect(api.default).toBe('function'),
  },
  {
    name: 'express',
    links: ['express'],
    expectApi: (api) => {
      expect(api.connguard).toBe('function')
      expect(api['default === connguard']).toBe('true')
    },
  },
  {
    name: 'prometheus',
    links: ['prom-client'],
    expectApi: (api) => expect(api.registerPrometheus).toBe('function'),
  },
  {
    name: 'opentelemetry',
    links: ['@opentelemetry/api'],
    expectApi: (api) => expect(api.registerOpenTelemetry).toBe('function'),
  },
  {
    name: 'client',
    links: ['undici'],
    expectApi: (api) => {
      expect(api.createDispatcher).toBe('function')
      expect(api.PingTimeoutError).toBe('function')
    },
  },
]

/** What the probe, run inside the consumer project, reports about one package. */
interface Probe {
  requireResolved: string
  importResolved: string
  /** Where the package's own `@connguard/core` resolves from (adapters only). */
  coreResolved: string | null
  cjsKeys: string[]
  esmKeys: string[]
  cjsApi: Record<string, string>
  esmApi: Record<string, string>
}

/**
 * Loads a package both ways and prints JSON. `.mjs` so `import()` is native ESM, and
 * createRequire for the real CJS `require`: each resolves its own exports condition.
 */
const PROBE = `
import { createRequire } from 'node:module'
import { dirname } from 'node:path'
import { pathToFileURL, fileURLToPath } from 'node:url'
const require = createRequire(import.meta.url)
const name = process.argv[2]
const cjs = require(name)
const esm = await import(name)
// typeof each export, plus identity of default and connguard, which JSON cannot carry.
const api = (mod) => ({
  ...Object.fromEntries(Object.keys(mod).map((key) => [key, typeof mod[key]])),
  'default === connguard': String('default' in mod && mod.default === mod.connguard),
})
let coreResolved = null
try {
  coreResolved = createRequire(require.resolve(name)).resolve('@connguard/core')
} catch {}
console.log(JSON.stringify({
  requireResolved: require.resolve(name),
  importResolved: fileURLToPath(import.meta.resolve(name)),
  coreResolved,
  cjsKeys: Object.keys(cjs).sort(),
  esmKeys: Object.keys(esm).sort(),
  cjsApi: api(cjs),
  esmApi: api(esm),
}))
`

let consumer: string
const tarballFiles = new Map<string, string[]>()

const probes = new Map<string, Promise<Probe>>()

/** Run the probe for one package in the consumer project (once; two tests read it). */
function probe(name: string): Promise<Probe> {
  let result = probes.get(name)
  if (!result) {
    result = run(process.execPath, ['probe.mjs', `@connguard/${name}`], {
      cwd: consumer,
      timeout: 30_000,
    }).then(({ stdout }) => JSON.parse(stdout) as Probe)
    probes.set(name, result)
  }
  return result
}

/** `pnpm pack` one package (rewrites `workspace:` ranges as publishing would). */
async function pack(name: string, destination: string): Promise<string> {
  mkdirSync(destination, { recursive: true })
  await run('npx', [...PNPM, 'pack', '--pack-destination', destination], {
    cwd: join(root, 'packages', name),
    timeout: 120_000,
  })
  const [tarball] = readdirSync(destination).filter((file) => file.endsWith('.tgz'))
  if (!tarball) throw new Error(`pnpm pack made no tarball for ${name}`)
  return join(destination, tarball)
}

/** The real directory of a dependency as the workspace package itself resolves it. */
function installedDir(fromPackage: string, dep: string): string {
  // Through node_modules, not `require.resolve('<dep>/package.json')`: some packages
  // (@opentelemetry/api) do not export their package.json.
  return realpathSync(join(root, 'packages', fromPackage, 'node_modules', dep))
}

beforeAll(async () => {
  await buildIfMissing(cases.map(({ name }) => name))
  consumer = mkdtempSync(join(tmpdir(), 'connguard-pack-'))
  writeFileSync(join(consumer, 'package.json'), '{ "name": "consumer", "private": true }\n')
  writeFileSync(join(consumer, 'probe.mjs'), PROBE)
  await Promise.all(
    cases.map(async ({ name, links }) => {
      const tarball = await pack(name, join(consumer, 'tarballs', name))
      const { stdout } = await run('tar', ['-tzf', tarball])
      tarballFiles.set(name, stdout.split('\n').filter(Boolean))
      const target = join(consumer, 'node_modules', '@connguard', name)
      mkdirSync(target, { recursive: true })
      await run('tar', ['-xzf', tarball, '-C', target, '--strip-components=1'])
      for (const dep of links) {
        const link = join(consumer, 'node_modules', dep)
        if (existsSync(link)) continue
        mkdirSync(dirname(link), { recursive: true }) // a scope folder, for @scope/name
        symlinkSync(installedDir(name, dep), link, 'dir')
      }
    }),
  )
}, 300_000)

afterAll(() => {
  if (consumer) rmSync(consumer, { recursive: true, force: true })
})

for (const { name, expectApi } of cases)
  describe(`@connguard/${name} from a packed tarball`, () => {
    it('ships ESM, CJS, both type entries, and every file its exports map names', () => {
      const files = tarballFiles.get(name) ?? []
      for (const file of ['index.js', 'index.cjs', 'index.d.ts', 'index.d.cts']) {
        expect(files).toContain(`package/dist/${file}`)
      }
      const manifest = JSON.parse(
        readFileSync(join(consumer, 'node_modules', '@connguard', name, 'package.json'), 'utf8'),
      )
      // Every file the map points at (its values; the keys are subpaths like "./internal").
      const targets: string[] = []
      const walk = (node: unknown): void => {
        if (typeof node === 'string') targets.push(node)
        else if (node !== null && typeof node === 'object') Object.values(node).forEach(walk)
      }
      walk(manifest.exports)
      expect(targets.length).toBeGreaterThan(0)
      for (const target of targets) {
        const path = target.slice(2)
        if (path !== '' && !path.endsWith('/')) expect(files).toContain(`package/${path}`)
      }
      // pnpm replaces workspace ranges on pack; one left behind cannot be installed.
      expect(JSON.stringify(manifest)).not.toMatch(/workspace:/)
    })

    it('loads by require and by import, from the packed files, with the same exports', async () => {
      const result = await probe(name)
      const installed = realpathSync(join(consumer, 'node_modules', '@connguard', name))
      expect(realpathSync(result.requireResolved)).toBe(join(installed, 'dist/index.cjs'))
      expect(realpathSync(result.importResolved)).toBe(join(installed, 'dist/index.js'))
      if (name !== 'core') {
        // The adapter uses the packed core, not the workspace's.
        expect(realpathSync(result.coreResolved ?? '')).toBe(
          join(realpathSync(consumer), 'node_modules/@connguard/core/dist/index.cjs'),
        )
      }
      expect(result.cjsKeys).toEqual(result.esmKeys)
    })

    it('exports the expected API by require and by import', async () => {
      const result = await probe(name)
      expectApi(result.cjsApi)
      expectApi(result.esmApi)
    })
  })

/**
 * `@connguard/core/internal` is a second entry. Its modules must be the public entry's own,
 * not copies: an `InvalidOptionError` thrown by a resolver the adapters load from it must be
 * the class users catch, and `engineOf` must find a tracker's engine. Checked from the packed
 * files, by require and by import.
 */
const INTERNAL_PROBE = `
import { EventEmitter } from 'node:events'
import { createRequire } from 'node:module'
const require = createRequire(import.meta.url)
// EventEmitter's own fields (_events, …) are not the tracker's.
const emitterKeys = new Set(Object.keys(new EventEmitter()))
const check = (pub, internal) => {
  let sameClass = false
  try { internal.resolveOptions({ headersTimeout: -1 }) } catch (err) { sameClass = err instanceof pub.InvalidOptionError }
  const tracker = new pub.ConnectionTracker()
  const engine = internal.engineOf(tracker)
  const result = { sameClass, engine: typeof engine?.sweepSlice, trackerKeys: Object.keys(tracker).filter((k) => k.startsWith('_') && !emitterKeys.has(k)) }
  tracker.close()
  return result
}
console.log(JSON.stringify({
  cjs: check(require('@connguard/core'), require('@connguard/core/internal')),
  esm: check(await import('@connguard/core'), await import('@connguard/core/internal')),
}))
`

describe('@connguard/core/internal from a packed tarball', () => {
  it('shares the public entry’s modules (one error class) and reaches a tracker’s engine', async () => {
    writeFileSync(join(consumer, 'internal-probe.mjs'), INTERNAL_PROBE)
    const { stdout } = await run(process.execPath, ['internal-probe.mjs'], {
      cwd: consumer,
      timeout: 30_000,
    })
    const expected = { sameClass: true, engine: 'function', trackerKeys: [] }
    expect(JSON.parse(stdout), stdout).toEqual({ cjs: expected, esm: expected })
  })
})
