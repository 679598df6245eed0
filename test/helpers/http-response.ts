/**
 * A tiny HTTP/1.1 response parser for raw-socket tests (RFC 9112). The misbehaving clients in
 * clients.ts cannot use node:http (it would not let them stall mid-head or mid-body), so they
 * read responses with this. It handles exactly what our servers send: a status line, headers,
 * and a body framed by Content-Length, chunked encoding, or the end of the connection.
 */

export interface ResponseHead {
  httpVersion: string
  status: number
  statusText: string
  /** Lower-cased names; repeated fields joined with ', ' (RFC 9110 §5.3). */
  headers: Record<string, string>
  /** Offset just past the blank line that ends the head. */
  headEnd: number
}

export interface ParsedResponse extends ResponseHead {
  body: Buffer
  /** Offset just past this response: where the next pipelined/keep-alive response starts. */
  end: number
}

const CRLF = Buffer.from('\r\n')
const HEAD_END = Buffer.from('\r\n\r\n')
const STATUS_LINE = /^HTTP\/(\d\.\d) (\d{3})(?: (.*))?$/

/** Parse a response head starting at `offset`; undefined while it is incomplete. */
export function parseHead(buf: Buffer, offset = 0): ResponseHead | undefined {
  const blank = buf.indexOf(HEAD_END, offset)
  if (blank === -1) return undefined
  const [statusLine = '', ...fieldLines] = buf.toString('latin1', offset, blank).split('\r\n')
  const match = STATUS_LINE.exec(statusLine)
  // Garbage from the server is a test failure worth seeing, not "incomplete, keep waiting".
  if (!match) throw new Error(`not an HTTP/1.x status line: ${JSON.stringify(statusLine)}`)
  const headers: Record<string, string> = {}
  for (const line of fieldLines) {
    const colon = line.indexOf(':')
    if (colon <= 0) throw new Error(`malformed header line: ${JSON.stringify(line)}`)
    const name = line.slice(0, colon).trim().toLowerCase()
    const value = line.slice(colon + 1).trim()
    headers[name] = name in headers ? `${headers[name]}, ${value}` : value
  }
  return {
    httpVersion: match[1] as string,
    status: Number(match[2]),
    statusText: match[3] ?? '',
    headers,
    headEnd: blank + HEAD_END.length,
  }
}

/**
 * Parse one complete response starting at `offset`; undefined while it is incomplete.
 * `eof`: the connection has ended, which completes a body framed by the close.
 * `noBody`: the response to a HEAD request (RFC 9112 §6.3 rule 1).
 */
export function parseResponse(
  buf: Buffer,
  offset = 0,
  { eof = false, noBody = false }: { eof?: boolean; noBody?: boolean } = {},
): ParsedResponse | undefined {
  const head = parseHead(buf, offset)
  if (!head) return undefined
  const { status, headers, headEnd } = head
  // 1xx (including 101 Switching Protocols), 204 and 304 never have a body; after a 101 the
  // bytes belong to the new protocol, so the response ends with its head.
  if (noBody || (status >= 100 && status < 200) || status === 204 || status === 304) {
    return { ...head, body: Buffer.alloc(0), end: headEnd }
  }
  if (/(?:^|,)\s*chunked\s*$/i.test(headers['transfer-encoding'] ?? '')) {
    const chunked = parseChunked(buf, headEnd)
    return chunked && { ...head, ...chunked }
  }
  const length = headers['content-length']
  if (length !== undefined) {
    const end = headEnd + Number(length)
    return buf.length >= end ? { ...head, body: buf.subarray(headEnd, end), end } : undefined
  }
  // No framing: the body runs to the end of the connection (RFC 9112 §6.3 rule 8).
  return eof ? { ...head, body: buf.subarray(headEnd), end: buf.length } : undefined
}

/**
 * Every complete response in `buf` from `offset`, in order (keep-alive or pipelined). Stops,
 * without throwing, at the first bytes that are not a complete response (a partial one, or
 * non-HTTP bytes after a 101): compare the last `end` with `buf.length` to see what is left.
 */
export function parseResponses(
  buf: Buffer,
  { eof = false, offset = 0 }: { eof?: boolean; offset?: number } = {},
): ParsedResponse[] {
  const responses: ParsedResponse[] = []
  for (;;) {
    let response: ParsedResponse | undefined
    try {
      response = parseResponse(buf, offset, { eof })
    } catch {
      return responses
    }
    if (!response || response.end === offset) return responses
    responses.push(response)
    offset = response.end
    // After a protocol switch the rest is not HTTP/1.1.
    if (response.status === 101) return responses
  }
}

/** Decode a chunked body starting at `start`; undefined until the last chunk and trailers. */
function parseChunked(buf: Buffer, start: number): { body: Buffer; end: number } | undefined {
  const parts: Buffer[] = []
  let pos = start
  for (;;) {
    const lineEnd = buf.indexOf(CRLF, pos)
    if (lineEnd === -1) return undefined
    // Chunk extensions (";name=value") are allowed and ignored (RFC 9112 §7.1.1).
    const sizeText = buf.toString('latin1', pos, lineEnd).split(';')[0]?.trim() ?? ''
    if (!/^[0-9a-f]+$/i.test(sizeText)) {
      throw new Error(`malformed chunk size line: ${JSON.stringify(sizeText)}`)
    }
    const size = Number.parseInt(sizeText, 16)
    pos = lineEnd + CRLF.length
    if (size === 0) {
      // Optional trailer fields, then an empty line.
      if (buf.length < pos + CRLF.length) return undefined
      if (buf.subarray(pos, pos + CRLF.length).equals(CRLF)) {
        return { body: Buffer.concat(parts), end: pos + CRLF.length }
      }
      const trailersEnd = buf.indexOf(HEAD_END, pos)
      if (trailersEnd === -1) return undefined
      return { body: Buffer.concat(parts), end: trailersEnd + HEAD_END.length }
    }
    if (buf.length < pos + size + CRLF.length) return undefined
    parts.push(buf.subarray(pos, pos + size))
    pos += size + CRLF.length
  }
}
