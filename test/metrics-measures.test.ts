import type { Socket } from 'node:net'
import {
  ConnectionRecord,
  LIVE_STATES,
  measureConnection,
  type StateDurations,
  type TlsInfo,
} from '@connguard/core'
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
    rec.durations[i] = c.sd?.[state] ?? 0
  })
  const duration = Object.values(rec.stateDurations).reduce((a, b) => a + b, 0)
  rec.rawSocket = null
  rec.finalBytesRead = c.bytes?.[0] ?? 0
  rec.finalBytesWritten = c.bytes?.[1] ?? 0
  rec.state = 'closed'
  rec.stateAtClose = c.stateAtClose
  rec.closeReason = c.reason
  rec.duration = duration
  rec.closedAt = duration
  rec.handshakeDuration = c.handshakeDuration ?? null
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
