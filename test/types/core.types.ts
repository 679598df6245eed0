/**
 * Type tests for @connguard/core's public surface, checked by `tsc -p test/tsconfig.json`
 * (never run). Each `@ts-expect-error` is an assertion: tsc fails if the line below compiles.
 */
import { ConnectionTracker } from '@connguard/core'
import { engineOf } from '@connguard/core/internal'

/** True when A and B are the same type (not merely assignable). */
type Equal<A, B> =
  (<T>() => T extends A ? 1 : 2) extends <T>() => T extends B ? 1 : 2 ? true : false
function assertType<_T extends true>(): void {}

// The public tracker carries no internal member: the engine is a separate object.
type Underscored = Extract<keyof ConnectionTracker, `_${string}`>
assertType<Equal<Underscored, never>>()

const tracker = new ConnectionTracker()
// @ts-expect-error the engine's request path is not on the public tracker
tracker.requestBegin
// @ts-expect-error nor its heap
tracker.queue

// The sibling packages and benchmarks reach the engine through the internal entry.
const engine = engineOf(tracker)
assertType<Equal<ReturnType<typeof engine.sweepSlice>, number>>()
// attach() takes what a framework set on the server (the Fastify adapter passes it).
tracker.attach({} as import('node:http').Server, { source: 'fastify', defaults: {}, values: {} })
tracker.close()
