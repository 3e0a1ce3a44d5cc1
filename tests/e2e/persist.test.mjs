// Nothing lost, and offline, on the tiny test model (fixtures/tiny): a run interrupted
// by a reload is offered back and resumed, with the network off, ending with the same
// per-step losses as an uninterrupted run (the native `classtune train`); then a run
// whose GPU device is destroyed mid-training (the worker's `lose_device` test hook)
// recovers from its last save and ends with those same losses. The service worker
// serves the app and the engine reads the model from OPFS, so after the first visit
// no request reaches the server, and none ever leaves the origin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { appSession, offOrigin, record, ROOT, shoot } from './browser.mjs';

const FIXTURES = path.join(ROOT, 'fixtures/tiny');
const CLI = path.join(ROOT, 'target/debug/classtune');
// In the order `classtune train` reads them (sorted), so both see the same data.
const COURSE = ['water-cycle-handout.pdf', 'water-cycle-notes.md', 'water-cycle-qa.csv'].map((f) =>
  path.join(ROOT, 'sample-course', f),
);
// Kept short for SwiftShader: 10 steps of 2 examples of 64 tokens.
const SETTINGS = { 'seq-len': '64', lr: '0.005', 'max-steps': '10', batch: '2', rank: '4', alpha: '8' };
const STEPS = 10;
// The page prints losses with 3 decimals; browser (SwiftShader) vs native (lavapipe).
const TOLERANCE = 0.01;
const MODEL_MS = 300_000;
const TRAIN_MS = 480_000;

const app = appSession({ '/test-fixtures/': FIXTURES });

/** The per-step training loss of the native `classtune train` on the course. */
function nativeLosses() {
  if (!existsSync(CLI)) execFileSync('cargo', ['build', '--bin', 'classtune'], { cwd: ROOT, stdio: 'inherit' });
  const dir = mkdtempSync(path.join(os.tmpdir(), 'classtune-persist-'));
  try {
    for (const file of COURSE) writeFileSync(path.join(dir, path.basename(file)), readFileSync(file));
    execFileSync(CLI, [
      'train', '--model', path.join(FIXTURES, 'tiny-llama.gguf'), '--data', ...COURSE.map((f) => path.basename(f)),
      '--out', 'out', '--seq-len', SETTINGS['seq-len'], '--lr', SETTINGS.lr, '--max-steps', SETTINGS['max-steps'],
      '--batch', SETTINGS.batch, '--rank', SETTINGS.rank, '--alpha', SETTINGS.alpha, '--epochs', '1', '--eval-every', '0',
    ], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    return readFileSync(path.join(dir, 'out/metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** Waits until `predicate(page)` holds, polling. */
async function until(page, what, predicate, timeout) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await predicate(page)) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(250);
  }
}

const text = async (page, testid) => ((await page.getByTestId(testid).count()) ? page.getByTestId(testid).innerText() : '');
const stepsDone = async (page) => Number((await page.getByTestId('train-progress').getAttribute('value')) ?? 0);
const savedStep = async (page) => Number((await text(page, 'train-saved')).match(/at step (\d+)/)?.[1] ?? -1);
const status = (page) => text(page, 'train-status');

/** (step, loss) of every stats line the page showed since it loaded. */
async function shownLosses(page) {
  const out = [];
  for (const line of await page.evaluate(() => window.__stats)) {
    const m = line.match(/^Step (\d+) of \d+ · loss ([\d.]+)/);
    if (m) out.push([Number(m[1]), Number(m[2])]);
  }
  return out;
}

/** Every shown loss against the native run's; returns the largest difference. */
function compare(shown, native, what) {
  let worst = 0;
  for (const [step, loss] of shown) {
    assert.ok(step >= 1 && step <= native.length, `${what}: step ${step}`);
    const diff = Math.abs(loss - native[step - 1]);
    assert.ok(diff <= TOLERANCE, `${what}: step ${step} loss ${loss}, uninterrupted ${native[step - 1]}`);
    worst = Math.max(worst, diff);
  }
  return worst;
}

/** The page's engine worker (Playwright's handle on it). */
function engineWorker(page) {
  const worker = page.workers().find((w) => w.url().endsWith('/worker_loader.js'));
  assert.ok(worker, `no engine worker among ${page.workers().map((w) => w.url())}`);
  return worker;
}

test('a run survives a reload offline and a lost GPU, and ends as an uninterrupted one', async (t) => {
  const native = nativeLosses();
  assert.equal(native.length, STEPS);
  const context = await app.browser.newContext({ viewport: { width: 1280, height: 800 } });
  const page = await context.newPage();
  const log = record(context, page);
  await page.addInitScript(() => {
    // Every step's stats line, as the page shows it (again after each load).
    window.__stats = [];
    new MutationObserver(() => {
      const stats = document.querySelector('[data-testid="train-stats"]');
      if (stats && stats.textContent !== window.__stats.at(-1)) window.__stats.push(stats.textContent);
    }).observe(document, { childList: true, characterData: true, subtree: true });
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });

  // First visit: the service worker installs, the model is fetched into OPFS.
  let started = Date.now();
  await page.goto(`${app.server.origin}/`);
  await page.getByTestId('adapter-report').waitFor({ timeout: 90_000 });
  await page.evaluate(() => navigator.serviceWorker.ready.then(() => true));
  await page.getByTestId('model-path').fill('test-fixtures/tiny-llama.gguf');
  await page.getByTestId('load-model').click();
  await page.getByTestId('model-report').waitFor({ timeout: MODEL_MS });
  assert.equal(await page.getByTestId('saved-run').count(), 0, 'nothing saved yet, nothing offered');
  await page.getByText('Advanced settings').click();
  for (const [testid, value] of Object.entries(SETTINGS)) {
    await page.getByTestId(testid).fill(value);
    await page.getByTestId(testid).press('Tab');
  }
  const files = COURSE.map((file) => ({ name: path.basename(file), mimeType: 'application/octet-stream', buffer: readFileSync(file) }));
  await page.getByTestId('course-files').setInputFiles(files);
  await until(page, 'the course report', async (p) => (await p.getByTestId('course-busy').count()) === 0 && (await p.getByTestId('course-summary').count()) > 0, 60_000);

  // Train until a save exists and a few steps more are done, then lose the tab.
  await page.getByTestId('train-start').click();
  await until(page, 'an autosave and 3 steps', async (p) => (await savedStep(p)) >= 1 && (await stepsDone(p)) >= 3, TRAIN_MS);
  const before = await shownLosses(page);
  t.diagnostic(`first visit: ${before.length} steps shown, saved at step ${await savedStep(page)}, ${((Date.now() - started) / 1000).toFixed(0)} s`);

  // Offline from here: the app comes from the service worker, the model from OPFS.
  await context.setOffline(true);
  const hitsOnline = app.server.hits.length;
  started = Date.now();
  await page.reload();
  await page.getByTestId('adapter-report').waitFor({ timeout: 90_000 });
  const offer = page.getByTestId('saved-run-offer');
  await offer.waitFor({ timeout: 60_000 });
  const [, savedAt, total] = (await offer.innerText()).match(/^Saved run: step (\d+) of (\d+), .+\./) ?? [];
  assert.equal(Number(total), STEPS, await offer.innerText());
  assert.ok(Number(savedAt) >= 1, await offer.innerText());
  await shoot(page, '#saved-run', 'saved-run.png', { fromTop: true });
  await page.getByTestId('saved-resume').click();
  await until(page, 'the resumed run to end', async (p) => /^Done/.test(await status(p)), TRAIN_MS);
  const resumed = await shownLosses(page);
  assert.ok(resumed.length > 0 && resumed[0][0] === Number(savedAt) + 1, `resumed at step ${resumed[0]?.[0]}, saved ${savedAt}`);
  assert.equal(resumed.at(-1)[0], STEPS);
  const points = ((await page.getByTestId('train-line').getAttribute('points')) ?? '').split(' ').filter(Boolean);
  assert.equal(points.length, STEPS, 'the chart holds the steps from before the reload too');
  const worstResume = compare([...before, ...resumed], native, 'reload and resume');
  t.diagnostic(
    `offline reload and resume from step ${savedAt}: ${((Date.now() - started) / 1000).toFixed(0)} s, ` +
      `max |diff| to the uninterrupted run ${worstResume.toFixed(4)}`,
  );
  assert.equal(await page.getByTestId('model-name').count(), 1, 'the model came back (from OPFS)');

  // A new run loses its GPU device after a save; it goes on from there.
  started = Date.now();
  await page.evaluate(() => {
    window.__stats = [];
  });
  await page.getByTestId('train-start').click();
  await until(page, 'a new save and 3 steps', async (p) => (await savedStep(p)) >= 1 && (await stepsDone(p)) >= 3, TRAIN_MS);
  await engineWorker(page).evaluate(() => self.onmessage(new MessageEvent('message', { data: '{"type":"lose_device"}' })));
  const notice = page.getByTestId('device-lost');
  await notice.waitFor({ timeout: 60_000 });
  const lostAt = Number((await notice.innerText()).match(/save at step (\d+)/)?.[1] ?? -1);
  assert.ok(lostAt >= 1, await notice.innerText());
  await until(page, 'the recovered run to end', async (p) => /^Done/.test(await status(p)), TRAIN_MS);
  const recovered = await shownLosses(page);
  assert.equal(recovered.at(-1)[0], STEPS);
  const worstLost = compare(recovered, native, 'device loss');
  t.diagnostic(
    `device lost after step ${lostAt}, recovered and done in ${((Date.now() - started) / 1000).toFixed(0)} s; ` +
      `max |diff| ${worstLost.toFixed(4)}; notice: ${await notice.innerText()}`,
  );

  // A finished run is offered too, and brings its adapter back; discarding deletes it.
  await page.reload();
  await offer.waitFor({ timeout: 90_000 });
  assert.match(await offer.innerText(), new RegExp(`^Saved run: step ${STEPS} of ${STEPS} \\(finished\\)`));
  await page.getByTestId('saved-resume').click();
  await until(page, 'the finished run back', async (p) => (await status(p)).startsWith(`Done: ${STEPS} steps`), MODEL_MS);
  assert.ok(await page.getByTestId('export-peft').isEnabled(), 'the saved adapter can be exported');
  await page.reload();
  await offer.waitFor({ timeout: 90_000 });
  await page.getByTestId('saved-discard').click();
  await offer.waitFor({ state: 'detached', timeout: 30_000 });
  const runLeft = await page.evaluate(async () => {
    const root = await navigator.storage.getDirectory();
    return root.getDirectoryHandle('run').then(() => true, () => false);
  });
  assert.equal(runLeft, false, 'the discarded run is gone from OPFS');

  // Offline, nothing reached the server (but the browser's own update check of the
  // service worker script, which Playwright's offline mode lets through and which a
  // real network outage only makes fail); nothing ever left the origin.
  const offlineHits = app.server.hits.slice(hitsOnline).filter((hit) => hit !== '/sw.js');
  assert.deepEqual(offlineHits, [], 'requests that reached the server while offline');
  assert.deepEqual(offOrigin(log.requests, app.server.origin), [], 'requests that left the origin');
  assert.equal(await page.getByTestId('engine-error').count(), 0, await text(page, 'engine-error'));
  assert.equal(await page.getByTestId('storage-error').count(), 0, await text(page, 'storage-error'));
  assert.deepEqual(log.errors, [], 'errors on the page');
  await context.close();
});

test('a full disk says how much space is needed and what to delete', async () => {
  const context = await app.browser.newContext();
  const page = await context.newPage();
  const log = record(context, page);
  // 50 kB for the whole site: neither the app's files (for offline use) nor the
  // 99 kB model fit. (Chromium enforces the override but `navigator.storage.estimate()`
  // still reports the real quota, so the "left" part of the message is not checked.)
  const cdp = await context.newCDPSession(page);
  await cdp.send('Storage.overrideQuotaForOrigin', { origin: app.server.origin, quotaSize: 50_000 });
  await page.goto(`${app.server.origin}/`);
  await page.getByTestId('adapter-report').waitFor({ timeout: 90_000 });
  await page.getByTestId('model-path').fill('test-fixtures/tiny-llama.gguf');
  await page.getByTestId('load-model').click();
  await page.getByTestId('model-report').waitFor({ timeout: MODEL_MS });
  const errors = page.getByTestId('storage-error');
  await until(page, 'both storage messages', async () => (await errors.count()) >= 2, 60_000);
  const messages = await errors.allInnerTexts();
  const model = messages.find((m) => m.includes('the model test-fixtures/tiny-llama.gguf'));
  assert.match(model ?? '', /needs about 99 kB, and this site may use only [\d.]+ [kMG]B more \([\d.]+ [kMG]B of/, messages.join('\n'));
  assert.match(model, /discard the saved run/);
  assert.doesNotMatch(model, /ClassTune keeps here/, 'the model that failed to save is not listed as kept');
  const offline = messages.find((m) => m.includes('offline use'));
  assert.match(offline ?? '', /needs about [\d.]+ MB/, messages.join('\n'));
  assert.deepEqual(offOrigin(log.requests, app.server.origin), [], 'requests that left the origin');
  await context.close();
});
