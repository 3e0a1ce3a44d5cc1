//! llama.cpp LoRA GGUF adapters and merged models: round trips bit for bit, the file as
//! llama.cpp reads it, one test per rejected input, mutated bytes (no panics); merged
//! F16/Q8_0 models against the base model with the adapter attached, on the GPU.
//! `export_for_llama_cpp` (ignored) writes the files scripts/fixtures/check_gguf_exports.py
//! checks with llama.cpp.

use std::path::PathBuf;

use classtune::adapter::{
    folded_alpha, from_gguf_lora, gguf_lora_name, merge_to_gguf, to_gguf_lora, write_merged, Adapter, AdapterError,
    Factor, LoraConfig, LoraPair, MergePlan, MergeType, Target,
};
use classtune::gguf::write::GgufWriter;
use classtune::gguf::{dequant, GgmlType, Gguf, GgufError, Value};
use classtune::gpu::{Gpu, GpuOptions};
use classtune::model::{Config, KvCache, LoraWeights, Model};
use proptest::prelude::*;
use rand::{rngs::StdRng, Rng, SeedableRng};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A tiny fixture model: its bytes, header and configuration.
fn tiny(name: &str) -> (Vec<u8>, Gguf, Config) {
    let bytes = std::fs::read(root().join(format!("fixtures/tiny/{name}.gguf"))).unwrap();
    let gguf = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    let config = Config::from_gguf(&gguf).unwrap();
    (bytes, gguf, config)
}

/// Deterministic values in [-1, 1) with special bit patterns mixed in, so the round trip
/// is checked bit for bit.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let special = [-0.0f32, f32::MIN_POSITIVE / 4.0, 1e-30, -65504.0, f32::from_bits(0x7fc0_1234), f32::INFINITY];
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            match i % 89 == 11 {
                true => special[(x % special.len() as u64) as usize],
                false => (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0,
            }
        })
        .collect()
}

fn lora(rank: usize, alpha: f32, rslora: bool, targets: &[Target]) -> LoraConfig {
    LoraConfig { rank, alpha, dropout: 0.05, rslora, targets: targets.to_vec() }
}

fn adapter_with(model: &Config, config: LoraConfig, mut draw: impl FnMut(u64, usize) -> Vec<f32>) -> Adapter {
    let mut pairs = Vec::new();
    for layer in 0..model.n_layers {
        for &target in &config.targets {
            let (d_in, d_out) = target.dims(model);
            let s = 100 * layer as u64 + target as u64;
            let (a, b) = (draw(2 * s, config.rank * d_in), draw(2 * s + 1, d_out * config.rank));
            pairs.push(LoraPair { layer, target, d_in, d_out, a, b });
        }
    }
    Adapter { config, base_name: model.name.clone(), pairs }
}

/// Special bit patterns included: for file round trips only.
fn bit_adapter(model: &Config, config: LoraConfig) -> Adapter {
    adapter_with(model, config, |s, n| values(s + 7, n))
}

/// Finite values in ±`bound` (B nonzero): for computing with.
fn random_adapter(model: &Config, config: LoraConfig, seed: u64, bound: f32) -> Adapter {
    let mut rng = StdRng::seed_from_u64(seed);
    adapter_with(model, config, |_, n| (0..n).map(|_| rng.random_range(-bound..bound)).collect())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn assert_same(a: &Adapter, b: &Adapter) {
    assert_eq!(a.config, b.config);
    assert_eq!(a.base_name, b.base_name);
    assert_eq!(a.pairs.len(), b.pairs.len());
    for (p, q) in a.pairs.iter().zip(&b.pairs) {
        assert_eq!((p.layer, p.target, p.d_in, p.d_out), (q.layer, q.target, q.d_in, q.d_out));
        assert!(bits(&p.a) == bits(&q.a), "layer {} {:?}: A differs", p.layer, p.target);
        assert!(bits(&p.b) == bits(&q.b), "layer {} {:?}: B differs", p.layer, p.target);
    }
}

#[test]
fn round_trip_is_bit_exact() {
    for (name, configs) in [
        ("tiny-llama", [lora(4, 8.0, false, &Target::ALL), lora(3, 5.5, true, &[Target::Q, Target::K, Target::Down])]),
        ("tiny-qwen2", [lora(8, 16.0, true, &Target::ALL), lora(1, 0.25, false, &[Target::K, Target::Up])]),
    ] {
        let (_, base, model) = tiny(name);
        for config in configs {
            let original = bit_adapter(&model, config);
            let bytes = to_gguf_lora(&original, &base).unwrap();
            assert_same(&original, &from_gguf_lora(&bytes, &model).unwrap());
        }
    }
}

#[test]
fn file_is_what_llama_cpp_reads() {
    let (_, base, model) = tiny("tiny-llama");
    let adapter = bit_adapter(&model, lora(3, 6.0, true, &[Target::Q, Target::V, Target::Down]));
    let bytes = to_gguf_lora(&adapter, &base).unwrap();
    let file = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
    assert_eq!(file.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(file.get_str("general.type").unwrap(), "adapter");
    assert_eq!(file.get_str("adapter.type").unwrap(), "lora");
    assert_eq!(file.get_str("general.base_model.0.name").unwrap(), "tiny-llama");
    assert!(file.get_str("general.name").unwrap().contains("LoRA"));
    // llama.cpp's scale is alpha / rank: rsLoRA's 6 / sqrt(3) becomes alpha 6·sqrt(3).
    assert!(matches!(file.get("adapter.lora.alpha"), Some(Value::F32(_))));
    let alpha = file.get_f32("adapter.lora.alpha").unwrap();
    assert_eq!(alpha, folded_alpha(&adapter.config));
    assert!((alpha / 3.0 - adapter.config.scale()).abs() < 1e-6 * adapter.config.scale());
    assert_eq!(file.tensors().len(), 2 * 3 * model.n_layers);
    for p in &adapter.pairs {
        let a = file.tensor(&gguf_lora_name(p.layer, p.target, Factor::A)).unwrap();
        let b = file.tensor(&gguf_lora_name(p.layer, p.target, Factor::B)).unwrap();
        let weight = base.tensor(&format!("blk.{}.{}.weight", p.layer, p.target.gguf_name())).unwrap();
        // llama.cpp: model ne[0] == a ne[0], model ne[1] == b ne[1], a ne[1] == b ne[0].
        assert_eq!((a.dims.clone(), b.dims.clone()), (vec![weight.dims[0], 3], vec![3, weight.dims[1]]));
        assert_eq!((a.ty, b.ty), (GgmlType::F32, GgmlType::F32));
    }
    assert!(file.tensors().iter().all(|t| !t.name.starts_with("token_embd") && !t.name.starts_with("output")));
}

/// A LoRA GGUF taken apart for editing.
struct Parts {
    metadata: Vec<(String, Value)>,
    tensors: Vec<(String, Vec<u64>, GgmlType, Vec<u8>)>,
}

impl Parts {
    fn of(bytes: &[u8]) -> Parts {
        let file = Gguf::parse(bytes, bytes.len() as u64).unwrap();
        let metadata = file.metadata().map(|(k, v)| (k.to_string(), v.clone())).collect();
        let tensors = file
            .tensors()
            .iter()
            .map(|t| {
                (t.name.clone(), t.dims.clone(), t.ty, bytes[t.offset as usize..(t.offset + t.size) as usize].to_vec())
            })
            .collect();
        Parts { metadata, tensors }
    }
    fn bytes(&self) -> Vec<u8> {
        let mut w = GgufWriter::new();
        for (k, v) in &self.metadata {
            w.set(k, v.clone());
        }
        for (name, dims, ty, data) in &self.tensors {
            w.tensor(name, dims, *ty, data.clone()).unwrap();
        }
        w.to_bytes()
    }
    fn set(&mut self, key: &str, value: Value) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self.metadata.push((key.to_string(), value));
        self
    }
    fn remove_key(&mut self, key: &str) -> &mut Self {
        self.metadata.retain(|(k, _)| k != key);
        self
    }
    fn remove_tensor(&mut self, name: &str) -> &mut Self {
        self.tensors.retain(|(n, ..)| n != name);
        self
    }
    /// Replaces or adds an F32 tensor of zeros.
    fn put_zeros(&mut self, name: &str, dims: &[u64]) -> &mut Self {
        self.remove_tensor(name);
        let n: u64 = dims.iter().product();
        self.tensors.push((name.to_string(), dims.to_vec(), GgmlType::F32, vec![0; 4 * n as usize]));
        self
    }
}

/// tiny-llama (hidden 64, q 64, kv 32, ffn 96) with a rank-4 adapter on every projection.
fn valid() -> (Config, Vec<u8>) {
    let (_, base, model) = tiny("tiny-llama");
    let adapter = bit_adapter(&model, lora(4, 8.0, false, &Target::ALL));
    (model, to_gguf_lora(&adapter, &base).unwrap())
}

fn import_error(model: &Config, parts: &Parts) -> AdapterError {
    match from_gguf_lora(&parts.bytes(), model) {
        Ok(_) => panic!("accepted"),
        Err(e) => {
            eprintln!("{e}");
            e
        }
    }
}

#[test]
fn rejects_wrong_architecture() {
    let (_, bytes) = valid();
    let (_, _, qwen) = tiny("tiny-qwen2");
    let e = from_gguf_lora(&bytes, &qwen).unwrap_err();
    assert!(
        matches!(&e, AdapterError::ArchMismatch { adapter, model } if adapter == "llama" && model == "qwen2"),
        "{e}"
    );
}

#[test]
fn rejects_wrong_types_and_missing_keys() {
    let (model, bytes) = valid();
    let mut parts = Parts::of(&bytes);
    parts.set("general.type", Value::String("model".into()));
    assert!(matches!(import_error(&model, &parts), AdapterError::GgufValue { key: "general.type", .. }));
    let mut parts = Parts::of(&bytes);
    parts.set("adapter.type", Value::String("control_vector".into()));
    assert!(matches!(import_error(&model, &parts), AdapterError::GgufValue { key: "adapter.type", .. }));
    for key in ["general.type", "general.architecture", "adapter.type", "adapter.lora.alpha"] {
        let e = import_error(&model, Parts::of(&bytes).remove_key(key));
        assert!(matches!(e, AdapterError::GgufMissingKey { key: k } if k == key), "{key}: {e}");
    }
    // llama.cpp reads the alpha with gguf_get_val_f32, which requires an f32.
    for bad in [Value::F64(8.0), Value::F32(-1.0), Value::F32(f32::NAN), Value::String("8".into())] {
        let e = import_error(&model, Parts::of(&bytes).set("adapter.lora.alpha", bad));
        assert!(matches!(e, AdapterError::GgufValue { key: "adapter.lora.alpha", .. }), "{e}");
    }
}

#[test]
fn alpha_without_our_keys_is_llama_cpps_scale() {
    let (model, bytes) = valid();
    let mut parts = Parts::of(&bytes);
    parts.remove_key("classtune.lora.alpha");
    let plain = from_gguf_lora(&parts.bytes(), &model).unwrap();
    assert_eq!((plain.config.alpha, plain.config.rslora, plain.config.dropout), (8.0, false, 0.0));
    // An edited alpha no longer folds from our keys: the file's alpha wins.
    let edited = from_gguf_lora(&Parts::of(&bytes).set("adapter.lora.alpha", Value::F32(2.0)).bytes(), &model).unwrap();
    assert_eq!((edited.config.alpha, edited.config.rslora), (2.0, false));
    // Alpha 0 is llama.cpp's "no scaling": scale 1, i.e. alpha = rank.
    let zero = from_gguf_lora(&Parts::of(&bytes).set("adapter.lora.alpha", Value::F32(0.0)).bytes(), &model).unwrap();
    assert_eq!((zero.config.alpha, zero.config.scale()), (4.0, 1.0));
    // rsLoRA folded: same scale without our keys.
    let (_, base, _) = tiny("tiny-llama");
    let rs = bit_adapter(&model, lora(4, 8.0, true, &[Target::V]));
    let mut parts = Parts::of(&to_gguf_lora(&rs, &base).unwrap());
    parts.remove_key("classtune.lora.rslora");
    let back = from_gguf_lora(&parts.bytes(), &model).unwrap();
    assert_eq!((back.config.alpha, back.config.rslora, back.config.scale()), (16.0, false, rs.config.scale()));
}

#[test]
fn rejects_shapes_that_do_not_fit_the_model() {
    let (model, bytes) = valid();
    let e = import_error(&model, Parts::of(&bytes).put_zeros("blk.1.attn_k.weight.lora_a", &[96, 4]));
    assert!(
        matches!(&e, AdapterError::GgufShape { tensor, expected, found }
            if tensor == "blk.1.attn_k.weight.lora_a" && expected == &[64, 4] && found == &[96, 4]),
        "{e}"
    );
    let e = import_error(&model, Parts::of(&bytes).put_zeros("blk.0.ffn_down.weight.lora_b", &[4, 96]));
    assert!(
        matches!(&e, AdapterError::GgufShape { tensor, expected, .. } if tensor == "blk.0.ffn_down.weight.lora_b" && expected == &[4, 64]),
        "{e}"
    );
    let e = import_error(&model, Parts::of(&bytes).put_zeros("blk.0.attn_q.weight.lora_a", &[64, 4, 1]));
    assert!(matches!(e, AdapterError::GgufShape { .. }), "{e}");
}

#[test]
fn rejects_rank_mismatch_and_varying_ranks() {
    let (model, bytes) = valid();
    let e = import_error(&model, Parts::of(&bytes).put_zeros("blk.1.ffn_up.weight.lora_b", &[3, 96]));
    assert!(
        matches!(&e, AdapterError::GgufRankMismatch { tensor, a_rank: 4, b_rank: 3 } if tensor == "blk.1.ffn_up.weight"),
        "{e}"
    );
    let mut parts = Parts::of(&bytes);
    parts.put_zeros("blk.1.attn_v.weight.lora_a", &[64, 2]).put_zeros("blk.1.attn_v.weight.lora_b", &[2, 32]);
    let e = import_error(&model, &parts);
    assert!(matches!(e, AdapterError::GgufRankVaries { rank: 2, expected: 4, .. }), "{e}");
    let mut parts = Parts::of(&bytes);
    parts.put_zeros("blk.0.attn_q.weight.lora_a", &[64, 0]).put_zeros("blk.0.attn_q.weight.lora_b", &[0, 64]);
    assert!(matches!(import_error(&model, &parts), AdapterError::BadRank { rank: 0, .. }));
}

#[test]
fn rejects_missing_and_unexpected_tensors() {
    let (model, bytes) = valid();
    let e = import_error(&model, Parts::of(&bytes).remove_tensor("blk.1.attn_output.weight.lora_b"));
    assert!(
        matches!(&e, AdapterError::GgufMissingTensor { tensor, .. } if tensor == "blk.1.attn_output.weight.lora_b")
    );
    // A projection adapted in one layer only does not fit one target list.
    let mut parts = Parts::of(&bytes);
    parts.remove_tensor("blk.1.ffn_gate.weight.lora_a").remove_tensor("blk.1.ffn_gate.weight.lora_b");
    let e = import_error(&model, &parts);
    assert!(matches!(&e, AdapterError::GgufMissingTensor { tensor, .. } if tensor == "blk.1.ffn_gate.weight.lora_a"));
    let e = import_error(&model, Parts::of(&bytes).put_zeros("blk.2.attn_q.weight.lora_a", &[64, 4]));
    assert!(matches!(e, AdapterError::LayerOutOfRange { layer: 2, n_layers: 2, .. }), "{e}");
    for name in
        ["token_embd.weight.lora_a", "output.weight.lora_b", "blk.0.attn_q.bias.lora_a", "blk.0.attn_qkv.weight.lora_a"]
    {
        let e = import_error(&model, Parts::of(&bytes).put_zeros(name, &[64, 4]));
        assert!(matches!(&e, AdapterError::GgufUnexpectedTensor { tensor, .. } if tensor == name), "{name}: {e}");
    }
    let mut empty = Parts::of(&bytes);
    empty.tensors.clear();
    assert!(matches!(import_error(&model, &empty), AdapterError::GgufMissingTensor { .. }));
    // llama.cpp skips norm vectors in adapters (mergekit adds them); so do we.
    let with_norm = Parts::of(&bytes).put_zeros("blk.0.attn_norm.weight", &[64]).bytes();
    assert_same(&from_gguf_lora(&with_norm, &model).unwrap(), &from_gguf_lora(&bytes, &model).unwrap());
}

#[test]
fn reads_f16_tensors_as_convert_lora_to_gguf_writes_them() {
    let (model, bytes) = valid();
    let original = from_gguf_lora(&bytes, &model).unwrap();
    let mut parts = Parts::of(&bytes);
    for (_, _, ty, data) in &mut parts.tensors {
        let v = dequant::dequantize(GgmlType::F32, data, data.len() / 4).unwrap();
        *data = dequant::quantize(GgmlType::F16, &v).unwrap();
        *ty = GgmlType::F16;
    }
    let f16 = from_gguf_lora(&parts.bytes(), &model).unwrap();
    for (p, q) in original.pairs.iter().zip(&f16.pairs) {
        let round = |v: &[f32]| v.iter().map(|&x| half::f16::from_f32(x).to_f32().to_bits()).collect::<Vec<_>>();
        assert_eq!(round(&p.a), bits(&q.a));
        assert_eq!(round(&p.b), bits(&q.b));
    }
}

#[test]
fn rejects_truncated_and_corrupt_files() {
    let (model, bytes) = valid();
    let e = from_gguf_lora(&bytes[..bytes.len() - 1], &model).unwrap_err();
    assert!(matches!(e, AdapterError::Gguf { source: GgufError::TensorPastEnd { .. }, .. }), "{e}");
    let header = Gguf::parse(&bytes, bytes.len() as u64).unwrap().data_offset as usize;
    let e = from_gguf_lora(&bytes[..header / 2], &model).unwrap_err();
    assert!(matches!(e, AdapterError::Gguf { source: GgufError::Truncated { .. }, .. }), "{e}");
    let e = from_gguf_lora(&bytes[..100], &model).unwrap_err();
    assert!(matches!(e, AdapterError::Gguf { source: GgufError::ImplausibleCount { .. }, .. }), "{e}");
    let e = from_gguf_lora(b"GGML\x03\0\0\0", &model).unwrap_err();
    assert!(matches!(e, AdapterError::Gguf { source: GgufError::BadMagic { .. }, .. }), "{e}");
    assert!(matches!(from_gguf_lora(&[], &model), Err(AdapterError::Gguf { .. })));
}

#[test]
fn export_checks_the_adapter_against_the_base() {
    let (_, base, model) = tiny("tiny-llama");
    let good = bit_adapter(&model, lora(2, 4.0, false, &[Target::Q, Target::Up]));
    let mut bad = good.clone();
    bad.config.alpha = 0.0;
    assert!(matches!(to_gguf_lora(&bad, &base), Err(AdapterError::BadAlpha { .. })));
    let mut bad = good.clone();
    bad.pairs.pop();
    assert!(matches!(to_gguf_lora(&bad, &base), Err(AdapterError::MissingTensor { layer: 1, module: "ffn_up", .. })));
    let mut bad = good.clone();
    bad.pairs[0].b.pop();
    assert!(matches!(to_gguf_lora(&bad, &base), Err(AdapterError::Length { tensor: "lora_B", .. })));
    // An adapter for another base (qwen2's shapes) does not fit llama's.
    let (_, _, qwen) = tiny("tiny-qwen2");
    let other = bit_adapter(&qwen, lora(2, 4.0, false, &[Target::Q]));
    assert!(matches!(to_gguf_lora(&other, &base), Err(AdapterError::Shape { .. })));
    let mut not_a_model = GgufWriter::new();
    not_a_model.set("general.architecture", Value::String("llama".into()));
    let not_a_model = not_a_model.to_bytes();
    let header = Gguf::parse(&not_a_model, not_a_model.len() as u64).unwrap();
    assert!(matches!(to_gguf_lora(&good, &header), Err(AdapterError::BaseModel(_))));
}

/// A small valid adapter file for the fuzz test.
fn small_file() -> (Config, Vec<u8>) {
    let (_, base, model) = tiny("tiny-llama");
    let adapter = bit_adapter(&model, lora(1, 2.0, false, &[Target::K]));
    (model, to_gguf_lora(&adapter, &base).unwrap())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn truncated_or_mutated_bytes_never_panic(
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 0..6),
        truncate in any::<bool>(),
    ) {
        let (model, mut bytes) = small_file();
        let data_start = Gguf::parse(&bytes, bytes.len() as u64).unwrap().data_offset as usize;
        for (at, byte, in_header) in &flips {
            // Most flips land in the header, where they change keys, names, dims and offsets.
            let i = if *in_header { at.index(data_start) } else { at.index(bytes.len()) };
            bytes[i] = *byte;
        }
        if truncate {
            bytes.truncate(cut.index(bytes.len() + 1));
        }
        let _ = from_gguf_lora(&bytes, &model);
    }
}

// ---- merged models ----

#[test]
fn merged_file_layout() {
    for (name, out) in [("tiny-llama", MergeType::F16), ("tiny-qwen2", MergeType::Q8_0)] {
        let (bytes, base, model) = tiny(name);
        let adapter = random_adapter(&model, lora(4, 8.0, false, &[Target::Q, Target::V, Target::Down]), 1, 0.1);
        let merged = merge_to_gguf(&base, &bytes, &adapter, out).unwrap();
        let file = Gguf::parse(&merged, merged.len() as u64).unwrap();
        assert_eq!(Config::from_gguf(&file).unwrap().tied_embeddings, model.tied_embeddings, "{name}");
        assert_eq!(file.tensors().len(), base.tensors().len());
        for (t, b) in file.tensors().iter().zip(base.tensors()) {
            assert_eq!((&t.name, &t.dims), (&b.name, &b.dims));
            let adapted = ["attn_q.weight", "attn_v.weight", "ffn_down.weight"].iter().any(|s| b.name.ends_with(s));
            if adapted {
                assert_eq!(t.ty, out.ggml(), "{name} {}", t.name);
            } else {
                assert_eq!(t.ty, b.ty, "{name} {}", t.name);
                let range = |t: &classtune::gguf::TensorInfo| t.offset as usize..(t.offset + t.size) as usize;
                assert!(merged[range(t)] == bytes[range(b)], "{name} {}: not copied unchanged", t.name);
            }
            if t.dims.len() == 1 {
                assert_eq!(t.ty, GgmlType::F32, "{name} {}: norms and biases stay F32", t.name);
            }
        }
        for (key, value) in base.metadata() {
            match key {
                "general.name" => {
                    let merged_name = file.get_str(key).unwrap();
                    assert!(merged_name.starts_with(name) && merged_name.contains("LoRA"), "{merged_name}");
                }
                _ => assert_eq!(file.get(key), Some(value), "{name} {key}"),
            }
        }
        assert_eq!(file.metadata().count(), base.metadata().count());
        if name == "tiny-llama" {
            assert!(file.find_tensor("output.weight").is_none(), "tied embeddings stay tied");
        }

        // The streamed parts make the same file, and our header encoder lays it out as
        // GgufWriter does.
        let plan = MergePlan::new(&base, &adapter, out).unwrap();
        let mut parts = plan.header().to_vec();
        let mut writer = GgufWriter::new();
        for (k, v) in file.metadata() {
            writer.set(k, v.clone());
        }
        for (i, t) in plan.tensors().iter().enumerate() {
            let piece =
                plan.tensor_bytes(i, &bytes[t.base.offset as usize..(t.base.offset + t.base.size) as usize]).unwrap();
            assert_eq!(parts.len() as u64, t.offset);
            writer.tensor(&t.base.name, &t.base.dims, t.ty, piece[..t.size as usize].to_vec()).unwrap();
            parts.extend_from_slice(&piece);
        }
        assert_eq!(parts.len() as u64, plan.len());
        assert!(parts == merged, "{name}: streamed parts differ from merge_to_gguf");
        assert!(writer.to_bytes() == merged, "{name}: header differs from GgufWriter's layout");
        let mut sink = Vec::new();
        write_merged(&plan, &bytes, &mut sink).unwrap();
        assert!(sink == merged);
        assert!(matches!(plan.tensor_bytes(0, &[1, 2, 3]), Err(AdapterError::MergeData { .. })));
        assert!(matches!(plan.tensor_bytes(plan.tensors().len(), &[]), Err(AdapterError::MergeIndex { .. })));
    }
}

/// The merged weights against `W + scale · B A` computed in f64 from the base, within the
/// output type's rounding.
#[test]
fn merged_weights_are_base_plus_scaled_delta() {
    for (name, out) in [("tiny-llama", MergeType::F16), ("tiny-qwen2", MergeType::F16), ("tiny-llama", MergeType::Q8_0)]
    {
        let (bytes, base, model) = tiny(name);
        let adapter = random_adapter(&model, lora(3, 5.0, true, &Target::ALL), 2, 0.2);
        let merged = merge_to_gguf(&base, &bytes, &adapter, out).unwrap();
        let file = Gguf::parse(&merged, merged.len() as u64).unwrap();
        let scale = f64::from(adapter.config.scale());
        let rank = adapter.config.rank;
        let mut worst = 0f64;
        for p in &adapter.pairs {
            let name = format!("blk.{}.{}.weight", p.layer, p.target.gguf_name());
            let read = |g: &Gguf, data: &[u8]| {
                let t = g.tensor(&name).unwrap();
                dequant::dequantize(
                    t.ty,
                    &data[t.offset as usize..(t.offset + t.size) as usize],
                    t.n_elements() as usize,
                )
                .unwrap()
            };
            let (w, m) = (read(&base, &bytes), read(&file, &merged));
            for o in 0..p.d_out {
                let expected: Vec<f64> = (0..p.d_in)
                    .map(|i| {
                        let delta: f64 =
                            (0..rank).map(|k| f64::from(p.b[o * rank + k]) * f64::from(p.a[k * p.d_in + i])).sum();
                        f64::from(w[o * p.d_in + i]) + scale * delta
                    })
                    .collect();
                // F16: half an ulp of the value; Q8_0: half a step of the 32-block's scale.
                for (block, exp) in expected.chunks(32).enumerate() {
                    let amax = exp.iter().fold(0f64, |a, &v| a.max(v.abs()));
                    for (j, &e) in exp.iter().enumerate() {
                        let got = f64::from(m[o * p.d_in + block * 32 + j]);
                        let bound = match out {
                            MergeType::F16 => e.abs() * 2f64.powi(-11) * 1.01 + 1e-6,
                            MergeType::Q8_0 => amax / 127.0 * 0.5 * 1.01 + amax * 2f64.powi(-11) + 1e-6,
                        };
                        worst = worst.max((got - e).abs() / bound);
                        assert!((got - e).abs() <= bound, "{name} row {o}: merged {got}, expected {e} (bound {bound})");
                    }
                }
            }
        }
        eprintln!("{name} {out:?}: worst error / rounding bound = {worst:.3}");
    }
}

#[test]
fn merge_refuses_adapters_that_do_not_fit() {
    let (bytes, base, model) = tiny("tiny-llama");
    let (_, _, qwen) = tiny("tiny-qwen2");
    let other = random_adapter(&qwen, lora(2, 4.0, false, &[Target::Up]), 3, 0.1);
    assert!(matches!(merge_to_gguf(&base, &bytes, &other, MergeType::F16), Err(AdapterError::Shape { .. })));
    let mut bad = random_adapter(&model, lora(2, 4.0, false, &[Target::Up]), 3, 0.1);
    bad.config.rank = 0;
    assert!(matches!(merge_to_gguf(&base, &bytes, &bad, MergeType::F16), Err(AdapterError::BadRank { .. })));
    let good = random_adapter(&model, lora(2, 4.0, false, &[Target::Up]), 3, 0.1);
    assert!(matches!(
        merge_to_gguf(&base, &bytes[..bytes.len() - 1], &good, MergeType::F16),
        Err(AdapterError::MergeData { .. })
    ));
}

// ---- on the GPU ----

fn tokens(vocab: usize, n: usize, seed: u64) -> Vec<u32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(0..vocab as u32)).collect()
}

async fn logits(gpu: &Gpu, model: &Model, ids: &[u32]) -> Vec<f32> {
    let mut cache = KvCache::new(gpu, &model.config, ids.len()).unwrap();
    model.logits(gpu, &mut cache, ids).await.unwrap()
}

fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter().zip(b).fold(0f32, |m, (x, y)| m.max((x - y).abs()))
}

/// Our engine's logits for `ids`: base, base with the adapter attached, and each merged
/// model, plus the same merges of a zero-B adapter (the rounding of the base alone).
struct Runs {
    base: Vec<f32>,
    attached: Vec<f32>,
    merged: Vec<(MergeType, Vec<f32>, Vec<f32>)>,
}

async fn run_all(gpu: &Gpu, name: &str, adapter: &Adapter, ids: &[u32]) -> Runs {
    let (bytes, base_header, _) = tiny(name);
    let mut model = Model::load(gpu, &bytes[..]).await.unwrap();
    let base = logits(gpu, &model, ids).await;
    model.attach(Some(LoraWeights::from_adapter(gpu, &model.config, adapter).unwrap()));
    let attached = logits(gpu, &model, ids).await;
    let mut zero = adapter.clone();
    zero.pairs.iter_mut().for_each(|p| p.b.fill(0.0));
    let mut merged = Vec::new();
    for out in [MergeType::F16, MergeType::Q8_0] {
        let file = merge_to_gguf(&base_header, &bytes, adapter, out).unwrap();
        let with = logits(gpu, &Model::load(gpu, &file[..]).await.unwrap(), ids).await;
        let file = merge_to_gguf(&base_header, &bytes, &zero, out).unwrap();
        let without = logits(gpu, &Model::load(gpu, &file[..]).await.unwrap(), ids).await;
        merged.push((out, with, without));
    }
    Runs { base, attached, merged }
}

/// The merged model computes what the base model with the adapter attached computes, up
/// to the rounding of the merged weights: the error is bounded by a multiple of what the
/// same rounding does to the base model alone (a zero-B merge), and is a small fraction
/// of the adapter's own effect.
#[test]
fn merged_model_matches_attached_adapter() {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
        for name in ["tiny-llama", "tiny-qwen2"] {
            let (_, _, config) = tiny(name);
            let adapter = random_adapter(&config, lora(4, 8.0, false, &Target::ALL), 11, 0.1);
            let ids = tokens(config.vocab, 37, 5);
            let runs = run_all(&gpu, name, &adapter, &ids).await;
            let effect = max_diff(&runs.attached, &runs.base);
            for (out, with, without) in &runs.merged {
                let error = max_diff(with, &runs.attached);
                let rounding = max_diff(without, &runs.base);
                let peak = runs.attached.iter().fold(0f32, |m, x| m.max(x.abs()));
                eprintln!(
                    "{name} {out:?}: max |logit| {peak:.3e}, adapter effect {effect:.3e}, merged vs attached {error:.3e}, \
                     rounding alone {rounding:.3e}"
                );
                // Measured: error / rounding ≈ 1.1-1.3 (F16), 0.9 (Q8_0); the adapter's effect
                // is ≈ 400× the F16 error and ≈ 20× the Q8_0 error (8 bits per 32-block).
                let (floor, margin) = match out {
                    MergeType::F16 => (1e-3, 50.0),
                    MergeType::Q8_0 => (1e-2, 8.0),
                };
                assert!(error <= 2.0 * rounding + floor, "{name} {out:?}: merged differs by {error}");
                assert!(error * margin < effect, "{name} {out:?}: error {error} not small against the effect {effect}");
            }
        }
    });
}

/// The model with every tensor dequantized to F32 (the same values): llama.cpp's CPU
/// matmuls then keep activations in f32, so its logits can be compared closely.
fn all_f32(bytes: &[u8], base: &Gguf) -> Vec<u8> {
    let mut w = GgufWriter::new();
    for (k, v) in base.metadata() {
        w.set(k, v.clone());
    }
    w.set("general.file_type", Value::U32(0));
    for t in base.tensors() {
        let data = &bytes[t.offset as usize..(t.offset + t.size) as usize];
        let values = dequant::dequantize(t.ty, data, t.n_elements() as usize).unwrap();
        w.tensor(&t.name, &t.dims, GgmlType::F32, values.iter().flat_map(|v| v.to_le_bytes()).collect()).unwrap();
    }
    w.to_bytes()
}

/// Writes the files scripts/fixtures/check_gguf_exports.py compares with llama.cpp into
/// `$CLASSTUNE_EXPORT_DIR`: per tiny model the base (as is and all-F32), the LoRA GGUF, the merged F16
/// and Q8_0 models, and our logits (base, attached, merged) for a token sequence.
#[test]
#[ignore = "writes files for scripts/fixtures/check_gguf_exports.py; set CLASSTUNE_EXPORT_DIR"]
fn export_for_llama_cpp() {
    let dir = PathBuf::from(std::env::var("CLASSTUNE_EXPORT_DIR").expect("set CLASSTUNE_EXPORT_DIR"));
    std::fs::create_dir_all(&dir).unwrap();
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
        let mut index = Vec::new();
        for name in ["tiny-llama", "tiny-qwen2"] {
            let (bytes, base, config) = tiny(name);
            let adapter = random_adapter(&config, lora(4, 6.0, true, &Target::ALL), 11, 0.1);
            let ids = tokens(config.vocab, 37, 5);
            let runs = run_all(&gpu, name, &adapter, &ids).await;
            let write = |file: String, data: &[u8]| std::fs::write(dir.join(&file), data).map(|_| file).unwrap();
            let f32s = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>();
            let mut entry = serde_json::json!({
                "name": name,
                "base": write(format!("{name}.gguf"), &bytes),
                "base_f32": write(format!("{name}.f32.gguf"), &all_f32(&bytes, &base)),
                "lora": write(format!("{name}.lora.gguf"), &to_gguf_lora(&adapter, &base).unwrap()),
                "scale": adapter.config.scale(),
                "ids": ids,
                "vocab": config.vocab,
                "logits_base": write(format!("{name}.logits-base.f32"), &f32s(&runs.base)),
                "logits_attached": write(format!("{name}.logits-attached.f32"), &f32s(&runs.attached)),
            });
            for (out, with, _) in &runs.merged {
                let tag = format!("{out:?}").to_lowercase();
                let merged = merge_to_gguf(&base, &bytes, &adapter, *out).unwrap();
                entry[format!("merged_{tag}")] = write(format!("{name}.merged-{tag}.gguf"), &merged).into();
                entry[format!("logits_merged_{tag}")] =
                    write(format!("{name}.logits-merged-{tag}.f32"), &f32s(with)).into();
            }
            index.push(entry);
        }
        let json = serde_json::to_string_pretty(&index).unwrap();
        std::fs::write(dir.join("index.json"), json).unwrap();
        eprintln!("wrote {}", dir.display());
    });
}
