//! `alphanas search`: builds the space, the evaluator and the search settings from the
//! command line, runs the search with a Ctrl-C handler, then prints the Pareto front and
//! writes `pareto.svg` (and Hugging Face configs of the front with `--export-front`).

use super::{BackendChoice, Global};
use crate::eval::command::CommandEvaluator;
use crate::eval::measure::{MeasureEvaluator, MeasureSettings};
use crate::eval::proxy::{AnalyticSettings, ProxyEvaluator, Quality};
use crate::eval::Evaluator;
use crate::search::plot::{write_pareto_svg, PlotAxis, PlotData};
use crate::search::{Constraint, NoHooks, Objective, SearchConfig, SearchReport, Sense, Strategy, SurrogateKind, TableFeatures};
use crate::search::{CostTableFeedback, MeasuredPass};
use crate::space::table::TableSpace;
use crate::space::{Candidate, SearchSpace};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

/// Default number of real evaluations, so that the default search ends within minutes.
/// NOTE: sized from an estimate of about ten seconds per measured llama-space candidate on two
/// idle CPU cores in a release build. That estimate was not timed; the largest candidates
/// (0.95B parameters) take longer.
pub const DEFAULT_EVALS: usize = 20;

#[derive(Debug, Clone, clap::Args)]
pub struct Args {
    /// Search space: a built-in name (llama, hwgpt-s, lts-gpt2) or a TOML file.
    #[arg(long, default_value = "llama")]
    pub space: String,

    /// CSV file whose rows are the candidates (a tabular space); needs --decisions.
    #[arg(long, conflicts_with = "space")]
    pub space_table: Option<PathBuf>,

    /// Decision columns of --space-table, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub decisions: Vec<String>,

    /// Inputs of the MCTS surrogate, comma-separated. With --space-table: columns known before
    /// evaluation (such as params or flops), read instead of the decisions; wide positive
    /// columns enter as logs. With an architecture space: features of the space (listed by
    /// `alphanas space --space NAME`), read instead of all of them.
    #[arg(long, value_delimiter = ',')]
    pub features: Vec<String>,

    /// Surrogate of the MCTS strategy: mlp (an ensemble of small MLPs) or ridge (a bootstrap
    /// ensemble of ridge regressions, quicker to fit).
    #[arg(long, default_value = "mlp")]
    pub surrogate: String,

    /// Search strategy: mcts, random, evolution or local.
    #[arg(long, default_value = "mcts")]
    pub strategy: String,

    /// Evaluator of a candidate's true metrics: proxy, measure, table or command (default:
    /// measure, or table with --space-table).
    #[arg(long)]
    pub evaluator: Option<String>,

    /// Program and arguments of the command evaluator, split with shell quoting rules but run
    /// without a shell.
    #[arg(long)]
    pub eval_cmd: Option<String>,

    /// Seconds after which a command evaluation is killed with its process group.
    #[arg(long)]
    pub eval_timeout: Option<f64>,

    /// Evaluations run in parallel (measurements still run one at a time).
    #[arg(long, default_value_t = 1)]
    pub workers: usize,

    /// Objective `min:NAME` or `max:NAME` (repeatable; default depends on the evaluator).
    #[arg(long = "objective")]
    pub objectives: Vec<String>,

    /// Constraint `NAME<=VALUE` or `NAME>=VALUE` (repeatable).
    #[arg(long = "constraint")]
    pub constraints: Vec<String>,

    /// Shorthand for --constraint latency_decode_ms<=VALUE (milliseconds).
    #[arg(long)]
    pub max_latency_ms: Option<f64>,

    /// Shorthand for --constraint params<=VALUE (all parameters).
    #[arg(long)]
    pub max_params: Option<f64>,

    /// Shorthand for --constraint peak_memory_bytes<=VALUE×2^20 (MiB).
    #[arg(long)]
    pub max_memory_mb: Option<f64>,

    /// Training-free quality estimate: proxy (decoder parameters, maximised) or scaling-law
    /// (Chinchilla loss, minimised; needs --train-tokens).
    #[arg(long, default_value = "proxy")]
    pub quality: String,

    /// Training tokens D for --quality scaling-law, for example 2e10.
    #[arg(long)]
    pub train_tokens: Option<f64>,

    /// Number of real evaluations (the budget), counting those of a resumed run.
    #[arg(long, default_value_t = DEFAULT_EVALS)]
    pub evals: usize,

    /// MCTS leaves gathered per surrogate dispatch.
    #[arg(long, default_value_t = 256)]
    pub batch: usize,

    /// Cost table (JSON) to predict latency and to recalibrate.
    #[arg(long)]
    pub table: Option<PathBuf>,

    /// Random seed; a CPU run with the same seed and settings proposes the same candidates.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Output folder (default: runs/search-YYYYMMDD-HHMMSS).
    #[arg(long, conflicts_with = "resume")]
    pub out: Option<PathBuf>,

    /// Continue the search whose outputs are in this folder, with the options of its earlier
    /// runs (stored in DIR/command.json). Options given now override them, such as --evals.
    #[arg(long)]
    pub resume: Option<PathBuf>,

    /// Also write a Hugging Face config.json for every front architecture, to OUT/front/EVAL/,
    /// where EVAL is its evaluation number (the eval column of the front). Architectures with
    /// per-layer shapes are skipped with a warning, because the Hugging Face configs have one
    /// shape for all layers.
    #[arg(long)]
    pub export_front: bool,

    /// Batch of the measured forward passes.
    #[arg(long, default_value_t = 1)]
    pub measure_batch: u64,

    /// Prefill length, and KV-cache length of the decode step, of the measured passes.
    #[arg(long, default_value_t = 64)]
    pub measure_seq: u64,

    /// Timed runs per measured pass (the median is kept).
    #[arg(long, default_value_t = 2)]
    pub measure_runs: u32,
}

/// The evaluator kinds of `--evaluator`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EvaluatorKind {
    Proxy,
    Measure,
    Table,
    Command,
}

impl EvaluatorKind {
    fn parse(text: &str) -> crate::Result<Self> {
        match text {
            "proxy" => Ok(EvaluatorKind::Proxy),
            "measure" => Ok(EvaluatorKind::Measure),
            "table" => Ok(EvaluatorKind::Table),
            "command" => Ok(EvaluatorKind::Command),
            other => Err(crate::Error::Invalid(format!(
                "unknown --evaluator `{other}`; use proxy, measure, table or command"
            ))),
        }
    }
}

pub fn run(args: &Args, global: &Global) -> crate::Result<()> {
    // A resume takes the stored options of the runs before it, overridden by those given now.
    let (args, global, stored_command) = match &args.resume {
        Some(dir) => {
            // Checked before the stored options are read, so a wrong folder gets one clear error.
            if !dir.join("history.jsonl").is_file() {
                return Err(crate::Error::Invalid(format!(
                    "--resume {}: no history.jsonl there; give the --out folder of an earlier search",
                    dir.display()
                )));
            }
            let resolved = super::resume::resolve(args, global, dir);
            // `cli::run` left the pool to this point, so build it even when resolving failed.
            super::init_pool(resolved.as_ref().map_or(global, |(_, merged, _)| merged));
            resolved?
        }
        None => (args.clone(), global.clone(), None),
    };
    let (args, global) = (&args, &global);
    let quality = Quality::from_options(&args.quality, args.train_tokens)?;
    if args.train_tokens.is_some() && !matches!(quality, Quality::ScalingLaw { .. }) {
        log::warn!("--train-tokens is used only with --quality scaling-law; it has no effect with --quality {}", args.quality);
    }
    let (space, table) = build_space(args)?;
    if table.is_none() {
        // Checked here as well as in the search, so that a bad name leaves no output folder.
        crate::search::tree_search::select_space_features(&*space, &args.features)?;
    }
    let kind = match &args.evaluator {
        Some(name) => EvaluatorKind::parse(name)?,
        None if table.is_some() => EvaluatorKind::Table,
        None => EvaluatorKind::Measure,
    };
    if args.eval_cmd.is_some() && kind != EvaluatorKind::Command {
        return Err(crate::Error::Invalid("--eval-cmd needs --evaluator command".into()));
    }
    if args.eval_cmd.is_none() && kind == EvaluatorKind::Command {
        return Err(crate::Error::Invalid("--evaluator command needs --eval-cmd \"PROGRAM ARGS\"".into()));
    }
    if table.is_some() && matches!(kind, EvaluatorKind::Proxy | EvaluatorKind::Measure) {
        return Err(crate::Error::Invalid(format!(
            "--evaluator {} needs architectures, but the rows of --space-table are not architectures; use --evaluator table or command",
            args.evaluator.as_deref().unwrap_or("measure")
        )));
    }

    let objectives = build_objectives(args, kind, quality)?;
    let constraints = build_constraints(args)?;
    let required: Vec<String> = objectives
        .iter()
        .map(|o| o.metric.clone())
        .chain(constraints.iter().map(|c| c.metric.clone()))
        .collect();
    let evaluator = build_evaluator(args, global, kind, quality, table.clone(), required.clone())?;

    let (out_dir, resume) = match (&args.resume, &args.out) {
        (Some(dir), _) => (dir.clone(), true),
        (None, Some(dir)) => (dir.clone(), false),
        (None, None) => (default_out_dir(), false),
    };
    if resume && !out_dir.join("history.jsonl").is_file() {
        return Err(crate::Error::Invalid(format!(
            "--resume {}: no history.jsonl there; give the --out folder of an earlier search",
            out_dir.display()
        )));
    }

    let surrogate = match args.surrogate.as_str() {
        "mlp" => SurrogateKind::Mlp(Default::default()),
        "ridge" => SurrogateKind::Ridge,
        other => return Err(crate::Error::Invalid(format!("unknown --surrogate `{other}`; use mlp or ridge"))),
    };
    let mut table_features = match (&table, args.features.is_empty()) {
        (Some(table), false) => {
            let objective_names: Vec<String> = objectives.iter().map(|o| o.metric.clone()).collect();
            let constraint_names: Vec<String> = constraints.iter().map(|c| c.metric.clone()).collect();
            let features = TableFeatures::new(table, &args.features, &objective_names, &constraint_names)?;
            log::info!("surrogate features: {}", features.names().join(", "));
            Some(features)
        }
        _ => None,
    };
    let strategy = Strategy::parse(&args.strategy)?;
    if strategy != Strategy::Mcts && (!args.features.is_empty() || args.surrogate != "mlp") {
        log::warn!("--features and --surrogate only affect --strategy mcts; the {} strategy uses no surrogate", strategy.name());
    }

    let stop = install_stop_handler();
    let cfg = SearchConfig {
        strategy,
        surrogate,
        // With a table space, --features selects columns through the hooks instead.
        space_features: if table.is_none() { args.features.clone() } else { Vec::new() },
        objectives: objectives.clone(),
        constraints,
        evals: args.evals,
        batch: args.batch,
        seed: args.seed,
        workers: args.workers,
        out_dir: Some(out_dir.clone()),
        resume,
        stop: stop.clone(),
        progress: !global.json && global.quiet == 0,
        scoring_gpu: match crate::device::Backend::resolve_for_measurement(global.backend)? {
            crate::device::Backend::Gpu(ctx) => Some(ctx),
            crate::device::Backend::Cpu => None,
        },
        ..SearchConfig::default()
    };
    let mut feedback = match &args.table {
        Some(path) => Some(cost_feedback(args, path, &*evaluator)?),
        None => None,
    };
    if resume {
        // Checked before anything is stored, so a rejected resume leaves command.json as it was.
        let done = crate::search::check_resumable(&*space, &*evaluator, &cfg)?;
        if done >= cfg.evals {
            log::warn!(
                "{} already contains {done} evaluations, the whole budget of {}; raise it with --evals to continue the search",
                out_dir.display(),
                cfg.evals
            );
        }
        if let Some(stored) = &stored_command {
            crate::search::write_json_atomic(&out_dir.join(super::resume::COMMAND_FILE), stored)?;
        }
    }
    // A folder this run creates is removed again when the search stops with an error before
    // any result is recorded, so a mistyped option leaves nothing behind.
    let created_here = !resume && !out_dir.exists();
    if !resume && !has_results(&out_dir) {
        super::resume::record_new(&out_dir, global)?;
    }
    if let Some(ctx) = &cfg.scoring_gpu {
        log::info!("the surrogate scores each leaf batch on {} in one dispatch", ctx.info.name);
    }
    log::info!(
        "search: space {}, evaluator {}, strategy {}, {} evaluations, output {}",
        space.name(),
        evaluator.name(),
        cfg.strategy.name(),
        cfg.evals,
        out_dir.display()
    );

    let result = match (feedback.as_mut(), table_features.as_mut()) {
        (Some(hooks), _) => crate::search::run_search(space, evaluator, &cfg, hooks),
        (None, Some(hooks)) => crate::search::run_search(space, evaluator, &cfg, hooks),
        (None, None) => crate::search::run_search(space, evaluator, &cfg, &mut NoHooks),
    };
    let report = match result {
        Ok(report) => report,
        Err(err) => {
            if created_here && !has_results(&out_dir) {
                if let Err(e) = std::fs::remove_dir_all(&out_dir) {
                    log::debug!("cannot remove {}: {e}", out_dir.display());
                }
            }
            return Err(err);
        }
    };
    if let Some(feedback) = &feedback {
        let path = out_dir.join("cost_table.json");
        let mut table = feedback.table().clone();
        table.save(&path)?;
        log::info!("wrote the recalibrated cost table to {}", path.display());
    }

    write_plot(&out_dir, &objectives, &report)?;
    let exported = if args.export_front { export_front(&out_dir, &report) } else { Vec::new() };

    if global.json {
        print_json_summary(&out_dir, &objectives, &report, &exported)?;
    } else {
        print_front(&objectives, &cfg.constraints, &report);
        println!("outputs: {}", out_dir.display());
        if args.export_front {
            println!("exported {} of {} front architectures to {}", exported.len(), report.front.len(), out_dir.join("front").display());
        }
    }
    if report.stopped {
        return Err(crate::Error::Interrupted(format!(
            "stopped early after {} evaluation{}; continue with --resume {}",
            report.history.len(),
            if report.history.len() == 1 { "" } else { "s" },
            out_dir.display()
        )));
    }
    // A run in which nothing succeeded exits with an error, so scripts notice; its outputs
    // are written all the same.
    let ok = report.status_counts.get("ok").copied().unwrap_or(0);
    if ok == 0 && !report.history.is_empty() {
        let first_error = report.history.iter().find_map(|r| r.outcome.error.clone()).unwrap_or_else(|| "no error message".into());
        if report.history.iter().all(|r| r.outcome.status == crate::eval::Status::Infeasible) {
            return Err(crate::Error::Invalid(format!(
                "all {} candidates broke a constraint known before evaluation, so none was evaluated (the first: {}); relax the constraint",
                report.history.len(),
                first_error.strip_prefix("not evaluated: ").unwrap_or(&first_error)
            )));
        }
        return Err(crate::Error::Invalid(format!(
            "none of the {} evaluations succeeded (the first error: {first_error}); see {}",
            report.history.len(),
            out_dir.join("history.jsonl").display()
        )));
    }
    Ok(())
}

/// Joins the cost table at `path` to the search: its predictions become surrogate features, and
/// the evaluator's measured latencies recalibrate it. The latencies are taken to be measured at
/// `--measure-batch` and `--measure-seq`, as the `measure` evaluator does.
fn cost_feedback(args: &Args, path: &std::path::Path, evaluator: &dyn Evaluator) -> crate::Result<CostTableFeedback> {
    let table = crate::cost::CostTable::load(path)?;
    table.require_entries()?;
    let settings = MeasureSettings {
        batch: args.measure_batch,
        prefill_seq: args.measure_seq,
        decode_cache: args.measure_seq,
        ..MeasureSettings::default()
    };
    let reported = evaluator.metric_names();
    let passes: Vec<MeasuredPass> = MeasuredPass::of_measure(&settings)
        .into_iter()
        .filter(|p| reported.contains(&p.metric) && table.settings.modes.contains(&p.mode))
        .collect();
    if passes.is_empty() {
        return Err(crate::Error::Invalid(format!(
            "--table {} is recalibrated with measured latencies, but the {} evaluator reports neither latency_prefill_ms nor latency_decode_ms in a mode the table has ({}); use --evaluator measure",
            path.display(),
            evaluator.name(),
            table.settings.modes.iter().map(|m| m.to_string()).collect::<Vec<_>>().join(", ")
        )));
    }
    // The measure evaluator times on this machine; a table of another kind of device would be
    // corrected towards latencies it does not describe.
    if let Some(measured_on) = evaluator.settings().get("backend") {
        let table_on_cpu = table.device.backend == "cpu";
        if table_on_cpu != (measured_on == "cpu") {
            let (here, fix) = if measured_on == "cpu" {
                ("on the CPU", "profile the CPU with `alphanas profile --backend cpu`, or measure on the GPU with --backend gpu")
            } else {
                ("on the GPU", "profile the GPU with `alphanas profile --backend gpu`, or measure on the CPU with --backend cpu")
            };
            return Err(crate::Error::Invalid(format!(
                "--table {} was profiled on {} ({}), but the measure evaluator measures {here}; {fix}",
                path.display(),
                table.device.name,
                table.device.backend
            )));
        }
    }
    if table.settings.batch != args.measure_batch || table.settings.seq != args.measure_seq {
        log::info!(
            "{} was profiled at batch {}, seq {}; predicting the measured passes at batch {}, seq {} by interpolation",
            path.display(),
            table.settings.batch,
            table.settings.seq,
            args.measure_batch,
            args.measure_seq
        );
    }
    log::info!("cost table {} ({}, {}) recalibrates on {}", path.display(), table.device.name, table.device.backend, passes.iter().map(|p| p.metric.as_str()).collect::<Vec<_>>().join(", "));
    CostTableFeedback::new(table, passes)
}

/// A search space, and the same space as a table when its candidates are table rows.
type Spaces = (Arc<dyn SearchSpace>, Option<Arc<TableSpace>>);

/// Builds the search space, and also returns the table space when the candidates are table rows.
fn build_space(args: &Args) -> crate::Result<Spaces> {
    // Checked here rather than by clap, because a resume may take these options from
    // command.json and the command line together.
    match (&args.space_table, args.decisions.is_empty()) {
        (Some(path), true) => {
            return Err(crate::Error::Invalid(format!(
                "--space-table {} needs --decisions COLS, the columns that make up a candidate",
                path.display()
            )))
        }
        (None, false) => return Err(crate::Error::Invalid("--decisions needs --space-table FILE.csv".into())),
        _ => {}
    }
    if let Some(path) = &args.space_table {
        let table = Arc::new(TableSpace::from_csv(path, &args.decisions)?);
        return Ok((table.clone(), Some(table)));
    }
    let space = crate::space::Space::resolve(&args.space)?;
    Ok((Arc::new(space), None))
}

/// Parses the objectives given, or returns the evaluator's defaults. For `measure` these are
/// decode latency, the quality estimate and peak memory. For `proxy` they are FLOPs per token
/// and the quality estimate.
fn build_objectives(args: &Args, kind: EvaluatorKind, quality: Quality) -> crate::Result<Vec<Objective>> {
    if !args.objectives.is_empty() {
        return args.objectives.iter().map(|text| Objective::parse(text)).collect();
    }
    let defaults: Vec<String> = match kind {
        EvaluatorKind::Measure => vec!["min:latency_decode_ms".into(), quality.objective(), "min:peak_memory_bytes".into()],
        EvaluatorKind::Proxy => vec!["min:flops_per_token".into(), quality.objective()],
        EvaluatorKind::Table if args.space_table.is_none() => {
            // The missing table is the first thing to fix, so it is named before the objectives.
            return Err(crate::Error::Invalid(
                "--evaluator table reads metrics from --space-table; give --space-table FILE.csv --decisions COLS".into(),
            ));
        }
        EvaluatorKind::Table | EvaluatorKind::Command => {
            return Err(crate::Error::Invalid(
                "the table and command evaluators have no default objectives; add one or more --objective min:NAME or max:NAME".into(),
            ))
        }
    };
    defaults.iter().map(|text| Objective::parse(text)).collect()
}

/// Parses the constraints given and adds those of the shorthand options.
fn build_constraints(args: &Args) -> crate::Result<Vec<Constraint>> {
    let mut texts = args.constraints.clone();
    let shorthands = [
        ("--max-latency-ms", "latency_decode_ms", args.max_latency_ms, 1.0),
        ("--max-params", "params", args.max_params, 1.0),
        ("--max-memory-mb", "peak_memory_bytes", args.max_memory_mb, (1u64 << 20) as f64),
    ];
    for (option, metric, value, scale) in shorthands {
        if let Some(value) = value {
            if !(value.is_finite() && value > 0.0) {
                return Err(crate::Error::Invalid(format!("{option} ({value}) must be a positive number")));
            }
            texts.push(format!("{metric}<={}", value * scale));
        }
    }
    texts.iter().map(|text| Constraint::parse(text)).collect()
}

fn build_evaluator(
    args: &Args,
    global: &Global,
    kind: EvaluatorKind,
    quality: Quality,
    table: Option<Arc<TableSpace>>,
    required: Vec<String>,
) -> crate::Result<Arc<dyn Evaluator>> {
    let analytic = AnalyticSettings { seq_len: args.measure_seq, batch: args.measure_batch, ..AnalyticSettings::default() };
    match kind {
        EvaluatorKind::Proxy => Ok(Arc::new(ProxyEvaluator::new(quality, analytic))),
        EvaluatorKind::Measure => {
            let settings = MeasureSettings {
                batch: args.measure_batch,
                prefill_seq: args.measure_seq,
                decode_cache: args.measure_seq,
                runs: args.measure_runs,
                seed: args.seed,
                ..MeasureSettings::default()
            };
            let backend = select_backend(global.backend)?;
            Ok(Arc::new(MeasureEvaluator::new(backend, settings, quality)?))
        }
        EvaluatorKind::Table => {
            let Some(table) = table else {
                return Err(crate::Error::Invalid(
                    "--evaluator table reads metrics from --space-table; give --space-table FILE.csv --decisions COLS".into(),
                ));
            };
            Ok(Arc::new(crate::search::TableEvaluator::new(table)))
        }
        EvaluatorKind::Command => {
            let Some(line) = &args.eval_cmd else {
                return Err(crate::Error::Invalid(
                    "--evaluator command needs --eval-cmd \"PROGRAM ARGS\"".into(),
                ));
            };
            // A year, so deadlines computed from the timeout cannot overflow.
            const MAX_TIMEOUT_S: f64 = 365.0 * 24.0 * 3600.0;
            let timeout = match args.eval_timeout {
                None => None,
                Some(s) if s.is_finite() && s > 0.0 && s <= MAX_TIMEOUT_S => Some(Duration::from_secs_f64(s)),
                Some(s) => {
                    return Err(crate::Error::Invalid(format!(
                        "--eval-timeout ({s}) must be a positive number of seconds, at most {MAX_TIMEOUT_S} (365 days); leave it out for no time-out"
                    )))
                }
            };
            Ok(Arc::new(CommandEvaluator::from_command_line(line, timeout, required)?))
        }
    }
}

/// Selects the forward-pass backend of the `measure` evaluator for `--backend`. `auto` measures
/// on a hardware GPU when there is one. A CPU-type adapter such as lavapipe emulates the GPU on
/// the processor and is many times slower than the native CPU kernels, so `auto` uses the CPU
/// there; `--backend gpu` still forces it.
fn select_backend(choice: BackendChoice) -> crate::Result<Box<dyn crate::eval::measure::ForwardBackend>> {
    use crate::eval::measure::{CpuBackend, GpuBackend};

    match crate::device::Backend::resolve_for_measurement(choice)? {
        crate::device::Backend::Gpu(ctx) => {
            log::info!("measuring candidates on the GPU {}", ctx.info.name);
            Ok(Box::new(GpuBackend::new(ctx)))
        }
        crate::device::Backend::Cpu => Ok(Box::new(CpuBackend::new())),
    }
}

/// Returns the stop flag that Ctrl-C sets, cleared for this run. The handler is installed once
/// per process, and a second Ctrl-C exits at once with status 130.
fn install_stop_handler() -> Arc<AtomicBool> {
    static STOP: OnceLock<Arc<AtomicBool>> = OnceLock::new();
    let stop = STOP.get_or_init(|| {
        let flag = Arc::new(AtomicBool::new(false));
        let handler_flag = flag.clone();
        let installed = ctrlc::set_handler(move || {
            if handler_flag.swap(true, Ordering::SeqCst) {
                let killed = crate::eval::command::kill_running_trials();
                eprintln!("interrupted twice; killed {killed} running command trial(s) and exiting; history.jsonl keeps every finished result");
                std::process::exit(130);
            }
            eprintln!("interrupt received: finishing the evaluations in flight and writing outputs (interrupt again to quit now)");
        });
        if let Err(e) = installed {
            log::warn!("cannot install the Ctrl-C handler ({e}); Ctrl-C will end the search without writing the final outputs");
        }
        flag
    });
    stop.store(false, Ordering::SeqCst);
    stop.clone()
}

/// Returns whether the search folder `dir` has a non-empty `history.jsonl`.
fn has_results(dir: &Path) -> bool {
    std::fs::metadata(dir.join("history.jsonl")).is_ok_and(|m| m.len() > 0)
}

/// `runs/search-YYYYMMDD-HHMMSS` in UTC.
fn default_out_dir() -> PathBuf {
    let seconds = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    PathBuf::from("runs").join(format!("search-{}", utc_timestamp(seconds)))
}

/// Formats Unix time `seconds` as `YYYYMMDD-HHMMSS` (UTC), with the days-to-civil-date
/// conversion of Howard Hinnant's `chrono`-compatible date algorithms.
fn utc_timestamp(seconds: u64) -> String {
    let days = (seconds / 86_400) as i64;
    let rem = seconds % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!("{year:04}{month:02}{day:02}-{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}

/// Writes `pareto.svg` for the first two objectives; with one objective the plot shows it
/// against evaluation order.
fn write_plot(out_dir: &Path, objectives: &[Objective], report: &SearchReport) -> crate::Result<()> {
    let minimize = |o: &Objective| o.sense == Sense::Min;
    let first = &objectives[0];
    type XOf = Box<dyn Fn(usize, &std::collections::BTreeMap<String, f64>) -> Option<f64>>;
    let (x_axis, y_axis, x_of): (PlotAxis, PlotAxis, XOf) =
        if let Some(second) = objectives.get(1) {
            let name = first.metric.clone();
            (
                PlotAxis::new(first.metric.clone(), minimize(first)),
                PlotAxis::new(second.metric.clone(), minimize(second)),
                Box::new(move |_, metrics| metrics.get(&name).copied()),
            )
        } else {
            (PlotAxis::new("evaluation", true), PlotAxis::new(first.metric.clone(), minimize(first)), Box::new(|eval, _| Some(eval as f64)))
        };
    let y_name = &y_axis.name;

    let mut data = PlotData::default();
    for record in &report.history {
        if record.outcome.status != crate::eval::Status::Ok {
            continue;
        }
        let metrics = &record.outcome.metrics;
        if let (Some(x), Some(&y)) = (x_of(record.eval, metrics), metrics.get(y_name)) {
            data.evaluated.push((x, y));
        }
    }
    for point in &report.front {
        if let (Some(x), Some(&y)) = (x_of(point.eval, &point.metrics), point.metrics.get(y_name)) {
            data.front.push((x, y));
        }
    }
    let path = out_dir.join("pareto.svg");
    // The chart is a convenience; the data files are already written, so a failure only warns.
    match write_pareto_svg(&path, &x_axis, &y_axis, &data) {
        Ok(()) => log::info!("wrote {}", path.display()),
        Err(err) => log::warn!("{} not written: {err}", path.display()),
    }
    Ok(())
}

/// Writes `front/<eval>/config.json` for every front architecture that a Hugging Face format
/// can express, named by its evaluation number (the `eval` column of the printed front and of
/// front.csv), and returns the folders written. Others are skipped with a warning.
fn export_front(out_dir: &Path, report: &SearchReport) -> Vec<PathBuf> {
    let mut written = Vec::new();
    for point in &report.front {
        let eval = point.eval;
        let Candidate::Arch(arch) = &point.candidate else {
            log::warn!("front point of evaluation {eval} is a table row, which has no architecture to export");
            continue;
        };
        let dir = out_dir.join("front").join(eval.to_string());
        let format = crate::export::Format::natural_for(arch);
        match crate::export::write_hf_config(arch, format, &dir) {
            Ok(_) => written.push(dir),
            Err(e) => log::warn!("front point of evaluation {eval} ({}) not exported: {e}", arch.summary()),
        }
    }
    written
}

fn describe_candidate(candidate: &Candidate) -> String {
    match candidate {
        Candidate::Arch(arch) => arch.summary(),
        Candidate::Row { source_row, values, .. } => {
            let parts: Vec<String> = values.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("row {source_row}: {}", parts.join(" "))
        }
    }
}

/// Prints the front as a table, one row per point, sorted by the first objective.
fn print_front(objectives: &[Objective], constraints: &[Constraint], report: &SearchReport) {
    let count = |status: &str| report.status_counts.get(status).copied().unwrap_or(0);
    let mut counts = vec![format!("{} ok", count("ok"))];
    if report.ok_over_constraint > 0 {
        counts.push(format!("{} of them over a constraint", report.ok_over_constraint));
    }
    for status in ["infeasible", "failed", "timeout"] {
        if count(status) > 0 {
            counts.push(format!("{} {status}", count(status)));
        }
    }
    println!(
        "{} evaluations ({}), Pareto front of {} point{}:",
        report.history.len(),
        counts.join(", "),
        report.front.len(),
        if report.front.len() == 1 { "" } else { "s" }
    );
    if report.front.is_empty() {
        if constraints.is_empty() {
            println!("  (no ok result; see the errors in history.jsonl)");
        } else {
            println!("  (no ok result within the constraints; loosen them or see the errors in history.jsonl)");
        }
        return;
    }
    let mut header = format!("{:>5}", "eval");
    for objective in objectives {
        header.push_str(&format!("  {:>22}", objective.to_string()));
    }
    header.push_str("  architecture");
    println!("{header}");

    let mut points: Vec<_> = report.front.iter().collect();
    points.sort_by(|a, b| a.objectives[0].total_cmp(&b.objectives[0]));
    for point in points {
        let mut line = format!("{:>5}", point.eval);
        for value in &point.objectives {
            line.push_str(&format!("  {:>22}", format_value(*value)));
        }
        line.push_str(&format!("  {}", describe_candidate(&point.candidate)));
        println!("{line}");
    }
    if let Some(hv) = report.hypervolume.last() {
        // The reference point is in objective units: for a maximised objective it lies below
        // the worst value, and may be negative.
        let reference: Vec<String> =
            objectives.iter().zip(&report.reference_point).map(|(o, &v)| format!("{} {}", o.metric, format_value(v))).collect();
        if hv.is_finite() {
            println!("hypervolume {} (reference point: {})", format_value(*hv), reference.join(", "));
        } else {
            // summary.json stores such a value as null.
            println!("hypervolume not computed: the objective values span more than f64 can hold (reference point: {})", reference.join(", "));
        }
    }
}

/// Four decimals, with thousands grouping for large integers and exponent notation for very
/// small or large values.
fn format_value(value: f64) -> String {
    // Whole numbers below 1e15, such as parameter counts, are grouped. Every f64 above about
    // 4.5e15 is whole, so larger values use the exponent form.
    if value.abs() >= 1e4 && value.fract() == 0.0 && value.abs() < 1e15 {
        let sign = if value < 0.0 { "-" } else { "" };
        format!("{sign}{}", super::arch::group(value.abs() as u64))
    } else if value != 0.0 && (value.abs() < 1e-3 || value.abs() >= 1e9) {
        format!("{value:.4e}")
    } else if value.fract() == 0.0 {
        format!("{value}")
    } else {
        format!("{value:.4}")
    }
}

fn print_json_summary(out_dir: &Path, objectives: &[Objective], report: &SearchReport, exported: &[PathBuf]) -> crate::Result<()> {
    let front: Vec<serde_json::Value> = report
        .front
        .iter()
        .map(|point| {
            let values: serde_json::Map<String, serde_json::Value> = objectives
                .iter()
                .zip(&point.objectives)
                .map(|(o, v)| (o.metric.clone(), serde_json::json!(v)))
                .collect();
            serde_json::json!({
                "eval": point.eval,
                "objectives": values,
                "candidate": crate::search::candidate_json(&point.candidate),
            })
        })
        .collect();
    super::print_json(&serde_json::json!({
        "out_dir": out_dir.display().to_string(),
        "evaluations": report.history.len(),
        "new_evaluations": report.new_evaluations,
        "status_counts": report.status_counts,
        "front": front,
        "hypervolume": report.hypervolume.last(),
        "stopped": report.stopped,
        "exported": exported.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamp_known_dates() {
        assert_eq!(utc_timestamp(0), "19700101-000000");
        // 2024-02-29 12:34:56 UTC (a leap day).
        assert_eq!(utc_timestamp(1_709_210_096), "20240229-123456");
        // 2026-12-04 20:20:27 UTC.
        assert_eq!(utc_timestamp(1_796_415_627), "20261204-202027");
    }

    #[test]
    fn value_formats() {
        assert_eq!(format_value(123_456_789.0), "123,456,789");
        assert_eq!(format_value(2.71234), "2.7123");
        assert_eq!(format_value(2.0), "2");
        assert_eq!(format_value(0.00001), "1.0000e-5");
        assert_eq!(format_value(332_587_069_841_888_896.0), "3.3259e17");
    }
}
