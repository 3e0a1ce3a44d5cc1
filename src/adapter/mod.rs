//! LoRA adapters on the CPU: which projections they adapt, their hyperparameters and
//! weights, and the files they are kept in.
//!
//! Weights live in GGUF space, the space the engine computes in: for the llama
//! architecture the rows of Q and K (and so of their `lora_B`) are in llama.cpp's
//! permuted order. File formats that live in Hugging Face space convert on the way.

mod card;
mod error;
mod gguf_lora;
mod merge;
mod peft;
mod peft_config;
pub mod permute;

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::model::Config;

pub use card::{model_card, TrainingFacts};
pub use error::AdapterError;
pub use gguf_lora::{folded_alpha, from_gguf_lora, gguf_lora_name, to_gguf_lora};
pub use merge::{merge_to_gguf, write_merged, MergePlan, MergeType, MergedTensor};
pub use peft::{from_peft, peft_key, to_peft, Factor, PeftFiles, CONFIG_FILE, SAFETENSORS_FILE};
#[cfg(not(target_arch = "wasm32"))]
pub use peft::{read_peft_dir, write_peft_dir};

/// A projection of a transformer block that LoRA can adapt.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl Target {
    pub const ALL: [Target; 7] = [Target::Q, Target::K, Target::V, Target::O, Target::Gate, Target::Up, Target::Down];

    /// The name on the command line and in our files: q, k, v, o, gate, up, down.
    pub fn short(self) -> &'static str {
        match self {
            Target::Q => "q",
            Target::K => "k",
            Target::V => "v",
            Target::O => "o",
            Target::Gate => "gate",
            Target::Up => "up",
            Target::Down => "down",
        }
    }

    pub fn from_short(name: &str) -> Option<Target> {
        Target::ALL.into_iter().find(|t| t.short() == name.trim())
    }

    /// The module name in transformers (PEFT's `target_modules`).
    pub fn hf_module(self) -> &'static str {
        match self {
            Target::Q => "q_proj",
            Target::K => "k_proj",
            Target::V => "v_proj",
            Target::O => "o_proj",
            Target::Gate => "gate_proj",
            Target::Up => "up_proj",
            Target::Down => "down_proj",
        }
    }

    /// The path of the module inside a decoder layer in transformers.
    pub fn hf_parent(self) -> &'static str {
        match self {
            Target::Q | Target::K | Target::V | Target::O => "self_attn",
            Target::Gate | Target::Up | Target::Down => "mlp",
        }
    }

    /// The base tensor's name in a GGUF block (`blk.N.` + this + `.weight`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Target::Q => "attn_q",
            Target::K => "attn_k",
            Target::V => "attn_v",
            Target::O => "attn_output",
            Target::Gate => "ffn_gate",
            Target::Up => "ffn_up",
            Target::Down => "ffn_down",
        }
    }

    /// (in, out) features of this projection in `config`.
    pub fn dims(self, config: &Config) -> (usize, usize) {
        let (d, q, kv, f) = (config.hidden, config.n_heads * config.head_dim, config.n_kv_heads * config.head_dim, config.ffn);
        match self {
            Target::Q => (d, q),
            Target::K | Target::V => (d, kv),
            Target::O => (q, d),
            Target::Gate | Target::Up => (d, f),
            Target::Down => (f, d),
        }
    }
}

/// LoRA hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    pub dropout: f32,
    /// Scale by `alpha / sqrt(rank)` instead of `alpha / rank`.
    pub rslora: bool,
    /// Adapted projections, in [`Target::ALL`] order, each once.
    pub targets: Vec<Target>,
}

impl Default for LoraConfig {
    fn default() -> LoraConfig {
        LoraConfig { rank: 16, alpha: 32.0, dropout: 0.0, rslora: false, targets: Target::ALL.to_vec() }
    }
}

impl LoraConfig {
    /// The factor on `B A x`.
    pub fn scale(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.rank as f32).sqrt()
        } else {
            self.alpha / self.rank as f32
        }
    }
}

/// One adapted projection: `A` [rank, in] and `B` [out, rank], row-major f32, GGUF space.
#[derive(Debug, Clone, PartialEq)]
pub struct LoraPair {
    pub layer: usize,
    pub target: Target,
    pub d_in: usize,
    pub d_out: usize,
    pub a: Vec<f32>,
    pub b: Vec<f32>,
}

/// A whole adapter: hyperparameters, the base it belongs to, and one pair per
/// (layer, target) in layer-major, [`Target::ALL`] order.
#[derive(Debug, Clone, PartialEq)]
pub struct Adapter {
    pub config: LoraConfig,
    /// The base model's `general.name` (or file name) as recorded in exports.
    pub base_name: String,
    pub pairs: Vec<LoraPair>,
}

/// Whose names errors use for modules and tensors: the file format being written.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Naming {
    Peft,
    Gguf,
}

impl Naming {
    fn module(self, target: Target) -> &'static str {
        match self {
            Naming::Peft => target.hf_module(),
            Naming::Gguf => target.gguf_name(),
        }
    }

    fn tensor(self, layer: usize, target: Target, factor: Factor) -> String {
        match self {
            Naming::Peft => peft_key(layer, target, factor),
            Naming::Gguf => gguf_lora_name(layer, target, factor),
        }
    }
}

impl Adapter {
    /// Checks the adapter fits `model` before it is written: a valid rank and alpha,
    /// and exactly one pair of the right shape per layer and target.
    pub(crate) fn check(&self, model: &Config, naming: Naming) -> Result<(), AdapterError> {
        let config = &self.config;
        let rank = config.rank;
        if rank == 0 {
            return Err(AdapterError::BadRank { what: "the adapter".into(), rank });
        }
        if !(config.alpha.is_finite() && config.alpha > 0.0) {
            return Err(AdapterError::BadAlpha { alpha: config.alpha });
        }
        let mut seen = BTreeSet::new();
        for p in &self.pairs {
            let (layer, module) = (p.layer, naming.module(p.target));
            if layer >= model.n_layers {
                let tensor = naming.tensor(layer, p.target, Factor::A);
                return Err(AdapterError::LayerOutOfRange { tensor, layer, n_layers: model.n_layers });
            }
            if !config.targets.contains(&p.target) {
                return Err(AdapterError::NotATarget { layer, module });
            }
            let (d_in, d_out) = p.target.dims(model);
            if p.d_in != d_in {
                let (expected, found) = (vec![rank, d_in], vec![rank, p.d_in]);
                return Err(AdapterError::Shape { layer, module, tensor: "lora_A", expected, found });
            }
            if p.d_out != d_out {
                let (expected, found) = (vec![d_out, rank], vec![p.d_out, rank]);
                return Err(AdapterError::Shape { layer, module, tensor: "lora_B", expected, found });
            }
            for (tensor, len, want) in [("lora_A", p.a.len(), rank * d_in), ("lora_B", p.b.len(), rank * d_out)] {
                if len != want {
                    return Err(AdapterError::Length { layer, module, tensor, expected: want, found: len });
                }
            }
            if !seen.insert((layer, p.target)) {
                return Err(AdapterError::Duplicate { layer, module });
            }
        }
        for layer in 0..model.n_layers {
            for &target in &config.targets {
                if !seen.contains(&(layer, target)) {
                    let tensor = naming.tensor(layer, target, Factor::A);
                    return Err(AdapterError::MissingTensor { tensor, layer, module: naming.module(target) });
                }
            }
        }
        Ok(())
    }
}
