//! What can go wrong reading or writing adapter files. Every variant names the file,
//! tensor or key and what was expected, so a user can tell which adapter does not fit
//! which model.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("{file}: not a valid safetensors file (truncated or corrupt?): {source}")]
    Safetensors {
        file: &'static str,
        #[source]
        source: safetensors::SafeTensorError,
    },
    #[error("adapter_config.json: not valid JSON: {0}")]
    ConfigJson(#[source] serde_json::Error),
    #[error("adapter_config.json: `{key}` should be {expected}, found {found}")]
    ConfigValue { key: String, expected: &'static str, found: String },
    #[error("adapter_config.json: `{key}` = {found} is not supported: {reason}")]
    Unsupported { key: &'static str, found: String, reason: &'static str },
    #[error(
        "adapter_config.json: target module `{module}` is not one we adapt \
         (q_proj, k_proj, v_proj, o_proj, gate_proj, up_proj, down_proj)"
    )]
    UnknownTarget { module: String },
    #[error("adapter_model.safetensors: tensor `{tensor}` is {dtype}; expected F32, F16 or BF16")]
    Dtype { tensor: String, dtype: String },
    #[error("adapter_model.safetensors: unexpected tensor `{tensor}`: {reason}")]
    UnexpectedTensor { tensor: String, reason: &'static str },
    #[error("no `{tensor}` for layer {layer} {module}, a target in adapter_config.json")]
    MissingTensor { tensor: String, layer: usize, module: &'static str },
    #[error("tensor `{tensor}` is for layer {layer}, but the base model has {n_layers} layers")]
    LayerOutOfRange { tensor: String, layer: usize, n_layers: usize },
    #[error("layer {layer} {module}: lora_A has rank {a_rank} but lora_B has rank {b_rank}")]
    RankMismatch { layer: usize, module: &'static str, a_rank: usize, b_rank: usize },
    #[error("layer {layer} {module}: rank {found}, but adapter_config.json says r = {config}")]
    RankVsConfig { layer: usize, module: &'static str, found: usize, config: usize },
    #[error("layer {layer} {module}: {tensor} should be {expected:?} for the base model, found {found:?}")]
    Shape { layer: usize, module: &'static str, tensor: &'static str, expected: Vec<usize>, found: Vec<usize> },
    #[error("layer {layer} {module}: {tensor} holds {found} values, expected {expected}")]
    Length { layer: usize, module: &'static str, tensor: &'static str, expected: usize, found: usize },
    #[error("layer {layer} {module} appears more than once")]
    Duplicate { layer: usize, module: &'static str },
    #[error("layer {layer} {module} is not among the adapter's targets")]
    NotATarget { layer: usize, module: &'static str },
    #[error("{rows} Q/K rows do not split into {heads} heads of rotation pairs")]
    HeadSplit { rows: usize, heads: usize },
    #[error("LoRA alpha {alpha} must be a positive, finite number")]
    BadAlpha { alpha: f32 },
    #[error("{what}: rank {rank} must be at least 1")]
    BadRank { what: String, rank: usize },
    #[error("{file}: {source}")]
    Gguf {
        file: &'static str,
        #[source]
        source: crate::gguf::GgufError,
    },
    #[error("base model: {0}")]
    BaseModel(#[source] Box<crate::model::ModelError>),
    #[error("LoRA GGUF: metadata key `{key}` is missing")]
    GgufMissingKey { key: &'static str },
    #[error("LoRA GGUF: metadata key `{key}` should be {expected}, found {found}")]
    GgufValue { key: &'static str, expected: &'static str, found: String },
    #[error("LoRA GGUF: the adapter is for architecture `{adapter}`, the base model is `{model}`")]
    ArchMismatch { adapter: String, model: String },
    #[error("LoRA GGUF: unexpected tensor `{tensor}`: {reason}")]
    GgufUnexpectedTensor { tensor: String, reason: &'static str },
    #[error("LoRA GGUF: no tensor `{tensor}` ({reason})")]
    GgufMissingTensor { tensor: String, reason: &'static str },
    #[error("LoRA GGUF: tensor `{tensor}` has ggml dims {found:?}, expected {expected:?} for the base model")]
    GgufShape { tensor: String, expected: Vec<u64>, found: Vec<u64> },
    #[error(
        "LoRA GGUF: `{tensor}`: lora_a has rank {a_rank} (ggml dims[1]) but lora_b has rank {b_rank} (ggml dims[0])"
    )]
    GgufRankMismatch { tensor: String, a_rank: u64, b_rank: u64 },
    #[error("LoRA GGUF: `{tensor}` has rank {rank}, earlier pairs rank {expected}; one rank per adapter is supported")]
    GgufRankVaries { tensor: String, rank: u64, expected: u64 },
    #[error("merge: `{tensor}` has rows of {cols} values, not whole {ty} blocks of {block}")]
    MergeBlocks { tensor: String, cols: u64, ty: crate::gguf::GgmlType, block: usize },
    #[error("merge: tensor {index} of {count} does not exist")]
    MergeIndex { index: usize, count: usize },
    #[error("merge: `{tensor}` needs {expected} bytes of base data, got {found}")]
    MergeData { tensor: String, expected: u64, found: u64 },
    #[error("writing the merged model: {0}")]
    MergeWrite(#[source] std::io::Error),
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}
