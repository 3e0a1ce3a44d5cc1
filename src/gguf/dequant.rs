//! Exact CPU (de)quantization of the GGML tensor types we support.
//!
//! Layouts and arithmetic follow ggml-quants.c (`dequantize_row_*`, `quantize_row_*_ref`)
//! operation for operation, so results match llama.cpp and gguf-py bit for bit:
//! - Q4_0 (18 B / 32): f16 d, 16 B nibbles; low nibble of byte j is element j, high is j+16; x = d·(q−8).
//! - Q4_1 (20 B / 32): f16 d, f16 m, 16 B nibbles as Q4_0; x = d·q + m.
//! - Q8_0 (34 B / 32): f16 d, 32 i8; x = d·q.
//! - Q4_K (144 B / 256): f16 d, f16 dmin, 12 B of packed 6-bit (scale, min) for eight
//!   32-value sub-blocks, 128 B nibbles (each 32-byte run holds two sub-blocks: low then
//!   high nibbles); x = (d·sc)·q − (dmin·m).
//! - Q6_K (210 B / 256): 128 B low nibbles, 64 B high 2-bit pairs, 16 i8 scales, f16 d;
//!   x = (d·scale)·(q−32).

use half::{bf16, f16};

use super::{GgmlType, GgufError};

/// Dequantizes `n` values of type `ty` from `bytes` (exactly `ty.bytes_for(n)` bytes).
pub fn dequantize(ty: GgmlType, bytes: &[u8], n: usize) -> Result<Vec<f32>, GgufError> {
    let needed = check(ty, bytes, n)?;
    let bytes = &bytes[..needed];
    let mut out = Vec::with_capacity(n);
    match ty {
        GgmlType::F32 => out.extend(bytes.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))),
        GgmlType::F16 => out.extend(bytes.chunks_exact(2).map(|b| half16(b, 0))),
        GgmlType::BF16 => out.extend(bytes.chunks_exact(2).map(|b| bf16::from_le_bytes([b[0], b[1]]).to_f32())),
        GgmlType::Q4_0 => {
            for b in bytes.chunks_exact(18) {
                let d = half16(b, 0);
                let qs = &b[2..18];
                let lo = qs.iter().map(|&q| ((q & 0x0f) as i32 - 8) as f32 * d);
                let hi: Vec<f32> = qs.iter().map(|&q| ((q >> 4) as i32 - 8) as f32 * d).collect();
                out.extend(lo);
                out.extend(hi);
            }
        }
        GgmlType::Q4_1 => {
            for b in bytes.chunks_exact(20) {
                let (d, m) = (half16(b, 0), half16(b, 2));
                let qs = &b[4..20];
                out.extend(qs.iter().map(|&q| (q & 0x0f) as f32 * d + m));
                out.extend(qs.iter().map(|&q| (q >> 4) as f32 * d + m));
            }
        }
        GgmlType::Q8_0 => {
            for b in bytes.chunks_exact(34) {
                let d = half16(b, 0);
                out.extend(b[2..34].iter().map(|&q| (q as i8) as f32 * d));
            }
        }
        GgmlType::Q4_K => {
            for b in bytes.chunks_exact(144) {
                let (d, dmin) = (half16(b, 0), half16(b, 2));
                let scales = &b[4..16];
                let qs = &b[16..144];
                for (pair, q) in qs.chunks_exact(32).enumerate() {
                    let (sc0, m0) = scale_min_k4(2 * pair, scales);
                    let (sc1, m1) = scale_min_k4(2 * pair + 1, scales);
                    let (d0, mm0) = (d * sc0 as f32, dmin * m0 as f32);
                    let (d1, mm1) = (d * sc1 as f32, dmin * m1 as f32);
                    out.extend(q.iter().map(|&v| d0 * (v & 0x0f) as f32 - mm0));
                    out.extend(q.iter().map(|&v| d1 * (v >> 4) as f32 - mm1));
                }
            }
        }
        GgmlType::Q6_K => {
            for b in bytes.chunks_exact(210) {
                let d = half16(b, 208);
                let mut block = [0f32; 256];
                for half_block in 0..2 {
                    let ql = &b[64 * half_block..64 * half_block + 64];
                    let qh = &b[128 + 32 * half_block..128 + 32 * half_block + 32];
                    let sc = &b[192 + 8 * half_block..192 + 8 * half_block + 8];
                    let y = &mut block[128 * half_block..128 * half_block + 128];
                    for l in 0..32 {
                        let is = l / 16;
                        let q1 = ((ql[l] & 0xf) | ((qh[l] & 3) << 4)) as i32 - 32;
                        let q2 = ((ql[l + 32] & 0xf) | (((qh[l] >> 2) & 3) << 4)) as i32 - 32;
                        let q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) as i32 - 32;
                        let q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) as i32 - 32;
                        y[l] = d * (sc[is] as i8) as f32 * q1 as f32;
                        y[l + 32] = d * (sc[is + 2] as i8) as f32 * q2 as f32;
                        y[l + 64] = d * (sc[is + 4] as i8) as f32 * q3 as f32;
                        y[l + 96] = d * (sc[is + 6] as i8) as f32 * q4 as f32;
                    }
                }
                out.extend_from_slice(&block);
            }
        }
    }
    Ok(out)
}

/// Quantizes `values` to `ty` with ggml's reference quantizers. K-quants are not
/// supported: their reference quantizers search scales iteratively and we never
/// need to produce them.
pub fn quantize(ty: GgmlType, values: &[f32]) -> Result<Vec<u8>, GgufError> {
    let block = ty.block_len();
    if !values.len().is_multiple_of(block) {
        return Err(bad("quantize", ty, values.len(), format!("{} values are not whole {ty} blocks", values.len())));
    }
    let mut out = Vec::with_capacity(values.len() / block * ty.block_bytes());
    match ty {
        GgmlType::F32 => values.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        GgmlType::F16 => values.iter().for_each(|v| out.extend_from_slice(&f16::from_f32(*v).to_le_bytes())),
        GgmlType::BF16 => values.iter().for_each(|v| out.extend_from_slice(&bf16_round(*v).to_le_bytes())),
        GgmlType::Q4_0 => {
            for x in values.chunks_exact(32) {
                // The signed value of largest magnitude maps to −8, so the grid uses all 16 levels.
                let mut amax = 0f32;
                let mut max = 0f32;
                for &v in x {
                    if amax < v.abs() {
                        amax = v.abs();
                        max = v;
                    }
                }
                let d = max / -8.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                for j in 0..16 {
                    let q0 = ((x[j] * id + 8.5) as i8).min(15) as u8;
                    let q1 = ((x[j + 16] * id + 8.5) as i8).min(15) as u8;
                    out.push(q0 | (q1 << 4));
                }
            }
        }
        GgmlType::Q4_1 => {
            for x in values.chunks_exact(32) {
                let min = x.iter().fold(f32::MAX, |a, &v| if v < a { v } else { a });
                let max = x.iter().fold(-f32::MAX, |a, &v| if v > a { v } else { a });
                let d = (max - min) / 15.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                out.extend_from_slice(&f16::from_f32(min).to_le_bytes());
                for j in 0..16 {
                    let q0 = (((x[j] - min) * id + 0.5) as i8).min(15) as u8;
                    let q1 = (((x[j + 16] - min) * id + 0.5) as i8).min(15) as u8;
                    out.push(q0 | (q1 << 4));
                }
            }
        }
        GgmlType::Q8_0 => {
            for x in values.chunks_exact(32) {
                let amax = x.iter().fold(0f32, |a, &v| a.max(v.abs()));
                let d = amax / 127.0;
                let id = if d != 0.0 { 1.0 / d } else { 0.0 };
                out.extend_from_slice(&f16::from_f32(d).to_le_bytes());
                // roundf: halves away from zero, like f32::round.
                out.extend(x.iter().map(|&v| (v * id).round() as i8 as u8));
            }
        }
        GgmlType::Q4_K | GgmlType::Q6_K => {
            return Err(bad("quantize", ty, values.len(), format!("quantizing to {ty} is not supported")));
        }
    }
    Ok(out)
}

/// The 6-bit scale and min of sub-block `j` of a Q4_K/Q5_K super-block (ggml's
/// `get_scale_min_k4`): sub-blocks 0–3 sit in the low 6 bits of bytes 0–7, 4–7 are
/// split between a nibble of bytes 8–11 and the top 2 bits of bytes 0–7.
pub fn scale_min_k4(j: usize, q: &[u8]) -> (u8, u8) {
    if j < 4 {
        (q[j] & 63, q[j + 4] & 63)
    } else {
        ((q[j + 4] & 0xf) | ((q[j - 4] >> 6) << 4), (q[j + 4] >> 4) | ((q[j] >> 6) << 4))
    }
}

/// ggml_compute_fp32_to_bf16: round to nearest even, NaN forced quiet.
fn bf16_round(v: f32) -> u16 {
    let u = v.to_bits();
    if u & 0x7fff_ffff > 0x7f80_0000 {
        return ((u >> 16) | 64) as u16;
    }
    ((u as u64 + (0x7fff + ((u >> 16) & 1)) as u64) >> 16) as u16
}

fn half16(b: &[u8], at: usize) -> f32 {
    f16::from_le_bytes([b[at], b[at + 1]]).to_f32()
}

fn check(ty: GgmlType, bytes: &[u8], n: usize) -> Result<usize, GgufError> {
    let needed = ty
        .bytes_for(n as u64)
        .ok_or_else(|| bad("dequantize", ty, n, format!("{n} values are not whole {ty} blocks of {}", ty.block_len())))?;
    if (bytes.len() as u64) < needed {
        return Err(GgufError::Truncated {
            what: format!("{n} {ty} values"),
            offset: 0,
            needed,
            available: bytes.len() as u64,
        });
    }
    Ok(needed as usize)
}

fn bad(what: &str, ty: GgmlType, n: usize, why: String) -> GgufError {
    GgufError::BadShape { name: format!("{what} {ty}"), dims: vec![n as u64], why }
}
