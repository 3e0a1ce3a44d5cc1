//! llama.cpp LoRA adapters in GGUF: what `llama_adapter_lora_init` loads and
//! `convert_lora_to_gguf.py` writes.
//!
//! - Metadata: `general.architecture` (the base's), `general.type` = "adapter",
//!   `adapter.type` = "lora", `adapter.lora.alpha` (f32). llama.cpp scales `B A x` by
//!   `alpha / rank` with the rank read from `lora_b`, and has no rsLoRA flag, so rsLoRA's
//!   `alpha / sqrt(rank)` is written as alpha · sqrt(rank). An alpha of 0 (or none) means
//!   a scale of 1 to llama.cpp; we write a positive alpha always and require one on import.
//! - Tensors `blk.{i}.{attn_q|…|ffn_down}.weight.lora_a`, ggml dims [in, rank] (row-major
//!   [rank, in], our `A`), and `.lora_b`, ggml dims [rank, out] (row-major [out, rank],
//!   our `B`). They live in GGUF space like the base weights (llama Q/K rows permuted),
//!   which is where our adapters live, so nothing moves. Written as F32, read from any
//!   type we can dequantize.
//! - `classtune.lora.{alpha,rslora,dropout}` keep what folding loses, so our own files
//!   round-trip exactly; llama.cpp ignores them, and we ignore them when they no longer
//!   fold to `adapter.lora.alpha`.

use std::collections::BTreeMap;

use super::{Adapter, AdapterError, Factor, LoraConfig, LoraPair, Naming, Target};
use crate::gguf::write::GgufWriter;
use crate::gguf::{dequant, GgmlType, Gguf, GgufError, TensorInfo, Value};
use crate::model::Config;

const FILE: &str = "LoRA GGUF";
const GENERAL_TYPE: &str = "general.type";
const ARCHITECTURE: &str = "general.architecture";
const ADAPTER_TYPE: &str = "adapter.type";
const ALPHA: &str = "adapter.lora.alpha";
const BASE_NAME: &str = "general.base_model.0.name";
const OUR_ALPHA: &str = "classtune.lora.alpha";
const OUR_RSLORA: &str = "classtune.lora.rslora";
const OUR_DROPOUT: &str = "classtune.lora.dropout";
/// gguf-py's `LlamaFileType.ALL_F32`.
const FILE_TYPE_ALL_F32: u32 = 0;

/// The adapter tensor of one factor of one projection, e.g. `blk.3.attn_q.weight.lora_a`.
pub fn gguf_lora_name(layer: usize, target: Target, factor: Factor) -> String {
    let suffix = match factor {
        Factor::A => "lora_a",
        Factor::B => "lora_b",
    };
    format!("blk.{layer}.{}.weight.{suffix}", target.gguf_name())
}

/// `adapter.lora.alpha` for `config`: llama.cpp's scale is `alpha / rank`, so rsLoRA's
/// `alpha / sqrt(rank)` becomes alpha · sqrt(rank).
pub fn folded_alpha(config: &LoraConfig) -> f32 {
    match config.rslora {
        true => (f64::from(config.alpha) * (config.rank as f64).sqrt()) as f32,
        false => config.alpha,
    }
}

/// The adapter as a llama.cpp LoRA GGUF for the base model whose header is `base`.
pub fn to_gguf_lora(adapter: &Adapter, base: &Gguf) -> Result<Vec<u8>, AdapterError> {
    let model = Config::from_gguf(base).map_err(|e| AdapterError::BaseModel(Box::new(e)))?;
    adapter.check(&model, Naming::Gguf)?;
    let config = &adapter.config;
    let name = match adapter.base_name.is_empty() {
        true => "LoRA adapter".to_string(),
        false => format!("{} LoRA", adapter.base_name),
    };
    let mut w = GgufWriter::new();
    w.set(ARCHITECTURE, Value::String(model.arch.name().into()))
        .set(GENERAL_TYPE, Value::String("adapter".into()))
        .set("general.name", Value::String(name))
        .set("general.base_model.count", Value::U32(1))
        .set(BASE_NAME, Value::String(adapter.base_name.clone()))
        .set("general.file_type", Value::U32(FILE_TYPE_ALL_F32))
        .set("general.quantization_version", Value::U32(2))
        .set(ADAPTER_TYPE, Value::String("lora".into()))
        .set(ALPHA, Value::F32(folded_alpha(config)))
        .set(OUR_ALPHA, Value::F32(config.alpha))
        .set(OUR_RSLORA, Value::Bool(config.rslora))
        .set(OUR_DROPOUT, Value::F32(config.dropout));
    let rank = config.rank as u64;
    let written = |source| AdapterError::Gguf { file: FILE, source };
    for p in &adapter.pairs {
        let (d_in, d_out) = (p.d_in as u64, p.d_out as u64);
        w.tensor(&gguf_lora_name(p.layer, p.target, Factor::A), &[d_in, rank], GgmlType::F32, le_bytes(&p.a))
            .map_err(written)?;
        w.tensor(&gguf_lora_name(p.layer, p.target, Factor::B), &[rank, d_out], GgmlType::F32, le_bytes(&p.b))
            .map_err(written)?;
    }
    Ok(w.to_bytes())
}

/// Reads a llama.cpp LoRA GGUF (ours or `convert_lora_to_gguf.py`'s) made for the base
/// model `model`, checking what llama.cpp checks and what our [`Adapter`] needs: one
/// rank, the same projections in every layer.
pub fn from_gguf_lora(bytes: &[u8], model: &Config) -> Result<Adapter, AdapterError> {
    let file = Gguf::parse(bytes, bytes.len() as u64).map_err(|source| AdapterError::Gguf { file: FILE, source })?;
    expect_str(&file, GENERAL_TYPE, "adapter", "\"adapter\"")?;
    let arch = get_str(&file, ARCHITECTURE)?;
    if arch != model.arch.name() {
        return Err(AdapterError::ArchMismatch { adapter: arch.to_string(), model: model.arch.name().to_string() });
    }
    expect_str(&file, ADAPTER_TYPE, "lora", "\"lora\"")?;
    let alpha = match file.get(ALPHA) {
        None => return Err(AdapterError::GgufMissingKey { key: ALPHA }),
        Some(&Value::F32(a)) if a.is_finite() && a >= 0.0 => a,
        Some(v) => return Err(value_error(ALPHA, "a finite f32 ≥ 0", v)),
    };

    let pairs = collect_pairs(&file, model)?;
    let targets: Vec<Target> = Target::ALL.into_iter().filter(|t| pairs.keys().any(|(_, u)| u == t)).collect();
    if pairs.is_empty() {
        let tensor = gguf_lora_name(0, Target::Q, Factor::A);
        return Err(AdapterError::GgufMissingTensor { tensor, reason: "the file adapts no projection" });
    }
    let mut rank = None;
    let mut out = Vec::with_capacity(model.n_layers * targets.len());
    for layer in 0..model.n_layers {
        for &target in &targets {
            let Some([Some(a), Some(b)]) = pairs.get(&(layer, target)) else {
                let factor = match pairs.get(&(layer, target)) {
                    Some([Some(_), None]) => Factor::B,
                    _ => Factor::A,
                };
                let reason = "every layer must adapt the same projections, each with lora_a and lora_b";
                return Err(AdapterError::GgufMissingTensor { tensor: gguf_lora_name(layer, target, factor), reason });
            };
            let rank = match rank {
                Some(r) => r,
                None => *rank.insert(rank_of(a)?),
            };
            out.push(read_pair(bytes, model, layer, target, rank, a, b)?);
        }
    }
    let config = recover_config(&file, alpha, rank.unwrap_or(0) as usize, targets);
    let base_name = file.get(BASE_NAME).and_then(Value::as_str).unwrap_or(&model.name).to_string();
    Ok(Adapter { config, base_name, pairs: out })
}

/// The lora_a and lora_b tensor infos of each (layer, target) in a file.
type Found<'a> = BTreeMap<(usize, Target), [Option<&'a TensorInfo>; 2]>;

/// Every lora_a / lora_b tensor by (layer, target); tensors llama.cpp skips (`*_norm.weight`)
/// are skipped, anything else refused.
fn collect_pairs<'a>(file: &'a Gguf, model: &Config) -> Result<Found<'a>, AdapterError> {
    let mut found = Found::new();
    for info in file.tensors() {
        let name = info.name.as_str();
        let Some((layer, target, factor)) = parse_name(name) else {
            if name.ends_with("_norm.weight") {
                continue; // llama.cpp ignores norm vectors in adapters too
            }
            let reason = if name.starts_with("token_embd.") || name.starts_with("output.") {
                "embeddings and the output head are never adapted"
            } else {
                "not the lora_a or lora_b of a block's q/k/v/output/gate/up/down projection"
            };
            return Err(AdapterError::GgufUnexpectedTensor { tensor: name.to_string(), reason });
        };
        if layer >= model.n_layers {
            return Err(AdapterError::LayerOutOfRange { tensor: name.to_string(), layer, n_layers: model.n_layers });
        }
        let slot = found.entry((layer, target)).or_default();
        slot[factor as usize] = Some(info);
    }
    Ok(found)
}

/// (layer, target, factor) of `blk.N.<target>.weight.lora_{a,b}`.
fn parse_name(name: &str) -> Option<(usize, Target, Factor)> {
    let (index, rest) = name.strip_prefix("blk.")?.split_once('.')?;
    if index.is_empty() || !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer = index.parse().ok()?;
    let (base, suffix) = rest.rsplit_once(".weight.")?;
    let target = Target::ALL.into_iter().find(|t| t.gguf_name() == base)?;
    let factor = match suffix {
        "lora_a" => Factor::A,
        "lora_b" => Factor::B,
        _ => return None,
    };
    Some((layer, target, factor))
}

/// The rank of a lora_a (its ggml dims[1]), at least 1.
fn rank_of(a: &TensorInfo) -> Result<u64, AdapterError> {
    match a.dims[..] {
        [_, r] if r > 0 => Ok(r),
        [_, r] => Err(AdapterError::BadRank { what: format!("LoRA GGUF: `{}`", a.name), rank: r as usize }),
        _ => {
            Err(AdapterError::GgufShape { tensor: a.name.clone(), expected: vec![a.dims[0], 1], found: a.dims.clone() })
        }
    }
}

/// One pair's shapes checked against the base model and its values read.
fn read_pair(
    bytes: &[u8],
    model: &Config,
    layer: usize,
    target: Target,
    rank: u64,
    a: &TensorInfo,
    b: &TensorInfo,
) -> Result<LoraPair, AdapterError> {
    let (d_in, d_out) = target.dims(model);
    let shape = |t: &TensorInfo, expected: Vec<u64>| AdapterError::GgufShape {
        tensor: t.name.clone(),
        expected,
        found: t.dims.clone(),
    };
    let (&[a_in, a_rank], &[b_rank, b_out]) = (&a.dims[..], &b.dims[..]) else {
        return Err(match a.dims.len() {
            2 => shape(b, vec![rank, d_out as u64]),
            _ => shape(a, vec![d_in as u64, rank]),
        });
    };
    if a_in != d_in as u64 {
        return Err(shape(a, vec![d_in as u64, a_rank]));
    }
    if b_out != d_out as u64 {
        return Err(shape(b, vec![b_rank, d_out as u64]));
    }
    if a_rank != b_rank {
        let tensor = format!("blk.{layer}.{}.weight", target.gguf_name());
        return Err(AdapterError::GgufRankMismatch { tensor, a_rank, b_rank });
    }
    if a_rank != rank {
        return Err(AdapterError::GgufRankVaries { tensor: a.name.clone(), rank: a_rank, expected: rank });
    }
    Ok(LoraPair { layer, target, d_in, d_out, a: values(bytes, a)?, b: values(bytes, b)? })
}

/// A tensor's values as f32.
fn values(bytes: &[u8], info: &TensorInfo) -> Result<Vec<f32>, AdapterError> {
    let error = |source| AdapterError::Gguf { file: FILE, source };
    let past_end = || GgufError::TensorPastEnd {
        name: info.name.clone(),
        end: info.offset.saturating_add(info.size),
        file_len: bytes.len() as u64,
    };
    let start = usize::try_from(info.offset).map_err(|_| error(past_end()))?;
    let end = usize::try_from(info.offset.saturating_add(info.size)).map_err(|_| error(past_end()))?;
    let data = bytes.get(start..end).ok_or_else(|| error(past_end()))?;
    dequant::dequantize(info.ty, data, info.n_elements() as usize).map_err(error)
}

/// The training configuration: ours when our keys fold to the file's alpha, else plain
/// LoRA with llama.cpp's scale (alpha 0 meaning a scale of 1, i.e. alpha = rank).
fn recover_config(file: &Gguf, alpha: f32, rank: usize, targets: Vec<Target>) -> LoraConfig {
    let plain_alpha = if alpha == 0.0 { rank as f32 } else { alpha };
    let plain = LoraConfig { rank, alpha: plain_alpha, dropout: 0.0, rslora: false, targets };
    let ours = match (file.get(OUR_ALPHA), file.get(OUR_RSLORA), file.get(OUR_DROPOUT)) {
        (Some(&Value::F32(alpha)), Some(&Value::Bool(rslora)), Some(&Value::F32(dropout))) => {
            LoraConfig { alpha, rslora, dropout, ..plain.clone() }
        }
        _ => return plain,
    };
    let valid = ours.alpha.is_finite() && ours.alpha > 0.0 && (0.0..1.0).contains(&ours.dropout);
    match valid && folded_alpha(&ours).to_bits() == alpha.to_bits() {
        true => ours,
        false => plain,
    }
}

fn get_str<'a>(file: &'a Gguf, key: &'static str) -> Result<&'a str, AdapterError> {
    match file.get(key) {
        None => Err(AdapterError::GgufMissingKey { key }),
        Some(v) => v.as_str().ok_or_else(|| value_error(key, "a string", v)),
    }
}

/// Requires `key` to be the string `want`; `expected` is how the error shows it.
fn expect_str(file: &Gguf, key: &'static str, want: &str, expected: &'static str) -> Result<(), AdapterError> {
    let found = get_str(file, key)?;
    match found == want {
        true => Ok(()),
        false => Err(AdapterError::GgufValue { key, expected, found: format!("{found:?}") }),
    }
}

fn value_error(key: &'static str, expected: &'static str, found: &Value) -> AdapterError {
    let found = match found.as_str() {
        Some(s) => format!("{s:?}"),
        None => format!("{found:?}"),
    };
    AdapterError::GgufValue { key, expected, found }
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}
