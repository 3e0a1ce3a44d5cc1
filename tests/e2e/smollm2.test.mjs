// Smoke test with the real default model (dist/models/, put there by scripts/setup.sh):
// the page loads SmolLM2-135M-Instruct Q4_1, generates a few tokens greedily, then
// trains two LoRA steps on the sample course (64-token examples, one per step) and
// checks the loss is finite and the progress shows. SwiftShader runs WebGPU on the
// CPU, so this only proves the path works; it prints the load time, tokens/s and the
// training's timings for orientation (real speed belongs to benchmarks).
import { test } from 'node:test';
import assert from 'node:assert/strict';

import { appSession, assertAbsent, offOrigin, record } from './browser.mjs';

const MODEL = 'models/SmolLM2-135M-Instruct.Q4_1.gguf';
const TOKENS = 8;
// Generous: 98 MB to upload and every kernel compiled on the CPU first.
const LOAD_MS = 480_000;
const GENERATE_MS = 480_000;
// Tiny settings: the backward kernels compile on the CPU, then two short steps.
const TRAIN_SETTINGS = { 'seq-len': '64', batch: '1', 'max-steps': '2', rank: '4', alpha: '8' };
const TRAIN_MS = 900_000;

const app = appSession();

test('SmolLM2 loads in the page, generates greedily and trains two steps', async (t) => {
  const context = await app.browser.newContext();
  const page = await context.newPage();
  const log = record(context, page);
  await page.goto(`${app.server.origin}/`);
  await page.getByTestId('adapter-report').waitFor({ timeout: 90_000 });
  assert.equal(await page.getByTestId('model-path').inputValue(), MODEL, 'the default model path');

  let started = Date.now();
  await page.getByTestId('load-model').click();
  await page.locator('[data-testid="model-report"], [data-testid="model-error"]').first().waitFor({ timeout: LOAD_MS });
  const loadSeconds = (Date.now() - started) / 1000;
  await assertAbsent(page, 'model-error');
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

  // Two training steps with the real model on the bundled sample course.
  await page.getByText('Advanced settings').click();
  for (const [testid, value] of Object.entries(TRAIN_SETTINGS)) {
    await page.getByTestId(testid).fill(value);
    await page.getByTestId(testid).press('Tab');
  }
  await page.getByTestId('sample-course').click();
  await page.getByTestId('course-summary').waitFor({ timeout: 120_000 });
  await page.getByTestId('course-busy').waitFor({ state: 'detached', timeout: 120_000 });
  assert.equal(await page.getByTestId('course-error').count(), 0);
  started = Date.now();
  await page.getByTestId('train-start').click();
  // Each change of the status, the step line and the estimate, with its time.
  const seen = [];
  let last = '';
  const end = started + TRAIN_MS;
  for (;;) {
    const now = await page.evaluate(() =>
      ['train-status', 'train-stats', 'train-eta', 'probes']
        .map((id) => document.querySelector(`[data-testid="${id}"]`)?.textContent ?? '')
        .join(' | '),
    );
    if (now !== last) {
      const line = `${((Date.now() - started) / 1000).toFixed(1)} s: ${now}`;
      seen.push(line);
      console.log(line);
      last = now;
    }
    if (/^(Done|Training stopped)/.test(now)) break;
    assert.ok(Date.now() < end, `training did not end in ${TRAIN_MS / 1000} s:\n${seen.join('\n')}`);
    await page.waitForTimeout(500);
  }
  const trainSeconds = (Date.now() - started) / 1000;
  const eta = await page.getByTestId('train-eta').innerText();
  const status = page.getByTestId('train-status');
  assert.match(await status.innerText(), /^Done: 2 steps/);
  assert.equal(await page.getByTestId('train-progress').getAttribute('value'), '2');
  const trainStats = await page.getByTestId('train-stats').innerText();
  const loss = Number(trainStats.match(/^Step 2 of 2 · loss ([\d.]+)/)?.[1]);
  assert.ok(Number.isFinite(loss) && loss > 0, `training loss: ${trainStats}`);
  const training =
    `SmolLM2 training, 2 steps of 1×64 tokens: ${eta}; ` +
    `${trainSeconds.toFixed(1)} s from click to done; ${trainStats}; ` +
    `probes: ${JSON.stringify(await page.getByTestId('probe').allInnerTexts())}`;
  t.diagnostic(training);
  console.log(training);

  assert.equal(await page.getByTestId('engine-error').count(), 0);
  const paths = log.requests.map((url) => new URL(url).pathname);
  assert.ok(paths.includes(`/${MODEL}`), `expected a request for /${MODEL}`);
  assert.deepEqual(offOrigin(log.requests, app.server.origin), [], 'requests that left the origin');
  assert.deepEqual(log.errors, [], 'errors on the page');
  await context.close();
});
