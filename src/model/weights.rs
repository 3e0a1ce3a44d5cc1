//! Uploading a GGUF model's tensors to the GPU, one tensor at a time. Matrices keep
//! their quantized blocks (dequantized in the shaders); vectors become f32.

use crate::gguf::{dequant, Gguf, GgmlType, TensorSource};
use crate::gpu::{Buffer, Gpu};
use crate::kernels::matmul::Weight;
use crate::kernels::rope;

use super::{Config, ModelError};

/// One transformer block's weights.
pub(crate) struct Layer {
    pub attn_norm: Buffer,
    pub wq: Weight,
    pub wk: Weight,
    pub wv: Weight,
    pub wo: Weight,
    pub bq: Option<Buffer>,
    pub bk: Option<Buffer>,
    pub bv: Option<Buffer>,
    pub ffn_norm: Buffer,
    pub gate: Weight,
    pub up: Weight,
    pub down: Weight,
}

/// A model resident on the GPU.
pub struct Model {
    pub config: Config,
    pub(crate) embed: Weight,
    /// `None` when tied to `embed`.
    pub(crate) output: Option<Weight>,
    pub(crate) output_norm: Buffer,
    /// RoPE inverse frequencies per pair, with scaling folded in.
    pub(crate) inv_freq: Buffer,
    pub(crate) layers: Vec<Layer>,
    /// A LoRA adapter applied on top of the frozen weights.
    pub(crate) adapter: Option<super::LoraWeights>,
}

impl Model {
    /// Reads the header and every tensor from `source` and uploads them.
    pub async fn load<S: TensorSource + ?Sized>(gpu: &Gpu, source: &S) -> Result<Model, ModelError> {
        let gguf = source.header().await?;
        Self::load_with_header(gpu, source, &gguf).await
    }

    /// As [`Model::load`] when the header is already parsed (e.g. for the tokenizer).
    pub async fn load_with_header<S: TensorSource + ?Sized>(
        gpu: &Gpu,
        source: &S,
        gguf: &Gguf,
    ) -> Result<Model, ModelError> {
        let config = Config::from_gguf(gguf)?;
        let loader = Loader { gpu, source, gguf };
        let freq_factors = if config.rope_freq_factors {
            Some(loader.floats("rope_freqs.weight").await?)
        } else {
            None
        };
        let inv_freq: Vec<f32> = rope::rope_inv_freq(config.head_dim, config.rope_theta, None)
            .iter()
            .enumerate()
            .map(|(i, f)| f / config.rope_linear_factor / freq_factors.as_ref().map_or(1.0, |ff| ff[i]))
            .collect();
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let name = |n: &str| format!("blk.{i}.{n}");
            layers.push(Layer {
                attn_norm: loader.vector(&name("attn_norm.weight")).await?,
                wq: loader.matrix(&name("attn_q.weight")).await?,
                wk: loader.matrix(&name("attn_k.weight")).await?,
                wv: loader.matrix(&name("attn_v.weight")).await?,
                wo: loader.matrix(&name("attn_output.weight")).await?,
                bq: loader.bias(&name("attn_q.bias"), config.qkv_bias).await?,
                bk: loader.bias(&name("attn_k.bias"), config.qkv_bias).await?,
                bv: loader.bias(&name("attn_v.bias"), config.qkv_bias).await?,
                ffn_norm: loader.vector(&name("ffn_norm.weight")).await?,
                gate: loader.matrix(&name("ffn_gate.weight")).await?,
                up: loader.matrix(&name("ffn_up.weight")).await?,
                down: loader.matrix(&name("ffn_down.weight")).await?,
            });
        }
        Ok(Model {
            embed: loader.matrix("token_embd.weight").await?,
            output: match config.tied_embeddings {
                true => None,
                false => Some(loader.matrix("output.weight").await?),
            },
            output_norm: loader.vector("output_norm.weight").await?,
            inv_freq: gpu.upload("rope.inv_freq", bytemuck::cast_slice(&inv_freq))?,
            layers,
            config,
            adapter: None,
        })
    }

    /// Applies `adapter` to every later forward pass (None: the base model again);
    /// returns the one it replaces.
    pub fn attach(&mut self, adapter: Option<super::LoraWeights>) -> Option<super::LoraWeights> {
        std::mem::replace(&mut self.adapter, adapter)
    }

    pub fn adapter(&self) -> Option<&super::LoraWeights> {
        self.adapter.as_ref()
    }

    /// The output projection (the embedding matrix when tied).
    pub(crate) fn lm_head(&self) -> &Weight {
        self.output.as_ref().unwrap_or(&self.embed)
    }

    /// Bytes of weights resident on the GPU.
    pub fn weight_bytes(&self) -> u64 {
        let mut total = self.embed.gpu_bytes()
            + self.output.as_ref().map_or(0, Weight::gpu_bytes)
            + self.output_norm.size()
            + self.inv_freq.size();
        for l in &self.layers {
            total += [&l.wq, &l.wk, &l.wv, &l.wo, &l.gate, &l.up, &l.down].iter().map(|w| w.gpu_bytes()).sum::<u64>();
            total += l.attn_norm.size() + l.ffn_norm.size();
            total += [&l.bq, &l.bk, &l.bv].iter().map(|b| b.as_ref().map_or(0, Buffer::size)).sum::<u64>();
        }
        total
    }
}

struct Loader<'a, S: ?Sized> {
    gpu: &'a Gpu,
    source: &'a S,
    gguf: &'a Gguf,
}

impl<S: TensorSource + ?Sized> Loader<'_, S> {
    async fn floats(&self, name: &str) -> Result<Vec<f32>, ModelError> {
        let info = self.gguf.tensor(name)?;
        let bytes = self.source.tensor(info).await?;
        Ok(dequant::dequantize(info.ty, &bytes, info.n_elements() as usize)?)
    }

    /// A norm weight or bias as f32.
    async fn vector(&self, name: &str) -> Result<Buffer, ModelError> {
        let values = self.floats(name).await?;
        Ok(self.gpu.upload(name, bytemuck::cast_slice(&values))?)
    }

    /// A bias vector when the architecture has one.
    async fn bias(&self, name: &str, present: bool) -> Result<Option<Buffer>, ModelError> {
        match present {
            true => self.vector(name).await.map(Some),
            false => Ok(None),
        }
    }

    /// A [rows × cols] matrix, GGUF dims [cols, rows], kept in its stored type.
    async fn matrix(&self, name: &str) -> Result<Weight, ModelError> {
        let info = self.gguf.tensor(name)?;
        let (cols, rows) = match info.dims[..] {
            [cols, rows] => (cols as usize, rows as usize),
            _ => return Err(ModelError::shape(name, "2 dimensions", &info.dims)),
        };
        let bytes = self.source.tensor(info).await?;
        let ty: GgmlType = info.ty;
        Ok(Weight::upload(self.gpu, name, ty, rows, cols, &bytes)?)
    }
}
