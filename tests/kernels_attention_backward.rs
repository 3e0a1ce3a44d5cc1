//! Causal GQA attention backward: the CPU reference against finite differences of an
//! f64 forward; every path the device has (`Tiled`, `Subgroup`, `Auto`) against the CPU
//! reference at odd shapes (1 to 130 queries, a cache prefix, groups 1 to 7, head dims
//! 16 to 128), at SmolLM2's heads with 256 queries, sampled at 1024 queries, on spans the
//! loop budget splits into several dispatches, and on queries the subgroup path splits
//! into chunks. `attention_backward_timing` (ignored) times the paths.

mod gradcheck;

use classtune::gpu::{Gpu, GpuError, GpuOptions};
use classtune::kernels::attention::{
    attention_backward, attention_backward_cpu, attention_backward_path, attention_forward, attention_forward_cpu,
    attention_forward_path, backward_loop_estimate, subgroup_lanes, AttentionBackwardPath, AttentionPath,
    AttentionShape, BackwardBuffers, LOOP_BUDGET,
};
use gradcheck::{assert_close, dot, finite_diff, random, to_f64, upload};
use rand::{rngs::StdRng, SeedableRng};

fn shape(n_query: u32, past_len: u32, n_head: u32, n_kv_head: u32, head_dim: u32) -> AttentionShape {
    AttentionShape::new(n_query, past_len, n_head, n_kv_head, head_dim)
}

/// Attention forward in f64, `out` [n_query, n_head, head_dim] from q and K/V rows
/// `0 .. past_len + n_query`: what finite differences must see.
fn attention_f64(q: &[f64], k: &[f64], v: &[f64], s: AttentionShape) -> Vec<f64> {
    let (t_n, hq, hkv, hd) = (s.n_query as usize, s.n_head as usize, s.n_kv_head as usize, s.head_dim as usize);
    let scale = 1.0 / (hd as f64).sqrt();
    let mut out = vec![0.0; t_n * hq * hd];
    for t in 0..t_n {
        for h in 0..hq {
            let hk = h / (hq / hkv);
            let row = (t * hq + h) * hd;
            let n_keys = s.past_len as usize + t + 1;
            let scores: Vec<f64> = (0..n_keys)
                .map(|j| (0..hd).map(|c| q[row + c] * k[(j * hkv + hk) * hd + c]).sum::<f64>() * scale)
                .collect();
            let m = scores.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = scores.iter().map(|x| (x - m).exp()).sum();
            for (j, x) in scores.iter().enumerate() {
                let p = (x - m).exp() / z;
                for c in 0..hd {
                    out[row + c] += p * v[(j * hkv + hk) * hd + c];
                }
            }
        }
    }
    out
}

#[test]
fn cpu_reference_matches_finite_differences() {
    let mut rng = StdRng::seed_from_u64(31);
    // group 2 and 1, a cache prefix, group 3, head dim 16
    for s in
        [shape(3, 0, 2, 1, 4), shape(4, 2, 4, 2, 8), shape(2, 3, 3, 3, 4), shape(5, 0, 6, 2, 4), shape(3, 1, 4, 2, 16)]
    {
        let keys = (s.past_len + s.n_query) as usize;
        let (nq, nkv) = ((s.n_query * s.n_head * s.head_dim) as usize, keys * (s.n_kv_head * s.head_dim) as usize);
        let (q, k, v) =
            (random(&mut rng, nq, -1.5, 1.5), random(&mut rng, nkv, -1.5, 1.5), random(&mut rng, nkv, -1.0, 1.0));
        let dout = random(&mut rng, nq, -1.0, 1.0);
        let (dq, dk, dv) = attention_backward_cpu(&q, &k, &v, &dout, s);
        let (qd, kd, vd) = (to_f64(&q), to_f64(&k), to_f64(&v));
        let what = format!("{s:?}");
        let fd = finite_diff(&qd, 1e-6, |x| dot(&dout, &attention_f64(x, &kd, &vd, s)));
        assert_close(&format!("{what} dq"), &dq, &fd, 1e-6, 1e-5);
        let fd = finite_diff(&kd, 1e-6, |x| dot(&dout, &attention_f64(&qd, x, &vd, s)));
        assert_close(&format!("{what} dk"), &dk, &fd, 1e-6, 1e-5);
        let fd = finite_diff(&vd, 1e-6, |x| dot(&dout, &attention_f64(&qd, &kd, x, s)));
        assert_close(&format!("{what} dv"), &dv, &fd, 1e-6, 1e-5);
    }
}

/// Inputs of one shape, the GPU's forward of them, and the backward of every path run.
struct Run {
    q: Vec<f32>,
    k: Vec<f32>,
    v: Vec<f32>,
    dout: Vec<f32>,
    out: Vec<f32>,
    lse: Vec<f32>,
    grads: Vec<Grads>,
}

/// `(dq, dk, dv)` of one backward path.
struct Grads {
    path: AttentionBackwardPath,
    dq: Vec<f32>,
    dk: Vec<f32>,
    dv: Vec<f32>,
}

/// Every backward path this device can run on `head_dim`: the portable one always, the
/// subgroup one where [`subgroup_lanes`] allows it, and `Auto`.
fn paths(gpu: &Gpu, head_dim: u32) -> Vec<AttentionBackwardPath> {
    let mut paths = vec![AttentionBackwardPath::Tiled, AttentionBackwardPath::Auto];
    if subgroup_lanes(gpu, head_dim).is_some() {
        paths.push(AttentionBackwardPath::Subgroup);
    }
    paths
}

/// Runs the GPU forward (whichever path `Auto` takes) and the backward of every path
/// in `paths` on random inputs. K/V rows past the used ones are NaN (they must never be
/// read); the gradient buffers start as NaN (they must be overwritten), and dk/dv rows
/// past the used ones as 7 (they must be left alone; `run` checks that and drops them).
async fn run(gpu: &Gpu, rng: &mut StdRng, s: AttentionShape, paths: &[AttentionBackwardPath]) -> Result<Run, GpuError> {
    let (t, hq, hkv, hd) = (s.n_query as usize, s.n_head as usize, s.n_kv_head as usize, s.head_dim as usize);
    let used = (s.past_len as usize + t) * hkv * hd;
    let cap = used + 3 * hkv * hd;
    let q = random(rng, t * hq * hd, -1.5, 1.5);
    let mut k = random(rng, cap, -1.5, 1.5);
    let mut v = random(rng, cap, -1.0, 1.0);
    let dout = random(rng, t * hq * hd, -1.0, 1.0);
    for x in k[used..].iter_mut().chain(v[used..].iter_mut()) {
        *x = f32::NAN;
    }
    let mut grad_init = vec![f32::NAN; cap];
    grad_init[used..].fill(7.0);
    let (qb, kb, vb, db) =
        (upload(gpu, "q", &q)?, upload(gpu, "k", &k)?, upload(gpu, "v", &v)?, upload(gpu, "dout", &dout)?);
    let ob = gpu.buffer("out", 4 * (t * hq * hd) as u64)?;
    let lb = gpu.buffer("lse", 4 * (hq * t) as u64)?;
    let mut batch = gpu.batch();
    attention_forward(&mut batch, &qb, &kb, &vb, &ob, &lb, s).await?;
    batch.submit()?;
    let out = gpu.read_f32_prefix(&ob, t * hq * hd).await?;
    let lse = gpu.read_f32_prefix(&lb, hq * t).await?;
    let mut grads = Vec::new();
    for &path in paths {
        let dqb = upload(gpu, "dq", &vec![f32::NAN; t * hq * hd])?;
        let (dkb, dvb) = (upload(gpu, "dk", &grad_init)?, upload(gpu, "dv", &grad_init)?);
        let buffers = BackwardBuffers {
            q: &qb,
            k_cache: &kb,
            v_cache: &vb,
            out: &ob,
            dout: &db,
            lse: &lb,
            dq: &dqb,
            dk: &dkb,
            dv: &dvb,
        };
        let mut batch = gpu.batch();
        attention_backward_path(&mut batch, buffers, s, path).await?;
        batch.submit()?;
        let dq = gpu.read_f32_prefix(&dqb, t * hq * hd).await?;
        let (mut dk, mut dv) = (gpu.read_f32_prefix(&dkb, cap).await?, gpu.read_f32_prefix(&dvb, cap).await?);
        for (name, g) in [("dk", &dk), ("dv", &dv)] {
            assert!(g[used..].iter().all(|&x| x == 7.0), "{s:?} {path:?} {name}: rows past the keys were written");
        }
        dk.truncate(used);
        dv.truncate(used);
        grads.push(Grads { path, dq, dk, dv });
    }
    Ok(Run { q, k, v, dout, out, lse, grads })
}

/// `abs + rel·|want|` with `abs` relative to the largest reference value: single
/// gradient entries may cancel to near zero where their neighbours are large.
fn check_grad(what: &str, got: &[f32], want: &[f64]) {
    check_grad_summed(what, got, want, 0.0);
}

/// As [`check_grad`], where `terms` is the largest sum of magnitudes of the terms that
/// make one entry: an entry that cancels to zero (a query seeing one key has dq = 0)
/// carries a rounding error of that size, whose sign and size differ between GPUs.
fn check_grad_summed(what: &str, got: &[f32], want: &[f64], terms: f64) {
    let big = want.iter().fold(terms, |m, w| m.max(w.abs()));
    assert_close(what, got, want, 2e-5 * big + 1e-7, 1e-4);
}

/// Every path against the full CPU reference.
async fn check(gpu: &Gpu, rng: &mut StdRng, s: AttentionShape) -> Result<(), GpuError> {
    let r = run(gpu, rng, s, &paths(gpu, s.head_dim)).await?;
    let (dq, dk, dv) = attention_backward_cpu(&r.q, &r.k, &r.v, &r.dout, s);
    let (dq, dk, dv) = (to_f64(&dq), to_f64(&dk), to_f64(&dv));
    for g in &r.grads {
        let what = format!("{s:?} {:?}", g.path);
        check_grad(&format!("{what} dq"), &g.dq, &dq);
        check_grad(&format!("{what} dk"), &g.dk, &dk);
        check_grad(&format!("{what} dv"), &g.dv, &dv);
    }
    Ok(())
}

/// Sequences packed one after another in the same buffers (as training packs them), a
/// call per run of equal lengths (three sequences of 13 in one dispatch): every forward
/// and backward path gives each sequence what the CPU reference gives it alone, and no
/// call writes a row of another.
#[test]
fn packed_sequences_match_each_alone() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(35);
        let (hq, hkv, hd) = (4u32, 2u32, 32u32);
        let lengths = [7u32, 13, 13, 13, 1, 70];
        let rows: u32 = lengths.iter().sum();
        let (qw, kw) = ((hq * hd) as usize, (hkv * hd) as usize);
        let n = rows as usize;
        let q = random(&mut rng, n * qw, -1.5, 1.5);
        let k = random(&mut rng, n * kw, -1.5, 1.5);
        let v = random(&mut rng, n * kw, -1.0, 1.0);
        let dout = random(&mut rng, n * qw, -1.0, 1.0);
        let (qb, kb, vb, db) =
            (upload(&gpu, "q", &q)?, upload(&gpu, "k", &k)?, upload(&gpu, "v", &v)?, upload(&gpu, "dout", &dout)?);
        // Each sequence alone (its first row and shape), and the calls.
        let alone: Vec<(usize, AttentionShape)> = lengths
            .iter()
            .scan(0usize, |offset, &len| {
                *offset += len as usize;
                Some((*offset - len as usize, shape(len, 0, hq, hkv, hd)))
            })
            .collect();
        let calls = [(0, 1, 7), (7, 3, 13), (46, 1, 1), (47, 1, 70)].map(|(o, n, len)| shape(len, 0, hq, hkv, hd).packed(o, n, rows));
        let mut forward = vec![AttentionPath::Tiled, AttentionPath::Decode, AttentionPath::Auto];
        if subgroup_lanes(&gpu, hd).is_some() {
            forward.push(AttentionPath::Subgroup);
        }
        for path in forward {
            let ob = upload(&gpu, "out", &vec![f32::NAN; n * qw])?;
            let lb = upload(&gpu, "lse", &vec![f32::NAN; n * hq as usize])?;
            let mut batch = gpu.batch();
            for s in calls {
                attention_forward_path(&mut batch, &qb, &kb, &vb, &ob, &lb, s, path).await?;
            }
            batch.submit()?;
            let (out, lse) = (gpu.read_f32_prefix(&ob, n * qw).await?, gpu.read_f32_prefix(&lb, n * hq as usize).await?);
            for &(o, s) in &alone {
                let len = s.n_query as usize;
                let (want_out, want_lse) =
                    attention_forward_cpu(&q[o * qw..(o + len) * qw], &k[o * kw..(o + len) * kw], &v[o * kw..(o + len) * kw], s);
                let what = format!("{path:?} at {o}");
                gradcheck::assert_close(&format!("{what} out"), &out[o * qw..(o + len) * qw], &to_f64(&want_out), 1e-5, 1e-4);
                for h in 0..hq as usize {
                    let got = &lse[h * n + o..h * n + o + len];
                    gradcheck::assert_close(&format!("{what} lse"), got, &to_f64(&want_lse[h * len..(h + 1) * len]), 1e-5, 1e-5);
                }
            }
        }
        let ob = gpu.buffer("out", 4 * (n * qw) as u64)?;
        let lb = gpu.buffer("lse", 4 * (n * hq as usize) as u64)?;
        let mut batch = gpu.batch();
        for s in calls {
            attention_forward(&mut batch, &qb, &kb, &vb, &ob, &lb, s).await?;
        }
        batch.submit()?;
        for path in paths(&gpu, hd) {
            let dqb = upload(&gpu, "dq", &vec![f32::NAN; n * qw])?;
            let (dkb, dvb) = (upload(&gpu, "dk", &vec![f32::NAN; n * kw])?, upload(&gpu, "dv", &vec![f32::NAN; n * kw])?);
            let buffers =
                BackwardBuffers { q: &qb, k_cache: &kb, v_cache: &vb, out: &ob, dout: &db, lse: &lb, dq: &dqb, dk: &dkb, dv: &dvb };
            let mut batch = gpu.batch();
            for s in calls {
                attention_backward_path(&mut batch, buffers, s, path).await?;
            }
            batch.submit()?;
            let dq = gpu.read_f32_prefix(&dqb, n * qw).await?;
            let (dk, dv) = (gpu.read_f32_prefix(&dkb, n * kw).await?, gpu.read_f32_prefix(&dvb, n * kw).await?);
            for &(o, s) in &alone {
                let len = s.n_query as usize;
                let (q, k, v, d) =
                    (&q[o * qw..(o + len) * qw], &k[o * kw..(o + len) * kw], &v[o * kw..(o + len) * kw], &dout[o * qw..(o + len) * qw]);
                let (wq, wk, wv) = attention_backward_cpu(q, k, v, d, s);
                let what = format!("{path:?} at {o}");
                // The one-token sequence's dq and dk are 0 by cancellation: rounding
                // errors are measured against the largest gradient of the batch.
                let big = |g: &[f32]| g.iter().fold(0.0f64, |m, x| m.max(x.abs() as f64));
                check_grad_summed(&format!("{what} dq"), &dq[o * qw..(o + len) * qw], &to_f64(&wq), big(&dq));
                check_grad_summed(&format!("{what} dk"), &dk[o * kw..(o + len) * kw], &to_f64(&wk), big(&dk));
                check_grad(&format!("{what} dv"), &dv[o * kw..(o + len) * kw], &to_f64(&wv));
            }
        }
        Ok(())
    })
}

#[test]
fn attention_backward_matches_cpu() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(32);
        let shapes = [
            shape(1, 0, 4, 2, 16),
            shape(17, 0, 4, 2, 16),
            shape(67, 0, 4, 1, 64),
            shape(130, 0, 9, 3, 64),
            shape(130, 0, 4, 2, 16), // two row tiles and three key blocks
            shape(17, 0, 9, 3, 64),
            shape(67, 0, 14, 2, 64), // Qwen2.5-0.5B's heads: group 7
            shape(17, 23, 4, 2, 16), // a cache prefix
            shape(1, 40, 9, 3, 64),
            shape(67, 70, 4, 1, 64), // a prefix past one key block
            shape(9, 0, 2, 2, 72),   // head dim not a multiple of 16: the column remainder
            shape(33, 5, 6, 2, 80),  // 24 keys per tile
            shape(21, 6, 6, 3, 32),  // subgroup path: rows of one piece of 8 vec4s
            shape(19, 2, 4, 2, 128), // and of four
        ];
        for s in shapes {
            check(&gpu, &mut rng, s).await?;
        }
        // The browser's forward (no subgroups) writes out and lse by other kernels, and
        // the subgroup backward is refused there.
        let portable = Gpu::new(GpuOptions { subgroups: false, ..GpuOptions::default() }).await?;
        assert!(subgroup_lanes(&portable, 64).is_none());
        check(&portable, &mut rng, shape(67, 3, 9, 3, 64)).await?;
        let b = |n: u64| portable.buffer("b", 4 * n);
        let (qn, kn) = (2 * 2 * 64, 2 * 64);
        let (q, k, v, out, dout, lse, dq, dk, dv) =
            (b(qn)?, b(kn)?, b(kn)?, b(qn)?, b(qn)?, b(4)?, b(qn)?, b(kn)?, b(kn)?);
        let buffers = BackwardBuffers {
            q: &q,
            k_cache: &k,
            v_cache: &v,
            out: &out,
            dout: &dout,
            lse: &lse,
            dq: &dq,
            dk: &dk,
            dv: &dv,
        };
        let mut batch = portable.batch();
        let refused =
            attention_backward_path(&mut batch, buffers, shape(2, 0, 2, 1, 64), AttentionBackwardPath::Subgroup).await;
        assert!(matches!(refused, Err(GpuError::Shape { .. })), "{refused:?}");
        Ok(())
    })
}

/// SmolLM2's heads at a training length. On lavapipe (a fixed subgroup of 8: what CI
/// runs) the subgroup path must be on offer, or the tests would quietly skip it; GPUs
/// with wider subgroups (32 on NVIDIA) take the tiled path.
#[test]
fn attention_backward_smollm2_prefill() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        assert!(!gpu.is_software() || subgroup_lanes(&gpu, 64).is_some(), "{}", gpu.describe());
        let mut rng = StdRng::seed_from_u64(33);
        check(&gpu, &mut rng, shape(256, 0, 9, 3, 64)).await
    })
}

/// References for some rows of dq and some keys of dk, dv, in f64; the key rows take P
/// and D from the GPU forward's `lse` and `out` (checked by kernels_attention), which
/// spares recomputing every row's softmax.
fn check_sampled(s: AttentionShape, r: &Run, query_rows: &[(usize, usize)], key_rows: &[(usize, usize)]) {
    let (t_n, hq, hkv, hd) = (s.n_query as usize, s.n_head as usize, s.n_kv_head as usize, s.head_dim as usize);
    let (group, past) = (hq / hkv, s.past_len as usize);
    let scale = 1.0 / (hd as f64).sqrt();
    let dot = |a: &[f32], b: &[f32]| a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum::<f64>();
    let kv = |j: usize, hk: usize| (j * hkv + hk) * hd..(j * hkv + hk + 1) * hd;
    for &(t, h) in query_rows {
        let row = (t * hq + h) * hd..(t * hq + h + 1) * hd;
        let hk = h / group;
        let n_keys = past + t + 1;
        let sc: Vec<f64> = (0..n_keys).map(|j| dot(&r.q[row.clone()], &r.k[kv(j, hk)]) * scale).collect();
        let m = sc.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = sc.iter().map(|x| (x - m).exp()).sum();
        let p: Vec<f64> = sc.iter().map(|x| (x - m).exp() / z).collect();
        let dp: Vec<f64> = (0..n_keys).map(|j| dot(&r.dout[row.clone()], &r.v[kv(j, hk)])).collect();
        let d: f64 = p.iter().zip(&dp).map(|(a, b)| a * b).sum();
        let (mut want, mut terms) = (vec![0.0; hd], vec![0.0f64; hd]);
        for j in 0..n_keys {
            for c in 0..hd {
                let k = r.k[kv(j, hk)][c] as f64;
                want[c] += scale * p[j] * (dp[j] - d) * k;
                terms[c] += (scale * p[j] * (dp[j].abs() + d.abs()) * k).abs();
            }
        }
        let terms = terms.iter().fold(0.0f64, |m, &x| m.max(x));
        for g in &r.grads {
            let what = format!("{s:?} {:?} dq row (t {t}, h {h})", g.path);
            check_grad_summed(&what, &g.dq[row.clone()], &want, terms);
        }
    }
    for &(j, hk) in key_rows {
        let (mut dk, mut dv) = (vec![0.0; hd], vec![0.0; hd]);
        for t in j.saturating_sub(past)..t_n {
            for h in hk * group..(hk + 1) * group {
                let row = (t * hq + h) * hd..(t * hq + h + 1) * hd;
                let p = (dot(&r.q[row.clone()], &r.k[kv(j, hk)]) * scale - r.lse[h * t_n + t] as f64).exp();
                let d = dot(&r.dout[row.clone()], &r.out[row.clone()]);
                let ds = p * (dot(&r.dout[row.clone()], &r.v[kv(j, hk)]) - d);
                for c in 0..hd {
                    dk[c] += scale * ds * r.q[row.start + c] as f64;
                    dv[c] += p * r.dout[row.start + c] as f64;
                }
            }
        }
        for g in &r.grads {
            check_grad(&format!("{s:?} {:?} dk row (j {j}, hk {hk})", g.path), &g.dk[kv(j, hk)], &dk);
            check_grad(&format!("{s:?} {:?} dv row (j {j}, hk {hk})", g.path), &g.dv[kv(j, hk)], &dv);
        }
    }
}

/// The longest training sequence at SmolLM2's heads: one dispatch per pass within the
/// loop budget; every value finite, a sample of rows against the reference.
#[test]
fn attention_backward_long_sequence() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(34);
        let s = shape(1024, 0, 9, 3, 64);
        assert!(backward_loop_estimate(64, 1024 * 3) <= LOOP_BUDGET);
        let r = run(&gpu, &mut rng, s, &paths(&gpu, 64)).await?;
        for g in &r.grads {
            for (name, x) in [("dq", &g.dq), ("dk", &g.dk), ("dv", &g.dv)] {
                assert!(x.iter().all(|x| x.is_finite()), "{:?} {name}", g.path);
            }
        }
        let query_rows = [(0, 0), (1, 4), (63, 8), (64, 2), (511, 5), (1000, 7), (1023, 0), (1023, 8)];
        let key_rows = [(0, 0), (1, 2), (63, 1), (64, 0), (500, 2), (960, 1), (1022, 0), (1023, 2)];
        check_sampled(s, &r, &query_rows, &key_rows);
        Ok(())
    })
}

/// Spans past what one dispatch may loop over are split, and the parts add up: keys in
/// the query pass (a long cache prefix), query rows in the key pass (many heads per kv
/// head at head dim 256).
#[test]
fn attention_backward_splits_long_spans() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(35);
        let s = shape(3, 20_000, 2, 1, 64);
        assert!(backward_loop_estimate(64, 20_003) > LOOP_BUDGET);
        check(&gpu, &mut rng, s).await?;

        let s = shape(50, 0, 128, 1, 256);
        assert!(backward_loop_estimate(256, 50 * 128) > LOOP_BUDGET);
        let r = run(&gpu, &mut rng, s, &paths(&gpu, 256)).await?;
        let query_rows = [(0, 0), (7, 100), (30, 127), (49, 64)];
        let key_rows = [(0, 0), (1, 0), (25, 0), (45, 0), (46, 0), (49, 0)];
        check_sampled(s, &r, &query_rows, &key_rows);
        Ok(())
    })
}

/// The subgroup backward splits queries into chunks whose dS fits its 32 MiB scratch:
/// here two, the second of 149 queries, with a cache prefix. Sampled rows on both sides
/// of the split, and keys seen only by the second chunk.
#[test]
fn attention_backward_subgroup_chunks() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(37);
        // dS of all 301 queries: 64 heads × 301 × 451 keys × 4 bytes = 34.8 MB.
        let s = shape(301, 150, 64, 4, 32);
        let r = run(&gpu, &mut rng, s, &paths(&gpu, 32)).await?;
        assert_eq!(r.grads.len(), paths(&gpu, 32).len());
        let query_rows = [(0, 0), (3, 17), (151, 63), (152, 5), (153, 30), (300, 0), (300, 63)];
        let key_rows = [(0, 0), (149, 1), (150, 2), (301, 3), (302, 0), (303, 1), (449, 2), (450, 3)];
        check_sampled(s, &r, &query_rows, &key_rows);
        Ok(())
    })
}

#[test]
fn attention_backward_checks_arguments() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let b = |n: u64| gpu.buffer("b", 4 * n);
        let s = shape(4, 2, 6, 2, 16);
        let (qn, kn) = (4 * 6 * 16, 6 * 2 * 16);
        let (q, k, v, out, dout, lse, dq, dk, dv) =
            (b(qn)?, b(kn)?, b(kn)?, b(qn)?, b(qn)?, b(24)?, b(qn)?, b(kn)?, b(kn)?);
        let short = b(kn - 1)?;
        let mut batch = gpu.batch();
        let ok = attention_backward(&mut batch, &q, &k, &v, &out, &dout, &lse, &dq, &dk, &dv, s).await;
        assert!(ok.is_ok(), "{ok:?}");
        let bad = [
            attention_backward(&mut batch, &q, &k, &v, &out, &dout, &lse, &dq, &dk, &dv, shape(4, 2, 6, 4, 16)).await,
            attention_backward(&mut batch, &q, &k, &v, &out, &dout, &lse, &dq, &dk, &dv, shape(4, 2, 6, 2, 18)).await,
            attention_backward(&mut batch, &q, &k, &v, &out, &dout, &lse, &dq, &short, &dv, s).await,
            attention_backward(&mut batch, &q, &k, &v, &out, &dout, &lse, &dq, &dk, &dk, s).await,
            attention_backward(&mut batch, &q, &k, &v, &out, &dout, &lse, &dq, &dk, &dv, shape(4, 3, 6, 2, 16)).await,
        ];
        for result in bad {
            assert!(matches!(result, Err(GpuError::Shape { .. })), "{result:?}");
        }
        Ok(())
    })
}

/// Timing, not a check: `cargo test --release --test kernels_attention_backward --
/// --ignored --nocapture timing`. The backward alone, each path, median of five runs
/// (after a warm-up), next to the forward.
#[test]
#[ignore]
fn attention_backward_timing() -> Result<(), GpuError> {
    pollster::block_on(async {
        let gpu = gradcheck::gpu().await?;
        let mut rng = StdRng::seed_from_u64(36);
        let sizes: Vec<u32> = std::env::var("SIZES")
            .ok()
            .map(|v| v.split(',').filter_map(|x| x.parse().ok()).collect())
            .unwrap_or(vec![256, 1024]);
        for n in sizes {
            let s = shape(n, 0, 9, 3, 64);
            let (qn, kn) = ((n * 9 * 64) as usize, (n * 3 * 64) as usize);
            let (q, k, v, dout) = (
                upload(&gpu, "q", &random(&mut rng, qn, -1.5, 1.5))?,
                upload(&gpu, "k", &random(&mut rng, kn, -1.5, 1.5))?,
                upload(&gpu, "v", &random(&mut rng, kn, -1.0, 1.0))?,
                upload(&gpu, "dout", &random(&mut rng, qn, -1.0, 1.0))?,
            );
            let (out, lse) = (gpu.buffer("out", 4 * qn as u64)?, gpu.buffer("lse", 4 * 9 * n as u64)?);
            let dq = gpu.buffer("dq", 4 * qn as u64)?;
            let (dk, dv) = (gpu.buffer("dk", 4 * kn as u64)?, gpu.buffer("dv", 4 * kn as u64)?);
            let buffers = BackwardBuffers {
                q: &q,
                k_cache: &k,
                v_cache: &v,
                out: &out,
                dout: &dout,
                lse: &lse,
                dq: &dq,
                dk: &dk,
                dv: &dv,
            };
            let mut times = vec![Vec::new(); 3];
            let mut cpus = vec![Vec::new(); 3];
            let rounds = std::env::var("ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(5);
            for round in 0..=rounds {
                for (i, path) in [None, Some(AttentionBackwardPath::Tiled), Some(AttentionBackwardPath::Subgroup)]
                    .into_iter()
                    .enumerate()
                {
                    if i == 1 && std::env::var("NOTILED").is_ok() {
                        continue;
                    }
                    let (start, cpu) = (std::time::Instant::now(), cpu_ms());
                    let mut batch = gpu.batch();
                    match path {
                        None => attention_forward(&mut batch, &q, &k, &v, &out, &lse, s).await?,
                        Some(path) => attention_backward_path(&mut batch, buffers, s, path).await?,
                    }
                    batch.submit()?;
                    gpu.finish().await?;
                    if round > 0 {
                        times[i].push(start.elapsed().as_secs_f64() * 1e3);
                        cpus[i].push(cpu_ms() - cpu);
                    }
                }
            }
            for ((name, mut t), mut c) in
                ["forward", "backward Tiled", "backward Subgroup"].into_iter().zip(times).zip(cpus)
            {
                if t.is_empty() {
                    continue;
                }
                t.sort_by(f64::total_cmp);
                c.sort_by(f64::total_cmp);
                eprintln!(
                    "n_query {n} {name}: median {:.1} ms (cpu {:.1} ms, least {:.1} ms), all {t:.1?}",
                    t[t.len() / 2],
                    c[c.len() / 2],
                    c[0]
                );
            }
        }
        Ok(())
    })
}

/// CPU time of all threads of this process (llvmpipe's workers included), in ms.
fn cpu_ms() -> f64 {
    let mut ns = 0u64;
    for task in std::fs::read_dir("/proc/self/task").into_iter().flatten().flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("schedstat")) {
            ns += text.split_whitespace().next().and_then(|x| x.parse().ok()).unwrap_or(0);
        }
    }
    ns as f64 / 1e6
}
