//! The engine worker: started by the page as `new Worker("./worker_loader.js")` (trunk
//! builds it with `data-type="worker" data-loader-shim`). Empty natively.

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    classtune_app::worker::start();
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {}
