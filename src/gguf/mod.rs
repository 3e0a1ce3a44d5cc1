//! GGUF v3: the model file format of llama.cpp. Parsing (`read`), metadata values
//! (`value`), writing (`write`), and the tensor element types with their CPU
//! dequantization (`dequant`).

pub mod dequant;
mod read;
mod source;
mod value;
pub mod write;

pub use read::{Gguf, TensorInfo};
pub use source::TensorSource;
#[cfg(not(target_arch = "wasm32"))]
pub use source::MappedFile;
pub use value::{Value, ValueType};

/// Tensor element types we can store on the GPU and compute with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[allow(non_camel_case_types)]
pub enum GgmlType {
    F32,
    F16,
    BF16,
    Q4_0,
    Q4_1,
    Q8_0,
    Q4_K,
    Q6_K,
}

impl GgmlType {
    /// Every supported type.
    pub const ALL: [GgmlType; 8] = [
        GgmlType::F32,
        GgmlType::F16,
        GgmlType::BF16,
        GgmlType::Q4_0,
        GgmlType::Q4_1,
        GgmlType::Q8_0,
        GgmlType::Q4_K,
        GgmlType::Q6_K,
    ];

    /// The type for a GGML type id, or `None` for ids we do not support.
    pub fn from_id(id: u32) -> Option<GgmlType> {
        Some(match id {
            0 => GgmlType::F32,
            1 => GgmlType::F16,
            2 => GgmlType::Q4_0,
            3 => GgmlType::Q4_1,
            8 => GgmlType::Q8_0,
            12 => GgmlType::Q4_K,
            14 => GgmlType::Q6_K,
            30 => GgmlType::BF16,
            _ => return None,
        })
    }
    pub fn id(self) -> u32 {
        match self {
            GgmlType::F32 => 0,
            GgmlType::F16 => 1,
            GgmlType::Q4_0 => 2,
            GgmlType::Q4_1 => 3,
            GgmlType::Q8_0 => 8,
            GgmlType::Q4_K => 12,
            GgmlType::Q6_K => 14,
            GgmlType::BF16 => 30,
        }
    }
    /// Values per block.
    pub fn block_len(self) -> usize {
        match self {
            GgmlType::F32 | GgmlType::F16 | GgmlType::BF16 => 1,
            GgmlType::Q4_0 | GgmlType::Q4_1 | GgmlType::Q8_0 => 32,
            GgmlType::Q4_K | GgmlType::Q6_K => 256,
        }
    }
    /// Bytes per block.
    pub fn block_bytes(self) -> usize {
        match self {
            GgmlType::F32 => 4,
            GgmlType::F16 | GgmlType::BF16 => 2,
            GgmlType::Q4_0 => 18,
            GgmlType::Q4_1 => 20,
            GgmlType::Q8_0 => 34,
            GgmlType::Q4_K => 144,
            GgmlType::Q6_K => 210,
        }
    }
    /// Bytes of `n` values, or `None` when `n` is not a whole number of blocks.
    pub fn bytes_for(self, n: u64) -> Option<u64> {
        let block = self.block_len() as u64;
        n.is_multiple_of(block).then(|| (n / block).checked_mul(self.block_bytes() as u64)).flatten()
    }
    pub fn name(self) -> &'static str {
        match self {
            GgmlType::F32 => "F32",
            GgmlType::F16 => "F16",
            GgmlType::BF16 => "BF16",
            GgmlType::Q4_0 => "Q4_0",
            GgmlType::Q4_1 => "Q4_1",
            GgmlType::Q8_0 => "Q8_0",
            GgmlType::Q4_K => "Q4_K",
            GgmlType::Q6_K => "Q6_K",
        }
    }
}

impl std::fmt::Display for GgmlType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Errors reading or writing GGUF. Offsets are byte offsets in the file.
#[derive(Debug, thiserror::Error)]
pub enum GgufError {
    #[error("not a GGUF file: expected magic `GGUF` at byte 0, found `{}`", found.escape_ascii())]
    BadMagic { found: [u8; 4] },
    #[error("unsupported GGUF version {version} (supported: 2 and 3)")]
    UnsupportedVersion { version: u32 },
    #[error("file truncated: {what} at byte {offset} needs {needed} bytes, the file has {available}")]
    Truncated { what: String, offset: u64, needed: u64, available: u64 },
    #[error("metadata key at byte {offset} has unknown value type {type_id}")]
    UnknownValueType { offset: u64, type_id: u32 },
    #[error("arrays nested deeper than {limit} levels at byte {offset}")]
    NestedTooDeep { offset: u64, limit: u32 },
    #[error("string at byte {offset} is not valid UTF-8")]
    InvalidUtf8 { offset: u64 },
    #[error("tensor `{name}` has unknown or unsupported type id {type_id}")]
    UnknownTensorType { name: String, type_id: u32 },
    #[error("tensor `{name}` has invalid shape {dims:?}: {why}")]
    BadShape { name: String, dims: Vec<u64>, why: String },
    #[error("tensor `{name}` ends at byte {end}, past the end of the file ({file_len} bytes)")]
    TensorPastEnd { name: String, end: u64, file_len: u64 },
    #[error("tensor `{name}` data offset {offset} is not a multiple of the alignment {alignment}")]
    Misaligned { name: String, offset: u64, alignment: u64 },
    #[error("metadata key `{key}` is missing")]
    MissingKey { key: String },
    #[error("metadata key `{key}` has type {found}, expected {expected}")]
    WrongType { key: String, expected: &'static str, found: String },
    #[error("tensor `{name}` is missing")]
    MissingTensor { name: String },
    #[error("{what} count {count} at byte {offset} is implausible for a {available}-byte file")]
    ImplausibleCount { what: &'static str, count: u64, offset: u64, available: u64 },
    #[error("{what} `{name}` appears twice")]
    Duplicate { what: &'static str, name: String },
    #[error("I/O error reading the model: {0}")]
    Io(String),
}
