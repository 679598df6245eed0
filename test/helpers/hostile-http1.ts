/**
 * Hostile input generators for TLS ports (raw bytes where a ClientHello is expected) and for
 * HTTP/1 servers (request lines, header fields, chunked bodies, oversized and cut heads), for
 * test/hostile.test.ts. Each generator draws from the batch's seeded stream only.
 */
import { H2_PREFACE, settingsFrame } from './hostile-h2.js'
import { latin1 as b, cut, flipBits, type Generator, NASTY, one, poke } from './hostile-rng.js'

// ---- TLS -----------------------------------------------------------------------------------------

/** Generators of bytes sent on a raw TCP connection to a TLS port, from a real ClientHello. */
export function tlsGenerators(hello: Buffer): Record<string, Generator> {
  return {
    'hello cut': (rng) => one('hello cut', rng, cut(rng, hello)),
    'hello bit flips': (rng) => one('hello bit flips', rng, flipBits(rng, hello, rng.int(1, 8))),
    'hello flipped and cut': (rng) =>
      one('hello flipped and cut', rng, cut(rng, flipBits(rng, hello, rng.int(1, 4)))),
    'hello then garbage': (rng) =>
      one('hello then garbage', rng, Buffer.concat([hello, rng.bytes(rng.int(1, 600))])),
    'hello twice': (rng) => one('hello twice', rng, Buffer.concat([hello, hello])),
    'record header, absurd length': (rng) => {
      // type 22 (handshake), TLS 1.0 record version, length up to 2^16-1 (RFC 8446 §5.1 caps 2^14).
      const header = Buffer.from([22, 3, 1, 0, 0])
      header.writeUInt16BE(rng.int(16_385, 65_535), 3)
      return one('record header, absurd length', rng, Buffer.concat([header, rng.bytes(64)]))
    },
    'record of random type': (rng) => {
      const body = rng.bytes(rng.int(0, 300))
      const header = Buffer.from([rng.int(0, 255), 3, rng.int(0, 4), 0, 0])
      header.writeUInt16BE(body.length, 3)
      return one('record of random type', rng, Buffer.concat([header, body]))
    },
    'alert record': (rng) => one('alert record', rng, Buffer.from([21, 3, 3, 0, 2, 2, 40])),
    'random bytes as TLS': (rng) => one('random bytes as TLS', rng, rng.bytes(rng.int(1, 1_500))),
    'plain HTTP to the TLS port': (rng) =>
      one('plain HTTP to the TLS port', rng, b('GET / HTTP/1.1\r\nHost: localhost\r\n\r\n')),
  }
}

// ---- HTTP/1 --------------------------------------------------------------------------------------

const TOKEN = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-.^_`|~"
const VALID_GET = 'GET / HTTP/1.1\r\nHost: localhost\r\n\r\n'

/** The request line of an otherwise valid GET, broken in one of many ways. */
export const requestLineGenerators: Record<string, Generator> = {
  'request line bit flips': (rng) =>
    one('request line bit flips', rng, flipBits(rng, b(VALID_GET), rng.int(1, 6))),
  'request line nasty byte': (rng) =>
    one('request line nasty byte', rng, poke(rng, b(VALID_GET), NASTY)),
  'bad method': (rng) =>
    one(
      'bad method',
      rng,
      b(
        `${rng.pick(['', 'get', 'G ET', 'GET\t', rng.text(rng.int(1, 40), TOKEN), rng.text(rng.int(1, 20), '@[]{}()<>"\\/ ')])} / HTTP/1.1\r\nHost: localhost\r\n\r\n`,
      ),
    ),
  'bad target': (rng) =>
    one(
      'bad target',
      rng,
      b(
        `GET ${rng.pick(['', '/a b', '/\x00', '/\x7f', '//\r', '*', 'http://', '/%zz', `/${'a'.repeat(rng.int(100, 9_000))}`])} HTTP/1.1\r\nHost: localhost\r\n\r\n`,
      ),
    ),
  'bad version': (rng) =>
    one(
      'bad version',
      rng,
      b(
        `GET / ${rng.pick(['HTTP/9.9', 'HTTP/1', 'HTTP/1.1.1', 'HTTX/1.1', 'http/1.1', 'HTTP/0.9', 'HTTP/1.10', ''])}\r\nHost: localhost\r\n\r\n`,
      ),
    ),
  'bad line ends': (rng) => {
    const eol = rng.pick(['\n', '\r', '\r\r\n', '\n\r', '\r\n\r'])
    return one('bad line ends', rng, b(`GET / HTTP/1.1${eol}Host: localhost${eol}${eol}`))
  },
  'leading garbage': (rng) =>
    one('leading garbage', rng, Buffer.concat([rng.bytes(rng.int(1, 40)), b(VALID_GET)])),
  'random bytes': (rng) => one('random bytes', rng, rng.bytes(rng.int(1, 2_000))),
  'HTTP/2 preface to HTTP/1': (rng) =>
    one('HTTP/2 preface to HTTP/1', rng, Buffer.concat([H2_PREFACE, settingsFrame([])])),
}

/** A valid request line and Host, then one or more broken header fields. */
export const headerGenerators: Record<string, Generator> = {
  'bad header name': (rng) => {
    const name = rng.pick([
      '',
      'X Y',
      'X\tY',
      '(x)',
      'x\x00y',
      'x\x7f',
      'é',
      `${rng.text(rng.int(1, 10), TOKEN)}${String.fromCharCode(rng.pick(NASTY))}`,
    ])
    return one('bad header name', rng, b(`GET / HTTP/1.1\r\nHost: localhost\r\n${name}: v\r\n\r\n`))
  },
  'header line without colon': (rng) =>
    one(
      'header line without colon',
      rng,
      b(`GET / HTTP/1.1\r\nHost: localhost\r\n${rng.text(rng.int(1, 30), TOKEN)}\r\n\r\n`),
    ),
  'bad header value': (rng) => {
    const value = `${rng.text(rng.int(0, 10), TOKEN)}${String.fromCharCode(rng.pick(NASTY))}${rng.text(rng.int(0, 10), TOKEN)}`
    return one(
      'bad header value',
      rng,
      b(`GET / HTTP/1.1\r\nHost: localhost\r\nX-Bad: ${value}\r\n\r\n`),
    )
  },
  'obs-fold': (rng) =>
    one('obs-fold', rng, b('GET / HTTP/1.1\r\nHost: localhost\r\nX-A: a\r\n  folded\r\n\r\n')),
  'bad Content-Length': (rng) => {
    const cl = rng.pick([
      'abc',
      '-1',
      '1, 2',
      '1 2',
      '0x10',
      '99999999999999999999999',
      '',
      '+5',
      '5\r\nContent-Length: 6',
    ])
    return one(
      'bad Content-Length',
      rng,
      b(`POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: ${cl}\r\n\r\nhello`),
    )
  },
  'bad Transfer-Encoding': (rng) => {
    const te = rng.pick([
      'chunked, gzip',
      'gzip',
      'chunkedx',
      ' chunked',
      'chunked\r\nContent-Length: 5',
      'identity',
      'chunked, chunked',
    ])
    return one(
      'bad Transfer-Encoding',
      rng,
      b(
        `POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: ${te}\r\n\r\n5\r\nhello\r\n0\r\n\r\n`,
      ),
    )
  },
  'odd Host and Upgrade': (rng) => {
    const extra = rng.pick([
      'Host: a\r\nHost: b',
      'Host:',
      'Upgrade: h2c\r\nConnection: Upgrade, HTTP2-Settings\r\nHTTP2-Settings: !!!',
      'Upgrade: websocket\r\nConnection: Upgrade',
      'Connection: close, close, keep-alive',
      'Expect: 100-continue\r\nContent-Length: 5',
      'Expect: 999-nope',
    ])
    return one('odd Host and Upgrade', rng, b(`GET / HTTP/1.1\r\n${extra}\r\n\r\n`))
  },
  'header bit flips': (rng) =>
    one(
      'header bit flips',
      rng,
      flipBits(
        rng,
        b(
          'POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 5\r\nX-Y: z\r\n\r\nhello',
        ),
        rng.int(1, 6),
      ),
    ),
  'many headers': (rng) => {
    let head = 'GET / HTTP/1.1\r\nHost: localhost\r\n'
    const count = rng.int(100, 3_000)
    for (let i = 0; i < count; i++) head += `X-${i}: ${i}\r\n`
    return one('many headers', rng, b(`${head}\r\n`))
  },
}

/** POST /echo with `Transfer-Encoding: chunked` and a broken chunk sequence. */
export const chunkedGenerators: Record<string, Generator> = {
  'bad chunk size': (rng) => {
    const size = rng.pick([
      'zz',
      '-1',
      'ffffffffffffffffffff',
      ' 5',
      '5 ',
      '',
      '0x5',
      '5\t',
      '7fffffffffffffff',
    ])
    return one('bad chunk size', rng, chunked(`${size}\r\nhello\r\n0\r\n\r\n`))
  },
  'chunk without CRLF': (rng) =>
    one(
      'chunk without CRLF',
      rng,
      chunked(rng.pick(['5\r\nhelloX0\r\n\r\n', '5\r\nhello0\r\n\r\n', '5\nhello\n0\n\n'])),
    ),
  'chunk data longer than its size': (rng) =>
    one('chunk data longer than its size', rng, chunked('3\r\nhello\r\n0\r\n\r\n')),
  'huge chunk extension': (rng) => {
    const ext = `;${'a'.repeat(rng.int(1_000, 40_000))}=${'b'.repeat(rng.int(0, 100))}`
    return one('huge chunk extension', rng, chunked(`5${ext}\r\nhello\r\n0\r\n\r\n`))
  },
  'bad trailer': (rng) =>
    one(
      'bad trailer',
      rng,
      chunked(
        rng.pick([
          '0\r\nX Y: z\r\n\r\n',
          '0\r\n\x00\r\n\r\n',
          `0\r\nT: ${'t'.repeat(20_000)}\r\n\r\n`,
        ]),
      ),
    ),
  'chunked bit flips': (rng) =>
    one(
      'chunked bit flips',
      rng,
      flipBits(rng, chunked('5\r\nhello\r\n6;e=1\r\n world\r\n0\r\n\r\n'), rng.int(1, 5)),
    ),
  'random chunks': (rng) => {
    let body = ''
    const n = rng.int(1, 20)
    for (let i = 0; i < n; i++) {
      const data = rng.text(rng.int(0, 40), TOKEN)
      // Mostly right sizes, sometimes off by a little.
      const size = rng.chance(0.7) ? data.length : Math.max(0, data.length + rng.int(-3, 3))
      body += `${size.toString(16)}\r\n${data}\r\n`
    }
    if (rng.chance(0.7)) body += '0\r\n\r\n'
    return one('random chunks', rng, chunked(body))
  },
}

function chunked(body: string): Buffer {
  return b(`POST /echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n${body}`)
}

/** Heads past Node's 16 KiB limit, requests cut anywhere, pipelines ending in garbage. */
export const headAndFramingGenerators: Record<string, Generator> = {
  'oversized header value': (rng) =>
    one(
      'oversized header value',
      rng,
      b(
        `GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'v'.repeat(rng.int(16_500, 80_000))}\r\n\r\n`,
      ),
    ),
  'oversized request line': (rng) =>
    one(
      'oversized request line',
      rng,
      b(`GET /${'p'.repeat(rng.int(16_500, 70_000))} HTTP/1.1\r\nHost: localhost\r\n\r\n`),
    ),
  'oversized head, many fields': (rng) => {
    let head = 'GET / HTTP/1.1\r\nHost: localhost\r\n'
    while (head.length < 17_000)
      head += `X-${rng.text(8, TOKEN)}: ${'v'.repeat(rng.int(50, 500))}\r\n`
    return one('oversized head, many fields', rng, b(`${head}\r\n`))
  },
  'oversized head, never ends': (rng) => ({
    ...one(
      'oversized head, never ends',
      rng,
      b(`GET / HTTP/1.1\r\nHost: localhost\r\nX-Big: ${'v'.repeat(rng.int(16_500, 40_000))}`),
    ),
    stall: true,
  }),
  'valid request cut anywhere': (rng) => {
    const full = rng.pick([
      VALID_GET,
      'POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\nhello world',
      'POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n',
    ])
    return one('valid request cut anywhere', rng, cut(rng, b(full)))
  },
  'pipeline then garbage': (rng) => {
    const n = rng.int(1, 4)
    return one(
      'pipeline then garbage',
      rng,
      Buffer.concat([b(VALID_GET.repeat(n)), rng.bytes(rng.int(1, 200))]),
    )
  },
  'body then garbage': (rng) =>
    one(
      'body then garbage',
      rng,
      Buffer.concat([
        b(
          'POST /echo HTTP/1.1\r\nHost: localhost\r\nContent-Type: text/plain\r\nContent-Length: 3\r\n\r\nabc',
        ),
        rng.bytes(rng.int(1, 300)),
      ]),
    ),
  'random bytes, up to 4 KiB': (rng) =>
    one('random bytes, up to 4 KiB', rng, rng.bytes(rng.int(1, 4_000))),
}
