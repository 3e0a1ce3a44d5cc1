//! PEFT adapter files (`adapter_model.safetensors` + `adapter_config.json`), what
//! `PeftModel.from_pretrained` loads. PEFT lives in Hugging Face space, so crossing
//! into or out of it moves llama Q/K `lora_B` rows (see [`super::permute`]).
//!
//! The byte functions serve the browser; the directory ones the command line.

use std::collections::{BTreeMap, HashMap};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use super::permute::{gguf_to_hf_rows, hf_to_gguf_rows, permuted_heads};
use super::{peft_config, Adapter, AdapterError, LoraPair, Naming, Target};
use crate::model::Config;

pub const SAFETENSORS_FILE: &str = "adapter_model.safetensors";
pub const CONFIG_FILE: &str = "adapter_config.json";

/// PEFT wraps the causal LM (`base_model.model.`) whose decoder is `model.`.
const LAYERS: &str = "base_model.model.model.layers.";

/// The two files of a PEFT adapter directory.
#[derive(Debug, Clone, PartialEq)]
pub struct PeftFiles {
    /// `adapter_model.safetensors`: f32 tensors, metadata `{"format": "pt"}`.
    pub safetensors: Vec<u8>,
    /// `adapter_config.json`.
    pub config_json: String,
}

/// One of the two matrices of a LoRA pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Factor {
    /// `lora_A` [rank, in]
    A,
    /// `lora_B` [out, rank]
    B,
}

impl Factor {
    pub fn peft_name(self) -> &'static str {
        match self {
            Factor::A => "lora_A",
            Factor::B => "lora_B",
        }
    }
}

/// PEFT's tensor name for one factor of one projection.
pub fn peft_key(layer: usize, target: Target, factor: Factor) -> String {
    let (parent, module, name) = (target.hf_parent(), target.hf_module(), factor.peft_name());
    format!("{LAYERS}{layer}.{parent}.{module}.{name}.weight")
}

/// (layer, target, factor) of a PEFT tensor name, or `None` for anything else.
fn parse_key(name: &str) -> Option<(usize, Target, Factor)> {
    let (index, rest) = name.strip_prefix(LAYERS)?.split_once('.')?;
    // Digits only: `usize::from_str` would also take "+1".
    if !index.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let layer = index.parse().ok()?;
    Target::ALL.into_iter().find_map(|t| {
        let rest = rest.strip_prefix(t.hf_parent())?.strip_prefix('.')?.strip_prefix(t.hf_module())?;
        let factor = match rest {
            ".lora_A.weight" => Factor::A,
            ".lora_B.weight" => Factor::B,
            _ => return None,
        };
        Some((layer, t, factor))
    })
}

/// The adapter as PEFT files for the base model `model`.
pub fn to_peft(adapter: &Adapter, model: &Config) -> Result<PeftFiles, AdapterError> {
    adapter.check(model, Naming::Peft)?;
    let rank = adapter.config.rank;
    let mut tensors = Vec::with_capacity(2 * adapter.pairs.len());
    for p in &adapter.pairs {
        let b = match permuted_heads(model, p.target) {
            Some(heads) => gguf_to_hf_rows(&p.b, rank, heads)?,
            None => p.b.clone(),
        };
        tensors.push((peft_key(p.layer, p.target, Factor::A), vec![rank, p.d_in], le_bytes(&p.a)));
        tensors.push((peft_key(p.layer, p.target, Factor::B), vec![p.d_out, rank], le_bytes(&b)));
    }
    let write_error = |source| AdapterError::Safetensors { file: SAFETENSORS_FILE, source };
    let views = tensors
        .iter()
        .map(|(name, shape, bytes)| Ok((name.as_str(), TensorView::new(Dtype::F32, shape.clone(), bytes)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .map_err(write_error)?;
    let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
    let safetensors = safetensors::serialize(views, Some(metadata)).map_err(write_error)?;
    let config_json = peft_config::write(&adapter.config, &adapter.base_name)?;
    Ok(PeftFiles { safetensors, config_json })
}

fn le_bytes(values: &[f32]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_le_bytes()).collect()
}

/// A tensor read from the file: (shape, values).
type Loaded = (Vec<usize>, Vec<f32>);

/// Reads PEFT files made for the base model `model` (by us or by PEFT itself), checking
/// every tensor against the configuration and the model's shapes.
pub fn from_peft(safetensors: &[u8], config_json: &str, model: &Config) -> Result<Adapter, AdapterError> {
    let peft = peft_config::read(config_json, model.n_layers)?;
    let file = SafeTensors::deserialize(safetensors)
        .map_err(|source| AdapterError::Safetensors { file: SAFETENSORS_FILE, source })?;
    let targets = &peft.lora.targets;
    let mut found: BTreeMap<(usize, Target), [Option<Loaded>; 2]> = BTreeMap::new();
    for (name, view) in file.iter() {
        let Some((layer, target, factor)) = parse_key(name) else {
            let reason = "not the lora_A or lora_B weight of a decoder layer's projection";
            return Err(AdapterError::UnexpectedTensor { tensor: name.to_string(), reason });
        };
        if layer >= model.n_layers {
            return Err(AdapterError::LayerOutOfRange { tensor: name.to_string(), layer, n_layers: model.n_layers });
        }
        if !targets.contains(&target) {
            let reason = "its module is not in target_modules";
            return Err(AdapterError::UnexpectedTensor { tensor: name.to_string(), reason });
        }
        let values = to_f32(name, &view)?;
        let slot = found.entry((layer, target)).or_default();
        let side = match factor {
            Factor::A => &mut slot[0],
            Factor::B => &mut slot[1],
        };
        *side = Some((view.shape().to_vec(), values));
    }
    let rank = peft.lora.rank;
    let mut pairs = Vec::with_capacity(model.n_layers * targets.len());
    for layer in 0..model.n_layers {
        for &target in targets {
            let [a, b] = found.remove(&(layer, target)).unwrap_or_default();
            let module = target.hf_module();
            let missing =
                |factor| AdapterError::MissingTensor { tensor: peft_key(layer, target, factor), layer, module };
            let (a_shape, a) = a.ok_or_else(|| missing(Factor::A))?;
            let (b_shape, b) = b.ok_or_else(|| missing(Factor::B))?;
            let (d_in, d_out) = target.dims(model);
            let shape_error = |tensor, expected, found: &[usize]| AdapterError::Shape {
                layer,
                module,
                tensor,
                expected,
                found: found.to_vec(),
            };
            let &[a_rank, a_in] = a_shape.as_slice() else {
                return Err(shape_error("lora_A", vec![rank, d_in], &a_shape));
            };
            let &[b_out, b_rank] = b_shape.as_slice() else {
                return Err(shape_error("lora_B", vec![d_out, rank], &b_shape));
            };
            if a_rank != b_rank {
                return Err(AdapterError::RankMismatch { layer, module, a_rank, b_rank });
            }
            if a_rank != rank {
                return Err(AdapterError::RankVsConfig { layer, module, found: a_rank, config: rank });
            }
            if a_in != d_in {
                return Err(shape_error("lora_A", vec![rank, d_in], &a_shape));
            }
            if b_out != d_out {
                return Err(shape_error("lora_B", vec![d_out, rank], &b_shape));
            }
            let b = match permuted_heads(model, target) {
                Some(heads) => hf_to_gguf_rows(&b, rank, heads)?,
                None => b,
            };
            pairs.push(LoraPair { layer, target, d_in, d_out, a, b });
        }
    }
    let base_name = peft.base_name.unwrap_or_else(|| model.name.clone());
    Ok(Adapter { config: peft.lora, base_name, pairs })
}

/// A tensor's values as f32 (PEFT saves in the training dtype: f32, f16 or bf16).
fn to_f32(name: &str, view: &TensorView<'_>) -> Result<Vec<f32>, AdapterError> {
    let data = view.data();
    let values = match view.dtype() {
        Dtype::F32 => data.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect(),
        Dtype::F16 => data.chunks_exact(2).map(|c| half::f16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        Dtype::BF16 => data.chunks_exact(2).map(|c| half::bf16::from_le_bytes([c[0], c[1]]).to_f32()).collect(),
        other => return Err(AdapterError::Dtype { tensor: name.to_string(), dtype: format!("{other:?}") }),
    };
    Ok(values)
}

/// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir` (created).
#[cfg(not(target_arch = "wasm32"))]
pub fn write_peft_dir(dir: &std::path::Path, files: &PeftFiles) -> Result<(), AdapterError> {
    let io = |path: std::path::PathBuf| move |source| AdapterError::Io { path, source };
    std::fs::create_dir_all(dir).map_err(io(dir.to_path_buf()))?;
    let st = dir.join(SAFETENSORS_FILE);
    std::fs::write(&st, &files.safetensors).map_err(io(st.clone()))?;
    let cfg = dir.join(CONFIG_FILE);
    std::fs::write(&cfg, &files.config_json).map_err(io(cfg.clone()))
}

/// Reads a PEFT adapter directory made for the base model `model`.
#[cfg(not(target_arch = "wasm32"))]
pub fn read_peft_dir(dir: &std::path::Path, model: &Config) -> Result<Adapter, AdapterError> {
    let io = |path: std::path::PathBuf| move |source| AdapterError::Io { path, source };
    let st = dir.join(SAFETENSORS_FILE);
    let bytes = std::fs::read(&st).map_err(io(st.clone()))?;
    let cfg = dir.join(CONFIG_FILE);
    let json = std::fs::read_to_string(&cfg).map_err(io(cfg.clone()))?;
    from_peft(&bytes, &json, model)
}
