// ClassTune's service worker: the app works offline after the first visit.
//
// It keeps the app's own files (the page, both wasm binaries and their JS, the worker's
// loader, styles, icon) and the sample course in one cache named after the build, and
// answers this origin's GET requests from it first. Models (`.gguf`) are not cached
// here: the engine worker streams them into the origin private file system, where they
// are read in slices, so a model takes its disk space once (docs/app.md, "Offline").
// Requests to other origins are never touched (the CSP forbids them anyway).

// Both lines are rewritten at build time by scripts/stamp-sw.sh (a trunk post_build
// hook): the build's digest, and every file trunk wrote.
const BUILD = 'dev';
const FILES = ['index.html'];

const CACHE = `classtune-${BUILD}`;
const SAMPLE = 'sample-course/';

self.addEventListener('install', (event) => {
  event.waitUntil(install().then(() => self.skipWaiting()));
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    (async () => {
      for (const name of await caches.keys()) {
        if (name.startsWith('classtune-') && name !== CACHE) await caches.delete(name);
      }
      // The page of the first visit is served by this worker from now on, so it keeps
      // working if the network goes away before the next reload.
      await self.clients.claim();
    })(),
  );
});

self.addEventListener('fetch', (event) => {
  const { request } = event;
  const url = new URL(request.url);
  if (request.method !== 'GET' || url.origin !== self.location.origin || url.pathname.endsWith('.gguf')) return;
  event.respondWith(cacheFirst(request));
});

/** Fetches and stores the build's files, and the sample course where there is one. */
async function install() {
  const paths = ['./', ...FILES];
  const list = await fetch(`${SAMPLE}files.json`, { cache: 'no-cache' }).catch(() => null);
  if (list?.ok) {
    const names = await list.json();
    paths.push(`${SAMPLE}files.json`, ...names.map((name) => `${SAMPLE}${name}`));
  }
  const responses = await Promise.all(
    paths.map(async (path) => {
      const response = await fetch(path, { cache: 'no-cache' });
      if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
      return [path, response];
    }),
  );
  const needed = responses.reduce((sum, [, r]) => sum + Number(r.headers.get('content-length') ?? 0), 0);
  const cache = await caches.open(CACHE);
  try {
    for (const [path, response] of responses) await cache.put(path, response);
  } catch (error) {
    await caches.delete(CACHE);
    await report(error, needed);
    throw error;
  }
}

/** The stored answer, else the network's (stored for next time). */
async function cacheFirst(request) {
  const cache = await caches.open(CACHE);
  const stored = await cache.match(request, { ignoreSearch: true });
  if (stored) return stored;
  const response = await fetch(request);
  if (response.ok && response.type === 'basic') {
    const copy = response.clone();
    cache.put(request, copy).catch((error) => report(error, Number(copy.headers.get('content-length') ?? 0)));
  }
  return response;
}

/** Tells every open page that storage ran out: how much was needed, what to delete. */
async function report(error, needed) {
  if (error?.name !== 'QuotaExceededError') {
    console.warn(`ClassTune could not keep its files for offline use: ${error?.message ?? error}`);
    return;
  }
  const { usage = 0, quota = 0 } = await navigator.storage.estimate();
  const message =
    `Not enough storage on this device to keep ClassTune for offline use: it needs about ${size(needed)}, ` +
    `and this site may use only ${size(quota - usage)} more (${size(usage)} of ${size(quota)} used). ` +
    "To make room, discard the saved run, delete other sites' data in the browser's settings " +
    '(Privacy → Site data), or free disk space on this device.';
  for (const client of await self.clients.matchAll({ includeUncontrolled: true })) {
    client.postMessage({ type: 'storage', message });
  }
}

/** Bytes as kB, MB or GB, as `storage::size` writes them. */
function size(bytes) {
  if (bytes >= 1e9) return `${(bytes / 1e9).toFixed(1)} GB`;
  if (bytes >= 1e6) return `${(bytes / 1e6).toFixed(1)} MB`;
  return `${Math.ceil(bytes / 1e3)} kB`;
}
