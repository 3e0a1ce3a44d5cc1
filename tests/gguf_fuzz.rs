//! Property tests for the GGUF reader: arbitrary and corrupted input never panics, and
//! whatever parses describes tensors that lie inside the file.

mod common;

use classtune::gguf::write::GgufWriter;
use classtune::gguf::{GgmlType, Gguf, TensorSource, Value, ValueType};
use common::*;
use proptest::prelude::*;

const LEAF_TYPES: [ValueType; 12] = [
    ValueType::U8,
    ValueType::I8,
    ValueType::U16,
    ValueType::I16,
    ValueType::U32,
    ValueType::I32,
    ValueType::F32,
    ValueType::Bool,
    ValueType::String,
    ValueType::U64,
    ValueType::I64,
    ValueType::F64,
];

const TENSOR_TYPES: [GgmlType; 8] = GgmlType::ALL;

fn leaf(ty: ValueType) -> BoxedStrategy<Value> {
    match ty {
        ValueType::U8 => any::<u8>().prop_map(Value::U8).boxed(),
        ValueType::I8 => any::<i8>().prop_map(Value::I8).boxed(),
        ValueType::U16 => any::<u16>().prop_map(Value::U16).boxed(),
        ValueType::I16 => any::<i16>().prop_map(Value::I16).boxed(),
        ValueType::U32 => any::<u32>().prop_map(Value::U32).boxed(),
        ValueType::I32 => any::<i32>().prop_map(Value::I32).boxed(),
        ValueType::F32 => any::<f32>().prop_map(Value::F32).boxed(),
        ValueType::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
        ValueType::String => ".{0,6}".prop_map(Value::String).boxed(),
        ValueType::U64 => any::<u64>().prop_map(Value::U64).boxed(),
        ValueType::I64 => any::<i64>().prop_map(Value::I64).boxed(),
        ValueType::F64 => any::<f64>().prop_map(Value::F64).boxed(),
        ValueType::Array => unreachable!("arrays are built by `array`"),
    }
}

fn leaf_value() -> BoxedStrategy<Value> {
    proptest::sample::select(&LEAF_TYPES[..]).prop_flat_map(leaf).boxed()
}

fn array(max: usize) -> BoxedStrategy<Value> {
    proptest::sample::select(&LEAF_TYPES[..])
        .prop_flat_map(move |ty| proptest::collection::vec(leaf(ty), 0..max).prop_map(move |v| Value::Array(ty, v)))
        .boxed()
}

/// Any metadata value: a leaf, an array, or an array of arrays.
fn value() -> BoxedStrategy<Value> {
    prop_oneof![
        4 => leaf_value(),
        2 => array(5),
        1 => proptest::collection::vec(array(3), 0..3).prop_map(|v| Value::Array(ValueType::Array, v)),
    ]
    .boxed()
}

/// One tensor: a type, a shape of whole-block rows and some bytes.
fn tensor() -> impl Strategy<Value = (GgmlType, Vec<u64>, u64)> {
    (proptest::sample::select(&TENSOR_TYPES[..]), 1..3u64, proptest::collection::vec(1..4u64, 0..3), any::<u64>())
        .prop_map(|(ty, blocks, rest, seed)| {
            let mut dims = vec![blocks * ty.block_len() as u64];
            dims.extend(rest);
            (ty, dims, seed)
        })
}

/// A valid file from the writer: random metadata, tensors and alignment.
fn valid_file() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(value(), 0..5),
        proptest::collection::vec(tensor(), 0..4),
        proptest::option::of(proptest::sample::select(vec![1u32, 8, 32, 64])),
    )
        .prop_map(|(values, tensors, alignment)| {
            let mut w = GgufWriter::new();
            if let Some(a) = alignment {
                w.set("general.alignment", Value::U32(a));
            }
            for (i, v) in values.into_iter().enumerate() {
                w.set(&format!("key.{i}"), v);
            }
            for (i, (ty, dims, seed)) in tensors.into_iter().enumerate() {
                let len = ty.bytes_for(dims.iter().product()).unwrap() as usize;
                w.tensor(&format!("tensor.{i}"), &dims, ty, pseudo_bytes(seed, len)).unwrap();
            }
            w.to_bytes()
        })
}

#[derive(Debug, Clone)]
enum Mutation {
    Set { at: usize, byte: u8 },
    Xor { at: usize, mask: u8 },
    Truncate { at: usize },
    InsertU64 { at: usize, value: u64 },
    OverwriteU64 { at: usize, value: u64 },
    Remove { at: usize, len: usize },
}

/// Interesting u64s: small, around powers of two, and extremes.
fn nasty_u64() -> impl Strategy<Value = u64> {
    prop_oneof![
        0..64u64,
        (0..64u32).prop_map(|s| 1u64 << s),
        (0..64u32).prop_map(|s| (1u64 << s).wrapping_sub(1)),
        Just(u64::MAX),
        any::<u64>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    // Positions are reduced modulo the file length when applied.
    let at = any::<usize>();
    prop_oneof![
        (at, any::<u8>()).prop_map(|(at, byte)| Mutation::Set { at, byte }),
        (at, 1..=255u8).prop_map(|(at, mask)| Mutation::Xor { at, mask }),
        at.prop_map(|at| Mutation::Truncate { at }),
        (at, nasty_u64()).prop_map(|(at, value)| Mutation::InsertU64 { at, value }),
        (at, nasty_u64()).prop_map(|(at, value)| Mutation::OverwriteU64 { at, value }),
        (at, 1..16usize).prop_map(|(at, len)| Mutation::Remove { at, len }),
    ]
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    let n = bytes.len();
    if n == 0 {
        return;
    }
    match *m {
        Mutation::Set { at, byte } => bytes[at % n] = byte,
        Mutation::Xor { at, mask } => bytes[at % n] ^= mask,
        Mutation::Truncate { at } => bytes.truncate(at % n),
        Mutation::InsertU64 { at, value } => {
            let at = at % (n + 1);
            bytes.splice(at..at, value.to_le_bytes());
        }
        Mutation::OverwriteU64 { at, value } => {
            let at = at % n;
            let end = (at + 8).min(n);
            bytes[at..end].copy_from_slice(&value.to_le_bytes()[..end - at]);
        }
        Mutation::Remove { at, len } => {
            let at = at % n;
            bytes.drain(at..(at + len).min(n));
        }
    }
}

/// Parses `bytes` every way the reader is used, checking whatever succeeds.
fn exercise(bytes: &[u8]) -> Result<(), TestCaseError> {
    let len = bytes.len() as u64;
    let parsed = Gguf::parse(bytes, len);
    // Through the source: the growing-prefix loop must end with the same answer.
    let via_source = block_on(bytes.header());
    prop_assert_eq!(parsed.is_ok(), via_source.is_ok());
    match &parsed {
        Ok(g) => {
            prop_assert_eq!(g.file_len, len);
            check_tensor_layout(g);
            for t in g.tensors() {
                let data = block_on(bytes.tensor(t));
                prop_assert!(data.is_ok(), "reading {} failed: {:?}", t.name, data);
                prop_assert_eq!(data.unwrap().len() as u64, t.size);
            }
        }
        Err(e) => {
            let _ = e.to_string();
            if let classtune::gguf::GgufError::Truncated { offset, available, .. } = e {
                prop_assert!(*offset <= len, "Truncated offset {} outside a {}-byte file", offset, len);
                prop_assert_eq!(*available, len);
            }
            // A complete file never asks for a longer prefix.
            prop_assert_eq!(Gguf::header_len_hint(e, len), None);
        }
    }
    // As a prefix of a longer file: never panics, and the hint, if any, grows.
    let claimed = len.saturating_mul(3).max(1);
    if let Err(e) = Gguf::parse(bytes, claimed) {
        if let Some(next) = Gguf::header_len_hint(&e, claimed) {
            prop_assert!(next > len && next <= claimed, "hint {} for prefix {} of {}", next, len, claimed);
        }
    }
    Ok(())
}

/// Cases per test: parses of files under 2 KB are cheap, even unoptimized (~1 s in all).
fn config(cases: u32) -> ProptestConfig {
    ProptestConfig { cases, failure_persistence: None, ..ProptestConfig::default() }
}

proptest! {
    #![proptest_config(config(2048))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes)?;
    }

    #[test]
    fn arbitrary_bytes_after_a_good_header_never_panic(
        version in prop_oneof![Just(3u32), Just(2u32), any::<u32>()],
        tensor_count in nasty_u64(),
        kv_count in nasty_u64(),
        rest in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let mut bytes = Raw::header(version, tensor_count % 8, kv_count % 8).done();
        if tensor_count & 1 == 1 {
            bytes[8..16].copy_from_slice(&tensor_count.to_le_bytes());
        }
        bytes.extend(rest);
        exercise(&bytes)?;
    }
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn generated_files_round_trip(bytes in valid_file()) {
        let g = parse_all(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        check_tensor_layout(&g);
        // Rewriting what was parsed reproduces the file bit for bit (NaNs included).
        let mut w = GgufWriter::new();
        for (key, value) in g.metadata() {
            w.set(key, value.clone());
        }
        for t in g.tensors() {
            let data = block_on(bytes[..].tensor(t)).map_err(|e| TestCaseError::fail(e.to_string()))?;
            w.tensor(&t.name, &t.dims, t.ty, data).map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert_eq!(w.to_bytes(), bytes);
    }

    #[test]
    fn every_prefix_is_truncated_or_complete(bytes in valid_file(), cut in any::<usize>()) {
        let len = bytes.len() as u64;
        let full = parse_all(&bytes).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let cut = cut % (bytes.len() + 1);
        match Gguf::parse(&bytes[..cut], len) {
            Ok(g) => assert_same_gguf(&g, &full),
            Err(e) => {
                let next = Gguf::header_len_hint(&e, len);
                prop_assert!(matches!(next, Some(n) if n > cut as u64), "cut {}: {}", cut, e);
            }
        }
    }
}

proptest! {
    #![proptest_config(config(4096))]

    #[test]
    fn mutated_files_never_panic(
        bytes in valid_file(),
        mutations in proptest::collection::vec(mutation(), 1..4),
    ) {
        let mut bytes = bytes;
        for m in &mutations {
            apply(&mut bytes, m);
        }
        exercise(&bytes)?;
    }
}
