/**
 * The per-stream checks of an HTTP/2 session (streams.ts) on fake streams and a fake raw
 * socket, with time given by the test: each window boundary is checked to the millisecond,
 * and the progress a sweep reads is set by hand. The real-socket behaviour is in
 * test/http2-streams.test.ts; this file pins the arithmetic:
 *
 * - a response waiting for the client is credited its own completed writes plus an equal
 *   share of the connection's progress they do not explain; the credits add up to what the
 *   connection took;
 * - a body whose stream window is closed, or whose buffer is full, does not count;
 * - a response failing while the connection takes nothing cuts the session, not the stream;
 * - requestTimeout per stream, and its override.
 */
import type { Http2Session, ServerHttp2Stream } from 'node:http2'
import type { Socket } from 'node:net'
import { describe, expect, it } from 'vitest'
import { resolveOptions } from '../src/options/options.js'
import {
  checkStreams,
  closeStream,
  openStream,
  overrideStream,
  type StreamCutReason,
  type StreamGuard,
} from '../src/policy/streams.js'
import { ConnectionRecord, SessionFacts } from '../src/record/record.js'
import { isDue, NEVER } from '../src/time/deadline-queue.js'

const kHandle = Symbol('kHandle')
const WINDOW = 1_000
/** 10 kB/s over 1 s windows: 10,000 bytes a window. */
const RATE = { bytesPerSecond: 10_000, graceMs: WINDOW }

/** What the checks read from a ServerHttp2Stream, settable by the test. */
class FakeStream {
  destroyed = false
  endAfterHeaders = true
  readableLength = 0
  readableHighWaterMark = 16_384
  writableLength = 0
  /** Bytes written but not yet handed on (Node's queue); bufferSize adds writableLength. */
  queued = 0
  localWindowSize = 65_535
  _readableState = { ended: false }
  /** Node's StreamBase handle, kept under a symbol named kHandle. */
  readonly handle = { bytesRead: 0, bytesWritten: 0 }
  id: number
  constructor(id: number) {
    this.id = id
    ;(this as unknown as Record<symbol, unknown>)[kHandle] = this.handle
  }
  get bufferSize(): number {
    return this.queued + this.writableLength
  }
  get state(): { localWindowSize: number } {
    return { localWindowSize: this.localWindowSize }
  }
  /** The application writes `n` bytes in one write: nothing is handed on yet. */
  write(n: number): void {
    this.handle.bytesWritten += n
    this.queued += n
  }
  /** Node hands on a whole write of `n` bytes. */
  complete(n: number): void {
    this.queued -= n
  }
}

/** The raw socket's counters: `accepted` is what the kernel took. */
class FakeRaw {
  bytesRead = 0
  _handle = { bytesWritten: 0, writeQueueSize: 0 }
  get bytesWritten(): number {
    return this._handle.bytesWritten
  }
  send(n: number): void {
    this._handle.bytesWritten += n
  }
}

function session(options: Parameters<typeof resolveOptions>[0]) {
  const raw = new FakeRaw()
  const rec = new ConnectionRecord(raw as unknown as Socket, false, 0, 0)
  // An HTTP/2 record: its session facts exist from the session's start.
  rec.h2 = new SessionFacts({} as Http2Session)
  const o = resolveOptions({
    minBodyRate: false,
    minResponseRate: false,
    pingInterval: false,
    ...options,
  })
  const cuts: [number, StreamCutReason][] = []
  const open = (id: number, at: number, setup?: (s: FakeStream) => void) => {
    const s = new FakeStream(id)
    setup?.(s)
    return { s, g: openStream(rec, s as unknown as ServerHttp2Stream, o, at) }
  }
  /** Runs the session's stream check at `now` if due; returns a session-level reason. */
  const sweep = (now: number) =>
    isDue(rec.streams?.dueAt ?? NEVER, now)
      ? checkStreams(rec, now, 50, (g: StreamGuard, reason) => {
          cuts.push([g.stream.id as number, reason])
        })
      : null
  return { raw, rec, cuts, open, sweep }
}

describe('response credit', () => {
  it('a single write in progress is credited the connection’s progress', () => {
    const { raw, rec, cuts, open, sweep } = session({ minResponseRate: RATE })
    const { s } = open(1, 0)
    s.write(1_000_000)
    expect(rec.streams?.dueAt).toBe(WINDOW)
    expect(sweep(WINDOW)).toBeNull() // the response is waiting: its window starts
    raw.send(15_000) // 15 kB in a second, all of it this stream's single write
    expect(sweep(2 * WINDOW)).toBeNull()
    raw.send(15_000)
    expect(sweep(3 * WINDOW)).toBeNull()
    expect(cuts).toEqual([])
    // It stops: the next window fails.
    expect(sweep(4 * WINDOW)).toBeNull()
    expect(cuts).toEqual([[1, 'min_response_data_rate']])
    expect(rec.streams?.guards.size).toBe(0)
  })

  it('a stalled stream beside one whose own writes explain the progress is cut, the other is not', () => {
    const { raw, cuts, open, sweep } = session({ minResponseRate: RATE })
    const stalled = open(1, 0).s
    const flowing = open(3, 0).s
    stalled.write(1_000_000)
    flowing.write(16_384)
    expect(sweep(WINDOW)).toBeNull()
    // The flowing stream hands on 48 KiB in 16 KiB writes; the wire carries that plus frames.
    for (let i = 0; i < 3; i++) {
      flowing.complete(16_384)
      flowing.write(16_384)
    }
    raw.send(3 * 16_384 + 3 * 9)
    expect(sweep(2 * WINDOW)).toBeNull()
    expect(cuts).toEqual([[1, 'min_response_data_rate']])
  })

  it('shares the progress nobody’s own writes explain equally', () => {
    const { raw, cuts, open, sweep } = session({ minResponseRate: RATE })
    const a = open(1, 0).s
    const b = open(3, 0).s
    a.write(1_000_000)
    b.write(1_000_000)
    expect(sweep(WINDOW)).toBeNull()
    raw.send(30_000) // 15 kB each: both above 10 kB/s
    expect(sweep(2 * WINDOW)).toBeNull()
    expect(cuts).toEqual([])
    raw.send(15_000) // 7.5 kB each: both below
    expect(sweep(3 * WINDOW)).toBeNull()
    expect(cuts.map(([id]) => id).sort()).toEqual([1, 3])
  })

  it('cuts the session, not the stream, when the connection itself takes nothing', () => {
    const { raw, rec, cuts, open, sweep } = session({ minResponseRate: RATE })
    open(1, 0).s.write(20_000_000)
    expect(sweep(WINDOW)).toBeNull()
    raw._handle.writeQueueSize = 4_000_000 // libuv holds bytes the kernel would not take
    expect(sweep(2 * WINDOW)).toBe('min_response_data_rate')
    expect(cuts).toEqual([])
    expect(rec.streams?.guards.size).toBe(1)
  })

  it('time with nothing queued does not count', () => {
    const { cuts, open, sweep } = session({ minResponseRate: RATE })
    const { s } = open(1, 0)
    for (let t = 1; t <= 5; t++) expect(sweep(t * WINDOW)).toBeNull()
    expect(cuts).toEqual([])
    s.write(100)
    s.complete(100)
    expect(sweep(6 * WINDOW)).toBeNull()
    expect(cuts).toEqual([])
  })
})

describe('body', () => {
  const withBody = (s: FakeStream) => {
    s.endAfterHeaders = false
  }

  it('counts the stream handle’s bytesRead per window', () => {
    const { cuts, open, sweep } = session({ minBodyRate: RATE })
    const { s } = open(1, 0, withBody)
    s.handle.bytesRead = 12_000
    expect(sweep(WINDOW)).toBeNull()
    s.handle.bytesRead += 9_000
    expect(sweep(2 * WINDOW - 1)).toBeNull() // not due yet
    expect(cuts).toEqual([])
    expect(sweep(2 * WINDOW)).toBeNull()
    expect(cuts).toEqual([[1, 'min_request_body_data_rate']])
  })

  it('does not count time the client has no window (the application is not reading)', () => {
    const { cuts, open, sweep } = session({ minBodyRate: RATE })
    const { s } = open(1, 0, withBody)
    s.handle.bytesRead = 65_535
    s.readableLength = 65_535
    s.readableHighWaterMark = 65_536 // Node 22+: the buffer is not "full"…
    s.localWindowSize = 0 // …but the window is closed
    for (let t = WINDOW; t <= 3 * WINDOW; t += 50) expect(sweep(t)).toBeNull()
    expect(cuts).toEqual([])
    // The application reads: the window reopens, and the client's window starts now.
    s.localWindowSize = 65_535
    s.readableLength = 0
    expect(sweep(3 * WINDOW + 50)).toBeNull()
    s.handle.bytesRead += 5_000
    expect(sweep(4 * WINDOW + 50)).toBeNull()
    expect(cuts).toEqual([[1, 'min_request_body_data_rate']])
  })

  it('stops at the body’s END_STREAM, read or not', () => {
    const { cuts, open, sweep } = session({ minBodyRate: RATE })
    const { s } = open(1, 0, withBody)
    s._readableState.ended = true
    for (let t = 1; t <= 4; t++) sweep(t * WINDOW)
    expect(cuts).toEqual([])
  })

  it('applies no body rate to a stream whose HEADERS ended it', () => {
    const { rec, open } = session({ minBodyRate: RATE })
    const { g } = open(1, 0)
    expect(g.rates?.bodyWindowAt).toBe(-1)
    expect(rec.streams?.dueAt).toBe(NEVER)
  })
})

describe('requestTimeout', () => {
  it('per stream, from its open; an override moves it from the same start', () => {
    const { rec, cuts, open, sweep } = session({ requestTimeout: 500 })
    open(1, 0)
    const late = open(3, 200)
    const lifted = open(5, 200)
    overrideStream(lifted.g, 0, undefined, undefined, 300)
    overrideStream(late.g, 1_000, undefined, undefined, 300)
    expect(sweep(499)).toBeNull()
    expect(cuts).toEqual([])
    expect(sweep(500)).toBeNull()
    expect(cuts).toEqual([[1, 'request_timeout']])
    expect(rec.streams?.dueAt).toBe(1_200)
    expect(sweep(1_200)).toBeNull()
    expect(cuts).toEqual([
      [1, 'request_timeout'],
      [3, 'request_timeout'],
    ])
    expect(rec.streams?.guards.has(lifted.g)).toBe(true)
    closeStream(rec, lifted.g)
    expect(rec.streams?.guards.size).toBe(0)
  })
})
