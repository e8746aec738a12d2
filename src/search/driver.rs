//! The outer search loop. Each round proposes candidates, evaluates them in parallel and
//! journals each result, and the strategy refits on the next round. The loop ends when the
//! budget is spent or the stop flag is set, and then writes the outputs.

use super::baselines::{EvolutionProposer, LocalProposer, RandomProposer};
use super::config::{Progress, SearchConfig, SearchHooks, SearchReport, Strategy};
use super::journal::{self, EvalRecord, Journal, Settings};
use super::tree_search::MctsProposer;
use super::outputs;
use super::problem::Problem;
use crate::eval::{EvalOutcome, Evaluator, Status};
use crate::space::{Candidate, SearchSpace};
use rand::rngs::StdRng;
use rand::SeedableRng;
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// One candidate a strategy wants evaluated.
#[derive(Debug, Clone)]
pub(crate) struct Proposal {
    pub choices: Vec<u32>,
    pub source: &'static str,
    /// Surrogate mean per target, in [`Problem::targets`] order.
    pub predicted: Option<Vec<f64>>,
}

/// Inputs of one proposal step.
pub(crate) struct Context<'a> {
    pub space: &'a dyn SearchSpace,
    pub problem: &'a Problem,
    pub history: &'a [EvalRecord],
    /// Choice sequences already evaluated.
    pub seen: &'a HashSet<Vec<u32>>,
    pub hooks: &'a mut dyn SearchHooks,
    pub rng: &'a mut StdRng,
}

/// Work counters of a strategy, reported in `summary.json`.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Counters {
    pub simulations: u64,
    pub leaf_batches: u64,
    pub surrogate_dispatches: u64,
    /// Seconds spent in tree simulations (selection, rollout, scoring, backup).
    pub simulation_seconds: f64,
}

/// A search strategy.
pub(crate) trait Proposer {
    /// Up to `n` distinct candidates not in `ctx.seen`. Fewer (or none) means the strategy
    /// cannot find more unseen candidates.
    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> crate::Result<Vec<Proposal>>;

    /// Work done so far.
    fn counters(&self) -> Counters {
        Counters::default()
    }

    /// Name of the surrogate and the names of its input features, when the strategy uses one.
    fn surrogate_inputs(&self) -> Option<(String, Vec<String>)> {
        None
    }
}

/// Runs a search of `space` with `evaluator` as configured by `cfg`, writing the journal and
/// outputs to `cfg.out_dir` when set.
///
/// No choice sequence is evaluated twice, resumed evaluations included. With the same seed,
/// space, evaluator and settings, a run on the CPU makes the same proposals and so writes the
/// same history (evaluator timings aside), whatever the number of workers, because results
/// are journaled in proposal order.
pub fn run_search(
    space: Arc<dyn SearchSpace>,
    evaluator: Arc<dyn Evaluator>,
    cfg: &SearchConfig,
    hooks: &mut dyn SearchHooks,
) -> crate::Result<SearchReport> {
    cfg.validate()?;
    let problem = Problem::new(&cfg.objectives, &cfg.constraints).with_exact_targets(&*evaluator);
    check_metric_names(&*evaluator, &problem)?;
    // Checked before anything is evaluated, although only the tree's surrogate reads them.
    super::tree_search::select_space_features(&*space, &cfg.space_features)?;
    if !cfg.space_features.is_empty() && !hooks.keep_space_features() && !hooks.extra_feature_names().is_empty() {
        return Err(crate::Error::Invalid(
            "space features were selected, but the search hooks replace the space's features with their own; select one or the other".into(),
        ));
    }
    let settings = Settings::new(
        &*space,
        &*evaluator,
        &cfg.objectives,
        &cfg.constraints,
        cfg.strategy.name(),
        cfg.seed,
    );
    // Held until the search returns, so a second process cannot write the same journal.
    let _lock = match &cfg.out_dir {
        Some(dir) => Some(lock_out_dir(dir, cfg.resume)?),
        None => None,
    };
    let mut history = prepare_out_dir(cfg, &settings, &*space)?;
    let mut journal = match &cfg.out_dir {
        Some(dir) => Some(Journal::open(dir)?),
        None => None,
    };
    let resumed = history.len();
    if resumed > 0 {
        log::info!("resuming with {resumed} evaluations from the journal");
        for record in &history {
            hooks.on_result(&record.candidate, &record.outcome);
        }
    }
    let mut seen: HashSet<Vec<u32>> = history.iter().map(|r| r.choices.clone()).collect();

    let mut rng = StdRng::seed_from_u64(cfg.seed.wrapping_add((resumed as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)));
    let mut proposer: Box<dyn Proposer> = match cfg.strategy {
        Strategy::Mcts => Box::new(MctsProposer::new(cfg)),
        Strategy::Random => Box::new(RandomProposer),
        Strategy::Evolution => Box::new(EvolutionProposer::new(cfg.population, cfg.tournament)),
        Strategy::Local => Box::new(LocalProposer::new(cfg.local_patience)),
    };

    let bar = progress_bar(cfg, history.len());
    let mut progress = Progress { evaluations: 0, evals: cfg.evals, feasible: 0, best: None };
    for record in &history {
        update_progress(&problem, &mut progress, record);
    }
    let started = Instant::now();
    let mut stopped = false;
    let mut exhausted = false;
    let mut round = 0usize;
    log::info!(
        "search started: strategy {}, space {} ({} candidates), evaluator {}, {} evaluations",
        cfg.strategy.name(),
        space.name(),
        settings.space_size,
        evaluator.name(),
        cfg.evals
    );
    while history.len() < cfg.evals {
        if cfg.stop.load(Ordering::SeqCst) {
            stopped = true;
            break;
        }
        let requested = cfg.q.min(cfg.evals - history.len());
        let proposals = {
            let mut ctx = Context {
                space: &*space,
                problem: &problem,
                history: &history,
                seen: &seen,
                hooks: &mut *hooks,
                rng: &mut rng,
            };
            proposer.propose(&mut ctx, requested)?
        };
        if proposals.is_empty() {
            log::info!("no unseen candidates are left after {} evaluations; stopping", history.len());
            exhausted = true;
            break;
        }
        let first = history.len();
        let candidates: Vec<Candidate> = proposals.iter().map(|p| space.candidate(&p.choices)).collect();
        let mut write_error = None;
        let finished = evaluate_in_order(&evaluator, &problem, &candidates, first, cfg.workers, &cfg.stop, |i, outcome| {
            let proposal = &proposals[i];
            let predicted = proposal.predicted.as_ref().map(|values| {
                problem.targets.iter().cloned().zip(values.iter().copied()).collect::<BTreeMap<_, _>>()
            });
            let record = EvalRecord {
                eval: first + i,
                source: proposal.source.to_string(),
                choices: proposal.choices.clone(),
                candidate: candidates[i].clone(),
                outcome,
                predicted,
            };
            if let Some(journal) = journal.as_mut() {
                if let Err(e) = journal.append(&record) {
                    write_error = Some(e);
                    return false;
                }
            }
            log::debug!("evaluation {} ({}): {:?} {:?}", record.eval, record.source, record.outcome.status, record.outcome.metrics);
            hooks.on_result(&record.candidate, &record.outcome);
            seen.insert(record.choices.clone());
            update_progress(&problem, &mut progress, &record);
            history.push(record);
            hooks.on_progress(&progress);
            bar.set_position(history.len() as u64);
            if let Some(best) = progress.best {
                bar.set_message(format!("best {best:.4}, {} feasible", progress.feasible));
            }
            true
        });
        if let Some(e) = write_error {
            bar.abandon();
            return Err(e);
        }
        if finished < proposals.len() {
            stopped = true;
            break;
        }
        round += 1;
        log::info!("round {round}: {} evaluations done", history.len());
    }
    if cfg.stop.load(Ordering::SeqCst) && history.len() < cfg.evals {
        stopped = true;
    }
    bar.finish_and_clear();
    if stopped {
        log::warn!("search stopped early after {} of {} evaluations; writing outputs", history.len(), cfg.evals);
    }

    let counters = proposer.counters();
    let elapsed = started.elapsed().as_secs_f64();
    let report = outputs::build_report(
        &problem,
        cfg,
        history,
        resumed,
        counters,
        stopped,
        exhausted,
    )?;
    if let Some(dir) = &cfg.out_dir {
        outputs::write_outputs(dir, &settings, &problem, &report, proposer.surrogate_inputs(), elapsed, hooks.summary())?;
    }
    log::info!(
        "search finished: {} evaluations ({} new), {} on the front, {} simulations",
        report.history.len(),
        report.new_evaluations,
        report.front.len(),
        report.simulations
    );
    Ok(report)
}

fn check_metric_names(evaluator: &dyn Evaluator, problem: &Problem) -> crate::Result<()> {
    let known = evaluator.metric_names();
    if known.is_empty() {
        return Ok(());
    }
    for target in &problem.targets {
        if !known.contains(target) {
            // The scaling-law loss is one option away for the evaluators that estimate quality.
            let hint = if target == crate::eval::proxy::LOSS && known.iter().any(|k| k == crate::eval::proxy::DECODER_PARAMS) {
                " (`loss` needs --quality scaling-law --train-tokens D)"
            } else {
                ""
            };
            return Err(crate::Error::Invalid(format!(
                "metric `{target}` is not returned by the {} evaluator, which returns: {}; fix the objective or constraint{hint}",
                evaluator.name(),
                known.join(", ")
            )));
        }
    }
    Ok(())
}

/// File in the output directory that a running search holds an exclusive lock on.
const LOCK_FILE: &str = ".alphanas.lock";

/// Takes the exclusive lock of the output directory `dir`, creating the directory for a new
/// search. The operating system releases the lock when the returned file is closed, also
/// when the process is killed.
fn lock_out_dir(dir: &Path, resume: bool) -> crate::Result<File> {
    if resume && !dir.is_dir() {
        return Err(crate::Error::Invalid(format!(
            "cannot resume {}: the directory does not exist; give the --out directory of an earlier search",
            dir.display()
        )));
    }
    crate::error::create_dir_all(dir)?;
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| crate::Error::io(format!("cannot open {}", path.display()), e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(crate::Error::Invalid(format!(
            "another search is running in {}; let it finish (or stop it) and then resume, or use another --out directory",
            dir.display()
        ))),
        Err(TryLockError::Error(e)) => Err(crate::Error::io(format!("cannot lock {}", path.display()), e)),
    }
}

/// Reads the `settings.json` of the search recorded in `dir`.
fn stored_settings(dir: &Path) -> crate::Result<Settings> {
    let path = dir.join("settings.json");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| crate::Error::io(format!("cannot resume: cannot read {}", path.display()), e))?;
    serde_json::from_str(&text)
        .map_err(|e| crate::Error::Invalid(format!("cannot resume: {} is not valid ({e})", path.display())))
}

/// Checks, without evaluating anything, that `cfg` may continue the search recorded in
/// `cfg.out_dir`, and returns the number of evaluations in its journal. It makes the checks
/// [`run_search`] makes before it resumes: the settings, the metric names, that no other
/// search has locked the directory, the stored settings and every journal line.
pub fn check_resumable(space: &dyn SearchSpace, evaluator: &dyn Evaluator, cfg: &SearchConfig) -> crate::Result<usize> {
    let Some(dir) = &cfg.out_dir else {
        return Err(crate::Error::Invalid("a resumed search needs an output directory".into()));
    };
    cfg.validate()?;
    check_metric_names(evaluator, &Problem::new(&cfg.objectives, &cfg.constraints))?;
    drop(lock_out_dir(dir, true)?);
    let settings =
        Settings::new(space, evaluator, &cfg.objectives, &cfg.constraints, cfg.strategy.name(), cfg.seed);
    settings.check_resume(&stored_settings(dir)?, dir)?;
    journal::load_history(dir, space).map(|history| history.len())
}

/// Creates or checks the output directory and returns the journal's records.
fn prepare_out_dir(cfg: &SearchConfig, settings: &Settings, space: &dyn SearchSpace) -> crate::Result<Vec<EvalRecord>> {
    let Some(dir) = &cfg.out_dir else {
        return Ok(Vec::new());
    };
    let settings_path = dir.join("settings.json");
    if cfg.resume {
        settings.check_resume(&stored_settings(dir)?, dir)?;
        let history = journal::load_history(dir, space)?;
        journal::write_json_atomic(&settings_path, settings)?;
        return Ok(history);
    }
    crate::error::create_dir_all(dir)?;
    let history_path = dir.join("history.jsonl");
    if std::fs::metadata(&history_path).is_ok_and(|m| m.len() > 0) {
        return Err(crate::Error::Invalid(format!(
            "{} already contains a search; continue it with --resume {} or choose another --out directory",
            dir.display(),
            dir.display()
        )));
    }
    journal::write_json_atomic(&settings_path, settings)?;
    Ok(Vec::new())
}

fn progress_bar(cfg: &SearchConfig, done: usize) -> indicatif::ProgressBar {
    if !cfg.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(cfg.evals as u64);
    let style = indicatif::ProgressStyle::with_template("{bar:30} {pos}/{len} evaluations, ETA {eta} {msg}")
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar());
    bar.set_style(style);
    bar.set_position(done as u64);
    bar
}

/// Counts `record` into `progress`, in constant time per evaluation.
fn update_progress(problem: &Problem, progress: &mut Progress, record: &EvalRecord) {
    progress.evaluations += 1;
    if !problem.is_feasible_ok(record) {
        return;
    }
    let Some(point) = problem.objective_vector(&record.outcome.metrics) else {
        return;
    };
    progress.feasible += 1;
    let objective = &problem.objectives[0];
    let best_minimised = progress.best.map(|b| objective.to_minimised(b));
    if best_minimised.is_none_or(|b| point[0] < b) {
        progress.best = Some(objective.to_minimised(point[0]));
    }
}

/// Evaluates `candidates` on up to `workers` threads and hands each outcome to `on_done` in
/// candidate order (buffering results that finish early). No new evaluation starts once
/// `stop` is set or `on_done` returns false; evaluations in flight are finished. Returns the
/// number of outcomes handed over, a prefix of `candidates`.
#[allow(clippy::too_many_arguments)]
fn evaluate_in_order(
    evaluator: &Arc<dyn Evaluator>,
    problem: &Problem,
    candidates: &[Candidate],
    first_trial: usize,
    workers: usize,
    stop: &AtomicBool,
    mut on_done: impl FnMut(usize, EvalOutcome) -> bool,
) -> usize {
    let next = AtomicUsize::new(0);
    let abort = AtomicBool::new(false);
    let (sender, receiver) = std::sync::mpsc::channel::<(usize, EvalOutcome)>();
    let mut delivered = 0usize;
    std::thread::scope(|scope| {
        for _ in 0..workers.min(candidates.len()) {
            let sender = sender.clone();
            let (next, abort) = (&next, &abort);
            scope.spawn(move || loop {
                if stop.load(Ordering::SeqCst) || abort.load(Ordering::SeqCst) {
                    break;
                }
                let i = next.fetch_add(1, Ordering::SeqCst);
                if i >= candidates.len() {
                    break;
                }
                // A candidate that breaks a constraint on its parameter count is recorded as
                // infeasible without running the evaluator.
                let outcome = problem.known_violation(&candidates[i]).unwrap_or_else(|| {
                    checked_outcome(problem, evaluate_guarded(&**evaluator, (first_trial + i) as u64, &candidates[i]))
                });
                if sender.send((i, outcome)).is_err() {
                    break;
                }
            });
        }
        drop(sender);
        let mut pending: BTreeMap<usize, EvalOutcome> = BTreeMap::new();
        for (i, outcome) in receiver {
            pending.insert(i, outcome);
            while let Some(outcome) = pending.remove(&delivered) {
                if abort.load(Ordering::SeqCst) {
                    break;
                }
                if !on_done(delivered, outcome) {
                    abort.store(true, Ordering::SeqCst);
                    break;
                }
                delivered += 1;
            }
        }
    });
    delivered
}

/// Drops non-finite metrics from an outcome, and turns an ok outcome that lacks a finite
/// value of an objective or constraint into a failed one. Every evaluator gets the same
/// treatment, so no NaN reaches the journal, the surrogate or the front.
fn checked_outcome(problem: &Problem, mut outcome: EvalOutcome) -> EvalOutcome {
    let mut dropped: Vec<String> = Vec::new();
    outcome.metrics.retain(|name, value| {
        let keep = value.is_finite();
        if !keep {
            dropped.push(format!("{name} = {value}"));
        }
        keep
    });
    if outcome.status != Status::Ok {
        return outcome;
    }
    let missing: Vec<&str> =
        problem.targets.iter().filter(|t| !outcome.metrics.contains_key(*t)).map(String::as_str).collect();
    if missing.is_empty() {
        if !dropped.is_empty() {
            log::debug!("dropped non-finite metrics {}", dropped.join(", "));
        }
        return outcome;
    }
    let detail = if dropped.is_empty() { String::new() } else { format!(" (non-finite: {})", dropped.join(", ")) };
    outcome.status = Status::Failed;
    outcome.error = Some(format!("the result has no finite value of {}{detail}", missing.join(", ")));
    outcome
}

/// Runs one evaluation, turning a panic inside the evaluator into a failed outcome.
fn evaluate_guarded(evaluator: &dyn Evaluator, trial: u64, candidate: &Candidate) -> EvalOutcome {
    let started = Instant::now();
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| evaluator.evaluate(trial, candidate))) {
        Ok(outcome) => outcome,
        Err(payload) => {
            let message = payload
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "unknown panic".into());
            log::warn!("evaluator {} panicked on trial {trial}: {message}", evaluator.name());
            EvalOutcome::failed(Status::Failed, format!("evaluator panicked: {message}"), started.elapsed().as_secs_f64())
        }
    }
}
