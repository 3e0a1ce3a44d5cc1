//! The data pipeline under WebAssembly in headless Chromium gives exactly the dataset
//! it gives natively (tests/data_parity.rs checks the same digest there).
#![cfg(target_arch = "wasm32")]

mod dataset_build;

use wasm_bindgen_test::*;

wasm_bindgen_test_configure!(run_in_browser);

#[wasm_bindgen_test]
fn sample_course_dataset_matches_native() {
    let built = dataset_build::build();
    assert_eq!(built.files_failed, 0);
    assert!(built.examples > 10, "{} examples", built.examples);
    assert_eq!(built.digest, dataset_build::EXPECTED_DIGEST);
}
