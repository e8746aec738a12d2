//! Synthetic spaces and evaluators shared by the `search_*` integration tests, which include
//! this file with `#[path]`. Built as its own test target, it contains no tests.
#![allow(dead_code)]

use alphanas::eval::{EvalOutcome, Evaluator, Status};
use alphanas::space::{Candidate, Decision, SearchSpace};
use num_bigint::BigUint;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};

/// `width` decisions with `choices` options each; every sequence is valid.
pub struct GridSpace {
    pub width: usize,
    pub choices: u32,
}

impl GridSpace {
    fn index(&self, choices: &[u32]) -> usize {
        choices.iter().fold(0usize, |acc, &c| acc * self.choices as usize + c as usize)
    }
}

impl SearchSpace for GridSpace {
    fn name(&self) -> &str {
        "grid"
    }

    fn next_decision(&self, prefix: &[u32]) -> Option<Decision> {
        (prefix.len() < self.width).then(|| Decision {
            name: format!("x{}", prefix.len()),
            labels: (0..self.choices).map(|c| c.to_string()).collect(),
        })
    }

    fn valid_choices(&self, prefix: &[u32]) -> Vec<u32> {
        if prefix.len() < self.width {
            (0..self.choices).collect()
        } else {
            Vec::new()
        }
    }

    fn count(&self) -> BigUint {
        BigUint::from(self.choices).pow(self.width as u32)
    }

    fn sample(&self, rng: &mut dyn rand::RngCore) -> Vec<u32> {
        (0..self.width).map(|_| rng.next_u32() % self.choices).collect()
    }

    fn candidate(&self, choices: &[u32]) -> Candidate {
        Candidate::Row {
            index: self.index(choices),
            source_row: self.index(choices),
            values: choices.iter().enumerate().map(|(i, c)| (format!("x{i}"), c.to_string())).collect(),
        }
    }

    fn choices_of(&self, candidate: &Candidate) -> Option<Vec<u32>> {
        match candidate {
            Candidate::Row { values, .. } => values.iter().map(|(_, v)| v.parse().ok()).collect(),
            Candidate::Arch(_) => None,
        }
    }

    fn feature_names(&self) -> Vec<String> {
        (0..self.width).map(|i| format!("x{i}")).collect()
    }

    fn features(&self, choices: &[u32]) -> Vec<f32> {
        choices.iter().map(|&c| c as f32 / (self.choices - 1) as f32).collect()
    }
}

/// Decision values of a grid candidate.
pub fn grid_values(candidate: &Candidate) -> Vec<f64> {
    match candidate {
        Candidate::Row { values, .. } => values.iter().map(|(_, v)| v.parse::<f64>().unwrap()).collect(),
        Candidate::Arch(_) => panic!("grid candidates are rows"),
    }
}

/// Metrics of a grid candidate: `loss` is a bowl with its minimum 0 at `optimum`, `cost` is
/// the sum of the values, and `size` is the first value. Candidates whose first value is
/// `fail_on` fail.
pub struct BowlEvaluator {
    pub optimum: Vec<f64>,
    pub fail_on: Option<f64>,
    pub calls: AtomicUsize,
}

impl BowlEvaluator {
    pub fn new(optimum: Vec<f64>) -> Self {
        BowlEvaluator { optimum, fail_on: None, calls: AtomicUsize::new(0) }
    }
}

impl Evaluator for BowlEvaluator {
    fn name(&self) -> &str {
        "bowl"
    }

    fn metric_names(&self) -> Vec<String> {
        vec!["loss".into(), "cost".into(), "size".into()]
    }

    fn evaluate(&self, _trial: u64, candidate: &Candidate) -> EvalOutcome {
        self.calls.fetch_add(1, Ordering::SeqCst);
        let x = grid_values(candidate);
        if self.fail_on == Some(x[0]) {
            return EvalOutcome::failed(Status::Failed, "synthetic failure", 0.0);
        }
        let loss: f64 = x.iter().zip(&self.optimum).map(|(a, b)| (a - b) * (a - b)).sum();
        let cost: f64 = x.iter().sum();
        let mut metrics = BTreeMap::new();
        metrics.insert("loss".to_string(), loss + 1.0);
        metrics.insert("cost".to_string(), cost + 1.0);
        metrics.insert("size".to_string(), x[0]);
        EvalOutcome::ok(metrics, 0.0)
    }
}
