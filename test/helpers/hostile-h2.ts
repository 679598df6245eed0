/**
 * HTTP/2 frames written by hand (RFC 9113), for clients that must send what http2.connect
 * never would, and the hostile HTTP/2 generators of test/hostile.test.ts: prefaces cut or
 * flipped, bad SETTINGS, header blocks that never end, floods, frames out of place.
 */
import { latin1 as b, cut, flipBits, type Generator, one } from './hostile-rng.js'

// ---- HTTP/2 --------------------------------------------------------------------------------------

/** RFC 9113 §3.4. */
export const H2_PREFACE = b('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n')

/** Frame types (RFC 9113 §6). */
export const H2 = {
  DATA: 0x0,
  HEADERS: 0x1,
  PRIORITY: 0x2,
  RST_STREAM: 0x3,
  SETTINGS: 0x4,
  PUSH_PROMISE: 0x5,
  PING: 0x6,
  GOAWAY: 0x7,
  WINDOW_UPDATE: 0x8,
  CONTINUATION: 0x9,
} as const
export const END_STREAM = 0x1
export const END_HEADERS = 0x4
const ACK = 0x1

/** One frame: 9-byte header (length, type, flags, stream id) and payload (RFC 9113 §4.1). */
export function frame(
  type: number,
  flags: number,
  streamId: number,
  payload: Buffer = Buffer.alloc(0),
  length = payload.length,
): Buffer {
  const header = Buffer.alloc(9)
  header.writeUIntBE(length & 0xffffff, 0, 3)
  header[3] = type
  header[4] = flags
  header.writeUInt32BE(streamId >>> 0, 5)
  return Buffer.concat([header, payload])
}

export function settingsFrame(settings: [id: number, value: number][], flags = 0): Buffer {
  const payload = Buffer.alloc(settings.length * 6)
  settings.forEach(([id, value], i) => {
    payload.writeUInt16BE(id, i * 6)
    payload.writeUInt32BE(value >>> 0, i * 6 + 2)
  })
  return frame(H2.SETTINGS, flags, 0, payload)
}

/**
 * An HPACK block for `GET path` (RFC 7541 Appendix A static table: 2 = :method GET, 4 = :path /,
 * 6/7 = :scheme http/https); another path, and :authority, as literals without indexing
 * (0x04 / 0x01 = name index 4 / 1, then a 7-bit length: values under 128 bytes).
 */
export function getHeaderBlock(secure: boolean, path = '/'): Buffer {
  const literal = (index: number, value: string) => {
    const bytes = b(value)
    return Buffer.concat([Buffer.from([index, bytes.length]), bytes])
  }
  return Buffer.concat([
    Buffer.from([0x82, secure ? 0x87 : 0x86]),
    path === '/' ? Buffer.from([0x84]) : literal(0x04, path),
    literal(0x01, 'localhost'),
  ])
}

export interface Frame {
  type: number
  flags: number
  streamId: number
  payload: Buffer
}

/** Splits `buf` into whole frames; returns them and the bytes of an unfinished one. */
export function parseFrames(buf: Buffer): { frames: Frame[]; rest: Buffer } {
  const frames: Frame[] = []
  let at = 0
  while (buf.length - at >= 9) {
    const length = buf.readUIntBE(at, 3)
    if (buf.length - at < 9 + length) break
    frames.push({
      type: buf[at + 3] as number,
      flags: buf[at + 4] as number,
      streamId: buf.readUInt32BE(at + 5) & 0x7fffffff,
      payload: buf.subarray(at + 9, at + 9 + length),
    })
    at += 9 + length
  }
  return { frames, rest: buf.subarray(at) }
}

/** WINDOW_UPDATE (RFC 9113 §6.9): `increment` more bytes on `streamId` (0: the connection). */
export function windowUpdate(streamId: number, increment: number): Buffer {
  const payload = Buffer.alloc(4)
  payload.writeUInt32BE(increment)
  return frame(H2.WINDOW_UPDATE, 0, streamId, payload)
}

/** The client's opening: preface and an empty SETTINGS. */
export const opening = (): Buffer => Buffer.concat([H2_PREFACE, settingsFrame([])])

/** HTTP/2 generators; `secure` picks the :scheme of the requests they make. */
export function h2Generators(secure: boolean): Record<string, Generator> {
  const get = getHeaderBlock(secure)
  return {
    'preface cut': (rng) => one('preface cut', rng, cut(rng, H2_PREFACE)),
    'preface bit flips': (rng) =>
      one(
        'preface bit flips',
        rng,
        Buffer.concat([flipBits(rng, H2_PREFACE, rng.int(1, 3)), settingsFrame([])]),
      ),
    'preface then garbage': (rng) =>
      one('preface then garbage', rng, Buffer.concat([H2_PREFACE, rng.bytes(rng.int(1, 1_000))])),
    'random frames': (rng) => {
      const frames: Buffer[] = [opening()]
      const n = rng.int(1, 12)
      for (let i = 0; i < n; i++) {
        const payload = rng.bytes(rng.int(0, 64))
        frames.push(
          frame(
            rng.int(0, 12),
            rng.int(0, 255),
            rng.pick([0, 1, 2, 3, rng.int(0, 2 ** 31 - 1)]),
            payload,
            rng.chance(0.85) ? payload.length : rng.int(0, 2 ** 24 - 1),
          ),
        )
      }
      return one('random frames', rng, Buffer.concat(frames))
    },
    'bad SETTINGS': (rng) => {
      const bad = rng.pick([
        () => frame(H2.SETTINGS, 0, 0, rng.bytes(5)), // length not a multiple of 6
        () => frame(H2.SETTINGS, ACK, 0, rng.bytes(6)), // ACK with a payload
        () => frame(H2.SETTINGS, 0, 1, Buffer.alloc(0)), // on a stream
        () => settingsFrame([[0x2, 2]]), // ENABLE_PUSH must be 0 or 1
        () => settingsFrame([[0x4, 2 ** 31]]), // INITIAL_WINDOW_SIZE above 2^31-1
        () => settingsFrame([[0x5, 100]]), // MAX_FRAME_SIZE below 16384
        () => settingsFrame([[0x5, 2 ** 24]]), // MAX_FRAME_SIZE above 2^24-1
        () => settingsFrame([[rng.int(0, 0xffff), rng.int(0, 2 ** 32 - 1)]]),
        () => frame(H2.SETTINGS, 0, 0, Buffer.alloc(0), 6), // announces 6 bytes, sends none
      ])
      // Sometimes the bad SETTINGS is the first frame (the preface's own SETTINGS).
      const first = rng.chance(0.5) ? H2_PREFACE : opening()
      return one('bad SETTINGS', rng, Buffer.concat([first, bad()]))
    },
    'HEADERS without END_HEADERS, then nothing': (rng) => ({
      ...one(
        'HEADERS without END_HEADERS, then nothing',
        rng,
        Buffer.concat([
          opening(),
          frame(H2.HEADERS, END_STREAM, 1, rng.chance(0.5) ? get : get.subarray(0, 3)),
        ]),
      ),
      stall: true,
    }),
    'CONTINUATION flood': (rng) => {
      // CVE-2024-27983 / -27919 shape: a header block that never ends.
      const frames: Buffer[] = [opening(), frame(H2.HEADERS, END_STREAM, 1, get)]
      const n = rng.int(50, 1_500)
      const filler = Buffer.concat([Buffer.from([0x00, 0x01]), b('x'), Buffer.from([0x01]), b('y')])
      for (let i = 0; i < n; i++) frames.push(frame(H2.CONTINUATION, 0, 1, filler))
      return one('CONTINUATION flood', rng, Buffer.concat(frames))
    },
    'HPACK garbage': (rng) =>
      one(
        'HPACK garbage',
        rng,
        Buffer.concat([
          opening(),
          frame(
            H2.HEADERS,
            END_STREAM | END_HEADERS,
            1,
            rng.chance(0.5) ? rng.bytes(rng.int(1, 80)) : flipBits(rng, get, 2),
          ),
        ]),
      ),
    'frame past max size': (rng) =>
      one(
        'frame past max size',
        rng,
        Buffer.concat([
          opening(),
          frame(
            rng.pick([H2.DATA, H2.HEADERS, 0x20]),
            0,
            1,
            rng.bytes(100),
            rng.int(16_385, 2 ** 24 - 1),
          ),
        ]),
      ),
    'control frames out of place': (rng) => {
      const bad = rng.pick([
        () => frame(H2.WINDOW_UPDATE, 0, 0, Buffer.alloc(4)), // increment 0
        () => frame(H2.WINDOW_UPDATE, 0, 0, Buffer.from([0x7f, 0xff, 0xff, 0xff])), // window overflow
        () => frame(H2.RST_STREAM, 0, rng.int(1, 99) | 1, Buffer.alloc(4)), // on an idle stream
        () => frame(H2.PING, 0, 0, rng.bytes(rng.int(0, 7))), // wrong length
        () => frame(H2.PING, 0, 1, rng.bytes(8)), // on a stream
        () => frame(H2.GOAWAY, 0, 0, rng.bytes(rng.int(0, 20))),
        () => frame(H2.DATA, END_STREAM, 0, rng.bytes(10)), // DATA on stream 0
        () => frame(H2.DATA, END_STREAM, 1, rng.bytes(10)), // DATA on an idle stream
        () => frame(H2.PUSH_PROMISE, END_HEADERS, 1, rng.bytes(8)), // clients must not push
        () => frame(H2.PRIORITY, 0, 1, Buffer.from([0, 0, 0, 1, 16])), // depends on itself
        () => frame(H2.CONTINUATION, END_HEADERS, 1, get), // CONTINUATION with no HEADERS
        () => frame(H2.HEADERS, END_HEADERS | END_STREAM, 2, get), // even stream id from a client
      ])
      return one('control frames out of place', rng, Buffer.concat([opening(), bad()]))
    },
    'request then garbage': (rng) =>
      one(
        'request then garbage',
        rng,
        Buffer.concat([
          opening(),
          frame(H2.HEADERS, END_STREAM | END_HEADERS, 1, get),
          rng.bytes(rng.int(1, 300)),
        ]),
      ),
    'rapid reset': (rng) => {
      // CVE-2023-44487 shape: open a stream and cancel it at once, many times.
      const frames: Buffer[] = [opening()]
      const n = rng.int(20, 300)
      for (let i = 0; i < n; i++) {
        const id = 1 + 2 * i
        frames.push(frame(H2.HEADERS, END_STREAM | END_HEADERS, id, get))
        frames.push(frame(H2.RST_STREAM, 0, id, Buffer.from([0, 0, 0, 8])))
      }
      return one('rapid reset', rng, Buffer.concat(frames))
    },
    'PING and SETTINGS flood': (rng) => {
      const frames: Buffer[] = [opening()]
      const n = rng.int(100, 3_000)
      for (let i = 0; i < n; i++)
        frames.push(rng.chance(0.5) ? frame(H2.PING, 0, 0, rng.bytes(8)) : settingsFrame([]))
      return one('PING and SETTINGS flood', rng, Buffer.concat(frames))
    },
    'HTTP/1.1 request to HTTP/2': (rng) =>
      one('HTTP/1.1 request to HTTP/2', rng, b('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')),
  }
}
