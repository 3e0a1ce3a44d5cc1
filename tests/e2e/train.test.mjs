// The teacher's whole flow in the app, on the tiny test model (fixtures/tiny): add the
// sample course (and, by drag and drop, a note with personal data), train a few dozen
// steps with a pause and resume, watch the chart and the loss fall (step by step the
// same losses as the native `classtune train` on the same files), compare base and
// adapter answers streamed side by side, export the adapter three ways and parse each
// file; then train briefly without redaction and check the memorization warning.
// Every request is recorded and none may leave the origin; long tasks on the page's
// main thread during training are measured and the worst is reported.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { inflateRawSync } from 'node:zlib';

import { appSession, download, offOrigin, record, ROOT, shoot } from './browser.mjs';

const FIXTURES = path.join(ROOT, 'fixtures/tiny');
const CLI = path.join(ROOT, 'target/debug/classtune');
// In the order `classtune train` reads the sample course (sorted), so both see the same data.
const COURSE = ['water-cycle-handout.pdf', 'water-cycle-notes.md', 'water-cycle-qa.csv'].map((f) =>
  path.join(ROOT, 'sample-course', f),
);
// Kept tiny for SwiftShader: the tiny model, 64-token examples, 24 steps of 2.
const SETTINGS = { 'seq-len': '64', lr: '0.005', 'max-steps': '24', batch: '2', rank: '4', alpha: '8' };
const STEPS = 24;
const TRIP_NOTE =
  'Field trip to the reservoir on Friday. Questions about the water cycle worksheet go to ' +
  'Ms Rivera at j.rivera@example-school.org or 0161 496 0142. Bring a raincoat: clouds are ' +
  'water vapour that has condensed, and they may rain on us.\n';
// Browser (SwiftShader) vs native (lavapipe) training loss per step, as the page
// prints it (3 decimals).
const NATIVE_TOLERANCE = 0.01;
const MODEL_MS = 300_000;
const TRAIN_MS = 480_000;

const app = appSession({ '/test-fixtures/': FIXTURES });

/**
 * The per-step training loss of the native `classtune train` with the test's settings
 * on `files` (named as the page names them: the CLI runs beside copies of them).
 */
function nativeLosses(files) {
  if (!existsSync(CLI)) {
    execFileSync('cargo', ['build', '--bin', 'classtune'], { cwd: ROOT, stdio: 'inherit' });
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'classtune-train-'));
  try {
    for (const { name, buffer } of files) writeFileSync(path.join(dir, name), buffer);
    execFileSync(CLI, [
      'train', '--model', path.join(FIXTURES, 'tiny-llama.gguf'), '--data', ...files.map((f) => f.name),
      '--out', 'out', '--seq-len', SETTINGS['seq-len'], '--lr', SETTINGS.lr, '--max-steps', SETTINGS['max-steps'],
      '--batch', SETTINGS.batch, '--rank', SETTINGS.rank, '--alpha', SETTINGS.alpha, '--epochs', '1', '--eval-every', '0',
    ], { cwd: dir, stdio: ['ignore', 'ignore', 'pipe'] });
    return readFileSync(path.join(dir, 'out/metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l).loss);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The train line's points as [x, y] (screen y grows as the loss falls). */
async function trainPoints(page) {
  const points = (await page.getByTestId('train-line').getAttribute('points')) ?? '';
  return points.split(' ').filter(Boolean).map((p) => p.split(',').map(Number));
}

/** Steps done, from the progress bar. */
async function stepsDone(page) {
  return Number((await page.getByTestId('train-progress').getAttribute('value')) ?? 0);
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

/** A safetensors file's header (JSON) and where its data starts. */
function safetensorsHeader(bytes) {
  const n = Number(bytes.readBigUInt64LE(0));
  assert.ok(n > 0 && 8 + n <= bytes.length, `safetensors header length ${n} of ${bytes.length} bytes`);
  return JSON.parse(bytes.subarray(8, 8 + n).toString('utf8'));
}

/** The entries of a zip (local headers, sizes known up front as the engine writes them). */
function unzip(bytes) {
  const entries = {};
  let at = 0;
  while (bytes.readUInt32LE(at) === 0x04034b50) {
    const method = bytes.readUInt16LE(at + 8);
    const size = bytes.readUInt32LE(at + 18);
    const nameLength = bytes.readUInt16LE(at + 26);
    const extraLength = bytes.readUInt16LE(at + 28);
    const name = bytes.subarray(at + 30, at + 30 + nameLength).toString('utf8');
    const start = at + 30 + nameLength + extraLength;
    const data = bytes.subarray(start, start + size);
    entries[name] = method === 0 ? data : inflateRawSync(data);
    at = start + size;
  }
  return entries;
}

test('a teacher trains, compares and exports an adapter, all on this device', async (t) => {
  const context = await app.browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  const log = record(context, page);
  await page.addInitScript(() => {
    window.__longTasks = [];
    // Every step's stats line, as the page shows it.
    window.__stats = [];
    new MutationObserver(() => {
      const stats = document.querySelector('[data-testid="train-stats"]');
      if (stats && stats.textContent !== window.__stats.at(-1)) window.__stats.push(stats.textContent);
    }).observe(document, { childList: true, characterData: true, subtree: true });
    new PerformanceObserver((list) => {
      for (const e of list.getEntries()) window.__longTasks.push({ start: e.startTime, duration: e.duration });
    }).observe({ type: 'longtask', buffered: true });
    document.addEventListener('securitypolicyviolation', (e) => {
      console.error(`CSP violation: ${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  await page.goto(`${app.server.origin}/`);
  await page.getByTestId('adapter-report').waitFor({ timeout: 90_000 });

  // 1. Model.
  await page.getByTestId('model-path').fill('test-fixtures/tiny-llama.gguf');
  await page.getByTestId('load-model').click();
  await page.getByTestId('model-report').waitFor({ timeout: MODEL_MS });

  // 3. (first, since the course is prepared at the training's length) Settings: the
  // Quick preset, shrunk further for SwiftShader under "Advanced".
  assert.equal(await page.getByTestId('preset').inputValue(), 'quick');
  await page.getByText('Advanced settings').click();
  for (const [testid, value] of Object.entries(SETTINGS)) {
    await page.getByTestId(testid).fill(value);
    await page.getByTestId(testid).press('Tab');
  }
  assert.equal(await page.getByTestId('settings-problem').count(), 0);

  // 2. Course material: the sample course plus a note with personal data (replaced).
  const files = [
    ...COURSE.map((file) => ({ name: path.basename(file), mimeType: 'application/octet-stream', buffer: readFileSync(file) })),
    { name: 'trip-note.txt', mimeType: 'text/plain', buffer: Buffer.from(TRIP_NOTE) },
  ];
  await page.getByTestId('course-files').setInputFiles(files.slice(0, 3));
  // The fourth file arrives by drag and drop.
  await until(page, 'the first report', async (p) => (await p.getByTestId('course-busy').count()) === 0, 60_000);
  const dropped = await page.evaluateHandle((text) => {
    const transfer = new DataTransfer();
    transfer.items.add(new File([text], 'trip-note.txt', { type: 'text/plain' }));
    return transfer;
  }, TRIP_NOTE);
  await page.locator('#course .dropzone').dispatchEvent('dragover', { dataTransfer: dropped });
  await page.locator('#course .dropzone').dispatchEvent('drop', { dataTransfer: dropped });
  await until(page, 'the dropped file', async (p) => (await p.getByTestId('file-status').count()) === 4, 60_000);
  const summary = page.getByTestId('course-summary');
  await summary.waitFor({ timeout: 60_000 });
  await until(page, 'the course report', async (p) => (await p.getByTestId('course-busy').count()) === 0, 60_000);
  t.diagnostic(`course: ${await summary.innerText()}`);
  assert.match(await summary.innerText(), /up to 64 tokens/);
  const statuses = Object.fromEntries(
    await page.getByTestId('course-file').evaluateAll((rows) =>
      rows.map((r) => [r.querySelector('th').textContent, r.querySelector('[data-testid="file-status"]').textContent]),
    ),
  );
  assert.equal(Object.keys(statuses).length, 4, `file statuses: ${JSON.stringify(statuses)}`);
  for (const name of ['water-cycle-notes.md', 'water-cycle-handout.pdf', 'trip-note.txt']) {
    assert.match(statuses[name], /^Ready/, `${name}: ${statuses[name]}`);
  }
  // The tiny model's tokenizer spends a token per byte: no Q&A pair fits in 64 tokens,
  // and the page says so instead of failing.
  assert.match(statuses['water-cycle-qa.csv'], /^Not used, \d+ notes/);
  assert.match(await page.getByTestId('course-preview').innerText(), /⟦/, 'the preview marks trained text');
  assert.match(await page.getByTestId('course-pii').innerText(), /replaced/);

  // Training, with the page's main thread watched.
  const trainStart = await page.evaluate(() => performance.now());
  const started = Date.now();
  await page.getByTestId('train-start').click();
  await until(page, 'the first steps', async (p) => (await stepsDone(p)) >= 5, TRAIN_MS);
  const early = (await trainPoints(page)).length;
  assert.match(await page.getByTestId('train-stats').innerText(), /tokens\/s .* left · GPU memory/);

  // Pause between steps, then resume where it stopped.
  await until(page, 'step 10', async (p) => (await stepsDone(p)) >= 10, TRAIN_MS);
  await page.getByTestId('train-pause').click();
  await until(page, 'the pause', async (p) => /^Paused after step/.test(await p.getByTestId('train-status').innerText()), 120_000);
  const pausedAt = await stepsDone(page);
  await page.waitForTimeout(1_000);
  assert.equal(await stepsDone(page), pausedAt, 'no step runs while paused');
  assert.ok(await page.getByTestId('export-peft').isEnabled(), 'a paused run can be exported');
  await page.getByTestId('train-resume').click();

  await until(page, 'the end of training', async (p) => /^Done/.test(await p.getByTestId('train-status').innerText()), TRAIN_MS);
  const trainSeconds = (Date.now() - started) / 1000;
  const trainEnd = await page.evaluate(() => performance.now());
  const points = await trainPoints(page);
  assert.equal(points.length, STEPS, `one chart point per step (after ${early} early on)`);
  assert.ok(early < points.length, 'the chart grew while training ran');
  const mean = (pts) => pts.reduce((s, p) => s + p[1], 0) / pts.length;
  assert.ok(mean(points.slice(-5)) > mean(points.slice(0, 5)), 'the training loss fell (lower on the chart)');
  const result = await page.getByTestId('train-result').innerText();
  const [, base, tuned] = result.match(/base model ([\d.]+) → adapter ([\d.]+)/) ?? [];
  assert.ok(Number(tuned) < Number(base), `validation loss did not fall: ${result}`);
  const valDots = await page.locator('[data-testid="loss-chart"] circle').count();
  assert.ok(valDots >= 3, `validation points on the chart: ${valDots}`);

  await shoot(page, '#course', 'course.png');
  await shoot(page, '#train', 'train.png');

  // The same losses as the native trainer: the worker runs the CLI's loop, and the
  // pause and resume in the middle changed nothing.
  const browserLosses = new Map();
  for (const line of await page.evaluate(() => window.__stats)) {
    const m = line.match(/^Step (\d+) of \d+ · loss ([\d.]+)/);
    if (m) browserLosses.set(Number(m[1]), Number(m[2]));
  }
  const native = nativeLosses(files);
  assert.equal(native.length, STEPS);
  let worstDiff = 0;
  native.forEach((loss, i) => {
    assert.ok(browserLosses.has(i + 1), `the page showed no loss for step ${i + 1}`);
    worstDiff = Math.max(worstDiff, Math.abs(browserLosses.get(i + 1) - loss));
  });
  t.diagnostic(`loss per step, browser vs native: max |diff| ${worstDiff.toFixed(4)} over ${STEPS} steps`);
  assert.ok(worstDiff <= NATIVE_TOLERANCE, `browser and native losses differ by ${worstDiff}`);

  const allLongTasks = await page.evaluate(() => window.__longTasks);
  const longTasks = allLongTasks.filter((e) => e.start >= trainStart && e.start <= trainEnd);
  const worst = Math.max(0, ...longTasks.map((e) => e.duration));
  const worstEver = Math.max(0, ...allLongTasks.map((e) => e.duration));
  const line =
    `training: ${STEPS} steps in ${trainSeconds.toFixed(1)} s (${result}); ` +
    `main-thread long tasks during training: ${longTasks.length}, worst ${worst.toFixed(0)} ms ` +
    `(whole session so far: ${allLongTasks.length}, worst ${worstEver.toFixed(0)} ms)`;
  t.diagnostic(line);
  console.log(line);

  // 4. Try it: base, then adapter, each streamed.
  await page.getByTestId('prompt').fill('What is evaporation?');
  await page.getByTestId('max-tokens').fill('12');
  await page.evaluate(() => {
    window.__adapterUpdates = 0;
    new MutationObserver(() => {
      window.__adapterUpdates += 1;
    }).observe(document.querySelector('[data-testid="output-adapter"]'), { childList: true, characterData: true, subtree: true });
  });
  await page.getByTestId('generate').click();
  await page.getByTestId('generation-stats').waitFor({ timeout: 120_000 });
  await page.getByTestId('generation-stats-adapter').waitFor({ timeout: 120_000 });
  const baseAnswer = await page.getByTestId('output').textContent();
  const adapterAnswer = await page.getByTestId('output-adapter').textContent();
  t.diagnostic(`base: ${JSON.stringify(baseAnswer)}; adapter: ${JSON.stringify(adapterAnswer)}`);
  assert.ok(adapterAnswer.length > 0, 'the adapter answered');
  const updates = await page.evaluate(() => window.__adapterUpdates);
  assert.ok(updates >= 2, `the adapter's answer changed ${updates} times: expected streamed tokens`);
  assert.equal(await page.getByTestId('generation-error-adapter').count(), 0);
  await shoot(page, '#try', 'try.png');

  // 5. Export: each file, parsed. The course's personal data was replaced: no warning.
  assert.equal(await page.getByTestId('memorize-warning').count(), 0);

  const peft = await download(page, 'peft');
  assert.match(peft.name, /-peft\.zip$/);
  const zip = unzip(peft.bytes);
  assert.deepEqual(Object.keys(zip).sort(), ['README.md', 'adapter_config.json', 'adapter_model.safetensors']);
  const config = JSON.parse(zip['adapter_config.json'].toString('utf8'));
  assert.equal(config.r, 4);
  assert.equal(config.lora_alpha, 8);
  assert.equal(config.peft_type, 'LORA');
  const tensors = safetensorsHeader(zip['adapter_model.safetensors']);
  const names = Object.keys(tensors).filter((k) => k !== '__metadata__');
  assert.equal(names.length, 2 * 7 * 2, 'A and B for 7 projections in 2 layers');
  assert.deepEqual(tensors['base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight'].shape, [4, 64]);
  assert.match(zip['README.md'].toString('utf8'), /LoRA adapter/);

  const gguf = await download(page, 'gguf-lora');
  assert.match(gguf.name, /-lora\.gguf$/);
  assert.equal(gguf.bytes.subarray(0, 4).toString('latin1'), 'GGUF');
  assert.equal(gguf.bytes.readUInt32LE(4), 3, 'GGUF version');
  assert.equal(Number(gguf.bytes.readBigUInt64LE(8)), 2 * 7 * 2, 'tensor count');
  assert.ok(gguf.bytes.includes(Buffer.from('adapter.lora.alpha')), 'the LoRA alpha key');

  const checkpoint = await download(page, 'checkpoint');
  assert.match(checkpoint.name, /-checkpoint\.safetensors$/);
  const header = safetensorsHeader(checkpoint.bytes);
  const meta = JSON.parse(header.__metadata__.classtune);
  assert.equal(meta.step, STEPS);
  assert.equal(meta.lora.rank, 4);
  assert.match(meta.base.sha256, /^[0-9a-f]{64}$/);
  assert.deepEqual(header['lora.params'].shape, header['adamw.m'].shape);
  assert.deepEqual(header['lora.params'].shape, header['adamw.v'].shape);

  // Personal data kept: switching redaction off changes nothing for the adapter
  // already trained, but a run on the unredacted material must warn before export.
  await page.getByTestId('redact').uncheck();
  await until(page, 'the course again', async (p) => /kept/.test(await p.getByTestId('course-pii').innerText()), 60_000);
  assert.equal(await page.getByTestId('memorize-warning').count(), 0, 'the trained adapter saw no personal data');
  await page.getByTestId('max-steps').fill('2');
  await page.getByTestId('max-steps').press('Tab');
  await page.getByTestId('train-start').click();
  await until(page, 'the short run', async (p) => /^Done: 2 steps/.test(await p.getByTestId('train-status').innerText()), TRAIN_MS);
  assert.match(await page.getByTestId('memorize-warning').innerText(), /memorize/);
  await shoot(page, '#export', 'export.png');

  // Starting over took the old adapter off the model (and began a new conversation):
  // the base model answers as before.
  await page.getByTestId('compare').uncheck();
  await page.getByTestId('generate').click();
  await page.getByTestId('generation-stats').waitFor({ state: 'detached' });
  await page.getByTestId('generation-stats').waitFor({ timeout: 120_000 });
  assert.equal(await page.getByTestId('output').textContent(), baseAnswer, 'the base model answered differently');

  // Every control has a label (or an accessible name) and no step's text overflows a
  // 1280-pixel-wide window.
  const unlabelled = await page.locator('input, select, textarea, button').evaluateAll((controls) =>
    controls
      .filter((c) => !(c.labels?.length || c.getAttribute('aria-label') || (c.tagName === 'BUTTON' && c.textContent.trim())))
      .map((c) => c.outerHTML.slice(0, 120)),
  );
  assert.deepEqual(unlabelled, [], 'controls without a label');
  const scrollWidth = await page.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(scrollWidth <= 1280, `the page is ${scrollWidth} px wide at 1280`);

  // Nothing left the origin; nothing went wrong on the page.
  assert.equal(await page.getByTestId('engine-error').count(), 0);
  assert.deepEqual(offOrigin(log.requests, app.server.origin), [], 'requests that left the origin');
  assert.deepEqual(log.errors, [], 'errors on the page');
  await context.close();
});
