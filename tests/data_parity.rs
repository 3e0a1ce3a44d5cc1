//! The sample course becomes the same dataset natively as in the browser
//! (tests/web_data.rs asserts the same digest under WebAssembly in Chromium).

mod dataset_build;

#[test]
fn sample_course_dataset_is_stable() {
    let built = dataset_build::build();
    assert_eq!(built.files_failed, 0);
    assert!(built.examples > 10, "{} examples", built.examples);
    println!("digest {}", built.digest);
    assert_eq!(built.digest, dataset_build::EXPECTED_DIGEST, "the dataset changed: if intended, update EXPECTED_DIGEST");
}
