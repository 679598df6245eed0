/**
 * The sweeper's one ordered collection: a binary min-heap of connections keyed
 * by their next deadline (queued entries reach it at the next read, see `#staged`). A sweep
 * pops only what has expired, so it costs
 * O(expired · log n) and O(1) when nothing is due, however many connections
 * are tracked. Each entry stores its own heap position so moving a deadline
 * (every request does) is O(log n) with no search and no allocation.
 *
 * A heap rather than one FIFO list per deadline: per-route overrides give
 * deadlines of different lengths in one phase, which breaks FIFO order.
 */
/**
 * A due time that is not set. Not Infinity: a field that ever holds a number that is not a
 * small integer is boxed in every object of its shape (a 16-byte heap number per field per
 * connection); due times are whole clock ms (never negative), so -1 keeps them small.
 */
export const NEVER = -1

/** True when the due time `at` is set and not after `now`. */
export function isDue(at: number, now: number): boolean {
  return at >= 0 && at <= now
}

/** The earlier of two due times, either of which may be NEVER. */
export function earliest(a: number, b: number): number {
  if (a < 0) return b
  if (b < 0) return a
  return Math.min(a, b)
}

export interface Scheduled {
  /** When this entry is due, in clock ms; NEVER when it has no deadline. */
  deadlineAt: number
  /** Position in the heap, -1 when not queued, -2 while staged. Owned by the queue. */
  queueIndex: number
}

/** `queueIndex` of an entry queued but not yet in the heap (see `#staged`). */
const STAGED = -2

export class DeadlineQueue<T extends Scheduled> {
  readonly #heap: T[] = []
  /**
   * Entries queued since the heap was last read, not yet in it: most connections that close
   * within a sweep of their accept (one request each, say) never enter the heap, and pay a
   * push instead of a sift up and a sift down (O(log n) each). Every read (`peek`,
   * `popExpired`, `dueBy`, `size`) moves them in first, so due times are read as if they had
   * been in the heap all along. A removed entry stays here, marked, until then.
   */
  readonly #staged: T[] = []

  get size(): number {
    this.#flush()
    return this.#heap.length
  }

  /** The entry due first, without removing it. */
  peek(): T | undefined {
    this.#flush()
    return this.#heap[0]
  }

  /** Queues `entry` at `deadlineAt`, moves it if queued, or removes it if `deadlineAt` is NEVER. */
  schedule(entry: T, deadlineAt: number): void {
    entry.deadlineAt = deadlineAt
    if (deadlineAt < 0) {
      this.remove(entry)
      return
    }
    const i = entry.queueIndex
    if (i === STAGED) return
    if (i < 0) {
      entry.queueIndex = STAGED
      this.#staged.push(entry)
    } else {
      this.#up(i)
      this.#down(entry.queueIndex)
    }
  }

  remove(entry: T): void {
    const i = entry.queueIndex
    if (i < 0) {
      if (i === STAGED) entry.queueIndex = -1
      return
    }
    entry.queueIndex = -1
    const last = this.#heap.pop() as T
    if (i === this.#heap.length) return
    this.#heap[i] = last
    last.queueIndex = i
    this.#up(i)
    this.#down(last.queueIndex)
  }

  /** Removes and returns the first entry due at or before `now`, if any. */
  popExpired(now: number): T | undefined {
    this.#flush()
    const top = this.#heap[0]
    if (top === undefined || top.deadlineAt > now) return undefined
    this.remove(top)
    return top
  }

  /**
   * Up to `max` entries due at or before `limit` for which `match` holds, in no particular
   * order, without removing them. Visits only entries due by `limit` and the children
   * where that stops (the heap property prunes the rest): O(entries due by `limit`).
   */
  dueBy(limit: number, max: number, match: (entry: T) => boolean): T[] {
    this.#flush()
    const out: T[] = []
    const heap = this.#heap
    const stack = [0]
    while (stack.length > 0 && out.length < max) {
      const i = stack.pop() as number
      const entry = heap[i]
      if (entry === undefined || entry.deadlineAt > limit) continue
      if (match(entry)) out.push(entry)
      stack.push(2 * i + 2, 2 * i + 1)
    }
    return out
  }

  clear(): void {
    for (const entry of this.#heap) entry.queueIndex = -1
    for (const entry of this.#staged) entry.queueIndex = -1
    this.#heap.length = 0
    this.#staged.length = 0
  }

  /** Moves the staged entries still queued into the heap. */
  #flush(): void {
    const staged = this.#staged
    if (staged.length === 0) return
    const heap = this.#heap
    for (let k = 0; k < staged.length; k++) {
      const entry = staged[k] as T
      // Removed since, or staged twice (removed, then queued again): placed once.
      if (entry.queueIndex !== STAGED) continue
      entry.queueIndex = heap.length
      heap.push(entry)
      this.#up(entry.queueIndex)
    }
    staged.length = 0
  }

  #up(i: number): void {
    const heap = this.#heap
    const entry = heap[i] as T
    while (i > 0) {
      const parentIndex = (i - 1) >> 1
      const parent = heap[parentIndex] as T
      if (parent.deadlineAt <= entry.deadlineAt) break
      heap[i] = parent
      parent.queueIndex = i
      i = parentIndex
    }
    heap[i] = entry
    entry.queueIndex = i
  }

  #down(i: number): void {
    const heap = this.#heap
    const n = heap.length
    const entry = heap[i] as T
    for (;;) {
      const left = 2 * i + 1
      if (left >= n) break
      const right = left + 1
      let child = left
      if (right < n && (heap[right] as T).deadlineAt < (heap[left] as T).deadlineAt) child = right
      const smaller = heap[child] as T
      if (smaller.deadlineAt >= entry.deadlineAt) break
      heap[i] = smaller
      smaller.queueIndex = i
      i = child
    }
    heap[i] = entry
    entry.queueIndex = i
  }
}
