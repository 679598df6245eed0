#!/usr/bin/env node
/**
 * Runs a command and shows its output only if it fails: `node scripts/quiet.mjs pnpm build`.
 * The demo's build step, so the demo starts with its own output, not 100 lines of tsup's.
 */
import { spawn } from 'node:child_process'

const [command, ...args] = process.argv.slice(2)
if (command === undefined) {
  console.error('usage: node scripts/quiet.mjs <command> [args...]')
  process.exit(2)
}
const chunks = []
const child = spawn(command, args, {
  stdio: ['ignore', 'pipe', 'pipe'],
  shell: process.platform === 'win32',
})
child.stdout.on('data', (c) => chunks.push(c))
child.stderr.on('data', (c) => chunks.push(c))
child.on('error', (err) => {
  console.error(`could not run ${command}: ${err.message}`)
  process.exit(1)
})
child.on('close', (code, signal) => {
  if (code === 0) return
  process.stderr.write(Buffer.concat(chunks))
  console.error(`\n${[command, ...args].join(' ')} failed (${signal ?? `exit ${code}`})`)
  process.exit(code ?? 1)
})
