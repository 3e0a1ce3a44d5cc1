// The app in headless Chromium: the worker opens the GPU and reports it, every
// request stays on the app's origin, and browsers without WebGPU get a clear message.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';

import { DIST, launch, offOrigin, record } from './browser.mjs';
import { serveDist } from './serve.mjs';

// SwiftShader compiles shaders on the CPU; the first report can take a while.
const READY_MS = 90_000;

let server;
before(async () => {
  server = await serveDist(DIST);
});
after(async () => {
  await server?.close();
});

describe('with WebGPU', () => {
  let browser;
  before(async () => {
    browser = await launch();
  });
  after(async () => {
    await browser?.close();
  });

  test('the worker reports the adapter and no request leaves the origin', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    const log = record(context, page);
    // CSP violations are reported to the page as events; collect them too.
    await page.addInitScript(() => {
      document.addEventListener('securitypolicyviolation', (e) => {
        console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
      });
    });
    await page.goto(`${server.origin}/`);

    const report = page.getByTestId('adapter-report');
    await report.waitFor({ timeout: READY_MS });
    const adapter = await page.getByTestId('adapter').innerText();
    assert.match(adapter, /BrowserWebGpu/, `adapter description: ${adapter}`);
    // The browser's own adapter info: SwiftShader here.
    assert.match(await page.getByTestId('adapter-name').innerText(), /swiftshader/i);
    assert.match(await page.getByTestId('self-test').innerText(), /passed/);
    // The engine caps its device at the WebGPU defaults it relies on.
    assert.match(await report.innerText(), /Largest storage binding\s+128 MiB/);
    // SwiftShader is a fallback adapter: the page must say so.
    assert.equal(await page.getByTestId('software-adapter').count(), 1);
    assert.equal(await page.getByTestId('engine-error').count(), 0);

    const paths = log.requests.map((url) => new URL(url).pathname);
    for (const expected of ['/classtune-app_bg.wasm', '/worker_loader.js', '/worker_bg.wasm']) {
      assert.ok(paths.includes(expected), `expected a request for ${expected}; got ${paths.join(', ')}`);
    }
    assert.deepEqual(offOrigin(log.requests, server.origin), [], 'requests that left the origin');
    assert.deepEqual(log.errors, [], 'errors on the page');
    await context.close();
  });

  test('the page carries a Content-Security-Policy limited to its own origin', async () => {
    const context = await browser.newContext();
    const page = await context.newPage();
    await page.goto(`${server.origin}/`);
    const csp = await page.locator('meta[http-equiv="Content-Security-Policy"]').getAttribute('content');
    const directives = Object.fromEntries(
      csp.split(';').map((d) => d.trim().split(/\s+/)).filter((d) => d[0]).map(([name, ...v]) => [name, v]),
    );
    assert.deepEqual(directives['default-src'], ["'self'"]);
    assert.deepEqual(directives['connect-src'], ["'self'"]);
    assert.deepEqual(directives['script-src'], ["'self'", "'wasm-unsafe-eval'"]);
    // Every other source list names only this origin (or local data:/blob: images).
    for (const [name, values] of Object.entries(directives)) {
      for (const value of values) {
        assert.ok(["'self'", "'none'", "'wasm-unsafe-eval'", 'data:', 'blob:'].includes(value), `${name} allows ${value}`);
      }
    }
    await context.close();
  });
});

describe('without WebGPU', () => {
  test('a browser without navigator.gpu is told which browser or flag it needs', async () => {
    const browser = await launch();
    try {
      const context = await browser.newContext();
      await context.addInitScript(() => {
        delete Navigator.prototype.gpu;
      });
      const page = await context.newPage();
      await page.goto(`${server.origin}/`);
      const message = page.getByTestId('no-webgpu');
      await message.waitFor({ timeout: 30_000 });
      const text = await message.innerText();
      assert.match(text, /Chrome/);
      assert.match(text, /--enable-unsafe-webgpu/);
    } finally {
      await browser.close();
    }
  });

  test('a browser whose WebGPU offers no adapter names the flag', async (t) => {
    // Without --enable-unsafe-webgpu, headless Chromium here offers no adapter (or
    // no navigator.gpu at all); either way the page must explain.
    const browser = await launch({ webgpu: false });
    try {
      const page = await browser.newPage();
      await page.goto(`${server.origin}/`);
      const message = page.locator('[data-testid="no-adapter"], [data-testid="no-webgpu"], [data-testid="adapter-report"]');
      await message.first().waitFor({ timeout: READY_MS });
      const testid = await message.first().getAttribute('data-testid');
      t.diagnostic(`without the WebGPU flags the page shows ${testid}`);
      if (testid === 'adapter-report') {
        // This Chromium build enables WebGPU by default: nothing to explain.
        return;
      }
      assert.match(await message.first().innerText(), /--enable-unsafe-webgpu/);
    } finally {
      await browser.close();
    }
  });
});
