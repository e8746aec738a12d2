//! [`GpuOpTimer`]: times the crate's WGSL kernels (`crate::kernels::*::gpu`) on a wgpu device,
//! recorded exactly as [`crate::model::gpu::GpuModel`] records them: weights stored `[n, k]` (matmul
//! with `transpose_b`), RoPE in place, decode attention through its split and reduce passes.
//!
//! Timing goes through [`crate::device::time_gpu_with_source`]: pass-level timestamp queries
//! where the device has them, else submit plus wait on the wall clock.
//!
//! **Repetitions.** A forward pass submits all its ops at once, so what one op adds to it is its
//! execution plus the gap before the next dispatch, not a whole submit-and-wait. Each timed run
//! therefore records the op `reps` times in one submission and the entry is the run's time
//! divided by `reps`. `reps` is chosen per shape so a run lasts about [`TARGET_RUN_NS`], at most
//! [`MAX_REPS`]. Entries thus include the per-dispatch cost, as CPU entries do, and the table records
//! this (`entries_include_overhead`). Large ops run once per submission; with wall-clock timing
//! their entries then also hold one submit-and-wait, which calibration absorbs.
//!
//! **Cold weights.** As on the CPU, matmul cycles through copies of its weight matrix that
//! together cover [`COLD_BYTES`]. No repetition then finds its weights in the GPU's last-level
//! cache from the one before, as in a forward pass where every layer has its own weights.

use super::cpu_timer::random_values;
use super::ops::{Op, OpKind};
use super::table::DeviceInfo;
use super::timer::{OpTimer, PROFILE_VOCAB};
use super::CostError;
use crate::arch::Dtype;
use crate::device::{time_gpu_with_source, DType, GpuContext, GpuTensor, Recorder};
use crate::kernels::attention::gpu::{self as attention, DecodeShape, PrefillShape};
use crate::kernels::rope::gpu::{Positions, RopeShape};
use crate::kernels::{activation::gpu as activation, embedding::gpu as embedding, matmul::gpu as matmul};
use crate::kernels::{norm::gpu as norm, rope::gpu as rope};
use crate::stats::TimingStats;
use std::sync::Arc;
use std::time::Instant;

/// Wall time one timed run should last: long enough that a submit-and-wait is a small part of
/// it when timestamps are missing, short enough to keep profiling fast.
pub const TARGET_RUN_NS: f64 = 1.0e6;

/// Maximum repetitions of one op in a timed run.
pub const MAX_REPS: usize = 32;

/// Bytes of weight copies a matmul cycles through. NOTE: assumes the GPU's last-level cache is
/// at most 64 MiB (the H100 and H200 have 50 and 60 MB of L2; lavapipe uses the host's cache).
pub const COLD_BYTES: usize = 256 << 20;

/// Maximum weight copies a matmul allocates, whatever their size.
const MAX_COPIES: usize = 16;

/// Timer of the GPU kernels in f32, or in f16 where the device has `SHADER_F16`.
#[derive(Debug)]
pub struct GpuOpTimer {
    ctx: Arc<GpuContext>,
    dtype: Dtype,
    device_dtype: DType,
    seed: u64,
}

impl GpuOpTimer {
    /// Opens a timer on `ctx` for `dtype` (f32, or f16 when the device supports it).
    pub fn new(ctx: Arc<GpuContext>, dtype: Dtype) -> Result<GpuOpTimer, CostError> {
        let device_dtype = match dtype {
            Dtype::F32 => DType::F32,
            Dtype::F16 if ctx.has_f16() => DType::F16,
            Dtype::F16 => {
                return Err(CostError::Invalid(format!(
                    "{} has no SHADER_F16, so f16 kernels cannot be profiled on it; use --dtype f32",
                    ctx.info.name
                )))
            }
            other => {
                return Err(CostError::Invalid(format!("the GPU kernels run in f32 or f16, not {other}; use --dtype f32 or f16")));
            }
        };
        Ok(GpuOpTimer { ctx, dtype, device_dtype, seed: 0x6b0d })
    }

    /// Uploads `len` deterministic values in [-1, 1) in the timer's dtype.
    fn tensor(&mut self, len: usize) -> crate::Result<GpuTensor> {
        let values = random_values(&mut self.seed, len.max(1));
        Ok(GpuTensor::from_f32(&self.ctx, &values, &[values.len()], self.device_dtype)?)
    }

    fn empty(&self, len: usize) -> crate::Result<GpuTensor> {
        Ok(GpuTensor::empty(&self.ctx, &[len.max(1)], self.device_dtype)?)
    }

    /// Times `record`, which records one repetition and gets a counter of the repetitions
    /// recorded so far, and returns per-repetition statistics.
    fn time_reps(&self, warmup: usize, runs: usize, mut record: impl FnMut(&mut Recorder<'_>, usize) -> crate::Result<()>) -> crate::Result<TimingStats> {
        let ctx = &self.ctx;
        let mut counter = 0usize;
        // One call builds the pipelines; the second, on the wall clock, estimates a repetition.
        let mut estimate_ns = 0.0;
        for _ in 0..2 {
            let mut rec = Recorder::new(ctx);
            record(&mut rec, counter)?;
            counter += 1;
            let start = Instant::now();
            rec.submit()?;
            ctx.wait()?;
            estimate_ns = start.elapsed().as_nanos() as f64;
        }
        let reps = reps_for(estimate_ns);
        let (stats, source) = time_gpu_with_source(ctx, warmup, runs, |rec| {
            for _ in 0..reps {
                record(rec, counter)?;
                counter += 1;
            }
            Ok(())
        })?;
        log::trace!("{reps} repetitions per run, timed by {source:?}: {:.0} ns per run", stats.median_ns);
        let per_rep = |ns: f64| ns / reps as f64;
        Ok(TimingStats { median_ns: per_rep(stats.median_ns), p10_ns: per_rep(stats.p10_ns), p90_ns: per_rep(stats.p90_ns), runs: stats.runs })
    }

    fn time_kind(&mut self, op: &Op, warmup: usize, runs: usize) -> crate::Result<TimingStats> {
        let d: Vec<usize> = op.dims.iter().map(|&x| x as usize).collect();
        match op.kind {
            OpKind::Matmul => {
                let (m, n, k) = (d[0], d[1], d[2]);
                let a = self.tensor(m * k)?;
                let copies = (COLD_BYTES / (n * k * self.device_dtype.size()).max(1)).clamp(1, MAX_COPIES);
                // A B larger than one storage binding (a large vocabulary's output head) is
                // split into blocks of its n rows, each with its own slice of C. The model splits
                // its head the same way (`model::gpu`), so the op is timed as the model runs it.
                let blocks = crate::kernels::row_blocks(&self.ctx, "the timed matmul's B", n, k * self.device_dtype.size())?;
                let mut parts = Vec::with_capacity(blocks.len());
                for block in &blocks {
                    let weights = (0..copies).map(|_| self.tensor(block.rows * k)).collect::<crate::Result<Vec<_>>>()?;
                    parts.push((block.rows, weights, self.empty(m * block.rows)?));
                }
                self.time_reps(warmup, runs, |rec, i| {
                    for (rows, weights, out) in &parts {
                        matmul::record(rec, &a, &weights[i % copies], None, out, m, *rows, k, true)?;
                    }
                    Ok(())
                })
            }
            OpKind::AttentionPrefill => {
                let (batch, seq, n_heads, n_kv_heads, head_dim) = (d[0], d[1], d[2], d[3], d[4]);
                let shape = PrefillShape { batch, n_q: seq, kv_len: seq, kv_capacity: seq, n_heads, n_kv_heads, head_dim, q_offset: 0 };
                let q = self.tensor(batch * seq * n_heads * head_dim)?;
                let (k, v) = (self.tensor(batch * seq * n_kv_heads * head_dim)?, self.tensor(batch * seq * n_kv_heads * head_dim)?);
                let out = self.empty(batch * seq * n_heads * head_dim)?;
                let scratch = attention::PrefillScratch::new(&self.ctx, &shape, self.device_dtype)?;
                self.time_reps(warmup, runs, |rec, _| attention::record_prefill(rec, &shape, &q, &k, &v, &out, &scratch))
            }
            OpKind::AttentionDecode => {
                let (batch, cache_len, n_heads, n_kv_heads, head_dim) = (d[0], d[1], d[2], d[3], d[4]);
                let shape = DecodeShape { batch, cache_len, cache_capacity: cache_len, n_heads, n_kv_heads, head_dim };
                let q = self.tensor(batch * n_heads * head_dim)?;
                let kv_len = batch * cache_len * n_kv_heads * head_dim;
                let (k, v) = (self.tensor(kv_len)?, self.tensor(kv_len)?);
                let out = self.empty(batch * n_heads * head_dim)?;
                let scratch = attention::DecodeScratch::new(&self.ctx, &shape)?;
                self.time_reps(warmup, runs, |rec, _| attention::record_decode(rec, &shape, &q, &k, &v, &out, &scratch))
            }
            OpKind::Rmsnorm | OpKind::Layernorm => {
                let (rows, cols) = (d[0], d[1]);
                let x = self.tensor(rows * cols)?;
                let (weight, bias) = (self.tensor(cols)?, self.tensor(cols)?);
                let out = self.empty(rows * cols)?;
                let eps = crate::kernels::norm::cpu::NORM_EPS;
                if op.kind == OpKind::Layernorm {
                    self.time_reps(warmup, runs, |rec, _| norm::record_layernorm(rec, &x, &weight, &bias, &out, rows, cols, eps))
                } else {
                    self.time_reps(warmup, runs, |rec, _| norm::record_rmsnorm(rec, &x, &weight, &out, rows, cols, eps))
                }
            }
            OpKind::Gelu | OpKind::Relu | OpKind::Swiglu => {
                let len = d[0] * d[1];
                let (x, up, out) = (self.tensor(len)?, self.tensor(len)?, self.empty(len)?);
                match op.kind {
                    OpKind::Gelu => self.time_reps(warmup, runs, |rec, _| activation::record_gelu(rec, &x, &out)),
                    OpKind::Relu => self.time_reps(warmup, runs, |rec, _| activation::record_relu(rec, &x, &out)),
                    _ => self.time_reps(warmup, runs, |rec, _| activation::record_swiglu(rec, &x, &up, &out)),
                }
            }
            OpKind::Rope => {
                let (tokens, n_heads, head_dim) = (d[0], d[1], d[2]);
                // In place, as the model applies it; rotations keep the values bounded, so
                // repeated application cannot drift into denormals.
                let x = self.tensor(tokens * n_heads * head_dim)?;
                let shape = RopeShape { n_tokens: tokens, n_heads, head_dim, theta: crate::kernels::rope::cpu::ROPE_THETA };
                self.time_reps(warmup, runs, |rec, _| rope::record(rec, &x, Positions::Offset(0), None, shape))
            }
            OpKind::Embedding => {
                let (rows, cols) = (d[0], d[1]);
                let table = self.tensor(PROFILE_VOCAB * cols)?;
                let ids: Vec<u32> = (0..rows).map(|i| ((i * 7919) % PROFILE_VOCAB) as u32).collect();
                let ids = GpuTensor::from_u32(&self.ctx, &ids, &[rows])?;
                let out = self.empty(rows * cols)?;
                self.time_reps(warmup, runs, |rec, _| embedding::record_gather(rec, &table, &ids, &out, PROFILE_VOCAB, cols))
            }
            OpKind::ResidualAdd => {
                let len = d[0] * d[1];
                let (a, b, out) = (self.tensor(len)?, self.tensor(len)?, self.empty(len)?);
                self.time_reps(warmup, runs, |rec, _| embedding::record_residual_add(rec, &a, &b, &out))
            }
        }
    }
}

/// Repetitions per timed run for an op whose single submit-and-wait took `estimate_ns`.
fn reps_for(estimate_ns: f64) -> usize {
    if estimate_ns.is_nan() || estimate_ns <= 0.0 {
        return MAX_REPS;
    }
    ((TARGET_RUN_NS / estimate_ns).ceil() as usize).clamp(1, MAX_REPS)
}

impl OpTimer for GpuOpTimer {
    fn device_info(&self) -> DeviceInfo {
        let info = &self.ctx.info;
        let mut features = Vec::new();
        for (flag, name) in [
            (wgpu::Features::SHADER_F16, "shader_f16"),
            (wgpu::Features::TIMESTAMP_QUERY, "timestamp_query"),
            (wgpu::Features::SUBGROUP, "subgroup"),
        ] {
            if self.ctx.features.contains(flag) {
                features.push(name.to_string());
            }
        }
        DeviceInfo {
            name: info.name.clone(),
            backend: info.backend.to_str().to_string(),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            device_type: crate::device::device_type_name(info.device_type).to_string(),
            features,
            threads: None,
            pinned_threads: None,
        }
    }

    fn dtype(&self) -> Dtype {
        self.dtype
    }

    fn includes_dispatch_overhead(&self) -> bool {
        true
    }

    fn time_op(&mut self, op: &Op, warmup: usize, runs: usize) -> Result<TimingStats, CostError> {
        self.time_kind(op, warmup, runs).map_err(|e| CostError::Timing { op: op.to_string(), message: e.to_string() })
    }

    fn time_dispatch_overhead(&mut self, warmup: usize, runs: usize) -> Result<TimingStats, CostError> {
        self.time_op(&Op::rows_cols(OpKind::ResidualAdd, 1, 1), warmup, runs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reps_cover_the_target() {
        assert_eq!(reps_for(2.0 * TARGET_RUN_NS), 1);
        assert_eq!(reps_for(TARGET_RUN_NS / 4.0), 4);
        assert_eq!(reps_for(1.0), MAX_REPS);
        assert_eq!(reps_for(0.0), MAX_REPS);
        assert_eq!(reps_for(f64::NAN), MAX_REPS);
    }

    #[test]
    fn every_op_kind_times_on_the_gpu() {
        let Some(ctx) = crate::device::gpu_for_tests("every_op_kind_times_on_the_gpu") else { return };
        let mut dtypes = vec![Dtype::F32];
        if ctx.has_f16() {
            dtypes.push(Dtype::F16);
        }
        for dtype in dtypes {
            let mut timer = GpuOpTimer::new(Arc::clone(&ctx), dtype).unwrap();
            let ops = crate::cost::ops::one_small_op_of_each_kind();
            assert_eq!(ops.len(), OpKind::ALL.len());
            for op in &ops {
                let stats = timer.time_op(op, 1, 3).unwrap();
                assert!(stats.runs >= 3, "{op} {dtype}");
                assert!(stats.median_ns.is_finite(), "{op} {dtype}: {stats:?}");
                assert!(stats.median_ns > 0.0, "{op} {dtype}: {stats:?}");
                assert!(stats.p10_ns <= stats.median_ns, "{op} {dtype}: {stats:?}");
                assert!(stats.median_ns <= stats.p90_ns, "{op} {dtype}: {stats:?}");
            }
            let info = timer.device_info();
            assert_eq!(info.name, ctx.info.name);
            assert_ne!(info.backend, "cpu");
        }
    }

    #[test]
    fn matmul_beyond_one_binding_is_timed_in_blocks() {
        // A 1 MiB binding cap on a B of 5,000 × 100 f32 values (2 MB): the head-sized product
        // must be split as the model splits its output head, not rejected.
        if crate::device::gpu_for_tests("matmul_beyond_one_binding_is_timed_in_blocks").is_none() {
            return;
        }
        let ctx = crate::device::GpuContext::with_binding_limit(1 << 20).unwrap();
        assert!(ctx.check_binding("B", 5000 * 100 * 4).is_err(), "the cap must reject the whole B");
        let mut timer = GpuOpTimer::new(ctx, Dtype::F32).unwrap();
        let split = timer.time_op(&Op::matmul(1, 5000, 100), 1, 3).unwrap();
        assert!(split.median_ns.is_finite(), "{split:?}");
        assert!(split.median_ns > 0.0, "{split:?}");
    }

    #[test]
    fn matmul_time_grows_with_size() {
        let Some(ctx) = crate::device::gpu_for_tests("a_larger_matmul_takes_longer") else { return };
        let mut timer = GpuOpTimer::new(ctx, Dtype::F32).unwrap();
        let small = timer.time_op(&Op::matmul(4, 64, 64), 1, 5).unwrap();
        let large = timer.time_op(&Op::matmul(64, 512, 512), 1, 5).unwrap();
        assert!(large.median_ns > small.median_ns, "small {small:?}, large {large:?}");
    }
}
