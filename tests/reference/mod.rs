//! Reading the `classtune-ref-v1` fixtures made by scripts/fixtures (docs/fixtures.md).
#![allow(dead_code)] // each test binary uses a different part

use std::path::{Path, PathBuf};

use serde_json::Value;

pub struct Reference {
    pub json: Value,
    bin: Vec<u8>,
}

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

impl Reference {
    pub fn open(json_path: &Path) -> Reference {
        let text = std::fs::read_to_string(json_path).unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
        let json: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", json_path.display()));
        let bin_name = json["bin"].as_str().expect("bin");
        let bin_path = json_path.with_file_name(bin_name);
        let bin = std::fs::read(&bin_path).unwrap_or_else(|e| panic!("{}: {e}", bin_path.display()));
        Reference { json, bin }
    }

    fn slice(&self, desc: &Value, dtype: &str) -> (&[u8], Vec<usize>) {
        assert_eq!(desc["dtype"].as_str(), Some(dtype), "{desc}");
        let offset = desc["offset"].as_u64().expect("offset") as usize;
        let shape: Vec<usize> = desc["shape"].as_array().expect("shape").iter().map(|d| d.as_u64().unwrap() as usize).collect();
        let n: usize = shape.iter().product();
        (&self.bin[offset..offset + 4 * n], shape)
    }

    pub fn f32s(&self, desc: &Value) -> (Vec<f32>, Vec<usize>) {
        let (bytes, shape) = self.slice(desc, "f32");
        (bytes.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(), shape)
    }

    pub fn i32s(&self, desc: &Value) -> (Vec<i32>, Vec<usize>) {
        let (bytes, shape) = self.slice(desc, "i32");
        (bytes.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(), shape)
    }
}

pub fn ids(value: &Value) -> Vec<u32> {
    value.as_array().expect("ids").iter().map(|v| v.as_u64().expect("id") as u32).collect()
}

pub fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    for (i, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = i;
        }
    }
    best
}

/// Path of the default model, failing loudly (not skipping) when setup has not run.
pub fn default_model() -> PathBuf {
    let path = classtune::paths::default_model();
    assert!(path.exists(), "{} is missing: run `bash scripts/setup.sh` to fetch the default model", path.display());
    path
}
