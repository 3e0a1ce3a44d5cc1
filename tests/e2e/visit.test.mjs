// First visit and cached visit to ready-to-train with the real default model: from
// navigation to the model loaded and the sample course prepared (Train enabled). The
// first visit fetches SmolLM2 (98 MB) into OPFS; the second reads it from there and
// the app from the service worker, so it asks the server for no model. Prints both
// times (docs/benchmarks.md); SwiftShader makes the GPU part slow, so these are for
// orientation, and the test asserts only the path, not a time.
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { appSession, assertAbsent, offOrigin, record } from './browser.mjs';

const MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
const READY_MS = 480_000;

const app = appSession();

/**
 * Seconds from navigation (or reload) to the model loaded and the course ready, and
 * the parts: the page with its GPU check, the model, the course.
 */
async function readyToTrain(page, navigate) {
  const started = Date.now();
  const seconds = () => (Date.now() - started) / 1000;
  await navigate();
  await page.getByTestId('adapter-report').waitFor({ timeout: READY_MS });
  const pageReady = seconds();
  assert.equal(await page.getByTestId('model-path').inputValue(), MODEL);
  await page.getByTestId('load-model').click();
  await page.locator('[data-testid="model-report"], [data-testid="model-error"]').first().waitFor({ timeout: READY_MS });
  await assertAbsent(page, 'model-error');
  const modelReady = seconds();
  await page.getByTestId('sample-course').click();
  await page.getByTestId('course-summary').waitFor({ timeout: READY_MS });
  await page.getByTestId('course-busy').waitFor({ state: 'detached', timeout: READY_MS });
  assert.ok(await page.getByTestId('train-start').isEnabled(), 'Train is enabled');
  const total = seconds();
  return `${total.toFixed(1)} s (page ${pageReady.toFixed(1)} s, model +${(modelReady - pageReady).toFixed(1)} s, course +${(total - modelReady).toFixed(1)} s)`;
}

test('first visit and cached visit to ready-to-train (SmolLM2)', async (t) => {
  const context = await app.browser.newContext();
  const page = await context.newPage();
  const log = record(context, page);
  const first = await readyToTrain(page, () => page.goto(`${app.server.origin}/`));
  const hitsBefore = app.server.hits.length;
  const cached = await readyToTrain(page, () => page.reload());
  const modelHits = app.server.hits.slice(hitsBefore).filter((hit) => hit.endsWith('.gguf'));
  const summary = `ready to train with SmolLM2 (SwiftShader): first visit ${first}, cached visit ${cached}`;
  t.diagnostic(summary);
  console.log(summary);
  assert.deepEqual(modelHits, [], 'the cached visit reads the model from OPFS');
  assert.deepEqual(offOrigin(log.requests, app.server.origin), [], 'requests that left the origin');
  assert.deepEqual(log.errors, []);
  await context.close();
});
