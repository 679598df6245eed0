/**
 * Load generators, each bounded in time and stopping by itself.
 *
 * - `keepAlive`: autocannon (`-c connections`, pipelining 1) with each response time recorded
 *   at 10 µs resolution (autocannon's own histogram rounds to whole milliseconds, too coarse
 *   for a 5% comparison of a ~1 ms p99).
 * - `perConnection`: a small client of its own, one request per connection: connect (TLS:
 *   full handshake, no session reuse), `GET /` with `Connection: close`, read to the server's
 *   close, connect again. autocannon's `Connection: close` handling writes the next request
 *   into the closing socket and its `reconnectRate` drops the response it resets on.
 */
import { spawn } from 'node:child_process'
import net from 'node:net'
import { performance } from 'node:perf_hooks'
import tls from 'node:tls'
import autocannon from 'autocannon'
import { Histogram, HOST } from './common.mjs'

export async function keepAlive({ port, secure, durationS, connections = 50, overallRate }) {
  const hist = new Histogram()
  const result = await autocannon({
    url: `${secure ? 'https' : 'http'}://${HOST}:${port}/`,
    connections,
    pipelining: 1,
    duration: durationS,
    ...(overallRate ? { overallRate } : {}),
    setupClient(client) {
      client.on('response', (status, _bytes, responseTime) => {
        if (status === 200) hist.record(responseTime)
      })
    },
  })
  const ok = result['2xx']
  return {
    count: ok,
    rps: ok / result.duration,
    p50: hist.percentile(50),
    p99: hist.percentile(99),
    errors: result.errors + result.timeouts + result.non2xx,
  }
}

const REQUEST = Buffer.from(`GET / HTTP/1.1\r\nHost: ${HOST}\r\nConnection: close\r\n\r\n`)

export function perConnection({ port, secure, durationS, connections = 50 }) {
  const hist = new Histogram()
  let count = 0
  let errors = 0
  const start = performance.now()
  const end = start + durationS * 1000
  return new Promise((resolve) => {
    let running = connections
    const finish = () => {
      if (--running > 0) return
      const elapsed = (performance.now() - start) / 1000
      resolve({
        count,
        rps: count / elapsed,
        p50: hist.percentile(50),
        p99: hist.percentile(99),
        errors,
      })
    }
    const one = () => {
      if (performance.now() >= end) {
        finish()
        return
      }
      const t0 = performance.now()
      const socket = secure
        ? tls.connect({ port, host: HOST, rejectUnauthorized: false })
        : net.connect(port, HOST)
      let head = ''
      let done = false
      const settle = (ok) => {
        if (done) return
        done = true
        if (ok) {
          count++
          hist.record(performance.now() - t0)
        } else errors++
        socket.destroy()
        setImmediate(one)
      }
      socket.setNoDelay(true)
      socket.once(secure ? 'secureConnect' : 'connect', () => socket.write(REQUEST))
      socket.on('data', (chunk) => {
        if (head.length < 12) head += chunk.toString('latin1', 0, 12)
      })
      socket.on('end', () => settle(head.startsWith('HTTP/1.1 200')))
      socket.on('error', () => settle(false))
      socket.on('close', () => settle(head.startsWith('HTTP/1.1 200')))
      socket.setTimeout(10_000, () => settle(false))
    }
    for (let i = 0; i < connections; i++) one()
  })
}

/**
 * Debian's `wrk` (one thread, `connections` keep-alive connections), for the cross-check.
 * Returns null when wrk is not installed.
 */
export function wrk({ port, secure, durationS, connections = 50 }) {
  return new Promise((resolve) => {
    const url = `${secure ? 'https' : 'http'}://${HOST}:${port}/`
    const child = spawn('wrk', ['-t1', `-c${connections}`, `-d${durationS}s`, '--latency', url], {
      stdio: ['ignore', 'pipe', 'pipe'],
    })
    let out = ''
    child.stdout.on('data', (d) => {
      out += d
    })
    child.on('error', () => resolve(null))
    child.on('close', (code) => {
      if (code !== 0) return resolve(null)
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out)?.[1])
      const p99 = /99%\s+([\d.]+)(us|ms|s)/.exec(out)
      const scale = { us: 0.001, ms: 1, s: 1000 }
      const errors = /Non-2xx or 3xx responses: (\d+)/.exec(out)?.[1] ?? 0
      resolve({ rps, p99: p99 ? Number(p99[1]) * scale[p99[2]] : Number.NaN, errors: +errors })
    })
  })
}
