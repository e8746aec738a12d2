// Causal prefill attention with an online softmax (flash-attention style).
//
// Computes, for every batch b, query head h and query row i of this dispatch,
//   out[b, i, h, :] = sum_j softmax_j(scale * q[b, i, h, :] . k[b, j, g, :]) * v[b, j, g, :]
// over keys j = 0 ..= q_offset + i (causal), with g = h / (n_heads / n_kv_heads), so one
// kernel serves MHA (G = H), GQA (1 < G < H) and MQA (G = 1). The keys and values live in a
// KV cache whose first `kv_len` rows are valid; chunked prefill passes the rows written so far
// and `q_offset`, the absolute position of the first query row.
//
// Key passes: one dispatch covers the keys kv_start .. kv_stop. The host normally makes one
// pass over all keys (kv_start = 0, kv_stop = kv_len, FIRST | LAST). Where one invocation may
// run only a bounded number of loop iterations (llvmpipe, see the host code), it splits the
// keys into several passes, dispatched back to back: each pass but the first resumes the
// online softmax state (running max m, running sum l, unnormalised output) from `acc_state`
// and `ml_state`, each pass but the last stores it there, and the last writes `out`. A query
// whose position is below kv_start has no keys in the pass and leaves its state as it is.
//
// Bindings (group 0):
//   0 uniform Params
//   1 storage read  q        [batch, n_q, n_heads, head_dim]            (T)
//   2 storage read  k        [batch, kv_capacity, n_kv_heads, head_dim] (T)
//   3 storage read  v        [batch, kv_capacity, n_kv_heads, head_dim] (T)
//   4 storage write out      [batch, n_q, n_heads, head_dim]            (T)
//   5 storage       acc_state [batch, n_q, n_heads, head_dim]           (f32) several passes only
//   6 storage       ml_state  [batch, n_q, n_heads, 2] (m, l)           (f32) several passes only
//
// Workgroup: BQ = 64 threads, one query row per thread, so a workgroup owns a block of 64
// query rows of one (batch, head). It streams K/V tiles of BK rows through workgroup memory
// and keeps, per thread, the running max m, the running sum l and an unnormalised output
// accumulator of head_dim floats. No seq x seq score matrix is stored.
//
// Tile sizes: the host replaces the MAX_D and BK constants below before compiling. MAX_D is
// head_dim rounded up to a multiple of 4 (private arrays are sized by it); BK is chosen so the
// two tiles (2 * BK * MAX_D elements of T) fit the device's workgroup storage limit.
//
// Numerics: T is the storage type (f32, or f16 where SHADER_F16 is enabled). Scores, the
// softmax state and the accumulator are f32 in both cases, because q.k products of
// large-magnitude f16 inputs overflow f16 (max 65504). Subtracting the running max keeps
// exp() in range for scores of any magnitude.
//
// Grid: workgroups = ceil(n_q / BQ) * n_heads * batch, folded into (x, y) when above the
// 65,535-per-dimension limit; the linear index is wid.x + wid.y * num_workgroups.x and
// indices at or beyond `n_workgroups` return at once (before any barrier, uniformly per
// workgroup).
//
// Host invariants: n_heads % n_kv_heads == 0; head_dim <= MAX_D; kv_len <= kv_capacity;
// q_offset + n_q <= kv_len (every query's own key is present); kv_start < kv_stop <= kv_len;
// the first pass starts at key 0 (so every query has seen a key before it stores state); with
// several passes the state bindings hold batch * n_q * n_heads rows; each binding fits
// max_storage_buffer_binding_size.

alias T = f32;

const BQ: u32 = 64u;
const MAX_D: u32 = 128u;
const BK: u32 = 16u;

struct Params {
    batch: u32,
    n_q: u32,
    kv_len: u32,
    kv_capacity: u32,
    n_heads: u32,
    n_kv_heads: u32,
    head_dim: u32,
    q_offset: u32,
    scale: f32,
    q_blocks: u32,
    n_workgroups: u32,
    kv_start: u32,
    kv_stop: u32,
    // Bit 0: FIRST (no state to resume); bit 1: LAST (write out instead of the state).
    flags: u32,
    _pad0: u32,
    _pad1: u32,
}

const FIRST: u32 = 1u;
const LAST: u32 = 2u;

@group(0) @binding(0) var<uniform> params: Params;
@group(0) @binding(1) var<storage, read> q: array<T>;
@group(0) @binding(2) var<storage, read> k: array<T>;
@group(0) @binding(3) var<storage, read> v: array<T>;
@group(0) @binding(4) var<storage, read_write> out: array<T>;
@group(0) @binding(5) var<storage, read_write> acc_state: array<f32>;
@group(0) @binding(6) var<storage, read_write> ml_state: array<f32>;

var<workgroup> k_tile: array<T, BK * MAX_D>;
var<workgroup> v_tile: array<T, BK * MAX_D>;

@compute @workgroup_size(BQ)
fn main(
    @builtin(workgroup_id) wid: vec3<u32>,
    @builtin(num_workgroups) nwg: vec3<u32>,
    @builtin(local_invocation_index) lid: u32,
) {
    let linear = wid.x + wid.y * nwg.x;
    if (linear >= params.n_workgroups) {
        return;
    }

    // Workgroup index order: query block fastest, then head, then batch.
    let q_block = linear % params.q_blocks;
    let head = (linear / params.q_blocks) % params.n_heads;
    let b = linear / (params.q_blocks * params.n_heads);
    let group_size = params.n_heads / params.n_kv_heads;
    let kv_head = head / group_size;
    let d = params.head_dim;

    let row = q_block * BQ + lid;
    let in_range = row < params.n_q;
    let position = params.q_offset + row;
    let first = (params.flags & FIRST) != 0u;
    let last = (params.flags & LAST) != 0u;
    // Whether this thread's query sees any key of this pass.
    let has_keys = in_range && position >= params.kv_start;

    // Keys this workgroup needs: up to the position of the last query in range.
    let last_row = min(q_block * BQ + BQ, params.n_q) - 1u;
    let kv_end = min(params.q_offset + last_row + 1u, params.kv_stop);

    let state_row = (b * params.n_q + row) * params.n_heads + head;
    var q_reg: array<f32, MAX_D>;
    var acc: array<f32, MAX_D>;
    var m = -3.0e38;
    var l = 0.0;
    if (has_keys) {
        let q_base = state_row * d;
        for (var c = 0u; c < d; c++) {
            q_reg[c] = f32(q[q_base + c]) * params.scale;
        }
    }
    if (in_range && !first && (has_keys || last)) {
        m = ml_state[2u * state_row];
        l = ml_state[2u * state_row + 1u];
        for (var c = 0u; c < d; c++) {
            acc[c] = acc_state[state_row * d + c];
        }
    }

    let kv_row_stride = params.n_kv_heads * d;
    let kv_batch_base = b * params.kv_capacity * kv_row_stride + kv_head * d;

    for (var tile_start = params.kv_start; tile_start < kv_end; tile_start += BK) {
        let tile_len = min(BK, kv_end - tile_start);

        // Cooperative load of the K and V tiles.
        for (var e = lid; e < tile_len * d; e += BQ) {
            let j = e / d;
            let c = e % d;
            let src = kv_batch_base + (tile_start + j) * kv_row_stride + c;
            k_tile[j * MAX_D + c] = k[src];
            v_tile[j * MAX_D + c] = v[src];
        }
        workgroupBarrier();

        if (in_range && tile_start <= position) {
            let visible = min(tile_len, position + 1u - tile_start);

            var scores: array<f32, BK>;
            var tile_max = -3.0e38;
            for (var j = 0u; j < visible; j++) {
                var s = 0.0;
                for (var c = 0u; c < d; c++) {
                    s += q_reg[c] * f32(k_tile[j * MAX_D + c]);
                }
                scores[j] = s;
                tile_max = max(tile_max, s);
            }

            let m_new = max(m, tile_max);
            let correction = exp(m - m_new);
            l *= correction;
            for (var c = 0u; c < d; c++) {
                acc[c] *= correction;
            }
            for (var j = 0u; j < visible; j++) {
                let p = exp(scores[j] - m_new);
                l += p;
                for (var c = 0u; c < d; c++) {
                    acc[c] += p * f32(v_tile[j * MAX_D + c]);
                }
            }
            m = m_new;
        }
        workgroupBarrier();
    }

    if (in_range && last) {
        let inv_l = 1.0 / l;
        let o_base = state_row * d;
        for (var c = 0u; c < d; c++) {
            out[o_base + c] = T(acc[c] * inv_l);
        }
    } else if (has_keys) {
        ml_state[2u * state_row] = m;
        ml_state[2u * state_row + 1u] = l;
        for (var c = 0u; c < d; c++) {
            acc_state[state_row * d + c] = acc[c];
        }
    }
}
