/**
 * The engine's list of live records (engine/record-list.ts): accept order, membership read
 * off the record, live iteration as a Set's (deleted records skipped, added ones reached),
 * and no closed record left holding the ones after it.
 */
import type { Socket } from 'node:net'
import { describe, expect, it } from 'vitest'
import { RecordList } from '../src/engine/record-list.js'
import { ConnectionRecord } from '../src/record/record.js'

const socket = { remoteAddress: '192.0.2.7', remotePort: 1, localPort: 2 } as unknown as Socket
const make = (n: number) =>
  Array.from({ length: n }, () => new ConnectionRecord(socket, false, 0, 0))
const ids = (it: Iterable<ConnectionRecord>) => Array.from(it, (r) => r.id)

describe('RecordList', () => {
  it('keeps accept order, size and membership through adds and deletes', () => {
    const list = new RecordList()
    const [a, b, c, d] = make(4) as [
      ConnectionRecord,
      ConnectionRecord,
      ConnectionRecord,
      ConnectionRecord,
    ]
    for (const r of [a, b, c]) list.add(r)
    list.add(b) // twice: once
    expect(ids(list)).toEqual([a.id, b.id, c.id])
    expect(list.size).toBe(3)
    expect(list.delete(a)).toBe(true) // the head
    expect(list.delete(a)).toBe(false)
    expect(list.delete(c)).toBe(true) // the tail
    expect(list.delete(d)).toBe(false) // never added
    expect([list.has(a), list.has(b), list.has(c), list.has(d)]).toEqual([
      false,
      true,
      false,
      false,
    ])
    list.add(d)
    list.add(a) // back at the end
    expect(ids(list)).toEqual([b.id, d.id, a.id])
    expect(list.size).toBe(3)
    list.clear()
    expect(list.size).toBe(0)
    expect(ids(list)).toEqual([])
    expect([a, b, d].some((r) => list.has(r) || r._prev !== null || r._next !== null)).toBe(false)
  })

  it('iterates live: records deleted meanwhile are skipped, records added are reached', () => {
    const list = new RecordList()
    const rs = make(8)
    for (const r of rs.slice(0, 6)) list.add(r)
    const seen: number[] = []
    for (const r of list) {
      seen.push(r.id)
      if (r === rs[1]) {
        // The current one, the next one and a later one leave; one more joins.
        list.delete(rs[1] as ConnectionRecord)
        list.delete(rs[2] as ConnectionRecord)
        list.delete(rs[4] as ConnectionRecord)
        list.add(rs[6] as ConnectionRecord)
      }
    }
    expect(seen).toEqual([0, 1, 3, 5, 6].map((i) => (rs[i] as ConnectionRecord).id))
    // Once no iteration is running, the deleted ones hold no link.
    for (const i of [1, 2, 4]) expect((rs[i] as ConnectionRecord)._next).toBeNull()
  })

  it('a deleted record keeps no link to the ones after it', () => {
    const list = new RecordList()
    const rs = make(3)
    for (const r of rs) list.add(r)
    const first = rs[0] as ConnectionRecord
    list.delete(first)
    expect(first._next).toBeNull()
    expect(first._prev).toBeNull()
    // Broken off mid-way (the generator ends): the same.
    for (const r of list) {
      list.delete(r)
      break
    }
    expect((rs[1] as ConnectionRecord)._next).toBeNull()
  })

  it('values() is a copy, passing over records closed before it reaches them', () => {
    const list = new RecordList()
    const rs = make(3)
    for (const r of rs) list.add(r)
    const values = list.values()
    ;(rs[1] as ConnectionRecord).state = 'closed'
    list.delete(rs[1] as ConnectionRecord)
    list.add(make(1)[0] as ConnectionRecord)
    expect(ids(values)).toEqual([(rs[0] as ConnectionRecord).id, (rs[2] as ConnectionRecord).id])
  })
})
