//! GPU kernels against their CPU references, in f32 and f16, on ragged sizes, size 1 and
//! large-magnitude inputs, plus a folded-grid dispatch and the storage-binding limit.
//!
//! Run on lavapipe with `WGPU_BACKEND=vulkan cargo test --release --test gpu_parity`. Each
//! test skips with a message when no GPU can be opened, unless `ALPHANAS_REQUIRE_GPU=1`.
//!
//! Tolerances. `EPS32` (2^-23) and `EPS16` (2^-10) are the machine epsilons. The f16 variants
//! store f16 and compute in f32, so their reference is the CPU reference applied to the
//! f16-rounded inputs, and the tolerance adds one f16 rounding of the output (`EPS16 / 2`
//! relative, plus 2^-24 absolute for f16 subnormals) to the f32 tolerance of the same op.
//! Transcendental functions follow the Vulkan precision rules (Vulkan 1.3 specification,
//! "Precision and Operation of SPIR-V Instructions"): exp within 3 + 2|x| ULP, sin and cos
//! within 2^-11 absolute on [-pi, pi]; each test states which rule its bound comes from.

use alphanas::device::{gpu_for_tests, DType, GpuContext, GpuTensor, Recorder};
use alphanas::kernels::{activation, embedding, matmul, norm, rope, softmax};
use half::f16;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const EPS32: f32 = 1.0 / (1 << 23) as f32;
const EPS16: f32 = 1.0 / (1 << 10) as f32;
/// Absolute rounding error of an f16 subnormal output.
const F16_SUBNORMAL: f32 = 1.0 / (1 << 24) as f32;

fn random(len: usize, scale: f32, seed: u64) -> Vec<f32> {
    let mut rng = StdRng::seed_from_u64(seed);
    (0..len).map(|_| rng.random_range(-scale..scale)).collect()
}

fn round_f16(x: &[f32]) -> Vec<f32> {
    x.iter().map(|&v| f16::from_f32(v).to_f32()).collect()
}

/// Returns the inputs as the kernel stores them: unchanged for f32, rounded for f16.
fn as_stored(x: &[f32], dtype: DType) -> Vec<f32> {
    match dtype {
        DType::F16 => round_f16(x),
        _ => x.to_vec(),
    }
}

/// Lists the dtypes to test on `ctx`: f32, and f16 where the device has `SHADER_F16`.
fn dtypes(ctx: &GpuContext) -> Vec<DType> {
    if ctx.has_f16() {
        vec![DType::F32, DType::F16]
    } else {
        eprintln!("the GPU {} has no SHADER_F16; testing f32 only", ctx.info.name);
        vec![DType::F32]
    }
}

/// Adds the f16 output rounding to a per-element tolerance computed for f32 arithmetic.
fn with_output_rounding(tol: f32, expected: f32, dtype: DType) -> f32 {
    match dtype {
        DType::F16 => tol + 0.5 * EPS16 * expected.abs() + F16_SUBNORMAL,
        _ => tol,
    }
}

/// Asserts `|got - expected| <= tol(i)` everywhere, reporting the worst element.
fn assert_close(what: &str, got: &[f32], expected: &[f32], tol: impl Fn(usize) -> f32) {
    assert_eq!(got.len(), expected.len(), "{what}: length");
    let mut worst: Option<(usize, f32)> = None;
    for i in 0..got.len() {
        assert!(got[i].is_finite(), "{what}: element {i} is {} (expected {})", got[i], expected[i]);
        let excess = (got[i] - expected[i]).abs() / tol(i).max(f32::MIN_POSITIVE);
        if excess > 1.0 && worst.is_none_or(|(_, w)| excess > w) {
            worst = Some((i, excess));
        }
    }
    if let Some((i, excess)) = worst {
        panic!(
            "{what}: element {i} is {} but expected {} (difference {:e}, {excess:.2}x the tolerance {:e})",
            got[i],
            expected[i],
            (got[i] - expected[i]).abs(),
            tol(i)
        );
    }
}

// ---------------------------------------------------------------- matmul

#[allow(clippy::too_many_arguments)] // one argument per dimension of the test case
fn check_matmul(ctx: &GpuContext, m: usize, n: usize, k: usize, transpose_b: bool, with_bias: bool, scale: f32, dtype: DType) {
    let what = format!("matmul {m}x{n}x{k} transpose_b={transpose_b} bias={with_bias} scale={scale} {}", dtype.name());
    let a = as_stored(&random(m * k, scale, 1), dtype);
    let b = as_stored(&random(k * n, scale, 2), dtype);
    let bias = with_bias.then(|| as_stored(&random(n, scale, 3), dtype));

    let got = matmul::gpu::matmul(ctx, &a, &b, bias.as_deref(), m, n, k, transpose_b, dtype).unwrap();
    let expected = matmul::cpu::matmul_ref(&a, &b, bias.as_deref(), m, n, k, transpose_b);

    // Forward error of an f32 dot product of length k: at most about k * EPS32 times the dot
    // product of absolute values (summation order differs between the GPU and the CPU); the
    // factor 2 covers both sides' rounding and the bias addition.
    let abs_a: Vec<f32> = a.iter().map(|v| v.abs()).collect();
    let abs_b: Vec<f32> = b.iter().map(|v| v.abs()).collect();
    let abs_bias = bias.as_ref().map(|v| v.iter().map(|x| x.abs()).collect::<Vec<f32>>());
    let magnitude = matmul::cpu::matmul_ref(&abs_a, &abs_b, abs_bias.as_deref(), m, n, k, transpose_b);
    assert_close(&what, &got, &expected, |i| {
        with_output_rounding(2.0 * (k as f32 + 1.0) * EPS32 * magnitude[i] + f32::MIN_POSITIVE, expected[i], dtype)
    });
}

#[test]
fn matmul_ragged_shapes() {
    let Some(ctx) = gpu_for_tests("matmul_ragged_shapes") else { return };
    for dtype in dtypes(&ctx) {
        for &(m, n, k) in &[(1, 1, 1), (67, 45, 33), (130, 257, 71), (64, 64, 64), (3, 129, 17)] {
            for transpose_b in [false, true] {
                for with_bias in [false, true] {
                    check_matmul(&ctx, m, n, k, transpose_b, with_bias, 1.0, dtype);
                }
            }
        }
    }
}

/// Products of at most 8 rows run the thin kernel (`shaders/matvec.wgsl`); 9 rows go back to
/// the tiled one. N is not a multiple of either kernel's columns per workgroup, and K is not a
/// multiple of the 64 invocations that split it.
#[test]
fn matmul_thin_shapes() {
    let Some(ctx) = gpu_for_tests("matmul_thin_shapes") else { return };
    assert_eq!(matmul::gpu::MATVEC_MAX_ROWS, 8);
    for dtype in dtypes(&ctx) {
        for &(m, n, k) in &[(1, 1001, 771), (2, 3, 5), (5, 67, 300), (8, 45, 129), (9, 45, 129), (1, 17, 64)] {
            for transpose_b in [false, true] {
                for with_bias in [false, true] {
                    check_matmul(&ctx, m, n, k, transpose_b, with_bias, 1.0, dtype);
                }
            }
        }
    }
    check_matmul(&ctx, 3, 70, 333, true, true, 1.0e3, DType::F32);
    if ctx.has_f16() {
        check_matmul(&ctx, 3, 70, 40, false, true, 30.0, DType::F16);
    }
}

#[test]
fn matmul_large_magnitude() {
    let Some(ctx) = gpu_for_tests("matmul_large_magnitude") else { return };
    // 1e3 keeps f32 products near 1e8; f16 inputs stay below its maximum of 65504 and the
    // sums (accumulated in f32) below it too: 40 * 30^2 = 36000.
    check_matmul(&ctx, 67, 45, 33, false, true, 1.0e3, DType::F32);
    if ctx.has_f16() {
        check_matmul(&ctx, 67, 45, 40, true, false, 30.0, DType::F16);
    }
}

#[test]
fn matmul_rejects_b_beyond_binding() {
    let Some(ctx) = gpu_for_tests("matmul_rejects_b_beyond_binding") else { return };
    let limit = ctx.limits.max_storage_buffer_binding_size;
    if limit >= ctx.limits.max_buffer_size || limit > 1 << 30 {
        eprintln!("skipping: a buffer larger than the {limit}-byte binding limit would be too large to allocate here");
        return;
    }
    // B is [k, n] with k * n * 4 bytes just over the limit; A and C are small.
    let n = 1024;
    let k = (limit as usize / 4).div_ceil(n) + 1;
    let a = GpuTensor::empty(&ctx, &[1, k], DType::F32).unwrap();
    let b = GpuTensor::empty(&ctx, &[k, n], DType::F32).unwrap();
    let c = GpuTensor::empty(&ctx, &[1, n], DType::F32).unwrap();
    let mut rec = Recorder::new(&ctx);
    let err = matmul::gpu::record(&mut rec, &a, &b, None, &c, 1, n, k, false).unwrap_err();
    assert!(err.to_string().contains("max_storage_buffer_binding_size"), "{err}");
}

// ---------------------------------------------------------------- softmax

fn check_softmax(ctx: &GpuContext, rows: usize, cols: usize, scale: f32, dtype: DType) {
    let what = format!("softmax {rows}x{cols} scale={scale} {}", dtype.name());
    let x = as_stored(&random(rows * cols, scale, 4), dtype);
    let got = softmax::gpu::softmax_rows(ctx, &x, rows, cols, dtype).unwrap();
    let expected = softmax::cpu::softmax_rows_ref(&x, rows, cols);

    let row_max: Vec<f32> = x.chunks(cols).map(|r| r.iter().cloned().fold(f32::MIN, f32::max)).collect();
    // exp(x - max) is within (3 + 2|x - max|) ULP (Vulkan); the row sum adds up to
    // log2(cols) + 1 roundings of a tree reduction and the division one more.
    let sum_terms = (cols as f32).log2().ceil() + 2.0;
    assert_close(&what, &got, &expected, |i| {
        let arg = (x[i] - row_max[i / cols]).abs();
        let ulps = 3.0 + 2.0 * arg + sum_terms;
        with_output_rounding(ulps * EPS32 * expected[i].abs() + 1e-30, expected[i], dtype)
    });
    for (r, row) in got.chunks(cols).enumerate() {
        let total: f32 = row.iter().sum();
        let slack = match dtype {
            DType::F16 => cols as f32 * EPS16,
            _ => 1e-5,
        };
        assert!((total - 1.0).abs() <= slack, "{what}: row {r} sums to {total}");
    }
}

#[test]
fn softmax_ragged_shapes() {
    let Some(ctx) = gpu_for_tests("softmax_ragged_shapes") else { return };
    for dtype in dtypes(&ctx) {
        for &(rows, cols) in &[(1, 1), (1, 7), (3, 255), (5, 257), (17, 1000), (2, 4099)] {
            check_softmax(&ctx, rows, cols, 4.0, dtype);
        }
    }
}

#[test]
fn softmax_large_magnitude() {
    let Some(ctx) = gpu_for_tests("softmax_large_magnitude") else { return };
    // Inputs up to 1e4 overflow exp() without the max subtraction; 3e4 is near f16's maximum.
    check_softmax(&ctx, 7, 300, 1.0e4, DType::F32);
    check_softmax(&ctx, 7, 300, 50.0, DType::F32);
    if ctx.has_f16() {
        check_softmax(&ctx, 7, 300, 3.0e4, DType::F16);
    }
}

// ---------------------------------------------------------------- norms

/// Tolerance of a normalised output: the mean and variance come from tree reductions of
/// `cols` f32 terms (relative error about log2(cols) * EPS32 each, halved by the square root
/// for the scale), applied to O(|w| |x - mean| / std) values; 16 ULP of slack covers the
/// remaining multiplications and the different summation order of the CPU reference.
fn norm_tolerance(expected: f32, weight: f32, bias: f32, cols: usize, dtype: DType) -> f32 {
    let ulps = 16.0 + 2.0 * (cols as f32).log2().ceil();
    with_output_rounding(ulps * EPS32 * (expected.abs() + weight.abs() + bias.abs()), expected, dtype)
}

fn check_norms(ctx: &GpuContext, rows: usize, cols: usize, offset: f32, scale: f32, dtype: DType) {
    let what = format!("{rows}x{cols} offset={offset} scale={scale} {}", dtype.name());
    let x: Vec<f32> = as_stored(&random(rows * cols, scale, 5).iter().map(|v| v + offset).collect::<Vec<_>>(), dtype);
    let weight = as_stored(&random(cols, 2.0, 6), dtype);
    let bias = as_stored(&random(cols, 1.0, 7), dtype);
    let eps = 1e-5;

    let got = norm::gpu::layernorm(ctx, &x, &weight, &bias, rows, cols, eps, dtype).unwrap();
    let expected = norm::cpu::layernorm_ref(&x, &weight, &bias, rows, cols, eps);
    assert_close(&format!("layernorm {what}"), &got, &expected, |i| norm_tolerance(expected[i], weight[i % cols], bias[i % cols], cols, dtype));

    let got = norm::gpu::rmsnorm(ctx, &x, &weight, rows, cols, eps, dtype).unwrap();
    let expected = norm::cpu::rmsnorm_ref(&x, &weight, rows, cols, eps);
    assert_close(&format!("rmsnorm {what}"), &got, &expected, |i| norm_tolerance(expected[i], weight[i % cols], 0.0, cols, dtype));
}

#[test]
fn norms_ragged_shapes() {
    let Some(ctx) = gpu_for_tests("norms_ragged_shapes") else { return };
    for dtype in dtypes(&ctx) {
        for &(rows, cols) in &[(1, 1), (1, 3), (4, 255), (9, 257), (3, 1030)] {
            check_norms(&ctx, rows, cols, 0.0, 1.0, dtype);
        }
    }
}

#[test]
fn norms_large_magnitude() {
    let Some(ctx) = gpu_for_tests("norms_large_magnitude") else { return };
    // A large common offset tests the shifted mean and the two-pass variance, because
    // E[x^2] - E[x]^2 would cancel and an unshifted f32 mean carries the offset's rounding.
    check_norms(&ctx, 5, 300, 1.0e4, 1.0, DType::F32);
    check_norms(&ctx, 5, 300, 0.0, 1.0e6, DType::F32);
    if ctx.has_f16() {
        check_norms(&ctx, 5, 300, 0.0, 3.0e4, DType::F16);
    }
}

// ---------------------------------------------------------------- activations

/// gelu and silu use one exp() of an argument below 0 (within 3 + 2|y| ULP) and a few
/// correctly rounded operations; 8 ULP on top covers those and the CPU's own tanh.
fn activation_tolerance(expected: f32, arg: f32, dtype: DType) -> f32 {
    let ulps = 11.0 + 2.0 * arg.abs().min(100.0);
    with_output_rounding(ulps * EPS32 * expected.abs() + 1e-30, expected, dtype)
}

fn check_activations(ctx: &GpuContext, x: &[f32], up: &[f32], dtype: DType, label: &str) {
    let x = as_stored(x, dtype);
    let up = as_stored(up, dtype);

    let got = activation::gpu::gelu_tanh(ctx, &x, dtype).unwrap();
    let expected = activation::cpu::gelu_tanh_ref(&x);
    // The tanh argument: sqrt(2/pi) (x + 0.044715 x^3), so exp() gets 2|y|. Past |x| = 10 the
    // tanh is 1 to f32 precision and the exp error no longer reaches the output.
    assert_close(&format!("gelu {label} {}", dtype.name()), &got, &expected, |i| {
        let v = x[i].abs().min(10.0);
        let y = 0.7978846 * (v + 0.044715 * v * v * v);
        activation_tolerance(expected[i], 2.0 * y, dtype) + 2.0 * EPS32 * x[i].abs()
    });

    let got = activation::gpu::swiglu(ctx, &x, &up, dtype).unwrap();
    let expected = activation::cpu::swiglu_ref(&x, &up);
    assert_close(&format!("swiglu {label} {}", dtype.name()), &got, &expected, |i| activation_tolerance(expected[i], x[i], dtype));
}

#[test]
fn activations_ragged_sizes() {
    let Some(ctx) = gpu_for_tests("activations_ragged_sizes") else { return };
    for dtype in dtypes(&ctx) {
        for &n in &[1usize, 7, 255, 257, 1001] {
            check_activations(&ctx, &random(n, 6.0, 8), &random(n, 3.0, 9), dtype, &format!("n={n}"));
        }
    }
}

#[test]
fn activations_large_magnitude() {
    let Some(ctx) = gpu_for_tests("activations_large_magnitude") else { return };
    let extremes = [-1.0e30f32, -1.0e4, -88.0, -20.0, -0.0, 0.0, 20.0, 88.0, 1.0e4, 1.0e30];
    let up = [1.0f32, 2.0, -1.0, 0.5, 1.0, 1.0, -3.0, 1.0, 1.0e-3, 1.0e-8];
    check_activations(&ctx, &extremes, &up, DType::F32, "extremes");
    if ctx.has_f16() {
        let extremes16 = [-65504.0f32, -1.0e4, -20.0, -0.0, 0.0, 20.0, 1.0e4, 65504.0];
        let up16 = [1.0f32, 2.0, 0.5, 1.0, 1.0, -3.0, 1.0, 0.5];
        check_activations(&ctx, &extremes16, &up16, DType::F16, "extremes");
    }
}

#[test]
fn activation_folded_grid() {
    let Some(ctx) = gpu_for_tests("activation_folded_grid") else { return };
    // More than 65,535 workgroups of 256 invocations, so the grid is folded into x and y.
    let max = ctx.limits.max_compute_workgroups_per_dimension as usize;
    let n = (max + 10) * 256 + 3;
    let x: Vec<f32> = (0..n).map(|i| ((i % 2001) as f32 - 1000.0) * 0.01).collect();
    let got = activation::gpu::gelu_tanh(&ctx, &x, DType::F32).unwrap();
    let expected = activation::cpu::gelu_tanh_ref(&x);
    assert_close("gelu folded grid", &got, &expected, |i| activation_tolerance(expected[i], 2.0 * x[i].abs() * 1.1, DType::F32) + 2.0 * EPS32 * x[i].abs());
}

// ---------------------------------------------------------------- rope

fn check_rope(ctx: &GpuContext, n_tokens: usize, n_heads: usize, head_dim: usize, scale: f32, dtype: DType) {
    let what = format!("rope tokens={n_tokens} heads={n_heads} head_dim={head_dim} scale={scale} {}", dtype.name());
    let x = as_stored(&random(n_tokens * n_heads * head_dim, scale, 10), dtype);
    let positions: Vec<u32> = (0..n_tokens as u32).map(|t| (t * 37) % 1000).collect();
    let theta = 10000.0;
    let got = rope::gpu::rope(ctx, &x, &positions, n_tokens, n_heads, head_dim, theta, dtype).unwrap();
    let expected = rope::cpu::rope_ref(&x, &positions, n_tokens, n_heads, head_dim, theta);

    // Vulkan allows sin and cos 2^-11 absolute error on [-pi, pi]; larger angles add their
    // f32 rounding, about pos * EPS32 radians. Each output mixes both elements of its pair.
    let half = head_dim / 2;
    assert_close(&what, &got, &expected, |i| {
        let token = i / (n_heads * head_dim);
        let j = i % head_dim;
        let base = i - j;
        let pair_magnitude = x[base + j % half].abs() + x[base + j % half + half].abs();
        let angle_error = 2.0 / 2048.0 + 4.0 * positions[token] as f32 * EPS32;
        with_output_rounding(angle_error * pair_magnitude + 4.0 * EPS32 * pair_magnitude, expected[i], dtype)
    });
}

#[test]
fn rope_ragged_shapes() {
    let Some(ctx) = gpu_for_tests("rope_ragged_shapes") else { return };
    for dtype in dtypes(&ctx) {
        for &(tokens, heads, head_dim) in &[(1, 1, 2), (7, 3, 64), (33, 5, 18), (2, 4, 128)] {
            check_rope(&ctx, tokens, heads, head_dim, 1.0, dtype);
        }
    }
}

#[test]
fn rope_large_magnitude() {
    let Some(ctx) = gpu_for_tests("rope_large_magnitude") else { return };
    check_rope(&ctx, 9, 2, 64, 1.0e4, DType::F32);
    if ctx.has_f16() {
        check_rope(&ctx, 9, 2, 64, 3.0e4, DType::F16);
    }
}

#[test]
fn rope_offset_in_place_matches_buffer() {
    let Some(ctx) = gpu_for_tests("rope_offset_in_place_matches_buffer") else { return };
    let (n_tokens, n_heads, head_dim) = (5, 3, 16);
    let x = random(n_tokens * n_heads * head_dim, 1.0, 11);
    let positions: Vec<u32> = (40..40 + n_tokens as u32).collect();
    let shape = rope::gpu::RopeShape { n_tokens, n_heads, head_dim, theta: 10000.0 };

    let from_buffer = rope::gpu::rope(&ctx, &x, &positions, n_tokens, n_heads, head_dim, 10000.0, DType::F32).unwrap();
    let tensor = GpuTensor::from_f32(&ctx, &x, &[n_tokens, n_heads * head_dim], DType::F32).unwrap();
    let mut rec = Recorder::new(&ctx);
    rope::gpu::record(&mut rec, &tensor, rope::gpu::Positions::Offset(40), None, shape).unwrap();
    rec.submit().unwrap();
    assert_eq!(tensor.to_f32(&ctx).unwrap(), from_buffer);
}

// ---------------------------------------------------------------- embedding and residual

#[test]
fn embedding_gather_exact() {
    let Some(ctx) = gpu_for_tests("embedding_gather_exact") else { return };
    for dtype in dtypes(&ctx) {
        for &(vocab, d, n_tokens) in &[(1usize, 1usize, 1usize), (50, 7, 13), (1000, 65, 300)] {
            let table = as_stored(&random(vocab * d, 1.0e4, 12), dtype);
            let ids: Vec<u32> = (0..n_tokens).map(|t| ((t * 7919) % vocab) as u32).collect();
            let got = embedding::gpu::embedding(&ctx, &table, &ids, vocab, d, dtype).unwrap();
            // A gather copies bits: equality is exact.
            assert_eq!(got, embedding::cpu::embedding_ref(&table, &ids, d).unwrap(), "vocab={vocab} d={d} {}", dtype.name());
        }
    }
}

#[test]
fn embedding_out_of_range_ids() {
    let Some(ctx) = gpu_for_tests("embedding_out_of_range_ids") else { return };
    let (vocab, d) = (10, 4);
    let table = random(vocab * d, 1.0, 13);
    let err = embedding::gpu::embedding(&ctx, &table, &[3, 10], vocab, d, DType::F32).unwrap_err();
    assert!(err.to_string().contains("token id 10"), "{err}");

    // On the device an id past the vocabulary yields a zero row instead of an out-of-bounds read.
    let table_t = GpuTensor::from_f32(&ctx, &table, &[vocab, d], DType::F32).unwrap();
    let ids = GpuTensor::from_u32(&ctx, &[2, 99, u32::MAX], &[3]).unwrap();
    let out = GpuTensor::from_f32(&ctx, &[7.0; 12], &[3, d], DType::F32).unwrap();
    let mut rec = Recorder::new(&ctx);
    embedding::gpu::record_gather(&mut rec, &table_t, &ids, &out, vocab, d).unwrap();
    rec.submit().unwrap();
    let got = out.to_f32(&ctx).unwrap();
    assert_eq!(&got[..4], &table[8..12]);
    assert_eq!(&got[4..], &[0.0; 8]);
}

#[test]
fn residual_add_exact() {
    let Some(ctx) = gpu_for_tests("residual_add_exact") else { return };
    for dtype in dtypes(&ctx) {
        for &n in &[1usize, 3, 257, 4099] {
            let a = as_stored(&random(n, 1.0e4, 14), dtype);
            let b = as_stored(&random(n, 1.0, 15), dtype);
            let got = embedding::gpu::residual_add(&ctx, &a, &b, dtype).unwrap();
            // f32 addition is correctly rounded on Vulkan, so the result is exact; the f16
            // variant rounds that f32 sum once, as `as_stored` does here.
            let expected = as_stored(&embedding::cpu::residual_add_ref(&a, &b), dtype);
            assert_eq!(got, expected, "n={n} {}", dtype.name());
        }
    }
}

#[test]
fn residual_add_beyond_binding_limit() {
    let Some(ctx) = gpu_for_tests("residual_add_beyond_binding_limit") else { return };
    let limit = ctx.limits.max_storage_buffer_binding_size;
    if limit > 256 << 20 {
        eprintln!("skipping: the binding limit ({limit} bytes) is too large to exceed in a test");
        return;
    }
    // Just over the limit: the add runs in several blocks bound at offsets.
    let n = (limit / 4) as usize + 1_000_003;
    let a: Vec<f32> = (0..n).map(|i| (i % 4093) as f32).collect();
    let got = embedding::gpu::residual_add(&ctx, &a, &a, DType::F32).unwrap();
    for i in (0..n).step_by(997).chain(n - 5..n) {
        assert_eq!(got[i], 2.0 * a[i], "element {i} of {n}");
    }
}
