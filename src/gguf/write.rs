//! Writing GGUF files: tiny test models, LoRA adapters, and the header of merged models
//! (whose tensors are streamed after it).

use super::value::Value;
use super::{GgmlType, GgufError};

/// Collects metadata and tensors, then lays them out as GGUF v3.
#[derive(Debug, Default)]
pub struct GgufWriter {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
    alignment: u64,
}

impl GgufWriter {
    pub fn new() -> Self {
        GgufWriter { alignment: 32, ..Default::default() }
    }

    /// Adds or replaces a metadata entry.
    pub fn set(&mut self, key: &str, value: Value) -> &mut Self {
        if key == "general.alignment" {
            if let Some(a) = value.as_u64().filter(|a| a.is_power_of_two()) {
                self.alignment = a;
            }
        }
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some(slot) => slot.1 = value,
            None => self.metadata.push((key.to_string(), value)),
        }
        self
    }

    /// Removes a metadata entry (e.g. when deriving a file from another).
    pub fn remove(&mut self, key: &str) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self
    }

    /// Adds a tensor of `ty` with GGUF dims (dims[0] fastest) and its encoded bytes.
    pub fn tensor(&mut self, name: &str, dims: &[u64], ty: GgmlType, data: Vec<u8>) -> Result<&mut Self, GgufError> {
        let n = dims.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        let expected = n.and_then(|n| ty.bytes_for(n));
        if dims.is_empty() || dims.len() > 4 || expected != Some(data.len() as u64) {
            return Err(GgufError::BadShape {
                name: name.to_string(),
                dims: dims.to_vec(),
                why: format!("{} bytes of {ty} data; expected {expected:?}", data.len()),
            });
        }
        // The reader needs whole blocks per row, not just in total.
        if !dims[0].is_multiple_of(ty.block_len() as u64) {
            return Err(GgufError::BadShape {
                name: name.to_string(),
                dims: dims.to_vec(),
                why: format!("rows of {} values are not whole {ty} blocks of {}", dims[0], ty.block_len()),
            });
        }
        if self.tensors.iter().any(|(n, ..)| n == name) {
            return Err(GgufError::Duplicate { what: "tensor", name: name.to_string() });
        }
        self.tensors.push((name.to_string(), dims.to_vec(), ty, data));
        Ok(self)
    }

    /// The complete file.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut offset = 0u64;
        let mut entries = Vec::with_capacity(self.tensors.len());
        for (name, dims, ty, data) in &self.tensors {
            entries.push(TensorEntry { name, dims, ty: *ty, offset });
            offset = (offset + data.len() as u64).next_multiple_of(self.alignment);
        }
        let metadata = self.metadata.iter().map(|(k, v)| (k.as_str(), v));
        let mut out = encode_header(metadata, &entries, self.alignment);
        let data_start = out.len() as u64;
        for ((_, _, _, data), entry) in self.tensors.iter().zip(&entries) {
            out.resize((data_start + entry.offset) as usize, 0);
            out.extend_from_slice(data);
        }
        out
    }
}

/// A tensor's entry in a GGUF header; `offset` is relative to the data section.
pub struct TensorEntry<'a> {
    pub name: &'a str,
    pub dims: &'a [u64],
    pub ty: GgmlType,
    pub offset: u64,
}

/// GGUF v3 header bytes, padded with zeros to the data section (a multiple of
/// `alignment`).
pub fn encode_header<'a>(
    metadata: impl ExactSizeIterator<Item = (&'a str, &'a Value)>,
    tensors: &[TensorEntry<'_>],
    alignment: u64,
) -> Vec<u8> {
    let mut out = Vec::new();
    out.extend_from_slice(b"GGUF");
    out.extend_from_slice(&3u32.to_le_bytes());
    out.extend_from_slice(&(tensors.len() as u64).to_le_bytes());
    out.extend_from_slice(&(metadata.len() as u64).to_le_bytes());
    for (key, value) in metadata {
        put_string(&mut out, key);
        out.extend_from_slice(&value.value_type().id().to_le_bytes());
        put_value(&mut out, value);
    }
    for t in tensors {
        put_string(&mut out, t.name);
        out.extend_from_slice(&(t.dims.len() as u32).to_le_bytes());
        for d in t.dims {
            out.extend_from_slice(&d.to_le_bytes());
        }
        out.extend_from_slice(&t.ty.id().to_le_bytes());
        out.extend_from_slice(&t.offset.to_le_bytes());
    }
    out.resize((out.len() as u64).next_multiple_of(alignment) as usize, 0);
    out
}

fn put_string(out: &mut Vec<u8>, s: &str) {
    out.extend_from_slice(&(s.len() as u64).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_value(out: &mut Vec<u8>, value: &Value) {
    match value {
        Value::U8(v) => out.push(*v),
        Value::I8(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => out.push(u8::from(*v)),
        Value::String(s) => put_string(out, s),
        Value::U64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::I64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => out.extend_from_slice(&v.to_le_bytes()),
        Value::Array(ty, items) => {
            out.extend_from_slice(&ty.id().to_le_bytes());
            out.extend_from_slice(&(items.len() as u64).to_le_bytes());
            for item in items {
                put_value(out, item);
            }
        }
    }
}
