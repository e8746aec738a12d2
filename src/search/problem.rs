//! What a search optimises: objectives, constraints, and the surrogate's targets derived from
//! them, plus helpers that turn measured metrics into objective vectors.

use super::journal::EvalRecord;
use super::objective::{is_feasible, Constraint, Objective};
use crate::eval::{EvalOutcome, Evaluator, ExactMetric, Status};
use crate::space::Candidate;
use std::collections::BTreeMap;

/// Objectives and constraints of one search.
#[derive(Debug, Clone)]
pub struct Problem {
    pub objectives: Vec<Objective>,
    pub constraints: Vec<Constraint>,
    /// Metrics the surrogate predicts: objective metrics, then constraint metrics not already
    /// listed.
    pub targets: Vec<String>,
    /// Per target, how the evaluator computes it from the architecture alone, if it does. The
    /// search uses these exact values in place of the surrogate's predictions.
    pub exact: Vec<Option<ExactMetric>>,
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
        let exact = vec![None; targets.len()];
        Problem { objectives: objectives.to_vec(), constraints: constraints.to_vec(), targets, exact }
    }

    /// Takes from `evaluator` every target it computes from the architecture alone (see
    /// [`Evaluator::exact_metric`]).
    pub fn with_exact_targets(mut self, evaluator: &dyn Evaluator) -> Self {
        self.exact = self.targets.iter().map(|t| evaluator.exact_metric(t)).collect();
        self
    }

    /// Returns whether any target is known exactly before evaluation.
    pub fn has_exact_targets(&self) -> bool {
        self.exact.iter().any(Option::is_some)
    }

    /// Returns the names of the targets known exactly before evaluation.
    pub fn exact_targets(&self) -> Vec<&str> {
        self.targets.iter().zip(&self.exact).filter(|(_, e)| e.is_some()).map(|(t, _)| t.as_str()).collect()
    }

    /// Overwrites the predicted mean of every exact target in `mean` (one row of targets) with
    /// its value for `candidate`, and its spread in `std` with zero. Table rows are left alone.
    pub fn apply_exact(&self, candidate: &Candidate, mean: &mut [f64], std: &mut [f64]) {
        let Candidate::Arch(arch) = candidate else {
            return;
        };
        for (t, exact) in self.exact.iter().enumerate() {
            if let Some(exact) = exact {
                mean[t] = exact.value(arch);
                std[t] = 0.0;
            }
        }
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

    /// Returns an `infeasible` outcome when `candidate` violates a constraint on a metric that
    /// follows from the architecture alone, so the search can skip it without running the
    /// evaluator. Such metrics are the exact targets (see [`Problem::with_exact_targets`]), and
    /// `params` and `decoder_params` for any evaluator. Returns `None` when no such constraint
    /// is violated, and for table rows.
    pub fn known_violation(&self, candidate: &Candidate) -> Option<EvalOutcome> {
        if !self.has_known_constraints() {
            return None;
        }
        let Candidate::Arch(arch) = candidate else {
            return None;
        };
        let mut metrics = BTreeMap::new();
        let mut broken = Vec::new();
        for constraint in &self.constraints {
            let Some(value) = self.known_value(&constraint.metric, arch) else {
                continue;
            };
            metrics.insert(constraint.metric.clone(), value);
            if !constraint.is_satisfied(value) {
                broken.push(format!("{} = {} breaks {constraint}", constraint.metric, short_number(value)));
            }
        }
        if broken.is_empty() {
            return None;
        }
        let error = format!("not evaluated: {}", broken.join(", "));
        Some(EvalOutcome { status: Status::Infeasible, metrics, error: Some(error), elapsed_s: 0.0 })
    }

    /// Returns the value of `metric` for `arch` when it is known without evaluation.
    fn known_value(&self, metric: &str, arch: &crate::arch::Architecture) -> Option<f64> {
        match self.targets.iter().position(|t| t == metric).and_then(|t| self.exact[t].as_ref()) {
            Some(exact) => Some(exact.value(arch)),
            None => architecture_metric(metric).map(|f| f(arch) as f64),
        }
    }

    /// Returns whether a constraint applies to a metric that [`Problem::known_violation`] can
    /// check.
    pub fn has_known_constraints(&self) -> bool {
        self.constraints.iter().any(|c| {
            architecture_metric(&c.metric).is_some() || self.exact[self.target_index(&c.metric)].is_some()
        })
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

/// Formats `value` for a message: whole numbers in full, others to 6 decimal places.
fn short_number(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e16 {
        format!("{value:.0}")
    } else {
        format!("{value:.6}")
    }
}

/// Returns how to compute `metric` from the architecture alone, as the evaluators report it, or
/// `None` when it needs an evaluation.
fn architecture_metric(metric: &str) -> Option<fn(&crate::arch::Architecture) -> u64> {
    match metric {
        "params" => Some(crate::arch::Architecture::params),
        crate::eval::proxy::DECODER_PARAMS => Some(crate::arch::Architecture::non_embedding_params),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arch::presets;
    use crate::search::Bound;

    fn max_params(limit: f64) -> Problem {
        let constraint = Constraint { metric: "params".into(), bound: Bound::AtMost, limit };
        Problem::new(&[Objective::parse("min:loss").unwrap()], &[constraint])
    }

    #[test]
    fn known_violation_flags_large_models() {
        let arch = presets::llama_tiny();
        let params = arch.params() as f64;
        let outcome = max_params(params - 1.0).known_violation(&Candidate::Arch(arch.clone())).unwrap();
        assert_eq!(outcome.status, Status::Infeasible);
        assert_eq!(outcome.metrics["params"], params);
        assert!(outcome.error.unwrap().starts_with("not evaluated: params"));
        assert!(max_params(params).known_violation(&Candidate::Arch(arch)).is_none());
    }

    #[test]
    fn known_violation_ignores_measured_metrics() {
        let constraint = Constraint { metric: "latency_decode_ms".into(), bound: Bound::AtMost, limit: 0.0 };
        let problem = Problem::new(&[Objective::parse("min:loss").unwrap()], &[constraint]);
        assert!(!problem.has_known_constraints());
        assert!(problem.known_violation(&Candidate::Arch(presets::llama_tiny())).is_none());
    }

    #[test]
    fn exact_targets_come_from_the_evaluator() {
        use crate::eval::proxy::{AnalyticSettings, ProxyEvaluator, Quality};
        let evaluator = ProxyEvaluator::new(Quality::DecoderParams, AnalyticSettings::default());
        let arch = presets::llama_tiny();
        let limit = arch.weight_bytes(crate::arch::Dtype::F32) as f64 - 1.0;
        let constraint = Constraint { metric: "weight_bytes".into(), bound: Bound::AtMost, limit };
        let objectives = [Objective::parse("max:decoder_params").unwrap(), Objective::parse("min:latency_ms").unwrap()];
        let plain = Problem::new(&objectives, &[constraint]);
        assert!(plain.exact_targets().is_empty());
        assert!(plain.known_violation(&Candidate::Arch(arch.clone())).is_none());

        let problem = plain.with_exact_targets(&evaluator);
        assert_eq!(problem.exact_targets(), ["decoder_params", "weight_bytes"]);
        let mut mean = [1.0, 2.0, 3.0];
        let mut std = [0.5, 0.5, 0.5];
        problem.apply_exact(&Candidate::Arch(arch.clone()), &mut mean, &mut std);
        assert_eq!(mean, [arch.non_embedding_params() as f64, 2.0, limit + 1.0]);
        assert_eq!(std, [0.0, 0.5, 0.0]);
        let outcome = problem.known_violation(&Candidate::Arch(arch)).expect("one byte over the limit");
        assert_eq!(outcome.status, Status::Infeasible);
        assert!(outcome.error.unwrap().contains("weight_bytes"));
    }
}
