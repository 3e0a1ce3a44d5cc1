//! SmolLM2 (llama) with LoRA in burn: frozen f32 base weights dequantized from the GGUF
//! by `classtune`, trainable LoRA factors in a burn `Module`, and the training loss.
//!
//! Per layer: RMSNorm → q/k/v (+LoRA) → RoPE on adjacent pairs (2i, 2i+1), as the GGUF's
//! permuted Q/K rows expect → causal GQA attention → o (+LoRA) → residual → RMSNorm →
//! SwiGLU with LoRA on gate/up/down → residual; final RMSNorm, tied lm_head,
//! cross-entropy over every next token. Activations are 2-D [tokens, features] except
//! inside attention, so every projection is one plain matmul.

use burn::module::Param;
use burn::prelude::*;
use burn::tensor::activation::{log_softmax, silu};
use burn::tensor::module::{attention, embedding};
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::Distribution;

use classtune::gguf::dequant::dequantize;
use classtune::gguf::Gguf;
use classtune::model::Config;

type Error = Box<dyn std::error::Error>;

/// The seven adapted projections of a layer, in [`Base`]'s and [`LoraLayer`]'s order.
const TARGETS: [&str; 7] = ["attn_q", "attn_k", "attn_v", "attn_output", "ffn_gate", "ffn_up", "ffn_down"];
const Q: usize = 0;
const K: usize = 1;
const V: usize = 2;
const O: usize = 3;
const GATE: usize = 4;
const UP: usize = 5;
const DOWN: usize = 6;

/// One layer's frozen weights; projections stored transposed, [in, out], so `x·W`.
struct BaseLayer {
    attn_norm: Tensor<2>,
    ffn_norm: Tensor<2>,
    proj: Vec<Tensor<2>>,
}

/// The frozen base model (no gradients: plain tensors, not parameters).
pub struct Base {
    pub config: Config,
    /// [vocab, hidden], for the embedding lookup.
    embed: Tensor<2>,
    /// [hidden, vocab], the lm_head (the embedding transposed when tied).
    head: Tensor<2>,
    out_norm: Tensor<2>,
    layers: Vec<BaseLayer>,
    /// RoPE tables [1, 1, seq, head_dim], each angle repeated for its pair.
    cos: Tensor<4>,
    sin: Tensor<4>,
}

/// A [in, rank] and B [rank, out] of one projection: y += scale · (x·A)·B.
#[derive(Module, Debug)]
pub struct LoraPair {
    a: Param<Tensor<2>>,
    b: Param<Tensor<2>>,
}

#[derive(Module, Debug)]
pub struct LoraLayer {
    pairs: Vec<LoraPair>,
}

/// Every trainable value: what the optimizer sees.
#[derive(Module, Debug)]
pub struct Lora {
    layers: Vec<LoraLayer>,
}

/// A GGUF tensor as f32 [rows, cols] in GGUF order (dims[0] fastest = cols).
fn read(gguf: &Gguf, bytes: &[u8], name: &str) -> Result<(Vec<f32>, usize, usize), Error> {
    let info = gguf.tensor(name)?;
    let cols = info.dims[0] as usize;
    let rows = info.dims.iter().skip(1).product::<u64>() as usize;
    let start = info.offset as usize;
    let data = bytes.get(start..start + info.size as usize).ok_or_else(|| format!("{name}: data past the end of the file"))?;
    Ok((dequantize(info.ty, data, rows * cols)?, rows, cols))
}

fn transpose(v: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; v.len()];
    for r in 0..rows {
        for c in 0..cols {
            t[c * rows + r] = v[r * cols + c];
        }
    }
    t
}

fn upload(values: Vec<f32>, shape: [usize; 2], device: &Device) -> Tensor<2> {
    Tensor::from_data(TensorData::new(values, shape), device)
}

/// A projection weight (GGUF [out rows, in cols]) as [in, out].
fn projection(gguf: &Gguf, bytes: &[u8], name: &str, device: &Device) -> Result<Tensor<2>, Error> {
    let (v, rows, cols) = read(gguf, bytes, name)?;
    Ok(upload(transpose(&v, rows, cols), [cols, rows], device))
}

/// A norm weight as [1, hidden], to broadcast over tokens.
fn norm(gguf: &Gguf, bytes: &[u8], name: &str, device: &Device) -> Result<Tensor<2>, Error> {
    let (v, _, cols) = read(gguf, bytes, name)?;
    Ok(upload(v, [1, cols], device))
}

impl Base {
    /// Dequantizes every weight of the GGUF in `bytes` to f32 on `device`.
    pub fn load(bytes: &[u8], seq: usize, device: &Device) -> Result<Base, Error> {
        let gguf = Gguf::parse(bytes, bytes.len() as u64)?;
        let config = Config::from_gguf(&gguf)?;
        if config.qkv_bias || config.rope_freq_factors {
            return Err(format!("{}: only plain llama graphs (no qkv bias, no RoPE factors)", config.name).into());
        }
        let (e, vocab, hidden) = read(&gguf, bytes, "token_embd.weight")?;
        let head = if config.tied_embeddings {
            upload(transpose(&e, vocab, hidden), [hidden, vocab], device)
        } else {
            projection(&gguf, bytes, "output.weight", device)?
        };
        let embed = upload(e, [vocab, hidden], device);
        let mut layers = Vec::with_capacity(config.n_layers);
        for i in 0..config.n_layers {
            let proj = TARGETS
                .iter()
                .map(|t| projection(&gguf, bytes, &format!("blk.{i}.{t}.weight"), device))
                .collect::<Result<Vec<_>, _>>()?;
            layers.push(BaseLayer {
                attn_norm: norm(&gguf, bytes, &format!("blk.{i}.attn_norm.weight"), device)?,
                ffn_norm: norm(&gguf, bytes, &format!("blk.{i}.ffn_norm.weight"), device)?,
                proj,
            });
        }
        let out_norm = norm(&gguf, bytes, "output_norm.weight", device)?;
        let (cos, sin) = rope_tables(&config, seq, device);
        Ok(Base { config, embed, head, out_norm, layers, cos, sin })
    }

    /// Mean cross-entropy of predicting `ids[:, t+1]` from `ids[:, ..=t]`; `ids` [batch, seq].
    pub fn loss(&self, lora: &Lora, scale: f64, ids: &[Vec<u32>], device: &Device) -> Tensor<1> {
        let c = &self.config;
        let (batch, seq) = (ids.len(), ids[0].len());
        let n = batch * seq;
        let flat: Vec<i32> = ids.iter().flatten().map(|&t| t as i32).collect();
        let tokens = Tensor::<2, Int>::from_data(TensorData::new(flat, [batch, seq]), device);
        let mut x = embedding(self.embed.clone(), tokens).reshape([n, c.hidden]);
        let attend = AttentionModuleOptions { scale: None, softcap: None, is_causal: true };
        let group = c.n_heads / c.n_kv_heads;
        for (base, lora) in self.layers.iter().zip(&lora.layers) {
            let lin = |x: Tensor<2>, t: usize| {
                let p = &lora.pairs[t];
                x.clone().matmul(base.proj[t].clone()) + x.matmul(p.a.val()).matmul(p.b.val()).mul_scalar(scale)
            };
            let h = rms_norm(x.clone(), base.attn_norm.clone(), c.rms_eps);
            let heads = |x: Tensor<2>, h: usize| x.reshape([batch, seq, h, c.head_dim]).swap_dims(1, 2);
            let q = self.rope(heads(lin(h.clone(), Q), c.n_heads));
            let k = self.rope(heads(lin(h.clone(), K), c.n_kv_heads));
            let v = heads(lin(h, V), c.n_kv_heads);
            // GQA: query head j reads kv head j / group.
            let repeat = |t: Tensor<4>| {
                t.reshape([batch, c.n_kv_heads, 1, seq, c.head_dim])
                    .expand([batch, c.n_kv_heads, group, seq, c.head_dim])
                    .reshape([batch, c.n_heads, seq, c.head_dim])
            };
            let a = attention(q, repeat(k), repeat(v), None, None, attend);
            let a = a.swap_dims(1, 2).reshape([n, c.n_heads * c.head_dim]);
            x = x + lin(a, O);
            let h = rms_norm(x.clone(), base.ffn_norm.clone(), c.rms_eps);
            let act = silu(lin(h.clone(), GATE)) * lin(h, UP);
            x = x + lin(act, DOWN);
        }
        let h = rms_norm(x, self.out_norm.clone(), c.rms_eps).reshape([batch, seq, c.hidden]);
        // The lm_head one sequence at a time keeps the logits (49152 wide) under 64 MiB.
        let mut total = Tensor::<1>::zeros([1], device);
        for (b, row) in ids.iter().enumerate() {
            let hb = h.clone().narrow(0, b, 1).narrow(1, 0, seq - 1).reshape([seq - 1, c.hidden]);
            let logp = log_softmax(hb.matmul(self.head.clone()), 1);
            let next: Vec<i32> = row[1..].iter().map(|&t| t as i32).collect();
            let next = Tensor::<2, Int>::from_data(TensorData::new(next, [seq - 1, 1]), device);
            let sum = logp.gather(1, next).sum();
            total = total + sum;
        }
        total.neg().div_scalar((batch * (seq - 1)) as f64)
    }

    /// Rotates adjacent pairs: (x0, x1) → (x0·cos − x1·sin, x1·cos + x0·sin); x [b, h, t, d].
    fn rope(&self, x: Tensor<4>) -> Tensor<4> {
        let [b, h, t, d] = x.dims();
        let pairs = x.clone().reshape([b, h, t, d / 2, 2]);
        let x0 = pairs.clone().narrow(4, 0, 1);
        let x1 = pairs.narrow(4, 1, 1);
        let rotated = Tensor::cat(vec![x1.neg(), x0], 4).reshape([b, h, t, d]);
        x * self.cos.clone() + rotated * self.sin.clone()
    }
}

/// x / sqrt(mean(x²) + eps) · w; x [tokens, hidden], w [1, hidden].
fn rms_norm(x: Tensor<2>, w: Tensor<2>, eps: f32) -> Tensor<2> {
    let rstd = x.clone().square().mean_dim(1).add_scalar(eps as f64).sqrt().recip();
    x * rstd * w
}

fn rope_tables(c: &Config, seq: usize, device: &Device) -> (Tensor<4>, Tensor<4>) {
    let d = c.head_dim;
    let (mut cos, mut sin) = (Vec::with_capacity(seq * d), Vec::with_capacity(seq * d));
    for p in 0..seq {
        for i in 0..d {
            let inv_freq = (c.rope_theta as f64).powf(-((2 * (i / 2)) as f64) / d as f64);
            let angle = p as f64 * inv_freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    let table = |v: Vec<f32>| Tensor::<4>::from_data(TensorData::new(v, [1, 1, seq, d]), device);
    (table(cos), table(sin))
}

impl Lora {
    /// PEFT's initialisation: A uniform in ±1/sqrt(in), B zero.
    pub fn init(c: &Config, rank: usize, device: &Device) -> Lora {
        let (d, q, kv, f) = (c.hidden, c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim, c.ffn);
        let shapes = [(d, q), (d, kv), (d, kv), (q, d), (d, f), (d, f), (f, d)];
        let layers = (0..c.n_layers)
            .map(|_| LoraLayer {
                pairs: shapes
                    .iter()
                    .map(|&(d_in, d_out)| {
                        let bound = 1.0 / (d_in as f64).sqrt();
                        LoraPair {
                            a: Param::from_tensor(Tensor::random([d_in, rank], Distribution::Uniform(-bound, bound), device)),
                            b: Param::from_tensor(Tensor::zeros([rank, d_out], device)),
                        }
                    })
                    .collect(),
            })
            .collect();
        Lora { layers }
    }

    /// Trainable values.
    pub fn len(&self) -> usize {
        self.num_params()
    }
}
