// Debian's Chromium through playwright-core, with software WebGPU (SwiftShader) and
// nothing that phones home on its own.
import { readFileSync } from 'node:fs';

import { chromium } from 'playwright-core';

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

/** Launches headless Chromium; `webgpu: false` leaves WebGPU's flags out. */
export function launch({ webgpu = true } = {}) {
  return chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [...(webgpu ? WEBGPU_FLAGS : []), ...QUIET_FLAGS],
  });
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
