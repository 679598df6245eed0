/**
 * Errors thrown by connguard. Every condition has its own class and a stable
 * `code` (`CONNGUARD_ERR_*`): match on `err.code`, never on the message text.
 */
export class ConnguardError extends Error {
  readonly code: string

  constructor(code: string, message: string) {
    super(message)
    this.name = new.target.name
    this.code = code
  }
}

/** An option has a value outside what it allows. */
export class InvalidOptionError extends ConnguardError {
  readonly option: string
  readonly value: unknown
  readonly allowed: string

  constructor(option: string, value: unknown, allowed: string) {
    super(
      'CONNGUARD_ERR_INVALID_OPTION',
      `connguard: option "${option}" must be ${allowed}; received ${describe(value)}`,
    )
    this.option = option
    this.value = value
    this.allowed = allowed
  }
}

/**
 * An option name nobody knows. A typo such as `headerTimeout` must not leave a
 * defence silently at its default, so unknown names are errors, not warnings.
 */
export class UnknownOptionError extends ConnguardError {
  readonly option: string
  readonly suggestion: string | undefined

  constructor(option: string, known: readonly string[], where = 'options') {
    const suggestion = closest(option, known)
    super(
      'CONNGUARD_ERR_UNKNOWN_OPTION',
      `connguard: unknown ${where} "${option}"` +
        (suggestion === undefined ? '' : ` (did you mean "${suggestion}"?)`) +
        `; known: ${known.join(', ')}`,
    )
    this.option = option
    this.suggestion = suggestion
  }
}

/** `attach()` was given something that is not a server connguard can guard. */
export class UnsupportedServerError extends ConnguardError {
  constructor(detail: string) {
    super('CONNGUARD_ERR_UNSUPPORTED_SERVER', `connguard: cannot attach: ${detail}`)
  }
}

/** `watchWebSockets()`/`watchWebSocket()` was given something that is not a WebSocket (server) it can link. */
export class UnsupportedWebSocketError extends ConnguardError {
  constructor(detail: string) {
    super('CONNGUARD_ERR_UNSUPPORTED_WEBSOCKET', `connguard: cannot watch: ${detail}`)
  }
}

/** Another tracker already guards this server: two would fight over its timers. */
export class AlreadyAttachedError extends ConnguardError {
  constructor() {
    super(
      'CONNGUARD_ERR_ALREADY_ATTACHED',
      'connguard: this server is already guarded by another ConnectionTracker; close that one first',
    )
  }
}

/** The tracker was closed; it cannot attach again. Create a new one. */
export class TrackerClosedError extends ConnguardError {
  constructor() {
    super('CONNGUARD_ERR_TRACKER_CLOSED', 'connguard: this ConnectionTracker is closed')
  }
}

/**
 * What a guard timeout hands the server's `'clientError'` listeners, as Node does for its own
 * header and request timeouts: the code is Node's `ERR_HTTP_REQUEST_TIMEOUT`, not a
 * `CONNGUARD_ERR_*` one, so Fastify's `clientErrorHandler` (its JSON 408) and any listener
 * written for Node's timeouts answer it as theirs. `reason` is the guard's close reason.
 */
export class RequestTimeoutError extends Error {
  readonly code = 'ERR_HTTP_REQUEST_TIMEOUT'
  /** `request_headers_timeout`, `request_timeout` or `min_request_body_data_rate`. */
  readonly reason: string

  constructor(reason: string) {
    super(`Request timeout (connguard: ${reason})`)
    this.name = 'RequestTimeoutError'
    this.reason = reason
  }
}

function describe(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'bigint') return `${value}n`
  if (typeof value === 'function') return 'a function'
  if (Array.isArray(value)) return 'an array'
  if (value === null || typeof value !== 'object') return String(value)
  try {
    return JSON.stringify(value)
  } catch {
    return 'an object'
  }
}

/** The known name within edit distance 2 of `name`, if any. */
export function closest(name: string, known: readonly string[]): string | undefined {
  let best: string | undefined
  let bestDistance = 3
  const lower = name.toLowerCase()
  for (const candidate of known) {
    const d = editDistance(lower, candidate.toLowerCase())
    if (d < bestDistance) {
      bestDistance = d
      best = candidate
    }
  }
  return best
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, i) => i)
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0] as number
    row[0] = i
    for (let j = 1; j <= b.length; j++) {
      const above = row[j] as number
      const cost = a[i - 1] === b[j - 1] ? 0 : 1
      row[j] = Math.min(above + 1, (row[j - 1] as number) + 1, diagonal + cost)
      diagonal = above
    }
  }
  return row[b.length] as number
}
