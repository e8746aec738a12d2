//! [`CpuOpTimer`]: times the fast CPU kernels (`crate::kernels::*::cpu`) with the wall clock,
//! called exactly as the CPU model calls them (weights stored `[n, k]`, so matmul runs with
//! `transpose_b`).
//!
//! Each run is timed on its own. Ops that work in place (activations, RoPE, residual add) get
//! their input restored before every run, outside the timed region, so repeated application
//! cannot drift into denormal values that would slow the kernel down.
//!
//! Matmul weights are read cold, as in a forward pass, where every layer has its own weights and
//! a model's weights exceed the last-level cache. The timer cycles through enough copies of the
//! weight matrix to cover four times the last-level cache, so no run finds its weights cached
//! by the run before.

use super::ops::{Op, OpKind};
use super::table::DeviceInfo;
use super::timer::{OpTimer, PROFILE_VOCAB};
use super::CostError;
use crate::arch::Dtype;
use crate::kernels::attention::cpu::{self as attention, AttentionShape};
use crate::kernels::{activation::cpu as activation, embedding::cpu as embedding, matmul::cpu as matmul};
use crate::kernels::{norm::cpu as norm, rope::cpu as rope};
use crate::stats::TimingStats;
use std::time::Instant;

/// Wall-clock timer of the fast CPU kernels, f32 only.
#[derive(Debug, Default)]
pub struct CpuOpTimer {
    seed: u64,
}

impl CpuOpTimer {
    pub fn new() -> CpuOpTimer {
        CpuOpTimer { seed: 0x5eed }
    }

    fn random(&mut self, len: usize) -> Vec<f32> {
        random_values(&mut self.seed, len)
    }
}

/// Returns deterministic values uniform in [-1, 1), different for each call with the same
/// `seed` state, which it advances.
pub(super) fn random_values(seed: &mut u64, len: usize) -> Vec<f32> {
    *seed = seed.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
    let mut state = *seed;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Times `run` after `warmup` untimed calls; `reset` runs before every call, untimed. `run`
/// gets the call's index, counting warm-up calls.
fn time_each(warmup: usize, runs: usize, mut reset: impl FnMut(), mut run: impl FnMut(usize)) -> TimingStats {
    for i in 0..warmup {
        reset();
        run(i);
    }
    let mut samples = Vec::with_capacity(runs.max(1));
    for i in 0..runs.max(1) {
        reset();
        let start = Instant::now();
        run(warmup + i);
        samples.push(start.elapsed().as_nanos() as f64);
    }
    // Instant has nanosecond resolution on Linux, but a very fast op can still read 0 ns.
    for s in &mut samples {
        *s = s.max(1.0);
    }
    TimingStats::from_samples(&samples).expect("at least one sample")
}

fn to_usize(op: &Op) -> Vec<usize> {
    op.dims.iter().map(|&d| d as usize).collect()
}

impl OpTimer for CpuOpTimer {
    fn device_info(&self) -> DeviceInfo {
        DeviceInfo {
            name: crate::device::cpu_model_name(),
            backend: "cpu".into(),
            driver: String::new(),
            device_type: "cpu".into(),
            features: cpu_features(),
            threads: Some(rayon::current_num_threads()),
            pinned_threads: Some(crate::device::cpu_workers_pinned()),
        }
    }

    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn includes_dispatch_overhead(&self) -> bool {
        true
    }

    fn time_op(&mut self, op: &Op, warmup: usize, runs: usize) -> Result<TimingStats, CostError> {
        let d = to_usize(op);
        let stats = match op.kind {
            OpKind::Matmul => {
                let (m, n, k) = (d[0], d[1], d[2]);
                let a = self.random(m * k);
                let copies = cold_copies(n * k);
                let weights: Vec<Vec<f32>> = (0..copies).map(|_| self.random(n * k)).collect();
                let mut out = vec![0.0f32; m * n];
                time_each(warmup, runs, || {}, |i| matmul::matmul_into(&mut out, &a, &weights[i % copies], None, m, n, k, true))
            }
            OpKind::AttentionPrefill => {
                let (batch, seq, n_heads, n_kv_heads, head_dim) = (d[0], d[1], d[2], d[3], d[4]);
                let shape = AttentionShape { batch, n_heads, n_kv_heads, head_dim };
                let q = self.random(batch * seq * n_heads * head_dim);
                let (k, v) = (self.random(batch * seq * n_kv_heads * head_dim), self.random(batch * seq * n_kv_heads * head_dim));
                let mut out = vec![0.0f32; q.len()];
                time_each(warmup, runs, || {}, |_| attention::attention_prefill_into(&mut out, &q, &k, &v, shape, seq, seq))
            }
            OpKind::AttentionDecode => {
                let (batch, cache_len, n_heads, n_kv_heads, head_dim) = (d[0], d[1], d[2], d[3], d[4]);
                let shape = AttentionShape { batch, n_heads, n_kv_heads, head_dim };
                let q = self.random(batch * n_heads * head_dim);
                let kv_len = batch * cache_len * n_kv_heads * head_dim;
                let (k, v) = (self.random(kv_len), self.random(kv_len));
                let mut out = vec![0.0f32; q.len()];
                time_each(warmup, runs, || {}, |_| attention::attention_decode_into(&mut out, &q, &k, &v, shape, cache_len, cache_len))
            }
            OpKind::Rmsnorm | OpKind::Layernorm => {
                let (rows, cols) = (d[0], d[1]);
                let x = self.random(rows * cols);
                let (weight, bias) = (vec![1.0f32; cols], vec![0.0f32; cols]);
                let mut out = vec![0.0f32; rows * cols];
                let layer = op.kind == OpKind::Layernorm;
                time_each(warmup, runs, || {}, |_| {
                    if layer {
                        norm::layernorm(&mut out, &x, &weight, &bias, rows, cols, norm::NORM_EPS)
                    } else {
                        norm::rmsnorm(&mut out, &x, &weight, rows, cols, norm::NORM_EPS)
                    }
                })
            }
            OpKind::Gelu => {
                let source = self.random(d[0] * d[1]);
                let mut x = source.clone();
                time_each_restoring(warmup, runs, &source, &mut x, activation::gelu_tanh)
            }
            OpKind::Relu => {
                let source = self.random(d[0] * d[1]);
                let mut x = source.clone();
                time_each_restoring(warmup, runs, &source, &mut x, activation::relu)
            }
            OpKind::Swiglu => {
                let source = self.random(d[0] * d[1]);
                let up = self.random(d[0] * d[1]);
                let mut gate = source.clone();
                time_each_restoring(warmup, runs, &source, &mut gate, |gate| activation::swiglu_in_place(gate, &up))
            }
            OpKind::Rope => {
                let (tokens, heads, head_dim) = (d[0], d[1], d[2]);
                let source = self.random(tokens * heads * head_dim);
                let positions: Vec<u32> = (0..tokens as u32).collect();
                let mut x = source.clone();
                time_each_restoring(warmup, runs, &source, &mut x, |x| rope::rope(x, &positions, tokens, heads, head_dim, rope::ROPE_THETA))
            }
            OpKind::Embedding => {
                let (rows, cols) = (d[0], d[1]);
                let vocab = PROFILE_VOCAB;
                let table = self.random(vocab * cols);
                let ids: Vec<u32> = (0..rows).map(|i| ((i * 7919) % vocab) as u32).collect();
                let mut out = vec![0.0f32; rows * cols];
                let mut failure = None;
                let stats = time_each(warmup, runs, || {}, |_| {
                    if let Err(e) = embedding::embedding(&mut out, &table, &ids, cols) {
                        failure = Some(e.to_string());
                    }
                });
                if let Some(message) = failure {
                    return Err(CostError::Timing { op: op.to_string(), message });
                }
                stats
            }
            OpKind::ResidualAdd => {
                let source = self.random(d[0] * d[1]);
                let b = self.random(d[0] * d[1]);
                let mut a = source.clone();
                time_each_restoring(warmup, runs, &source, &mut a, |a| embedding::residual_add(a, &b))
            }
        };
        Ok(stats)
    }

    fn time_dispatch_overhead(&mut self, warmup: usize, runs: usize) -> Result<TimingStats, CostError> {
        self.time_op(&Op::rows_cols(OpKind::ResidualAdd, 1, 1), warmup, runs)
    }
}

/// Times an in-place op on `buffer`, copying `source` back into it before every run.
fn time_each_restoring(warmup: usize, runs: usize, source: &[f32], buffer: &mut [f32], mut run: impl FnMut(&mut [f32])) -> TimingStats {
    let buffer = std::cell::RefCell::new(buffer);
    time_each(
        warmup,
        runs,
        || buffer.borrow_mut().copy_from_slice(source),
        |_| run(&mut buffer.borrow_mut()),
    )
}

/// Copies of a weight matrix of `len` f32 values that together cover four times the last-level
/// cache (one copy when the matrix alone is larger).
fn cold_copies(len: usize) -> usize {
    let bytes = (len * std::mem::size_of::<f32>()).max(1);
    (4 * last_level_cache_bytes()).div_ceil(bytes).max(1)
}

/// Size of the largest CPU cache from sysfs. NOTE: 32 MiB is assumed where sysfs has no cache
/// information (non-Linux systems, some containers).
fn last_level_cache_bytes() -> usize {
    static BYTES: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    *BYTES.get_or_init(|| {
        (0..8)
            .filter_map(|i| std::fs::read_to_string(format!("/sys/devices/system/cpu/cpu0/cache/index{i}/size")).ok())
            .filter_map(|text| parse_cache_size(text.trim()))
            .max()
            .unwrap_or(32 << 20)
    })
}

/// Parses sysfs cache sizes such as `8192K` or `32M`.
fn parse_cache_size(text: &str) -> Option<usize> {
    let (digits, unit) = text.split_at(text.find(|c: char| !c.is_ascii_digit()).unwrap_or(text.len()));
    let value: usize = digits.parse().ok()?;
    match unit {
        "" => Some(value),
        "K" => Some(value << 10),
        "M" => Some(value << 20),
        "G" => Some(value << 30),
        _ => None,
    }
}

/// SIMD features of the CPU that decide kernel speed, from `/proc/cpuinfo` (empty elsewhere).
fn cpu_features() -> Vec<String> {
    let text = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let flags: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("flags") || l.starts_with("Features"))
        .and_then(|l| l.split(':').nth(1))
        .map(|s| s.split_whitespace().collect())
        .unwrap_or_default();
    ["sse4_2", "avx", "avx2", "fma", "f16c", "avx512f", "avx512_bf16", "amx_tile", "neon", "asimd"]
        .into_iter()
        .filter(|f| flags.contains(f))
        .map(String::from)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_sizes_parse() {
        assert_eq!(parse_cache_size("8192K"), Some(8 << 20));
        assert_eq!(parse_cache_size("32M"), Some(32 << 20));
        assert_eq!(parse_cache_size("512"), Some(512));
        assert_eq!(parse_cache_size("big"), None);
    }

    #[test]
    fn cold_copies_cover_the_cache() {
        // Lengths count f32 values of 4 bytes.
        let llc = last_level_cache_bytes();
        assert_eq!(cold_copies(llc / 4), 4);
        assert_eq!(cold_copies(llc / 2), 2);
        assert_eq!(cold_copies(4 * llc), 1);
    }

    #[test]
    fn every_op_kind_times() {
        let mut timer = CpuOpTimer::new();
        let ops = crate::cost::ops::one_small_op_of_each_kind();
        assert_eq!(ops.len(), OpKind::ALL.len());
        for op in &ops {
            let stats = timer.time_op(op, 1, 3).unwrap();
            assert_eq!(stats.runs, 3, "{op}");
            assert!(stats.median_ns >= 1.0, "{op}: {stats:?}");
            assert!(stats.p10_ns <= stats.p90_ns, "{op}: {stats:?}");
        }
        assert!(timer.time_dispatch_overhead(1, 5).unwrap().median_ns > 0.0);
    }
}
