//! `classtune`: the engine on the command line. Native-only: integration tests build
//! every binary, so on wasm32 (`cargo test --target wasm32-unknown-unknown --test web`)
//! this crate is empty.
#![cfg_attr(target_arch = "wasm32", no_main)]
#![cfg(not(target_arch = "wasm32"))]

mod cli;

fn main() -> std::process::ExitCode {
    cli::main()
}
