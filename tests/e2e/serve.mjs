// A static file server for dist/ on 127.0.0.1 and a random free port, for the tests.
// (scripts/serve.sh uses python3's http.server; this one needs nothing but node.)
import { createServer } from 'node:http';
import { createReadStream, promises as fs } from 'node:fs';
import path from 'node:path';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.wasm': 'application/wasm',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.txt': 'text/plain; charset=utf-8',
  '.md': 'text/markdown; charset=utf-8',
  '.gguf': 'application/octet-stream',
};

/**
 * Serves `root`; resolves to { origin, hits, close() }, `hits` being the path of every
 * request that reached the server (the offline test checks none did). `mounts` maps a URL prefix (e.g.
 * '/test-fixtures/') to another folder, for files only the tests need (same origin).
 */
export async function serveDist(root, mounts = {}) {
  const base = path.resolve(root);
  await fs.access(path.join(base, 'index.html')).catch(() => {
    throw new Error(`${base}/index.html is missing: build the app first (bash scripts/test.sh does)`);
  });
  const hits = [];
  const server = createServer(async (req, res) => {
    hits.push(req.url);
    try {
      const url = new URL(req.url, 'http://localhost');
      const pathname = decodeURIComponent(url.pathname);
      const mount = Object.keys(mounts).find((prefix) => pathname.startsWith(prefix));
      const folder = mount ? path.resolve(mounts[mount]) : base;
      let file = path.join(folder, mount ? pathname.slice(mount.length) : pathname);
      if (file !== folder && !file.startsWith(folder + path.sep)) {
        res.writeHead(403).end();
        return;
      }
      let stat = await fs.stat(file).catch(() => null);
      if (stat?.isDirectory()) {
        file = path.join(file, 'index.html');
        stat = await fs.stat(file).catch(() => null);
      }
      if (!stat?.isFile()) {
        res.writeHead(404, { 'content-type': 'text/plain' }).end('not found');
        return;
      }
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] ?? 'application/octet-stream',
        'content-length': stat.size,
        'cache-control': 'no-cache',
      });
      if (req.method === 'HEAD') res.end();
      else createReadStream(file).pipe(res);
    } catch (error) {
      res.writeHead(500).end(String(error));
    }
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const { port } = server.address();
  return {
    origin: `http://127.0.0.1:${port}`,
    hits,
    close: () => new Promise((resolve) => server.close(resolve)),
  };
}
