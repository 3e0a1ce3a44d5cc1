// Starts the page's wasm. An external module, not trunk's inline script, so the
// Content-Security-Policy needs no 'unsafe-inline' or script hashes.
import init from './classtune-app.js';

await init({ module_or_path: './classtune-app_bg.wasm' });

// Offline use: the service worker keeps the app's files (app/sw.js). Registered once the
// page runs, so it never delays it; browsers give none to a plain-http address other
// than localhost, and the app then simply needs the network.
if ('serviceWorker' in navigator) {
  navigator.serviceWorker.register('./sw.js').catch((error) => {
    console.warn(`ClassTune will need the network here: ${error.message}`);
  });
}
