/**
 * The portal's web pages in headless Chromium (Debian's /usr/bin/chromium, driven by
 * playwright-core): upload a file on the upload page, open the download page from the link it
 * shows, click Download — the browser follows the 302 to its region's locker and saves bytes
 * that hash to the OID. Screenshots are kept under test-output/portal-browser/.
 *
 * The browser's requests all come from 127.0.0.1, which no PID of the three-region map holds, so
 * the portal is run with trustProxy and the browser sends X-Forwarded-For: 127.3.0.9 (south).
 * Skipped when Chromium is not installed.
 */
import { describe, it, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash, randomBytes } from 'node:crypto'
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import type { AltoServer } from '../../src/overlay/alto/server.ts'
import { createPortal, type Portal } from '../../src/overlay/portal/server.ts'
import type { LockerServer } from '../../src/locker/server.ts'
import { digestHex } from '../../src/core/naming.ts'
import { ensurePackages } from '../interop/_apt.ts'
import { type Region, type Regions, startRegions } from './_regions.ts'

const CHROMIUM = '/usr/bin/chromium'
// Debian's chromium, installed when missing (we are root); skipped loudly only if that fails.
const chromiumMissing = ensurePackages([CHROMIUM], ['chromium'])
const OUT = fileURLToPath(new URL('../../test-output/portal-browser/', import.meta.url))

describe('portal pages in headless Chromium', { skip: chromiumMissing !== undefined ? `SKIPPED LOUDLY: ${chromiumMissing}` : false }, () => {
  let dir: string
  let alto: AltoServer
  const servers = {} as Record<Region, LockerServer>
  let regions: Regions | undefined
  let portal: Portal
  let browser: import('playwright-core').Browser

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'berth-portal-browser-'))
    await rm(OUT, { recursive: true, force: true })
    await mkdir(OUT, { recursive: true })
    regions = await startRegions(dir)
    alto = regions.alto
    Object.assign(servers, regions.servers)
    portal = await createPortal({
      listen: '127.0.0.1:0',
      alto: alto.url,
      replicas: 3,
      trustProxy: true,
      lockers: regions.lockers()
    })
    await portal.start()
    const { chromium } = await import('playwright-core')
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run']
    })
  })

  after(async () => {
    await browser?.close()
    await portal?.stop()
    await regions?.stop()
    if (dir !== undefined) await rm(dir, { recursive: true, force: true })
  })

  it('upload page → download URL → download page → the bytes, from south\'s locker', async (t) => {
    const data = randomBytes(256 * 1024 + 7)
    const context = await browser.newContext({ acceptDownloads: true, extraHTTPHeaders: { 'x-forwarded-for': '127.3.0.9' }, viewport: { width: 1000, height: 700 } })
    try {
      const page = await context.newPage()
      await page.goto(`${portal.url}/`)
      assert.equal(await page.title(), 'Berth portal — publish a file')
      await page.screenshot({ path: join(OUT, '1-upload-page.png') })

      await page.setInputFiles('#file', { name: 'report.bin', mimeType: 'application/octet-stream', buffer: data })
      await page.click('#send')
      await page.waitForSelector('#result:not([hidden])', { timeout: 20_000 })
      assert.equal(await page.textContent('#status'), 'Published.')
      const oid = (await page.textContent('#oid'))!
      assert.equal(digestHex(oid), createHash('sha256').update(data).digest('hex'))
      assert.equal(await page.textContent('#size'), String(data.length))
      assert.equal(await page.getAttribute('#url', 'href'), `${portal.url}/d/${oid}`)
      assert.equal(await page.textContent('#replicas'), 'west, east, south')
      await page.screenshot({ path: join(OUT, '2-uploaded.png') })

      await page.click('#page')
      await page.waitForURL(`${portal.url}/d/${oid}?page=1`)
      await page.waitForFunction(() => document.getElementById('where')?.textContent?.startsWith('Nearest locker'))
      assert.equal(await page.textContent('#where'), 'Nearest locker: south')
      assert.match((await page.textContent('h1'))!, /report\.bin/)
      await page.screenshot({ path: join(OUT, '3-download-page.png') })

      // The link leads to /d/<oid>, which redirects to south's locker with a token in the URL.
      const [download] = await Promise.all([page.waitForEvent('download', { timeout: 20_000 }), page.click('#download')])
      assert.equal(new URL(download.url()).origin, servers.south.url)
      assert.equal(await download.failure(), null)
      const saved = join(OUT, 'downloaded.bin')
      await download.saveAs(saved)
      assert.ok((await readFile(saved)).equals(data), 'the downloaded bytes are the uploaded ones')
      await page.screenshot({ path: join(OUT, '4-after-download.png') })
      t.diagnostic(`screenshots in ${OUT}`)
    } finally {
      await context.close()
    }
  })

  it('a failed upload shows its reason on the page', async () => {
    // Every locker down: the portal answers 503 and the page says why.
    const context = await browser.newContext()
    try {
      for (const s of Object.values(servers)) await s.stop()
      const page = await context.newPage()
      await page.goto(`${portal.url}/`)
      await page.setInputFiles('#file', { name: 'x.txt', mimeType: 'text/plain', buffer: Buffer.from('x') })
      await page.click('#send')
      await page.waitForSelector('#status.error', { timeout: 20_000 })
      assert.match((await page.textContent('#status'))!, /^Upload failed: no locker took the object/)
      await page.screenshot({ path: join(OUT, '5-upload-failed.png') })
    } finally {
      await context.close()
    }
  })
})
