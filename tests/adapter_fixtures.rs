//! The PEFT adapters in fixtures/lora (written by PEFT itself, scripts/fixtures/make_lora.py)
//! read through `from_peft` and written back with `to_peft`, tensor for tensor; and each
//! adapted module's output on PEFT's probe inputs recomputed from the GGUF's own weights
//! plus the imported (GGUF-space) adapter, which proves the Q/K row mapping against files
//! neither side of our code wrote.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use classtune::adapter::{from_peft, permute, read_peft_dir, to_peft, Adapter, Target, CONFIG_FILE, SAFETENSORS_FILE};
use classtune::gguf::{dequant, Gguf};
use classtune::model::Config;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

const MODELS: [&str; 2] = ["tiny-llama", "tiny-qwen2"];
const ADAPTERS: [&str; 3] = ["grad", "curve/init", "curve/final"];

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn gguf_bytes(name: &str) -> Vec<u8> {
    std::fs::read(root().join(format!("fixtures/tiny/{name}.gguf"))).unwrap()
}

fn config(bytes: &[u8]) -> Config {
    Config::from_gguf(&Gguf::parse(bytes, bytes.len() as u64).unwrap()).unwrap()
}

fn reference(name: &str) -> Value {
    let path = root().join(format!("fixtures/lora/{name}/reference.json"));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// Every tensor of a safetensors file as (shape, f32 values).
fn tensors(bytes: &[u8]) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let file = SafeTensors::deserialize(bytes).unwrap();
    file.iter()
        .map(|(name, view)| {
            assert_eq!(view.dtype(), Dtype::F32, "{name}");
            let values = view.data().chunks_exact(4).map(|c| f32::from_le_bytes(c.try_into().unwrap())).collect();
            (name.to_string(), (view.shape().to_vec(), values))
        })
        .collect()
}

fn check_config(name: &str, model: &Config, adapter: &Adapter, lora: &Value) {
    let c = &adapter.config;
    assert_eq!(c.rank as u64, lora["r"].as_u64().unwrap(), "{name}");
    assert_eq!(c.alpha as f64, lora["alpha"].as_f64().unwrap(), "{name}");
    assert_eq!(c.rslora, lora["use_rslora"].as_bool().unwrap(), "{name}");
    assert_eq!(c.dropout, 0.0);
    assert_eq!(c.targets, Target::ALL.to_vec());
    assert!((c.scale() as f64 - lora["scale"].as_f64().unwrap()).abs() < 1e-6);
    assert_eq!(adapter.base_name, name);
    assert_eq!(model.name, name);
    assert_eq!(adapter.pairs.len(), model.n_layers * 7);
    for p in &adapter.pairs {
        assert_eq!((p.d_in, p.d_out), p.target.dims(model));
        assert_eq!((p.a.len(), p.b.len()), (c.rank * p.d_in, c.rank * p.d_out));
    }
}

/// Our export holds the same tensors as PEFT's file, bit for bit.
fn check_reexport(what: &str, original: &[u8], ours: &[u8]) {
    let (want, got) = (tensors(original), tensors(ours));
    assert_eq!(want.keys().collect::<Vec<_>>(), got.keys().collect::<Vec<_>>(), "{what}");
    for (key, (shape, values)) in &want {
        let (our_shape, ours) = &got[key];
        assert_eq!(shape, our_shape, "{what} {key}");
        let same = values.iter().zip(ours).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same, "{what} {key}: values differ");
    }
}

fn read_dir(dir: &Path) -> (Vec<u8>, String) {
    (std::fs::read(dir.join(SAFETENSORS_FILE)).unwrap(), std::fs::read_to_string(dir.join(CONFIG_FILE)).unwrap())
}

#[test]
fn peft_written_adapters_round_trip() {
    for name in MODELS {
        let model = config(&gguf_bytes(name));
        let reference = reference(name);
        for sub in ADAPTERS {
            let dir = root().join(format!("fixtures/lora/{name}/{sub}"));
            let adapter = read_peft_dir(&dir, &model).unwrap_or_else(|e| panic!("{name}/{sub}: {e}"));
            check_config(name, &model, &adapter, &reference["lora"]);
            let (original, json) = read_dir(&dir);
            let ours = to_peft(&adapter, &model).unwrap();
            check_reexport(&format!("{name}/{sub}"), &original, &ours.safetensors);
            let again = from_peft(&ours.safetensors, &ours.config_json, &model).unwrap();
            assert_eq!(again, adapter);
            // PEFT's init leaves B at zero; the other two have nonzero B everywhere.
            let b_zero = adapter.pairs.iter().all(|p| p.b.iter().all(|&x| x == 0.0));
            assert_eq!(b_zero, sub == "curve/init", "{name}/{sub}");
            let peft_json: Value = serde_json::from_str(&json).unwrap();
            assert_eq!(peft_json["base_model_name_or_path"], name);
        }
        // The gradients use the adapter's key names, so they read as an adapter (in GGUF space).
        let dir = root().join(format!("fixtures/lora/{name}/grad"));
        let (_, json) = read_dir(&dir);
        let grads = std::fs::read(dir.join("grads.safetensors")).unwrap();
        let as_adapter = from_peft(&grads, &json, &model).unwrap();
        check_reexport(&format!("{name} grads"), &grads, &to_peft(&as_adapter, &model).unwrap().safetensors);
    }
}

/// `[out, in]` row-major f32 values of a GGUF tensor (GGUF dims are `[in, out]`).
fn gguf_matrix(bytes: &[u8], gguf: &Gguf, name: &str) -> Vec<f32> {
    let info = gguf.tensor(name).unwrap();
    let data = &bytes[info.offset as usize..(info.offset + info.size) as usize];
    dequant::dequantize(info.ty, data, info.n_elements() as usize).unwrap()
}

/// Worst `|ours - peft| / (1e-4 + 1e-4·|peft|)` over the probes of one module (≤ 1 passes).
fn probe_error(ours: &[f64], peft: &[f32]) -> f64 {
    ours.iter().zip(peft).map(|(o, p)| (o - *p as f64).abs() / (1e-4 + 1e-4 * p.abs() as f64)).fold(0.0, f64::max)
}

#[test]
fn probes_match_peft_through_the_gguf_weights() {
    for name in MODELS {
        let bytes = gguf_bytes(name);
        let gguf = Gguf::parse(&bytes, bytes.len() as u64).unwrap();
        let model = config(&bytes);
        let adapter = read_peft_dir(&root().join(format!("fixtures/lora/{name}/grad")), &model).unwrap();
        let probes =
            tensors(&std::fs::read(root().join(format!("fixtures/lora/{name}/grad/probes.safetensors"))).unwrap());
        let (rank, scale) = (adapter.config.rank, adapter.config.scale() as f64);
        for p in &adapter.pairs {
            let t = p.target;
            let prefix = format!("model.layers.{}.{}.{}", p.layer, t.hf_parent(), t.hf_module());
            let (x_shape, x) = &probes[&format!("{prefix}.x")];
            let (_, y) = &probes[&format!("{prefix}.y")];
            let n = x_shape[0];
            assert_eq!(x_shape[1], p.d_in);
            let w = gguf_matrix(&bytes, &gguf, &format!("blk.{}.{}.weight", p.layer, t.gguf_name()));
            let bias_name = format!("blk.{}.{}.bias", p.layer, t.gguf_name());
            let bias = gguf.find_tensor(&bias_name).map(|_| gguf_matrix(&bytes, &gguf, &bias_name));
            // y = W x + bias + scale·B (A x), every row in GGUF order.
            let mut ours_gguf = vec![0f64; p.d_out * n];
            for s in 0..n {
                let xs = &x[s * p.d_in..(s + 1) * p.d_in];
                let ax: Vec<f64> =
                    (0..rank).map(|r| (0..p.d_in).map(|k| p.a[r * p.d_in + k] as f64 * xs[k] as f64).sum()).collect();
                for o in 0..p.d_out {
                    let base: f64 = (0..p.d_in).map(|k| w[o * p.d_in + k] as f64 * xs[k] as f64).sum();
                    let lora: f64 = (0..rank).map(|r| p.b[o * rank + r] as f64 * ax[r]).sum();
                    let b = bias.as_ref().map_or(0.0, |b| b[o] as f64);
                    // Stored [out, n] so the row permutation applies to it directly.
                    ours_gguf[o * n + s] = base + b + scale * lora;
                }
            }
            let ours_f32: Vec<f32> = ours_gguf.iter().map(|&v| v as f32).collect();
            let to_hf = |v: &[f32]| match permute::permuted_heads(&model, t) {
                Some(heads) => permute::gguf_to_hf_rows(v, n, heads).unwrap(),
                None => v.to_vec(),
            };
            let transpose = |v: &[f32]| -> Vec<f64> {
                (0..n * p.d_out).map(|i| v[(i % p.d_out) * n + i / p.d_out] as f64).collect()
            };
            let err = probe_error(&transpose(&to_hf(&ours_f32)), y);
            assert!(err <= 1.0, "{name} layer {} {:?}: error {err:.3} (1 = tolerance)", p.layer, t);
            if permute::permuted_heads(&model, t).is_some() {
                // Without the un-permutation the rows do not line up: the check has teeth.
                let wrong = probe_error(&transpose(&ours_f32), y);
                assert!(wrong > 100.0, "{name} layer {} {:?}: unpermuted error only {wrong:.3}", p.layer, t);
            }
        }
    }
}
