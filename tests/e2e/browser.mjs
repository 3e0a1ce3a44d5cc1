// Debian's Chromium through playwright-core, with software WebGPU (SwiftShader) and
// nothing that phones home on its own.
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before } from 'node:test';
import { fileURLToPath } from 'node:url';

import { chromium } from 'playwright-core';

import { serveDist } from './serve.mjs';

/** The repository's root. */
export const ROOT = path.join(path.dirname(fileURLToPath(import.meta.url)), '../..');

/** The built app: dist/, or CLASSTUNE_DIST. */
export const DIST = process.env.CLASSTUNE_DIST ?? path.join(ROOT, 'dist');

export const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';

export const WEBGPU_FLAGS = [
  '--enable-unsafe-webgpu',
  '--enable-features=Vulkan',
  '--use-webgpu-adapter=swiftshader',
];

export const QUIET_FLAGS = [
  '--no-sandbox',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];

/**
 * Launches headless Chromium; `webgpu: false` leaves WebGPU's flags out. Chromium keeps
 * a context's storage (the model in the private file system: about 100 MB) in scoped
 * directories under TMPDIR and leaves them behind, so each browser gets a TMPDIR of its
 * own, removed when it closes.
 */
export async function launch({ webgpu = true } = {}) {
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'classtune-e2e-'));
  const browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...(webgpu ? WEBGPU_FLAGS : []), ...QUIET_FLAGS],
    env: { ...process.env, TMPDIR: tmp },
  });
  browser.on('disconnected', () => rmSync(tmp, { recursive: true, force: true }));
  return browser;
}

/**
 * Records every request of a browser context (page, workers, service workers) and
 * every page error, console error and CSP violation report.
 */
export function record(context, page) {
  const log = { requests: [], errors: [] };
  context.on('request', (request) => log.requests.push(request.url()));
  page.on('pageerror', (error) => log.errors.push(`pageerror: ${error.message}`));
  page.on('console', (message) => {
    if (message.type() === 'error') log.errors.push(`console: ${message.text()}`);
  });
  page.on('worker', (worker) => {
    worker.on('console', (message) => {
      if (message.type() === 'error') log.errors.push(`worker console: ${message.text()}`);
    });
  });
  return log;
}

/** The recorded URLs that are neither on `origin` nor local-only (data:, blob:). */
export function offOrigin(urls, origin) {
  return urls.filter((url) => {
    const { protocol, origin: from } = new URL(url);
    return from !== origin && protocol !== 'data:' && protocol !== 'blob:';
  });
}

/**
 * Fails with the element's text when `testid` is on the page. (Reading the text only
 * then matters: Playwright waits its 30 s default for an element that is not there.)
 */
export async function assertAbsent(page, testid) {
  const element = page.getByTestId(testid);
  if ((await element.count()) > 0) {
    throw new Error(`${testid}: ${await element.first().textContent()}`);
  }
}

/** Clicks the export button of `format` and returns the downloaded file's name and bytes. */
export async function download(page, format) {
  const started = page.waitForEvent('download', { timeout: 120_000 });
  await page.getByTestId(`export-${format}`).click();
  const file = await started;
  const bytes = readFileSync(await file.path());
  await page.getByTestId(`download-${format}`).waitFor();
  return { name: file.suggestedFilename(), bytes };
}

/**
 * For the tests of one file: serves the app (with `mounts`, as serveDist takes them)
 * and launches one Chromium before them, closes both after them. Returns the object
 * whose `server` and `browser` are set by then.
 */
export function appSession(mounts = {}) {
  const app = { server: undefined, browser: undefined };
  before(async () => {
    app.server = await serveDist(DIST, mounts);
    app.browser = await launch();
  });
  after(async () => {
    await app.browser?.close();
    await app.server?.close();
  });
  return app;
}

/**
 * The folder for screenshots of the app's steps (docs/screenshots), from
 * CLASSTUNE_SCREENSHOTS: a relative path is taken from the repository root. Unset: none
 * are taken.
 */
export const SHOTS = process.env.CLASSTUNE_SCREENSHOTS
  ? path.resolve(ROOT, process.env.CLASSTUNE_SCREENSHOTS)
  : undefined;

/**
 * When SHOTS is set, saves a screenshot of the element `selector` (a step's section) as
 * SHOTS/`name`, with `margin` pixels of the page around it; with `fromTop`, of the page's
 * column from its top down to the bottom of that element instead (the header, the device
 * check and what follows). Does nothing otherwise.
 */
export async function shoot(page, selector, name, { fromTop = false, margin = 0 } = {}) {
  if (!SHOTS) return;
  mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, name);
  if (!fromTop && !margin) {
    await page.locator(selector).screenshot({ path: file });
    return;
  }
  // Page coordinates: from the top, so that the element's box is where the page is.
  await page.evaluate(() => window.scrollTo(0, 0));
  const box = await page.locator(selector).boundingBox();
  const column = await page.locator('body').boundingBox();
  const clip = fromTop
    ? { x: column.x, y: 0, width: column.width, height: box.y + box.height + 16 }
    : { x: box.x - margin, y: box.y - margin, width: box.width + 2 * margin, height: box.height + 2 * margin };
  for (const k of Object.keys(clip)) clip[k] = Math.round(clip[k]);
  await page.screenshot({ path: file, fullPage: true, clip });
}
