//! Settings of a search run, the hooks the command line plugs in, and the run's report.

use super::journal::EvalRecord;
use super::model::Surrogate;
use super::objective::{Constraint, Objective};
use crate::eval::EvalOutcome;
use crate::space::Candidate;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Search strategy that proposes candidates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Strategy {
    /// Monte Carlo Tree Search guided by the surrogate.
    Mcts,
    /// Uniform random sampling.
    Random,
    /// Regularized evolution (Real et al., AAAI 2019).
    Evolution,
    /// Hill climbing on one-decision neighbours with random restarts.
    Local,
}

impl Strategy {
    /// Parses `mcts`, `random`, `evolution` or `local`.
    pub fn parse(text: &str) -> crate::Result<Self> {
        match text {
            "mcts" => Ok(Strategy::Mcts),
            "random" => Ok(Strategy::Random),
            "evolution" => Ok(Strategy::Evolution),
            "local" => Ok(Strategy::Local),
            _ => Err(crate::Error::Invalid(format!(
                "unknown strategy `{text}`; use mcts, random, evolution or local"
            ))),
        }
    }

    /// Returns the name used on the command line and in outputs.
    pub fn name(self) -> &'static str {
        match self {
            Strategy::Mcts => "mcts",
            Strategy::Random => "random",
            Strategy::Evolution => "evolution",
            Strategy::Local => "local",
        }
    }
}

/// Tree policy used to pick a child during selection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Selection {
    /// PUCT as in AlphaZero: `Q + c · P · √N_parent / (1 + N)`.
    Puct,
    /// UCB1 / UCT: `Q + c · √(ln N_parent / N)`; unvisited children first.
    Ucb,
}

/// How a new leaf is completed to a full candidate before scoring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Rollout {
    /// One uniformly random valid completion.
    Random,
    /// `samples` random completions per leaf, all scored in the same batch; the leaf keeps
    /// the best.
    Guided { samples: usize },
}

/// Which built-in surrogate the MCTS strategy fits.
#[derive(Debug, Clone, PartialEq)]
pub enum SurrogateKind {
    /// The MLP ensemble of [`crate::surrogate`] with these training settings; its `seed` is
    /// replaced by the search's seed.
    Mlp(crate::surrogate::EnsembleConfig),
    /// [`RidgeEnsemble`](super::RidgeEnsemble) with its default settings.
    Ridge,
}

/// Everything that configures [`run_search`](super::run_search).
#[derive(Debug, Clone)]
pub struct SearchConfig {
    pub strategy: Strategy,
    /// At least one; several make the search multi-objective (Pareto front, hypervolume).
    pub objectives: Vec<Objective>,
    pub constraints: Vec<Constraint>,
    /// Total number of real evaluations, counting those of a resumed run.
    pub evals: usize,
    /// Leaves gathered (with virtual loss) per surrogate call.
    pub batch: usize,
    /// Candidates sent to the evaluator per round, between surrogate refits.
    pub q: usize,
    /// Random candidates evaluated before the first surrogate fit (MCTS only).
    pub initial: usize,
    pub seed: u64,
    /// Evaluations run in parallel.
    pub workers: usize,
    pub selection: Selection,
    /// Exploration constant `c` of PUCT or UCB.
    pub exploration: f64,
    /// Optimism of the acquisition: objectives are scored at `mean − κ·std` (toward better).
    pub kappa: f64,
    /// Tree simulations per round (each ends in one scored leaf).
    pub simulations_per_round: usize,
    pub rollout: Rollout,
    /// The surrogate, unless [`SearchHooks::make_surrogate`] returns one.
    pub surrogate: SurrogateKind,
    /// Space features the MCTS surrogate reads, by name (see
    /// [`SearchSpace::feature_names`](crate::space::SearchSpace::feature_names)), in place of all
    /// of them. Empty: all. Extra features of the hooks are added either way.
    pub space_features: Vec<String>,
    /// Device on which the MLP surrogate scores each leaf batch in one dispatch; `None` scores
    /// on the CPU.
    pub scoring_gpu: Option<Arc<crate::device::GpuContext>>,
    /// Progressive widening `k(N) = ⌈widening_c · N^widening_alpha⌉` for decisions with more
    /// than `widening_min_choices` choices; `widening_c <= 0` turns it off.
    pub widening_c: f64,
    pub widening_alpha: f64,
    pub widening_min_choices: usize,
    /// Regularized evolution: population size P and tournament size S.
    pub population: usize,
    pub tournament: usize,
    /// Local search: consecutive non-improving neighbours before a random restart (0 means
    /// "all neighbours of the current point").
    pub local_patience: usize,
    /// Hypervolume reference point in objective units (maximised objectives as given, not
    /// negated). Default: each objective's worst feasible value plus 1% of its range.
    pub reference_point: Option<Vec<f64>>,
    /// Output directory; `None` keeps everything in memory (no journal, no resume).
    pub out_dir: Option<PathBuf>,
    /// Continue the search recorded in `out_dir`.
    pub resume: bool,
    /// Set (for example by a Ctrl-C handler) to stop after the evaluations in flight.
    pub stop: Arc<AtomicBool>,
    /// Show a progress bar on stderr.
    pub progress: bool,
}

impl Default for SearchConfig {
    fn default() -> Self {
        SearchConfig {
            strategy: Strategy::Mcts,
            objectives: Vec::new(),
            constraints: Vec::new(),
            evals: 100,
            batch: 256,
            q: 4,
            initial: 10,
            seed: 0,
            workers: 1,
            selection: Selection::Puct,
            exploration: 1.0,
            kappa: 1.0,
            simulations_per_round: 4096,
            rollout: Rollout::Random,
            surrogate: SurrogateKind::Mlp(crate::surrogate::EnsembleConfig::default()),
            space_features: Vec::new(),
            scoring_gpu: None,
            widening_c: 2.0,
            widening_alpha: 0.5,
            widening_min_choices: 16,
            population: 50,
            tournament: 10,
            local_patience: 0,
            reference_point: None,
            out_dir: None,
            resume: false,
            stop: Arc::new(AtomicBool::new(false)),
            progress: false,
        }
    }
}

impl SearchConfig {
    /// Checks values that would make the search meaningless, with the fix in each message.
    pub fn validate(&self) -> crate::Result<()> {
        let invalid = |m: String| Err(crate::Error::Invalid(m));
        if self.objectives.is_empty() {
            return invalid("no objective given; add one such as --objective min:perplexity".into());
        }
        for (i, a) in self.objectives.iter().enumerate() {
            if self.objectives[..i].iter().any(|b| b.metric == a.metric) {
                return invalid(format!("objective metric `{}` is given twice; keep one", a.metric));
            }
        }
        if self.evals == 0 {
            return invalid("the budget (--evals 0) must be at least 1 evaluation".into());
        }
        // Named as the command line names them: --batch, --workers; q has no option there.
        for (name, value) in [("--batch", self.batch), ("--workers", self.workers), ("q (evaluations per round)", self.q)] {
            if value == 0 {
                return invalid(format!("{name} (0) must be at least 1"));
            }
        }
        if !(self.exploration >= 0.0 && self.exploration.is_finite()) {
            return invalid(format!("exploration ({}) must be a finite number >= 0", self.exploration));
        }
        if !(self.kappa.is_finite()) {
            return invalid(format!("kappa ({}) must be finite", self.kappa));
        }
        if let Rollout::Guided { samples: 0 } = self.rollout {
            return invalid("guided rollout needs at least 1 sample per leaf".into());
        }
        if self.strategy == Strategy::Evolution && (self.population < 2 || self.tournament == 0 || self.tournament > self.population) {
            return invalid(format!(
                "evolution needs population >= 2 and 1 <= tournament <= population (got {} and {})",
                self.population, self.tournament
            ));
        }
        if let Some(r) = &self.reference_point {
            if r.len() != self.objectives.len() || r.iter().any(|v| !v.is_finite()) {
                return invalid(format!(
                    "reference point has {} finite values but there are {} objectives; give one per objective",
                    r.len(),
                    self.objectives.len()
                ));
            }
        }
        if self.resume && self.out_dir.is_none() {
            return invalid("resume needs the output directory of the earlier search".into());
        }
        Ok(())
    }
}

/// Progress after each evaluation.
#[derive(Debug, Clone)]
pub struct Progress {
    pub evaluations: usize,
    pub evals: usize,
    /// Feasible ok results so far.
    pub feasible: usize,
    /// Best value of the first objective among feasible ok results.
    pub best: Option<f64>,
}

/// Points where the caller joins in. Every method has a default that does nothing.
pub trait SearchHooks {
    /// Called once per finished evaluation, in history order (the command line recalibrates
    /// its cost table here).
    fn on_result(&mut self, _candidate: &Candidate, _outcome: &EvalOutcome) {}

    /// Names of extra features appended to the space's features (for example a cost table's
    /// predicted latency).
    fn extra_feature_names(&self) -> Vec<String> {
        Vec::new()
    }

    /// Appends the extra features of `candidate` to `out`, as many as
    /// [`SearchHooks::extra_feature_names`] lists.
    fn extra_features(&self, _candidate: &Candidate, _out: &mut Vec<f32>) {}

    /// Returns whether the surrogate also reads the space's own features (its normalised
    /// decisions) before the extra ones. Return `false` when the extra features describe a
    /// candidate compactly, because a surrogate fitted on a few dozen results learns more from
    /// a handful of informative features than from every raw decision. Ignored without extra
    /// features.
    fn keep_space_features(&self) -> bool {
        true
    }

    /// A surrogate for `targets` over `features`. `None` selects the one named by
    /// [`SearchConfig::surrogate`].
    fn make_surrogate(&mut self, _features: &[String], _targets: &[String], _seed: u64) -> Option<Box<dyn Surrogate>> {
        None
    }

    /// Called after each evaluation.
    fn on_progress(&mut self, _progress: &Progress) {}

    /// Returns a field to add to `summary.json` when the search ends, as (key, value).
    fn summary(&self) -> Option<(String, serde_json::Value)> {
        None
    }
}

/// Hooks that do nothing.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoHooks;

impl SearchHooks for NoHooks {}

/// The Pareto front or best point, as written to `front.json`.
#[derive(Debug, Clone)]
pub struct FrontPoint {
    pub eval: usize,
    /// Objective values in their own units and senses, in objective order.
    pub objectives: Vec<f64>,
    pub candidate: Candidate,
    pub metrics: BTreeMap<String, f64>,
}

/// Surrogate prediction error in one round.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RoundError {
    pub round: usize,
    /// Evaluations that had a prediction and an ok result.
    pub n: usize,
    /// Mean absolute percentage error per target, in percent.
    pub mape: BTreeMap<String, f64>,
}

/// Outcome of [`run_search`](super::run_search).
#[derive(Debug, Clone)]
pub struct SearchReport {
    /// Every evaluation, resumed ones included, in order.
    pub history: Vec<EvalRecord>,
    /// Evaluations run by this call (not loaded from a journal).
    pub new_evaluations: usize,
    pub status_counts: BTreeMap<String, usize>,
    /// Results that were measured (`ok`) but break a constraint. The `infeasible` status
    /// counts the candidates skipped without evaluation instead.
    pub ok_over_constraint: usize,
    /// The Pareto front of feasible ok results (for one objective, the best ones).
    pub front: Vec<FrontPoint>,
    /// Hypervolume reference point, in objective units.
    pub reference_point: Vec<f64>,
    /// Hypervolume of the feasible ok results after each evaluation.
    pub hypervolume: Vec<f64>,
    pub simulations: u64,
    pub simulations_per_s: f64,
    pub leaf_batches: u64,
    pub surrogate_dispatches: u64,
    pub prediction_error: Vec<RoundError>,
    /// Whether the stop flag ended the run before `evals` evaluations.
    pub stopped: bool,
    /// Whether every candidate of the space was evaluated before `evals` was reached.
    pub exhausted: bool,
}
