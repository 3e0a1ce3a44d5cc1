//! A LoRA adapter on the GPU: every A and B in one flat f32 buffer. Training adds the
//! gradient and the AdamW moments laid out the same way, so one dispatch updates them
//! all and one reduction gives the global gradient norm.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use crate::adapter::{Adapter, LoraConfig, LoraPair, Target};
use crate::gpu::{Buffer, Gpu, GpuError};
use crate::kernels::lora::{LoraKernel, LoraShape, View, MAX_RANK};
use super::{Config, ModelError};

/// Where one adapted projection's A [rank, in] and B [out, rank] start in the buffers.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Slot {
    pub layer: usize,
    pub target: Target,
    pub d_in: usize,
    pub d_out: usize,
    pub a: u32,
    pub b: u32,
}

/// LoRA weights, each f32 [len], and once training starts their optimizer state.
pub struct LoraWeights {
    pub(crate) config: LoraConfig,
    pub(crate) slots: Vec<Slot>,
    /// Per layer, per [`Target::ALL`] position, the index into `slots`.
    index: Vec<[Option<usize>; 7]>,
    len: usize,
    pub(crate) params: Buffer,
    optimizer: Option<OptimizerState>,
    kernel: LoraKernel,
}

/// Gradient and AdamW moments, laid out as the weights.
pub(crate) struct OptimizerState {
    pub grads: Buffer,
    pub m: Buffer,
    pub v: Buffer,
}

impl LoraWeights {
    /// PEFT's initialisation: A kaiming-uniform (bound `1/sqrt(in)`, what
    /// `kaiming_uniform_(a=sqrt(5))` gives), B zero, so step 0 is the base model.
    pub fn init(gpu: &Gpu, model: &Config, config: &LoraConfig, seed: u64) -> Result<LoraWeights, ModelError> {
        let (slots, index, len) = layout(model, config)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut values = vec![0f32; len];
        for s in &slots {
            let bound = 1.0 / (s.d_in as f32).sqrt();
            let a = &mut values[s.a as usize..s.a as usize + config.rank * s.d_in];
            for v in a {
                *v = rng.random_range(-bound..bound);
            }
        }
        Self::upload(gpu, config, slots, index, &values)
    }

    /// Weights in this type's flat layout (from a checkpoint).
    pub fn from_flat(gpu: &Gpu, model: &Config, config: &LoraConfig, values: &[f32]) -> Result<LoraWeights, ModelError> {
        let (slots, index, len) = layout(model, config)?;
        if values.len() != len {
            return Err(ModelError::BadConfig(format!(
                "{} LoRA values given, rank {} on {} needs {len}",
                values.len(),
                config.rank,
                config.targets.iter().map(|t| t.short()).collect::<Vec<_>>().join(",")
            )));
        }
        Self::upload(gpu, config, slots, index, values)
    }

    /// The flat weight buffer.
    pub(crate) fn params(&self) -> &Buffer {
        &self.params
    }

    /// Loads an adapter's weights (to continue training or to run it).
    pub fn from_adapter(gpu: &Gpu, model: &Config, adapter: &Adapter) -> Result<LoraWeights, ModelError> {
        let config = &adapter.config;
        let (slots, index, len) = layout(model, config)?;
        let mut values = vec![0f32; len];
        let mut seen = vec![false; slots.len()];
        for p in &adapter.pairs {
            let found = index.get(p.layer).and_then(|row| row[p.target as usize]);
            let Some(i) = found else {
                return Err(ModelError::BadConfig(format!(
                    "the adapter has layer {} {} but the configuration does not adapt it",
                    p.layer,
                    p.target.short()
                )));
            };
            let s = slots[i];
            if (p.d_in, p.d_out) != (s.d_in, s.d_out)
                || p.a.len() != config.rank * s.d_in
                || p.b.len() != config.rank * s.d_out
            {
                return Err(ModelError::BadConfig(format!(
                    "layer {} {}: adapter holds A {} values and B {} values for {}→{}, the model needs rank {} × {}→{}",
                    p.layer,
                    p.target.short(),
                    p.a.len(),
                    p.b.len(),
                    p.d_in,
                    p.d_out,
                    config.rank,
                    s.d_in,
                    s.d_out
                )));
            }
            values[s.a as usize..s.a as usize + p.a.len()].copy_from_slice(&p.a);
            values[s.b as usize..s.b as usize + p.b.len()].copy_from_slice(&p.b);
            seen[i] = true;
        }
        if let Some(i) = seen.iter().position(|&s| !s) {
            let s = slots[i];
            return Err(ModelError::BadConfig(format!("the adapter lacks layer {} {}", s.layer, s.target.short())));
        }
        Self::upload(gpu, config, slots, index, &values)
    }

    fn upload(
        gpu: &Gpu,
        config: &LoraConfig,
        slots: Vec<Slot>,
        index: Vec<[Option<usize>; 7]>,
        values: &[f32],
    ) -> Result<LoraWeights, ModelError> {
        Ok(LoraWeights {
            config: config.clone(),
            slots,
            index,
            len: values.len(),
            params: gpu.upload("lora.params", bytemuck::cast_slice(values))?,
            optimizer: None,
            kernel: LoraKernel::choose(gpu),
        })
    }

    /// The gradient and AdamW moments, created (zero) on first use.
    pub(crate) fn optimizer(&mut self, gpu: &Gpu) -> Result<&OptimizerState, GpuError> {
        if self.optimizer.is_none() {
            let zeros = vec![0u8; self.len * 4];
            self.optimizer = Some(OptimizerState {
                grads: gpu.upload("lora.grads", &zeros)?,
                m: gpu.upload("lora.m", &zeros)?,
                v: gpu.upload("lora.v", &zeros)?,
            });
        }
        self.optimizer.as_ref().ok_or_else(|| GpuError::Validation("optimizer state missing".into()))
    }

    /// The optimizer state if training has begun.
    pub(crate) fn optimizer_state(&self) -> Option<&OptimizerState> {
        self.optimizer.as_ref()
    }

    /// Trainable values (all A and B).
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// The slot of (layer, target), if adapted.
    pub(crate) fn slot(&self, layer: usize, target: Target) -> Option<Slot> {
        self.index[layer][target as usize].map(|i| self.slots[i])
    }

    pub(crate) fn shape(&self, slot: Slot, tokens: u32) -> LoraShape {
        LoraShape {
            tokens,
            d_in: slot.d_in as u32,
            d_out: slot.d_out as u32,
            rank: self.config.rank as u32,
            scale: self.config.scale(),
            kernel: self.kernel,
        }
    }

    pub(crate) fn a(&self, slot: Slot) -> View<'_> {
        View::at(&self.params, slot.a)
    }

    pub(crate) fn b(&self, slot: Slot) -> View<'_> {
        View::at(&self.params, slot.b)
    }

    /// Reads the weights back into an [`Adapter`].
    pub async fn to_adapter(&self, gpu: &Gpu, base_name: &str) -> Result<Adapter, ModelError> {
        let values = self.read(gpu, &self.params).await?;
        Ok(self.split(&values, base_name))
    }

    /// Reads the accumulated gradients, laid out as an [`Adapter`] (tests compare them
    /// with PyTorch's).
    pub async fn gradients(&self, gpu: &Gpu) -> Result<Adapter, ModelError> {
        let Some(state) = &self.optimizer else {
            return Err(ModelError::BadConfig("no gradients: training has not started".into()));
        };
        let values = self.read(gpu, &state.grads).await?;
        Ok(self.split(&values, ""))
    }

    async fn read(&self, gpu: &Gpu, buffer: &Buffer) -> Result<Vec<f32>, ModelError> {
        Ok(gpu.read_f32_prefix(buffer, self.len).await?)
    }

    fn split(&self, values: &[f32], base_name: &str) -> Adapter {
        split(&self.config, &self.slots, values, base_name)
    }
}

/// An [`Adapter`] from weights in the flat layout (a checkpoint's), on the CPU.
pub fn adapter_from_flat(model: &Config, config: &LoraConfig, values: &[f32], base_name: &str) -> Result<Adapter, ModelError> {
    let (slots, _, len) = layout(model, config)?;
    if values.len() != len {
        return Err(ModelError::BadConfig(format!("{} LoRA values given, the configuration needs {len}", values.len())));
    }
    Ok(split(config, &slots, values, base_name))
}

fn split(config: &LoraConfig, slots: &[Slot], values: &[f32], base_name: &str) -> Adapter {
    let r = config.rank;
    let pairs = slots
        .iter()
        .map(|s| LoraPair {
            layer: s.layer,
            target: s.target,
            d_in: s.d_in,
            d_out: s.d_out,
            a: values[s.a as usize..s.a as usize + r * s.d_in].to_vec(),
            b: values[s.b as usize..s.b as usize + r * s.d_out].to_vec(),
        })
        .collect();
    Adapter { config: config.clone(), base_name: base_name.to_string(), pairs }
}

type Layout = (Vec<Slot>, Vec<[Option<usize>; 7]>, usize);

/// Checks `config` against the model and places every (layer, target) pair: A then B,
/// layer-major in [`Target::ALL`] order.
fn layout(model: &Config, config: &LoraConfig) -> Result<Layout, ModelError> {
    if config.targets.is_empty() {
        return Err(ModelError::BadConfig("no target projections chosen (pick from q,k,v,o,gate,up,down)".into()));
    }
    if config.rank == 0 || config.rank > MAX_RANK as usize {
        return Err(ModelError::BadConfig(format!("rank {} must be between 1 and {MAX_RANK}", config.rank)));
    }
    if !(config.alpha.is_finite() && config.alpha > 0.0) {
        return Err(ModelError::BadConfig(format!("alpha {} must be positive", config.alpha)));
    }
    if !(0.0..1.0).contains(&config.dropout) {
        return Err(ModelError::BadConfig(format!("dropout {} must be in [0, 1)", config.dropout)));
    }
    let mut slots = Vec::new();
    let mut index = vec![[None; 7]; model.n_layers];
    let mut len = 0usize;
    for (layer, row) in index.iter_mut().enumerate() {
        for (pos, &target) in Target::ALL.iter().enumerate() {
            if !config.targets.contains(&target) {
                continue;
            }
            let (d_in, d_out) = target.dims(model);
            if config.rank > d_in.min(d_out) {
                return Err(ModelError::BadConfig(format!(
                    "rank {} is larger than the {}→{} {} projection allows (at most {})",
                    config.rank,
                    d_in,
                    d_out,
                    target.short(),
                    d_in.min(d_out)
                )));
            }
            let a = len;
            let b = a + config.rank * d_in;
            len = b + config.rank * d_out;
            if len > u32::MAX as usize {
                return Err(ModelError::BadConfig("the adapter has more than 2^32 values".into()));
            }
            row[pos] = Some(slots.len());
            slots.push(Slot { layer, target, d_in, d_out, a: a as u32, b: b as u32 });
        }
    }
    Ok((slots, index, len))
}
