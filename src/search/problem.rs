//! What a search optimises: objectives, constraints, and the surrogate's targets derived from
//! them, plus helpers that turn measured metrics into objective vectors.

use super::journal::EvalRecord;
use super::objective::{is_feasible, Constraint, Objective};
use crate::eval::Status;
use std::collections::BTreeMap;

/// Objectives and constraints of one search.
#[derive(Debug, Clone)]
pub struct Problem {
    pub objectives: Vec<Objective>,
    pub constraints: Vec<Constraint>,
    /// Metrics the surrogate predicts: objective metrics, then constraint metrics not already
    /// listed.
    pub targets: Vec<String>,
}

impl Problem {
    /// Builds the problem and its target list.
    pub fn new(objectives: &[Objective], constraints: &[Constraint]) -> Self {
        let mut targets: Vec<String> = Vec::new();
        for name in objectives.iter().map(|o| &o.metric).chain(constraints.iter().map(|c| &c.metric)) {
            if !targets.contains(name) {
                targets.push(name.clone());
            }
        }
        Problem { objectives: objectives.to_vec(), constraints: constraints.to_vec(), targets }
    }

    /// Index of `metric` in [`Problem::targets`].
    pub fn target_index(&self, metric: &str) -> usize {
        self.targets.iter().position(|t| t == metric).expect("every objective and constraint metric is a target")
    }

    /// The objective values of `metrics`, negated where maximised, or `None` when one is
    /// missing or not finite.
    pub fn objective_vector(&self, metrics: &BTreeMap<String, f64>) -> Option<Vec<f64>> {
        self.objectives
            .iter()
            .map(|o| metrics.get(&o.metric).filter(|v| v.is_finite()).map(|&v| o.to_minimised(v)))
            .collect()
    }

    /// The target values of `metrics`, or `None` when one is missing or not finite.
    pub fn target_vector(&self, metrics: &BTreeMap<String, f64>) -> Option<Vec<f64>> {
        self.targets.iter().map(|t| metrics.get(t).copied().filter(|v| v.is_finite())).collect()
    }

    /// Whether `record` is ok and satisfies every constraint.
    pub fn is_feasible_ok(&self, record: &EvalRecord) -> bool {
        record.outcome.status == Status::Ok && is_feasible(&self.constraints, &record.outcome.metrics)
    }

    /// Objective vectors of the feasible ok records, with their positions in `history`.
    pub fn feasible_points(&self, history: &[EvalRecord]) -> Vec<(usize, Vec<f64>)> {
        history
            .iter()
            .enumerate()
            .filter(|(_, r)| self.is_feasible_ok(r))
            .filter_map(|(i, r)| self.objective_vector(&r.outcome.metrics).map(|v| (i, v)))
            .collect()
    }

    /// A key to minimise for single-objective ranking, compared lexicographically: total
    /// constraint violation (relative to each limit, 0 when feasible), then the first
    /// objective. Failed evaluations get infinite keys.
    pub fn rank_key(&self, record: &EvalRecord) -> (f64, f64) {
        if record.outcome.status != Status::Ok {
            return (f64::INFINITY, f64::INFINITY);
        }
        let Some(objective) = self.objective_vector(&record.outcome.metrics) else {
            return (f64::INFINITY, f64::INFINITY);
        };
        let violation: f64 = self
            .constraints
            .iter()
            .map(|c| match record.outcome.metrics.get(&c.metric) {
                Some(&v) if c.is_satisfied(v) => 0.0,
                Some(&v) => (v - c.limit).abs() / c.limit.abs().max(1e-12),
                None => f64::INFINITY,
            })
            .sum();
        (violation, objective[0])
    }
}
