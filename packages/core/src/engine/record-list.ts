import type { ConnectionRecord } from '../record/record.js'

/**
 * The engine's live records, in accept order: a doubly linked list through two fields of each
 * record (`_prev`, `_next`). A `Set` did the same at ~0.75k instructions a connection (Node 24,
 * callgrind): its table is rebuilt whenever adds have used the slots that deletions left
 * behind, which a server whose connections come and go does every few accepts. Here an add
 * and a delete are a few field writes, and membership is read off the record.
 *
 * Iteration is live, as a `Set`'s: a record deleted meanwhile is skipped and one added at the
 * end is reached. A record deleted while an iteration is in progress keeps its `_next` until
 * the last iteration ends (an iterator may stand on it); otherwise both links are cleared at
 * once, so a closed record an application keeps does not hold the records after it.
 * Iterations are the engine's own loops, always run to the end or broken off (which ends the
 * generator); `values()` hands an application a copy.
 */
export class RecordList implements Iterable<ConnectionRecord> {
  #head: ConnectionRecord | null = null
  #tail: ConnectionRecord | null = null
  #size = 0
  /** Iterations in progress. */
  #iterating = 0
  /** Records deleted during an iteration, whose `_next` is cleared when the last one ends. */
  readonly #leftWhileIterating: ConnectionRecord[] = []

  get size(): number {
    return this.#size
  }

  /** Whether `rec` is in this list (a record is in one list at most: its engine's). */
  has(rec: ConnectionRecord): boolean {
    return rec._prev !== null || this.#head === rec
  }

  add(rec: ConnectionRecord): void {
    if (this.has(rec)) return
    const tail = this.#tail
    rec._prev = tail
    rec._next = null
    if (tail === null) this.#head = rec
    else tail._next = rec
    this.#tail = rec
    this.#size++
  }

  delete(rec: ConnectionRecord): boolean {
    if (!this.has(rec)) return false
    const prev = rec._prev
    const next = rec._next
    if (prev === null) this.#head = next
    else prev._next = next
    if (next === null) this.#tail = prev
    else next._prev = prev
    rec._prev = null
    if (this.#iterating > 0) this.#leftWhileIterating.push(rec)
    else rec._next = null
    this.#size--
    return true
  }

  clear(): void {
    let rec = this.#head
    while (rec !== null) {
      const next: ConnectionRecord | null = rec._next
      rec._prev = null
      rec._next = null
      rec = next
    }
    this.#head = null
    this.#tail = null
    this.#size = 0
  }

  /** A copy of the records listed now, for an application to iterate at its own pace. */
  values(): IterableIterator<ConnectionRecord> {
    return liveOnly(Array.from(this))
  }

  *[Symbol.iterator](): Generator<ConnectionRecord, void, undefined> {
    this.#iterating++
    try {
      let rec = this.#head
      while (rec !== null) {
        yield rec
        // Read after the yield: a record added meanwhile is reached; a deleted one kept its
        // `_next` (see above), and the records deleted after it are passed over.
        rec = rec._next
        while (rec !== null && !this.has(rec)) rec = rec._next
      }
    } finally {
      if (--this.#iterating === 0) {
        const left = this.#leftWhileIterating
        for (let i = 0; i < left.length; i++) (left[i] as ConnectionRecord)._next = null
        left.length = 0
      }
    }
  }
}

/** The records of `copy` still open when the iteration reaches them. */
function* liveOnly(copy: ConnectionRecord[]): Generator<ConnectionRecord, void, undefined> {
  for (const rec of copy) if (rec.state !== 'closed') yield rec
}
