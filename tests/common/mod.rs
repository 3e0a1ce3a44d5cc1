//! Shared helpers for the GGUF tests: a sample file with every value and tensor type,
//! a byte-level builder for hand-made (bad) files, and a source that counts reads.
#![allow(dead_code)]

use std::cell::RefCell;

use classtune::gguf::write::GgufWriter;
use classtune::gguf::{GgmlType, Gguf, GgufError, TensorSource, Value, ValueType};

/// Deterministic filler bytes (xorshift), different per `seed`.
pub fn pseudo_bytes(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

/// One metadata entry of every value type, including empty, string and nested arrays.
pub fn sample_metadata() -> Vec<(&'static str, Value)> {
    use ValueType as T;
    vec![
        ("general.architecture", Value::String("llama".into())),
        ("test.u8", Value::U8(0xAB)),
        ("test.i8", Value::I8(-7)),
        ("test.u16", Value::U16(0xBEEF)),
        ("test.i16", Value::I16(-12345)),
        ("test.u32", Value::U32(0xDEAD_BEEF)),
        ("test.i32", Value::I32(-2_000_000_000)),
        ("test.f32", Value::F32(-1.5e-3)),
        ("test.bool_true", Value::Bool(true)),
        ("test.bool_false", Value::Bool(false)),
        ("test.string", Value::String("héllo, wörld ✓ <|im_start|>\n".into())),
        ("test.empty_string", Value::String(String::new())),
        ("test.u64", Value::U64(u64::MAX - 1)),
        ("test.i64", Value::I64(i64::MIN + 3)),
        ("test.f64", Value::F64(std::f64::consts::PI)),
        ("test.array_u8", Value::Array(T::U8, vec![Value::U8(0), Value::U8(255)])),
        ("test.array_i32", Value::Array(T::I32, vec![Value::I32(-1), Value::I32(2), Value::I32(3)])),
        ("test.array_f32", Value::Array(T::F32, vec![Value::F32(0.25), Value::F32(-8.0)])),
        ("test.array_bool", Value::Array(T::Bool, vec![Value::Bool(true), Value::Bool(false)])),
        ("test.array_u64", Value::Array(T::U64, vec![Value::U64(1 << 40)])),
        ("test.array_f64", Value::Array(T::F64, vec![Value::F64(1e300)])),
        ("test.array_empty", Value::Array(T::U32, vec![])),
        ("test.array_empty_strings", Value::Array(T::String, vec![])),
        (
            "test.array_strings",
            Value::Array(
                T::String,
                vec![Value::String("a".into()), Value::String(String::new()), Value::String("Ġthe".into())],
            ),
        ),
        (
            "test.array_nested",
            Value::Array(
                T::Array,
                vec![
                    Value::Array(T::I16, vec![Value::I16(1), Value::I16(-2)]),
                    Value::Array(T::String, vec![Value::String("x".into())]),
                    Value::Array(T::U8, vec![]),
                ],
            ),
        ),
    ]
}

/// (name, dims, type) of one tensor per GgmlType; sizes chosen so most need padding.
pub fn sample_tensor_specs() -> Vec<(&'static str, Vec<u64>, GgmlType)> {
    vec![
        ("t.f32", vec![7, 3], GgmlType::F32),
        ("t.f16", vec![5, 2, 3], GgmlType::F16),
        ("t.bf16", vec![9], GgmlType::BF16),
        ("t.q4_0", vec![64, 3], GgmlType::Q4_0),
        ("t.q4_1", vec![32, 2, 2], GgmlType::Q4_1),
        ("t.q8_0", vec![96], GgmlType::Q8_0),
        ("t.q4_k", vec![256, 2], GgmlType::Q4_K),
        ("t.q6_k", vec![512, 1, 1, 2], GgmlType::Q6_K),
    ]
}

/// The sample tensors with their bytes.
pub fn sample_tensors() -> Vec<(&'static str, Vec<u64>, GgmlType, Vec<u8>)> {
    sample_tensor_specs()
        .into_iter()
        .enumerate()
        .map(|(i, (name, dims, ty))| {
            let n = dims.iter().product();
            let len = ty.bytes_for(n).expect("whole blocks") as usize;
            (name, dims, ty, pseudo_bytes(i as u64 + 1, len))
        })
        .collect()
}

/// A writer holding every sample value and tensor; `alignment` adds `general.alignment`.
pub fn sample_writer(alignment: Option<u32>) -> GgufWriter {
    let mut w = GgufWriter::new();
    if let Some(a) = alignment {
        w.set("general.alignment", Value::U32(a));
    }
    for (key, value) in sample_metadata() {
        w.set(key, value);
    }
    for (name, dims, ty, data) in sample_tensors() {
        w.tensor(name, &dims, ty, data).expect("valid sample tensor");
    }
    w
}

/// A small valid file: a few keys and two tiny tensors (for cut-everywhere tests).
pub fn small_file() -> Vec<u8> {
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("test.array", Value::Array(ValueType::String, vec![Value::String("ab".into())]));
    w.set("test.nested", Value::Array(ValueType::Array, vec![Value::Array(ValueType::U16, vec![Value::U16(1)])]));
    w.tensor("a", &[3], GgmlType::F32, pseudo_bytes(1, 12)).unwrap();
    w.tensor("b", &[32], GgmlType::Q8_0, pseudo_bytes(2, 34)).unwrap();
    w.to_bytes()
}

pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    pollster::block_on(f)
}

/// Parses a complete file held in memory.
pub fn parse_all(bytes: &[u8]) -> Result<Gguf, GgufError> {
    Gguf::parse(bytes, bytes.len() as u64)
}

/// Asserts two parses describe the same file.
pub fn assert_same_gguf(a: &Gguf, b: &Gguf) {
    assert_eq!(a.version, b.version);
    assert_eq!(a.alignment, b.alignment);
    assert_eq!(a.data_offset, b.data_offset);
    assert_eq!(a.file_len, b.file_len);
    assert_eq!(a.tensors(), b.tensors());
    let ma: Vec<_> = a.metadata().collect();
    let mb: Vec<_> = b.metadata().collect();
    assert_eq!(ma, mb);
}

/// Checks what every successful parse must guarantee about the tensors.
pub fn check_tensor_layout(g: &Gguf) {
    assert_eq!(g.data_offset % g.alignment, 0, "data section start {} unaligned", g.data_offset);
    for t in g.tensors() {
        let end = t.offset.checked_add(t.size).expect("tensor end overflows");
        assert!(t.offset >= g.data_offset, "{} starts before the data section", t.name);
        assert!(end <= g.file_len, "{} ends at {end}, past {}", t.name, g.file_len);
        assert_eq!(t.offset % g.alignment, 0, "{} offset {} unaligned", t.name, t.offset);
        assert_eq!(Some(t.size), t.ty.bytes_for(t.n_elements()), "{} size", t.name);
        assert!((1..=4).contains(&t.dims.len()), "{} dims {:?}", t.name, t.dims);
        assert_eq!(t.dims[0] % t.ty.block_len() as u64, 0, "{} rows", t.name);
        assert_eq!(g.find_tensor(&t.name), Some(t));
    }
}

/// A source over bytes in memory that records every read.
pub struct CountingSource<'a> {
    pub bytes: &'a [u8],
    pub reads: RefCell<Vec<(u64, u64)>>,
}

impl<'a> CountingSource<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        CountingSource { bytes, reads: RefCell::new(Vec::new()) }
    }
    pub fn reads(&self) -> Vec<(u64, u64)> {
        self.reads.borrow().clone()
    }
}

impl TensorSource for CountingSource<'_> {
    fn len(&self) -> u64 {
        self.bytes.len() as u64
    }
    async fn read(&self, offset: u64, len: u64) -> Result<Vec<u8>, GgufError> {
        self.reads.borrow_mut().push((offset, len));
        self.bytes.read(offset, len).await
    }
}

/// A little-endian byte builder for hand-made GGUF files.
#[derive(Default, Clone)]
pub struct Raw(pub Vec<u8>);

impl Raw {
    /// Magic, version and the two counts.
    pub fn header(version: u32, tensor_count: u64, kv_count: u64) -> Raw {
        let mut r = Raw::default();
        r.bytes(b"GGUF").u32(version).u64(tensor_count).u64(kv_count);
        r
    }
    pub fn pos(&self) -> u64 {
        self.0.len() as u64
    }
    pub fn bytes(&mut self, b: &[u8]) -> &mut Self {
        self.0.extend_from_slice(b);
        self
    }
    pub fn u8(&mut self, v: u8) -> &mut Self {
        self.0.push(v);
        self
    }
    pub fn u32(&mut self, v: u32) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    pub fn u64(&mut self, v: u64) -> &mut Self {
        self.bytes(&v.to_le_bytes())
    }
    /// A GGUF string: u64 length then the bytes (any bytes, UTF-8 or not).
    pub fn str(&mut self, s: &[u8]) -> &mut Self {
        self.u64(s.len() as u64).bytes(s)
    }
    /// A `u32` metadata entry.
    pub fn kv_u32(&mut self, key: &str, v: u32) -> &mut Self {
        self.str(key.as_bytes()).u32(ValueType::U32.id()).u32(v)
    }
    /// One tensor info.
    pub fn tensor_info(&mut self, name: &[u8], dims: &[u64], type_id: u32, offset: u64) -> &mut Self {
        self.str(name).u32(dims.len() as u32);
        for &d in dims {
            self.u64(d);
        }
        self.u32(type_id).u64(offset)
    }
    /// Zero padding up to a multiple of `alignment`.
    pub fn pad(&mut self, alignment: u64) -> &mut Self {
        let n = self.pos().next_multiple_of(alignment);
        self.0.resize(n as usize, 0);
        self
    }
    pub fn zeros(&mut self, n: usize) -> &mut Self {
        self.0.resize(self.0.len() + n, 0);
        self
    }
    pub fn done(&self) -> Vec<u8> {
        self.0.clone()
    }
}

/// Path of the real SmolLM2 model (env `CLASSTUNE_MODEL`, else the cache default).
pub fn model_path() -> std::path::PathBuf {
    classtune::paths::default_model()
}
