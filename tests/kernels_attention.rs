//! Causal GQA attention, both kernels, against the CPU reference: head dims 16 to 128,
//! group sizes 1, 3, 4, with and without a KV-cache prefix, up to 600 keys.

use classtune::gpu::{Gpu, GpuError, GpuOptions};
use classtune::kernels::attention::{
    attention_forward, attention_forward_cpu, attention_forward_path, loop_estimate, subgroup_lanes, AttentionPath,
    AttentionShape, LOOP_BUDGET,
};
use rand::{rngs::StdRng, Rng, SeedableRng};

fn assert_close(what: &str, got: &[f32], want: &[f32], abs: f32, rel: f32) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!((g - w).abs() <= abs + rel * w.abs(), "{what}[{i}]: gpu {g} vs cpu {w}");
    }
}

fn shape(n_query: u32, past_len: u32, n_head: u32, n_kv_head: u32, head_dim: u32) -> AttentionShape {
    AttentionShape::new(n_query, past_len, n_head, n_kv_head, head_dim)
}

/// Every path this device can run on `s`: the portable ones always, the subgroup one
/// where the device has a fixed subgroup size dividing the row, and `Auto`.
async fn check(gpu: &Gpu, rng: &mut StdRng, s: AttentionShape) -> Result<(), GpuError> {
    let mut paths = vec![AttentionPath::Tiled, AttentionPath::Decode, AttentionPath::Auto];
    if subgroup_lanes(gpu, s.head_dim).is_some() {
        paths.push(AttentionPath::Subgroup);
    }
    check_paths(gpu, rng, s, &paths).await
}

async fn check_paths(gpu: &Gpu, rng: &mut StdRng, s: AttentionShape, paths: &[AttentionPath]) -> Result<(), GpuError> {
    let (t, hq, hkv, hd) = (s.n_query as usize, s.n_head as usize, s.n_kv_head as usize, s.head_dim as usize);
    let used = s.past_len as usize + t;
    let cap = used + 3;
    let q: Vec<f32> = (0..t * hq * hd).map(|_| rng.random_range(-1.5..1.5)).collect();
    let mut k: Vec<f32> = (0..cap * hkv * hd).map(|_| rng.random_range(-1.5..1.5)).collect();
    let mut v: Vec<f32> = (0..cap * hkv * hd).map(|_| rng.random_range(-1.0..1.0)).collect();
    // Rows past the last position must never be read: NaN there would show.
    for x in k[used * hkv * hd..].iter_mut().chain(v[used * hkv * hd..].iter_mut()) {
        *x = f32::NAN;
    }
    let (want_out, want_lse) = attention_forward_cpu(&q, &k, &v, s);
    let qb = gpu.upload("q", bytemuck::cast_slice(&q))?;
    let kb = gpu.upload("k_cache", bytemuck::cast_slice(&k))?;
    let vb = gpu.upload("v_cache", bytemuck::cast_slice(&v))?;
    for &path in paths {
        let ob = gpu.buffer("out", 4 * (t * hq * hd) as u64)?;
        let lb = gpu.buffer("lse", 4 * (hq * t) as u64)?;
        let mut batch = gpu.batch();
        attention_forward_path(&mut batch, &qb, &kb, &vb, &ob, &lb, s, path).await?;
        batch.submit()?;
        let what = format!("{s:?} {path:?}");
        assert_close(&format!("{what} out"), &gpu.read_f32_prefix(&ob, want_out.len()).await?, &want_out, 2e-5, 1e-4);
        assert_close(&format!("{what} lse"), &gpu.read_f32_prefix(&lb, want_lse.len()).await?, &want_lse, 2e-5, 1e-5);
    }
    Ok(())
}

#[test]
fn attention_matches_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(5);
        let shapes = [
            shape(1, 0, 9, 3, 64),    // first decode step, SmolLM2 heads
            shape(1, 37, 9, 3, 64),   // decode with a cache prefix
            shape(1, 300, 4, 1, 128), // decode over more keys than one chunk
            shape(7, 0, 6, 2, 32),
            shape(13, 5, 8, 2, 16),   // group 4
            shape(65, 0, 4, 4, 64),   // group 1, one row past the tile
            shape(22, 40, 12, 4, 80), // head dim not a power of two
            shape(3, 0, 2, 2, 256),
        ];
        for s in shapes {
            check(&gpu, &mut rng, s).await?;
        }
        Ok(())
    })
}

/// On lavapipe (a fixed subgroup of 8: what CI runs) the subgroup path must be on
/// offer, or the tests above would quietly skip it. GPUs with wider subgroups (32 on
/// NVIDIA) take the tiled path, and there the subgroup path is refused. Without
/// subgroups `Auto` takes the portable paths and the subgroup path is refused.
#[test]
fn attention_subgroup_path_is_used() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(9);
        if gpu.is_software() {
            assert!(gpu.has_subgroups(), "{}", gpu.describe());
            assert!(subgroup_lanes(&gpu, 64).is_some(), "{}", gpu.describe());
        }
        if subgroup_lanes(&gpu, 64).is_some() {
            // lanes past the last row, a group of 3 split across subgroups, SmolLM2 prefill
            check(&gpu, &mut rng, shape(5, 0, 9, 3, 64)).await?;
            check(&gpu, &mut rng, shape(33, 7, 9, 3, 64)).await?;
            check(&gpu, &mut rng, shape(9, 2, 4, 1, 32)).await?;
        } else {
            refuses_subgroup_path(&gpu).await?;
        }

        let portable = Gpu::new(GpuOptions { subgroups: false, ..GpuOptions::default() }).await?;
        assert!(subgroup_lanes(&portable, 64).is_none());
        check(&portable, &mut rng, shape(19, 3, 9, 3, 64)).await?;
        check(&portable, &mut rng, shape(2, 30, 9, 3, 64)).await?;
        refuses_subgroup_path(&portable).await
    })
}

async fn refuses_subgroup_path(gpu: &Gpu) -> Result<(), GpuError> {
    let s = shape(2, 0, 2, 1, 64);
    let q = gpu.buffer("q", 4 * 2 * 2 * 64)?;
    let kv = gpu.buffer("kv", 4 * 2 * 64)?;
    let out = gpu.buffer("out", 4 * 2 * 2 * 64)?;
    let lse = gpu.buffer("lse", 4 * 2 * 2)?;
    let mut batch = gpu.batch();
    let refused = attention_forward_path(&mut batch, &q, &kv, &kv, &out, &lse, s, AttentionPath::Subgroup).await;
    assert!(matches!(refused, Err(GpuError::Shape { .. })), "{refused:?}");
    Ok(())
}

#[test]
fn attention_long_sequences() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(6);
        check(&gpu, &mut rng, shape(600, 0, 3, 1, 64)).await?;
        check(&gpu, &mut rng, shape(40, 600, 4, 1, 128)).await?;
        check(&gpu, &mut rng, shape(1, 1100, 9, 3, 64)).await?;
        Ok(())
    })
}

#[test]
fn attention_checks_shapes() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let s = shape(4, 10, 6, 4, 64); // 6 heads do not split into 4 groups
        let q = gpu.buffer("q", 4 * 4 * 6 * 64)?;
        let kv = gpu.buffer("kv", 4 * 14 * 4 * 64)?;
        let out = gpu.buffer("out", 4 * 4 * 6 * 64)?;
        let lse = gpu.buffer("lse", 4 * 6 * 4)?;
        let mut batch = gpu.batch();
        let bad = attention_forward(&mut batch, &q, &kv, &kv, &out, &lse, s).await;
        assert!(matches!(bad, Err(GpuError::Shape { .. })), "{bad:?}");
        // A cache too short for past_len + n_query.
        let s = shape(4, 11, 8, 4, 64);
        let q = gpu.buffer("q", 4 * 4 * 8 * 64)?;
        let out = gpu.buffer("out", 4 * 4 * 8 * 64)?;
        let lse = gpu.buffer("lse", 4 * 8 * 4)?;
        let bad = attention_forward(&mut batch, &q, &kv, &kv, &out, &lse, s).await;
        assert!(matches!(bad, Err(GpuError::Shape { .. })), "{bad:?}");
        // Packed calls: queries past the lse rows, several sequences with cached keys.
        let s = shape(2, 0, 8, 4, 64).packed(1, 2, 4);
        let bad = attention_forward(&mut batch, &q, &kv, &kv, &out, &lse, s).await;
        assert!(bad.as_ref().is_err_and(|e| e.to_string().contains("past the 4 rows")), "{bad:?}");
        let s = shape(2, 3, 8, 4, 64).packed(0, 2, 4);
        let bad = attention_forward(&mut batch, &q, &kv, &kv, &out, &lse, s).await;
        assert!(bad.as_ref().is_err_and(|e| e.to_string().contains("cached")), "{bad:?}");
        Ok(())
    })
}

/// llvmpipe leaves every loop of an invocation after 65535 iterations in all: shapes
/// just under the estimate's budget must still be right, and the tiled path must
/// refuse (and `Auto` reroute) shapes past it.
#[test]
fn attention_near_the_loop_budget() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = Gpu::new(GpuOptions::default()).await?;
        let mut rng = StdRng::seed_from_u64(8);
        let mut s = shape(8, 0, 2, 1, 64);
        while loop_estimate(AttentionPath::Tiled, &shape(8, s.past_len + 64, 2, 1, 64)) <= LOOP_BUDGET {
            s.past_len += 64;
        }
        assert!(s.past_len > 4000, "{s:?}");
        check_paths(&gpu, &mut rng, s, &[AttentionPath::Tiled, AttentionPath::Decode]).await?;

        let over = shape(8, s.past_len + 200, 2, 1, 64);
        assert!(loop_estimate(AttentionPath::Tiled, &over) > LOOP_BUDGET);
        check_paths(&gpu, &mut rng, over, &[AttentionPath::Auto]).await?;
        let used = (over.past_len + over.n_query) as u64;
        let q = gpu.buffer("q", 4 * 8 * 2 * 64)?;
        let kv = gpu.buffer("kv", 4 * used * 64)?;
        let out = gpu.buffer("out", 4 * 8 * 2 * 64)?;
        let lse = gpu.buffer("lse", 4 * 2 * 8)?;
        let mut batch = gpu.batch();
        let refused = attention_forward_path(&mut batch, &q, &kv, &kv, &out, &lse, over, AttentionPath::Tiled).await;
        assert!(matches!(refused, Err(GpuError::Shape { .. })), "{refused:?}");

        // The subgroup path's own edge: right under the budget, and `Auto` past it.
        if subgroup_lanes(&gpu, 64).is_none() {
            return Ok(());
        }
        let mut s = shape(3, 0, 2, 1, 64);
        while loop_estimate(AttentionPath::Subgroup, &shape(3, s.past_len + 256, 2, 1, 64)) <= LOOP_BUDGET {
            s.past_len += 256;
        }
        assert!(s.past_len > 15000, "{s:?}");
        check_paths(&gpu, &mut rng, s, &[AttentionPath::Subgroup]).await?;
        let over = shape(3, s.past_len + 300, 2, 1, 64);
        assert!(loop_estimate(AttentionPath::Subgroup, &over) > LOOP_BUDGET);
        check_paths(&gpu, &mut rng, over, &[AttentionPath::Auto]).await?;
        Ok(())
    })
}
