/**
 * The throwaway self-signed test certificate (CN/SAN localhost, SAN IP 127.0.0.1) from
 * test/fixtures/. See test/fixtures/README.md for how it was made.
 */
import { readFileSync } from 'node:fs'
import type { ConnectionOptions } from 'node:tls'

const fixture = (name: string): Buffer =>
  readFileSync(new URL(`../fixtures/${name}`, import.meta.url))

const key = fixture('key.pem')
const cert = fixture('cert.pem')

/** Server side: pass to `https.createServer`, `http2.createSecureServer`, Fastify's `https`. */
export const tlsOptions: { key: Buffer; cert: Buffer } = { key, cert }

/**
 * Client side: trust exactly the fixture certificate instead of turning verification off,
 * so a test that breaks the server's TLS setup fails loudly rather than passing.
 * `servername` is needed because clients connect to 127.0.0.1 and SNI takes no IP.
 */
export const clientTlsOptions: ConnectionOptions = { ca: cert, servername: 'localhost' }
