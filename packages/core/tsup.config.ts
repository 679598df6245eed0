import { defineConfig } from 'tsup'

export default defineConfig({
  // Two entries: the public API, and what the sibling packages share (internal.ts).
  entry: ['src/index.ts', 'src/internal.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  target: 'node20',
  sourcemap: true,
  // Shared chunks: the two entries (index, internal) load one copy of every module they share
  // per format (one ConnguardError class, one warnings registry), never a copy each.
  splitting: true,
})
