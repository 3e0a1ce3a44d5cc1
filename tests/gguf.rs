//! GGUF reader: round trips through `GgufWriter`, the real SmolLM2 file, and a typed,
//! well-placed error for every kind of bad input.

mod common;

use classtune::gguf::write::GgufWriter;
use classtune::gguf::{GgmlType, Gguf, GgufError, MappedFile, TensorSource, Value, ValueType};
use common::*;

/// The error of parsing a complete file, with its message.
fn parse_err(bytes: &[u8]) -> (GgufError, String) {
    match parse_all(bytes) {
        Ok(g) => panic!("expected an error, parsed {} tensors", g.tensors().len()),
        Err(e) => {
            let msg = e.to_string();
            (e, msg)
        }
    }
}

fn assert_mentions(msg: &str, parts: &[&str]) {
    for part in parts {
        assert!(msg.contains(part), "message {msg:?} does not mention {part:?}");
    }
}

/// Writes the parsed file back: metadata in order, tensor data read through the source.
fn rewrite(g: &Gguf, source: &[u8]) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (key, value) in g.metadata() {
        w.set(key, value.clone());
    }
    for t in g.tensors() {
        let data = block_on(source.tensor(t)).expect("tensor data");
        w.tensor(&t.name, &t.dims, t.ty, data).expect("tensor");
    }
    w.to_bytes()
}

// ---------------------------------------------------------------------------------------
// Round trips

fn check_round_trip(alignment: Option<u32>) {
    let bytes = sample_writer(alignment).to_bytes();
    let g = parse_all(&bytes).expect("parse");
    let expected_alignment = alignment.unwrap_or(32) as u64;
    assert_eq!(g.version, 3);
    assert_eq!(g.alignment, expected_alignment);
    assert_eq!(g.file_len, bytes.len() as u64);

    // Metadata: same keys, same order, same values and types.
    let mut expected: Vec<(String, Value)> = Vec::new();
    if let Some(a) = alignment {
        expected.push(("general.alignment".into(), Value::U32(a)));
    }
    expected.extend(sample_metadata().into_iter().map(|(k, v)| (k.to_string(), v)));
    let got: Vec<(String, Value)> = g.metadata().map(|(k, v)| (k.to_string(), v.clone())).collect();
    assert_eq!(got, expected);
    for (key, value) in &expected {
        assert_eq!(g.get(key), Some(value), "{key}");
        assert_eq!(g.get(key).unwrap().value_type(), value.value_type(), "{key}");
    }

    // Tensors: names, dims, types in order; aligned offsets; bytes back through the source.
    let tensors = sample_tensors();
    assert_eq!(g.tensors().len(), tensors.len());
    check_tensor_layout(&g);
    let mut previous_end = g.data_offset;
    for ((name, dims, ty, data), info) in tensors.iter().zip(g.tensors()) {
        assert_eq!(info.name, *name);
        assert_eq!(&info.dims, dims, "{name}");
        assert_eq!(info.ty, *ty, "{name}");
        assert_eq!(info.size, data.len() as u64, "{name}");
        assert_eq!(info.offset % expected_alignment, 0, "{name} at {}", info.offset);
        assert!(info.offset >= previous_end, "{name} overlaps the previous tensor");
        previous_end = info.offset + info.size;
        let read = block_on(bytes[..].tensor(info)).expect("read tensor");
        assert_eq!(&read, data, "{name} data");
        assert_eq!(g.tensor(name).unwrap(), info);
    }
    assert_eq!(previous_end, bytes.len() as u64, "file ends with the last tensor");

    // Writing the parse back gives the very same bytes.
    assert_eq!(rewrite(&g, &bytes), bytes);

    // The source's header() agrees with parse().
    let via_source = block_on(bytes[..].header()).expect("header");
    assert_same_gguf(&via_source, &g);
}

#[test]
fn round_trip_default_alignment() {
    check_round_trip(None);
}

#[test]
fn round_trip_alignment_32() {
    check_round_trip(Some(32));
}

#[test]
fn round_trip_alignment_64() {
    check_round_trip(Some(64));
}

#[test]
fn round_trip_alignment_1_and_256() {
    check_round_trip(Some(1));
    check_round_trip(Some(256));
}

#[test]
fn version_2_reads_like_version_3() {
    let mut bytes = small_file();
    bytes[4..8].copy_from_slice(&2u32.to_le_bytes());
    let g = parse_all(&bytes).expect("v2");
    assert_eq!(g.version, 2);
    assert_eq!(g.tensors().len(), 2);
}

#[test]
fn empty_file_without_tensors_parses() {
    let bytes = GgufWriter::new().to_bytes();
    let g = parse_all(&bytes).expect("empty");
    assert_eq!(g.tensors().len(), 0);
    assert_eq!(g.metadata().count(), 0);
}

#[test]
fn getters_accept_the_right_types() {
    let g = parse_all(&sample_writer(None).to_bytes()).unwrap();
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u32("test.u32").unwrap(), 0xDEAD_BEEF);
    assert_eq!(g.get_u32("test.u8").unwrap(), 0xAB);
    assert_eq!(g.get_u64("test.u64").unwrap(), u64::MAX - 1);
    assert_eq!(g.get_f32("test.f32").unwrap(), -1.5e-3);
    assert_eq!(g.get_f32("test.f64").unwrap(), std::f32::consts::PI);
    assert!(g.get_bool("test.bool_true").unwrap());
    assert!(!g.get_bool("test.bool_false").unwrap());
    assert_eq!(g.get_array("test.array_i32").unwrap().len(), 3);
    assert_eq!(g.get_array("test.array_empty").unwrap().len(), 0);
    assert_eq!(g.get_strings("test.array_strings").unwrap(), vec!["a", "", "Ġthe"]);
    assert_eq!(g.get_strings("test.array_empty_strings").unwrap(), Vec::<&str>::new());
}

// ---------------------------------------------------------------------------------------
// Header from a growing prefix

/// A file whose header is longer than the 1 MiB first read of `TensorSource::header`.
fn big_header_file() -> Vec<u8> {
    let tokens: Vec<Value> = (0..70_000).map(|i| Value::String(format!("token-number-{i:08}"))).collect();
    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("tokenizer.ggml.tokens", Value::Array(ValueType::String, tokens));
    w.set("after.tokens", Value::U32(7));
    w.tensor("late", &[64], GgmlType::F32, pseudo_bytes(9, 256)).unwrap();
    w.to_bytes()
}

#[test]
fn header_grows_the_prefix_until_complete() {
    let bytes = big_header_file();
    let full = parse_all(&bytes).expect("parse");
    assert!(full.data_offset > 1 << 20, "header should exceed the first 1 MiB read");

    let source = CountingSource::new(&bytes);
    let g = block_on(source.header()).expect("header over a short first prefix");
    assert_same_gguf(&g, &full);
    assert_eq!(g.get_u32("after.tokens").unwrap(), 7);
    let reads = source.reads();
    assert!(reads.len() >= 2, "expected a growing prefix, got reads {reads:?}");
    assert_eq!(reads[0], (0, 1 << 20));
    assert!(reads.iter().all(|&(o, _)| o == 0), "header reads start at 0: {reads:?}");
    assert!(reads.windows(2).all(|w| w[1].1 > w[0].1), "each read longer: {reads:?}");
    assert!(reads.len() <= 4, "too many reads: {reads:?}");

    let late = g.tensor("late").unwrap();
    let data = block_on(source.tensor(late)).unwrap();
    assert_eq!(data, pseudo_bytes(9, 256));
}

#[test]
fn header_of_a_small_file_takes_one_read() {
    let bytes = sample_writer(Some(64)).to_bytes();
    let source = CountingSource::new(&bytes);
    block_on(source.header()).expect("header");
    assert_eq!(source.reads(), vec![(0, bytes.len() as u64)]);
}

#[test]
fn header_of_a_truncated_file_stops_with_truncated() {
    let bytes = big_header_file();
    let cut = &bytes[..(1 << 20) + 12345];
    let source = CountingSource::new(cut);
    let err = block_on(source.header()).expect_err("truncated header");
    match err {
        GgufError::Truncated { offset, available, .. } => {
            assert!(offset <= cut.len() as u64);
            assert_eq!(available, cut.len() as u64);
        }
        other => panic!("expected Truncated, got {other:?}"),
    }
    assert!(source.reads().len() <= 3, "reads {:?}", source.reads());
}

#[test]
fn prefix_parse_is_truncated_inside_the_header_and_complete_after_it() {
    let bytes = sample_writer(Some(64)).to_bytes();
    let len = bytes.len() as u64;
    let full = parse_all(&bytes).unwrap();
    for cut in 0..bytes.len() {
        match Gguf::parse(&bytes[..cut], len) {
            Ok(g) => assert_same_gguf(&g, &full),
            Err(e @ GgufError::Truncated { .. }) => {
                let GgufError::Truncated { offset, needed, available, .. } = e else { unreachable!() };
                assert_eq!(available, cut as u64);
                assert!(offset <= cut as u64 && offset + needed > cut as u64, "cut {cut}: {e}");
                let next = Gguf::header_len_hint(&e, len).expect("a longer prefix helps");
                assert!(next > cut as u64 && next <= len, "cut {cut}: hint {next}");
            }
            Err(e) => panic!("cut {cut}: prefix parse gave {e}"),
        }
    }
}

// ---------------------------------------------------------------------------------------
// The real model

#[test]
fn smollm2_real_model() {
    let path = model_path();
    assert!(
        path.exists(),
        "model {} not found: run scripts/setup.sh to download it (or set CLASSTUNE_MODEL)",
        path.display()
    );
    let file = MappedFile::open(&path).expect("open model");
    let source = CountingSource::new(file.bytes());
    let g = block_on(source.header()).expect("parse model header");
    let direct = block_on(file.header()).expect("header through MappedFile");
    assert_same_gguf(&g, &direct);

    assert_eq!(g.version, 3);
    assert_eq!(g.tensors().len(), 272);
    check_tensor_layout(&g);
    assert_eq!(g.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(g.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(g.get_str("tokenizer.ggml.model").unwrap(), "gpt2");
    assert_eq!(g.get_strings("tokenizer.ggml.tokens").unwrap().len(), 49152);
    assert_eq!(g.get_strings("tokenizer.ggml.merges").unwrap().len(), 48900);

    let embd = g.tensor("token_embd.weight").unwrap();
    assert_eq!(embd.ty, GgmlType::Q8_0);
    assert_eq!(embd.dims, vec![576, 49152]);
    assert_eq!(embd.size, 576 * 49152 / 32 * 34);
    let q4_1 = g.tensors().iter().filter(|t| t.ty == GgmlType::Q4_1).count();
    assert_eq!(q4_1, 210);

    // Tensors do not overlap, and reading one through the source gives the mapped bytes.
    let mut spans: Vec<(u64, u64)> = g.tensors().iter().map(|t| (t.offset, t.offset + t.size)).collect();
    spans.sort();
    assert!(spans.windows(2).all(|w| w[0].1 <= w[1].0), "tensors overlap");
    let norm = g.tensor("output_norm.weight").unwrap();
    assert_eq!(norm.ty, GgmlType::F32);
    let data = block_on(file.tensor(norm)).unwrap();
    assert_eq!(data, file.bytes()[norm.offset as usize..(norm.offset + norm.size) as usize]);
    assert!(data.chunks(4).all(|c| f32::from_le_bytes(c.try_into().unwrap()).is_finite()));

    let reads = source.reads();
    assert!(reads.len() <= 3, "header took too many reads: {reads:?}");
}

// ---------------------------------------------------------------------------------------
// Bad input

#[test]
fn wrong_magic() {
    let mut bytes = small_file();
    bytes[..4].copy_from_slice(b"GGUX");
    let (e, msg) = parse_err(&bytes);
    assert!(matches!(e, GgufError::BadMagic { found } if &found == b"GGUX"), "{e:?}");
    assert!(e.to_string().contains("found `GGUX`"), "{e}");
    assert_mentions(&msg, &["magic", "GGUF", "byte 0"]);
}

#[test]
fn unsupported_versions() {
    for version in [0u32, 1, 4, u32::MAX] {
        let mut bytes = small_file();
        bytes[4..8].copy_from_slice(&version.to_le_bytes());
        let (e, msg) = parse_err(&bytes);
        assert!(matches!(e, GgufError::UnsupportedVersion { version: v } if v == version), "{e:?}");
        assert_mentions(&msg, &["unsupported", &format!("version {version}")]);
    }
}

#[test]
fn every_cut_of_a_small_file_is_an_error() {
    let bytes = small_file();
    let full = parse_all(&bytes).unwrap();
    for cut in 0..bytes.len() {
        let prefix = &bytes[..cut];
        let e = parse_all(prefix).expect_err(&format!("cut at {cut} parsed"));
        let msg = e.to_string();
        match e {
            GgufError::Truncated { offset, needed, available, .. } => {
                assert!(offset <= cut as u64, "cut {cut}: offset {offset} outside the file");
                assert!(offset + needed > cut as u64, "cut {cut}: {msg}");
                assert_eq!(available, cut as u64);
                assert_mentions(&msg, &["truncated", &format!("at byte {offset}")]);
                assert_eq!(
                    Gguf::header_len_hint(
                        &GgufError::Truncated { what: String::new(), offset, needed, available },
                        cut as u64
                    ),
                    None
                );
            }
            // Counts are checked against the file length, so a cut can also read as an
            // implausible count; past the header, tensors no longer fit.
            GgufError::ImplausibleCount { offset, .. } => assert!(offset < cut as u64),
            GgufError::TensorPastEnd { end, file_len, .. } => {
                assert!(cut as u64 >= full.data_offset - 32, "cut {cut}");
                assert_eq!(file_len, cut as u64);
                assert!(end > file_len);
            }
            other => panic!("cut {cut}: unexpected {other:?}"),
        }
    }
}

#[test]
fn truncated_message_names_what_and_where() {
    let bytes = small_file();
    let (e, msg) = parse_err(&bytes[..10]);
    assert!(matches!(e, GgufError::Truncated { offset: 8, needed: 8, available: 10, .. }), "{e:?}");
    assert_mentions(&msg, &["truncated", "tensor", "at byte 8", "needs 8"]);
    let (e, _) = parse_err(&[]);
    assert!(matches!(e, GgufError::Truncated { offset: 0, needed: 4, .. }), "{e:?}");
}

#[test]
fn tensor_past_end_of_file() {
    // The last tensor loses its final byte.
    let bytes = small_file();
    let (e, msg) = parse_err(&bytes[..bytes.len() - 1]);
    match &e {
        GgufError::TensorPastEnd { name, end, file_len } => {
            assert_eq!(name, "b");
            assert_eq!(*end, bytes.len() as u64);
            assert_eq!(*file_len, bytes.len() as u64 - 1);
        }
        other => panic!("{other:?}"),
    }
    assert_mentions(&msg, &["`b`", "past the end", &format!("({} bytes)", bytes.len() - 1)]);

    // An offset far out, and one that overflows u64.
    for offset in [1u64 << 40, u64::MAX - 31] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor_info(b"far", &[4], 0, offset).pad(32).zeros(16);
        let (e, msg) = parse_err(&r.done());
        assert!(matches!(&e, GgufError::TensorPastEnd { name, .. } if name == "far"), "{e:?}");
        assert_mentions(&msg, &["`far`", "past the end"]);
    }
}

#[test]
fn misaligned_tensor_offset() {
    let mut r = Raw::header(3, 2, 0);
    r.tensor_info(b"ok", &[4], 0, 0).tensor_info(b"odd", &[4], 0, 16).pad(32).zeros(64);
    let (e, msg) = parse_err(&r.done());
    assert!(matches!(&e, GgufError::Misaligned { name, offset: 16, alignment: 32 } if name == "odd"), "{e:?}");
    assert_mentions(&msg, &["`odd`", "offset 16", "alignment 32"]);

    // With a custom alignment of 64, offset 32 is misaligned.
    let mut r = Raw::header(3, 1, 1);
    r.kv_u32("general.alignment", 64).tensor_info(b"t", &[4], 0, 32).pad(64).zeros(128);
    let (e, _) = parse_err(&r.done());
    assert!(matches!(&e, GgufError::Misaligned { offset: 32, alignment: 64, .. }), "{e:?}");
}

#[test]
fn unknown_tensor_types() {
    // 99: no such GGML type; 13: Q5_K, real but unsupported; 31+: beyond any type.
    for type_id in [99u32, 13, 6, 31, u32::MAX] {
        let mut r = Raw::header(3, 1, 0);
        r.tensor_info(b"weird", &[256], type_id, 0).pad(32).zeros(1024);
        let (e, msg) = parse_err(&r.done());
        assert!(
            matches!(&e, GgufError::UnknownTensorType { name, type_id: t } if name == "weird" && *t == type_id),
            "{e:?}"
        );
        assert_mentions(&msg, &["`weird`", &format!("type id {type_id}")]);
    }
}

#[test]
fn unknown_metadata_value_type() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("good", 1).str(b"bad.key");
    let type_offset = r.pos();
    r.u32(13).u32(0);
    let (e, msg) = parse_err(&r.done());
    assert!(matches!(e, GgufError::UnknownValueType { offset, type_id: 13 } if offset == type_offset), "{e:?}");
    assert_mentions(&msg, &["unknown value type 13", &format!("byte {type_offset}")]);

    // An unknown element type inside an array.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"arr").u32(ValueType::Array.id());
    let elem_offset = r.pos();
    r.u32(77).u64(1).u64(0);
    let (e, _) = parse_err(&r.done());
    assert!(matches!(e, GgufError::UnknownValueType { offset, type_id: 77 } if offset == elem_offset), "{e:?}");
}

#[test]
fn invalid_utf8() {
    // In a key.
    let mut r = Raw::header(3, 0, 1);
    r.str(&[b'k', 0xFF, 0xFE]).u32(ValueType::U8.id()).u8(1);
    let (e, msg) = parse_err(&r.done());
    assert!(matches!(e, GgufError::InvalidUtf8 { offset: 24 }), "{e:?}");
    assert_mentions(&msg, &["UTF-8", "byte 24"]);

    // In a string value, and in a tensor name.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"key").u32(ValueType::String.id());
    let at = r.pos();
    r.str(&[0xC3, 0x28]);
    let (e, _) = parse_err(&r.done());
    assert!(matches!(e, GgufError::InvalidUtf8 { offset } if offset == at), "{e:?}");

    let mut r = Raw::header(3, 1, 0);
    r.tensor_info(&[0x80], &[1], 0, 0).pad(32).zeros(4);
    let (e, _) = parse_err(&r.done());
    assert!(matches!(e, GgufError::InvalidUtf8 { offset: 24 }), "{e:?}");
}

#[test]
fn absurd_counts_are_rejected_before_allocating() {
    let (e, msg) = parse_err(&Raw::header(3, u64::MAX, 0).zeros(64).done());
    assert!(matches!(e, GgufError::ImplausibleCount { what: "tensor", count: u64::MAX, offset: 8, .. }), "{e:?}");
    assert_mentions(&msg, &["tensor count 18446744073709551615", "byte 8", "implausible"]);

    let (e, _) = parse_err(&Raw::header(3, 0, u64::MAX).zeros(64).done());
    assert!(matches!(e, GgufError::ImplausibleCount { what: "metadata key", offset: 16, .. }), "{e:?}");

    for elem in [ValueType::U8, ValueType::String, ValueType::Array] {
        let mut r = Raw::header(3, 0, 1);
        r.str(b"arr").u32(ValueType::Array.id()).u32(elem.id());
        let count_offset = r.pos();
        r.u64(1 << 60).zeros(64);
        let (e, msg) = parse_err(&r.done());
        assert!(
            matches!(e, GgufError::ImplausibleCount { what: "array element", count, offset, .. }
                if count == 1 << 60 && offset == count_offset),
            "{elem:?}: {e:?}"
        );
        assert_mentions(&msg, &["array element count 1152921504606846976", &format!("byte {count_offset}")]);
    }

    // A string length beyond the file is truncation, not an allocation.
    let mut r = Raw::header(3, 0, 1);
    r.u64(u64::MAX).zeros(16);
    let (e, _) = parse_err(&r.done());
    assert!(matches!(e, GgufError::Truncated { offset: 32, needed: u64::MAX, .. }), "{e:?}");
    let hint = Gguf::header_len_hint(&e, 1 << 40);
    assert_eq!(hint, Some(1 << 40), "the hint saturates instead of overflowing");
}

#[test]
fn counts_plausible_for_a_huge_file_do_not_allocate_from_a_short_prefix() {
    // A prefix of a (claimed) 1 TiB file: counts pass the file-size check, so the parser
    // must not reserve room for them before it has the bytes.
    let file_len = 1u64 << 40;
    let mut r = Raw::header(3, 1 << 34, 1);
    r.str(b"arr").u32(ValueType::Array.id()).u32(ValueType::U8.id()).u64(1 << 39).zeros(100);
    let e = Gguf::parse(&r.done(), file_len).expect_err("prefix");
    assert!(matches!(e, GgufError::Truncated { available, .. } if available == r.pos()), "{e:?}");
    assert!(Gguf::header_len_hint(&e, file_len).is_some());

    let r = Raw::header(3, 1 << 34, 1 << 34);
    let e = Gguf::parse(&r.done(), file_len).expect_err("prefix");
    assert!(matches!(e, GgufError::Truncated { offset: 24, .. }), "{e:?}");
}

#[test]
fn duplicates() {
    let mut r = Raw::header(3, 0, 2);
    r.kv_u32("dup.key", 1).kv_u32("dup.key", 2);
    let (e, msg) = parse_err(&r.done());
    assert!(matches!(&e, GgufError::Duplicate { what: "metadata key", name } if name == "dup.key"), "{e:?}");
    assert_mentions(&msg, &["metadata key `dup.key`", "twice"]);

    let mut r = Raw::header(3, 2, 0);
    r.tensor_info(b"w", &[8], 0, 0).tensor_info(b"w", &[8], 0, 32).pad(32).zeros(64);
    let (e, msg) = parse_err(&r.done());
    assert!(matches!(&e, GgufError::Duplicate { what: "tensor", name } if name == "w"), "{e:?}");
    assert_mentions(&msg, &["tensor `w`", "twice"]);

    // The writer refuses to make such a file.
    let mut w = GgufWriter::new();
    w.tensor("w", &[8], GgmlType::F32, vec![0; 32]).unwrap();
    let e = w.tensor("w", &[8], GgmlType::F32, vec![0; 32]).map(|_| ()).expect_err("dup");
    assert!(matches!(e, GgufError::Duplicate { what: "tensor", .. }), "{e:?}");
}

#[test]
fn dimension_counts() {
    for n_dims in [0u32, 5, 1000, u32::MAX] {
        let mut r = Raw::header(3, 1, 0);
        r.str(b"shape");
        let at = r.pos();
        r.u32(n_dims).zeros(200);
        let (e, msg) = parse_err(&r.done());
        assert!(matches!(&e, GgufError::BadShape { name, .. } if name == "shape"), "{e:?}");
        assert_mentions(&msg, &["`shape`", &format!("{n_dims} dimensions at byte {at}"), "1 to 4"]);
    }
    // The writer refuses them too.
    let mut w = GgufWriter::new();
    assert!(matches!(w.tensor("z", &[], GgmlType::F32, vec![0; 4]), Err(GgufError::BadShape { .. })));
    assert!(matches!(w.tensor("f", &[1, 1, 1, 1, 1], GgmlType::F32, vec![0; 4]), Err(GgufError::BadShape { .. })));
}

#[test]
fn rows_must_be_whole_blocks() {
    // Q4_0 rows of 16 values: 32 values in total, but not a whole block per row.
    let mut r = Raw::header(3, 1, 0);
    r.tensor_info(b"q", &[16, 2], GgmlType::Q4_0.id(), 0).pad(32).zeros(64);
    let (e, msg) = parse_err(&r.done());
    assert!(matches!(&e, GgufError::BadShape { name, dims, .. } if name == "q" && dims == &[16, 2]), "{e:?}");
    assert_mentions(&msg, &["`q`", "[16, 2]", "16 values", "Q4_0", "32"]);

    let mut r = Raw::header(3, 1, 0);
    r.tensor_info(b"k", &[128, 2], GgmlType::Q6_K.id(), 0).pad(32).zeros(512);
    let (e, msg) = parse_err(&r.done());
    assert!(matches!(&e, GgufError::BadShape { .. }), "{e:?}");
    assert_mentions(&msg, &["`k`", "Q6_K", "256"]);

    // Element counts that overflow u64.
    let mut r = Raw::header(3, 1, 0);
    r.tensor_info(b"huge", &[1 << 32, 1 << 32, 2], 0, 0).pad(32).zeros(64);
    let (e, msg) = parse_err(&r.done());
    assert!(matches!(&e, GgufError::BadShape { .. }), "{e:?}");
    assert_mentions(&msg, &["`huge`", "overflows"]);

    // The writer checks rows too.
    let mut w = GgufWriter::new();
    let e = w.tensor("q", &[16, 2], GgmlType::Q4_0, vec![0; 18]).map(|_| ()).expect_err("rows");
    assert!(matches!(e, GgufError::BadShape { .. }), "{e:?}");
    let e = w.tensor("o", &[u64::MAX, 2], GgmlType::F32, vec![]).map(|_| ()).expect_err("overflow");
    assert!(matches!(e, GgufError::BadShape { .. }), "{e:?}");
}

#[test]
fn alignment_must_be_a_power_of_two() {
    for bad in [Value::U32(0), Value::U32(48), Value::U32(3), Value::I32(-32), Value::String("32".into())] {
        let mut w = GgufWriter::new();
        w.set("general.alignment", bad.clone());
        let (e, msg) = parse_err(&w.to_bytes());
        assert!(
            matches!(&e, GgufError::WrongType { key, expected: "a power of two", .. } if key == "general.alignment"),
            "{bad:?}: {e:?}"
        );
        assert_mentions(&msg, &["general.alignment", "power of two"]);
    }
}

#[test]
fn array_nesting_is_bounded() {
    // 10,000 nested arrays must not recurse 10,000 deep.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"deep").u32(ValueType::Array.id());
    for _ in 0..10_000 {
        r.u32(ValueType::Array.id()).u64(1);
    }
    r.u32(ValueType::U8.id()).u64(0);
    let e = parse_all(&r.done()).unwrap_err();
    assert!(matches!(e, GgufError::NestedTooDeep { limit: 4, .. }), "{e:?}");
    assert!(e.to_string().contains("nested deeper than 4 levels"), "{e}");

    // Two levels, as real files use, are fine.
    let mut r = Raw::header(3, 0, 1);
    r.str(b"two")
        .u32(ValueType::Array.id())
        .u32(ValueType::Array.id())
        .u64(1)
        .u32(ValueType::U8.id())
        .u64(2)
        .u8(1)
        .u8(2);
    let g = parse_all(&r.done()).unwrap();
    assert_eq!(
        g.get("two"),
        Some(&Value::Array(ValueType::Array, vec![Value::Array(ValueType::U8, vec![Value::U8(1), Value::U8(2)])]))
    );
}

#[test]
fn getters_report_missing_keys_and_wrong_types() {
    let g = parse_all(&sample_writer(None).to_bytes()).unwrap();

    let e = g.get_u32("no.such.key").unwrap_err();
    assert!(matches!(&e, GgufError::MissingKey { key } if key == "no.such.key"), "{e:?}");
    assert_mentions(&e.to_string(), &["`no.such.key`", "missing"]);
    assert!(g.get("no.such.key").is_none());
    for e in [
        g.get_str("nope").unwrap_err(),
        g.get_f32("nope").unwrap_err(),
        g.get_bool("nope").unwrap_err(),
        g.get_u64("nope").unwrap_err(),
        g.get_array("nope").unwrap_err(),
        g.get_strings("nope").unwrap_err(),
    ] {
        assert!(matches!(e, GgufError::MissingKey { .. }), "{e:?}");
    }

    let wrong = |e: GgufError, key: &str, expected: &str, found: &str| {
        let msg = e.to_string();
        match e {
            GgufError::WrongType { key: k, expected: x, found: f } => {
                assert_eq!((k.as_str(), x, f.as_str()), (key, expected, found));
            }
            other => panic!("{key}: expected WrongType, got {other:?}"),
        }
        assert_mentions(&msg, &[&format!("`{key}`"), expected, found]);
    };
    wrong(g.get_u32("general.architecture").unwrap_err(), "general.architecture", "a u32", "string");
    wrong(g.get_u32("test.u64").unwrap_err(), "test.u64", "a u32", "u64");
    wrong(g.get_u64("test.i8").unwrap_err(), "test.i8", "an unsigned integer", "i8");
    wrong(g.get_str("test.u32").unwrap_err(), "test.u32", "a string", "u32");
    wrong(g.get_bool("test.u8").unwrap_err(), "test.u8", "a bool", "u8");
    wrong(g.get_f32("test.string").unwrap_err(), "test.string", "a number", "string");
    wrong(g.get_array("test.f64").unwrap_err(), "test.f64", "an array", "f64");
    wrong(g.get_strings("test.array_i32").unwrap_err(), "test.array_i32", "an array of strings", "i32");
    wrong(g.get_strings("test.u8").unwrap_err(), "test.u8", "an array", "u8");

    let e = g.tensor("no.tensor").unwrap_err();
    assert!(matches!(&e, GgufError::MissingTensor { name } if name == "no.tensor"), "{e:?}");
    assert_mentions(&e.to_string(), &["`no.tensor`", "missing"]);
}

#[test]
fn reading_outside_the_source_is_an_error() {
    let bytes = small_file();
    let g = parse_all(&bytes).unwrap();
    let mut info = g.tensor("b").unwrap().clone();
    info.offset = bytes.len() as u64 - 1;
    let e = block_on(bytes[..].tensor(&info)).unwrap_err();
    assert!(matches!(e, GgufError::Truncated { .. }), "{e:?}");
    info.offset = u64::MAX;
    assert!(block_on(bytes[..].tensor(&info)).is_err());
}
