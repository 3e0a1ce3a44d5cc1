// The engine inside the app's worker, with the tiny test models (fixtures/tiny):
// its logits equal the native CLI's within 1e-4, and the page loads a model and
// streams a generation. The fixtures are served from the app's own origin under
// /test-fixtures/, so the privacy check (nothing leaves the origin) still holds.
import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';

import { appSession, offOrigin, record, ROOT } from './browser.mjs';

const FIXTURES = path.join(ROOT, 'fixtures/tiny');
const CLI = path.join(ROOT, 'target/debug/classtune');
const TINY = 'tiny-llama';
// The bound for browser vs native logits.
const NATIVE_TOLERANCE = 1e-4;
// SwiftShader compiles every kernel on the CPU before the first dispatch.
const MODEL_MS = 300_000;

/** The native CLI (built on first use; scripts/test.sh has built it already). */
function classtune(...args) {
  if (!existsSync(CLI)) {
    execFileSync('cargo', ['build', '--bin', 'classtune'], { cwd: ROOT, stdio: 'inherit' });
  }
  return execFileSync(CLI, args, { cwd: ROOT, maxBuffer: 256 << 20, encoding: 'utf8' });
}

const reference = JSON.parse(readFileSync(path.join(FIXTURES, `${TINY}.ref.json`), 'utf8'));

const app = appSession({ '/test-fixtures/': FIXTURES });

/** A page of the app with its GPU report shown, and its request log. */
async function openApp() {
  const context = await app.browser.newContext();
  const page = await context.newPage();
  const log = record(context, page);
  await page.goto(`${app.server.origin}/`);
  await page.getByTestId('adapter-report').waitFor({ timeout: 90_000 });
  return { context, page, log };
}

describe('tiny model in the app worker', () => {
  test('logits in the browser equal the native CLI within 1e-4', async (t) => {
    const prose = reference.sequences.find((s) => s.name === 'prose');
    assert.equal(prose.ids.length, 160);
    const native = JSON.parse(classtune('logits', '--model', `fixtures/tiny/${TINY}.gguf`, '--ids', prose.ids.join(',')));
    assert.deepEqual(native.ids, prose.ids);

    const { context, page, log } = await openApp();
    // The app's own worker script, driven with the test-only `logits` request.
    const reply = await page.evaluate(
      ({ ids, modelPath, timeout }) =>
        new Promise((resolve, reject) => {
          const worker = new Worker('./worker_loader.js', { name: 'classtune-logits-test' });
          const timer = setTimeout(() => reject(new Error('no logits from the worker in time')), timeout);
          worker.onerror = (e) => reject(new Error(`worker error: ${e.message}`));
          worker.onmessage = (event) => {
            const message = JSON.parse(event.data);
            if (message.type === 'ready') {
              worker.postMessage(JSON.stringify({ type: 'logits', source: { kind: 'url', path: modelPath }, ids }));
            } else if (message.type === 'logits' || message.type === 'error') {
              clearTimeout(timer);
              worker.terminate();
              resolve(message);
            }
          };
        }),
      { ids: prose.ids, modelPath: `test-fixtures/${TINY}.gguf`, timeout: MODEL_MS },
    );
    assert.equal(reply.type, 'logits', `worker replied ${JSON.stringify(reply).slice(0, 500)}`);
    assert.equal(reply.vocab, native.vocab);
    assert.equal(reply.logits.length, prose.ids.length * native.vocab);
    let worst = 0;
    let where = null;
    native.logits.forEach((row, p) => {
      assert.equal(row.length, native.vocab);
      row.forEach((value, v) => {
        const diff = Math.abs(value - reply.logits[p * native.vocab + v]);
        if (!(diff <= worst)) {
          worst = diff;
          where = { position: p, token: v, native: value, browser: reply.logits[p * native.vocab + v] };
        }
      });
    });
    const summary = `${TINY}: ${prose.ids.length} positions x ${native.vocab}, max |browser - native| ${worst.toExponential(2)}`;
    t.diagnostic(summary);
    console.log(summary);
    assert.ok(worst <= NATIVE_TOLERANCE, `${summary} at ${JSON.stringify(where)}`);

    assert.deepEqual(offOrigin(log.requests, app.server.origin), [], 'requests that left the origin');
    assert.deepEqual(log.errors, [], 'errors on the page');
    await context.close();
  });

  test('the page loads a model and streams its generation, as the native CLI generates it', async (t) => {
    const prompt = reference.greedy.prompt_text;
    const maxTokens = 8;
    // Greedy, plain text (no chat template): the CLI's completion on stdout, plus a newline.
    const native = classtune(
      'generate', '--model', `fixtures/tiny/${TINY}.gguf`, '--prompt', prompt,
      '--max-tokens', String(maxTokens), '--temperature', '0',
    ).replace(/\n$/, '');

    const { context, page, log } = await openApp();
    await page.getByTestId('model-path').fill(`test-fixtures/${TINY}.gguf`);
    await page.getByTestId('load-model').click();
    await page.getByTestId('model-report').waitFor({ timeout: MODEL_MS });
    const report = await page.getByTestId('model-report').innerText();
    t.diagnostic(`model: ${report}`);
    assert.match(report, /llama/);

    await page.getByTestId('prompt').fill(prompt);
    await page.getByTestId('max-tokens').fill(String(maxTokens));
    await page.getByTestId('chat').uncheck();
    // Count the output's updates: tokens arrive one message at a time.
    await page.evaluate(() => {
      const output = document.querySelector('[data-testid="output"]');
      window.__outputUpdates = 0;
      new MutationObserver(() => {
        window.__outputUpdates += 1;
      }).observe(output, { childList: true, characterData: true, subtree: true });
    });
    await page.getByTestId('generate').click();
    const stats = page.getByTestId('generation-stats');
    await stats.waitFor({ timeout: MODEL_MS });
    const statsText = await stats.innerText();
    t.diagnostic(`generation: ${statsText}`);
    assert.match(statsText, new RegExp(`^${maxTokens} tokens after a ${reference.greedy.prompt_ids.length}-token prompt`));
    assert.match(statsText, /token limit/);
    const output = await page.getByTestId('output').textContent();
    assert.equal(output, native, 'the browser generated other text than the native CLI');
    const updates = await page.evaluate(() => window.__outputUpdates);
    assert.ok(updates >= 2, `the output changed ${updates} times: expected streamed tokens`);

    assert.equal(await page.getByTestId('engine-error').count(), 0);
    assert.deepEqual(offOrigin(log.requests, app.server.origin), [], 'requests that left the origin');
    assert.deepEqual(log.errors, [], 'errors on the page');
    await context.close();
  });
});
