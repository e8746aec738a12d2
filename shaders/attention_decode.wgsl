// Decode attention against a KV cache, split over the cache length (flash-decoding).
//
// Computes, for every batch b and query head h (one new token per sequence),
//   out[b, h, :] = sum_j softmax_j(scale * q[b, h, :] . k[b, j, g, :]) * v[b, j, g, :]
// over the cache rows j = 0 .. cache_len - 1, which already include the new token's K/V, with
// g = h / (n_heads / n_kv_heads) (MHA, GQA and MQA).
//
// Two entry points, dispatched back to back in one pass:
//   `split`:  one workgroup per (batch, head, chunk of CHUNK cache rows). It writes the chunk's
//             max score m, its sum l = sum_j exp(s_j - m) and the unnormalised output
//             o = sum_j exp(s_j - m) v_j to the partial buffers.
//   `reduce`: one workgroup per (batch, head). It rescales each chunk by exp(m_c - M), where M
//             is the max over chunks, and writes out = sum_c o_c exp(m_c - M) / sum_c l_c exp(m_c - M).
//
// Bindings (group 0):
//   0 uniform Params
//   1 storage read  q       [batch, n_heads, head_dim]                   (T)   split
//   2 storage read  k_cache [batch, cache_capacity, n_kv_heads, head_dim] (T)  split
//   3 storage read  v_cache [batch, cache_capacity, n_kv_heads, head_dim] (T)  split
//   4 storage write out     [batch, n_heads, head_dim]                   (T)   reduce
//   5 storage       part_o  [batch, n_heads, n_chunks, head_dim]         (f32) split writes, reduce reads
//   6 storage       part_ml [batch, n_heads, n_chunks, 2] (m, l)         (f32) split writes, reduce reads
//
// Workgroup: WG = 64 threads. In `split`, threads stride over the chunk's rows for the scores
// and over head_dim for the output; the max and the sum are tree reductions in workgroup
// memory. The host replaces MAX_D (head_dim rounded up to a multiple of 4) and CHUNK.
//
// Numerics: T is the storage type (f32, or f16 with SHADER_F16). Scores, softmax state and
// partial outputs are f32, because q.k products of large f16 inputs overflow f16.
//
// Grid: `split` uses n_chunks * n_heads * batch workgroups and `reduce` n_heads * batch, each
// folded into (x, y) above 65,535 per dimension; the linear index is wid.x + wid.y *
// num_workgroups.x, and indices at or beyond the count in Params return at once (uniformly per
// workgroup, before any barrier).
//
// Host invariants: n_heads % n_kv_heads == 0; head_dim <= MAX_D; 1 <= cache_len <=
// cache_capacity; n_chunks == ceil(cache_len / CHUNK); each binding fits
// max_storage_buffer_binding_size.

alias T = f32;

const WG: u32 = 64u;
const MAX_D: u32 = 128u;
const CHUNK: u32 = 256u;

struct Params {
    batch: u32,
    cache_len: u32,
    cache_capacity: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    n_chunks: u32,
    scale: f32,
    split_workgroups: u32,
    reduce_workgroups: u32,
    _pad0: u32,
    _pad1: u32,
}

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k_cache: array<T>;
@group(0) @binding(3) var<storage, read> v_cache: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<storage, read_write> part_o: array<f32>;
@group(0) @binding(6) var<storage, read_write> part_ml: array<f32>;

var<workgroup> q_shared: array<f32, MAX_D>;
var<workgroup> probs: array<f32, CHUNK>;
var<workgroup> reduction: array<f32, WG>;

@compute @workgroup_size(WG)
fn split(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let linear = wid.x + wid.y * nwg.x;
    if (linear >= params.split_workgroups) {
        return;
    }

    // Workgroup index order: chunk fastest, then head, then batch.
    let chunk = linear % params.n_chunks;
    let bh = linear / params.n_chunks;
    let head = bh % params.n_heads;
    let b = bh / params.n_heads;
    let kv_head = head / (params.n_heads / params.n_kv_heads);
    let d = params.head_dim;

    let q_base = bh * d;
    for (var c = lid; c < d; c += WG) {
        q_shared[c] = f32(q[q_base + c]) * params.scale;
    }
    workgroupBarrier();

    let row_start = chunk * CHUNK;
    let rows = min(CHUNK, params.cache_len - row_start);
    let row_stride = params.n_kv_heads * d;
    let cache_base = b * params.cache_capacity * row_stride + kv_head * d;

    // Scores, and each thread's max over the rows it owns.
    var local_max = -3.0e38;
    for (var j = lid; j < rows; j += WG) {
        let k_base = cache_base + (row_start + j) * row_stride;
        var s = 0.0;
        for (var c = 0u; c < d; c++) {
            s += q_shared[c] * f32(k_cache[k_base + c]);
        }
        probs[j] = s;
        local_max = max(local_max, s);
    }
    reduction[lid] = local_max;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            reduction[lid] = max(reduction[lid], reduction[lid + stride]);
        }
        workgroupBarrier();
    }
    let chunk_max = reduction[0];
    workgroupBarrier();

    // Probabilities relative to the chunk max, and their sum.
    var local_sum = 0.0;
    for (var j = lid; j < rows; j += WG) {
        let p = exp(probs[j] - chunk_max);
        probs[j] = p;
        local_sum += p;
    }
    reduction[lid] = local_sum;
    workgroupBarrier();
    for (var stride = WG / 2u; stride > 0u; stride /= 2u) {
        if (lid < stride) {
            reduction[lid] += reduction[lid + stride];
        }
        workgroupBarrier();
    }
    let chunk_sum = reduction[0];

    // Unnormalised output of this chunk: threads stride over head_dim.
    let part_base = linear * d;
    for (var c = lid; c < d; c += WG) {
        var o = 0.0;
        for (var j = 0u; j < rows; j++) {
            o += probs[j] * f32(v_cache[cache_base + (row_start + j) * row_stride + c]);
        }
        part_o[part_base + c] = o;
    }
    if (lid == 0u) {
        part_ml[linear * 2u] = chunk_max;
        part_ml[linear * 2u + 1u] = chunk_sum;
    }
}

@compute @workgroup_size(WG)
fn reduce(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let bh = wid.x + wid.y * nwg.x;
    if (bh >= params.reduce_workgroups) {
        return;
    }
    let d = params.head_dim;
    let first = bh * params.n_chunks;

    var global_max = -3.0e38;
    for (var c = 0u; c < params.n_chunks; c++) {
        global_max = max(global_max, part_ml[(first + c) * 2u]);
    }
    var total = 0.0;
    for (var c = 0u; c < params.n_chunks; c++) {
        total += part_ml[(first + c) * 2u + 1u] * exp(part_ml[(first + c) * 2u] - global_max);
    }
    let inv_total = 1.0 / total;

    for (var e = lid; e < d; e += WG) {
        var o = 0.0;
        for (var c = 0u; c < params.n_chunks; c++) {
            let weight = exp(part_ml[(first + c) * 2u] - global_max);
            o += part_o[(first + c) * d + e] * weight;
        }
        out[bh * d + e] = T(o * inv_total);
    }
}
