/**
 * The seeded core of the hostile-input tests (test/hostile.test.ts): a tiny PRNG, the run's
 * seed, byte mutations, and the shape of one hostile case. The generators live in
 * hostile-http1.ts (TLS records, HTTP/1) and hostile-h2.ts (HTTP/2 frames).
 *
 * Repeatable: every batch draws from its own stream, seeded from the run's seed and the
 * batch's label (`rngFor`), so running one test alone (`-t`) or reordering tests does not
 * change what any other batch sends. The same seed sends the same bytes; only timing differs.
 */

// ---- PRNG --------------------------------------------------------------------------------------

export interface Rng {
  /** [0, 1) */
  next(): number
  /** An integer in [min, max] (both included). */
  int(min: number, max: number): number
  chance(p: number): boolean
  pick<T>(items: readonly T[]): T
  bytes(n: number): Buffer
  /** `n` characters from `alphabet`. */
  text(n: number, alphabet: string): string
}

/** mulberry32: 32 bits of state, good enough to spread test inputs, and reproducible. */
export function createRng(seed: number): Rng {
  let a = seed >>> 0
  const next = (): number => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4_294_967_296
  }
  const int = (min: number, max: number) => min + Math.floor(next() * (max - min + 1))
  return {
    next,
    int,
    chance: (p) => next() < p,
    pick: (items) => items[int(0, items.length - 1)] as (typeof items)[number],
    bytes: (n) => {
      const buf = Buffer.alloc(n)
      for (let i = 0; i < n; i++) buf[i] = int(0, 255)
      return buf
    },
    text: (n, alphabet) => {
      let s = ''
      for (let i = 0; i < n; i++) s += alphabet[int(0, alphabet.length - 1)]
      return s
    },
  }
}

/** FNV-1a of `label` mixed with the run's seed: one independent stream per batch. */
export function rngFor(seed: number, label: string): Rng {
  let h = (0x811c9dc5 ^ seed) >>> 0
  for (let i = 0; i < label.length; i++) {
    h ^= label.charCodeAt(i)
    h = Math.imul(h, 0x01000193) >>> 0
  }
  return createRng(h)
}

/** The run's seed: `CONNGUARD_FUZZ_SEED` if set (decimal or 0x hex), otherwise a fresh one. */
export function runSeed(): number {
  const env = process.env.CONNGUARD_FUZZ_SEED
  if (env !== undefined && env !== '') {
    const seed = Number(env)
    if (!Number.isInteger(seed)) throw new Error(`CONNGUARD_FUZZ_SEED must be an integer: ${env}`)
    return seed >>> 0
  }
  return (Date.now() ^ (process.pid << 16) ^ Math.floor(Math.random() * 2 ** 32)) >>> 0
}

// ---- byte mutations ------------------------------------------------------------------------------

/** Flip `count` random bits of a copy of `buf`. */
export function flipBits(rng: Rng, buf: Buffer, count: number): Buffer {
  const out = Buffer.from(buf)
  for (let i = 0; i < count && out.length > 0; i++) {
    const at = rng.int(0, out.length - 1)
    out[at] = (out[at] as number) ^ (1 << rng.int(0, 7))
  }
  return out
}

/** `buf` cut at a random point strictly inside it (at least one byte, not all of it). */
export function cut(rng: Rng, buf: Buffer): Buffer {
  return buf.length < 2 ? buf : buf.subarray(0, rng.int(1, buf.length - 1))
}

/** Replace one random byte of a copy of `buf` with one of `bytes`. */
export function poke(rng: Rng, buf: Buffer, bytes: readonly number[]): Buffer {
  const out = Buffer.from(buf)
  if (out.length > 0) out[rng.int(0, out.length - 1)] = rng.pick(bytes)
  return out
}

/** Bytes a parser treats specially: CTLs, separators, DEL, high bytes. */
export const NASTY = [0x00, 0x01, 0x08, 0x09, 0x0a, 0x0b, 0x0d, 0x20, 0x22, 0x3a, 0x7f, 0x80, 0xff]

/** One hostile input: what it is (for the report) and the bytes, maybe in several writes. */
export interface HostileCase {
  kind: string
  /** Written in order, with a short pause between parts: parsers see the cut between writes. */
  parts: Buffer[]
  /** The point is a stall: the client sends this and then waits for the server to cut it. */
  stall?: true
}

export type Generator = (rng: Rng) => HostileCase

export const latin1 = (s: string): Buffer => Buffer.from(s, 'latin1')

/** Split `buf` into 1–3 writes at random points. */
export function split(rng: Rng, buf: Buffer): Buffer[] {
  // At most one cut per gap between bytes: n - 1 distinct points in [1, length - 1].
  const n = Math.min(rng.int(1, 3), buf.length)
  if (n <= 1) return [buf]
  const points = new Set<number>()
  while (points.size < n - 1) points.add(rng.int(1, buf.length - 1))
  const sorted = [...points].sort((x, y) => x - y)
  const parts: Buffer[] = []
  let from = 0
  for (const at of sorted) {
    parts.push(buf.subarray(from, at))
    from = at
  }
  parts.push(buf.subarray(from))
  return parts
}

export const one = (kind: string, rng: Rng, buf: Buffer): HostileCase => ({
  kind,
  parts: split(rng, buf),
})
