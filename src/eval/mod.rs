//! Evaluators: how a candidate's true metrics are obtained (training-free proxies, tabular
//! look-ups, measured forward passes, or the user's own command).
//!
//! The search driver calls [`Evaluator::evaluate`] from several worker threads at once, so
//! implementations must be `Send + Sync` and must never panic on a bad candidate: every
//! failure becomes an [`EvalOutcome`] with a non-ok status and an error message.

pub mod argv;
pub mod command;
pub mod measure;
pub mod proxy;

use crate::arch::Architecture;
use crate::space::Candidate;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Final state of one evaluation, as written to `history.jsonl`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Metrics were obtained.
    Ok,
    /// The evaluator failed (non-zero exit, missing or non-finite metric, error).
    Failed,
    /// The evaluator ran past its time limit and was killed.
    Timeout,
    /// The candidate violates a hard constraint and was not evaluated further.
    Infeasible,
}

/// Result of evaluating one candidate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EvalOutcome {
    pub status: Status,
    /// Metrics by the shared metric names (`perplexity`, `latency_decode_ms`, ...). May be
    /// partial for a non-ok status.
    pub metrics: BTreeMap<String, f64>,
    /// Why the evaluation is not ok (for a command, the end of its stderr).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Wall-clock seconds the evaluation took.
    pub elapsed_s: f64,
}

impl EvalOutcome {
    /// An ok outcome with `metrics`.
    pub fn ok(metrics: BTreeMap<String, f64>, elapsed_s: f64) -> Self {
        EvalOutcome { status: Status::Ok, metrics, error: None, elapsed_s }
    }

    /// A non-ok outcome with `status` and `error`.
    pub fn failed(status: Status, error: impl Into<String>, elapsed_s: f64) -> Self {
        EvalOutcome { status, metrics: BTreeMap::new(), error: Some(error.into()), elapsed_s }
    }
}

/// Something that measures a candidate's true metrics.
pub trait Evaluator: Send + Sync {
    /// Short name written to outputs (`proxy`, `measure`, `table`, `command`).
    fn name(&self) -> &str;

    /// Names of the metrics an ok outcome contains, when known in advance (used to check
    /// objectives and constraints before the search starts).
    fn metric_names(&self) -> Vec<String>;

    /// Evaluates `candidate` as trial number `trial`.
    fn evaluate(&self, trial: u64, candidate: &Candidate) -> EvalOutcome;

    /// Returns how this evaluator computes `metric` from the architecture alone, when it does. The
    /// search then uses the exact value for every candidate in place of the surrogate's
    /// prediction. `None`, the default, for a metric that needs an evaluation.
    fn exact_metric(&self, _metric: &str) -> Option<ExactMetric> {
        None
    }

    /// Returns the settings that change the metrics this evaluator reports for a candidate, by
    /// name, such as the quality estimate or the measured lengths. A resumed search must have
    /// the same ones, so that old and new results are comparable. Empty by default.
    fn settings(&self) -> BTreeMap<String, String> {
        BTreeMap::new()
    }
}

/// A metric that follows from the architecture alone, as an evaluator reports it (see
/// [`Evaluator::exact_metric`]).
#[derive(Clone)]
pub struct ExactMetric(Arc<dyn Fn(&Architecture) -> f64 + Send + Sync>);

impl ExactMetric {
    pub fn new(f: impl Fn(&Architecture) -> f64 + Send + Sync + 'static) -> Self {
        ExactMetric(Arc::new(f))
    }

    /// Returns the metric's value for `arch`.
    pub fn value(&self, arch: &Architecture) -> f64 {
        (self.0)(arch)
    }
}

impl std::fmt::Debug for ExactMetric {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ExactMetric")
    }
}
