import { defineConfig } from 'tsup'

export default defineConfig({
  // Two entries, bundled apart: the public API, and what the sibling packages share (internal.ts).
  entry: ['src/index.ts', 'src/internal.ts'],
  format: ['esm', 'cjs'],
  dts: true,
  clean: true,
  target: 'node20',
  sourcemap: true,
  splitting: false,
})
