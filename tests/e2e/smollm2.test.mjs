// Smoke test with the real default model (dist/models/, put there by scripts/setup.sh):
// the page loads SmolLM2-135M-Instruct Q4_1 and generates a few tokens greedily.
// SwiftShader runs WebGPU on the CPU, so this only proves the path works; it prints
// the load time and tokens/s for orientation (real speed belongs to benchmarks).
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

import { launch, offOrigin, record } from './browser.mjs';
import { serveDist } from './serve.mjs';

const DIST = process.env.CLASSTUNE_DIST ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '../../dist');
const MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
const TOKENS = 8;
// Generous: 98 MB to upload and every kernel compiled on the CPU first.
const LOAD_MS = 480_000;
const GENERATE_MS = 480_000;

let server;
let browser;
before(async () => {
  server = await serveDist(DIST);
  browser = await launch();
});
after(async () => {
  await browser?.close();
  await server?.close();
});

test('SmolLM2 loads in the page and generates greedily', async (t) => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const log = record(context, page);
  await page.goto(`${server.origin}/`);
  await page.getByTestId('adapter-report').waitFor({ timeout: 90_000 });
  assert.equal(await page.getByTestId('model-path').inputValue(), MODEL, 'the default model path');

  let started = Date.now();
  await page.getByTestId('load-model').click();
  await page.locator('[data-testid="model-report"], [data-testid="model-error"]').first().waitFor({ timeout: LOAD_MS });
  const loadSeconds = (Date.now() - started) / 1000;
  assert.equal(await page.getByTestId('model-error').count(), 0, await page.getByTestId('model-error').textContent().catch(() => ''));
  const report = await page.getByTestId('model-report').innerText();
  assert.match(report, /SmolLM2/i);
  assert.match(report, /Q4_1/);

  await page.getByTestId('prompt').fill('What is photosynthesis?');
  await page.getByTestId('max-tokens').fill(String(TOKENS));
  started = Date.now();
  await page.getByTestId('generate').click();
  const stats = page.getByTestId('generation-stats');
  await stats.waitFor({ timeout: GENERATE_MS });
  const generateSeconds = (Date.now() - started) / 1000;
  const statsText = await stats.innerText();
  const output = await page.getByTestId('output').textContent();
  const summary =
    `SmolLM2 in headless Chromium (SwiftShader): loaded in ${loadSeconds.toFixed(1)} s (${report}); ` +
    `${statsText}; ${generateSeconds.toFixed(1)} s from click to done; output ${JSON.stringify(output)}`;
  t.diagnostic(summary);
  console.log(summary);
  assert.match(statsText, new RegExp(`^${TOKENS} tokens after a \\d+-token prompt`));
  assert.ok(output.trim().length > 0, 'no text was streamed');

  assert.equal(await page.getByTestId('engine-error').count(), 0);
  const paths = log.requests.map((url) => new URL(url).pathname);
  assert.ok(paths.includes(`/${MODEL}`), `expected a request for /${MODEL}`);
  assert.deepEqual(offOrigin(log.requests, server.origin), [], 'requests that left the origin');
  assert.deepEqual(log.errors, [], 'errors on the page');
  await context.close();
});
