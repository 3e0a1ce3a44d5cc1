//! One dataset built from the bundled sample course with the tiny model's tokenizer,
//! shared by the native test (tests/data_parity.rs) and the browser test
//! (tests/web_data.rs): both must produce exactly the same examples.

use classtune::chat::ChatTemplate;
use classtune::data::{DataOptions, Example, Pipeline, Split};
use classtune::gguf::Gguf;
use classtune::tokenizer::Tokenizer;
use sha2::{Digest, Sha256};

const MODEL: &[u8] = include_bytes!("../../fixtures/tiny/tiny-llama.gguf");
const FILES: [(&str, &[u8]); 3] = [
    ("water-cycle-notes.md", include_bytes!("../../sample-course/water-cycle-notes.md")),
    ("water-cycle-handout.pdf", include_bytes!("../../sample-course/water-cycle-handout.pdf")),
    ("water-cycle-qa.csv", include_bytes!("../../sample-course/water-cycle-qa.csv")),
];

/// What both hosts must agree on: every example (ids, masks, text, split) and the
/// summary's counts.
pub struct Built {
    pub examples: usize,
    pub files_failed: usize,
    pub digest: String,
}

pub fn build() -> Built {
    let gguf = Gguf::parse(MODEL, MODEL.len() as u64).expect("tiny model header");
    let tokenizer = Tokenizer::from_gguf(&gguf).expect("tokenizer");
    let template = ChatTemplate::from_gguf(&gguf).expect("template");
    let options = DataOptions { seq_len: 128, overlap: 16, ..DataOptions::default() };
    let mut pipeline = Pipeline::new(&tokenizer, &template, options).expect("pipeline");
    let mut examples: Vec<(Split, Example)> = Vec::new();
    for (name, bytes) in FILES {
        pipeline.add_bytes(name, bytes, &mut examples).expect("sink");
    }
    let (summary, preview) = pipeline.finish().expect("finish");
    let mut hash = Sha256::new();
    for (split, example) in &examples {
        hash.update(format!("{split:?}").as_bytes());
        hash.update(serde_json::to_vec(example).expect("example json"));
    }
    hash.update(summary.content_hash.as_bytes());
    hash.update(preview.as_bytes());
    let digest: String = hash.finalize().iter().map(|b| format!("{b:02x}")).collect();
    Built { examples: examples.len(), files_failed: summary.files_failed, digest }
}
/// Update deliberately when the pipeline or the sample course changes.
pub const EXPECTED_DIGEST: &str = "653a3b7d92eef6209ba86d126974f255df84642f4d1330ab67a4b239fd287eb7";
