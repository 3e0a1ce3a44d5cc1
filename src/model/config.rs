//! Model hyper-parameters read from GGUF metadata, for the architectures we run.

use crate::gguf::{GgmlType, Gguf};

use super::ModelError;

/// The architectures whose graphs we implement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// SmolLM2, Llama 3.x: RMSNorm, SwiGLU, GQA, RoPE on GGUF-permuted (interleaved) pairs.
    Llama,
    /// Qwen2/2.5: as llama plus q/k/v biases and NEOX (half-split) RoPE.
    Qwen2,
}

impl Arch {
    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
        }
    }
}

/// Everything the graph needs to know about a model's shape.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Config {
    pub arch: Arch,
    pub name: String,
    pub n_layers: usize,
    pub hidden: usize,
    pub ffn: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
    pub vocab: usize,
    pub context: usize,
    pub rms_eps: f32,
    pub rope_theta: f32,
    /// Llama 3 style per-dimension frequency divisors (`rope_freqs.weight`).
    pub rope_freq_factors: bool,
    /// Linear RoPE scaling factor (positions divided by it), 1.0 when absent.
    pub rope_linear_factor: f32,
    /// The output projection shares the token embedding matrix.
    pub tied_embeddings: bool,
    /// q/k/v projections carry biases.
    pub qkv_bias: bool,
}

impl Config {
    pub fn from_gguf(gguf: &Gguf) -> Result<Config, ModelError> {
        let arch_name = gguf.get_str("general.architecture")?;
        let arch = match arch_name {
            "llama" => Arch::Llama,
            "qwen2" => Arch::Qwen2,
            other => {
                return Err(ModelError::UnsupportedArch { arch: other.to_string() });
            }
        };
        let key = |k: &str| format!("{arch_name}.{k}");
        let hidden = gguf.get_u64(&key("embedding_length"))? as usize;
        let n_heads = gguf.get_u64(&key("attention.head_count"))? as usize;
        let n_kv_heads = match gguf.get(&key("attention.head_count_kv")) {
            Some(_) => gguf.get_u64(&key("attention.head_count_kv"))? as usize,
            None => n_heads,
        };
        let embed = gguf.tensor("token_embd.weight")?;
        let vocab = match embed.dims.get(1) {
            Some(&v) => v as usize,
            None => return Err(ModelError::shape("token_embd.weight", "[hidden, vocab]", &embed.dims)),
        };
        if n_heads == 0 || n_kv_heads == 0 || !hidden.is_multiple_of(n_heads) || !n_heads.is_multiple_of(n_kv_heads) {
            return Err(ModelError::BadConfig(format!(
                "{n_heads} heads and {n_kv_heads} KV heads do not divide hidden size {hidden}"
            )));
        }
        let head_dim = match gguf.get(&key("attention.key_length")) {
            Some(_) => gguf.get_u64(&key("attention.key_length"))? as usize,
            None => hidden / n_heads,
        };
        let rope_dims = match gguf.get(&key("rope.dimension_count")) {
            Some(_) => gguf.get_u64(&key("rope.dimension_count"))? as usize,
            None => head_dim,
        };
        if rope_dims != head_dim || head_dim % 2 != 0 {
            return Err(ModelError::BadConfig(format!(
                "partial or odd RoPE ({rope_dims} of {head_dim} head dimensions) is not supported"
            )));
        }
        let rope_linear_factor = match gguf.get(&key("rope.scaling.type")).and_then(|v| v.as_str()) {
            None | Some("none") => 1.0,
            Some("linear") => gguf.get_f32(&key("rope.scaling.factor"))?,
            // llama.cpp writes Llama 3 scaling as the rope_freqs tensor; the key may say so.
            Some("llama3") if gguf.find_tensor("rope_freqs.weight").is_some() => 1.0,
            Some(other) => {
                return Err(ModelError::BadConfig(format!("RoPE scaling `{other}` is not supported")))
            }
        };
        let config = Config {
            arch,
            name: gguf.get_str("general.name").unwrap_or(arch_name).to_string(),
            n_layers: gguf.get_u64(&key("block_count"))? as usize,
            hidden,
            ffn: gguf.get_u64(&key("feed_forward_length"))? as usize,
            n_heads,
            n_kv_heads,
            head_dim,
            vocab,
            context: gguf.get_u64(&key("context_length"))? as usize,
            rms_eps: gguf.get_f32(&key("attention.layer_norm_rms_epsilon"))?,
            rope_theta: match gguf.get(&key("rope.freq_base")) {
                Some(_) => gguf.get_f32(&key("rope.freq_base"))?,
                None => 10000.0,
            },
            rope_freq_factors: gguf.find_tensor("rope_freqs.weight").is_some(),
            rope_linear_factor,
            tied_embeddings: gguf.find_tensor("output.weight").is_none(),
            qkv_bias: gguf.find_tensor("blk.0.attn_q.bias").is_some(),
        };
        config.check_tensors(gguf)?;
        Ok(config)
    }

    pub fn q_dim(&self) -> usize {
        self.n_heads * self.head_dim
    }
    pub fn kv_dim(&self) -> usize {
        self.n_kv_heads * self.head_dim
    }

    /// Expected GGUF dims (fastest first) of every tensor the graph reads.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<u64>)> {
        let (d, f, q, kv, v) = (
            self.hidden as u64,
            self.ffn as u64,
            self.q_dim() as u64,
            self.kv_dim() as u64,
            self.vocab as u64,
        );
        let mut shapes = vec![("token_embd.weight".to_string(), vec![d, v]), ("output_norm.weight".into(), vec![d])];
        if !self.tied_embeddings {
            shapes.push(("output.weight".into(), vec![d, v]));
        }
        if self.rope_freq_factors {
            shapes.push(("rope_freqs.weight".into(), vec![self.head_dim as u64 / 2]));
        }
        for i in 0..self.n_layers {
            let b = |n: &str| format!("blk.{i}.{n}");
            shapes.push((b("attn_norm.weight"), vec![d]));
            shapes.push((b("attn_q.weight"), vec![d, q]));
            shapes.push((b("attn_k.weight"), vec![d, kv]));
            shapes.push((b("attn_v.weight"), vec![d, kv]));
            shapes.push((b("attn_output.weight"), vec![q, d]));
            shapes.push((b("ffn_norm.weight"), vec![d]));
            shapes.push((b("ffn_gate.weight"), vec![d, f]));
            shapes.push((b("ffn_up.weight"), vec![d, f]));
            shapes.push((b("ffn_down.weight"), vec![f, d]));
            if self.qkv_bias {
                shapes.push((b("attn_q.bias"), vec![q]));
                shapes.push((b("attn_k.bias"), vec![kv]));
                shapes.push((b("attn_v.bias"), vec![kv]));
            }
        }
        shapes
    }

    fn check_tensors(&self, gguf: &Gguf) -> Result<(), ModelError> {
        for (name, dims) in self.tensor_shapes() {
            let info = gguf.tensor(&name)?;
            if info.dims != dims {
                return Err(ModelError::shape(&name, &format!("{dims:?}"), &info.dims));
            }
            let vector = dims.len() == 1;
            if vector && !matches!(info.ty, GgmlType::F32 | GgmlType::F16 | GgmlType::BF16) {
                return Err(ModelError::BadConfig(format!("`{name}` is {}; norms and biases must be float", info.ty)));
            }
        }
        Ok(())
    }

    /// Parameters in the graph's tensors.
    pub fn parameter_count(&self) -> u64 {
        self.tensor_shapes().iter().map(|(_, d)| d.iter().product::<u64>()).sum()
    }

    /// Bytes of K and V cache for `positions` tokens (f32).
    pub fn kv_cache_bytes(&self, positions: usize) -> u64 {
        2 * self.n_layers as u64 * positions as u64 * self.kv_dim() as u64 * 4
    }
}
