//! Profiling: which op shapes a set of architectures needs, and the loop that times them into a
//! table, saving it periodically so an interrupted run continues where it stopped.
//!
//! The shape set is the union of the ops of every sampled architecture at the profile's batch,
//! sequence length and modes. When an op kind has more distinct shapes than
//! `max_shapes_per_op`, profiling every combination would take too long, so each dimension is
//! reduced to a few log-spaced representative values and every shape is snapped to the nearest
//! ones: the kind is profiled on a grid along each dimension, restricted to the combinations that
//! occur. Prediction interpolates the shapes in between.

use super::ops::{model_ops, Mode, Op, OpKind};
use super::table::CostTable;
use super::timer::OpTimer;
use super::CostError;
use crate::arch::Architecture;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

/// The smallest allowed `max_shapes_per_op`: a grid of two values along each of five
/// attention dimensions.
pub const MIN_SHAPES_PER_OP: usize = 32;

/// Settings of one profiling run: modes, batch, sequence length, shape cap and run counts.
#[derive(Debug, Clone)]
pub struct ProfileOptions {
    pub modes: Vec<Mode>,
    pub batch: u64,
    pub seq: u64,
    pub max_shapes_per_op: usize,
    pub warmup: usize,
    pub runs: usize,
    /// Rounds over the shape list (at least 1); see [`profile_table`].
    pub rounds: usize,
}

/// The distinct op shapes to profile, with how many each kind had before thinning.
#[derive(Debug, Clone, Default)]
pub struct ProfilePlan {
    pub ops: Vec<Op>,
    /// Distinct shapes per kind found in the architectures, before thinning.
    pub found_per_kind: BTreeMap<OpKind, usize>,
}

/// Collects the op shapes of `archs` and thins every kind with more than
/// `options.max_shapes_per_op` shapes to a grid (see the module docs).
pub fn plan_shapes(archs: &[Architecture], options: &ProfileOptions) -> ProfilePlan {
    let mut by_kind: BTreeMap<OpKind, BTreeSet<Op>> = BTreeMap::new();
    for arch in archs {
        for &mode in &options.modes {
            for model_op in model_ops(arch, mode, options.batch, options.seq) {
                by_kind.entry(model_op.op.kind).or_default().insert(model_op.op);
            }
        }
    }

    let cap = options.max_shapes_per_op.max(MIN_SHAPES_PER_OP);
    let mut plan = ProfilePlan::default();
    for (kind, shapes) in by_kind {
        plan.found_per_kind.insert(kind, shapes.len());
        let shapes: Vec<Op> = shapes.into_iter().collect();
        if shapes.len() <= cap {
            plan.ops.extend(shapes);
        } else {
            let thinned = thin_to_grid(&shapes, cap);
            log::info!("{kind}: {} distinct shapes thinned to a grid of {}", shapes.len(), thinned.len());
            plan.ops.extend(thinned);
        }
    }
    plan
}

/// Snaps every shape to at most `levels` log-spaced values per dimension, lowering `levels`
/// until at most `cap` distinct shapes remain.
fn thin_to_grid(shapes: &[Op], cap: usize) -> Vec<Op> {
    let n_dims = shapes[0].dims.len();
    let distinct: Vec<Vec<u64>> = (0..n_dims)
        .map(|d| shapes.iter().map(|s| s.dims[d]).collect::<BTreeSet<u64>>().into_iter().collect())
        .collect();
    let max_levels = distinct.iter().map(Vec::len).max().unwrap_or(1);

    let mut levels = max_levels;
    loop {
        let representatives: Vec<Vec<u64>> = distinct.iter().map(|values| log_spaced_subset(values, levels)).collect();
        let snapped: BTreeSet<Op> = shapes
            .iter()
            .map(|s| Op {
                kind: s.kind,
                dims: s.dims.iter().enumerate().map(|(d, &v)| nearest_in_log(&representatives[d], v)).collect(),
            })
            .collect();
        if snapped.len() <= cap || levels <= 2 {
            return snapped.into_iter().collect();
        }
        levels -= 1;
    }
}

/// Up to `count` values of the ascending list `values`, nearest to log-spaced points between its
/// first and last value (both always kept).
fn log_spaced_subset(values: &[u64], count: usize) -> Vec<u64> {
    if values.len() <= count {
        return values.to_vec();
    }
    let (lo, hi) = ((values[0] as f64).ln(), (values[values.len() - 1] as f64).ln());
    let picked: BTreeSet<u64> = (0..count)
        .map(|j| {
            let target = (lo + (hi - lo) * j as f64 / (count - 1) as f64).exp();
            nearest_in_log(values, target.round() as u64)
        })
        .collect();
    picked.into_iter().collect()
}

fn nearest_in_log(candidates: &[u64], value: u64) -> u64 {
    let target = (value.max(1) as f64).ln();
    *candidates
        .iter()
        .min_by(|a, b| ((**a as f64).ln() - target).abs().total_cmp(&((**b as f64).ln() - target).abs()))
        .expect("at least one candidate")
}

/// Counts of one profiling run.
#[derive(Debug, Clone, Default)]
pub struct ProfileReport {
    /// Timings taken in this run, one per shape and round.
    pub timed: usize,
    /// Shapes whose rounds were all in the table already (from an earlier, interrupted run).
    pub skipped: usize,
    pub elapsed: Duration,
}

/// How often a partial table is written while profiling.
const SAVE_INTERVAL: Duration = Duration::from_secs(10);

/// Times every shape of `plan` that `table` lacks and inserts it. With `out`, the table is saved
/// atomically every few seconds, at the end, and before returning a timing error.
/// `show_progress` draws a progress bar with ETA on stderr.
///
/// The shapes are timed in `options.rounds` rounds, each over the whole list in its own
/// shuffled order, and each entry keeps the median of its rounds. A machine whose speed drifts
/// over seconds or minutes (a shared or virtual machine, a laptop changing clocks) would
/// otherwise bias every shape timed in the same stretch, and the plan lists the shapes of one
/// kind together. Rounds spread over the run turn that drift into noise that the median
/// removes. An interrupted run continues with the rounds each entry still lacks.
pub fn profile_table(
    timer: &mut dyn OpTimer,
    plan: &ProfilePlan,
    options: &ProfileOptions,
    table: &mut CostTable,
    out: Option<&Path>,
    show_progress: bool,
) -> Result<ProfileReport, CostError> {
    let start = Instant::now();
    let rounds = options.rounds.max(1);
    let rounds_done = |table: &CostTable, op: &Op| table.lookup(op).map_or(0, |e| e.rounds());
    let remaining: usize = plan.ops.iter().map(|op| rounds.saturating_sub(rounds_done(table, op))).sum();
    let mut report = ProfileReport { skipped: plan.ops.iter().filter(|op| rounds_done(table, op) >= rounds).count(), ..ProfileReport::default() };
    let total = rounds * plan.ops.len();
    if remaining < total {
        log::info!("continuing {}: {} of {total} timings ({} shapes in {rounds} rounds) already done", table.path(), total - remaining, plan.ops.len());
    }

    let bar = if show_progress {
        indicatif::ProgressBar::new(remaining as u64)
    } else {
        indicatif::ProgressBar::hidden()
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("{spinner} profiling [{bar:30}] {pos}/{len} timings, {elapsed} elapsed, ETA {eta} {msg}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );

    let mut last_save = Instant::now();
    for round in 0..rounds {
        let mut pending: Vec<&Op> = plan.ops.iter().filter(|op| rounds_done(table, op) <= round).collect();
        // A fixed seed per round keeps a profile's order reproducible.
        pending.shuffle(&mut StdRng::seed_from_u64(0x9e37_79b9 ^ round as u64));
        for op in pending {
            bar.set_message(format!("round {}/{rounds}, {}", round + 1, op.kind.name()));
            let stats = match timer.time_op(op, options.warmup, options.runs) {
                Ok(stats) => stats,
                Err(err) => {
                    // Keep what was measured, so the next run continues from here.
                    bar.abandon();
                    if let Some(path) = out {
                        table.save(path)?;
                    }
                    return Err(err);
                }
            };
            log::debug!("{op}, round {}: median {:.0} ns (p10 {:.0}, p90 {:.0})", round + 1, stats.median_ns, stats.p10_ns, stats.p90_ns);
            table.insert_round(op, &stats);
            report.timed += 1;
            bar.inc(1);

            if let Some(path) = out {
                if last_save.elapsed() >= SAVE_INTERVAL {
                    table.save(path)?;
                    last_save = Instant::now();
                }
            }
        }
    }
    bar.finish_and_clear();

    if let Some(path) = out {
        table.save(path)?;
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::{presets, Dtype};
    use crate::cost::table::tests::{test_device, test_settings};
    use crate::cost::table::DeviceInfo;
    use crate::stats::TimingStats;

    /// A timer whose op time is an analytic function of the shape, counting its calls. With
    /// `factors`, the n-th timing of a shape is scaled by `factors[n]`.
    struct SyntheticTimer {
        calls: usize,
        fail_after: Option<usize>,
        factors: Vec<f64>,
        calls_per_op: BTreeMap<String, usize>,
    }

    impl SyntheticTimer {
        fn new(fail_after: Option<usize>) -> SyntheticTimer {
            SyntheticTimer { calls: 0, fail_after, factors: Vec::new(), calls_per_op: BTreeMap::new() }
        }
    }

    impl OpTimer for SyntheticTimer {
        fn device_info(&self) -> DeviceInfo {
            test_device()
        }
        fn dtype(&self) -> Dtype {
            Dtype::F32
        }
        fn includes_dispatch_overhead(&self) -> bool {
            true
        }
        fn time_op(&mut self, op: &Op, _warmup: usize, runs: usize) -> Result<TimingStats, CostError> {
            if self.fail_after == Some(self.calls) {
                return Err(CostError::Timing { op: op.to_string(), message: "interrupted".into() });
            }
            self.calls += 1;
            let nth = self.calls_per_op.entry(op.to_string()).or_insert(0);
            let factor = self.factors.get(*nth).copied().unwrap_or(1.0);
            *nth += 1;
            let t = (1000.0 + op.flops() / 10.0) * factor;
            Ok(TimingStats { median_ns: t, p10_ns: 0.9 * t, p90_ns: 1.1 * t, runs })
        }
        fn time_dispatch_overhead(&mut self, _warmup: usize, runs: usize) -> Result<TimingStats, CostError> {
            Ok(TimingStats { median_ns: 100.0, p10_ns: 100.0, p90_ns: 100.0, runs })
        }
    }

    fn options(cap: usize) -> ProfileOptions {
        ProfileOptions { modes: vec![Mode::Prefill, Mode::Decode], batch: 1, seq: 16, max_shapes_per_op: cap, warmup: 0, runs: 3, rounds: 1 }
    }

    fn widths() -> Vec<Architecture> {
        (1..=12u64)
            .map(|i| Architecture { d_model: 64 * i, d_ff: 192 * i, n_heads: i, n_kv_heads: Some(1), ..presets::llama_tiny() })
            .collect()
    }

    #[test]
    fn plan_covers_every_model_op() {
        let archs = widths();
        let plan = plan_shapes(&archs, &options(10_000));
        for arch in &archs {
            for mode in Mode::ALL {
                for o in model_ops(arch, mode, 1, 16) {
                    assert!(plan.ops.contains(&o.op), "missing {}", o.op);
                }
            }
        }
        assert_eq!(plan.ops.len(), plan.found_per_kind.values().sum::<usize>());
    }

    #[test]
    fn plan_thins_large_kinds_to_cap() {
        let archs = widths();
        let full = plan_shapes(&archs, &options(10_000));
        let matmuls = full.found_per_kind[&OpKind::Matmul];
        assert!(matmuls > MIN_SHAPES_PER_OP, "the test needs more matmul shapes than the cap ({matmuls})");

        let thinned = plan_shapes(&archs, &options(MIN_SHAPES_PER_OP));
        let kept = thinned.ops.iter().filter(|o| o.kind == OpKind::Matmul).count();
        assert!(kept <= MIN_SHAPES_PER_OP, "{kept}");
        assert!(kept >= 4, "{kept}");
        // The extremes of every dimension survive thinning.
        let max_k = thinned.ops.iter().filter(|o| o.kind == OpKind::Matmul).map(|o| o.dims[2]).max().unwrap();
        assert_eq!(max_k, 12 * 192);
    }

    #[test]
    fn log_spaced_subset_keeps_ends() {
        let values: Vec<u64> = (1..=100).collect();
        let subset = log_spaced_subset(&values, 3);
        assert_eq!(subset, vec![1, 10, 100]);
        assert_eq!(log_spaced_subset(&[4, 8], 5), vec![4, 8]);
    }

    #[test]
    fn interrupted_profile_continues() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let archs = vec![presets::llama_tiny()];
        let opts = options(1000);
        let plan = plan_shapes(&archs, &opts);
        let total = plan.ops.len();

        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 100.0, true);
        let mut timer = SyntheticTimer::new(Some(5));
        assert!(profile_table(&mut timer, &plan, &opts, &mut table, Some(&path), false).is_err());

        let mut resumed = CostTable::load(&path).unwrap();
        assert_eq!(resumed.entries.len(), 5);
        let mut timer = SyntheticTimer::new(None);
        let report = profile_table(&mut timer, &plan, &opts, &mut resumed, Some(&path), false).unwrap();
        assert_eq!(report.skipped, 5);
        assert_eq!(report.timed, total - 5);
        assert_eq!(timer.calls, total - 5);
        assert_eq!(CostTable::load(&path).unwrap().entries.len(), total);
    }

    #[test]
    fn rounds_keep_the_median() {
        let archs = vec![presets::llama_tiny()];
        let opts = ProfileOptions { rounds: 3, ..options(1000) };
        let plan = plan_shapes(&archs, &opts);
        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 100.0, true);
        let mut timer = SyntheticTimer::new(None);
        timer.factors = vec![3.0, 1.0, 2.0];
        let report = profile_table(&mut timer, &plan, &opts, &mut table, None, false).unwrap();
        assert_eq!(report.timed, 3 * plan.ops.len());
        assert_eq!(timer.calls, 3 * plan.ops.len());

        for op in &plan.ops {
            let entry = table.lookup(op).unwrap();
            let base = 1000.0 + op.flops() / 10.0;
            assert_eq!(entry.rounds(), 3, "{op}");
            assert!((entry.median_ns - 2.0 * base).abs() < 1e-6 * base, "{op}: {entry:?}");
            assert!((entry.p10_ns - 0.9 * base).abs() < 1e-6 * base, "{op}: lowest p10 of the rounds");
            assert!((entry.p90_ns - 3.3 * base).abs() < 1e-6 * base, "{op}: highest p90 of the rounds");
            assert_eq!(entry.runs, 9, "{op}");
        }
    }

    #[test]
    fn interrupted_rounds_continue() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.json");
        let archs = vec![presets::llama_tiny()];
        let opts = ProfileOptions { rounds: 2, ..options(1000) };
        let plan = plan_shapes(&archs, &opts);
        let total = plan.ops.len();

        // Stop a few timings into the second round.
        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 100.0, true);
        let mut timer = SyntheticTimer::new(Some(total + 3));
        assert!(profile_table(&mut timer, &plan, &opts, &mut table, Some(&path), false).is_err());
        let mut resumed = CostTable::load(&path).unwrap();
        assert_eq!(resumed.entries.len(), total);
        assert_eq!(resumed.entries.iter().filter(|e| e.rounds() == 2).count(), 3);

        let mut timer = SyntheticTimer::new(None);
        let report = profile_table(&mut timer, &plan, &opts, &mut resumed, Some(&path), false).unwrap();
        assert_eq!(report.timed, total - 3);
        assert_eq!(report.skipped, 3);
        assert!(CostTable::load(&path).unwrap().entries.iter().all(|e| e.rounds() == 2));
    }

    #[test]
    fn one_round_table_gains_rounds() {
        let archs = vec![presets::llama_tiny()];
        let plan = plan_shapes(&archs, &options(1000));
        let mut table = CostTable::new(test_device(), Dtype::F32, test_settings(), 100.0, true);
        profile_table(&mut SyntheticTimer::new(None), &plan, &options(1000), &mut table, None, false).unwrap();
        assert!(table.entries.iter().all(|e| e.rounds() == 1 && e.round_medians_ns.is_empty()));

        let mut timer = SyntheticTimer::new(None);
        let report = profile_table(&mut timer, &plan, &ProfileOptions { rounds: 3, ..options(1000) }, &mut table, None, false).unwrap();
        assert_eq!(report.timed, 2 * plan.ops.len());
        assert!(table.entries.iter().all(|e| e.rounds() == 3));
    }
}
