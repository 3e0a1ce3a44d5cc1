//! Merging an adapter into its base model: a GGUF model where every adapted weight is
//! `W' = dequant(W) + scale · B A` (both in GGUF space, so nothing is permuted), stored
//! as F16 or Q8_0, and every other tensor is copied byte for byte in its own type (norms
//! stay F32; the embeddings and the output head are never adapted, so a tied head stays
//! tied). Metadata is the base's, with `general.name` saying what was merged.
//!
//! A merged SmolLM2-135M is about 270 MB in F16, so the file is made in parts:
//! [`MergePlan::header`], then [`MergePlan::tensor_bytes`] for each tensor in order, from
//! that tensor's bytes in the base file. The browser reads each base tensor from its
//! `Blob` (`TensorSource::tensor(&plan.tensors()[i].base)`) and appends the result to a
//! file; [`write_merged`] does the same into any `std::io::Write`, [`merge_to_gguf`]
//! into memory.

use std::collections::HashMap;

use super::{Adapter, AdapterError, Naming};
use crate::gguf::write::{encode_header, TensorEntry};
use crate::gguf::{dequant, GgmlType, Gguf, TensorInfo, Value};
use crate::model::Config;

/// The type of the merged (adapted) weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[allow(non_camel_case_types)]
pub enum MergeType {
    F16,
    Q8_0,
}

impl MergeType {
    pub fn ggml(self) -> GgmlType {
        match self {
            MergeType::F16 => GgmlType::F16,
            MergeType::Q8_0 => GgmlType::Q8_0,
        }
    }
}

/// One tensor of the merged file.
#[derive(Debug, Clone, PartialEq)]
pub struct MergedTensor {
    /// The base model's tensor: name, dims, type, and where its bytes are in the base file.
    pub base: TensorInfo,
    /// Its type in the merged file (the base's unless adapted).
    pub ty: GgmlType,
    /// Absolute offset of its data in the merged file.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
    /// The adapter pair merged into it.
    pair: Option<usize>,
}

impl MergedTensor {
    pub fn is_adapted(&self) -> bool {
        self.pair.is_some()
    }
}

/// The layout of a merged file, computed from the base header and the adapter alone.
#[derive(Debug)]
pub struct MergePlan<'a> {
    adapter: &'a Adapter,
    header: Vec<u8>,
    tensors: Vec<MergedTensor>,
    len: u64,
}

impl<'a> MergePlan<'a> {
    /// Plans merging `adapter` into the base model whose header is `base`, adapted weights
    /// stored as `out`.
    pub fn new(base: &Gguf, adapter: &'a Adapter, out: MergeType) -> Result<MergePlan<'a>, AdapterError> {
        let model = Config::from_gguf(base).map_err(|e| AdapterError::BaseModel(Box::new(e)))?;
        adapter.check(&model, Naming::Gguf)?;
        let by_name: HashMap<String, usize> = adapter
            .pairs
            .iter()
            .enumerate()
            .map(|(i, p)| (format!("blk.{}.{}.weight", p.layer, p.target.gguf_name()), i))
            .collect();
        let alignment = base.alignment;
        let mut tensors = Vec::with_capacity(base.tensors().len());
        let mut relative = 0u64;
        for info in base.tensors() {
            let pair = by_name.get(&info.name).copied();
            let (ty, size) = match pair {
                None => (info.ty, info.size),
                Some(_) => {
                    let ty = out.ggml();
                    let cols = info.dims[0];
                    if !cols.is_multiple_of(ty.block_len() as u64) {
                        let (tensor, block) = (info.name.clone(), ty.block_len());
                        return Err(AdapterError::MergeBlocks { tensor, cols, ty, block });
                    }
                    // Whole blocks per row, so whole blocks in total; the product was
                    // checked when the header was parsed.
                    (ty, ty.bytes_for(info.n_elements()).unwrap_or(0))
                }
            };
            tensors.push(MergedTensor { base: info.clone(), ty, offset: relative, size, pair });
            relative = (relative + size).next_multiple_of(alignment);
        }
        let merged_name = format!("{} + LoRA (merged, r{}, {})", model.name, adapter.config.rank, out.ggml());
        let mut metadata: Vec<(&str, Value)> = base.metadata().map(|(k, v)| (k, v.clone())).collect();
        match metadata.iter_mut().find(|(k, _)| *k == "general.name") {
            Some(slot) => slot.1 = Value::String(merged_name),
            None => metadata.push(("general.name", Value::String(merged_name))),
        }
        let entries: Vec<TensorEntry<'_>> = tensors
            .iter()
            .map(|t| TensorEntry { name: &t.base.name, dims: &t.base.dims, ty: t.ty, offset: t.offset })
            .collect();
        let header = encode_header(metadata.iter().map(|(k, v)| (*k, v)), &entries, alignment);
        let data_start = header.len() as u64;
        let len = match tensors.last() {
            Some(t) => data_start + t.offset + t.size,
            None => data_start,
        };
        for t in &mut tensors {
            t.offset += data_start;
        }
        Ok(MergePlan { adapter, header, tensors, len })
    }

    /// The file's first bytes: header, tensor infos and the padding before the data.
    pub fn header(&self) -> &[u8] {
        &self.header
    }

    /// Every tensor, in file order.
    pub fn tensors(&self) -> &[MergedTensor] {
        &self.tensors
    }

    /// Bytes of the whole merged file.
    pub fn len(&self) -> u64 {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Tensor `index`'s bytes in the merged file, followed by the padding up to the next
    /// tensor, from `base_data`, the base tensor's bytes (`tensors()[index].base.size`).
    /// Appended in order after [`Self::header`], they make the file.
    pub fn tensor_bytes(&self, index: usize, base_data: &[u8]) -> Result<Vec<u8>, AdapterError> {
        let count = self.tensors.len();
        let t = self.tensors.get(index).ok_or(AdapterError::MergeIndex { index, count })?;
        if base_data.len() as u64 != t.base.size {
            let (tensor, expected, found) = (t.base.name.clone(), t.base.size, base_data.len() as u64);
            return Err(AdapterError::MergeData { tensor, expected, found });
        }
        let end = self.tensors.get(index + 1).map_or(self.len, |next| next.offset);
        let mut out = match t.pair.and_then(|i| self.adapter.pairs.get(i)) {
            None => base_data.to_vec(),
            Some(pair) => {
                let gguf = |source| AdapterError::Gguf { file: "base model GGUF", source };
                let mut w = dequant::dequantize(t.base.ty, base_data, t.base.n_elements() as usize).map_err(gguf)?;
                add_delta(&mut w, &pair.a, &pair.b, pair.d_in, self.adapter.config.rank, self.adapter.config.scale());
                dequant::quantize(t.ty, &w).map_err(gguf)?
            }
        };
        out.resize((end - t.offset) as usize, 0);
        Ok(out)
    }
}

/// `w += scale · B A` for row-major `w` [out, d_in], `a` [rank, d_in], `b` [out, rank],
/// one output row at a time (B A summed in f32 before scaling, as the LoRA kernels do).
fn add_delta(w: &mut [f32], a: &[f32], b: &[f32], d_in: usize, rank: usize, scale: f32) {
    let mut delta = vec![0f32; d_in];
    for (row, b_row) in w.chunks_exact_mut(d_in).zip(b.chunks_exact(rank)) {
        delta.fill(0.0);
        for (&b_ok, a_row) in b_row.iter().zip(a.chunks_exact(d_in)) {
            for (d, &a_ki) in delta.iter_mut().zip(a_row) {
                *d += b_ok * a_ki;
            }
        }
        for (x, d) in row.iter_mut().zip(&delta) {
            *x += scale * d;
        }
    }
}

/// Merges `adapter` into the base model (`base` parsed from `base_bytes`) in memory.
pub fn merge_to_gguf(
    base: &Gguf,
    base_bytes: &[u8],
    adapter: &Adapter,
    out: MergeType,
) -> Result<Vec<u8>, AdapterError> {
    let plan = MergePlan::new(base, adapter, out)?;
    let mut file = Vec::with_capacity(plan.len() as usize);
    write_merged(&plan, base_bytes, &mut file)?;
    Ok(file)
}

/// Writes the merged file of `plan` into `sink`, one tensor at a time, reading the base
/// tensors from `base_bytes` (the whole base file, e.g. memory-mapped).
pub fn write_merged<W: std::io::Write>(
    plan: &MergePlan<'_>,
    base_bytes: &[u8],
    sink: &mut W,
) -> Result<(), AdapterError> {
    sink.write_all(plan.header()).map_err(AdapterError::MergeWrite)?;
    for (i, t) in plan.tensors().iter().enumerate() {
        let range = usize::try_from(t.base.offset)
            .ok()
            .zip(usize::try_from(t.base.offset.saturating_add(t.base.size)).ok())
            .and_then(|(start, end)| base_bytes.get(start..end));
        let Some(data) = range else {
            let (tensor, expected) = (t.base.name.clone(), t.base.offset.saturating_add(t.base.size));
            return Err(AdapterError::MergeData { tensor, expected, found: base_bytes.len() as u64 });
        };
        sink.write_all(&plan.tensor_bytes(i, data)?).map_err(AdapterError::MergeWrite)?;
    }
    sink.flush().map_err(AdapterError::MergeWrite)
}
