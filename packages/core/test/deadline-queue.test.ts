import { describe, expect, it } from 'vitest'
import { DeadlineQueue, NEVER, type Scheduled } from '../src/time/deadline-queue.js'

interface Entry extends Scheduled {
  id: number
}
const entry = (id: number): Entry => ({ id, deadlineAt: NEVER, queueIndex: -1 })

/** A tiny seeded generator so a failure can be replayed. */
function lcg(seed: number): () => number {
  let s = seed >>> 0
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0
    return s / 2 ** 32
  }
}

/**
 * Pops everything due at `now`: each popped entry is one of `live` at its due time, in due
 * order, and nothing left in `live` is due.
 */
function popAllDue(q: DeadlineQueue<Entry>, live: Map<number, number>, now: number): void {
  const popped: number[] = []
  for (let x = q.popExpired(now); x !== undefined; x = q.popExpired(now)) {
    expect(live.get(x.id)).toBe(x.deadlineAt)
    expect(x.deadlineAt).toBeLessThanOrEqual(now)
    popped.push(x.deadlineAt)
    live.delete(x.id)
  }
  expect(popped).toEqual([...popped].sort((m, n) => m - n))
  for (const at of live.values()) expect(at).toBeGreaterThan(now)
}

describe('DeadlineQueue', () => {
  it('pops only what is due, earliest first', () => {
    const q = new DeadlineQueue<Entry>()
    const [a, b, c] = [entry(1), entry(2), entry(3)]
    q.schedule(a, 30)
    q.schedule(b, 10)
    q.schedule(c, 20)
    expect(q.popExpired(9)).toBeUndefined()
    expect(q.popExpired(25)?.id).toBe(2)
    expect(q.popExpired(25)?.id).toBe(3)
    expect(q.popExpired(25)).toBeUndefined()
    expect(q.size).toBe(1)
    expect(b.queueIndex).toBe(-1)
  })

  it('moves an entry when its deadline changes, and removes it at NEVER', () => {
    const q = new DeadlineQueue<Entry>()
    const [a, b] = [entry(1), entry(2)]
    q.schedule(a, 10)
    q.schedule(b, 20)
    q.schedule(a, 30)
    expect(q.peek()?.id).toBe(2)
    q.schedule(b, NEVER)
    expect(q.size).toBe(1)
    expect(b.queueIndex).toBe(-1)
    q.remove(b) // removing twice is harmless
    expect(q.popExpired(100)?.id).toBe(1)
  })

  it('matches a sorted reference under random schedule, move and remove', () => {
    const rand = lcg(42)
    const q = new DeadlineQueue<Entry>()
    const entries = Array.from({ length: 200 }, (_, i) => entry(i))
    const live = new Map<number, number>()
    for (let step = 0; step < 5000; step++) {
      const e = entries[Math.floor(rand() * entries.length)] as Entry
      const r = rand()
      if (r < 0.6) {
        const at = Math.floor(rand() * 1000)
        q.schedule(e, at)
        live.set(e.id, at)
      } else if (r < 0.8) {
        q.remove(e)
        live.delete(e.id)
      } else {
        popAllDue(q, live, Math.floor(rand() * 1000))
      }
      expect(q.size).toBe(live.size)
    }
  })

  it('entries queued between two reads (staged) read as if they had been in the heap', () => {
    const rand = lcg(7)
    const q = new DeadlineQueue<Entry>()
    const entries = Array.from({ length: 300 }, (_, i) => entry(i))
    const live = new Map<number, number>()
    for (let round = 0; round < 40; round++) {
      // Many changes with no read between them: queued, moved, removed, queued again.
      for (let step = 0; step < 200; step++) {
        const e = entries[Math.floor(rand() * entries.length)] as Entry
        if (rand() < 0.7) {
          const at = Math.floor(rand() * 1000)
          q.schedule(e, at)
          live.set(e.id, at)
        } else {
          q.remove(e)
          live.delete(e.id)
          expect(e.queueIndex).toBe(-1)
        }
      }
      popAllDue(q, live, Math.floor(rand() * 1000))
      expect(q.size).toBe(live.size)
      const first = Math.min(...live.values())
      if (live.size > 0) expect(q.peek()?.deadlineAt).toBe(first)
      // Every entry still queued is in the heap now (a position), every other one is not.
      for (const e of entries) expect(e.queueIndex >= 0).toBe(live.has(e.id))
    }
    q.schedule(entries[0] as Entry, 5)
    q.clear()
    expect(q.size).toBe(0)
    for (const e of entries) expect(e.queueIndex).toBe(-1)
  })
})
