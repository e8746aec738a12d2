//! GPU forward passes against the CPU reference model (`CpuModel` with the `_ref` kernels)
//! for the same seed and tokens. Each case compares prefill logits, then decode steps after
//! it. The architectures are small: every ffn/norm/pos combination, biases and tied
//! embeddings, and per-layer head counts and d_ff.
//!
//! Error metric: max |gpu - cpu| over all logits, divided by max |cpu| (the logit scale).
//! - f32 bound 1e-3. The CPU reference accumulates in f64; the GPU in f32 with a different
//!   summation order. Relative rounding of about 1e-6 per op grows through two layers and
//!   the head to about 1e-5 of the logit scale, so 1e-3 leaves room without hiding a wrong
//!   mask, position or head mapping (those move logits by a large fraction of the scale).
//! - f16 bound 3e-2. Weights and activations are stored in f16 (unit roundoff 2^-11 = 4.9e-4)
//!   and rounded again after every kernel, about 15 roundings per layer; with two layers and
//!   norms that rescale errors, a few times 1e-3 is typical and 3e-2 is the bound.
//!
//! Run with `WGPU_BACKEND=vulkan cargo test --release --test model_gpu`; tests skip with a
//! message without a GPU (and fail with `ALPHANAS_REQUIRE_GPU=1`).

use std::sync::Arc;

use alphanas::device::{gpu_for_tests, DType, GpuContext};
use alphanas::model::gpu::{bench_gpu, GpuModel};
use alphanas::model::{random_tokens, CpuModel, KernelMode, Mode, Weights};
use alphanas::Architecture;

const SEED: u64 = 11;

fn small_arch(ffn: &str, norm: &str, pos: &str, bias: bool, tied: bool) -> Architecture {
    let text = format!(
        r#"{{"vocab_size": 97, "max_seq_len": 64, "d_model": 32, "n_layers": 2, "n_heads": 4,
            "n_kv_heads": 2, "d_ff": 72, "ffn": "{ffn}", "norm": "{norm}", "pos": "{pos}",
            "bias": {bias}, "tie_embeddings": {tied}}}"#
    );
    Architecture::from_json(&text).unwrap()
}

/// Relative max difference: max |a - b| / max |b|.
fn relative_error(gpu: &[f32], cpu: &[f32]) -> f32 {
    assert_eq!(gpu.len(), cpu.len(), "logit counts differ");
    let scale = cpu.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
    let diff = gpu.iter().zip(cpu).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    diff / scale
}

fn bound(dtype: DType) -> f32 {
    match dtype {
        DType::F16 => 3e-2,
        _ => 1e-3,
    }
}

/// Prefill of `batch` x `seq` tokens, then `steps` decode steps, on both backends; every
/// logit set must agree within the dtype's bound.
fn check_arch(ctx: &Arc<GpuContext>, name: &str, arch: &Architecture, dtype: DType, batch: usize, seq: usize, steps: usize) {
    let weights = Weights::random(arch, SEED).unwrap();
    let mut gpu = GpuModel::new(Arc::clone(ctx), &weights, dtype).unwrap();
    let mut gpu_cache = gpu.new_cache(batch, seq + steps).unwrap();
    let vocab = weights.vocab_size;
    let mut cpu = CpuModel::with_kernels(weights, KernelMode::Reference);
    let mut cpu_cache = cpu.new_cache(batch, seq + steps).unwrap();

    let tokens = random_tokens(batch * seq, vocab, SEED);
    let expected = cpu.prefill(&tokens, batch, seq, &mut cpu_cache).unwrap();
    let actual = gpu.prefill(&tokens, batch, seq, &mut gpu_cache).unwrap();
    assert!(actual.iter().all(|x| x.is_finite()), "{name} {}: prefill logits are not finite", dtype.name());
    let error = relative_error(&actual, &expected);
    assert!(error <= bound(dtype), "{name} {}: prefill logits differ by {error:e} of the logit scale", dtype.name());

    for step in 0..steps {
        let next = random_tokens(batch, vocab, SEED + 1 + step as u64);
        let expected = cpu.decode(&next, &mut cpu_cache).unwrap();
        let actual = gpu.decode(&next, &mut gpu_cache).unwrap();
        let error = relative_error(&actual, &expected);
        assert!(error <= bound(dtype), "{name} {}: decode step {step} logits differ by {error:e}", dtype.name());
    }
    assert_eq!(gpu_cache.len(), seq + steps, "{name}: GPU cache length");
}

fn dtypes(ctx: &GpuContext) -> Vec<DType> {
    if ctx.has_f16() {
        vec![DType::F32, DType::F16]
    } else {
        eprintln!("f16 cases skipped: {} lacks SHADER_F16", ctx.info.name);
        vec![DType::F32]
    }
}

#[test]
fn every_block_combination_matches_cpu() {
    let Some(ctx) = gpu_for_tests("every_block_combination_matches_cpu") else { return };
    for ffn in ["swiglu", "gelu", "relu"] {
        for norm in ["rmsnorm", "layernorm"] {
            for pos in ["rope", "learned", "none"] {
                let arch = small_arch(ffn, norm, pos, false, false);
                check_arch(&ctx, &format!("{ffn}/{norm}/{pos}"), &arch, DType::F32, 2, 13, 2);
            }
        }
    }
}

#[test]
fn bias_and_tied_head_match_cpu() {
    let Some(ctx) = gpu_for_tests("bias_and_tied_head_match_cpu") else { return };
    for dtype in dtypes(&ctx) {
        let arch = small_arch("gelu", "layernorm", "learned", true, true);
        check_arch(&ctx, "gpt2-like", &arch, dtype, 2, 9, 2);
        let arch = small_arch("swiglu", "rmsnorm", "rope", true, false);
        check_arch(&ctx, "llama-like with bias", &arch, dtype, 1, 17, 1);
    }
}

#[test]
fn per_layer_shapes_match_cpu() {
    let Some(ctx) = gpu_for_tests("per_layer_shapes_match_cpu") else { return };
    let text = r#"{"vocab_size": 61, "max_seq_len": 80, "d_model": 48, "n_layers": 3, "n_heads": 6,
        "n_kv_heads": 2, "head_dim": 8, "d_ff": 96, "ffn": "swiglu", "norm": "rmsnorm", "pos": "rope",
        "layers": [{"n_heads": 6, "n_kv_heads": 6, "d_ff": 40},
                   {"n_heads": 4, "n_kv_heads": 1, "d_ff": 96},
                   {"n_heads": 2, "n_kv_heads": 2, "d_ff": 8}]}"#;
    let arch = Architecture::from_json(text).unwrap();
    for dtype in dtypes(&ctx) {
        check_arch(&ctx, "per-layer", &arch, dtype, 3, 70, 3);
    }
}

/// A sequence longer than one prefill chunk must give the same logits as the CPU, so the
/// chunked prefill (K/V appended per chunk, attention over the cache so far) is exact.
#[test]
fn chunked_prefill_matches_cpu() {
    let Some(ctx) = gpu_for_tests("chunked_prefill_matches_cpu") else { return };
    let arch = small_arch("swiglu", "rmsnorm", "rope", false, false);
    let weights = Weights::random(&arch, SEED).unwrap();
    let mut gpu = GpuModel::new(Arc::clone(&ctx), &weights, DType::F32).unwrap();
    gpu.set_max_chunk_tokens(Some(5));
    let mut cpu = CpuModel::with_kernels(weights, KernelMode::Reference);
    let (batch, seq) = (2, 23);
    let tokens = random_tokens(batch * seq, arch.vocab_size as usize, SEED);
    let mut cpu_cache = cpu.new_cache(batch, seq + 1).unwrap();
    let mut gpu_cache = gpu.new_cache(batch, seq + 1).unwrap();
    let expected = cpu.prefill(&tokens, batch, seq, &mut cpu_cache).unwrap();
    let actual = gpu.prefill(&tokens, batch, seq, &mut gpu_cache).unwrap();
    let error = relative_error(&actual, &expected);
    assert!(error <= bound(DType::F32), "chunked prefill logits differ by {error:e}");

    let next = random_tokens(batch, arch.vocab_size as usize, SEED + 5);
    let error = relative_error(&gpu.decode(&next, &mut gpu_cache).unwrap(), &cpu.decode(&next, &mut cpu_cache).unwrap());
    assert!(error <= bound(DType::F32), "decode after chunked prefill differs by {error:e}");
}

/// A prefill of 700 tokens at head_dim 64, in two chunks of 350, matches the CPU. On llvmpipe
/// the second chunk attends over more keys than one pass of its loop budget covers (about
/// 440), so the model must switch that layer's attention to key passes with state scratch.
#[test]
fn long_prefill_matches_cpu() {
    let Some(ctx) = gpu_for_tests("long_prefill_matches_cpu") else { return };
    let text = r#"{"vocab_size": 50, "max_seq_len": 768, "d_model": 128, "n_layers": 2, "n_heads": 2,
        "n_kv_heads": 1, "d_ff": 96, "ffn": "gelu", "norm": "layernorm", "pos": "learned"}"#;
    let arch = Architecture::from_json(text).unwrap();
    let weights = Weights::random(&arch, SEED).unwrap();
    let mut gpu = GpuModel::new(Arc::clone(&ctx), &weights, DType::F32).unwrap();
    gpu.set_max_chunk_tokens(Some(350));
    let mut cpu = CpuModel::with_kernels(weights, KernelMode::Reference);
    let (batch, seq) = (1, 700);
    let tokens = random_tokens(batch * seq, arch.vocab_size as usize, SEED);
    let mut cpu_cache = cpu.new_cache(batch, seq).unwrap();
    let mut gpu_cache = gpu.new_cache(batch, seq).unwrap();
    let expected = cpu.prefill(&tokens, batch, seq, &mut cpu_cache).unwrap();
    let actual = gpu.prefill(&tokens, batch, seq, &mut gpu_cache).unwrap();
    let error = relative_error(&actual, &expected);
    assert!(error <= bound(DType::F32), "prefill of {seq} tokens: logits differ by {error:e}");
}

#[test]
fn bench_gpu_reports_latency_and_memory() {
    let Some(ctx) = gpu_for_tests("bench_gpu_reports_latency_and_memory") else { return };
    let arch = small_arch("swiglu", "rmsnorm", "rope", false, false);
    let weight_bytes = Weights::bytes_for(&arch);
    for mode in [Mode::Prefill, Mode::Decode] {
        let result = bench_gpu(&ctx, &arch, mode, 2, 16, DType::F32, 3, 10, SEED).unwrap();
        assert_eq!(result.runs, 10);
        assert_eq!(result.backend, "gpu");
        assert!(result.median_ns > 0.0, "{mode:?}: median {}", result.median_ns);
        assert!(result.p10_ns <= result.median_ns, "{mode:?}: p10 above the median");
        assert!(result.median_ns <= result.p90_ns, "{mode:?}: median above p90");
        assert!(result.peak_memory_bytes > weight_bytes, "{mode:?}: peak memory {} below the weights' {weight_bytes}", result.peak_memory_bytes);
    }
}

#[test]
fn invalid_inputs_are_rejected() {
    let Some(ctx) = gpu_for_tests("invalid_inputs_are_rejected") else { return };
    let arch = small_arch("gelu", "layernorm", "learned", true, true);
    let weights = Weights::random(&arch, SEED).unwrap();
    let mut gpu = GpuModel::new(Arc::clone(&ctx), &weights, DType::F32).unwrap();
    let mut cache = gpu.new_cache(1, 4).unwrap();

    let error = gpu.prefill(&[1, 2, 500], 1, 3, &mut cache).unwrap_err().to_string();
    assert!(error.contains("token id 500"), "{error}");
    let error = gpu.prefill(&[1, 2, 3, 4, 5], 1, 5, &mut cache).unwrap_err().to_string();
    assert!(error.contains("allocate a matching cache"), "{error}");
    let error = bench_gpu(&ctx, &arch, Mode::Prefill, 1, 65, DType::F32, 3, 10, SEED).unwrap_err().to_string();
    assert!(error.contains("max_seq_len (64)"), "{error}");
}
