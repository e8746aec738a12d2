//! Runs GPT-2-small-shaped decode with a KV cache of 4096 positions and prefill at batch 8 x
//! 2048 tokens on the GPU, within the device's binding limits, and prints latencies and the
//! peak device memory the model allocated.
//!
//! GPT-2 small has max_seq_len 1024, so the example raises it to 4097 (the learned position
//! table grows to match); every other dimension is GPT-2 small's. Prefill activations at
//! batch 8 x 2048 exceed a 128 MiB storage binding, so prefill runs in chunks of tokens (see
//! `alphanas::model::gpu`).
//!
//! Usage: `WGPU_BACKEND=vulkan cargo run --release --example gpt2_limits -- [RUNS] [DTYPE]`.
//! RUNS (default 1) is the number of timed prefill runs; a prefill of 64 tokens before them
//! builds the pipelines. DTYPE is f32 (default) or f16. Decode uses the crate's minimum of 3
//! warm-ups and 10 runs. On lavapipe one full prefill takes minutes.

use std::sync::Arc;
use std::time::Instant;

use alphanas::arch::presets::gpt2_small;
use alphanas::device::{shared_gpu, DType, GpuContext};
use alphanas::model::gpu::{bench_gpu, GpuModel};
use alphanas::model::{random_tokens, Mode, Weights};

const SEED: u64 = 7;

fn main() -> alphanas::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args().skip(1);
    let runs: usize = match args.next() {
        Some(text) => text.parse().ok().filter(|&n| n > 0).ok_or_else(|| alphanas::Error::Invalid(format!("RUNS ({text}) must be a positive integer")))?,
        None => 1,
    };
    let dtype = match args.next().as_deref() {
        None | Some("f32") => DType::F32,
        Some("f16") => DType::F16,
        Some(other) => return Err(alphanas::Error::Invalid(format!("dtype ({other}) must be f32 or f16"))),
    };

    let ctx = shared_gpu()?;
    let mut arch = gpt2_small();
    arch.max_seq_len = 4097;
    println!("device: {} ({:?})", ctx.info.name, ctx.info.backend);
    println!("max_storage_buffer_binding_size: {} bytes", ctx.limits.max_storage_buffer_binding_size);
    println!("architecture: {} ({})", arch.summary(), dtype.name());

    let decode = bench_gpu(&ctx, &arch, Mode::Decode, 1, 4096, dtype, 3, 10, SEED)?;
    println!(
        "decode, batch 1, cache 4096: median {:.1} ms (p10 {:.1}, p90 {:.1}, {} runs), peak memory {:.1} MiB",
        decode.latency_ms,
        decode.p10_ns / 1e6,
        decode.p90_ns / 1e6,
        decode.runs,
        decode.peak_memory_bytes as f64 / (1 << 20) as f64
    );

    prefill(&ctx, &arch, dtype, 8, 2048, runs)
}

/// Times `runs` prefills by wall clock (upload of the token ids, the recorded pass, and the
/// download of the logits), because one run takes minutes on lavapipe and `bench_gpu` always
/// does at least 13. A short prefill first builds the pipelines outside the timed runs.
fn prefill(ctx: &Arc<GpuContext>, arch: &alphanas::Architecture, dtype: DType, batch: usize, seq: usize, runs: usize) -> alphanas::Result<()> {
    let weights = Weights::random(arch, SEED)?;
    let mut model = GpuModel::new(Arc::clone(ctx), &weights, dtype)?;
    let tokens = random_tokens(batch * seq, weights.vocab_size, SEED);
    drop(weights);
    let mut cache = model.new_cache(batch, seq)?;
    let chunk = model.max_chunk_tokens(batch).min(seq);
    println!("prefill, batch {batch} x {seq}: chunks of up to {chunk} tokens ({} chunks)", seq.div_ceil(chunk));

    let mut warmup_cache = model.new_cache(batch, 64)?;
    model.prefill(&tokens[..batch * 64], batch, 64, &mut warmup_cache)?;
    drop(warmup_cache);

    let mut samples_ms = Vec::with_capacity(runs);
    for run in 1..=runs {
        cache.clear();
        let start = Instant::now();
        let logits = model.prefill(&tokens, batch, seq, &mut cache)?;
        let elapsed_ms = start.elapsed().as_secs_f64() * 1e3;
        if !logits.iter().all(|x| x.is_finite()) {
            return Err(alphanas::Error::Other("prefill produced non-finite logits".into()));
        }
        samples_ms.push(elapsed_ms);
        println!("  run {run}: {elapsed_ms:.0} ms");
    }
    samples_ms.sort_by(f64::total_cmp);
    println!(
        "prefill, batch {batch} x {seq}: median {:.0} ms over {runs} runs, peak memory {:.1} MiB",
        samples_ms[samples_ms.len() / 2],
        model.allocated_bytes(&cache) as f64 / (1 << 20) as f64
    );
    Ok(())
}
