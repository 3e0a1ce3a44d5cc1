//! The page: mounts the Leptos app (see `classtune_app::page`). Empty natively.

#[cfg(target_arch = "wasm32")]
fn main() {
    console_error_panic_hook::set_once();
    leptos::mount::mount_to_body(classtune_app::page::App);
}

#[cfg(not(target_arch = "wasm32"))]
fn main() {}
