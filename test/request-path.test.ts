/**
 * The per-request path adds nothing a handler does not ask for: the guard decides whether a
 * request has a body from the raw header list Node's parser hands over, and never reads
 * `req.headers` (which Node builds on first use, and Node 26 itself no longer reads for a
 * plain request). Real sockets on 127.0.0.1, plain node:http.
 */
import http from 'node:http'
import { setTimeout as delay } from 'node:timers/promises'
import { ConnectionTracker } from '@connguard/core'
import { afterEach, describe, expect, it } from 'vitest'
import { openSocket, rawHttp } from './helpers/clients.js'
import { closeServer, listen } from './helpers/server.js'

type RatesView = { rates: { hasBody: boolean; bodyWindowAt: number } | null }

let server: http.Server | null = null
let tracker: ConnectionTracker | null = null
afterEach(async () => {
  tracker?.close()
  tracker = null
  if (server !== null) await closeServer(server)
  server = null
})

let headerReads = 0
/** Node's own request class, counting reads of `headers` (a getter on its prototype). */
class CountingMessage extends http.IncomingMessage {
  override get headers(): http.IncomingHttpHeaders {
    headerReads++
    return super.headers
  }
  override set headers(value: http.IncomingHttpHeaders) {
    super.headers = value
  }
}

describe('the per-request path', () => {
  it('reads req.headers no more than the same server bare (Node 26 builds it on first use)', async () => {
    const reads = async (guarded: boolean): Promise<number> => {
      const s = http.createServer({ IncomingMessage: CountingMessage }, (req, res) => {
        req.resume()
        req.on('end', () => res.end('ok'))
      })
      server = s
      if (guarded) tracker = new ConnectionTracker().attach(s)
      const port = await listen(s)
      headerReads = 0
      const r = await rawHttp(
        port,
        'GET / HTTP/1.1\r\nHost: a\r\n\r\n' +
          'POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi',
      )
      expect(r.responses.map((x) => x.status)).toEqual([200, 200])
      const n = headerReads
      tracker?.close()
      tracker = null
      await closeServer(s)
      server = null
      return n
    }
    const bare = await reads(false)
    expect(await reads(true)).toBe(bare)
  })

  it('tells a body from the raw headers, whatever their case', async () => {
    const bodies: (boolean | undefined)[] = []
    server = http.createServer((req, res) => {
      const rec = tracker?.recordOf(req) as unknown as RatesView | undefined
      bodies.push(rec?.rates?.hasBody)
      req.resume()
      req.on('end', () => res.end('ok'))
    })
    tracker = new ConnectionTracker().attach(server)
    const port = await listen(server)
    // One request per connection: with pipelining, a handler runs before the requests
    // ahead of it are answered, while the guard still follows the oldest.
    const requests = [
      'GET / HTTP/1.1\r\nHost: a\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\ncontent-length: 0\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nCONTENT-LENGTH: 3\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n',
      'POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n',
    ]
    const bodiesSent = ['', '', 'abc', '1\r\nx\r\n0\r\n\r\n', '0\r\n\r\n']
    for (const [i, head] of requests.entries()) {
      const r = await rawHttp(port, `${head}Connection: close\r\n\r\n${bodiesSent[i]}`)
      expect(r.responses.map((x) => x.status)).toEqual([200])
    }
    // A request without a body takes no windows at its head: the next sweep gives them to it
    // if it is still in flight (only the response rate can apply to it).
    expect(bodies).toEqual([undefined, undefined, true, true, true])
  })

  it('a slow chunked body is still cut by its rate (lower-case Transfer-Encoding)', async () => {
    server = http.createServer((req, res) => {
      req.resume()
      req.on('end', () => res.end('ok'))
    })
    tracker = new ConnectionTracker({
      sweepInterval: 50,
      minBodyRate: { bytesPerSecond: 1_000, graceMs: 500 },
    }).attach(server)
    const reasons: (string | null)[] = []
    tracker.on('close', (rec) => reasons.push(rec.closeReason))
    const port = await listen(server)
    const conn = await openSocket(port)
    try {
      conn.send('POST / HTTP/1.1\r\nHost: a\r\ntransfer-encoding: chunked\r\n\r\n')
      // 3 bytes every 300 ms: far below 1,000 B/s; the window is 1 s.
      for (let i = 0; i < 12 && conn.isOpen(); i++) {
        conn.send('1\r\nx\r\n')
        await delay(300)
      }
      await conn.closed
    } finally {
      conn.destroy()
    }
    for (let i = 0; i < 40 && reasons.length === 0; i++) await delay(25)
    expect(reasons).toEqual(['min_request_body_data_rate'])
  })
})
