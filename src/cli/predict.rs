//! `alphanas predict` and `alphanas validate-cost`.

use super::Global;
use crate::arch::{Architecture, Dtype};
use crate::cost::predict::Predictor;
use crate::cost::{CostTable, LinearFit, Mode, Prediction};
use crate::Error;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::SeedableRng;
use serde::Serialize;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Cost table written by `alphanas profile`.
    #[arg(long)]
    pub table: PathBuf,

    /// Architecture JSON file.
    #[arg(long)]
    pub arch: PathBuf,

    /// Forward-pass mode [default: every mode the table was profiled for].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,

    /// Sequences per forward pass [default: the table's].
    #[arg(long)]
    pub batch: Option<u64>,

    /// Prompt length (prefill) or positions attended (decode) [default: the table's].
    #[arg(long)]
    pub seq: Option<u64>,

    /// Required dtype of the table (f32 or f16); a table of another dtype is an error.
    #[arg(long)]
    pub dtype: Option<String>,

    /// Also list every op with its predicted latency.
    #[arg(long)]
    pub ops: bool,
}

#[derive(Serialize)]
struct PredictOutput<'a> {
    table: String,
    arch: String,
    device: &'a str,
    dtype: Dtype,
    calibrated: bool,
    predictions: Vec<Prediction>,
}

pub fn run(args: &Args, global: &Global) -> crate::Result<()> {
    let table = CostTable::load(&args.table)?;
    table.require_entries()?;
    if let Some(text) = &args.dtype {
        let dtype = Dtype::parse(text).ok_or_else(|| Error::Invalid(format!("--dtype ({text}) must be f32 or f16")))?;
        table.require_dtype(dtype)?;
    }
    let arch = Architecture::from_file(&args.arch)?;
    let batch = args.batch.unwrap_or(table.settings.batch);
    let seq = args.seq.unwrap_or(table.settings.seq);
    // The same limit as `bench model`, which the predictions stand in for.
    if seq > arch.max_seq_len {
        return Err(Error::Invalid(format!(
            "--seq ({seq}) exceeds max_seq_len ({}) of {}; use --seq {} or less",
            arch.max_seq_len,
            args.arch.display(),
            arch.max_seq_len
        )));
    }
    let modes = match args.mode {
        Some(mode) => vec![mode],
        None => table.settings.modes.clone(),
    };

    let predictor = Predictor::new(&table);
    let mut predictions = Vec::new();
    for mode in modes {
        let mut prediction = predictor.predict(&arch, mode, batch, seq)?;
        if !args.ops && !global.json {
            prediction.ops.clear();
        }
        predictions.push(prediction);
    }

    if global.json {
        if !args.ops {
            predictions.iter_mut().for_each(|p| p.ops.clear());
        }
        return super::print_json(&PredictOutput {
            table: args.table.display().to_string(),
            arch: arch.summary(),
            device: &table.device.name,
            dtype: table.dtype,
            calibrated: table.calibration.is_some(),
            predictions,
        });
    }

    println!("{} on {} ({}, {}), batch {batch}, seq {seq}", arch.summary(), table.device.name, table.device.backend, table.dtype);
    for p in &predictions {
        print_prediction(p, args.ops);
    }
    Ok(())
}

fn print_prediction(p: &Prediction, with_ops: bool) {
    match p.calibrated_ms {
        Some(calibrated) => println!("\n{}: {:.3} ms calibrated ({:.3} ms raw sum of ops)", p.mode, calibrated, p.raw_ms),
        None => println!("\n{}: {:.3} ms (raw sum of ops; the table has no calibration for {})", p.mode, p.raw_ms, p.mode),
    }
    println!(
        "  ops: {} exact, {} interpolated, {} extrapolated",
        p.exact_ops, p.interpolated_ops, p.extrapolated_ops
    );
    if !p.extrapolated.is_empty() {
        println!("  extrapolated (far outside the table, error unknown): {}", p.extrapolated.join(", "));
    }

    println!("  by op kind (raw):");
    let mut kinds: Vec<(&String, &f64)> = p.by_kind.iter().collect();
    kinds.sort_by(|a, b| b.1.total_cmp(a.1));
    for (kind, ms) in kinds {
        println!("    {kind:<18} {ms:>10.3} ms {:>6.1}%", 100.0 * ms / p.raw_ms);
    }

    println!("  by layer (raw):");
    for (i, ms) in p.by_layer.iter().enumerate() {
        println!("    layer {i:<12} {ms:>10.3} ms {:>6.1}%", 100.0 * ms / p.raw_ms);
    }
    println!("    {:<18} {:>10.3} ms {:>6.1}%", "outside layers", p.outside_layers_ms, 100.0 * p.outside_layers_ms / p.raw_ms);
    if p.overhead_ms > 0.0 {
        println!("  of which dispatch overhead: {:.3} ms", p.overhead_ms);
    }

    if with_ops {
        println!("  ops:");
        for op in &p.ops {
            let layer = op.layer.map_or_else(|| "-".to_string(), |l| l.to_string());
            println!("    {layer:>3} {:<14} {:<60} {:>12.0} ns  {:?}", op.role, op.op, op.ns, op.source);
        }
    }
}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {
    /// Cost table written by `alphanas profile`.
    #[arg(long)]
    pub table: PathBuf,

    /// Space to draw architectures from [default: the space the table was profiled for].
    #[arg(long)]
    pub space: Option<String>,

    /// Architectures measured to score the predictions (not used for calibration).
    #[arg(long, default_value_t = 50)]
    pub n: usize,

    /// Seed of the architecture draw and of the random weights.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,

    /// Architectures measured to fit the calibration, drawn besides the `--n` test ones (at
    /// most 20).
    #[arg(long, default_value_t = 20)]
    pub calibrate: usize,

    /// Mode to validate [default: every mode the table was profiled for].
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,

    /// Draw only architectures with at most this many parameters (rejection sampling), to keep
    /// measurement time short.
    #[arg(long)]
    pub max_params: Option<u64>,

    /// Untimed forward passes before timing each model (the CPU benchmark runs at least 3).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,

    /// Timed forward passes per model (the CPU benchmark runs at least 10).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,

    /// Measure every model this many times (at most 100), each round over all models in its own
    /// shuffled order, and score the median of its rounds. Rounds spread drift in the machine's
    /// speed over all models, and two or more rounds report how well the measurements repeat.
    #[arg(long, default_value_t = 3)]
    pub rounds: usize,

    /// Store the fitted calibration and its measurements in the table.
    #[arg(long)]
    pub save: bool,
}

/// Accuracy of predictions against measurements.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Scores {
    /// Mean absolute percentage error, as a fraction.
    pub mape: f64,
    /// Share of predictions within ±10% of the measurement.
    pub within_10pct: f64,
    pub kendall_tau: f64,
}

impl Scores {
    fn of(predicted: &[f64], measured: &[f64]) -> Scores {
        Scores {
            mape: crate::stats::mape(predicted, measured),
            within_10pct: crate::stats::within(predicted, measured, 0.10),
            kendall_tau: crate::stats::kendall_tau(predicted, measured),
        }
    }
}

#[derive(Debug, Serialize)]
struct ModelRow {
    arch: Architecture,
    summary: String,
    params: u64,
    mode: Mode,
    role: &'static str,
    /// Median of `round_ms`.
    measured_ms: f64,
    /// Median latency of each round, in round order.
    round_ms: Vec<f64>,
    raw_ms: f64,
    calibrated_ms: f64,
}

#[derive(Debug, Serialize)]
struct ModeReport {
    before: Scores,
    after: Scores,
    fit: Option<LinearFit>,
    /// Agreement of one round's measurements of the test models with another's (absent with
    /// one round), which no prediction of a single measurement can beat.
    repeatability: Option<Repeatability>,
}

/// Agreement between rounds of measurement of the same models. `within_10pct` is the share of
/// models whose measurement in one round lies within ±10% of another round's, averaged over
/// every ordered pair of rounds, so it does not matter which round is the reference.
/// `kendall_tau` ranks the models by each of two rounds, averaged over every pair.
#[derive(Debug, Clone, Copy, Serialize)]
struct Repeatability {
    within_10pct: f64,
    kendall_tau: f64,
}

impl Repeatability {
    fn of(rows: &[&ModelRow]) -> Option<Repeatability> {
        let rounds = rows.first()?.round_ms.len();
        let mut pairs = 0.0;
        let (mut within, mut tau) = (0.0, 0.0);
        for r in 0..rounds {
            for s in r + 1..rounds {
                let first: Vec<f64> = rows.iter().map(|row| row.round_ms[r]).collect();
                let second: Vec<f64> = rows.iter().map(|row| row.round_ms[s]).collect();
                within += 0.5 * (crate::stats::within(&second, &first, 0.10) + crate::stats::within(&first, &second, 0.10));
                tau += crate::stats::kendall_tau(&first, &second);
                pairs += 1.0;
            }
        }
        (pairs > 0.0).then(|| Repeatability { within_10pct: within / pairs, kendall_tau: tau / pairs })
    }
}

#[derive(Debug, Serialize)]
struct ValidateOutput {
    n: usize,
    calibration_models: usize,
    batch: u64,
    seq: u64,
    rounds: usize,
    /// Scores over all validated modes together.
    before: Scores,
    after: Scores,
    modes: std::collections::BTreeMap<Mode, ModeReport>,
    measure_s: f64,
    models: Vec<ModelRow>,
}

/// Most rounds `validate-cost` and `profile` accept: more only lengthen a run that already
/// spans drift.
const MAX_ROUNDS: usize = 100;

/// Rejects a `--rounds` of 0 or above [`MAX_ROUNDS`].
pub(super) fn check_rounds(rounds: usize) -> crate::Result<()> {
    if !(1..=MAX_ROUNDS).contains(&rounds) {
        return Err(Error::Invalid(format!("--rounds ({rounds}) must be between 1 and {MAX_ROUNDS}; 3 is the default")));
    }
    Ok(())
}

/// Most test models `validate-cost` accepts, so that drawing the distinct architectures ends
/// within seconds.
const MAX_MODELS: usize = 10_000;

pub fn run_validate(args: &ValidateArgs, global: &Global) -> crate::Result<()> {
    let mut table = CostTable::load(&args.table)?;
    table.require_entries()?;
    if args.calibrate > 20 {
        return Err(Error::Invalid(format!(
            "--calibrate ({}) must be at most 20, because validate-cost scores a calibration fitted on as few measured models as a search has early on; raise --n to test on more models",
            args.calibrate
        )));
    }
    check_rounds(args.rounds)?;
    if args.save && args.calibrate == 0 {
        return Err(Error::Invalid("--save stores a calibration, which needs --calibrate 1 or more (20 at most)".into()));
    }
    if args.n < 2 {
        return Err(Error::Invalid(format!("--n ({}) must be at least 2 to rank models", args.n)));
    }
    if args.n > MAX_MODELS {
        return Err(Error::Invalid(format!(
            "--n ({}) must be at most {MAX_MODELS}; each model is measured --rounds times, so that many models already take hours unless they are tiny",
            args.n
        )));
    }
    let measurer = Measurer::for_table(&table, global)?;
    let space = args.space.clone().unwrap_or_else(|| table.settings.space.clone());
    let modes = match args.mode {
        Some(mode) => vec![mode],
        None => table.settings.modes.clone(),
    };
    let (batch, seq) = (table.settings.batch, table.settings.seq);

    let archs = draw_distinct(&space, args.calibrate + args.n, args.seed, args.max_params)?;
    let (fit_archs, test_archs) = archs.split_at(args.calibrate);
    log::info!("validating {} on {} architectures of {space}, calibrating on {} others", args.table.display(), test_archs.len(), fit_archs.len());

    let start = std::time::Instant::now();
    let bar = if global.json || global.quiet > 0 {
        indicatif::ProgressBar::hidden()
    } else {
        indicatif::ProgressBar::new((archs.len() * modes.len() * args.rounds) as u64)
    };
    bar.set_style(
        indicatif::ProgressStyle::with_template("measuring [{bar:30}] {pos}/{len} forward passes, ETA {eta} {msg}")
            .expect("the progress template is valid")
            .progress_chars("=> "),
    );

    // One row per mode and architecture, the calibration models of each mode first.
    let predictor = Predictor::new(&table);
    let mut rows = Vec::with_capacity(modes.len() * archs.len());
    for &mode in &modes {
        for (i, arch) in archs.iter().enumerate() {
            let raw_ms = predictor.predict(arch, mode, batch, seq)?.raw_ms;
            let role = if i < fit_archs.len() { "calibration" } else { "test" };
            let (summary, params) = (arch.summary(), arch.params());
            let round_ms = Vec::with_capacity(args.rounds);
            rows.push(ModelRow { arch: arch.clone(), summary, params, mode, role, measured_ms: f64::NAN, round_ms, raw_ms, calibrated_ms: raw_ms });
        }
    }
    for round in 0..args.rounds {
        let mut order: Vec<usize> = (0..rows.len()).collect();
        if args.rounds > 1 {
            order.shuffle(&mut StdRng::seed_from_u64(args.seed ^ 0x5851_f42d_4c95_7f2d_u64.wrapping_mul(round as u64 + 1)));
        }
        for i in order {
            let row = &mut rows[i];
            bar.set_message(format!("round {}/{}, {} {}", round + 1, args.rounds, row.mode, row.summary));
            let measured = measurer.bench(&row.arch, row.mode, batch as usize, seq as usize, args.warmup, args.runs, args.seed)?;
            row.round_ms.push(measured.latency_ms);
            bar.inc(1);
        }
    }
    bar.finish_and_clear();
    for row in &mut rows {
        let mut sorted = row.round_ms.clone();
        sorted.sort_by(f64::total_cmp);
        row.measured_ms = crate::stats::percentile_sorted(&sorted, 0.5);
    }

    let mut reports = std::collections::BTreeMap::new();
    for &mode in &modes {
        let (mut fit_rows, mut test_rows): (Vec<&mut ModelRow>, Vec<&mut ModelRow>) =
            rows.iter_mut().filter(|r| r.mode == mode).partition(|r| r.role == "calibration");
        let fit = LinearFit::fit(
            &fit_rows.iter().map(|r| r.raw_ms).collect::<Vec<_>>(),
            &fit_rows.iter().map(|r| r.measured_ms).collect::<Vec<_>>(),
        );
        if let Some(fit) = &fit {
            // The calibration models get their in-sample value too; only the test models are scored.
            fit_rows.iter_mut().chain(test_rows.iter_mut()).for_each(|r| r.calibrated_ms = fit.apply(r.raw_ms));
        }
        let measured: Vec<f64> = test_rows.iter().map(|r| r.measured_ms).collect();
        let before = Scores::of(&test_rows.iter().map(|r| r.raw_ms).collect::<Vec<_>>(), &measured);
        let after = Scores::of(&test_rows.iter().map(|r| r.calibrated_ms).collect::<Vec<_>>(), &measured);
        let repeatability = Repeatability::of(&test_rows.iter().map(|r| &**r).collect::<Vec<_>>());
        reports.insert(mode, ModeReport { before, after, fit, repeatability });

        if args.save {
            for r in &fit_rows {
                table.add_measurement_at(&r.arch, mode, batch, seq, r.measured_ms)?;
            }
        }
    }

    let tests: Vec<&ModelRow> = rows.iter().filter(|r| r.role == "test").collect();
    let measured: Vec<f64> = tests.iter().map(|r| r.measured_ms).collect();
    let output = ValidateOutput {
        n: test_archs.len(),
        calibration_models: fit_archs.len(),
        batch,
        seq,
        rounds: args.rounds,
        before: Scores::of(&tests.iter().map(|r| r.raw_ms).collect::<Vec<_>>(), &measured),
        after: Scores::of(&tests.iter().map(|r| r.calibrated_ms).collect::<Vec<_>>(), &measured),
        modes: reports,
        measure_s: start.elapsed().as_secs_f64(),
        models: rows,
    };

    if args.save && args.calibrate > 0 {
        table.recalibrate()?;
        table.save(&args.table)?;
    }

    if global.json {
        return super::print_json(&output);
    }
    print_validation(&output, &args.table, &table);
    if args.save && args.calibrate > 0 {
        println!("stored the calibration, fitted on {} measured models per mode, in {}", args.calibrate, args.table.display());
    }
    Ok(())
}

fn print_validation(output: &ValidateOutput, path: &std::path::Path, table: &CostTable) {
    println!(
        "{} on {} ({}): {} test models, calibration on {}, batch {}, seq {}, {} measured in {:.0} s",
        path.display(),
        table.device.name,
        table.device.backend,
        output.n,
        super::plural(output.calibration_models, "other model", "other models"),
        output.batch,
        output.seq,
        super::plural(output.rounds, "round", "rounds"),
        output.measure_s
    );
    println!("{:<8} {:<7} {:>8} {:>12} {:>12}", "mode", "", "MAPE", "within ±10%", "Kendall τ");
    for (mode, report) in &output.modes {
        for (label, s) in [("before", report.before), ("after", report.after)] {
            println!("{:<8} {:<7} {:>7.1}% {:>11.1}% {:>12.3}", mode.name(), label, 100.0 * s.mape, 100.0 * s.within_10pct, s.kendall_tau);
        }
        if let Some(fit) = &report.fit {
            let sign = if fit.b < 0.0 { '−' } else { '+' };
            println!("         fit: measured ≈ {:.4}·predicted {sign} {:.4} ms on {}", fit.a, fit.b.abs(), super::plural(fit.n_models, "model", "models"));
        }
        if let Some(r) = &report.repeatability {
            println!("{:<8} {:<7} {:>8} {:>11.1}% {:>12.3}   (one round against another)", "", "repeat", "", 100.0 * r.within_10pct, r.kendall_tau);
        }
    }
}

/// Device on which `validate-cost` measures whole models: the one the table was profiled on.
enum Measurer {
    Cpu,
    Gpu(std::sync::Arc<crate::device::GpuContext>, crate::device::DType),
}

impl Measurer {
    /// Opens the table's device, or fails with what to do instead. A table from another device
    /// still predicts; it only cannot be validated here.
    fn for_table(table: &CostTable, global: &Global) -> crate::Result<Measurer> {
        use crate::device::BackendChoice;
        if table.device.backend == "cpu" {
            if global.backend == BackendChoice::Gpu {
                return Err(Error::Invalid(format!("{} is a CPU table but --backend gpu was given; use --backend cpu or auto", table.path())));
            }
            table.require_dtype(Dtype::F32)?;
            let host = crate::device::cpu_model_name();
            if table.device.name != host {
                log::warn!("{} was profiled on {}, but this machine is {host}; the scores compare two machines", table.path(), table.device.name);
            }
            warn_if_threads_differ(
                table,
                "timings may not compare, so profile and validate with the same --threads and --no-pin (pinning also needs as many allowed CPUs as threads)",
            );
            return Ok(Measurer::Cpu);
        }
        if global.backend == BackendChoice::Cpu {
            return Err(Error::Invalid(format!(
                "{} was profiled on the GPU {} ({}) but --backend cpu was given; validate it with --backend gpu or auto",
                table.path(),
                table.device.name,
                table.device.backend
            )));
        }
        let ctx = crate::device::shared_gpu().map_err(|e| {
            Error::Invalid(format!(
                "{} was profiled on the GPU {} ({}), and this machine has no usable GPU ({e}); validate it on that machine",
                table.path(),
                table.device.name,
                table.device.backend
            ))
        })?;
        if ctx.info.name != table.device.name || ctx.info.backend.to_str() != table.device.backend {
            return Err(Error::Invalid(format!(
                "{} was profiled on {} ({}), but this machine's GPU is {} ({}); validate it on that machine, or profile this one",
                table.path(),
                table.device.name,
                table.device.backend,
                ctx.info.name,
                ctx.info.backend.to_str()
            )));
        }
        let dtype = match table.dtype {
            Dtype::F32 => crate::device::DType::F32,
            Dtype::F16 => crate::device::DType::F16,
            other => return Err(Error::Invalid(format!("{} holds {other} timings; the GPU model runs f32 or f16 only", table.path()))),
        };
        Ok(Measurer::Gpu(ctx, dtype))
    }

    /// Measures one whole forward pass of `arch` on the table's device.
    #[allow(clippy::too_many_arguments)]
    fn bench(&self, arch: &Architecture, mode: Mode, batch: usize, seq: usize, warmup: usize, runs: usize, seed: u64) -> crate::Result<crate::model::ModelBenchResult> {
        match self {
            Measurer::Cpu => crate::model::bench_cpu(arch, mode.into(), batch, seq, warmup, runs, seed),
            Measurer::Gpu(ctx, dtype) => crate::model::gpu::bench_gpu(ctx, arch, mode.into(), batch, seq, *dtype, warmup, runs, seed),
        }
    }
}

/// Warns when a CPU table was profiled with another thread count or thread pinning than this
/// run's, because unpinned timings can be up to twice the pinned ones. `fix` is the advice that
/// ends each warning.
pub(super) fn warn_if_threads_differ(table: &CostTable, fix: &str) {
    let threads = rayon::current_num_threads();
    if let Some(then) = table.device.threads.filter(|&then| then != threads) {
        log::warn!("{} was profiled with {then} CPU threads, but this run has {threads}; {fix}", table.path());
    }
    let now = crate::device::cpu_workers_pinned();
    let pinning = |pinned: bool| if pinned { "pinned" } else { "unpinned" };
    match table.device.pinned_threads {
        Some(then) if then != now => {
            log::warn!("{} was profiled with {} worker threads, but this run's are {}; {fix}", table.path(), pinning(then), pinning(now))
        }
        None if now => log::warn!(
            "{} does not record whether its worker threads were pinned (tables written before pinning existed were not), but this run's are; {fix}",
            table.path()
        ),
        _ => {}
    }
}

/// Draws `count` distinct architectures of the space, skipping those above `max_params`.
fn draw_distinct(space: &str, count: usize, seed: u64, max_params: Option<u64>) -> crate::Result<Vec<Architecture>> {
    let mut out: Vec<Architecture> = Vec::with_capacity(count);
    let mut round = 0u64;
    while out.len() < count {
        // A batch of draws per round, so rejection sampling with a tight --max-params ends.
        let batch = super::profile::sample_architectures(space, 4 * count.max(16), seed.wrapping_add(round.wrapping_mul(0x9e37_79b9)))?;
        for arch in batch {
            if out.len() == count {
                break;
            }
            if max_params.is_some_and(|limit| arch.params() > limit) || out.contains(&arch) {
                continue;
            }
            out.push(arch);
        }
        round += 1;
        if round > 50 {
            return Err(Error::Invalid(format!(
                "found only {} distinct architectures of {space} within --max-params {}; raise --max-params or lower --n and --calibrate",
                out.len(),
                max_params.map_or_else(|| "(none)".to_string(), |p| p.to_string())
            )));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(round_ms: &[f64]) -> ModelRow {
        let arch = crate::arch::presets::llama_tiny();
        let (summary, params) = (arch.summary(), arch.params());
        ModelRow { arch, summary, params, mode: Mode::Decode, role: "test", measured_ms: 0.0, round_ms: round_ms.to_vec(), raw_ms: 1.0, calibrated_ms: 1.0 }
    }

    #[test]
    fn repeatability_is_symmetric() {
        // 1.11 is 11% above 1.0, while 1.0 is 9.9% below 1.11: one direction in, one out.
        let rows = [row(&[1.0, 1.11]), row(&[2.0, 2.0])];
        let forward = Repeatability::of(&rows.iter().collect::<Vec<_>>()).unwrap();
        let swapped = [row(&[1.11, 1.0]), row(&[2.0, 2.0])];
        let backward = Repeatability::of(&swapped.iter().collect::<Vec<_>>()).unwrap();
        assert!((forward.within_10pct - 0.75).abs() < 1e-12, "{forward:?}");
        assert_eq!(forward.within_10pct, backward.within_10pct);
    }

    #[test]
    fn one_round_has_no_repeatability() {
        let rows = [row(&[1.0]), row(&[2.0])];
        assert!(Repeatability::of(&rows.iter().collect::<Vec<_>>()).is_none());
    }
}
