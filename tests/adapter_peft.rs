//! PEFT adapter files: round trips, the llama Q/K row permutation against the numpy
//! formula written out, one test per rejected input, and mutated bytes (no panics).

use std::path::PathBuf;

use classtune::adapter::{
    from_peft, peft_key, permute, to_peft, Adapter, AdapterError, Factor, LoraConfig, LoraPair, PeftFiles, Target,
};
use classtune::gguf::Gguf;
use classtune::model::Config;
use proptest::prelude::*;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::{json, Value};

fn tiny(name: &str) -> Config {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(format!("fixtures/tiny/{name}.gguf"));
    let bytes = std::fs::read(&path).unwrap();
    Config::from_gguf(&Gguf::parse(&bytes, bytes.len() as u64).unwrap()).unwrap()
}

/// Deterministic values in [-1, 1), with a few special bit patterns mixed in so the
/// round trip is checked bit for bit, not just by value.
fn values(seed: u64, n: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let special = [-0.0f32, f32::MIN_POSITIVE / 4.0, 1e-30, -65504.0, f32::from_bits(0x7fc0_1234)];
    (0..n)
        .map(|i| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            if i % 97 == 13 {
                special[(x % special.len() as u64) as usize]
            } else {
                (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
            }
        })
        .collect()
}

fn adapter(model: &Config, config: LoraConfig, seed: u64) -> Adapter {
    let mut pairs = Vec::new();
    for layer in 0..model.n_layers {
        for &target in &config.targets {
            let (d_in, d_out) = target.dims(model);
            let s = seed + 100 * layer as u64 + target as u64;
            let (a, b) = (values(2 * s, config.rank * d_in), values(2 * s + 1, d_out * config.rank));
            pairs.push(LoraPair { layer, target, d_in, d_out, a, b });
        }
    }
    Adapter { config, base_name: model.name.clone(), pairs }
}

fn lora(rank: usize, alpha: f32, rslora: bool, targets: &[Target]) -> LoraConfig {
    LoraConfig { rank, alpha, dropout: 0.0, rslora, targets: targets.to_vec() }
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

fn round_trip(model: &Config, config: LoraConfig) {
    let original = adapter(model, config, 7);
    let files = to_peft(&original, model).unwrap();
    let back = from_peft(&files.safetensors, &files.config_json, model).unwrap();
    assert_same(&original, &back);
}

#[test]
fn round_trip_llama_gqa() {
    let model = tiny("tiny-llama");
    assert!(model.n_kv_heads < model.n_heads, "the fixture should have grouped KV heads");
    round_trip(&model, lora(4, 8.0, false, &Target::ALL));
    round_trip(&model, lora(3, 5.5, true, &[Target::Q, Target::K, Target::Down]));
}

#[test]
fn round_trip_qwen2() {
    let model = tiny("tiny-qwen2");
    round_trip(&model, lora(8, 16.0, true, &Target::ALL));
    round_trip(&model, lora(1, 0.25, false, &[Target::K, Target::Up]));
}

/// `W.reshape(n_head, 2, rows/n_head/2, cols).swapaxes(1, 2).reshape(rows, cols)` written
/// out: GGUF row (h, j, s) in C order holds HF row h·hd + s·hd/2 + j.
fn numpy_permute(w: &[f32], cols: usize, heads: usize) -> Vec<f32> {
    let rows = w.len() / cols;
    let half = rows / heads / 2;
    let mut out = Vec::new();
    for h in 0..heads {
        for j in 0..half {
            for s in 0..2 {
                let hf = h * 2 * half + s * half + j;
                out.extend_from_slice(&w[hf * cols..(hf + 1) * cols]);
            }
        }
    }
    out
}

/// Entry (row, col) holds row·1000 + col.
fn coded(rows: usize, cols: usize) -> Vec<f32> {
    (0..rows * cols).map(|i| ((i / cols) * 1000 + i % cols) as f32).collect()
}

#[test]
fn permutation_matches_numpy_formula() {
    for (rows, cols, heads) in [(64, 4, 4), (32, 3, 2), (8, 1, 1), (256, 2, 4), (12, 5, 3)] {
        let hf = coded(rows, cols);
        let gguf = permute::hf_to_gguf_rows(&hf, cols, heads).unwrap();
        assert_eq!(gguf, numpy_permute(&hf, cols, heads), "{rows}x{cols}, {heads} heads");
        assert_eq!(permute::gguf_to_hf_rows(&gguf, cols, heads).unwrap(), hf);
    }
    assert!(matches!(permute::hf_to_gguf_rows(&coded(6, 2), 2, 2), Err(AdapterError::HeadSplit { .. })));
}

/// The tensors of a safetensors file as (shape, f32 values).
fn tensor(bytes: &[u8], name: &str) -> (Vec<usize>, Vec<f32>) {
    let file = SafeTensors::deserialize(bytes).unwrap();
    let view = file.tensor(name).unwrap();
    assert_eq!(view.dtype(), Dtype::F32);
    let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
    (view.shape().to_vec(), values)
}

#[test]
fn export_unpermutes_llama_q_and_k_only() {
    for (name, permuted) in [("tiny-llama", true), ("tiny-qwen2", false)] {
        let model = tiny(name);
        let rank = 3;
        let mut a = adapter(&model, lora(rank, 6.0, false, &Target::ALL), 1);
        for p in &mut a.pairs {
            p.b = coded(p.d_out, rank);
        }
        let files = to_peft(&a, &model).unwrap();
        for p in &a.pairs {
            let (shape, b) = tensor(&files.safetensors, &peft_key(p.layer, p.target, Factor::B));
            assert_eq!(shape, vec![p.d_out, rank]);
            let heads = match p.target {
                Target::Q => model.n_heads,
                Target::K => model.n_kv_heads,
                _ => 0,
            };
            // GGUF = numpy_permute(HF), so the exported HF B must permute back to ours.
            let expected_gguf = if permuted && heads > 0 { numpy_permute(&b, rank, heads) } else { b.clone() };
            assert_eq!(expected_gguf, p.b, "{name} layer {} {:?}", p.layer, p.target);
            let (shape, a_values) = tensor(&files.safetensors, &peft_key(p.layer, p.target, Factor::A));
            assert_eq!(shape, vec![rank, p.d_in]);
            assert_eq!(bits(&a_values), bits(&p.a));
        }
        assert_eq!(permuted, permute::permuted_heads(&model, Target::Q).is_some());
    }
}

#[test]
fn config_json_has_exactly_the_minimal_keys() {
    let model = tiny("tiny-llama");
    let mut config = lora(4, 8.0, true, &[Target::V, Target::Q, Target::Gate]);
    config.targets.sort();
    config.dropout = 0.05;
    let files = to_peft(&adapter(&model, config, 3), &model).unwrap();
    let value: Value = serde_json::from_str(&files.config_json).unwrap();
    let expected = json!({
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": model.name,
        "r": 4, "lora_alpha": 8, "lora_dropout": 0.05, "target_modules": ["q_proj", "v_proj", "gate_proj"],
        "fan_in_fan_out": false, "bias": "none", "use_rslora": true, "use_dora": false,
        "init_lora_weights": true, "modules_to_save": null, "rank_pattern": {}, "alpha_pattern": {},
        "inference_mode": true,
    });
    assert_eq!(value, expected);
    let file = SafeTensors::deserialize(&files.safetensors).unwrap();
    assert_eq!(file.len(), 2 * 2 * 3);
    let (_, metadata) = SafeTensors::read_metadata(&files.safetensors).unwrap();
    let format = metadata.metadata().as_ref().and_then(|m| m.get("format").cloned());
    assert_eq!(format.as_deref(), Some("pt"));
}

// ---------------------------------------------------------------- rejected inputs

/// A valid llama adapter's files (rank 2, q/k/v/o) to break one thing at a time.
fn valid() -> (Config, PeftFiles) {
    let model = tiny("tiny-llama");
    let files =
        to_peft(&adapter(&model, lora(2, 4.0, false, &[Target::Q, Target::K, Target::V, Target::O]), 5), &model)
            .unwrap();
    (model, files)
}

fn with_config(files: &PeftFiles, key: &str, value: Value) -> String {
    let mut json: Value = serde_json::from_str(&files.config_json).unwrap();
    json[key] = value;
    json.to_string()
}

type Tensors = Vec<(String, Dtype, Vec<usize>, Vec<u8>)>;

/// The valid file's tensors as raw (name, dtype, shape, bytes), to edit.
fn tensors(files: &PeftFiles) -> Tensors {
    let file = SafeTensors::deserialize(&files.safetensors).unwrap();
    let mut out: Tensors =
        file.iter().map(|(n, v)| (n.to_string(), v.dtype(), v.shape().to_vec(), v.data().to_vec())).collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn serialize(tensors: &Tensors) -> Vec<u8> {
    let views: Vec<_> =
        tensors.iter().map(|(n, d, s, b)| (n.as_str(), TensorView::new(*d, s.clone(), b).unwrap())).collect();
    safetensors::serialize(views, None).unwrap()
}

fn import(model: &Config, st: &[u8], json: &str) -> AdapterError {
    match from_peft(st, json, model) {
        Ok(_) => panic!("accepted a bad adapter"),
        Err(e) => {
            // Every message names what is wrong; print them for the test log.
            println!("{e}");
            e
        }
    }
}

fn set_tensor(t: &mut Tensors, layer: usize, target: Target, factor: Factor, dtype: Dtype, shape: Vec<usize>) {
    let name = peft_key(layer, target, factor);
    let entry = t.iter_mut().find(|e| e.0 == name).unwrap();
    let n: usize = shape.iter().product();
    entry.3 = vec![0u8; n * dtype.bitsize() / 8];
    entry.1 = dtype;
    entry.2 = shape;
}

#[test]
fn rejects_corrupt_safetensors() {
    let (model, files) = valid();
    let st = &files.safetensors;
    for cut in [0, 7, 8, 20, st.len() / 2, st.len() - 1] {
        let e = import(&model, &st[..cut], &files.config_json);
        assert!(matches!(e, AdapterError::Safetensors { .. }), "cut at {cut}: {e:?}");
    }
    let mut garbage = st.clone();
    garbage[8] = b'[';
    assert!(matches!(import(&model, &garbage, &files.config_json), AdapterError::Safetensors { .. }));
}

#[test]
fn accepts_f16_and_bf16() {
    let (model, files) = valid();
    let want = from_peft(&files.safetensors, &files.config_json, &model).unwrap();
    for dtype in [Dtype::F16, Dtype::BF16] {
        let mut t = tensors(&files);
        for e in &mut t {
            let f: Vec<f32> = e.3.chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            e.3 = match dtype {
                Dtype::F16 => f.iter().flat_map(|x| half::f16::from_f32(*x).to_le_bytes()).collect(),
                _ => f.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
            };
            e.1 = dtype;
        }
        let got = from_peft(&serialize(&t), &files.config_json, &model).unwrap();
        for (p, q) in want.pairs.iter().zip(&got.pairs) {
            for (x, y) in p.a.iter().chain(&p.b).zip(q.a.iter().chain(&q.b)) {
                let rounded = match dtype {
                    Dtype::F16 => half::f16::from_f32(*x).to_f32(),
                    _ => half::bf16::from_f32(*x).to_f32(),
                };
                assert!(rounded.to_bits() == y.to_bits() || (rounded.is_nan() && y.is_nan()), "{dtype:?}: {x} -> {y}");
            }
        }
    }
}

#[test]
fn rejects_wrong_dtype() {
    let (model, files) = valid();
    let mut t = tensors(&files);
    set_tensor(&mut t, 1, Target::V, Factor::A, Dtype::I32, vec![2, 64]);
    match import(&model, &serialize(&t), &files.config_json) {
        AdapterError::Dtype { tensor, dtype } => {
            assert_eq!(tensor, peft_key(1, Target::V, Factor::A));
            assert_eq!(dtype, "I32");
        }
        e => panic!("{e:?}"),
    }
}

#[test]
fn rejects_rank_mismatch_and_rank_vs_config() {
    let (model, files) = valid();
    let mut t = tensors(&files);
    set_tensor(&mut t, 0, Target::K, Factor::A, Dtype::F32, vec![3, 64]);
    let e = import(&model, &serialize(&t), &files.config_json);
    assert!(matches!(e, AdapterError::RankMismatch { layer: 0, module: "k_proj", a_rank: 3, b_rank: 2 }), "{e:?}");
    set_tensor(&mut t, 0, Target::K, Factor::B, Dtype::F32, vec![32, 3]);
    let e = import(&model, &serialize(&t), &files.config_json);
    assert!(matches!(e, AdapterError::RankVsConfig { layer: 0, module: "k_proj", found: 3, config: 2 }), "{e:?}");
}

#[test]
fn rejects_rank_and_alpha_patterns() {
    let (model, files) = valid();
    for key in ["rank_pattern", "alpha_pattern"] {
        let json = with_config(&files, key, json!({"q_proj": 16}));
        let e = import(&model, &files.safetensors, &json);
        assert!(matches!(e, AdapterError::Unsupported { key: k, .. } if k == key), "{e:?}");
    }
    // Empty patterns, as PEFT writes them, are fine.
    let json = with_config(&files, "rank_pattern", json!({}));
    assert!(from_peft(&files.safetensors, &json, &model).is_ok());
}

#[test]
fn rejects_shapes_that_do_not_fit_the_model() {
    let (model, files) = valid();
    let mut t = tensors(&files);
    set_tensor(&mut t, 1, Target::O, Factor::A, Dtype::F32, vec![2, 65]);
    match import(&model, &serialize(&t), &files.config_json) {
        AdapterError::Shape { layer: 1, module: "o_proj", tensor: "lora_A", expected, found } => {
            assert_eq!((expected, found), (vec![2, 64], vec![2, 65]));
        }
        e => panic!("{e:?}"),
    }
    let mut t = tensors(&files);
    set_tensor(&mut t, 0, Target::V, Factor::B, Dtype::F32, vec![64, 2]);
    let e = import(&model, &serialize(&t), &files.config_json);
    assert!(matches!(e, AdapterError::Shape { layer: 0, module: "v_proj", tensor: "lora_B", .. }), "{e:?}");
    let mut t = tensors(&files);
    set_tensor(&mut t, 0, Target::V, Factor::B, Dtype::F32, vec![32, 2, 1]);
    let e = import(&model, &serialize(&t), &files.config_json);
    assert!(matches!(e, AdapterError::Shape { tensor: "lora_B", .. }), "{e:?}");
}

#[test]
fn rejects_layers_beyond_the_model() {
    let (model, files) = valid();
    let mut t = tensors(&files);
    let mut extra = t[0].clone();
    extra.0 = peft_key(2, Target::Q, Factor::A);
    t.push(extra);
    let e = import(&model, &serialize(&t), &files.config_json);
    assert!(matches!(e, AdapterError::LayerOutOfRange { layer: 2, n_layers: 2, .. }), "{e:?}");
}

#[test]
fn rejects_unknown_target_modules() {
    let (model, files) = valid();
    for name in ["lm_head", "embed_tokens", "c_attn"] {
        let json = with_config(&files, "target_modules", json!(["q_proj", name]));
        let e = import(&model, &files.safetensors, &json);
        assert!(matches!(&e, AdapterError::UnknownTarget { module } if module == name), "{e:?}");
    }
    let e = import(&model, &files.safetensors, &with_config(&files, "target_modules", Value::Null));
    assert!(matches!(e, AdapterError::ConfigValue { .. }), "{e:?}");
}

#[test]
fn reads_target_module_forms_peft_accepts() {
    let (model, files) = valid();
    let want = [Target::Q, Target::K, Target::V, Target::O];
    for form in [
        json!(["v_proj", "self_attn.q_proj", "k_proj", "o_proj", "q_proj"]),
        json!(r".*\.self_attn\.(q|k|v|o)_proj"),
        json!(r"model\.layers\.\d+\.self_attn\..*"),
    ] {
        let got = from_peft(&files.safetensors, &with_config(&files, "target_modules", form.clone()), &model);
        assert_eq!(got.unwrap().config.targets, want, "{form}");
    }
    // "all-linear" lists all seven, so the missing MLP tensors are reported.
    let e = import(&model, &files.safetensors, &with_config(&files, "target_modules", json!("all-linear")));
    assert!(matches!(e, AdapterError::MissingTensor { layer: 0, module: "gate_proj", .. }), "{e:?}");
    let e = import(&model, &files.safetensors, &with_config(&files, "target_modules", json!(r".*\.0\.self_attn.*")));
    assert!(matches!(e, AdapterError::Unsupported { key: "target_modules", .. }), "{e:?}");
}

#[test]
fn rejects_options_that_change_the_computation() {
    let (model, files) = valid();
    let cases = [
        ("use_dora", json!(true)),
        ("fan_in_fan_out", json!(true)),
        ("bias", json!("all")),
        ("bias", json!("lora_only")),
        ("modules_to_save", json!(["lm_head"])),
        ("layers_to_transform", json!([0])),
        ("lora_bias", json!(true)),
        ("init_lora_weights", json!("pissa_niter_4")),
        ("task_type", json!("SEQ_CLS")),
    ];
    for (key, value) in cases {
        let e = import(&model, &files.safetensors, &with_config(&files, key, value.clone()));
        assert!(matches!(e, AdapterError::Unsupported { key: k, .. } if k == key), "{key} = {value}: {e:?}");
    }
    // Values PEFT writes for plain LoRA are fine.
    for (key, value) in
        [("use_dora", json!(false)), ("modules_to_save", json!([])), ("init_lora_weights", json!("gaussian"))]
    {
        assert!(from_peft(&files.safetensors, &with_config(&files, key, value), &model).is_ok(), "{key}");
    }
}

#[test]
fn rejects_bad_config_values() {
    let (model, files) = valid();
    let e = import(&model, &files.safetensors, "{\"peft_type\": \"LORA\",");
    assert!(matches!(e, AdapterError::ConfigJson(_)), "{e:?}");
    for (key, value) in [
        ("peft_type", json!("PREFIX_TUNING")),
        ("r", json!(0)),
        ("r", json!("2")),
        ("lora_alpha", json!("x")),
        ("lora_dropout", json!(1.5)),
        ("use_rslora", json!("yes")),
    ] {
        let e = import(&model, &files.safetensors, &with_config(&files, key, value.clone()));
        assert!(matches!(&e, AdapterError::ConfigValue { key: k, .. } if k == key), "{key} = {value}: {e:?}");
    }
}

#[test]
fn reads_dropout_alpha_and_rslora() {
    let (model, files) = valid();
    let mut json: Value = serde_json::from_str(&files.config_json).unwrap();
    json["lora_dropout"] = json!(0.1);
    json["lora_alpha"] = json!(3.5);
    json["use_rslora"] = json!(true);
    json["base_model_name_or_path"] = json!("HuggingFaceTB/SmolLM2-135M-Instruct");
    let a = from_peft(&files.safetensors, &json.to_string(), &model).unwrap();
    assert_eq!((a.config.dropout, a.config.alpha, a.config.rslora), (0.1, 3.5, true));
    assert_eq!(a.base_name, "HuggingFaceTB/SmolLM2-135M-Instruct");
}

#[test]
fn rejects_missing_and_unexpected_tensors() {
    let (model, files) = valid();
    let mut t = tensors(&files);
    let name = peft_key(1, Target::K, Factor::B);
    t.retain(|e| e.0 != name);
    match import(&model, &serialize(&t), &files.config_json) {
        AdapterError::MissingTensor { tensor, layer: 1, module: "k_proj" } => assert_eq!(tensor, name),
        e => panic!("{e:?}"),
    }
    for extra in [
        "base_model.model.lm_head.lora_A.weight",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_magnitude_vector",
        "base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
        "base_model.model.model.layers.x.self_attn.q_proj.lora_A.weight",
        // A real projection, but not in target_modules.
        "base_model.model.model.layers.0.mlp.up_proj.lora_A.weight",
    ] {
        let mut t = tensors(&files);
        let mut e = t[0].clone();
        e.0 = extra.to_string();
        t.push(e);
        let e = import(&model, &serialize(&t), &files.config_json);
        assert!(matches!(&e, AdapterError::UnexpectedTensor { tensor, .. } if tensor == extra), "{e:?}");
    }
}

#[test]
fn export_rejects_inconsistent_adapters() {
    let model = tiny("tiny-llama");
    let good = adapter(&model, lora(2, 4.0, false, &[Target::Q, Target::Up]), 9);
    let mut a = good.clone();
    a.pairs[1].b.pop();
    assert!(matches!(to_peft(&a, &model), Err(AdapterError::Length { tensor: "lora_B", .. })));
    let mut a = good.clone();
    a.pairs.remove(2);
    assert!(matches!(to_peft(&a, &model), Err(AdapterError::MissingTensor { layer: 1, module: "q_proj", .. })));
    let mut a = good.clone();
    a.pairs[2] = a.pairs[0].clone();
    assert!(matches!(to_peft(&a, &model), Err(AdapterError::Duplicate { layer: 0, module: "q_proj" })));
    let mut a = good.clone();
    a.pairs[0].layer = 5;
    assert!(matches!(to_peft(&a, &model), Err(AdapterError::LayerOutOfRange { layer: 5, .. })));
    let mut a = good.clone();
    a.pairs[0].d_in = 63;
    assert!(matches!(to_peft(&a, &model), Err(AdapterError::Shape { tensor: "lora_A", .. })));
    let mut a = good.clone();
    a.config.targets = vec![Target::Q];
    assert!(matches!(to_peft(&a, &model), Err(AdapterError::NotATarget { module: "up_proj", .. })));
    let mut a = good;
    a.config.rank = 0;
    assert!(to_peft(&a, &model).is_err());
}

#[cfg(not(target_arch = "wasm32"))]
#[test]
fn directory_round_trip() {
    let model = tiny("tiny-qwen2");
    let a = adapter(&model, lora(2, 4.0, false, &Target::ALL), 11);
    let dir = std::env::temp_dir().join(format!("classtune-adapter-peft-{}", std::process::id()));
    classtune::adapter::write_peft_dir(&dir, &to_peft(&a, &model).unwrap()).unwrap();
    let back = classtune::adapter::read_peft_dir(&dir, &model).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert_same(&a, &back);
    let e = classtune::adapter::read_peft_dir(&dir, &model).unwrap_err();
    assert!(matches!(e, AdapterError::Io { .. }) && e.to_string().contains("adapter_model.safetensors"));
}

// ---------------------------------------------------------------- fuzz

fn small_files() -> (Config, PeftFiles) {
    let model = tiny("tiny-llama");
    let files = to_peft(&adapter(&model, lora(1, 2.0, false, &[Target::K, Target::Down]), 13), &model).unwrap();
    (model, files)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 384, ..ProptestConfig::default() })]

    #[test]
    fn truncated_or_mutated_bytes_never_panic(
        cut in any::<prop::sample::Index>(),
        flips in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>(), any::<bool>()), 0..6),
        json_cut in any::<prop::sample::Index>(),
        mode in 0u8..4,
    ) {
        let (model, files) = small_files();
        let mut st = files.safetensors.clone();
        let mut json = files.config_json.clone().into_bytes();
        let header = 8 + u64::from_le_bytes(st[..8].try_into().unwrap()) as usize;
        for (at, byte, in_header) in &flips {
            // Most flips land in the header, where they change names, shapes and offsets.
            let i = if *in_header { at.index(header) } else { at.index(st.len()) };
            st[i] = *byte;
        }
        match mode {
            0 => st.truncate(cut.index(st.len() + 1)),
            1 => json.truncate(json_cut.index(json.len() + 1)),
            2 => {
                let i = json_cut.index(json.len());
                json[i] = b"0123456789,:{}[]\"tfn"[cut.index(20)];
            }
            _ => {}
        }
        let json = String::from_utf8_lossy(&json);
        let _ = from_peft(&st, &json, &model);
    }
}
