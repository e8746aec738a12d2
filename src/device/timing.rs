//! Timing of recorded GPU work and of CPU closures.
//!
//! GPU time comes from timestamp queries written at the start and end of every compute pass
//! where the device has `TIMESTAMP_QUERY`: the time of one run is the last end minus the first
//! start, times `Queue::get_timestamp_period` (nanoseconds per tick). Some drivers return zeros
//! or readings that go backwards, so every reading is checked; on the first bad one the helper
//! logs one warning per process and measures the remaining runs by wall clock (submit, then
//! wait for the queue), which adds submission and synchronisation overhead to each sample.
//! Pipelines and buffers are built during the warm-up runs, outside the timed region.

use super::recorder::{submit_encoder, TimestampSlots};
use super::runtime::{read_mapped, BufferKind};
use super::{GpuContext, Recorder};
use crate::stats::TimingStats;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

/// Source of the samples of a [`time_gpu_with_source`] call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TimingSource {
    /// Pass-level timestamp queries.
    Timestamps,
    /// Host wall clock around submit and wait.
    WallClock,
}

/// Minimum number of untimed warm-up runs.
pub const MIN_WARMUP: usize = 3;
/// Minimum number of timed runs.
pub const MIN_RUNS: usize = 10;
/// Maximum number of warm-up or timed runs a command accepts.
pub const MAX_RUNS: usize = 100_000;

/// Checks the `--warmup` and `--runs` of a timing command against [`MIN_WARMUP`],
/// [`MIN_RUNS`] and [`MAX_RUNS`].
pub fn check_run_counts(warmup: usize, runs: usize) -> crate::Result<()> {
    if runs < MIN_RUNS {
        return Err(crate::Error::Invalid(format!(
            "--runs ({runs}) must be at least {MIN_RUNS}, so that the median, p10 and p90 rest on enough samples"
        )));
    }
    if warmup < MIN_WARMUP {
        return Err(crate::Error::Invalid(format!(
            "--warmup ({warmup}) must be at least {MIN_WARMUP}, so that caches and pipelines are warm before timing"
        )));
    }
    if runs > MAX_RUNS || warmup > MAX_RUNS {
        return Err(crate::Error::Invalid(format!("--runs ({runs}) and --warmup ({warmup}) must each be at most {MAX_RUNS}")));
    }
    Ok(())
}

static TIMESTAMP_FALLBACK_WARNED: AtomicBool = AtomicBool::new(false);

/// Query sets hold at most this many queries (two per pass).
const MAX_QUERIES: u32 = wgpu::QUERY_SET_MAX_QUERIES;

fn warn_fallback(reason: &str) {
    if !TIMESTAMP_FALLBACK_WARNED.swap(true, Ordering::Relaxed) {
        log::warn!("GPU timestamps unusable ({reason}); timing by wall clock, which includes submission overhead");
    } else {
        log::debug!("GPU timestamps unusable ({reason}); timing by wall clock");
    }
}

/// Times the work that `record` records: `warmup` untimed runs, then `runs` timed ones.
/// `warmup` and `runs` are raised to [`MIN_WARMUP`] and [`MIN_RUNS`].
pub fn time_gpu<F>(ctx: &GpuContext, warmup: usize, runs: usize, record: F) -> crate::Result<TimingStats>
where
    F: FnMut(&mut Recorder<'_>) -> crate::Result<()>,
{
    time_gpu_with_source(ctx, warmup, runs, record).map(|(stats, _)| stats)
}

/// [`time_gpu`], also returning whether timestamps or the wall clock produced the samples.
pub fn time_gpu_with_source<F>(ctx: &GpuContext, warmup: usize, runs: usize, mut record: F) -> crate::Result<(TimingStats, TimingSource)>
where
    F: FnMut(&mut Recorder<'_>) -> crate::Result<()>,
{
    let warmup = warmup.max(MIN_WARMUP);
    let runs = runs.max(MIN_RUNS);

    let mut passes = 0;
    for _ in 0..warmup {
        let mut recorder = Recorder::new(ctx);
        record(&mut recorder)?;
        passes = passes.max(recorder.pass_count());
        recorder.submit()?;
        ctx.wait()?;
    }

    if std::env::var("ALPHANAS_NO_TIMESTAMPS").is_ok_and(|v| v == "1") {
        log::debug!("ALPHANAS_NO_TIMESTAMPS=1: timing by wall clock");
    } else if !ctx.has_timestamps() {
        warn_fallback("the device has no TIMESTAMP_QUERY");
    } else if passes == 0 {
        warn_fallback("the recorded work has no compute pass");
    } else if 2 * passes > MAX_QUERIES {
        warn_fallback(&format!("{passes} compute passes exceed the {} timestamp slots", MAX_QUERIES / 2));
    } else {
        match time_with_timestamps(ctx, runs, passes, &mut record)? {
            Ok(samples) => return Ok((stats(&samples), TimingSource::Timestamps)),
            Err(reason) => warn_fallback(&reason),
        }
    }

    let samples = time_with_wall_clock(ctx, runs, &mut record)?;
    Ok((stats(&samples), TimingSource::WallClock))
}

fn stats(samples: &[f64]) -> TimingStats {
    TimingStats::from_samples(samples).expect("at least MIN_RUNS samples")
}

/// Runs `runs` timed recordings with timestamps. The outer error is a failure of the work
/// itself; the inner one a reason to fall back to the wall clock.
fn time_with_timestamps<F>(ctx: &GpuContext, runs: usize, passes: u32, record: &mut F) -> crate::Result<Result<Vec<f64>, String>>
where
    F: FnMut(&mut Recorder<'_>) -> crate::Result<()>,
{
    let capacity = 2 * passes;
    let slots = TimestampSlots {
        query_set: ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("alphanas timestamps"),
            ty: wgpu::QueryType::Timestamp,
            count: capacity,
        }),
        capacity,
    };
    let bytes = capacity as u64 * 8;
    let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("timestamp resolve"),
        size: bytes.next_multiple_of(wgpu::QUERY_RESOLVE_BUFFER_ALIGNMENT),
        usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    });
    let readback = ctx.pool.acquire(&ctx.device, BufferKind::Readback, bytes, ctx.limits.max_buffer_size)?;
    let period_ns = ctx.queue.get_timestamp_period() as f64;

    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut recorder = Recorder::with_timestamps(ctx, &slots);
        record(&mut recorder)?;
        let used = recorder.pass_count();
        if used != passes {
            return Ok(Err(format!("the recording used {used} compute passes, the warm-up {passes}")));
        }
        let (mut encoder, keep) = recorder.into_parts();
        encoder.resolve_query_set(&slots.query_set, 0..2 * used, &resolve, 0);
        encoder.copy_buffer_to_buffer(&resolve, 0, readback.buffer(), 0, 2 * used as u64 * 8);
        submit_encoder(ctx, encoder, keep)?;

        let raw = read_mapped(ctx, readback.buffer(), 2 * used as u64 * 8)?;
        let ticks: &[u64] = bytemuck::cast_slice(&raw);
        match elapsed_ticks(ticks) {
            Ok(elapsed) => samples.push(elapsed as f64 * period_ns),
            Err(reason) => return Ok(Err(reason)),
        }
    }
    Ok(Ok(samples))
}

/// Last end minus first start of pass timestamps `[begin0, end0, begin1, end1, ...]`, after
/// checking that no reading is zero and that they never go backwards.
pub(crate) fn elapsed_ticks(ticks: &[u64]) -> Result<u64, String> {
    if ticks.len() < 2 {
        return Err("fewer than two timestamps".into());
    }
    if let Some(i) = ticks.iter().position(|&t| t == 0) {
        return Err(format!("timestamp {i} reads zero"));
    }
    if let Some(i) = ticks.windows(2).position(|w| w[1] < w[0]) {
        return Err(format!("timestamp {} ({}) is earlier than timestamp {i} ({})", i + 1, ticks[i + 1], ticks[i]));
    }
    let elapsed = ticks[ticks.len() - 1] - ticks[0];
    if elapsed == 0 {
        return Err("the first and last timestamps are equal".into());
    }
    Ok(elapsed)
}

fn time_with_wall_clock<F>(ctx: &GpuContext, runs: usize, record: &mut F) -> crate::Result<Vec<f64>>
where
    F: FnMut(&mut Recorder<'_>) -> crate::Result<()>,
{
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let mut recorder = Recorder::new(ctx);
        record(&mut recorder)?;
        // Recording stays outside the timed region; submission and the wait are inside.
        let start = Instant::now();
        recorder.submit()?;
        ctx.wait()?;
        samples.push(start.elapsed().as_nanos() as f64);
    }
    Ok(samples)
}

/// Times `work` on the CPU: `warmup` untimed calls, then `runs` timed ones (raised to
/// [`MIN_WARMUP`] and [`MIN_RUNS`]). The result of each call passes through
/// `std::hint::black_box`, so the work cannot be optimised away.
pub fn time_cpu<R, F>(warmup: usize, runs: usize, mut work: F) -> TimingStats
where
    F: FnMut() -> R,
{
    for _ in 0..warmup.max(MIN_WARMUP) {
        std::hint::black_box(work());
    }
    let runs = runs.max(MIN_RUNS);
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        std::hint::black_box(work());
        samples.push(start.elapsed().as_nanos() as f64);
    }
    stats(&samples)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elapsed_ticks_valid() {
        assert_eq!(elapsed_ticks(&[100, 150, 160, 400]), Ok(300));
    }

    #[test]
    fn elapsed_ticks_rejects_bad_readings() {
        assert!(elapsed_ticks(&[0, 10]).unwrap_err().contains("zero"));
        assert!(elapsed_ticks(&[100, 90]).unwrap_err().contains("earlier"));
        assert!(elapsed_ticks(&[100, 200, 150, 300]).unwrap_err().contains("earlier"));
        assert!(elapsed_ticks(&[5, 5]).is_err());
        assert!(elapsed_ticks(&[5]).is_err());
    }

    #[test]
    fn time_cpu_counts_runs() {
        let mut calls = 0;
        let stats = time_cpu(0, 0, || {
            calls += 1;
            calls
        });
        assert_eq!(stats.runs, MIN_RUNS);
        assert_eq!(calls, MIN_WARMUP + MIN_RUNS);
        assert!(stats.p10_ns <= stats.median_ns);
        assert!(stats.median_ns <= stats.p90_ns);
    }
}
