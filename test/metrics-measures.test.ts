import { EventEmitter } from 'node:events'
import type { Socket } from 'node:net'
import { ClientConnectionRecord } from '@connguard/client'
import { ConnectionRecord, LIVE_STATES, type StateDurations, type TlsInfo } from '@connguard/core'
import {
  type ClientTrackerLike,
  feedClosedRecords,
  isClientRecord,
  measureConnection,
  type OpenClientConnections,
  openClientConnections,
  originParts,
} from '@connguard/core/internal'
import { describe, expect, it } from 'vitest'

interface Closed {
  secure?: boolean
  localPort?: number | undefined
  reason: ConnectionRecord['closeReason']
  stateAtClose: NonNullable<ConnectionRecord['stateAtClose']>
  sd?: Partial<StateDurations>
  handshakeDuration?: number | null
  timeToFirstRequest?: number | null
  requests?: number
  httpVersion?: string | null
  tls?: Partial<TlsInfo> | null
  bytes?: [number, number]
}

/** A record as the tracker leaves it after 'close'. */
function closed(c: Closed): ConnectionRecord {
  const socket = {
    remoteAddress: '192.0.2.7',
    remotePort: 50_000,
    localAddress: '127.0.0.1',
    localPort: 'localPort' in c ? c.localPort : 8443,
  } as unknown as Socket
  const rec = new ConnectionRecord(socket, c.secure ?? false, 0, 0)
  LIVE_STATES.forEach((state, i) => {
    rec.addDuration(i, c.sd?.[state] ?? 0)
  })
  // The upgraded time is what the duration leaves over the other states.
  const duration = Object.values(c.sd ?? {}).reduce((a, b) => a + b, 0)
  rec.rawSocket = null
  rec.finalBytesRead = c.bytes?.[0] ?? 0
  rec.finalBytesWritten = c.bytes?.[1] ?? 0
  rec.state = 'closed'
  rec.stateAtClose = c.stateAtClose
  rec.closeReason = c.reason
  rec.duration = duration
  rec.closedAt = duration
  // The handshake's duration is derived from when TLS was established.
  if (c.handshakeDuration != null) rec.establishedAtClock = rec.openedAtClock + c.handshakeDuration
  rec.timeToFirstRequest = c.timeToFirstRequest ?? null
  rec.requests = c.requests ?? 0
  rec.httpVersion = c.httpVersion ?? null
  rec.tls =
    c.tls === undefined || c.tls === null
      ? null
      : {
          protocol: null,
          cipher: null,
          alpnProtocol: false,
          servername: null,
          resumed: false,
          ...c.tls,
        }
  return rec
}

describe('measureConnection', () => {
  it('h2c: the wait for the first stream spans `new` and `idle`; later idle time is keep-alive', () => {
    const m = measureConnection(
      closed({
        reason: 'keep_alive_timeout',
        stateAtClose: 'idle',
        sd: { new: 5, idle: 150, active: 200 },
        timeToFirstRequest: 105,
        requests: 3,
        httpVersion: '2.0',
        bytes: [900, 4000],
      }),
    )
    expect(m).toMatchObject({
      protocolVersion: '2',
      tlsVersion: undefined,
      errorType: 'keep_alive_timeout',
      rejected: false,
      handshake: -1,
      requests: 3,
      bytesReceived: 900,
      bytesTransmitted: 4000,
      transport: 'tcp',
      port: 8443,
    })
    expect(m.duration).toBeCloseTo(0.355, 9)
    expect(m.phases).toEqual({
      handshake: -1,
      first_request: 0.105,
      request: 0.2,
      keep_alive: 0.05,
      upgraded: -1,
    })
  })

  it('TLS with ALPN h2 and no stream: protocol from ALPN, the wait runs to the close', () => {
    const m = measureConnection(
      closed({
        secure: true,
        reason: 'request_headers_timeout',
        stateAtClose: 'idle',
        sd: { new: 2, handshaking: 8, idle: 500 },
        handshakeDuration: 10,
        tls: { protocol: 'TLSv1.2', alpnProtocol: 'h2' },
      }),
    )
    expect(m).toMatchObject({
      protocolVersion: '2',
      tlsVersion: '1.2',
      handshake: 0.01,
      handshakeFailed: false,
      errorType: 'request_headers_timeout',
    })
    expect(m.phases).toEqual({
      handshake: 0.01,
      first_request: 0.5,
      request: -1,
      keep_alive: -1,
      upgraded: -1,
    })
  })

  it('a failed handshake: its time to the close, no version, nothing after it', () => {
    const m = measureConnection(
      closed({
        secure: true,
        reason: 'tls_handshake_failed',
        stateAtClose: 'handshaking',
        sd: { new: 100, handshaking: 200 },
      }),
    )
    expect(m).toMatchObject({ handshake: 0.3, handshakeFailed: true, tlsVersion: undefined })
    expect(m.protocolVersion).toBeUndefined()
    expect(m.phases).toEqual({
      handshake: 0.3,
      first_request: -1,
      request: -1,
      keep_alive: -1,
      upgraded: -1,
    })
  })

  it('an upgraded connection: its upgraded time, no keep-alive; a clean end has no error.type', () => {
    const m = measureConnection(
      closed({
        reason: 'client_closed',
        stateAtClose: 'upgraded',
        sd: { new: 3, active: 7, upgraded: 1000 },
        timeToFirstRequest: 3,
        requests: 1,
        httpVersion: '1.1',
      }),
    )
    expect(m.errorType).toBeUndefined()
    expect(m.phases).toEqual({
      handshake: -1,
      first_request: 0.003,
      request: 0.007,
      keep_alive: -1,
      upgraded: 1,
    })
  })

  it('a rejected connection: counted as such, with no phase', () => {
    for (const reason of [
      'max_concurrent_connections_exceeded',
      'max_connections_per_ip_exceeded',
      'max_concurrent_handshakes_exceeded',
    ] as const) {
      const m = measureConnection(
        closed({ secure: true, reason, stateAtClose: 'new', sd: { new: 1 } }),
      )
      expect(m).toMatchObject({ rejected: true, errorType: reason, handshake: -1 })
      expect(Object.values(m.phases).every((x) => x === -1)).toBe(true)
    }
  })

  it('maps unknown versions to `other` and a socket without a port to `unix`', () => {
    const m = measureConnection(
      closed({
        secure: true,
        localPort: undefined,
        reason: 'client_closed',
        stateAtClose: 'idle',
        sd: { new: 1, idle: 1, active: 1 },
        handshakeDuration: 1,
        timeToFirstRequest: 0,
        requests: 1,
        httpVersion: '1.2',
        tls: { protocol: 'SSLv3' },
      }),
    )
    expect(m).toMatchObject({
      protocolVersion: 'other',
      tlsVersion: 'other',
      transport: 'unix',
      port: undefined,
    })
  })
})

interface ClientClosed {
  origin?: string
  secure?: boolean
  reason: ClientConnectionRecord['closeReason']
  stateAtClose: NonNullable<ClientConnectionRecord['stateAtClose']>
  sd?: Partial<StateDurations>
  connectDuration?: number | null
  handshakeDuration?: number | null
  timeToFirstRequest?: number | null
  requests?: number
  httpVersion?: string | null
}

/** A client record as the client tracker leaves it after 'close'. */
function clientClosed(c: ClientClosed): ClientConnectionRecord {
  const origin = c.origin ?? 'https://api.example.com'
  const rec = new ClientConnectionRecord(origin, c.secure ?? origin.startsWith('https:'), 0, 0)
  Object.assign(rec.stateDurations, c.sd)
  const duration = Object.values(rec.stateDurations).reduce((a, b) => a + b, 0)
  rec.localPort = 50_123
  rec.remotePort = 443
  rec.state = 'closed'
  rec.stateAtClose = c.stateAtClose
  rec.closeReason = c.reason
  rec.duration = duration
  rec.connectDuration = c.connectDuration === undefined ? (c.sd?.new ?? 0) : c.connectDuration
  rec.handshakeDuration = c.handshakeDuration ?? null
  rec.timeToFirstRequest = c.timeToFirstRequest ?? null
  rec.requests = c.requests ?? 0
  rec.httpVersion = c.httpVersion ?? null
  return rec
}

describe('measureConnection with client records (one mapping for both sides)', () => {
  it('an established TLS client connection: server address and port from the origin, not the local port', () => {
    const rec = clientClosed({
      origin: 'https://api.example.com',
      reason: 'ping_timeout',
      stateAtClose: 'idle',
      // connect 20, TLS 30, wait 5 for the first request, 100 active, 600 idle after it
      sd: { new: 20, handshaking: 30, idle: 605, active: 100 },
      handshakeDuration: 30,
      timeToFirstRequest: 5,
      requests: 2,
      httpVersion: '2',
    })
    expect(isClientRecord(rec)).toBe(true)
    const m = measureConnection(rec)
    expect(m).toMatchObject({
      side: 'client',
      established: true,
      reason: 'ping_timeout',
      errorType: 'ping_timeout',
      serverAddress: 'api.example.com',
      port: 443,
      transport: 'tcp',
      protocolVersion: '2',
      rejected: false,
      handshake: 0.03,
      handshakeFailed: false,
    })
    expect(m.duration).toBeCloseTo(0.755, 9)
    // A client's `new` is its TCP connect: not in the handshake; it waits for its first
    // request in `idle`, so only the idle time after that is keep-alive.
    expect(m.phases).toEqual({
      handshake: 0.03,
      first_request: 0.005,
      request: 0.1,
      keep_alive: 0.6,
      upgraded: -1,
    })
  })

  it('a connect that failed is neither established nor a failed handshake; a failed handshake is', () => {
    const refused = measureConnection(
      clientClosed({ reason: 'error', stateAtClose: 'new', sd: { new: 3 }, connectDuration: null }),
    )
    expect(refused).toMatchObject({ established: false, handshakeFailed: false, handshake: -1 })
    expect(Object.values(refused.phases).every((x) => x === -1)).toBe(true)
    const untrusted = measureConnection(
      clientClosed({
        reason: 'tls_handshake_failed',
        stateAtClose: 'handshaking',
        sd: { new: 2, handshaking: 7 },
      }),
    )
    expect(untrusted).toMatchObject({
      established: false,
      handshakeFailed: true,
      handshake: 0.007,
      tlsVersion: undefined,
    })
  })

  it('plain HTTP/1.1 without a request: the wait runs from connected to the close', () => {
    const m = measureConnection(
      clientClosed({
        origin: 'http://[::1]:8080',
        reason: 'keep_alive_timeout',
        stateAtClose: 'idle',
        sd: { new: 4, idle: 400 },
        httpVersion: '1.1',
      }),
    )
    expect(m).toMatchObject({
      established: true,
      serverAddress: '::1',
      port: 8080,
      protocolVersion: '1.1',
      handshake: -1,
    })
    expect(m.phases.first_request).toBeCloseTo(0.4, 9)
    expect(m.phases.keep_alive).toBe(-1)
  })

  it('server records stay server-side: no server address, the local port, established unless rejected or failed', () => {
    const m = measureConnection(
      closed({ reason: 'client_closed', stateAtClose: 'idle', sd: { new: 1 } }),
    )
    expect(m).toMatchObject({
      side: 'server',
      established: true,
      serverAddress: undefined,
      port: 8443,
    })
  })

  it('originParts: default ports, IPv6 without brackets; nonsense is undefined', () => {
    expect(originParts('https://example.com')).toEqual({
      address: 'example.com',
      port: 443,
      scheme: 'https',
    })
    expect(originParts('http://example.com')?.port).toBe(80)
    expect(originParts('http://[2001:db8::1]:81')).toEqual({
      address: '2001:db8::1',
      port: 81,
      scheme: 'http',
    })
    expect(originParts('not a url')).toBeUndefined()
  })

  it('openClientConnections: groups by state, address, port and protocol; empty groups stay at 0', () => {
    const live = (origin: string, state: 'idle' | 'active' | 'new', httpVersion: string | null) => {
      const rec = new ClientConnectionRecord(origin, true, 0, 0)
      rec.state = state
      rec.httpVersion = httpVersion
      return rec
    }
    let recs = [
      live('https://a.example', 'idle', '2'),
      live('https://a.example', 'active', '2'),
      live('https://a.example', 'active', '2'),
      live('https://b.example:8443', 'idle', '1.1'),
      live('https://b.example:8443', 'new', null), // still connecting: not counted
    ]
    const tracker: Pick<ClientTrackerLike, 'connections'> = { connections: () => recs }
    const seen = new Map<string, OpenClientConnections>()
    const counts = () =>
      [...openClientConnections([tracker], seen)]
        .map((g) => `${g.state} ${g.serverAddress}:${g.serverPort} ${g.protocolVersion} ${g.count}`)
        .sort()
    expect(counts()).toEqual([
      'active a.example:443 2 2',
      'active b.example:8443 1.1 0',
      'idle a.example:443 2 1',
      'idle b.example:8443 1.1 1',
    ])
    recs = []
    expect(counts()).toEqual([
      'active a.example:443 2 0',
      'active b.example:8443 1.1 0',
      'idle a.example:443 2 0',
      'idle b.example:8443 1.1 0',
    ])
  })
})

describe("feedClosedRecords (the exporters' feed)", () => {
  it('hands each closed record over measured; a recorder that throws is warned about once, never thrown', async () => {
    const tracker = new EventEmitter()
    const seen: string[] = []
    let fail = false
    const warnings: Error[] = []
    const onWarning = (w: Error) => warnings.push(w)
    process.on('warning', onWarning)
    try {
      const stop = feedClosedRecords(tracker, (m) => {
        if (fail) throw new Error('recorder broke')
        seen.push(m.reason)
      })
      tracker.emit('close', closed({ reason: 'keep_alive_timeout', stateAtClose: 'idle' }))
      fail = true
      expect(() => {
        tracker.emit('close', closed({ reason: 'client_closed', stateAtClose: 'idle' }))
        tracker.emit('close', closed({ reason: 'client_closed', stateAtClose: 'idle' }))
      }).not.toThrow()
      stop()
      fail = false
      tracker.emit('close', closed({ reason: 'server_closed', stateAtClose: 'idle' }))
      expect(tracker.listenerCount('close')).toBe(0)
      await new Promise((resolve) => setImmediate(resolve))
      expect(seen).toEqual(['keep_alive_timeout'])
      const ours = warnings.filter(
        (w) => (w as { code?: string }).code === 'CONNGUARD_METRICS_FAILED',
      )
      expect(ours).toHaveLength(1)
      expect(ours[0]?.message).toContain('recorder broke')
    } finally {
      process.off('warning', onWarning)
    }
  })
})
