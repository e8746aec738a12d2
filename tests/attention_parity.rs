//! GPU attention kernels against the CPU references (`attention_prefill_ref`,
//! `attention_decode_ref`, which accumulate in f64) on ragged shapes, MHA/GQA/MQA, large
//! scores and grids folded past 65,535 workgroups.
//!
//! Tolerances. Outputs are convex combinations of V rows, so errors are measured against the
//! largest |v| of the case (`scale` below):
//! - f32: scores carry a relative error of about head_dim * 2^-24, and exp() turns an absolute
//!   score error e into a relative weight error e. For scores of +-1e3 that is about 1e-4 of
//!   |v|, so the bound is 2e-4 * scale + 2e-5 (ordinary inputs land near 1e-6).
//! - f16: the inputs are rounded to f16 before the CPU reference runs, so only the kernel's
//!   own error remains: f32 arithmetic (as above) plus the final rounding of the output to f16,
//!   2^-11 = 4.9e-4 relative. The bound is 1.5e-3 * scale.
//!
//! Run with `WGPU_BACKEND=vulkan cargo test --release --test attention_parity`; each test skips
//! with a message when no GPU can be opened (fails with `ALPHANAS_REQUIRE_GPU=1`).

use alphanas::device::{gpu_for_tests, DType, GpuContext, GpuTensor, Recorder};
use alphanas::kernels::attention::cpu::{attention_decode_ref, attention_prefill_ref};
use alphanas::kernels::attention::gpu::{attention_decode, attention_prefill, record_prefill_passes, DecodeShape, PrefillScratch, PrefillShape};
use rand::{Rng, SeedableRng};

fn random(len: usize, magnitude: f32, seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-magnitude..magnitude)).collect()
}

fn round_to_dtype(values: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => values.iter().map(|&x| half::f16::from_f32(x).to_f32()).collect(),
        _ => values.to_vec(),
    }
}

fn tolerance(dtype: DType, v_scale: f32) -> f32 {
    match dtype {
        DType::F16 => 1.5e-3 * v_scale,
        _ => 2e-4 * v_scale + 2e-5,
    }
}

fn max_abs_diff(gpu: &[f32], cpu: &[f32]) -> f32 {
    assert_eq!(gpu.len(), cpu.len(), "output lengths differ");
    gpu.iter().zip(cpu).map(|(a, b)| (a - b).abs()).fold(0.0, f32::max)
}

fn assert_close(what: &str, gpu: &[f32], cpu: &[f32], dtype: DType, v_scale: f32) {
    assert!(gpu.iter().all(|x| x.is_finite()), "{what}: GPU output has non-finite values");
    let diff = max_abs_diff(gpu, cpu);
    let bound = tolerance(dtype, v_scale);
    assert!(diff <= bound, "{what} ({}): max abs diff {diff:e} exceeds {bound:e}", dtype.name());
}

fn dtypes(ctx: &alphanas::device::GpuContext) -> Vec<DType> {
    if ctx.has_f16() {
        vec![DType::F32, DType::F16]
    } else {
        eprintln!("f16 cases skipped: {} lacks SHADER_F16", ctx.info.name);
        vec![DType::F32]
    }
}

/// (batch, seq, n_heads, n_kv_heads, head_dim): size 1, ragged lengths around the 64-row
/// query block, odd head_dim, MHA, GQA, MQA and the largest head_dim.
const PREFILL_CASES: &[(usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1),
    (2, 7, 4, 4, 16),
    (1, 67, 8, 2, 32),
    (3, 130, 4, 1, 64),
    (1, 65, 2, 2, 128),
    (2, 33, 3, 3, 80),
    (1, 40, 2, 1, 256),
];

fn check_prefill(test: &str, q_mag: f32, kv_mag: f32) {
    let Some(ctx) = gpu_for_tests(test) else { return };
    for dtype in dtypes(&ctx) {
        for (i, &(batch, seq, n_heads, n_kv_heads, head_dim)) in PREFILL_CASES.iter().enumerate() {
            let seed = 100 * i as u64;
            let q = round_to_dtype(&random(batch * seq * n_heads * head_dim, q_mag, seed), dtype);
            let k = round_to_dtype(&random(batch * seq * n_kv_heads * head_dim, kv_mag, seed + 1), dtype);
            let v = round_to_dtype(&random(batch * seq * n_kv_heads * head_dim, 1.0, seed + 2), dtype);

            let shape = PrefillShape::causal(batch, seq, n_heads, n_kv_heads, head_dim);
            let gpu = attention_prefill(&ctx, &q, &k, &v, &shape, dtype).unwrap();
            let cpu = attention_prefill_ref(&q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim);
            assert_close(&format!("prefill {:?}", PREFILL_CASES[i]), &gpu, &cpu, dtype, 1.0);
        }
    }
}

#[test]
fn prefill_matches_cpu() {
    check_prefill("prefill_matches_cpu", 1.0, 1.0);
}

/// Entries of 40 give scores q.k / sqrt(head_dim) in the hundreds to thousands, so a softmax
/// without max subtraction would overflow exp() (f32 overflows above 88).
#[test]
fn prefill_large_scores_stay_finite() {
    check_prefill("prefill_large_scores_stay_finite", 40.0, 40.0);
}

/// A chunk of queries at positions 5.. against a cache holding rows 0.. must equal the last
/// rows of full causal attention over the longer sequence.
#[test]
fn prefill_chunk_attends_to_cache() {
    let Some(ctx) = gpu_for_tests("prefill_chunk_attends_to_cache") else { return };
    let (batch, total, n_heads, n_kv_heads, head_dim) = (2, 75, 4, 2, 24);
    let (offset, capacity) = (5, 90);
    let n_q = total - offset;

    let q_full = random(batch * total * n_heads * head_dim, 1.0, 7);
    let k_full = random(batch * total * n_kv_heads * head_dim, 1.0, 8);
    let v_full = random(batch * total * n_kv_heads * head_dim, 1.0, 9);
    let expected_full = attention_prefill_ref(&q_full, &k_full, &v_full, batch, total, n_heads, n_kv_heads, head_dim);

    // The chunk's queries, and caches with spare capacity filled with garbage that must be ignored.
    let q_row = n_heads * head_dim;
    let kv_row = n_kv_heads * head_dim;
    let mut q = Vec::new();
    let mut expected = Vec::new();
    let mut k = vec![1e4f32; batch * capacity * kv_row];
    let mut v = vec![1e4f32; batch * capacity * kv_row];
    for b in 0..batch {
        q.extend_from_slice(&q_full[(b * total + offset) * q_row..(b + 1) * total * q_row]);
        expected.extend_from_slice(&expected_full[(b * total + offset) * q_row..(b + 1) * total * q_row]);
        let src = b * total * kv_row..(b + 1) * total * kv_row;
        let dst = b * capacity * kv_row;
        k[dst..dst + total * kv_row].copy_from_slice(&k_full[src.clone()]);
        v[dst..dst + total * kv_row].copy_from_slice(&v_full[src]);
    }

    let shape = PrefillShape { batch, n_q, kv_len: total, kv_capacity: capacity, n_heads, n_kv_heads, head_dim, q_offset: offset };
    let gpu = attention_prefill(&ctx, &q, &k, &v, &shape, DType::F32).unwrap();
    assert_close("chunked prefill", &gpu, &expected, DType::F32, 1.0);
}

/// (batch, cache_len, n_heads, n_kv_heads, head_dim): one row, a ragged short cache, a cache
/// just past one 256-row chunk, and a long cache of 4100 rows, across MHA, GQA and MQA.
const DECODE_CASES: &[(usize, usize, usize, usize, usize)] = &[
    (1, 1, 1, 1, 1),
    (2, 7, 4, 4, 16),
    (3, 257, 8, 2, 64),
    (1, 4100, 4, 1, 64),
    (2, 300, 3, 3, 80),
    (1, 513, 2, 1, 256),
];

fn check_decode(test: &str, q_mag: f32, k_mag: f32) {
    let Some(ctx) = gpu_for_tests(test) else { return };
    for dtype in dtypes(&ctx) {
        for (i, &(batch, cache_len, n_heads, n_kv_heads, head_dim)) in DECODE_CASES.iter().enumerate() {
            let seed = 1000 + 100 * i as u64;
            let q = round_to_dtype(&random(batch * n_heads * head_dim, q_mag, seed), dtype);
            let k = round_to_dtype(&random(batch * cache_len * n_kv_heads * head_dim, k_mag, seed + 1), dtype);
            let v = round_to_dtype(&random(batch * cache_len * n_kv_heads * head_dim, 1.0, seed + 2), dtype);

            let shape = DecodeShape { batch, cache_len, cache_capacity: cache_len, n_heads, n_kv_heads, head_dim };
            let gpu = attention_decode(&ctx, &q, &k, &v, &shape, dtype).unwrap();
            let cpu = attention_decode_ref(&q, &k, &v, batch, cache_len, n_heads, n_kv_heads, head_dim);
            assert_close(&format!("decode {:?}", DECODE_CASES[i]), &gpu, &cpu, dtype, 1.0);
        }
    }
}

#[test]
fn decode_matches_cpu() {
    check_decode("decode_matches_cpu", 1.0, 1.0);
}

#[test]
fn decode_large_scores_stay_finite() {
    check_decode("decode_large_scores_stay_finite", 40.0, 40.0);
}

/// Only the first cache_len rows count: rows past it hold huge values that would dominate.
#[test]
fn decode_ignores_rows_past_cache_len() {
    let Some(ctx) = gpu_for_tests("decode_ignores_rows_past_cache_len") else { return };
    let (batch, cache_len, capacity, n_heads, n_kv_heads, head_dim) = (2, 300, 320, 4, 2, 32);
    let row = n_kv_heads * head_dim;
    let q = random(batch * n_heads * head_dim, 1.0, 21);
    let k = random(batch * cache_len * row, 1.0, 22);
    let v = random(batch * cache_len * row, 1.0, 23);
    let expected = attention_decode_ref(&q, &k, &v, batch, cache_len, n_heads, n_kv_heads, head_dim);

    let mut k_cache = vec![1e4f32; batch * capacity * row];
    let mut v_cache = vec![1e4f32; batch * capacity * row];
    for b in 0..batch {
        let src = b * cache_len * row..(b + 1) * cache_len * row;
        k_cache[b * capacity * row..][..cache_len * row].copy_from_slice(&k[src.clone()]);
        v_cache[b * capacity * row..][..cache_len * row].copy_from_slice(&v[src]);
    }
    let shape = DecodeShape { batch, cache_len, cache_capacity: capacity, n_heads, n_kv_heads, head_dim };
    let gpu = attention_decode(&ctx, &q, &k_cache, &v_cache, &shape, DType::F32).unwrap();
    assert_close("decode with spare capacity", &gpu, &expected, DType::F32, 1.0);
}

/// 70,000 (batch, head) pairs need more workgroups than one grid dimension allows, so both
/// kernels run on a folded (x, y) grid. Every sequence must still be computed exactly once.
#[test]
fn folded_grid_covers_every_workgroup() {
    let Some(ctx) = gpu_for_tests("folded_grid_covers_every_workgroup") else { return };
    let (batch, n_heads, head_dim) = (70_000, 1, 4);

    let seq = 2;
    let q = random(batch * seq * n_heads * head_dim, 1.0, 31);
    let k = random(batch * seq * n_heads * head_dim, 1.0, 32);
    let v = random(batch * seq * n_heads * head_dim, 1.0, 33);
    let shape = PrefillShape::causal(batch, seq, n_heads, n_heads, head_dim);
    let gpu = attention_prefill(&ctx, &q, &k, &v, &shape, DType::F32).unwrap();
    let cpu = attention_prefill_ref(&q, &k, &v, batch, seq, n_heads, n_heads, head_dim);
    assert_close("folded prefill", &gpu, &cpu, DType::F32, 1.0);

    let cache_len = 3;
    let q = random(batch * n_heads * head_dim, 1.0, 34);
    let k = random(batch * cache_len * n_heads * head_dim, 1.0, 35);
    let v = random(batch * cache_len * n_heads * head_dim, 1.0, 36);
    let shape = DecodeShape { batch, cache_len, cache_capacity: cache_len, n_heads, n_kv_heads: n_heads, head_dim };
    let gpu = attention_decode(&ctx, &q, &k, &v, &shape, DType::F32).unwrap();
    let cpu = attention_decode_ref(&q, &k, &v, batch, cache_len, n_heads, n_heads, head_dim);
    assert_close("folded decode", &gpu, &cpu, DType::F32, 1.0);
}

/// Shapes the kernels cannot serve fail with a message instead of reaching the GPU.
#[test]
fn invalid_shapes_are_rejected() {
    let Some(ctx) = gpu_for_tests("invalid_shapes_are_rejected") else { return };
    let shape = PrefillShape::causal(1, 2, 4, 3, 8);
    let q = vec![0.0; 2 * 4 * 8];
    let kv = vec![0.0; 2 * 3 * 8];
    let error = attention_prefill(&ctx, &q, &kv, &kv, &shape, DType::F32).unwrap_err().to_string();
    assert!(error.contains("must divide n_heads"), "{error}");

    let shape = DecodeShape { batch: 1, cache_len: 2, cache_capacity: 2, n_heads: 1, n_kv_heads: 1, head_dim: 300 };
    let q = vec![0.0; 300];
    let kv = vec![0.0; 600];
    let error = attention_decode(&ctx, &q, &kv, &kv, &shape, DType::F32).unwrap_err().to_string();
    assert!(error.contains("head_dim (300)"), "{error}");
}

/// A prefill of 1,100 keys at head_dim 64 matches the CPU on every adapter. On llvmpipe its
/// loop budget allows one pass only about 440 keys, so this also covers the automatic split
/// into key passes there.
#[test]
fn long_prefill_matches_cpu() {
    let Some(ctx) = gpu_for_tests("long_prefill_matches_cpu") else { return };
    let (batch, seq, n_heads, n_kv_heads, head_dim) = (1, 1100, 2, 1, 64);
    let q = random(batch * seq * n_heads * head_dim, 1.0, 41);
    let k = random(batch * seq * n_kv_heads * head_dim, 1.0, 42);
    let v = random(batch * seq * n_kv_heads * head_dim, 1.0, 43);
    let shape = PrefillShape::causal(batch, seq, n_heads, n_kv_heads, head_dim);
    let gpu = attention_prefill(&ctx, &q, &k, &v, &shape, DType::F32).unwrap();
    let cpu = attention_prefill_ref(&q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim);
    assert_close("long prefill", &gpu, &cpu, DType::F32, 1.0);
}

/// Runs `shape` on the GPU with its keys split into passes of `pass_keys`.
fn prefill_in_passes(ctx: &GpuContext, q: &[f32], k: &[f32], v: &[f32], shape: &PrefillShape, dtype: DType, pass_keys: usize) -> Vec<f32> {
    let q_gpu = GpuTensor::from_f32(ctx, q, &[q.len()], dtype).unwrap();
    let k_gpu = GpuTensor::from_f32(ctx, k, &[k.len()], dtype).unwrap();
    let v_gpu = GpuTensor::from_f32(ctx, v, &[v.len()], dtype).unwrap();
    let out = GpuTensor::empty(ctx, &[q.len()], dtype).unwrap();
    let scratch = PrefillScratch::with_state(ctx, shape).unwrap();
    let mut rec = Recorder::new(ctx);
    record_prefill_passes(&mut rec, shape, &q_gpu, &k_gpu, &v_gpu, &out, &scratch, pass_keys).unwrap();
    rec.submit().unwrap();
    out.to_f32(ctx).unwrap()
}

/// Key passes give full causal attention on every prefill case. Passes of 13 keys (not a
/// multiple of the K/V tile) run with ordinary scores. Passes of 64 run with entries of 20.
/// Their scores in the hundreds overflow exp() in f32 unless the running max carried between
/// passes rescales them, and they stay within the tolerance's bound of 1e3.
#[test]
fn prefill_in_key_passes_matches_cpu() {
    let Some(ctx) = gpu_for_tests("prefill_in_key_passes_matches_cpu") else { return };
    for dtype in dtypes(&ctx) {
        for (i, &(batch, seq, n_heads, n_kv_heads, head_dim)) in PREFILL_CASES.iter().enumerate() {
            for (pass_keys, magnitude) in [(13, 1.0), (64, 20.0)] {
                let seed = 300 + 10 * i as u64;
                let q = round_to_dtype(&random(batch * seq * n_heads * head_dim, magnitude, seed), dtype);
                let k = round_to_dtype(&random(batch * seq * n_kv_heads * head_dim, magnitude, seed + 1), dtype);
                let v = round_to_dtype(&random(batch * seq * n_kv_heads * head_dim, 1.0, seed + 2), dtype);
                let shape = PrefillShape::causal(batch, seq, n_heads, n_kv_heads, head_dim);
                let gpu = prefill_in_passes(&ctx, &q, &k, &v, &shape, dtype, pass_keys);
                let cpu = attention_prefill_ref(&q, &k, &v, batch, seq, n_heads, n_kv_heads, head_dim);
                assert_close(&format!("prefill {:?} in passes of {pass_keys}", PREFILL_CASES[i]), &gpu, &cpu, dtype, 1.0);
            }
        }
    }
}

/// A chunk of queries at positions 40.. whose first pass (keys 0..16) lies wholly before
/// them and whose later pass boundaries fall among them: the queries pick up the earlier
/// keys' state and rows past kv_len (garbage) are ignored.
#[test]
fn chunked_prefill_in_key_passes_matches_cpu() {
    let Some(ctx) = gpu_for_tests("chunked_prefill_in_key_passes_matches_cpu") else { return };
    let (batch, total, n_heads, n_kv_heads, head_dim) = (2, 90, 3, 1, 20);
    let (offset, capacity) = (40, 100);
    let q_full = random(batch * total * n_heads * head_dim, 1.0, 51);
    let k_full = random(batch * total * n_kv_heads * head_dim, 1.0, 52);
    let v_full = random(batch * total * n_kv_heads * head_dim, 1.0, 53);
    let expected_full = attention_prefill_ref(&q_full, &k_full, &v_full, batch, total, n_heads, n_kv_heads, head_dim);

    let (q_row, kv_row) = (n_heads * head_dim, n_kv_heads * head_dim);
    let (mut q, mut expected) = (Vec::new(), Vec::new());
    let mut k = vec![1e4f32; batch * capacity * kv_row];
    let mut v = vec![1e4f32; batch * capacity * kv_row];
    for b in 0..batch {
        q.extend_from_slice(&q_full[(b * total + offset) * q_row..(b + 1) * total * q_row]);
        expected.extend_from_slice(&expected_full[(b * total + offset) * q_row..(b + 1) * total * q_row]);
        let dst = b * capacity * kv_row;
        k[dst..dst + total * kv_row].copy_from_slice(&k_full[b * total * kv_row..(b + 1) * total * kv_row]);
        v[dst..dst + total * kv_row].copy_from_slice(&v_full[b * total * kv_row..(b + 1) * total * kv_row]);
    }
    let n_q = total - offset;
    let shape = PrefillShape { batch, n_q, kv_len: total, kv_capacity: capacity, n_heads, n_kv_heads, head_dim, q_offset: offset };
    let gpu = prefill_in_passes(&ctx, &q, &k, &v, &shape, DType::F32, 16);
    assert_close("chunked prefill in passes of 16", &gpu, &expected, DType::F32, 1.0);
}

/// Several passes with placeholder scratch are rejected with the fix. On llvmpipe, passes
/// longer than its loop budget are rejected instead of returning wrong values.
#[test]
fn prefill_passes_are_checked() {
    let Some(ctx) = gpu_for_tests("prefill_passes_are_checked") else { return };
    let short = PrefillShape::causal(1, 40, 2, 2, 64);
    let placeholder = PrefillScratch::new(&ctx, &short, DType::F32).unwrap();
    let q = GpuTensor::zeros(&ctx, &[40 * 2 * 64], DType::F32).unwrap();
    let out = GpuTensor::empty(&ctx, &[40 * 2 * 64], DType::F32).unwrap();
    let mut rec = Recorder::new(&ctx);
    let error = record_prefill_passes(&mut rec, &short, &q, &q, &q, &out, &placeholder, 16).unwrap_err().to_string();
    assert!(error.contains("3 key passes"), "{error}");
    assert!(error.contains("allocate the scratch from this shape"), "{error}");

    let long = PrefillShape::causal(1, 1000, 1, 1, 64);
    let scratch = PrefillScratch::with_state(&ctx, &long).unwrap();
    let data = random(1000 * 64, 1.0, 61);
    let tensor = GpuTensor::from_f32(&ctx, &data, &[data.len()], DType::F32).unwrap();
    let out = GpuTensor::empty(&ctx, &[data.len()], DType::F32).unwrap();
    let mut rec = Recorder::new(&ctx);
    let result = record_prefill_passes(&mut rec, &long, &tensor, &tensor, &tensor, &out, &scratch, 1000);
    if ctx.is_llvmpipe() {
        let message = result.expect_err("llvmpipe would skip loop iterations").to_string();
        assert!(message.contains("65535 in total"), "{message}");
    } else {
        result.unwrap();
        rec.submit().unwrap();
        let cpu = attention_prefill_ref(&data, &data, &data, 1, 1000, 1, 1, 64);
        assert_close("one pass of 1000 keys", &out.to_f32(&ctx).unwrap(), &cpu, DType::F32, 1.0);
    }
}
