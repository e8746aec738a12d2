//! Timing of whole CPU forward passes, for `alphanas bench model`, cost tables and the
//! `measure` evaluator.

use std::time::Instant;

use serde::Serialize;

use super::{random_tokens, CpuModel, Mode, Weights};
use crate::stats::TimingStats;
use crate::{Architecture, Error, Result};

/// Fewest warm-up runs [`bench_cpu`] performs, whatever the caller asks for.
pub const MIN_WARMUP: usize = 3;
/// Fewest timed runs [`bench_cpu`] performs, whatever the caller asks for.
pub const MIN_RUNS: usize = 10;

/// Latency of one forward pass and the memory it held.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ModelBenchResult {
    pub median_ns: f64,
    pub p10_ns: f64,
    pub p90_ns: f64,
    pub runs: usize,
    /// The median in milliseconds.
    pub latency_ms: f64,
    /// Bytes of weights, KV cache, activation buffers and logits, as allocated.
    pub peak_memory_bytes: u64,
    /// Tokens processed per second at the median: `batch·seq` for prefill, `batch` for decode.
    pub tokens_per_s: f64,
    pub backend: String,
    pub dtype: String,
    pub mode: Mode,
    pub batch: usize,
    /// Prefill: tokens per sequence. Decode: positions attended, including the new token.
    pub seq: usize,
}

/// Times `runs` forward passes of `arch` on the CPU after `warmup` untimed ones, with random
/// weights and tokens drawn from `seed`. At least [`MIN_WARMUP`] and [`MIN_RUNS`] are done.
///
/// - `Mode::Prefill`: `batch` sequences of `seq` tokens from an empty cache.
/// - `Mode::Decode`: one token per sequence against a cache holding `seq - 1` positions, so
///   that `seq` positions are attended. The cache is filled with random values instead of a
///   prefill (see [`super::KvCache::fill_random`]) and reset to `seq - 1` before each run.
///
/// Weights, cache and buffers are built before the timed region.
///
/// # Errors
/// When `arch` is invalid, `batch` or `seq` is 0, `seq` exceeds the architecture's
/// `max_seq_len`, or the model does not fit in memory.
pub fn bench_cpu(arch: &Architecture, mode: Mode, batch: usize, seq: usize, warmup: usize, runs: usize, seed: u64) -> Result<ModelBenchResult> {
    arch.validate()?;
    if batch == 0 {
        return Err(Error::Invalid("batch (0) must be at least 1".into()));
    }
    if seq == 0 {
        return Err(Error::Invalid("seq (0) must be at least 1".into()));
    }
    if seq as u64 > arch.max_seq_len {
        return Err(Error::Invalid(format!(
            "seq ({seq}) exceeds max_seq_len ({}) of the architecture; use --seq {} or less",
            arch.max_seq_len, arch.max_seq_len
        )));
    }
    let warmup = warmup.max(MIN_WARMUP);
    let runs = runs.max(MIN_RUNS);

    log::info!("building CPU model {} (seed {seed})", arch.summary());
    let weights = Weights::random(arch, seed)?;
    let vocab_size = weights.vocab_size;
    let mut model = CpuModel::new(weights);
    let mut cache = model.new_cache(batch, seq)?;

    let mut samples_ns = Vec::with_capacity(runs);
    log::info!("timing {} at batch {batch}, seq {seq}: {warmup} warm-up and {runs} timed runs", mode.name());
    match mode {
        Mode::Prefill => {
            let tokens = random_tokens(batch * seq, vocab_size, seed);
            model.reserve_scratch(batch * seq)?;
            for i in 0..warmup + runs {
                cache.clear();
                let start = Instant::now();
                let logits = model.prefill(&tokens, batch, seq, &mut cache)?;
                let elapsed = start.elapsed();
                std::hint::black_box(&logits);
                if i >= warmup {
                    samples_ns.push(elapsed.as_nanos() as f64);
                }
            }
        }
        Mode::Decode => {
            let tokens = random_tokens(batch, vocab_size, seed);
            let past = seq - 1;
            cache.fill_random(past, seed)?;
            model.reserve_scratch(batch)?;
            let mut logits = vec![0.0f32; batch * vocab_size];
            for i in 0..warmup + runs {
                cache.truncate(past);
                let start = Instant::now();
                model.decode_into(&tokens, &mut cache, &mut logits)?;
                let elapsed = start.elapsed();
                std::hint::black_box(&logits);
                if i >= warmup {
                    samples_ns.push(elapsed.as_nanos() as f64);
                }
            }
        }
    }

    let stats = TimingStats::from_samples(&samples_ns).expect("at least MIN_RUNS samples");
    let tokens_per_run = match mode {
        Mode::Prefill => batch * seq,
        Mode::Decode => batch,
    };
    let result = ModelBenchResult {
        median_ns: stats.median_ns,
        p10_ns: stats.p10_ns,
        p90_ns: stats.p90_ns,
        runs: stats.runs,
        latency_ms: stats.median_ns / 1e6,
        peak_memory_bytes: model.peak_memory_bytes(&cache),
        tokens_per_s: tokens_per_run as f64 / (stats.median_ns / 1e9),
        backend: "cpu".into(),
        dtype: "f32".into(),
        mode,
        batch,
        seq,
    };
    log::debug!("{} median {:.3} ms over {} runs", mode.name(), result.latency_ms, result.runs);
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::presets;

    fn small() -> Architecture {
        Architecture { vocab_size: 300, max_seq_len: 64, ..presets::llama_tiny() }
    }

    #[test]
    fn prefill_and_decode_report_stats() {
        for mode in [Mode::Prefill, Mode::Decode] {
            let result = bench_cpu(&small(), mode, 2, 16, 0, 0, 1).unwrap();
            assert_eq!(result.runs, MIN_RUNS, "{mode:?}");
            assert!(result.p10_ns <= result.median_ns && result.median_ns <= result.p90_ns, "{result:?}");
            assert!(result.median_ns > 0.0, "{result:?}");
            assert!((result.latency_ms - result.median_ns / 1e6).abs() < 1e-12);
            let weights = Weights::bytes_for(&small());
            assert!(result.peak_memory_bytes > weights, "{mode:?}: peak {} <= weights {weights}", result.peak_memory_bytes);
        }
    }

    #[test]
    fn rejects_bad_sizes() {
        let err = bench_cpu(&small(), Mode::Decode, 1, 65, 0, 0, 1).unwrap_err().to_string();
        assert!(err.contains("seq (65) exceeds max_seq_len (64)"), "{err}");
        assert!(bench_cpu(&small(), Mode::Prefill, 0, 4, 0, 0, 1).is_err());
        assert!(bench_cpu(&small(), Mode::Prefill, 1, 0, 0, 0, 1).is_err());
    }

    #[test]
    fn decode_with_seq_one_uses_empty_cache() {
        let result = bench_cpu(&small(), Mode::Decode, 1, 1, 0, 0, 1).unwrap();
        assert_eq!(result.seq, 1);
    }
}
