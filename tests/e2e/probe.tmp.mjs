import { readFileSync } from 'node:fs';
import path from 'node:path';
import { launch } from './browser.mjs';
import { serveDist } from './serve.mjs';
const ROOT = '/work/main';
const server = await serveDist(path.join(ROOT, 'dist'), { '/test-fixtures/': path.join(ROOT, 'fixtures/tiny') });
const browser = await launch();
const page = await browser.newPage();
page.on('console', (m) => console.log('console:', m.text()));
await page.goto(`${server.origin}/`);
await page.getByTestId('adapter-report').waitFor({ timeout: 90000 });
await page.getByTestId('model-path').fill('test-fixtures/tiny-llama.gguf');
await page.getByTestId('load-model').click();
await page.getByTestId('model-report').waitFor({ timeout: 300000 });
await page.getByText('Advanced settings').click();
const S = JSON.parse(process.env.S ?? '{}');
for (const [k, v] of Object.entries({ 'seq-len': '64', lr: '0.005', 'max-steps': '30', batch: '2', rank: '4', alpha: '8', ...S })) {
  await page.getByTestId(k).fill(v); await page.getByTestId(k).press('Tab');
}
const files = ['water-cycle-notes.md', 'water-cycle-handout.pdf', 'water-cycle-qa.csv'].map((f) => ({ name: f, mimeType: 'x/y', buffer: readFileSync(path.join(ROOT, 'sample-course', f)) }));
await page.getByTestId('course-files').setInputFiles(files);
await page.getByTestId('course-summary').waitFor();
await page.waitForTimeout(1000);
const t0 = Date.now();
await page.getByTestId('train-start').click();
let last = '';
for (;;) {
  const s = await page.getByTestId('train-status').innerText();
  const st = await page.getByTestId('train-stats').innerText();
  const line = `${s} | ${st}`;
  if (line !== last) { console.log(((Date.now() - t0) / 1000).toFixed(1), line); last = line; }
  if (/^Done|error/.test(s)) break;
  await page.waitForTimeout(100);
}
await browser.close(); await server.close();
