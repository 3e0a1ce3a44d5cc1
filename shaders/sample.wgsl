// Token choice on the GPU from the logits of one position, in one workgroup.
//
//   penalty:  for each distinct id in history: l[id] = l[id] > 0 ? l[id] / r : l[id] * r
//             (llama.cpp / transformers repetition penalty; r = 1 is off)
//   greedy:   temperature == 0 or top_k == 1: argmax_i l[i], ties -> lowest id
//   sampling: x[i] = l[i] / temperature, e[i] = exp(x[i] - max x)
//             top-k: keep x[i] >= tau_k, tau_k = k-th largest x (ties at tau_k kept, as
//                    transformers' TopKLogitsWarper); k = 0 is off
//             top-p: keep x[i] >= tau_p, tau_p = the largest value with
//                    sum_{kept, x >= tau_p} e >= top_p * sum_{kept} e  (the smallest
//                    high-probability set holding top_p of the mass); top_p >= 1 is off
//             draw:  with u in [0, 1) from the caller's seeded RNG, the first kept id in
//                    id order whose running sum of e exceeds u * sum_{kept} e
// The thresholds are found by bisection over the order-preserving u32 key of f32 (32
// scans of the vocabulary each), so no sort of 152k values is needed; every threshold
// is exactly one of the x values. Loops are shaped for llvmpipe, which exits every loop
// of an invocation after 65535 iterations in all (see `scan`). Sampling has no backward.
//
// argmax_rows: per-row greedy argmax over [rows, vocab] (no penalty), ties -> lowest id.

struct Params {
    vocab: u32,
    row: u32,           // which row of logits [rows, vocab] to sample from
    history_start: u32,
    history_len: u32,   // history[history_start ..][.. history_len], <= TABLE / 2
    top_k: u32,
    out_index: u32,     // the token id goes to out[out_index]
    rows: u32,          // argmax_rows only
    _pad: u32,
    temperature: f32,
    top_p: f32,
    penalty: f32,
    u: f32,
}

@group(0) @binding(0) var<uniform> p: Params;
@group(0) @binding(1) var<storage, read> logits: array<f32>;      // [rows, vocab]
@group(0) @binding(2) var<storage, read_write> out: array<u32>;   // sample: [> out_index]; argmax_rows: [rows]
@group(0) @binding(3) var<storage, read> history: array<u32>;     // [>= history_start + history_len]

const WG = 256u;
const TABLE = 2048u;
const EMPTY = 0xffffffffu;

// Open-addressing hash set of the history ids: O(1) membership per logit, and a
// repeated id is stored once, so its penalty applies once.
var<workgroup> table: array<atomic<u32>, TABLE>;
var<workgroup> red_f: array<f32, WG>;
var<workgroup> red_u: array<u32, WG>;
var<workgroup> pick_chunk: u32;
var<workgroup> pick_rest: f32;

fn slot_of(id: u32) -> u32 {
    return (id * 2654435761u) >> 21u; // Fibonacci hashing: the top 11 bits
}

fn build_table(lid: u32) {
    for (var s = lid; s < TABLE; s += WG) {
        atomicStore(&table[s], EMPTY);
    }
    workgroupBarrier();
    if (p.penalty != 1.0) {
        for (var i = lid; i < p.history_len; i += WG) {
            let id = history[p.history_start + i];
            if (id >= p.vocab) {
                continue;
            }
            var s = slot_of(id);
            loop {
                let r = atomicCompareExchangeWeak(&table[s], EMPTY, id);
                if (r.exchanged || r.old_value == id) {
                    break;
                }
                // A weak exchange may fail spuriously on an empty slot: try it again.
                if (r.old_value != EMPTY) {
                    s = (s + 1u) & (TABLE - 1u);
                }
            }
        }
    }
    workgroupBarrier();
}

// The logit of `id` after the repetition penalty.
fn penalized(id: u32) -> f32 {
    var v = logits[p.row * p.vocab + id];
    if (p.penalty != 1.0 && p.history_len > 0u) {
        var s = slot_of(id);
        loop {
            let e = atomicLoad(&table[s]);
            if (e == id) {
                v = select(v * p.penalty, v / p.penalty, v > 0.0);
                break;
            }
            if (e == EMPTY) {
                break;
            }
            s = (s + 1u) & (TABLE - 1u);
        }
    }
    return v;
}

fn scaled(id: u32) -> f32 {
    return penalized(id) / p.temperature;
}

// Order-preserving map f32 -> u32 (a < b  <=>  key(a) < key(b) for non-NaN values).
fn key_of(v: f32) -> u32 {
    let b = bitcast<u32>(v);
    return select(b | 0x80000000u, ~b, (b & 0x80000000u) != 0u);
}

// (value, id) with ties to the lowest id; EMPTY ids lose. Ends with red_u[0] = winner.
fn reduce_argmax(lid: u32, v: f32, i: u32) {
    red_f[lid] = v;
    red_u[lid] = i;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            let ov = red_f[lid + stride];
            let oi = red_u[lid + stride];
            let bv = red_f[lid];
            let bi = red_u[lid];
            if (oi != EMPTY && (bi == EMPTY || ov > bv || (ov == bv && oi < bi))) {
                red_f[lid] = ov;
                red_u[lid] = oi;
            }
        }
        workgroupBarrier();
    }
}

fn reduce_sum_f(lid: u32, v: f32) -> f32 {
    workgroupBarrier(); // earlier readers of red_f are done
    red_f[lid] = v;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride >>= 1u) {
        if (lid < stride) {
            red_f[lid] += red_f[lid + stride];
        }
        workgroupBarrier();
    }
    return red_f[0];
}

// One bisection step's measure over the kept candidates key(x) >= k: their count, or
// with `mass` their sum of exp(x - xmax). The vocabulary is scanned on raw logits
// (unrolled by four and without hash lookups, to stay far below llvmpipe's 65535 loop
// iterations per invocation over 64 scans), then the distinct history ids in the table
// swap their raw term for their penalised one. Raw values are clamped to xmax so a
// penalised-away large logit neither overflows nor cancels badly.
fn raw_x(id: u32, xmax: f32) -> f32 {
    return min(logits[p.row * p.vocab + id] / p.temperature, xmax);
}

fn term(x: f32, k: u32, xmax: f32, mass: bool) -> f32 {
    if (key_of(x) < k) {
        return 0.0;
    }
    return select(1.0, exp(x - xmax), mass);
}

fn scan(lid: u32, k: u32, xmax: f32, mass: bool) -> f32 {
    var s = 0.0;
    for (var i = lid; i < p.vocab; i += 4u * WG) {
        s += term(raw_x(i, xmax), k, xmax, mass);
        if (i + WG < p.vocab) {
            s += term(raw_x(i + WG, xmax), k, xmax, mass);
        }
        if (i + 2u * WG < p.vocab) {
            s += term(raw_x(i + 2u * WG, xmax), k, xmax, mass);
        }
        if (i + 3u * WG < p.vocab) {
            s += term(raw_x(i + 3u * WG, xmax), k, xmax, mass);
        }
    }
    if (p.penalty != 1.0 && p.history_len > 0u) {
        for (var slot = lid; slot < TABLE; slot += WG) {
            let id = atomicLoad(&table[slot]);
            if (id != EMPTY) {
                s += term(scaled(id), k, xmax, mass) - term(raw_x(id, xmax), k, xmax, mass);
            }
        }
    }
    return reduce_sum_f(lid, s);
}

@compute @workgroup_size(256)
fn sample_forward(@builtin(local_invocation_index) lid: u32) {
    build_table(lid);
    let greedy = p.temperature <= 0.0 || p.top_k == 1u;
    // Greedy candidate, or the maximum of x for sampling (same order: temperature > 0).
    var bv = 0.0;
    var bi = EMPTY;
    for (var i = lid; i < p.vocab; i += WG) {
        var v: f32;
        if (greedy) {
            v = penalized(i);
        } else {
            v = scaled(i); // the same expression the scans and the draw use
        }
        if (bi == EMPTY || v > bv) {
            bv = v;
            bi = i;
        }
    }
    reduce_argmax(lid, bv, bi);
    if (greedy) {
        if (lid == 0u) {
            out[p.out_index] = red_u[0];
        }
        return;
    }
    let xmax = red_f[0];
    let top_key = key_of(xmax);

    // Bisection invariant: predicate(lo) holds, predicate(hi) fails. 32 steps cover the
    // whole u32 key range; a converged interval just repeats lo.
    var lo = key_of(-3.0e38);
    if (p.top_k > 1u && p.top_k < p.vocab) {
        var hi = top_key + 1u;
        for (var it = 0u; it < 32u; it++) {
            let mid = lo + (hi - lo) / 2u;
            if (scan(lid, mid, xmax, false) >= f32(p.top_k)) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }
    if (p.top_p < 1.0) {
        let goal = p.top_p * scan(lid, lo, xmax, true);
        var hi = top_key + 1u;
        for (var it = 0u; it < 32u; it++) {
            let mid = lo + (hi - lo) / 2u;
            if (scan(lid, mid, xmax, true) >= goal) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
    }

    // Draw in id order: thread lid owns ids [lid * chunk, (lid + 1) * chunk).
    let chunk = (p.vocab + WG - 1u) / WG;
    let begin = min(lid * chunk, p.vocab);
    let end = min(begin + chunk, p.vocab);
    var own = 0.0;
    for (var i = begin; i < end; i++) {
        let x = scaled(i);
        if (key_of(x) >= lo) {
            own += exp(x - xmax);
        }
    }
    workgroupBarrier();
    red_f[lid] = own;
    workgroupBarrier();
    if (lid == 0u) {
        var total = 0.0;
        for (var c = 0u; c < WG; c++) {
            total += red_f[c];
        }
        let goal = p.u * total;
        var run = 0.0;
        var chosen = EMPTY;
        var last = 0u;
        for (var c = 0u; c < WG; c++) {
            let s = red_f[c];
            if (s > 0.0) {
                last = c;
                if (chosen == EMPTY && run + s > goal) {
                    chosen = c;
                    pick_rest = goal - run;
                }
            }
            run += s;
        }
        // Rounding can leave goal at or past the total: take the last kept id.
        if (chosen == EMPTY) {
            chosen = last;
            pick_rest = red_f[last];
        }
        pick_chunk = chosen;
    }
    workgroupBarrier();
    if (lid == pick_chunk) {
        let rest = pick_rest;
        var run = 0.0;
        var found = EMPTY;
        var last = begin;
        for (var i = begin; i < end; i++) {
            let x = scaled(i);
            if (key_of(x) >= lo) {
                last = i;
                run += exp(x - xmax);
                if (found == EMPTY && run > rest) {
                    found = i;
                }
            }
        }
        out[p.out_index] = select(found, last, found == EMPTY);
    }
}

@compute @workgroup_size(256)
fn argmax_rows(@builtin(workgroup_id) wid: vec3<u32>, @builtin(num_workgroups) nwg: vec3<u32>,
               @builtin(local_invocation_index) lid: u32) {
    let row = group_index(wid, nwg);
    if (row >= p.rows) {
        return;
    }
    var bv = 0.0;
    var bi = EMPTY;
    for (var i = lid; i < p.vocab; i += WG) {
        let v = logits[row * p.vocab + i];
        if (bi == EMPTY || v > bv) {
            bv = v;
            bi = i;
        }
    }
    reduce_argmax(lid, bv, bi);
    if (lid == 0u) {
        out[row] = red_u[0];
    }
}
