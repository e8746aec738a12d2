//! Runs GPT-2-small-shaped decode with a KV cache of 4096 positions and prefill (batch 8 x
//! 2048 tokens by default) on the GPU within the device's binding limits, and prints
//! latencies and the peak device memory the model allocated.
//!
//! GPT-2 small has max_seq_len 1024, so the example raises it to 4097 (the learned position
//! table grows to match). Every other dimension is GPT-2 small's. Prefill activations at
//! batch 8 x 2048 exceed a 128 MiB storage binding, so prefill runs in chunks of tokens (see
//! `alphanas::model::gpu`). The example prints the chunk plan before running.
//!
//! Usage: `WGPU_BACKEND=vulkan cargo run --release --example gpt2_limits -- [RUNS] [DTYPE]
//! [PREFILL_BATCH] [PREFILL_SEQ]`. RUNS (default 3) is the number of timed runs of each mode
//! after one warm-up, timed by wall clock (token upload, the recorded pass and the logits
//! download). RUNS 0 runs each mode once without a warm-up and reports that cold pass. DTYPE
//! is f32 (default) or f16.
//!
//! After the timed prefills, the example runs the same prefill with the CPU model and checks
//! that the GPU's logits agree (within 1e-3 of the logit scale in f32, 3e-2 in f16, the bounds
//! of the model parity tests). On lavapipe, whose driver stops each shader invocation after
//! 65,535 loop iterations, the attention over long sequences runs in several key passes (see
//! `alphanas::kernels::attention::gpu`), and this check shows the result is complete.

use std::sync::Arc;
use std::time::Instant;

use alphanas::arch::presets::gpt2_small;
use alphanas::device::{shared_gpu, DType, GpuContext};
use alphanas::model::gpu::GpuModel;
use alphanas::model::{random_tokens, CpuModel, Weights};
use alphanas::{Error, Result};

const SEED: u64 = 7;
const DECODE_CACHE: usize = 4096;

fn parse_count(text: Option<String>, name: &str, default: usize, min: usize) -> Result<usize> {
    match text {
        None => Ok(default),
        Some(text) => text
            .parse()
            .ok()
            .filter(|&n| n >= min)
            .ok_or_else(|| Error::Invalid(format!("{name} ({text}) must be an integer of at least {min}"))),
    }
}

/// Returns whether pass `run` (0 is the warm-up) is timed: all but the warm-up, or the only
/// pass when `runs` is 0.
fn timed(run: usize, runs: usize) -> bool {
    run > 0 || runs == 0
}

/// Labels a report as a cold pass when there was no warm-up.
fn label(title: String, runs: usize) -> String {
    if runs == 0 {
        format!("{title} (one cold pass, no warm-up)")
    } else {
        title
    }
}

fn main() -> Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let runs = parse_count(args.next(), "RUNS", 3, 0)?;
    let dtype = match args.next().as_deref() {
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some(other) => return Err(Error::Invalid(format!("DTYPE ({other}) must be f32 or f16"))),
    };
    let prefill_batch = parse_count(args.next(), "PREFILL_BATCH", 8, 1)?;
    let prefill_seq = parse_count(args.next(), "PREFILL_SEQ", 2048, 1)?;

    let ctx = shared_gpu()?;
    let mut arch = gpt2_small();
    arch.max_seq_len = DECODE_CACHE as u64 + 1;
    println!("device: {} ({:?})", ctx.info.name, ctx.info.backend);
    println!("max_storage_buffer_binding_size: {} bytes", ctx.limits.max_storage_buffer_binding_size);
    println!("architecture: {} ({})", arch.summary(), dtype.name());

    let weights = Weights::random(&arch, SEED)?;
    let mut model = GpuModel::new(Arc::clone(&ctx), &weights, dtype)?;
    let vocab = weights.vocab_size;

    decode(&mut model, vocab, runs)?;
    let logits = prefill(&ctx, &mut model, vocab, prefill_batch, prefill_seq, runs)?;
    drop(model);
    check_against_cpu(weights, &logits, dtype, prefill_batch, prefill_seq)
}

/// Runs the prefill on the CPU and fails unless the GPU's last-position logits agree.
fn check_against_cpu(weights: Weights, gpu_logits: &[f32], dtype: DType, batch: usize, seq: usize) -> Result<()> {
    let tokens = random_tokens(batch * seq, weights.vocab_size, SEED);
    let mut cpu = CpuModel::new(weights);
    let mut cache = cpu.new_cache(batch, seq)?;
    let start = Instant::now();
    let cpu_logits = cpu.prefill(&tokens, batch, seq, &mut cache)?;
    let seconds = start.elapsed().as_secs_f64();

    let scale = cpu_logits.iter().fold(0.0f32, |m, x| m.max(x.abs())).max(1e-6);
    let diff = gpu_logits.iter().zip(&cpu_logits).fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    let bound = if dtype == DType::F16 { 3e-2 } else { 1e-3 };
    println!(
        "CPU check of the prefill ({seconds:.0} s on the CPU): max |gpu - cpu| = {diff:.3e}, {:.3e} of the logit scale {scale:.3} (bound {bound:e})",
        diff / scale
    );
    if diff / scale > bound {
        return Err(Error::Other(format!("the GPU prefill's logits differ from the CPU's by {:.3e} of the logit scale, over the bound {bound:e}", diff / scale)));
    }
    Ok(())
}

/// Prints the median of `samples_ms` and each sample.
fn report(title: &str, mut samples_ms: Vec<f64>, peak_bytes: u64) {
    let each: Vec<String> = samples_ms.iter().map(|ms| format!("{ms:.0}")).collect();
    samples_ms.sort_by(f64::total_cmp);
    println!(
        "{title}: median {:.0} ms over {} runs (runs: {} ms), peak memory {:.1} MiB",
        samples_ms[samples_ms.len() / 2],
        samples_ms.len(),
        each.join(", "),
        peak_bytes as f64 / (1u64 << 20) as f64
    );
}

/// Times decode steps of one sequence against a cache of `DECODE_CACHE` positions. The cache
/// is not filled by a prefill (it contains zeros), which does not change the work done.
fn decode(model: &mut GpuModel, vocab: usize, runs: usize) -> Result<()> {
    let mut cache = model.new_cache(1, DECODE_CACHE + 1)?;
    let token = random_tokens(1, vocab, SEED);
    let mut samples_ms = Vec::with_capacity(runs);
    // One warm-up and `runs` timed passes, or a single cold pass.
    let passes = if runs == 0 { 1 } else { runs + 1 };
    for run in 0..passes {
        cache.assume_filled(DECODE_CACHE)?;
        let start = Instant::now();
        let logits = model.decode(&token, &mut cache)?;
        let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
        if !logits.iter().all(|x| x.is_finite()) {
            return Err(Error::Other("decode produced non-finite logits".into()));
        }
        if timed(run, runs) {
            samples_ms.push(elapsed_ms);
        }
    }
    report(&label(format!("decode, batch 1, cache {DECODE_CACHE}"), runs), samples_ms, model.allocated_bytes(&cache));
    Ok(())
}

/// Times prefills of `batch` sequences of `seq` tokens from an empty cache and returns the
/// last pass's logits.
fn prefill(ctx: &GpuContext, model: &mut GpuModel, vocab: usize, batch: usize, seq: usize, runs: usize) -> Result<Vec<f32>> {
    let chunk = model.max_chunk_tokens(batch).min(seq);
    let n_chunks = seq.div_ceil(chunk);
    println!(
        "prefill, batch {batch} x {seq}: {n_chunks} chunks of up to {} tokens (binding limit {} MiB)",
        seq.div_ceil(n_chunks),
        ctx.limits.max_storage_buffer_binding_size >> 20
    );
    let tokens = random_tokens(batch * seq, vocab, SEED);
    let mut cache = model.new_cache(batch, seq)?;
    let mut samples_ms = Vec::with_capacity(runs);
    // One warm-up and `runs` timed passes, or a single cold pass.
    let passes = if runs == 0 { 1 } else { runs + 1 };
    let mut logits = Vec::new();
    for run in 0..passes {
        cache.clear();
        let start = Instant::now();
        logits = model.prefill(&tokens, batch, seq, &mut cache)?;
        let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
        if !logits.iter().all(|x| x.is_finite()) {
            return Err(Error::Other("prefill produced non-finite logits".into()));
        }
        if timed(run, runs) {
            samples_ms.push(elapsed_ms);
        }
    }
    report(&label(format!("prefill, batch {batch} x {seq}"), runs), samples_ms, model.allocated_bytes(&cache));
    Ok(logits)
}
