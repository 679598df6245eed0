import { readdirSync, readFileSync } from 'node:fs'
import { dirname, join, normalize, relative } from 'node:path'
import { fileURLToPath } from 'node:url'
import { describe, expect, it } from 'vitest'

/**
 * The dependency rules of docs/ARCHITECTURE.md ("Layers"), read from the sources: every
 * import counts, type imports and `import('…')` types included.
 */

const SRC = join(dirname(fileURLToPath(import.meta.url)), '..', 'src')

/** Lowest first: a module imports from its own layer or a lower one, never a higher one. */
const LAYERS = ['vocab', 'time', 'options', 'record', 'policy', 'observe', 'engine', 'report']
/** The two entries sit above every layer. */
const ENTRIES = ['index.ts', 'internal.ts']

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory()
      ? sources(join(dir, e.name))
      : e.name.endsWith('.ts')
        ? [join(dir, e.name)]
        : [],
  )
}

const IMPORT = /(?:\bfrom\s+|\bimport\s*\(\s*|\bimport\s+)'(\.{1,2}\/[^']+)'/g

function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8')
  const out: string[] = []
  for (const m of text.matchAll(IMPORT)) {
    const target = normalize(join(dirname(file), m[1] as string)).replace(/\.js$/, '.ts')
    out.push(relative(SRC, target))
  }
  return out
}

const files = sources(SRC).map((f) => relative(SRC, f))
const graph = new Map(files.map((f) => [f, importsOf(join(SRC, f))]))
const layerOf = (f: string): string => f.split('/')[0] as string

describe('core layers (docs/ARCHITECTURE.md)', () => {
  it('every module sits in a layer folder, or is one of the two entries', () => {
    const misplaced = files.filter((f) => !ENTRIES.includes(f) && !LAYERS.includes(layerOf(f)))
    expect(misplaced).toEqual([])
  })

  it('every import resolves to a module of core', () => {
    const dangling = [...graph].flatMap(([f, deps]) =>
      deps.filter((d) => !graph.has(d)).map((d) => `${f} -> ${d}`),
    )
    expect(dangling).toEqual([])
  })

  it('no module imports from a higher layer', () => {
    const upward = [...graph].flatMap(([f, deps]) => {
      if (ENTRIES.includes(f)) return []
      const from = LAYERS.indexOf(layerOf(f))
      return deps
        .filter((d) => ENTRIES.includes(d) || LAYERS.indexOf(layerOf(d)) > from)
        .map((d) => `${f} -> ${d}`)
    })
    expect(upward).toEqual([])
  })

  it('no import cycle, type imports counted', () => {
    const state = new Map<string, 1 | 2>()
    const stack: string[] = []
    const cycles: string[] = []
    const visit = (f: string): void => {
      state.set(f, 1)
      stack.push(f)
      for (const d of graph.get(f) ?? []) {
        if (state.get(d) === 1) cycles.push([...stack.slice(stack.indexOf(d)), d].join(' -> '))
        else if (state.get(d) === undefined) visit(d)
      }
      stack.pop()
      state.set(f, 2)
    }
    for (const f of graph.keys()) if (state.get(f) === undefined) visit(f)
    expect(cycles).toEqual([])
  })

  it('observe/ never reaches the engine: bindings call the sink interface', () => {
    const reach = [...graph].flatMap(([f, deps]) =>
      layerOf(f) === 'observe'
        ? deps.filter((d) => layerOf(d) === 'engine').map((d) => `${f} -> ${d}`)
        : [],
    )
    expect(reach).toEqual([])
  })

  it('policy/ and record/ add no listener and write nothing to a socket', () => {
    const acts = /\.(?:on|once|addListener|write|end|destroy|destroySoon|close|ping|terminate)\(/
    const found = files
      .filter((f) => layerOf(f) === 'policy' || layerOf(f) === 'record')
      .flatMap((f) =>
        readFileSync(join(SRC, f), 'utf8')
          .split('\n')
          .map((line, i) => ({ line, i }))
          .filter(({ line }) => !/^\s*(\*|\/\/)/.test(line) && acts.test(line))
          .map(({ line, i }) => `${f}:${i + 1}: ${line.trim()}`),
      )
    expect(found).toEqual([])
  })

  it('report/ reads the engine only through the public tracker', () => {
    const reach = [...graph].flatMap(([f, deps]) =>
      layerOf(f) === 'report'
        ? deps
            .filter((d) => layerOf(d) === 'engine' && d !== 'engine/tracker.ts')
            .map((d) => `${f} -> ${d}`)
        : [],
    )
    expect(reach).toEqual([])
  })
})
