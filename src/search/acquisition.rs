//! Rewards of surrogate predictions: how much an unevaluated candidate is worth to the search.
//!
//! Objectives are turned into minimised values and normalised so that the feasible ok points
//! seen so far span [0, 1] in each coordinate. A prediction is scored at its optimistic point
//! `mean ∓ κ·std` (toward better). One objective: the reward is `1 − o`, which exceeds 1 for a
//! point predicted better than the best seen. Several objectives: the reward is the
//! hypervolume improvement of the optimistic point over the current Pareto front, with
//! reference point 1.1 in each normalised coordinate. A dominated point gets minus its
//! additive distance to the non-dominated region instead, so dominated points still rank by
//! closeness. Constraints enter
//! through the probability of feasibility `pf` (product of normal CDFs over constraints):
//! `reward = pf · r + (1 − pf) · (−1)`.

use super::journal::EvalRecord;
use super::objective::Constraint;
use super::pareto;
use super::problem::Problem;

/// Normalised reference coordinate of the hypervolume used for rewards.
const REFERENCE: f64 = 1.1;
/// Reward of a certainly infeasible candidate.
const INFEASIBLE_REWARD: f64 = -1.0;

/// Reward function for one round, built from the history.
#[derive(Debug, Clone)]
pub struct Acquisition {
    /// Target index and sign (+1 minimise, −1 maximise) per objective.
    objectives: Vec<(usize, f64)>,
    constraints: Vec<(usize, Constraint)>,
    kappa: f64,
    lo: Vec<f64>,
    span: Vec<f64>,
    /// Current front in normalised coordinates (including fantasised points).
    front: Vec<Vec<f64>>,
    front_volume: f64,
    reference: Vec<f64>,
}

impl Acquisition {
    /// Builds the reward for `problem` with optimism `kappa` from the results in `history`.
    pub fn new(problem: &Problem, history: &[EvalRecord], kappa: f64) -> Self {
        let objectives: Vec<(usize, f64)> = problem
            .objectives
            .iter()
            .map(|o| (problem.target_index(&o.metric), o.to_minimised(1.0)))
            .collect();
        let constraints = problem.constraints.iter().map(|c| (problem.target_index(&c.metric), c.clone())).collect();
        let feasible: Vec<Vec<f64>> = problem.feasible_points(history).into_iter().map(|(_, v)| v).collect();
        // Normalise over feasible points, or over all ok points while none is feasible.
        let basis: Vec<Vec<f64>> = if feasible.is_empty() {
            history
                .iter()
                .filter(|r| r.outcome.status == crate::eval::Status::Ok)
                .filter_map(|r| problem.objective_vector(&r.outcome.metrics))
                .collect()
        } else {
            feasible.clone()
        };
        let d = objectives.len();
        let mut lo = vec![0.0; d];
        let mut span = vec![1.0; d];
        for k in 0..d {
            let min = basis.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
            let max = basis.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max);
            if min.is_finite() {
                lo[k] = min;
                span[k] = if max > min { max - min } else { min.abs().max(1.0) };
            }
        }
        let mut acquisition = Acquisition {
            objectives,
            constraints,
            kappa,
            lo,
            span,
            front: Vec::new(),
            front_volume: 0.0,
            reference: vec![REFERENCE; d],
        };
        let normalised: Vec<Vec<f64>> = feasible.iter().map(|p| acquisition.normalise(p)).collect();
        acquisition.front = pareto::front_indices(&normalised).into_iter().map(|i| normalised[i].clone()).collect();
        acquisition.sort_front();
        acquisition.front_volume = pareto::hypervolume(&acquisition.front, &acquisition.reference);
        acquisition
    }

    fn normalise(&self, minimised: &[f64]) -> Vec<f64> {
        minimised.iter().enumerate().map(|(k, v)| (v - self.lo[k]) / self.span[k]).collect()
    }

    /// Returns the optimistic objective point of one prediction, normalised and minimised.
    pub fn optimistic_point(&self, mean: &[f64], std: &[f64]) -> Vec<f64> {
        self.objectives
            .iter()
            .enumerate()
            .map(|(k, &(t, sign))| (sign * mean[t] - self.kappa * std[t] - self.lo[k]) / self.span[k])
            .collect()
    }

    /// Returns the probability that the prediction satisfies every constraint.
    pub fn feasibility(&self, mean: &[f64], std: &[f64]) -> f64 {
        self.constraints.iter().map(|(t, c)| c.probability(mean[*t], std[*t])).product()
    }

    /// Computes the reward of one prediction (`mean` and `std` per target).
    pub fn reward(&self, mean: &[f64], std: &[f64]) -> f64 {
        let point = self.optimistic_point(mean, std);
        let objective_reward = self.objective_reward(&point);
        let pf = self.feasibility(mean, std);
        pf * objective_reward + (1.0 - pf) * INFEASIBLE_REWARD
    }

    fn objective_reward(&self, point: &[f64]) -> f64 {
        if point.iter().any(|v| !v.is_finite()) {
            return INFEASIBLE_REWARD;
        }
        if point.len() == 1 {
            return 1.0 - point[0];
        }
        let improvement = if point.len() == 2 {
            pareto::hypervolume_improvement_2d(&self.front, point, &self.reference)
        } else {
            pareto::hypervolume_improvement(&self.front, self.front_volume, point, &self.reference)
        };
        if improvement > 0.0 {
            improvement
        } else {
            let outside: f64 = point.iter().zip(&self.reference).map(|(v, r)| (v - r).max(0.0)).sum();
            -(pareto::dominated_distance(&self.front, point) + outside)
        }
    }

    /// Adds a predicted point to the front as if it had been measured, so the next pick of a
    /// batch is rewarded for improving on it (greedy batch selection).
    pub fn add_fantasy(&mut self, mean: &[f64], std: &[f64]) {
        let point = self.optimistic_point(mean, std);
        if point.iter().any(|v| !v.is_finite()) || self.front.iter().any(|q| q.iter().zip(&point).all(|(a, b)| a <= b)) {
            return;
        }
        self.front.retain(|q| !pareto::dominates(&point, q));
        self.front.push(point);
        self.sort_front();
        self.front_volume = pareto::hypervolume(&self.front, &self.reference);
    }

    /// Keeps the front sorted by its first coordinate, as the 2-objective fast path needs.
    fn sort_front(&mut self) {
        self.front.sort_by(|a, b| {
            a.iter().zip(b).map(|(x, y)| x.total_cmp(y)).find(|o| o.is_ne()).unwrap_or(std::cmp::Ordering::Equal)
        });
    }

    /// Number of objectives.
    pub fn dimensions(&self) -> usize {
        self.objectives.len()
    }
}
