// Starts the page's wasm. An external module, not trunk's inline script, so the
// Content-Security-Policy needs no 'unsafe-inline' or script hashes.
import init from './classtune-app.js';

await init({ module_or_path: './classtune-app_bg.wasm' });
