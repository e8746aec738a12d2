//! CPU scaled dot-product attention for prefill (causal) and decode (one new token per
//! sequence against a KV cache), with multi-head, grouped-query and multi-query layouts.
//!
//! Layouts (dense row-major `f32`):
//! - prefill: q `[batch, seq, n_heads, head_dim]`, k and v `[batch, seq, n_kv_heads, head_dim]`,
//!   output like q. Query position `s` attends to key positions `0..=s`.
//! - decode: q `[batch, n_heads, head_dim]`, caches `[batch, cache_len, n_kv_heads, head_dim]`
//!   where `cache_len` already counts the new token, output like q. Every cached position is
//!   attended.
//!
//! Scores are scaled by `1/sqrt(head_dim)`, and query head `h` reads KV head
//! `h / (n_heads / n_kv_heads)`, so `n_kv_heads` must divide `n_heads`.
//!
//! The references accumulate in `f64` and materialise every score row. The fast paths keep
//! a running maximum and sum per query (the online softmax of Milakov and Gimelshein, 2018,
//! as used by FlashAttention) over blocks of [`KEY_BLOCK`] keys, so the scores never leave a
//! small stack buffer. They run in parallel over (batch, query tile) for prefill and over
//! (batch, head) for decode. The `_into` variants also accept KV buffers allocated for
//! more positions than are filled (`kv_capacity`), which is how a preallocated KV cache is
//! laid out.

use rayon::prelude::*;

/// Keys scored per block of the online softmax.
pub const KEY_BLOCK: usize = 64;

/// Largest number of queries one prefill task handles.
const MAX_QUERY_TILE: usize = 32;

/// Batch and head counts shared by the prefill and decode kernels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttentionShape {
    pub batch: usize,
    pub n_heads: usize,
    pub n_kv_heads: usize,
    pub head_dim: usize,
}

impl AttentionShape {
    fn check(&self) {
        assert!(self.n_kv_heads > 0, "attention: n_kv_heads must be positive");
        assert!(
            self.n_heads.is_multiple_of(self.n_kv_heads),
            "attention: n_kv_heads ({}) must divide n_heads ({})",
            self.n_kv_heads,
            self.n_heads
        );
    }

    /// Query heads that share one KV head.
    fn group_size(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    fn scale(&self) -> f32 {
        1.0 / (self.head_dim as f32).sqrt()
    }
}

fn check_len(name: &str, len: usize, expected: usize, layout: &str) {
    assert_eq!(len, expected, "attention: {name} has {len} elements, expected {layout} = {expected}");
}

/// Computes causal prefill attention with `f64` accumulation: the plain reference.
///
/// # Panics
/// When `n_kv_heads` does not divide `n_heads` or a slice length does not match the shape.
#[expect(clippy::too_many_arguments, reason = "the shape is spelled out to match the GPU kernel's parameters")]
pub fn attention_prefill_ref(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    batch: usize,
    seq: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let shape = AttentionShape { batch, n_heads, n_kv_heads, head_dim };
    shape.check();
    check_len("q", q.len(), batch * seq * n_heads * head_dim, "batch·seq·n_heads·head_dim");
    check_len("k", k.len(), batch * seq * n_kv_heads * head_dim, "batch·seq·n_kv_heads·head_dim");
    check_len("v", v.len(), batch * seq * n_kv_heads * head_dim, "batch·seq·n_kv_heads·head_dim");

    let mut out = vec![0.0f32; q.len()];
    for b in 0..batch {
        for s in 0..seq {
            for h in 0..n_heads {
                let q_off = ((b * seq + s) * n_heads + h) * head_dim;
                let kv_base = b * seq * n_kv_heads * head_dim + (h / shape.group_size()) * head_dim;
                let row = attend_ref(
                    &q[q_off..q_off + head_dim],
                    k,
                    v,
                    kv_base,
                    n_kv_heads * head_dim,
                    s + 1,
                    head_dim,
                );
                out[q_off..q_off + head_dim].copy_from_slice(&row);
            }
        }
    }
    out
}

/// Computes decode attention of one query per sequence against full KV caches, with `f64`
/// accumulation: the plain reference.
///
/// # Panics
/// When `n_kv_heads` does not divide `n_heads` or a slice length does not match the shape.
#[expect(clippy::too_many_arguments, reason = "the shape is spelled out to match the GPU kernel's parameters")]
pub fn attention_decode_ref(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    batch: usize,
    cache_len: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let shape = AttentionShape { batch, n_heads, n_kv_heads, head_dim };
    shape.check();
    check_len("q", q.len(), batch * n_heads * head_dim, "batch·n_heads·head_dim");
    let cache_elems = batch * cache_len * n_kv_heads * head_dim;
    check_len("k_cache", k_cache.len(), cache_elems, "batch·cache_len·n_kv_heads·head_dim");
    check_len("v_cache", v_cache.len(), cache_elems, "batch·cache_len·n_kv_heads·head_dim");

    let mut out = vec![0.0f32; q.len()];
    for b in 0..batch {
        for h in 0..n_heads {
            let q_off = (b * n_heads + h) * head_dim;
            let kv_base = b * cache_len * n_kv_heads * head_dim + (h / shape.group_size()) * head_dim;
            let row = attend_ref(
                &q[q_off..q_off + head_dim],
                k_cache,
                v_cache,
                kv_base,
                n_kv_heads * head_dim,
                cache_len,
                head_dim,
            );
            out[q_off..q_off + head_dim].copy_from_slice(&row);
        }
    }
    out
}

/// Attends one query row to `n_keys` keys starting at `base`, `stride` elements apart.
fn attend_ref(query: &[f32], k: &[f32], v: &[f32], base: usize, stride: usize, n_keys: usize, head_dim: usize) -> Vec<f32> {
    let scale = 1.0 / (head_dim as f64).sqrt();
    let scores: Vec<f64> = (0..n_keys)
        .map(|j| {
            let key = &k[base + j * stride..base + j * stride + head_dim];
            query.iter().zip(key).map(|(&a, &b)| f64::from(a) * f64::from(b)).sum::<f64>() * scale
        })
        .collect();
    let max = scores.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let weights: Vec<f64> = scores.iter().map(|s| (s - max).exp()).collect();
    let sum: f64 = weights.iter().sum();

    let mut acc = vec![0.0f64; head_dim];
    for (j, w) in weights.iter().enumerate() {
        let value = &v[base + j * stride..base + j * stride + head_dim];
        for (a, &x) in acc.iter_mut().zip(value) {
            *a += w * f64::from(x);
        }
    }
    acc.iter().map(|a| (a / sum) as f32).collect()
}

/// Computes causal prefill attention with the fast path and returns the output.
///
/// # Panics
/// As [`attention_prefill_ref`].
#[expect(clippy::too_many_arguments, reason = "same parameters as attention_prefill_ref")]
pub fn attention_prefill(
    q: &[f32],
    k: &[f32],
    v: &[f32],
    batch: usize,
    seq: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; q.len()];
    let shape = AttentionShape { batch, n_heads, n_kv_heads, head_dim };
    attention_prefill_into(&mut out, q, k, v, shape, seq, seq);
    out
}

/// Writes causal prefill attention into `out` (`[batch, seq, n_heads, head_dim]`).
///
/// `k` and `v` are `[batch, kv_capacity, n_kv_heads, head_dim]` with `kv_capacity >= seq`;
/// only positions `0..seq` of each sequence are read.
///
/// # Panics
/// When `n_kv_heads` does not divide `n_heads`, `kv_capacity < seq`, or a slice length does
/// not match the shape.
pub fn attention_prefill_into(
    out: &mut [f32],
    q: &[f32],
    k: &[f32],
    v: &[f32],
    shape: AttentionShape,
    seq: usize,
    kv_capacity: usize,
) {
    shape.check();
    let AttentionShape { batch, n_heads, n_kv_heads, head_dim } = shape;
    assert!(kv_capacity >= seq, "attention: kv_capacity ({kv_capacity}) is below seq ({seq})");
    check_len("q", q.len(), batch * seq * n_heads * head_dim, "batch·seq·n_heads·head_dim");
    check_len("out", out.len(), q.len(), "batch·seq·n_heads·head_dim");
    let kv_elems = batch * kv_capacity * n_kv_heads * head_dim;
    check_len("k", k.len(), kv_elems, "batch·kv_capacity·n_kv_heads·head_dim");
    check_len("v", v.len(), kv_elems, "batch·kv_capacity·n_kv_heads·head_dim");
    if out.is_empty() {
        return;
    }

    // Enough tiles to keep every thread busy (four per thread), but never more than
    // MAX_QUERY_TILE queries in one, so the score buffer stays on the stack.
    let tasks_wanted = 4 * rayon::current_num_threads();
    let tile = (batch * seq).div_ceil(tasks_wanted).clamp(1, MAX_QUERY_TILE);
    let tiles_per_seq = seq.div_ceil(tile);
    let row_len = n_heads * head_dim;

    // Each task owns the output rows of one (batch, query tile), which are contiguous.
    let mut chunks: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(batch * tiles_per_seq);
    for (b, seq_out) in out.chunks_mut(seq * row_len).enumerate() {
        for (t, tile_out) in seq_out.chunks_mut(tile * row_len).enumerate() {
            chunks.push((b, t * tile, tile_out));
        }
    }
    chunks.into_par_iter().for_each(|(b, first_query, tile_out)| {
        let n_queries = tile_out.len() / row_len;
        let kv = KvView {
            k: &k[b * kv_capacity * n_kv_heads * head_dim..(b + 1) * kv_capacity * n_kv_heads * head_dim],
            v: &v[b * kv_capacity * n_kv_heads * head_dim..(b + 1) * kv_capacity * n_kv_heads * head_dim],
            stride: n_kv_heads * head_dim,
            head_dim,
        };
        for h in 0..n_heads {
            let g = h / shape.group_size();
            let q_rows = QueryRows {
                q,
                first_offset: ((b * seq + first_query) * n_heads + h) * head_dim,
                stride: row_len,
            };
            let queries = QueryTile { count: n_queries, first_position: first_query, position_step: 1 };
            attend_tile(tile_out, h * head_dim, row_len, q_rows, queries, &kv, g, shape.scale());
        }
    });
}

/// Computes decode attention with the fast path and returns the output.
///
/// # Panics
/// As [`attention_decode_ref`].
#[expect(clippy::too_many_arguments, reason = "same parameters as attention_decode_ref")]
pub fn attention_decode(
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    batch: usize,
    cache_len: usize,
    n_heads: usize,
    n_kv_heads: usize,
    head_dim: usize,
) -> Vec<f32> {
    let mut out = vec![0.0f32; q.len()];
    let shape = AttentionShape { batch, n_heads, n_kv_heads, head_dim };
    attention_decode_into(&mut out, q, k_cache, v_cache, shape, cache_len, cache_len);
    out
}

/// Writes decode attention into `out` (`[batch, n_heads, head_dim]`) without allocating.
///
/// The caches are `[batch, kv_capacity, n_kv_heads, head_dim]` with
/// `kv_capacity >= cache_len`; positions `0..cache_len` of each sequence are read.
///
/// # Panics
/// When `n_kv_heads` does not divide `n_heads`, `cache_len` is 0 or above `kv_capacity`, or
/// a slice length does not match the shape.
pub fn attention_decode_into(
    out: &mut [f32],
    q: &[f32],
    k_cache: &[f32],
    v_cache: &[f32],
    shape: AttentionShape,
    cache_len: usize,
    kv_capacity: usize,
) {
    shape.check();
    let AttentionShape { batch, n_heads, n_kv_heads, head_dim } = shape;
    assert!(cache_len > 0, "attention: decode needs at least one cached position");
    assert!(kv_capacity >= cache_len, "attention: kv_capacity ({kv_capacity}) is below cache_len ({cache_len})");
    check_len("q", q.len(), batch * n_heads * head_dim, "batch·n_heads·head_dim");
    check_len("out", out.len(), q.len(), "batch·n_heads·head_dim");
    let kv_elems = batch * kv_capacity * n_kv_heads * head_dim;
    check_len("k_cache", k_cache.len(), kv_elems, "batch·kv_capacity·n_kv_heads·head_dim");
    check_len("v_cache", v_cache.len(), kv_elems, "batch·kv_capacity·n_kv_heads·head_dim");
    if out.is_empty() {
        return;
    }

    // The query heads of one GQA group share a KV head, so a task attends with several of them
    // at once and each block of keys and values is read from memory once for all of them. A
    // group is split into smaller tiles only where there are fewer groups than threads.
    let group = shape.group_size();
    let groups = batch * n_kv_heads;
    let splits = rayon::current_num_threads().div_ceil(groups).max(group.div_ceil(MAX_QUERY_TILE)).min(group);
    let tile = group.div_ceil(splits);
    let sequence_elems = kv_capacity * n_kv_heads * head_dim;

    // Each task owns the output rows of a tile of one group's heads, which are contiguous.
    let mut chunks: Vec<(usize, usize, &mut [f32])> = Vec::with_capacity(groups * splits);
    for (index, group_out) in out.chunks_mut(group * head_dim).enumerate() {
        for (t, tile_out) in group_out.chunks_mut(tile * head_dim).enumerate() {
            chunks.push((index, t * tile, tile_out));
        }
    }
    chunks.into_par_iter().for_each(|(index, first_head_in_group, tile_out)| {
        let (b, g) = (index / n_kv_heads, index % n_kv_heads);
        let kv = KvView {
            k: &k_cache[b * sequence_elems..(b + 1) * sequence_elems],
            v: &v_cache[b * sequence_elems..(b + 1) * sequence_elems],
            stride: n_kv_heads * head_dim,
            head_dim,
        };
        let first_head = g * group + first_head_in_group;
        let q_rows = QueryRows { q, first_offset: (b * n_heads + first_head) * head_dim, stride: head_dim };
        // Every query of the tile sits at position cache_len - 1 and attends to every cached key.
        let queries = QueryTile { count: tile_out.len() / head_dim, first_position: cache_len - 1, position_step: 0 };
        attend_tile(tile_out, 0, head_dim, q_rows, queries, &kv, g, shape.scale());
    });
}

/// Keys and values of one sequence: position `j` of KV head `g` starts at
/// `j·stride + g·head_dim`.
struct KvView<'a> {
    k: &'a [f32],
    v: &'a [f32],
    stride: usize,
    head_dim: usize,
}

/// Query rows of one head: query `i` of the tile starts at `first_offset + i·stride` in `q`.
#[derive(Clone, Copy)]
struct QueryRows<'a> {
    q: &'a [f32],
    first_offset: usize,
    stride: usize,
}

/// Positions of the queries of one tile: query `i` is at `first_position + i·position_step`.
/// Prefill tiles hold consecutive positions of one head (step 1), and decode tiles hold the
/// heads of one GQA group at the same position (step 0).
#[derive(Clone, Copy)]
struct QueryTile {
    count: usize,
    first_position: usize,
    position_step: usize,
}

/// Online-softmax attention of the queries of `tile` against the causal prefix of KV head `g`.
///
/// Output row `i` is written to `out[out_offset + i·out_stride..][..head_dim]`, which also
/// contains the running weighted sum of values until the final division.
#[expect(clippy::too_many_arguments, reason = "private kernel body; the call sites name every part")]
fn attend_tile(
    out: &mut [f32],
    out_offset: usize,
    out_stride: usize,
    q_rows: QueryRows<'_>,
    tile: QueryTile,
    kv: &KvView<'_>,
    g: usize,
    scale: f32,
) {
    let QueryTile { count: n_queries, first_position, position_step } = tile;
    debug_assert!(n_queries <= MAX_QUERY_TILE);
    let head_dim = kv.head_dim;
    let mut running_max = [f32::NEG_INFINITY; MAX_QUERY_TILE];
    let mut running_sum = [0.0f32; MAX_QUERY_TILE];
    let mut scores = [0.0f32; KEY_BLOCK];
    for i in 0..n_queries {
        out[out_offset + i * out_stride..][..head_dim].fill(0.0);
    }

    let n_keys = first_position + (n_queries - 1) * position_step + 1;
    for block_start in (0..n_keys).step_by(KEY_BLOCK) {
        let block_end = (block_start + KEY_BLOCK).min(n_keys);
        for i in 0..n_queries {
            // Causal mask: query i attends to keys up to its own position.
            let visible_end = block_end.min(first_position + i * position_step + 1);
            if visible_end <= block_start {
                continue;
            }
            let query = &q_rows.q[q_rows.first_offset + i * q_rows.stride..][..head_dim];
            let block_scores = &mut scores[..visible_end - block_start];
            let mut block_max = f32::NEG_INFINITY;
            for (j, score) in block_scores.iter_mut().enumerate() {
                let key = &kv.k[(block_start + j) * kv.stride + g * head_dim..][..head_dim];
                *score = dot(query, key) * scale;
                block_max = block_max.max(*score);
            }

            // Rescale what was accumulated under the old maximum, then add this block.
            let new_max = running_max[i].max(block_max);
            let correction = (running_max[i] - new_max).exp();
            let acc = &mut out[out_offset + i * out_stride..][..head_dim];
            if correction != 1.0 {
                acc.iter_mut().for_each(|a| *a *= correction);
            }
            let mut block_sum = 0.0f32;
            for (j, &score) in block_scores.iter().enumerate() {
                let weight = (score - new_max).exp();
                block_sum += weight;
                let value = &kv.v[(block_start + j) * kv.stride + g * head_dim..][..head_dim];
                for (a, &x) in acc.iter_mut().zip(value) {
                    *a += weight * x;
                }
            }
            running_sum[i] = running_sum[i] * correction + block_sum;
            running_max[i] = new_max;
        }
    }

    for i in 0..n_queries {
        // Every query attends to at least its own key, so the sum is positive.
        let inv = 1.0 / running_sum[i];
        out[out_offset + i * out_stride..][..head_dim].iter_mut().for_each(|a| *a *= inv);
    }
}

/// Dot product with eight partial sums, which the compiler vectorises.
#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let a_chunks = a.chunks_exact(8);
    let b_chunks = b.chunks_exact(8);
    let tail: f32 = a_chunks.remainder().iter().zip(b_chunks.remainder()).map(|(x, y)| x * y).sum();
    for (x, y) in a_chunks.zip(b_chunks) {
        for l in 0..8 {
            lanes[l] += x[l] * y[l];
        }
    }
    lanes.iter().sum::<f32>() + tail
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::test_util::{assert_close, random_vec};

    #[test]
    fn ref_single_key_returns_value() {
        // One position: softmax weight 1, so the output is v.
        let q = [0.3, -2.0];
        let k = [1.0, 1.0];
        let v = [5.0, -7.0];
        assert_eq!(attention_prefill_ref(&q, &k, &v, 1, 1, 1, 1, 2), vec![5.0, -7.0]);
        assert_eq!(attention_decode_ref(&q, &k, &v, 1, 1, 1, 1, 2), vec![5.0, -7.0]);
    }

    #[test]
    fn ref_equal_scores_average_values() {
        // q = 0 gives equal scores, so position 1 averages the two values.
        let q = [0.0; 4];
        let k = random_vec(4, 1.0, 1);
        let v = [1.0, 2.0, 3.0, 6.0];
        let out = attention_prefill_ref(&q, &k, &v, 1, 2, 1, 1, 2);
        assert_eq!(out, vec![1.0, 2.0, 2.0, 4.0]);
    }

    /// (batch, seq, n_heads, n_kv_heads, head_dim): MHA, GQA and MQA on ragged sizes.
    const SHAPES: [(usize, usize, usize, usize, usize); 8] = [
        (1, 1, 1, 1, 1),
        (1, 7, 2, 2, 8),
        (2, 33, 4, 2, 16),
        (1, 67, 6, 1, 33),
        (3, 130, 4, 4, 64),
        (2, 65, 8, 2, 64),
        (1, 129, 3, 3, 130),
        (1, 200, 2, 1, 7),
    ];

    #[test]
    fn prefill_fast_matches_ref() {
        for (n, &(batch, seq, n_heads, n_kv_heads, head_dim)) in SHAPES.iter().enumerate() {
            let q = random_vec(batch * seq * n_heads * head_dim, 2.0, n as u64);
            let k = random_vec(batch * seq * n_kv_heads * head_dim, 2.0, n as u64 + 100);
            let v = random_vec(batch * seq * n_kv_heads * head_dim, 2.0, n as u64 + 200);
            let want = attention_prefill_ref(&q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim);
            let got = attention_prefill(&q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim);
            // Outputs are convex combinations of values in [-2, 2]; f32 dots and exp leave
            // errors of a few 1e-6.
            assert_close(&got, &want, 1e-4, 1e-5, &format!("prefill {:?}", SHAPES[n]));
        }
    }

    #[test]
    fn decode_fast_matches_ref() {
        for (n, &(batch, cache_len, n_heads, n_kv_heads, head_dim)) in SHAPES.iter().enumerate() {
            let q = random_vec(batch * n_heads * head_dim, 2.0, n as u64);
            let k = random_vec(batch * cache_len * n_kv_heads * head_dim, 2.0, n as u64 + 100);
            let v = random_vec(batch * cache_len * n_kv_heads * head_dim, 2.0, n as u64 + 200);
            let want = attention_decode_ref(&q, &k, &v, batch, cache_len, n_heads, n_kv_heads, head_dim);
            let got = attention_decode(&q, &k, &v, batch, cache_len, n_heads, n_kv_heads, head_dim);
            assert_close(&got, &want, 1e-4, 1e-5, &format!("decode {:?}", SHAPES[n]));
        }
    }

    #[test]
    fn large_scores_stay_finite() {
        // |q·k|/sqrt(D) reaches ~1e4, so exp would overflow without the running maximum.
        let (batch, seq, n_heads, n_kv_heads, head_dim) = (2, 67, 4, 2, 16);
        let q = random_vec(batch * seq * n_heads * head_dim, 30.0, 7);
        let k = random_vec(batch * seq * n_kv_heads * head_dim, 30.0, 8);
        let v = random_vec(batch * seq * n_kv_heads * head_dim, 1e4, 9);
        let want = attention_prefill_ref(&q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim);
        let got = attention_prefill(&q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim);
        assert!(got.iter().all(|x| x.is_finite()), "non-finite prefill output");
        // Scores of ~1e4 carry an absolute f32 error of ~1e-3 before exp, which moves the
        // weights by ~1e-3 relative. Values are ~1e4, so the absolute bound is 1e4·2e-3.
        assert_close(&got, &want, 2e-3, 20.0, "prefill large magnitude");
    }

    #[test]
    fn decode_same_bits_on_any_thread_count() {
        // Group tiles depend on the thread count; each query's arithmetic must not.
        for &(batch, cache_len, n_heads, n_kv_heads, head_dim) in &[(1, 300, 12, 2, 64), (3, 70, 8, 1, 16), (2, 129, 40, 1, 8)] {
            let q = random_vec(batch * n_heads * head_dim, 1.0, 41);
            let k = random_vec(batch * cache_len * n_kv_heads * head_dim, 1.0, 42);
            let v = random_vec(batch * cache_len * n_kv_heads * head_dim, 1.0, 43);
            let run = |threads: usize| {
                let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().unwrap();
                pool.install(|| attention_decode(&q, &k, &v, batch, cache_len, n_heads, n_kv_heads, head_dim))
            };
            let one = run(1);
            assert_eq!(one, run(3), "shape {:?}", (batch, cache_len, n_heads, n_kv_heads, head_dim));
            assert_eq!(one, run(16), "shape {:?}", (batch, cache_len, n_heads, n_kv_heads, head_dim));
            let want = attention_decode_ref(&q, &k, &v, batch, cache_len, n_heads, n_kv_heads, head_dim);
            assert_close(&one, &want, 1e-4, 1e-5, "grouped decode");
        }
    }

    #[test]
    fn decode_last_position_equals_prefill_row() {
        let (batch, seq, n_heads, n_kv_heads, head_dim) = (2, 70, 6, 3, 32);
        let q = random_vec(batch * seq * n_heads * head_dim, 1.0, 21);
        let k = random_vec(batch * seq * n_kv_heads * head_dim, 1.0, 22);
        let v = random_vec(batch * seq * n_kv_heads * head_dim, 1.0, 23);
        let prefill = attention_prefill(&q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim);

        let row = n_heads * head_dim;
        let mut last_q = Vec::new();
        let mut want = Vec::new();
        for b in 0..batch {
            let off = (b * seq + seq - 1) * row;
            last_q.extend_from_slice(&q[off..off + row]);
            want.extend_from_slice(&prefill[off..off + row]);
        }
        let got = attention_decode(&last_q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim);
        assert_close(&got, &want, 1e-5, 1e-6, "decode vs prefill last row");
    }

    #[test]
    fn into_variants_read_only_filled_capacity() {
        // Caches allocated for 50 positions with 20 filled; the garbage beyond must not leak in.
        let shape = AttentionShape { batch: 2, n_heads: 4, n_kv_heads: 2, head_dim: 8 };
        let (seq, capacity) = (20, 50);
        let kv_row = shape.n_kv_heads * shape.head_dim;
        let q = random_vec(shape.batch * seq * shape.n_heads * shape.head_dim, 1.0, 31);
        let k = random_vec(shape.batch * seq * kv_row, 1.0, 32);
        let v = random_vec(shape.batch * seq * kv_row, 1.0, 33);
        let mut k_big = vec![f32::NAN; shape.batch * capacity * kv_row];
        let mut v_big = k_big.clone();
        for b in 0..shape.batch {
            k_big[b * capacity * kv_row..][..seq * kv_row].copy_from_slice(&k[b * seq * kv_row..][..seq * kv_row]);
            v_big[b * capacity * kv_row..][..seq * kv_row].copy_from_slice(&v[b * seq * kv_row..][..seq * kv_row]);
        }

        let want = attention_prefill_ref(&q, &k, &v, shape.batch, seq, shape.n_heads, shape.n_kv_heads, shape.head_dim);
        let mut got = vec![0.0; q.len()];
        attention_prefill_into(&mut got, &q, &k_big, &v_big, shape, seq, capacity);
        assert_close(&got, &want, 1e-4, 1e-5, "prefill with capacity");

        let q1 = random_vec(shape.batch * shape.n_heads * shape.head_dim, 1.0, 34);
        let want = attention_decode_ref(&q1, &k, &v, shape.batch, seq, shape.n_heads, shape.n_kv_heads, shape.head_dim);
        let mut got = vec![0.0; q1.len()];
        attention_decode_into(&mut got, &q1, &k_big, &v_big, shape, seq, capacity);
        assert_close(&got, &want, 1e-4, 1e-5, "decode with capacity");
    }
}
