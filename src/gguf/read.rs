//! Parsing a GGUF header (metadata and tensor infos) from a prefix of the file.
//!
//! Only the header is parsed here; tensor data is read one tensor at a time through a
//! [`super::TensorSource`], so a browser `File` is never held twice in memory.

use std::collections::HashMap;

use super::value::{Value, ValueType};
use super::{GgmlType, GgufError};

/// One tensor's name, shape (dims[0] fastest-varying), type and absolute data offset.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    pub dims: Vec<u64>,
    pub ty: GgmlType,
    /// Absolute byte offset of the tensor's data in the file.
    pub offset: u64,
    /// Bytes of data.
    pub size: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.dims.iter().product()
    }
}

/// A parsed GGUF header.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub version: u32,
    metadata: Vec<(String, Value)>,
    by_key: HashMap<String, usize>,
    tensors: Vec<TensorInfo>,
    by_name: HashMap<String, usize>,
    pub alignment: u64,
    /// Where the data section starts.
    pub data_offset: u64,
    pub file_len: u64,
}

const MAX_DIMS: u32 = 4;
const MAX_ARRAY_NESTING: u32 = 4;

impl Gguf {
    /// Parses the header from `prefix`, the first bytes of a file of `file_len` bytes.
    /// When the prefix ends inside the header the error is [`GgufError::Truncated`] with
    /// `available < file_len`: read a longer prefix and try again (see [`Self::header_len_hint`]).
    pub fn parse(prefix: &[u8], file_len: u64) -> Result<Gguf, GgufError> {
        let mut r = Reader { bytes: prefix, pos: 0, file_len };
        let magic: [u8; 4] = r.take(4, "magic")?.try_into().unwrap_or([0; 4]);
        if &magic != b"GGUF" {
            return Err(GgufError::BadMagic { found: magic });
        }
        let version = r.u32("version")?;
        if version != 2 && version != 3 {
            return Err(GgufError::UnsupportedVersion { version });
        }
        let tensor_count = r.count("tensor", 8 + 4 + 4 + 8)?;
        let kv_count = r.count("metadata key", 8 + 4 + 1)?;
        let mut metadata = Vec::with_capacity(r.capacity(kv_count, 8 + 4 + 1));
        let mut by_key = HashMap::new();
        for _ in 0..kv_count {
            let key = r.string("metadata key")?;
            let type_offset = r.pos as u64;
            let type_id = r.u32("value type")?;
            let ty = ValueType::from_id(type_id)
                .ok_or(GgufError::UnknownValueType { offset: type_offset, type_id })?;
            let value = r.value(ty, &key, 0)?;
            if by_key.insert(key.clone(), metadata.len()).is_some() {
                return Err(GgufError::Duplicate { what: "metadata key", name: key });
            }
            metadata.push((key, value));
        }
        let alignment = match by_key.get("general.alignment").map(|&i| &metadata[i].1) {
            None => 32,
            Some(v) => match v.as_u64() {
                Some(a) if a > 0 && a.is_power_of_two() => a,
                _ => {
                    return Err(GgufError::WrongType {
                        key: "general.alignment".into(),
                        expected: "a power of two",
                        found: format!("{v:?}"),
                    })
                }
            },
        };
        let mut infos = Vec::with_capacity(r.capacity(tensor_count, 8 + 4 + 4 + 8));
        for _ in 0..tensor_count {
            let name = r.string("tensor name")?;
            let dims_offset = r.pos as u64;
            let n_dims = r.u32("tensor dimension count")?;
            if n_dims == 0 || n_dims > MAX_DIMS {
                return Err(GgufError::BadShape {
                    name,
                    dims: vec![],
                    why: format!("{n_dims} dimensions at byte {dims_offset}; expected 1 to {MAX_DIMS}"),
                });
            }
            let dims = (0..n_dims).map(|_| r.u64("tensor dimension")).collect::<Result<Vec<_>, _>>()?;
            let type_id = r.u32("tensor type")?;
            let relative = r.u64("tensor offset")?;
            let ty = GgmlType::from_id(type_id)
                .ok_or_else(|| GgufError::UnknownTensorType { name: name.clone(), type_id })?;
            infos.push((name, dims, ty, relative));
        }
        let data_offset = (r.pos as u64).next_multiple_of(alignment);
        let mut tensors = Vec::with_capacity(infos.len());
        let mut by_name = HashMap::new();
        for (name, dims, ty, relative) in infos {
            let size = tensor_size(&name, &dims, ty)?;
            if relative % alignment != 0 {
                return Err(GgufError::Misaligned { name, offset: relative, alignment });
            }
            let end = data_offset.checked_add(relative).and_then(|o| o.checked_add(size));
            match end {
                Some(end) if end <= file_len => {}
                _ => {
                    return Err(GgufError::TensorPastEnd {
                        name,
                        end: end.unwrap_or(u64::MAX),
                        file_len,
                    })
                }
            }
            if by_name.insert(name.clone(), tensors.len()).is_some() {
                return Err(GgufError::Duplicate { what: "tensor", name });
            }
            tensors.push(TensorInfo { name, dims, ty, offset: data_offset + relative, size });
        }
        Ok(Gguf { version, metadata, by_key, tensors, by_name, alignment, data_offset, file_len })
    }

    /// How many bytes to read next after `error` from a prefix parse: `Some(n)` when
    /// the prefix was too short (n > the prefix), `None` when the file itself is bad.
    pub fn header_len_hint(error: &GgufError, file_len: u64) -> Option<u64> {
        match error {
            GgufError::Truncated { available, offset, needed, .. } if *available < file_len => {
                Some(offset.saturating_add(*needed).max(available.saturating_mul(2)).min(file_len))
            }
            _ => None,
        }
    }

    pub fn metadata(&self) -> impl Iterator<Item = (&str, &Value)> {
        self.metadata.iter().map(|(k, v)| (k.as_str(), v))
    }
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.by_key.get(key).map(|&i| &self.metadata[i].1)
    }
    fn require(&self, key: &str) -> Result<&Value, GgufError> {
        self.get(key).ok_or_else(|| GgufError::MissingKey { key: key.to_string() })
    }
    fn wrong(key: &str, expected: &'static str, found: &Value) -> GgufError {
        GgufError::WrongType { key: key.to_string(), expected, found: found.type_name() }
    }
    pub fn get_u64(&self, key: &str) -> Result<u64, GgufError> {
        let v = self.require(key)?;
        v.as_u64().ok_or_else(|| Self::wrong(key, "an unsigned integer", v))
    }
    pub fn get_u32(&self, key: &str) -> Result<u32, GgufError> {
        let v = self.require(key)?;
        v.as_u64().and_then(|x| u32::try_from(x).ok()).ok_or_else(|| Self::wrong(key, "a u32", v))
    }
    pub fn get_f32(&self, key: &str) -> Result<f32, GgufError> {
        let v = self.require(key)?;
        v.as_f64().map(|x| x as f32).ok_or_else(|| Self::wrong(key, "a number", v))
    }
    pub fn get_str(&self, key: &str) -> Result<&str, GgufError> {
        let v = self.require(key)?;
        v.as_str().ok_or_else(|| Self::wrong(key, "a string", v))
    }
    pub fn get_bool(&self, key: &str) -> Result<bool, GgufError> {
        let v = self.require(key)?;
        v.as_bool().ok_or_else(|| Self::wrong(key, "a bool", v))
    }
    pub fn get_array(&self, key: &str) -> Result<&[Value], GgufError> {
        let v = self.require(key)?;
        v.as_array().ok_or_else(|| Self::wrong(key, "an array", v))
    }
    /// An array of strings, e.g. `tokenizer.ggml.tokens`.
    pub fn get_strings(&self, key: &str) -> Result<Vec<&str>, GgufError> {
        self.get_array(key)?
            .iter()
            .map(|v| v.as_str().ok_or_else(|| Self::wrong(key, "an array of strings", v)))
            .collect()
    }

    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }
    pub fn tensor(&self, name: &str) -> Result<&TensorInfo, GgufError> {
        self.find_tensor(name).ok_or_else(|| GgufError::MissingTensor { name: name.to_string() })
    }
    pub fn find_tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.by_name.get(name).map(|&i| &self.tensors[i])
    }
}

fn tensor_size(name: &str, dims: &[u64], ty: GgmlType) -> Result<u64, GgufError> {
    let bad = |why: String| GgufError::BadShape { name: name.to_string(), dims: dims.to_vec(), why };
    let n = dims
        .iter()
        .try_fold(1u64, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| bad("element count overflows".into()))?;
    if !dims[0].is_multiple_of(ty.block_len() as u64) {
        return Err(bad(format!(
            "rows of {} values are not whole {ty} blocks of {}",
            dims[0],
            ty.block_len()
        )));
    }
    ty.bytes_for(n).ok_or_else(|| bad("size overflows".into()))
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
    file_len: u64,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64, what: &str) -> Result<&'a [u8], GgufError> {
        let end = (self.pos as u64).checked_add(n);
        match end {
            Some(end) if end <= self.bytes.len() as u64 => {
                let slice = &self.bytes[self.pos..end as usize];
                self.pos = end as usize;
                Ok(slice)
            }
            _ => Err(GgufError::Truncated {
                what: what.to_string(),
                offset: self.pos as u64,
                needed: n,
                available: self.bytes.len() as u64,
            }),
        }
    }
    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], GgufError> {
        let slice = self.take(N as u64, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(slice);
        Ok(out)
    }
    fn u32(&mut self, what: &str) -> Result<u32, GgufError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, GgufError> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }
    /// A count of items each at least `min_bytes` long: rejected if the file cannot
    /// hold them, so a corrupt count never becomes a huge allocation.
    fn count(&mut self, what: &'static str, min_bytes: u64) -> Result<u64, GgufError> {
        let offset = self.pos as u64;
        let count = self.u64(what)?;
        let room = self.file_len.saturating_sub(self.pos as u64);
        if count.saturating_mul(min_bytes) > room {
            return Err(GgufError::ImplausibleCount { what, count, offset, available: self.file_len });
        }
        Ok(count)
    }
    /// Room to reserve for `count` items of at least `min_bytes` each: no more than the
    /// bytes at hand can hold. `count` was only checked against the whole file, and a
    /// header parsed from a short prefix of a large file must not reserve gigabytes.
    fn capacity(&self, count: u64, min_bytes: u64) -> usize {
        let left = (self.bytes.len() as u64).saturating_sub(self.pos as u64);
        usize::try_from(count.min(left / min_bytes.max(1))).unwrap_or(0)
    }
    fn string(&mut self, what: &str) -> Result<String, GgufError> {
        let offset = self.pos as u64;
        let len = self.u64(what)?;
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| GgufError::InvalidUtf8 { offset })
    }
    fn value(&mut self, ty: ValueType, key: &str, depth: u32) -> Result<Value, GgufError> {
        Ok(match ty {
            ValueType::U8 => Value::U8(self.array::<1>(key)?[0]),
            ValueType::I8 => Value::I8(i8::from_le_bytes(self.array(key)?)),
            ValueType::U16 => Value::U16(u16::from_le_bytes(self.array(key)?)),
            ValueType::I16 => Value::I16(i16::from_le_bytes(self.array(key)?)),
            ValueType::U32 => Value::U32(self.u32(key)?),
            ValueType::I32 => Value::I32(i32::from_le_bytes(self.array(key)?)),
            ValueType::F32 => Value::F32(f32::from_le_bytes(self.array(key)?)),
            ValueType::Bool => Value::Bool(self.array::<1>(key)?[0] != 0),
            ValueType::String => Value::String(self.string(key)?),
            ValueType::U64 => Value::U64(self.u64(key)?),
            ValueType::I64 => Value::I64(i64::from_le_bytes(self.array(key)?)),
            ValueType::F64 => Value::F64(f64::from_le_bytes(self.array(key)?)),
            ValueType::Array => {
                let type_offset = self.pos as u64;
                let type_id = self.u32(key)?;
                let item = ValueType::from_id(type_id)
                    .ok_or(GgufError::UnknownValueType { offset: type_offset, type_id })?;
                // Real files nest at most one level; a bound keeps corrupt input off the stack.
                if item == ValueType::Array && depth >= MAX_ARRAY_NESTING {
                    return Err(GgufError::NestedTooDeep { offset: type_offset, limit: MAX_ARRAY_NESTING });
                }
                let count = self.count("array element", item.min_bytes())?;
                let mut items = Vec::with_capacity(self.capacity(count, item.min_bytes()));
                for _ in 0..count {
                    items.push(self.value(item, key, depth + 1)?);
                }
                Value::Array(item, items)
            }
        })
    }
}
