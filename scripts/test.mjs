#!/usr/bin/env node
/**
 * Run `vitest run` with the default reporter on stdout and the JSON reporter into
 * .vitest-results.json, then print as the very last line `N passed, N failed[, N skipped]`
 * (tests, not files) — the plain closing line CI reads — and exit with vitest's code.
 * Exits non-zero also when vitest ran no test at all. Extra arguments go to vitest:
 *   node scripts/test.mjs test/helpers.test.ts -t keepAlive
 */
import { spawn } from 'node:child_process'
import { appendFileSync, existsSync, readFileSync, rmSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, relative } from 'node:path'
import { fileURLToPath } from 'node:url'

const root = dirname(dirname(fileURLToPath(import.meta.url)))
const resultsFile = join(root, '.vitest-results.json')
// vitest's own CLI entry, run with this node: no dependence on PATH or a package manager.
const vitestCli = join(
  dirname(createRequire(join(root, 'package.json')).resolve('vitest/package.json')),
  'vitest.mjs',
)

// A stale file from an earlier run must never be counted as this run's result.
rmSync(resultsFile, { force: true })

const args = [
  vitestCli,
  'run',
  '--reporter=default',
  '--reporter=json',
  `--outputFile.json=${resultsFile}`,
  ...process.argv.slice(2),
]
const child = spawn(process.execPath, args, { cwd: root, stdio: 'inherit' })

// Ctrl-C / CI cancellation: let vitest stop its workers rather than orphan them.
for (const signal of ['SIGINT', 'SIGTERM']) {
  process.on(signal, () => child.kill(signal))
}

child.on('error', (err) => {
  console.error(`could not start vitest: ${err.message}`)
  finish(1)
})
child.on('exit', (code, signal) => {
  finish(code ?? (signal ? 1 : 0))
})

/** Print the summary line last and exit with vitest's code, or 1 if it ran nothing. */
function finish(vitestCode) {
  const counts = readCounts()
  let exitCode = vitestCode
  if (!counts) {
    console.error(`no JSON results at ${relative(root, resultsFile)}: vitest did not finish`)
    exitCode ||= 1
  } else {
    for (const file of counts.brokenFiles) {
      console.error(`test file failed outside any test: ${relative(root, file)}`)
    }
    if (counts.passed + counts.failed === 0) {
      console.error('no test ran')
      exitCode ||= 1
    }
    if (counts.failed > 0 || counts.brokenFiles.length > 0) exitCode ||= 1
  }
  const { passed = 0, failed = 0, skipped = 0 } = counts ?? {}
  // Name what failed just above the summary: a CI log is often read from its tail only.
  const failures = counts
    ? [
        ...counts.failures,
        ...counts.brokenFiles.map((f) => `${relative(root, f)}: failed outside any test`),
      ]
    : []
  for (const line of failures) console.log(`failed: ${line}`)
  console.log(`${passed} passed, ${failed} failed${skipped > 0 ? `, ${skipped} skipped` : ''}`)
  // .ci/run runs the suite on several Node versions and adds the runs up.
  if (process.env.CONNGUARD_TALLY) {
    appendFileSync(
      process.env.CONNGUARD_TALLY,
      `${process.version}${process.env.CONNGUARD_UNDICI ? `+undici${process.env.CONNGUARD_UNDICI}` : ''} ${passed} ${failed + (counts ? counts.brokenFiles.length : 1)} ${skipped}\n`,
    )
    // .ci/run repeats these after the tally, so the end of its log says what failed where.
    if (process.env.CONNGUARD_FAILURES) {
      for (const line of failures) {
        appendFileSync(process.env.CONNGUARD_FAILURES, `${process.version} ${line}\n`)
      }
    }
  }
  process.exit(exitCode)
}

/** Test counts from the JSON reporter (Jest's format), or undefined if there is no report. */
function readCounts() {
  if (!existsSync(resultsFile)) return undefined
  try {
    const report = JSON.parse(readFileSync(resultsFile, 'utf8'))
    const counts = { passed: 0, failed: 0, skipped: 0, brokenFiles: [], failures: [] }
    for (const file of report.testResults ?? []) {
      for (const test of file.assertionResults ?? []) {
        if (test.status === 'passed') counts.passed++
        else if (test.status === 'failed') {
          counts.failed++
          counts.failures.push(
            `${relative(root, file.name)} > ${test.fullName}: ${firstLine(test.failureMessages)}`,
          )
        } else counts.skipped++ // 'skipped', 'pending', 'todo', 'disabled'
      }
      // A file that failed to import or whose hooks threw has no failed test to count.
      const failedTests = (file.assertionResults ?? []).some((t) => t.status === 'failed')
      if (file.status === 'failed' && !failedTests) counts.brokenFiles.push(file.name)
    }
    return counts
  } catch (err) {
    console.error(`unreadable ${relative(root, resultsFile)}: ${err.message}`)
    return undefined
  }
}

/** The first line of a test's first failure message, cut to a readable length. */
function firstLine(messages) {
  const line = String(messages?.[0] ?? '').split('\n', 1)[0]
  return line.length > 300 ? `${line.slice(0, 300)}…` : line
}
