//! CPU (de)quantization against gguf-py, bit for bit (fixtures/dequant, written by
//! scripts/fixtures/dequant_fixture.py).

use classtune::gguf::dequant::{dequantize, quantize};
use classtune::gguf::GgmlType;

const TYPES: [GgmlType; 8] = GgmlType::ALL;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!("{}/fixtures/dequant/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn index() -> serde_json::Value {
    serde_json::from_slice(&fixture("index.json")).expect("index.json")
}

#[test]
fn dequantize_matches_gguf_py() {
    let index = index();
    for ty in TYPES {
        let n = index[ty.name()]["n"].as_u64().expect("n") as usize;
        let raw = fixture(&format!("{ty}.bin"));
        let want: Vec<f32> = bytemuck::pod_collect_to_vec(&fixture(&format!("{ty}.f32")));
        let got = dequantize(ty, &raw, n).expect("dequantize");
        assert_eq!(got.len(), n, "{ty}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert!(g.to_bits() == w.to_bits(), "{ty} value {i}: ours {g}, gguf-py {w}");
        }
    }
}

#[test]
fn quantize_matches_gguf_py() {
    let index = index();
    for ty in TYPES {
        if index[ty.name()]["quantized"].as_bool() != Some(true) {
            continue;
        }
        let src: Vec<f32> = bytemuck::pod_collect_to_vec(&fixture(&format!("{ty}.src.f32")));
        let want = fixture(&format!("{ty}.quant.bin"));
        let got = quantize(ty, &src).expect("quantize");
        assert_eq!(got.len(), want.len(), "{ty}");
        if let Some(i) = got.iter().zip(&want).position(|(g, w)| g != w) {
            panic!("{ty}: byte {i} (block {}) differs: ours {:#04x}, gguf-py {:#04x}", i / ty.block_bytes(), got[i], want[i]);
        }
    }
}

#[test]
fn bad_lengths_are_errors() {
    assert!(dequantize(GgmlType::Q4_1, &[0; 20], 16).is_err(), "not a whole block");
    assert!(dequantize(GgmlType::Q8_0, &[0; 33], 32).is_err(), "truncated");
    assert!(quantize(GgmlType::Q4_0, &[0.0; 31]).is_err());
    assert!(quantize(GgmlType::Q4_K, &[0.0; 256]).is_err(), "K-quant quantizers are not provided");
}

#[test]
fn quantize_round_trips_within_half_a_step() {
    let values: Vec<f32> = (0..256).map(|i| ((i * 37 % 101) as f32 - 50.0) / 17.0).collect();
    for (ty, tol) in [(GgmlType::Q8_0, 3.0 / 127.0 / 2.0 + 1e-3), (GgmlType::Q4_1, 6.0 / 15.0 / 2.0 + 1e-2)] {
        let back = dequantize(ty, &quantize(ty, &values).expect("quantize"), values.len()).expect("dequantize");
        for (i, (a, b)) in values.iter().zip(&back).enumerate() {
            assert!((a - b).abs() <= tol, "{ty} value {i}: {a} came back as {b}");
        }
    }
}
