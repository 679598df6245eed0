/**
 * A Fastify app guarded by connguard, listening on 127.0.0.1 (plain or HTTPS with the
 * fixture certificate), with the routes the Fastify integration tests use. Every app started
 * here is torn down by `stopApps()` (call it in afterEach).
 */
import { setTimeout as delay } from 'node:timers/promises'
import { type ConnguardFastifyOptions, connguard } from '@connguard/fastify'
import Fastify, { type FastifyInstance } from 'fastify'
import { type CloseWatcher, expectConsistentRecord, watchCloses } from './records.js'
import { closeServer, listen } from './server.js'
import { tlsOptions } from './tls.js'

export interface GuardedApp {
  app: FastifyInstance
  port: number
  closes: CloseWatcher
}

export interface StartOptions {
  tls?: boolean
  /** Runs after the plugin is registered and the default routes are added, before ready. */
  setup?: (app: FastifyInstance) => void
}

const apps: FastifyInstance[] = []
const watchers: CloseWatcher[] = []

/**
 * Routes (all registered after the plugin, so route config reaches its onRoute hook):
 * - `GET /`             → 'ok'
 * - `GET /hang`         → never answers
 * - `GET /slow?ms=N`    → 'slow' after N ms
 * - `GET /slow-unlimited?ms=N` → same, with `config.connguard.requestTimeout: false`
 * - `POST /upload`      → `{ bytes }` of an application/octet-stream body
 * - `POST /upload-unlimited` → same, with `config.connguard.requestTimeout: false`
 */
export function addRoutes(app: FastifyInstance): void {
  app.addContentTypeParser(
    'application/octet-stream',
    { parseAs: 'buffer' },
    (_req, body, done) => {
      done(null, body)
    },
  )
  app.get('/', async () => 'ok')
  app.get('/hang', () => new Promise<never>(() => {}))
  const slow = async (request: { query: unknown }) => {
    await delay(Number((request.query as { ms?: string }).ms ?? 0))
    return 'slow'
  }
  app.get('/slow', slow)
  app.get('/slow-unlimited', { config: { connguard: { requestTimeout: false } } }, slow)
  const upload = async (request: { body: unknown }) => ({ bytes: (request.body as Buffer).length })
  app.post('/upload', upload)
  app.post('/upload-unlimited', { config: { connguard: { requestTimeout: false } } }, upload)
}

/** Fastify (HTTPS with the fixture cert when `tls`), connguard registered with `options`, listening. */
export async function startGuarded(
  options: ConnguardFastifyOptions,
  { tls = false, setup }: StartOptions = {},
): Promise<GuardedApp> {
  const app = (tls ? Fastify({ https: tlsOptions }) : Fastify()) as unknown as FastifyInstance
  apps.push(app)
  await app.register(connguard, options)
  addRoutes(app)
  setup?.(app)
  await app.ready()
  const closes = watchCloses(app.connguard)
  watchers.push(closes)
  const port = await listen(app.server)
  return { app, port, closes }
}

/**
 * Close every app started since the last call (its connections first, then Fastify), then
 * check the invariants of every record their trackers closed (`expectConsistentRecord`).
 */
export async function stopApps(): Promise<void> {
  await Promise.all(
    apps.splice(0).map(async (app) => {
      await closeServer(app.server)
      await app.close()
    }),
  )
  for (const closes of watchers.splice(0)) {
    closes.stop()
    for (const rec of closes.records) expectConsistentRecord(rec)
  }
}
