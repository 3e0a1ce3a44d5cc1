use classtune::gpu::{Gpu, GpuOptions};
use classtune::kernels::attention::*;
#[test]
fn probe() {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await.unwrap();
        for (hd, path) in [(256u32, AttentionPath::Decode), (16, AttentionPath::Decode), (80, AttentionPath::Decode)] {
            // largest past_len within budget
            let mut past = 0u32;
            let step = if path == AttentionPath::Decode { 4096 } else { 64 };
            loop {
                let s = AttentionShape { n_query: 1, past_len: past + step, n_head: 1, n_kv_head: 1, head_dim: hd };
                if loop_estimate(path, &s) > LOOP_BUDGET || past + step > 100_000 { break; }
                past += step;
            }
            let s = AttentionShape { n_query: 1, past_len: past, n_head: 1, n_kv_head: 1, head_dim: hd };
            let hdu = hd as usize; let n = (past + 1) as usize * hdu;
            let q: Vec<f32> = (0..hdu).map(|i| (i as f32 * 0.1).sin()).collect();
            let k: Vec<f32> = (0..n).map(|i| ((i % 10007) as f32 * 0.37).cos()).collect();
            let v: Vec<f32> = (0..n).map(|i| ((i % 9973) as f32 * 0.11).sin()).collect();
            let (wo, wl) = attention_forward_cpu(&q, &k, &v, s);
            let qb = gpu.upload("q", bytemuck::cast_slice(&q)).unwrap();
            let kb = gpu.upload("k", bytemuck::cast_slice(&k)).unwrap();
            let vb = gpu.upload("v", bytemuck::cast_slice(&v)).unwrap();
            let ob = gpu.buffer("o", 4*hd as u64).unwrap();
            let lb = gpu.buffer("l", 4).unwrap();
            let mut b = gpu.batch();
            attention_forward_path(&mut b, &qb, &kb, &vb, &ob, &lb, s, path).await.unwrap();
            b.submit().unwrap();
            let o = gpu.read_f32_prefix(&ob, hdu).await.unwrap();
            let l = gpu.read_f32_prefix(&lb, 1).await.unwrap();
            println!("{path:?} hd {hd} past {past} est {}: lse gpu {} cpu {}  out0 gpu {} cpu {}", loop_estimate(path, &s), l[0], wl[0], o[0], wo[0]);
        }
    })
}
