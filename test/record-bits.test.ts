/**
 * The record keeps several small facts packed in one integer (secure, the head being read,
 * the parser hook's begin, the age deadline armed, the ends read, the phase reason, the
 * requests in flight). Each must read back what was written, whatever the others hold.
 */
import type { Socket } from 'node:net'
import { ConnectionRecord, type DeadlineKind } from '@connguard/core'
import { describe, expect, it } from 'vitest'

const socket = {
  remoteAddress: '192.0.2.7',
  remotePort: 50_000,
  localAddress: '127.0.0.1',
  localPort: 8080,
} as unknown as Socket

const KINDS: (DeadlineKind | null)[] = [
  null,
  'tls_handshake_timeout',
  'request_headers_timeout',
  'keep_alive_timeout',
  'request_timeout',
  'max_connection_age',
]

describe('packed record state', () => {
  it('phase reason, requests in flight and the flags are independent', () => {
    for (const secure of [false, true]) {
      const rec = new ConnectionRecord(socket, secure, 0, 0)
      for (const kind of KINDS) {
        for (const inFlight of [0, 1, 2, 255, 256, 100_000]) {
          for (const head of [false, true]) {
            rec.phaseReason = kind
            rec.inFlight = inFlight
            rec.readingHead = head
            rec.sawMessageBegin = !head
            expect([rec.phaseReason, rec.inFlight, rec.readingHead, rec.sawMessageBegin]).toEqual([
              kind,
              inFlight,
              head,
              !head,
            ])
            expect(rec.secure).toBe(secure)
            expect(rec.remoteAddress).toBe('192.0.2.7')
          }
        }
      }
      // Counting up and down, as the request path does.
      rec.inFlight = 0
      rec.phaseReason = 'keep_alive_timeout'
      rec.inFlight++
      rec.inFlight++
      rec.inFlight--
      expect([rec.inFlight, rec.phaseReason]).toEqual([1, 'keep_alive_timeout'])
    }
  })
})
