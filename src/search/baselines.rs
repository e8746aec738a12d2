//! Baseline strategies: random search, regularized evolution and local search. They share the
//! evaluators, journal and outputs of the MCTS search, so comparisons are like for like.

use super::driver::{Context, Proposal, Proposer};
use super::journal::EvalRecord;
use super::pareto;
use super::problem::Problem;
use crate::space::SearchSpace;
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::Rng;
use std::collections::HashSet;

/// Draws up to `n` distinct candidates uniformly that are neither in `seen` nor in `taken`.
/// Gives up after `64·n + 256` draws, which only happens when few unseen candidates remain.
pub(crate) fn sample_unseen(
    space: &dyn SearchSpace,
    problem: &Problem,
    seen: &HashSet<Vec<u32>>,
    taken: &mut HashSet<Vec<u32>>,
    rng: &mut StdRng,
    n: usize,
) -> Vec<Vec<u32>> {
    let mut out = Vec::with_capacity(n);
    // First draw only candidates that keep the constraints known before evaluation (such as the
    // parameter count). A draw and its check take microseconds, so many are tried. Where such
    // candidates are still too rare to find, the rest are drawn without the check and the
    // search records them as infeasible.
    let known = problem.has_known_constraints();
    for check_constraints in [true, false] {
        let mut attempts = if check_constraints && known { 20_000 * n + 256 } else { 64 * n + 256 };
        while out.len() < n && attempts > 0 {
            attempts -= 1;
            let choices = space.sample(rng);
            if seen.contains(&choices) || taken.contains(&choices) {
                continue;
            }
            if check_constraints && known && problem.known_violation(&space.candidate(&choices)).is_some() {
                continue;
            }
            taken.insert(choices.clone());
            out.push(choices);
        }
    }
    out
}

/// Changes decision `position` of `parent` to another valid choice and repairs the rest: each
/// later decision keeps the parent's choice at the same position when still valid, otherwise
/// takes a random valid choice. Returns `None` when the decision has no alternative.
pub(crate) fn mutate_at(space: &dyn SearchSpace, parent: &[u32], position: usize, rng: &mut StdRng) -> Option<Vec<u32>> {
    let mut child: Vec<u32> = parent[..position].to_vec();
    let alternatives: Vec<u32> =
        space.valid_choices(&child).into_iter().filter(|&c| c != parent[position]).collect();
    let &choice = alternatives.choose(rng)?;
    child.push(choice);
    complete_like(space, &mut child, parent, rng);
    Some(child)
}

/// Completes `prefix`, preferring the choices of `template` position by position.
fn complete_like(space: &dyn SearchSpace, prefix: &mut Vec<u32>, template: &[u32], rng: &mut StdRng) {
    loop {
        let valid = space.valid_choices(prefix);
        if valid.is_empty() {
            return;
        }
        let keep = template.get(prefix.len()).filter(|c| valid.contains(c));
        let next = match keep {
            Some(&c) => c,
            None => valid[rng.random_range(0..valid.len())],
        };
        prefix.push(next);
    }
}

/// Uniform random search.
#[derive(Debug, Default)]
pub(crate) struct RandomProposer;

impl Proposer for RandomProposer {
    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> crate::Result<Vec<Proposal>> {
        let mut taken = HashSet::new();
        let picks = sample_unseen(ctx.space, ctx.problem, ctx.seen, &mut taken, ctx.rng, n);
        Ok(picks.into_iter().map(|choices| Proposal { choices, source: "random", predicted: None }).collect())
    }
}

/// Fitness ordering for tournaments: for one objective the penalised value (feasible first),
/// for several the Pareto rank within the population (feasible ok points first).
fn tournament_keys(problem: &Problem, members: &[&EvalRecord]) -> Vec<(f64, f64)> {
    if problem.objectives.len() == 1 {
        return members.iter().map(|r| problem.rank_key(r)).collect();
    }
    let vectors: Vec<Option<Vec<f64>>> = members
        .iter()
        .map(|r| if problem.is_feasible_ok(r) { problem.objective_vector(&r.outcome.metrics) } else { None })
        .collect();
    let feasible: Vec<Vec<f64>> = vectors.iter().flatten().cloned().collect();
    let ranks = pareto::pareto_ranks(&feasible);
    let mut next = 0;
    vectors
        .iter()
        .zip(members)
        .map(|(v, r)| match v {
            Some(_) => {
                let rank = ranks[next] as f64;
                next += 1;
                (0.0, rank)
            }
            None => {
                let (violation, value) = problem.rank_key(r);
                (1.0 + violation, value)
            }
        })
        .collect()
}

/// Regularized evolution (Real et al., "Regularized Evolution for Image Classifier
/// Architecture Search", AAAI 2019). The population is the last P evaluations, so the oldest
/// dies when a child is added. Each child mutates one decision of the winner of a tournament
/// of S members drawn at random from the population. The first P evaluations are random.
#[derive(Debug)]
pub(crate) struct EvolutionProposer {
    population: usize,
    tournament: usize,
}

impl EvolutionProposer {
    pub(crate) fn new(population: usize, tournament: usize) -> Self {
        EvolutionProposer { population, tournament }
    }
}

impl Proposer for EvolutionProposer {
    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> crate::Result<Vec<Proposal>> {
        let mut taken = HashSet::new();
        if ctx.history.len() < self.population {
            let want = n.min(self.population - ctx.history.len());
            let picks = sample_unseen(ctx.space, ctx.problem, ctx.seen, &mut taken, ctx.rng, want);
            return Ok(picks.into_iter().map(|choices| Proposal { choices, source: "random", predicted: None }).collect());
        }
        let start = ctx.history.len() - self.population;
        let population: Vec<&EvalRecord> = ctx.history[start..].iter().collect();
        let keys = tournament_keys(ctx.problem, &population);
        let mut out = Vec::with_capacity(n);
        let mut attempts = 64 * n + 256;
        while out.len() < n && attempts > 0 {
            attempts -= 1;
            let contestants = rand::seq::index::sample(ctx.rng, population.len(), self.tournament);
            let winner = contestants
                .iter()
                .min_by(|&a, &b| keys[a].partial_cmp(&keys[b]).unwrap_or(std::cmp::Ordering::Equal))
                .expect("tournament size is at least 1");
            let parent = &population[winner].choices;
            let position = ctx.rng.random_range(0..parent.len());
            let Some(child) = mutate_at(ctx.space, parent, position, ctx.rng) else {
                continue;
            };
            if ctx.seen.contains(&child) || !taken.insert(child.clone()) {
                continue;
            }
            out.push(Proposal { choices: child, source: "evolution", predicted: None });
        }
        if out.len() < n {
            // Mutations keep hitting evaluated candidates; fill up at random.
            let picks = sample_unseen(ctx.space, ctx.problem, ctx.seen, &mut taken, ctx.rng, n - out.len());
            out.extend(picks.into_iter().map(|choices| Proposal { choices, source: "random", predicted: None }));
        }
        Ok(out)
    }
}

/// Hill climbing: from the current point, evaluate unseen one-decision neighbours in random
/// order and move to the first that improves. After `patience` non-improving neighbours (or
/// all of them when `patience` is 0), restart from a random point. Several objectives are
/// scalarised by a random weighted Chebyshev function, with new weights at each restart.
#[derive(Debug)]
pub(crate) struct LocalProposer {
    patience: usize,
    current: Option<usize>,
    weights: Vec<f64>,
    failures: usize,
    /// Neighbours of the current point not yet proposed.
    queue: Vec<Vec<u32>>,
    /// History length already examined for improvements.
    examined: usize,
}

impl LocalProposer {
    pub(crate) fn new(patience: usize) -> Self {
        LocalProposer { patience, current: None, weights: Vec::new(), failures: 0, queue: Vec::new(), examined: 0 }
    }

    fn score(&self, problem: &Problem, history: &[EvalRecord], record: &EvalRecord) -> (f64, f64) {
        if problem.objectives.len() == 1 {
            return problem.rank_key(record);
        }
        let key = problem.rank_key(record);
        if key.0 > 0.0 || !key.0.is_finite() {
            return key;
        }
        // Chebyshev scalarisation on objectives normalised by the ranges seen so far.
        let points: Vec<Vec<f64>> = problem.feasible_points(history).into_iter().map(|(_, v)| v).collect();
        let Some(v) = problem.objective_vector(&record.outcome.metrics) else {
            return (f64::INFINITY, f64::INFINITY);
        };
        let value = (0..v.len())
            .map(|k| {
                let lo = points.iter().map(|p| p[k]).fold(f64::INFINITY, f64::min);
                let hi = points.iter().map(|p| p[k]).fold(f64::NEG_INFINITY, f64::max);
                let span = if hi > lo { hi - lo } else { 1.0 };
                self.weights[k] * (v[k] - lo) / span
            })
            .fold(f64::NEG_INFINITY, f64::max);
        (0.0, value)
    }

    fn restart(&mut self, ctx: &mut Context<'_>) {
        self.current = None;
        self.failures = 0;
        self.queue.clear();
        let d = ctx.problem.objectives.len();
        let raw: Vec<f64> = (0..d).map(|_| ctx.rng.random::<f64>() + 1e-3).collect();
        let total: f64 = raw.iter().sum();
        self.weights = raw.iter().map(|w| w / total).collect();
    }

    fn neighbours(space: &dyn SearchSpace, point: &[u32], rng: &mut StdRng) -> Vec<Vec<u32>> {
        let mut out = Vec::new();
        for position in 0..point.len() {
            let prefix = &point[..position];
            for choice in space.valid_choices(prefix) {
                if choice == point[position] {
                    continue;
                }
                let mut child = prefix.to_vec();
                child.push(choice);
                complete_like(space, &mut child, point, rng);
                out.push(child);
            }
        }
        out.shuffle(rng);
        out.dedup();
        out
    }
}

impl Proposer for LocalProposer {
    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> crate::Result<Vec<Proposal>> {
        if self.weights.is_empty() {
            self.restart(ctx);
        }
        // Move to the best improving result since the last call.
        for i in self.examined..ctx.history.len() {
            let record = &ctx.history[i];
            let better = match self.current {
                None => record.outcome.status == crate::eval::Status::Ok,
                Some(c) => {
                    let new = self.score(ctx.problem, ctx.history, record);
                    let old = self.score(ctx.problem, ctx.history, &ctx.history[c]);
                    new < old
                }
            };
            if better {
                self.current = Some(i);
                self.failures = 0;
                self.queue = Self::neighbours(ctx.space, &record.choices, ctx.rng);
            } else if self.current.is_some() {
                self.failures += 1;
            }
        }
        self.examined = ctx.history.len();

        let mut out = Vec::with_capacity(n);
        let mut taken = HashSet::new();
        while out.len() < n {
            let exhausted_patience = self.patience > 0 && self.failures >= self.patience;
            if self.current.is_none() || exhausted_patience || self.queue.is_empty() {
                if self.current.is_some() {
                    self.restart(ctx);
                }
                let picks = sample_unseen(ctx.space, ctx.problem, ctx.seen, &mut taken, ctx.rng, 1);
                let Some(choices) = picks.into_iter().next() else {
                    break;
                };
                out.push(Proposal { choices, source: "random", predicted: None });
                // The restart point becomes current once its result arrives.
                break;
            }
            let next = self.queue.pop().expect("queue checked non-empty");
            if ctx.seen.contains(&next) || !taken.insert(next.clone()) {
                continue;
            }
            out.push(Proposal { choices: next, source: "local", predicted: None });
        }
        Ok(out)
    }
}
