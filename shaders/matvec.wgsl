// Matrix-vector product for decoding (a few tokens, memory-bound):
//   y[t, n] (+)= Σ_k x[t, k] · W[n, k] (+ bias[n]), one token per workgroup.
// Same problem, bindings and weight layout as matmul.wgsl (see kernels/matmul/weight.rs);
// rows start on 16 bytes, so the weights are read as vec4<u32>.
//
// A group of lanes (the subgroup, or 8 lanes in the portable module) owns R rows and
// splits K between its lanes in units of UNIT values: lane l takes units l, l + lanes,
// …, so the lanes of a group read consecutive blocks of each row. Each lane loads its
// unit of x once and uses it for all R rows, then the group sums its partial dot
// products: subgroupAdd, or a tree in workgroup memory in the portable module.
// On llvmpipe each per-lane storage load is a loop over the 8 SIMD lanes, so the kernel
// counts loads, not bytes: one vec4 per 32 Q4 values, x reused across R rows.
//
// Constants set by the loader: FMT, EPILOGUE and BIAS (as matmul.wgsl), WG (lanes per workgroup), UNIT (values per unit: 8 for F32/F16/BF16, 32 otherwise), ROWS_WG
// (rows per workgroup: R × lane groups, counted with the smallest subgroup size).

// ---- subgroup reduction: the subgroup module is the file up to "portable" ----

@compute @workgroup_size(WG)
fn matvec_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32, @builtin(subgroup_invocation_id) lane: u32,
                  @builtin(subgroup_size) lanes: u32) {
    let g = group_index(wid, nwg);
    let t = g % p.tokens;
    let slab = (g / p.tokens) * ROWS_WG;
    // ROWS_WG assumes the smallest subgroup size; larger subgroups take several turns.
    for (var rg = lid / lanes; rg < ROWS_WG / R; rg += WG / lanes) {
        let sum = subgroupAdd(rows_dot(slab + rg * R, t, lane, lanes));
        if (lane < R) {
            store(slab + rg * R + lane, t, sum[lane]);
        }
    }
}

// ---- shared: both modules ----

// Rows per lane group: rows_dot returns one vec4. 8 rows (two vec4, x shared twice as
// long) measured 2× slower on llvmpipe: the unrolled unit_dot calls spill.
const R = 4u;

struct Params {
    tokens: u32,
    rows: u32,       // rows computed by this dispatch
    cols: u32,       // K, a multiple of UNIT
    row0: u32,       // first computed row, local to this chunk
    row_words: u32,  // u32 words per weight row in the chunk, a multiple of 4
    y_stride: u32,   // f32 per output row of y
    y_col: u32,      // column of y that row0 lands in
    bias_row: u32,   // bias index of row0 (with BIAS)
    token_tiles: u32,
    lora_rank: u32,  // matmul.wgsl's block tile only: 0 here
    lora_scale: f32,
    lora_b: u32,
    _pad0: u32,
    _pad1: u32,
    _pad2: u32,
    _pad3: u32,
}

@group(0) @binding(0) var<uniform> p: Params;
// binding 1, x: [tokens, cols / 4] vec4, declared by the loader (kernels/matmul): a
// uniform array<vec4<f32>, XN> where tokens × cols fits a uniform binding, else storage.
// llvmpipe turns a storage load into a loop over lanes and components; a uniform load
// is a plain gather.
@group(0) @binding(2) var<storage, read> w: array<vec4<u32>>;   // [rows, row_words / 4]
@group(0) @binding(3) var<storage, read_write> y: array<f32>;   // [tokens, y_stride]
@group(0) @binding(4) var<storage, read> bias: array<f32>;      // [N] (any buffer without bias); the gate [tokens, y_stride] with EPILOGUE 2
@group(0) @binding(5) var<storage, read> ws: array<u32>;        // w again, for word loads

// x[t, u·UNIT ..] as up to 8 vec4.
fn load_x(t: u32, u: u32) -> array<vec4<f32>, 8> {
    let i = (t * p.cols + u * UNIT) / 4u;
    // Whole-array expressions rather than a local array patched in a loop, which a
    // compiler may keep in memory.
    if (UNIT == 8u) {
        let z = vec4<f32>(0.0);
        return array<vec4<f32>, 8>(x[i], x[i + 1u], z, z, z, z, z, z);
    }
    return array<vec4<f32>, 8>(x[i], x[i + 1u], x[i + 2u], x[i + 3u], x[i + 4u], x[i + 5u], x[i + 6u], x[i + 7u]);
}

// Σ of 32 values whose low (shift 0) or high (4) nibbles are in q0 (values 0–15 of a
// 16-byte run as x[0..4]) and q1 (x[4..8]).
fn nib_dot(q0: vec4<u32>, q1: vec4<u32>, shift: u32, xs: array<vec4<f32>, 8>) -> f32 {
    return dot(nibbles4(q0.x, shift), xs[0]) + dot(nibbles4(q0.y, shift), xs[1])
         + dot(nibbles4(q0.z, shift), xs[2]) + dot(nibbles4(q0.w, shift), xs[3])
         + dot(nibbles4(q1.x, shift), xs[4]) + dot(nibbles4(q1.y, shift), xs[5])
         + dot(nibbles4(q1.z, shift), xs[6]) + dot(nibbles4(q1.w, shift), xs[7]);
}

fn q6_vals(ql: u32, qh: u32, lshift: u32, hshift: u32) -> vec4<f32> {
    return nibbles4(ql, lshift) + 16.0 * vec4<f32>(unpack4xU8((qh >> hshift) & 0x03030303u)) - 32.0;
}

// Σ over unit u of the row starting at word rb of W · x; xsum = Σ of the unit's x.
fn unit_dot(rb: u32, u: u32, xs: array<vec4<f32>, 8>, xsum: f32) -> f32 {
    if (FMT == 0u) {
        let i = rb / 4u + u * 2u;
        return dot(bitcast<vec4<f32>>(w[i]), xs[0]) + dot(bitcast<vec4<f32>>(w[i + 1u]), xs[1]);
    }
    if (FMT == 1u) {
        let q = w[rb / 4u + u];
        return dot(vec4<f32>(f16_pair(q.x), f16_pair(q.y)), xs[0]) + dot(vec4<f32>(f16_pair(q.z), f16_pair(q.w)), xs[1]);
    }
    if (FMT == 2u) {
        let q = w[rb / 4u + u];
        return dot(vec4<f32>(bf16_pair(q.x), bf16_pair(q.y)), xs[0]) + dot(vec4<f32>(bf16_pair(q.z), bf16_pair(q.w)), xs[1]);
    }
    if (FMT == 3u || FMT == 4u) {
        // One vec4 of quants: low nibbles are values 0–15, high nibbles 16–31.
        let q = w[rb / 4u + u];
        let s = dot(nibbles4(q.x, 0u), xs[0]) + dot(nibbles4(q.y, 0u), xs[1])
              + dot(nibbles4(q.z, 0u), xs[2]) + dot(nibbles4(q.w, 0u), xs[3])
              + dot(nibbles4(q.x, 4u), xs[4]) + dot(nibbles4(q.y, 4u), xs[5])
              + dot(nibbles4(q.z, 4u), xs[6]) + dot(nibbles4(q.w, 4u), xs[7]);
        let scales = rb + (p.cols / 32u) * 4u;
        if (FMT == 3u) {
            let d = f16_pair(ws[scales + u / 2u])[u % 2u];
            return d * (s - 8.0 * xsum);
        }
        let dm = f16_pair(ws[scales + u]);
        return dm.x * s + dm.y * xsum;
    }
    if (FMT == 5u) {
        let i = rb / 4u + u * 2u;
        let q0 = w[i];
        let q1 = w[i + 1u];
        let s = dot(bytes4_i8(q0.x), xs[0]) + dot(bytes4_i8(q0.y), xs[1])
              + dot(bytes4_i8(q0.z), xs[2]) + dot(bytes4_i8(q0.w), xs[3])
              + dot(bytes4_i8(q1.x), xs[4]) + dot(bytes4_i8(q1.y), xs[5])
              + dot(bytes4_i8(q1.z), xs[6]) + dot(bytes4_i8(q1.w), xs[7]);
        return f16_pair(ws[rb + (p.cols / 32u) * 8u + u / 2u])[u % 2u] * s;
    }
    if (FMT == 6u) {
        // Q4_K super-block of 36 words (9 vec4): header (d, dmin, 12 scale bytes), then
        // four 32-byte runs; sub-block `sub` is run sub/2, low or high nibbles.
        let b4 = rb / 4u + (u / 8u) * 9u;
        let sub = u % 8u;
        let head = w[b4];
        let run = b4 + 1u + (sub / 2u) * 2u;
        let s = nib_dot(w[run], w[run + 1u], (sub % 2u) * 4u, xs);
        let dm = f16_pair(head.x);
        let sm = scale_min_k4(sub, head.yzw);
        return dm.x * sm.x * s - dm.y * sm.y * xsum;
    }
    // Q6_K, 53 words per 256 values (see dequant8 in matmul.wgsl): unit v of the block
    // is quarter v % 4 of half v / 4; 8 ql words, 8 qh words, two scales.
    let b = rb + (u / 8u) * 53u;
    let v = u % 8u;
    let half = v / 4u;
    let quarter = v % 4u;
    let ql = b + 16u * half + 8u * (quarter % 2u);
    let qh = b + 32u + 8u * half;
    let ls = (quarter / 2u) * 4u;
    let hs = 2u * quarter;
    let s0 = dot(q6_vals(ws[ql], ws[qh], ls, hs), xs[0]) + dot(q6_vals(ws[ql + 1u], ws[qh + 1u], ls, hs), xs[1])
           + dot(q6_vals(ws[ql + 2u], ws[qh + 2u], ls, hs), xs[2]) + dot(q6_vals(ws[ql + 3u], ws[qh + 3u], ls, hs), xs[3]);
    let s1 = dot(q6_vals(ws[ql + 4u], ws[qh + 4u], ls, hs), xs[4]) + dot(q6_vals(ws[ql + 5u], ws[qh + 5u], ls, hs), xs[5])
           + dot(q6_vals(ws[ql + 6u], ws[qh + 6u], ls, hs), xs[6]) + dot(q6_vals(ws[ql + 7u], ws[qh + 7u], ls, hs), xs[7]);
    let si = 8u * half + 2u * quarter;
    let sc = ws[b + 48u + si / 4u];
    let sc0 = f32(extractBits(i32(sc), 8u * (si % 4u), 8u));
    let sc1 = f32(extractBits(i32(sc), 8u * (si % 4u) + 8u, 8u));
    return f16_pair(ws[b + 52u]).x * (sc0 * s0 + sc1 * s1);
}

// This lane's share (units lane, lane + lanes, …) of rows r0..r0+4 for token t.
fn rows_dot(r0: u32, t: u32, lane: u32, lanes: u32) -> vec4<f32> {
    let rb = (min(vec4<u32>(r0) + vec4<u32>(0u, 1u, 2u, 3u), vec4<u32>(p.rows - 1u)) + p.row0) * p.row_words;
    var acc = vec4<f32>(0.0);
    let units = p.cols / UNIT;
    for (var u = lane; u < units; u += lanes) {
        let xs = load_x(t, u);
        var xsum = 0.0;
        if (FMT == 3u || FMT == 4u || FMT == 6u) {
            let s4 = xs[0] + xs[1] + xs[2] + xs[3] + xs[4] + xs[5] + xs[6] + xs[7];
            xsum = s4.x + s4.y + s4.z + s4.w;
        }
        acc += vec4<f32>(unit_dot(rb.x, u, xs, xsum), unit_dot(rb.y, u, xs, xsum),
                         unit_dot(rb.z, u, xs, xsum), unit_dot(rb.w, u, xs, xsum));
    }
    return acc;
}

fn store(row: u32, t: u32, v: f32) {
    if (row < p.rows) {
        var b = 0.0;
        if (BIAS) {
            b = bias[p.bias_row + row];
        }
        let i = t * p.y_stride + p.y_col + row;
        if (EPILOGUE == 1u) {
            y[i] += v + b;
        } else if (EPILOGUE == 2u) {
            // SwiGLU as swiglu.wgsl: the gate [tokens, y_stride] sits in the bias slot.
            let g = bias[i];
            y[i] = g / (1.0 + exp(-g)) * v;
        } else {
            y[i] = v + b;
        }
    }
}

// One lane, R whole rows: the unit loop and so every x load is the same for all lanes
// (uniform offsets), which llvmpipe loads once per SIMD group; no reduction. For CPU
// devices (MatmulKernel::LaneVector); ROWS_WG = WG × R.
@compute @workgroup_size(WG)
fn matvec_lanes_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                        @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, nwg);
    let t = g % p.tokens;
    let r0 = (g / p.tokens) * ROWS_WG + lid * R;
    let sum = rows_dot(r0, t, 0u, 1u);
    for (var r = 0u; r < R; r++) {
        store(r0 + r, t, sum[r]);
    }
}

// ---- portable reduction: the portable module is the file from "shared" on ----

var<workgroup> red: array<vec4<f32>, WG>;

// Lane groups of 8 consecutive lanes; their partial sums meet in a tree.
@compute @workgroup_size(WG)
fn matvec_forward(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
                  @builtin(local_invocation_index) lid: u32) {
    let g = group_index(wid, nwg);
    let t = g % p.tokens;
    let lane = lid % 8u;
    let r0 = (g / p.tokens) * ROWS_WG + (lid / 8u) * R;
    red[lid] = rows_dot(r0, t, lane, 8u);
    workgroupBarrier();
    for (var s = 4u; s > 0u; s /= 2u) {
        if (lane < s) {
            red[lid] += red[lid + s];
        }
        workgroupBarrier();
    }
    if (lane < R) {
        store(r0 + lane, t, red[lid - lane][lane]);
    }
}
