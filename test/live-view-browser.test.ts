/**
 * The live view page in a real browser: headless Debian Chromium driven by playwright-core
 * opens the page of a running guarded Fastify server on 127.0.0.1, shows its open
 * keep-alive connections, and updates within a few seconds when one closes (by the client,
 * and by a deadline). `UPDATE_SCREENSHOT=1` also rewrites docs/live-view.png.
 *
 * Needs /usr/bin/chromium (`apt-get install -y chromium`; .ci/run installs it). Without it
 * the file fails under CI and is skipped, saying why, elsewhere.
 */
import { existsSync } from 'node:fs'
import { fileURLToPath } from 'node:url'
import { type Browser, chromium, type Page } from 'playwright-core'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { getRequest, openSocket } from './helpers/clients.js'
import { startGuarded, stopApps } from './helpers/fastify-app.js'
import { parseResponse } from './helpers/http-response.js'

const CHROMIUM = '/usr/bin/chromium'
const PATH = '/_connguard'
const SCREENSHOT = fileURLToPath(new URL('../docs/live-view.png', import.meta.url))
/** A close must show on the page within this (it polls every second). */
const UPDATE_WITHIN = 5_000

const haveChromium = existsSync(CHROMIUM)
if (!haveChromium) {
  const why = `${CHROMIUM} not found: install it with \`apt-get install -y chromium\``
  if (process.env.CI) throw new Error(`live-view-browser.test.ts: ${why} (.ci/run installs it)`)
  console.warn(`SKIPPED test/live-view-browser.test.ts: ${why}`)
}

/** A keep-alive connection that made one request and now sits idle. */
async function idleClient(port: number) {
  const conn = await openSocket(port, { timeoutMs: 25_000 })
  conn.send(getRequest('/'))
  await conn.waitFor((buf) => parseResponse(buf))
  return { conn, clientPort: conn.socket.localPort as number }
}

/** The text of the live connections table / the recent closes table. */
const tableText = (page: Page, id: 'live' | 'closes' | 'reasons') =>
  page.$eval(`#${id}`, (el) => el.textContent ?? '')

describe.skipIf(!haveChromium)('live view page in headless Chromium', () => {
  let browser: Browser

  beforeAll(async () => {
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
      ],
    })
  })

  afterAll(async () => {
    await browser?.close()
  })

  afterEach(async () => {
    await stopApps()
  })

  it('shows the open connections of a running server and updates when one closes', async () => {
    const { port } = await startGuarded({
      liveView: { path: PATH },
      keepAliveTimeout: 60_000,
      // A client that connects and says nothing is cut while the page is open.
      headersTimeout: 1_500,
      sweepInterval: 50,
    })
    const a = await idleClient(port)
    const b = await idleClient(port)
    // One request in progress (GET /slow answers in 20 s): an active row.
    const busy = await openSocket(port, { timeoutMs: 25_000 })
    busy.send(getRequest('/slow?ms=20000'))

    const page = await browser.newPage({ viewport: { width: 1280, height: 520 } })
    const errors: string[] = []
    page.on('pageerror', (err) => errors.push(err.message))
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(msg.text())
    })
    const res = await page.goto(`http://127.0.0.1:${port}${PATH}`)
    expect(res?.status()).toBe(200)
    expect(await page.title()).toContain('connguard')

    // Both idle keep-alive connections are listed, with their keep-alive deadline.
    const rowOf = (clientPort: number) => `#live tr:has(td:text-is("127.0.0.1:${clientPort}"))`
    await page.waitForSelector(rowOf(a.clientPort), { timeout: UPDATE_WITHIN })
    await page.waitForSelector(rowOf(b.clientPort), { timeout: UPDATE_WITHIN })
    for (const { clientPort } of [a, b]) {
      const row = await page.$eval(rowOf(clientPort), (tr) => ({
        state: tr.getAttribute('data-state'),
        text: tr.textContent ?? '',
      }))
      expect(row.state).toBe('idle')
      expect(row.text).toContain('keep_alive_timeout')
      expect(row.text).toContain('HTTP/1.1')
    }
    await page.waitForSelector('#live tr[data-state="active"]', { timeout: UPDATE_WITHIN })
    const idleCount = Number(
      await page.$eval('#counts [data-state="idle"] .n', (el) => el.textContent),
    )
    expect(idleCount).toBeGreaterThanOrEqual(2)

    // The client closes one: within a few seconds its row is gone and it is a recent close.
    a.conn.destroy()
    const closedAt = Date.now()
    await page.waitForSelector(rowOf(a.clientPort), { state: 'detached', timeout: UPDATE_WITHIN })
    await page.waitForSelector(`#closes tr[data-reason="client_closed"]`, {
      timeout: UPDATE_WITHIN,
    })
    const updateMs = Date.now() - closedAt
    expect(await tableText(page, 'closes')).toContain(`127.0.0.1:${a.clientPort}`)
    expect(await page.$(rowOf(b.clientPort))).not.toBeNull()

    // A deadline cut shows too, with its reason, in both close tables.
    const silent = await openSocket(port, { timeoutMs: 25_000 })
    await silent.closed
    await page.waitForSelector('#closes tr[data-reason="request_headers_timeout"]', {
      timeout: UPDATE_WITHIN,
    })
    expect(await tableText(page, 'reasons')).toContain('request_headers_timeout')
    expect(errors).toEqual([])
    console.log(`live view: a client close showed on the page after ${updateMs} ms`)

    if (process.env.UPDATE_SCREENSHOT === '1') {
      await page.screenshot({ path: SCREENSHOT, fullPage: true })
      console.log(`wrote ${SCREENSHOT}`)
    }
    await page.close()
    b.conn.destroy()
    busy.destroy()
  })
})
