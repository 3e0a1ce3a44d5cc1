// The teacher's tools around a run, on the tiny test model (fixtures/tiny): the
// software-adapter warning, a GGUF model picked from disk (read where it is, never
// fetched), the prepared examples browsed, one deleted and one edited (with the
// keyboard) and the teacher's own system prompt set before training on them, the calibrated duration shown before the first step, probe answers while
// training, the quiz of held-out questions (base, adapter, reference, validation
// losses), a multi-turn conversation per column, merged GGUF exports (F16 and Q8_0)
// parsed, an exported adapter imported back (PEFT zip and llama.cpp GGUF) answering
// exactly as the trained one, and a checkpoint taken mid-run continued to the end and
// refused once the course material changed, and the saved run brought back after a
// reload with its edited examples (its data digest still matching). No request may
// leave the origin.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import path from 'node:path';

import { appSession, assertAbsent, download, offOrigin, record, ROOT, shoot } from './browser.mjs';

const MODEL = path.join(ROOT, 'fixtures/tiny/tiny-llama.gguf');
const COURSE = ['water-cycle-handout.pdf', 'water-cycle-notes.md', 'water-cycle-qa.csv'].map((f) =>
  path.join(ROOT, 'sample-course', f),
);
const STEPS = 6;
const OWN_PROMPT = 'You help pupils of year 7 with the water cycle. Answer in two sentences.';
const SETTINGS = { 'seq-len': '64', lr: '0.005', 'max-steps': String(STEPS), batch: '2', rank: '4', alpha: '8' };
const TRAIN_MS = 300_000;

const app = appSession();

async function until(page, what, predicate, timeout) {
  const end = Date.now() + timeout;
  for (;;) {
    if (await predicate(page)) return;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await page.waitForTimeout(200);
  }
}

const text = (page, testid) => page.getByTestId(testid).innerText();
const status = (page) => text(page, 'train-status');
const stepsDone = async (page) => Number((await page.getByTestId('train-progress').getAttribute('value')) ?? 0);
const idle = (page) => until(page, 'the course report', async (p) => (await p.getByTestId('course-busy').count()) === 0, 60_000);

/** The course summary's counts: training and held-out examples, tokens. */
async function counts(page) {
  const summary = await text(page, 'course-summary');
  const [, train, held, tokens] = summary.match(/^(\d+) training examples and (\d+) held out to measure progress; (\d+) tokens/) ?? [];
  assert.ok(tokens, summary);
  return { examples: Number(train) + Number(held), tokens: Number(tokens) };
}

/** The first example on the page: its facts, tokens and text as the model sees it. */
async function firstExample(page) {
  const first = page.getByTestId('example').first();
  const facts = await first.getByTestId('example-facts').innerText();
  return { facts, tokens: Number(facts.match(/(\d+) tokens/)[1]), text: await first.getByTestId('example-text').innerText() };
}

/** Generates with both columns and returns [base, adapter] answers and prompt sizes. */
async function ask(page, prompt) {
  await page.getByTestId('prompt').fill(prompt);
  await page.getByTestId('generate').click();
  await page.getByTestId('generation-stats').waitFor({ state: 'detached', timeout: 5_000 }).catch(() => {});
  await page.getByTestId('generation-stats').waitFor({ timeout: 120_000 });
  await page.getByTestId('generation-stats-adapter').waitFor({ timeout: 120_000 });
  const promptTokens = async (id) => Number((await text(page, id)).match(/after a (\d+)-token prompt/)[1]);
  return {
    base: await page.getByTestId('output').textContent(),
    adapter: await page.getByTestId('output-adapter').textContent(),
    basePrompt: await promptTokens('generation-stats'),
    adapterPrompt: await promptTokens('generation-stats-adapter'),
  };
}

/** Starts a new conversation (if one is going on) and asks `prompt`. */
async function askAfresh(page, prompt) {
  if (await page.getByTestId('new-conversation').isEnabled()) await page.getByTestId('new-conversation').click();
  return ask(page, prompt);
}

/** Imports adapter files through the Export step's input and waits for the result. */
async function importAdapter(page, files) {
  await page.getByTestId('import-adapter').setInputFiles(files);
  await page.locator('[data-testid="imported-adapter"], [data-testid="import-error"]').first().waitFor({ timeout: 60_000 });
  await assertAbsent(page, 'import-error');
  return text(page, 'imported-adapter');
}

test('calibration, probes, quiz, conversations, model from disk, merged exports and imports', async (t) => {
  const timings = [];
  let mark = Date.now();
  const lap = (what) => {
    timings.push(`${what} ${((Date.now() - mark) / 1000).toFixed(1)} s`);
    mark = Date.now();
  };
  const context = await app.browser.newContext({ viewport: { width: 1280, height: 800 }, acceptDownloads: true });
  const page = await context.newPage();
  const log = record(context, page);
  await page.goto(`${app.server.origin}/`);
  await page.getByTestId('adapter-report').waitFor({ timeout: 90_000 });

  // The device: SwiftShader is named as the CPU, with the limits that matter.
  assert.match(
    await text(page, 'software-adapter'),
    /Your browser is running WebGPU on the CPU \(SwiftShader\); training will be slow\. Use the Quick preset\./,
  );
  const limits = await page.locator('table.limits').innerText();
  assert.match(limits, /Largest storage binding\s+\d+ MiB/);
  assert.match(limits, /Largest buffer\s+\d+ MiB/);
  lap('device check');

  // 1. A GGUF from this computer: the File goes to the worker and is read in slices.
  await page.getByTestId('model-file').setInputFiles(MODEL);
  await page.locator('[data-testid="model-report"], [data-testid="model-error"]').first().waitFor({ timeout: 120_000 });
  await assertAbsent(page, 'model-error');
  const report = await text(page, 'model-report');
  t.diagnostic(`model from disk: ${report}`);
  assert.match(report, /\(llama, [\d.]+ M parameters, \w+, context \d+\)/);
  assert.match(await text(page, 'model-memory'), /GPU memory it needs: about [\d.]+ MiB \([\d.]+ MiB weights.*KV cache for \d+ tokens/);
  assert.ok(!log.requests.some((url) => url.endsWith('.gguf')), 'the picked model was fetched over HTTP');
  lap('model from disk');

  // Settings (Quick, shrunk for SwiftShader), then the sample course.
  await page.getByText('Advanced settings').click();
  for (const [testid, value] of Object.entries(SETTINGS)) {
    await page.getByTestId(testid).fill(value);
    await page.getByTestId(testid).press('Tab');
  }
  await page.getByTestId('course-files').setInputFiles(COURSE);
  await page.getByTestId('course-summary').waitFor({ timeout: 60_000 });
  await idle(page);
  lap('course');

  // 2. The prepared examples, a page at a time, exactly as the model sees them.
  const prepared = await counts(page);
  assert.match(await text(page, 'examples-range'), new RegExp(`^Examples 1–10 of ${prepared.examples}$`));
  assert.match(await text(page, 'course-preview'), /⟦/, 'the trained spans are marked');
  await page.getByTestId('examples-next').click();
  await until(page, 'page 2', async (p) => /^Examples 11–/.test(await text(p, 'examples-range')), 10_000);
  await page.getByTestId('examples-previous').click();
  await until(page, 'page 1', async (p) => /^Examples 1–/.test(await text(p, 'examples-range')), 10_000);

  // Delete the first example: out of the counts, offered back.
  const doomed = await firstExample(page);
  await page.getByRole('button', { name: /^Delete example 1 \(water-cycle-handout\.pdf/ }).click();
  await idle(page);
  const afterDelete = await counts(page);
  assert.deepEqual(afterDelete, { examples: prepared.examples - 1, tokens: prepared.tokens - doomed.tokens });
  assert.equal(await page.getByTestId('deleted-example').count(), 1);
  const next = await firstExample(page);
  assert.notEqual(next.text, doomed.text, 'the list moved up');

  // An empty text is refused, with the reason.
  await page.getByTestId('example-edit').first().click();
  await page.getByTestId('example-field').fill('');
  await page.getByTestId('example-save').click();
  assert.match(await text(page, 'example-error'), /^The text is empty: write it, or delete the example instead\.$/);
  await page.getByTestId('example-cancel').click();

  // Edit the next one with the keyboard: Edit, the text area takes the focus, Save.
  const NEW_BODY = 'Clouds are tiny drops.';
  await page.getByRole('button', { name: /^Edit example 1 \(/ }).focus();
  await page.keyboard.press('Enter');
  await until(page, 'the editor', async (p) => p.evaluate(() => document.activeElement?.dataset.testid === 'example-field'), 5_000);
  await page.keyboard.press('Control+A');
  await page.keyboard.type(NEW_BODY);
  await page.keyboard.press('Tab');
  await page.keyboard.press('Enter');
  await idle(page);
  const edited = await firstExample(page);
  assert.ok(edited.text.endsWith(`⟦${NEW_BODY}⟧`), `the edit as the model sees it: ${edited.text}`);
  assert.match(edited.facts, /edited by you/);
  assert.deepEqual(await counts(page), { examples: afterDelete.examples, tokens: afterDelete.tokens - next.tokens + edited.tokens });
  assert.equal(await text(page, 'course-edits'), 'Your changes: 1 example(s) edited, 1 deleted.');
  lap('examples browsed, deleted and edited');

  // The system prompt: the role's is shown; the teacher's own replaces it, and the
  // saved run keeps it (checked after the reload below).
  const rolePrompt = await page.getByTestId('system-prompt').inputValue();
  assert.ok(rolePrompt.length > 20, `the role's prompt: ${rolePrompt}`);
  await page.getByTestId('system-prompt').fill(OWN_PROMPT);
  await page.getByTestId('system-prompt').press('Tab');
  await page.getByTestId('system-prompt-reset').waitFor({ timeout: 10_000 });
  await idle(page);
  await until(page, 'the own prompt', async (p) => (await p.getByTestId('system-prompt').inputValue()) === OWN_PROMPT, 30_000);

  // 3. Train: the estimate comes from a timed example before the first step.
  await page.getByTestId('train-start').click();
  // The steps shown when the estimate appears, read in the page every few ms: the tiny
  // model trains a step in milliseconds, faster than two round trips from here.
  const atEta = await page.waitForFunction(() => {
    if (!document.querySelector('[data-testid="train-eta"]')) return null;
    return { steps: Number(document.querySelector('[data-testid="train-progress"]')?.getAttribute('value') ?? 0) };
  }, null, { polling: 5, timeout: TRAIN_MS });
  const stepsAtEta = (await atEta.jsonValue()).steps;
  const eta = await text(page, 'train-eta');
  t.diagnostic(`calibration (at step ${stepsAtEta}): ${eta}`);
  assert.ok(stepsAtEta <= 1, `the estimate came after ${stepsAtEta} steps`);
  assert.match(eta, new RegExp(`^Estimate: about \\d+ min for ${STEPS} steps\\. Measured before the first step: one example of \\d+ tokens took [\\d.]+ s`));
  lap('calibration');

  // Pause mid-run and keep its checkpoint, then run to the end.
  await until(page, 'step 3', async (p) => (await stepsDone(p)) >= 3, TRAIN_MS);
  await page.getByTestId('train-pause').click();
  await until(page, 'the pause', async (p) => /^Paused after step/.test(await status(p)), 120_000);
  const pausedAt = await stepsDone(page);
  const midCheckpoint = await download(page, 'checkpoint');
  await page.getByTestId('train-resume').click();
  await until(page, 'the end of training', async (p) => /^Done/.test(await status(p)), TRAIN_MS);
  lap(`training ${STEPS} steps (paused at ${pausedAt})`);

  // 2. Probe answers appeared during the run: due every other step of 6 (none after
  // the last), the first always taken, later ones while probes cost little of the run.
  const probes = await page.getByTestId('probe').allInnerTexts();
  t.diagnostic(`probes: ${JSON.stringify(probes)}`);
  assert.ok(probes.length >= 1 && probes.length <= 2, `${probes.length} probes`);
  assert.match(probes.at(-1), /^After step 2 of 6/);
  assert.ok((await page.getByTestId('probe-answer').count()) >= 1, 'probe answers');

  // 3. The quiz: held-out questions, base vs adapter vs the material, with losses.
  await page.getByTestId('max-tokens').fill('12');
  await page.getByTestId('quiz-run').click();
  await page.locator('[data-testid="quiz-item"], [data-testid="quiz-error"]').first().waitFor({ timeout: 120_000 });
  await assertAbsent(page, 'quiz-error');
  const items = await page.getByTestId('quiz-item').count();
  assert.ok(items >= 1, 'quiz questions');
  const first = page.getByTestId('quiz-item').first();
  for (const part of ['quiz-reference', 'quiz-base', 'quiz-adapter']) {
    assert.ok((await first.getByTestId(part).innerText()).length > 0, `${part} is empty`);
  }
  const losses = await text(page, 'quiz-losses');
  t.diagnostic(`quiz: ${items} questions; ${losses}`);
  const [, baseLoss, adapterLoss] = losses.match(/base model ([\d.]+) · adapter ([\d.]+)/) ?? [];
  assert.ok(Number(adapterLoss) < Number(baseLoss), losses);
  await shoot(page, '#try .quiz', 'quiz.png', { margin: 20 });
  lap('quiz');

  // 4. A conversation per column: the second turn carries the first.
  const one = await ask(page, 'What is evaporation?');
  const two = await ask(page, 'And condensation?');
  assert.equal(await page.getByTestId('turn').count(), 1);
  assert.equal(await page.getByTestId('turn-adapter').count(), 1);
  assert.equal(await text(page, 'asking'), 'And condensation?');
  assert.ok(two.basePrompt > one.basePrompt + 10, `turn 2 prompt ${two.basePrompt} vs turn 1 ${one.basePrompt}`);
  assert.ok(two.adapterPrompt > one.adapterPrompt + 10, 'the adapter column kept its history');
  await page.getByTestId('new-conversation').click();
  assert.equal(await page.getByTestId('turn').count(), 0);
  const fresh = await ask(page, 'And condensation?');
  assert.ok(fresh.basePrompt < two.basePrompt, 'a new conversation starts without history');
  t.diagnostic(`prompt tokens: turn 1 ${one.basePrompt}, turn 2 ${two.basePrompt}, new conversation ${fresh.basePrompt}`);
  lap('conversation');

  // 6. Merged models: GGUF v3 with every tensor of the base model.
  const base = readFileSync(MODEL);
  const tensorCount = Number(base.readBigUInt64LE(8));
  for (const format of ['merged-f16', 'merged-q8']) {
    const merged = await download(page, format);
    assert.match(merged.name, /-merged-(f16|q8_0)\.gguf$/);
    assert.equal(merged.bytes.subarray(0, 4).toString('latin1'), 'GGUF');
    assert.equal(merged.bytes.readUInt32LE(4), 3, 'GGUF version');
    assert.equal(Number(merged.bytes.readBigUInt64LE(8)), tensorCount, 'tensor count');
    assert.ok(merged.bytes.includes(Buffer.from('LoRA (merged')), 'the merged name');
    t.diagnostic(`${merged.name}: ${merged.bytes.length} bytes, ${tensorCount} tensors`);
  }
  lap('merged exports');

  // Imports: the exported adapter, read back, answers exactly as the trained one.
  const trained = await askAfresh(page, 'Why does it rain?');
  const peft = await download(page, 'peft');
  const gguf = await download(page, 'gguf-lora');
  for (const file of [peft, gguf]) {
    const imported = await importAdapter(page, [{ name: file.name, mimeType: 'application/octet-stream', buffer: file.bytes }]);
    assert.match(imported, /rank 4, alpha 8/);
    const again = await askAfresh(page, 'Why does it rain?');
    assert.equal(again.adapter, trained.adapter, `${file.name} answers differently`);
    assert.equal(again.base, trained.base);
  }
  await shoot(page, '#export', 'import.png');
  lap('adapter imports');

  // The mid-run checkpoint: taken up paused at its step, then trained to the end.
  await page.getByTestId('import-checkpoint').setInputFiles({
    name: midCheckpoint.name,
    mimeType: 'application/octet-stream',
    buffer: midCheckpoint.bytes,
  });
  await page.locator('[data-testid="imported-checkpoint"], [data-testid="import-error"]').first().waitFor({ timeout: 60_000 });
  await assertAbsent(page, 'import-error');
  assert.match(await text(page, 'imported-checkpoint'), new RegExp(`at step ${pausedAt}`));
  await until(page, 'the paused run', async (p) => new RegExp(`^Paused after step ${pausedAt} of ${STEPS}`).test(await status(p)), 30_000);
  assert.equal(await page.getByTestId('imported-adapter').count(), 0, 'the checkpoint replaced the imported adapter');
  await page.getByTestId('train-resume').click();
  await until(page, 'the continued run', async (p) => new RegExp(`^Done: ${STEPS} steps`).test(await status(p)), TRAIN_MS);
  lap('checkpoint import and continue');

  // Other course material: the checkpoint is refused, with the reason.
  await page.getByRole('button', { name: 'Remove water-cycle-notes.md' }).click();
  await until(page, 'the course again', async (p) => (await p.getByTestId('course-busy').count()) === 0, 60_000);
  await page.getByTestId('import-checkpoint').setInputFiles({
    name: midCheckpoint.name,
    mimeType: 'application/octet-stream',
    buffer: midCheckpoint.bytes,
  });
  await page.getByTestId('import-error').waitFor({ timeout: 60_000 });
  const refusal = await text(page, 'import-error');
  t.diagnostic(`refused: ${refusal}`);
  assert.match(refusal, /cannot continue here: .*training data differs/);

  // The first run, saved with its edited examples, comes back after a reload: its
  // checkpoint's data digest matches the course as edited.
  await page.reload();
  await page.getByTestId('saved-run-offer').waitFor({ timeout: 90_000 });
  await page.getByTestId('saved-resume').click();
  await until(page, 'the saved run back', async (p) => (await status(p)).startsWith(`Done: ${STEPS} steps`), 120_000);
  await assertAbsent(page, 'storage-error');
  assert.equal(await text(page, 'course-edits'), 'Your changes: 1 example(s) edited, 1 deleted.');
  assert.ok((await firstExample(page)).text.endsWith(`⟦${NEW_BODY}⟧`));
  assert.equal(await page.getByTestId('system-prompt').inputValue(), OWN_PROMPT, 'the saved run keeps its system prompt');
  lap('saved run with its edits');

  await assertAbsent(page, 'engine-error');
  assert.deepEqual(offOrigin(log.requests, app.server.origin), [], 'requests that left the origin');
  assert.deepEqual(log.errors, [], 'errors on the page');
  const line = `features on the tiny model: ${timings.join('; ')}`;
  t.diagnostic(line);
  console.log(line);
  await context.close();
});
