//! The MCTS strategy: fit the surrogate on all results, grow a fresh tree against it, and
//! propose the best unseen candidates the tree scored.

use super::acquisition::Acquisition;
use super::baselines::sample_unseen;
use super::config::{SearchConfig, SearchHooks, SurrogateKind};
use super::driver::{Context, Counters, Proposal, Proposer};
use super::mcts::{LeafScorer, PriorTable, ScoredCandidate, Tree, TreeSettings};
use super::model::{MlpSurrogate, Prediction, RidgeEnsemble, Surrogate};
use super::problem::Problem;
use crate::space::SearchSpace;
use std::collections::{BTreeMap, HashSet};
use std::time::Instant;

/// Scored candidates kept per requested proposal for greedy batch selection.
const SHORTLIST_PER_PICK: usize = 32;

pub(crate) struct MctsProposer {
    settings: TreeSettings,
    simulations_per_round: usize,
    initial: usize,
    kappa: f64,
    seed: u64,
    surrogate_kind: SurrogateKind,
    /// Names of the space features the surrogate reads; empty for all.
    space_features: Vec<String>,
    scoring_gpu: Option<std::sync::Arc<crate::device::GpuContext>>,
    surrogate: Option<Box<dyn Surrogate>>,
    /// Input features of the surrogate, set when it is created.
    feature_names: Vec<String>,
    priors: PriorTable,
    counters: Counters,
}

impl MctsProposer {
    pub(crate) fn new(cfg: &SearchConfig) -> Self {
        MctsProposer {
            settings: TreeSettings::from_config(cfg),
            simulations_per_round: cfg.simulations_per_round.max(1),
            initial: cfg.initial.max(2),
            kappa: cfg.kappa,
            seed: cfg.seed,
            surrogate_kind: cfg.surrogate.clone(),
            space_features: cfg.space_features.clone(),
            scoring_gpu: cfg.scoring_gpu.clone(),
            surrogate: None,
            feature_names: Vec::new(),
            priors: PriorTable::default(),
            counters: Counters::default(),
        }
    }
}

/// Positions of `names` among the features of `space`, or `None` for all of them when `names`
/// is empty. An unknown or repeated name is an error that lists the valid ones.
pub(crate) fn select_space_features(space: &dyn SearchSpace, names: &[String]) -> crate::Result<Option<Vec<usize>>> {
    if names.is_empty() {
        return Ok(None);
    }
    let all = space.feature_names();
    let mut selection = Vec::with_capacity(names.len());
    for name in super::table_features::trimmed_names(names, "feature")? {
        match all.iter().position(|n| n == name) {
            Some(position) => selection.push(position),
            None => {
                return Err(crate::Error::Invalid(format!(
                    "`{name}` is not a feature of space {}; choose from: {}",
                    space.name(),
                    all.join(", ")
                )))
            }
        }
    }
    Ok(Some(selection))
}

/// Space features (all, or those at `selection`) followed by the hooks' extra features, or the
/// extra features alone when the hooks drop the space's.
fn candidate_features(
    space: &dyn SearchSpace,
    hooks: &dyn SearchHooks,
    extra: bool,
    selection: Option<&[usize]>,
    choices: &[u32],
    out: &mut Vec<f32>,
) {
    if !extra || hooks.keep_space_features() {
        let all = space.features(choices);
        match selection {
            Some(selection) => out.extend(selection.iter().map(|&i| all[i])),
            None => out.extend(all),
        }
    }
    if extra {
        let candidate = space.candidate(choices);
        hooks.extra_features(&candidate, out);
    }
}

struct SurrogateScorer<'a> {
    space: &'a dyn SearchSpace,
    hooks: &'a dyn SearchHooks,
    extra: bool,
    selection: Option<&'a [usize]>,
    surrogate: &'a mut dyn Surrogate,
    acquisition: &'a Acquisition,
    problem: &'a Problem,
}

impl LeafScorer for SurrogateScorer<'_> {
    fn features(&self, choices: &[u32], out: &mut Vec<f32>) {
        candidate_features(self.space, self.hooks, self.extra, self.selection, choices, out);
    }

    fn score(&mut self, features: &[f32], rows: &[Vec<u32>]) -> crate::Result<Prediction> {
        let mut prediction = self.surrogate.score(features, rows.len())?;
        if self.problem.has_exact_targets() {
            let t = prediction.n_targets;
            for (r, choices) in rows.iter().enumerate() {
                let candidate = self.space.candidate(choices);
                let row = r * t..(r + 1) * t;
                self.problem.apply_exact(&candidate, &mut prediction.mean[row.clone()], &mut prediction.std[row]);
            }
        }
        Ok(prediction)
    }

    fn reward(&self, prediction: &Prediction, row: usize) -> f64 {
        let t = prediction.n_targets;
        let mean = &prediction.mean[row * t..(row + 1) * t];
        let std = &prediction.std[row * t..(row + 1) * t];
        self.acquisition.reward(mean, std)
    }
}

impl Proposer for MctsProposer {
    fn propose(&mut self, ctx: &mut Context<'_>, n: usize) -> crate::Result<Vec<Proposal>> {
        let extra_names = ctx.hooks.extra_feature_names();
        let extra = !extra_names.is_empty();
        let selection = select_space_features(ctx.space, &self.space_features)?;

        // Training rows: every ok result with all targets present.
        let mut x: Vec<Vec<f64>> = Vec::new();
        let mut y: Vec<Vec<f64>> = Vec::new();
        let mut buffer = Vec::new();
        for record in ctx.history {
            if record.outcome.status != crate::eval::Status::Ok {
                continue;
            }
            let Some(targets) = ctx.problem.target_vector(&record.outcome.metrics) else {
                continue;
            };
            buffer.clear();
            candidate_features(ctx.space, &*ctx.hooks, extra, selection.as_deref(), &record.choices, &mut buffer);
            x.push(buffer.iter().map(|&v| v as f64).collect());
            y.push(targets);
        }
        if x.len() < self.initial {
            let mut taken = HashSet::new();
            let picks = sample_unseen(ctx.space, ctx.problem, ctx.seen, &mut taken, ctx.rng, n);
            // Random draws that break a constraint known before evaluation would only spend the
            // budget. From two results on, the tree, which scores such constraints exactly, looks
            // for feasible candidates instead.
            let wasteful = ctx.problem.has_known_constraints()
                && picks.iter().any(|choices| ctx.problem.known_violation(&ctx.space.candidate(choices)).is_some());
            if !wasteful || x.len() < 2 {
                return Ok(picks.into_iter().map(|choices| Proposal { choices, source: "initial", predicted: None }).collect());
            }
            log::info!(
                "random draws rarely keep the known constraints; the tree search starts after {} results instead of {}",
                x.len(),
                self.initial
            );
        }

        if self.surrogate.is_none() {
            let mut names = if extra && !ctx.hooks.keep_space_features() {
                Vec::new()
            } else {
                let all = ctx.space.feature_names();
                match &selection {
                    Some(selection) => selection.iter().map(|&i| all[i].clone()).collect(),
                    None => all,
                }
            };
            names.extend(extra_names);
            let made = ctx.hooks.make_surrogate(&names, &ctx.problem.targets, self.seed);
            let surrogate: Box<dyn Surrogate> = match (made, &self.surrogate_kind) {
                (Some(surrogate), _) => surrogate,
                (None, SurrogateKind::Ridge) => Box::new(RidgeEnsemble::with_seed(self.seed)),
                (None, SurrogateKind::Mlp(config)) => {
                    let config = crate::surrogate::EnsembleConfig { seed: self.seed, ..config.clone() };
                    let surrogate = MlpSurrogate::new(config, &names, &ctx.problem.targets);
                    match &self.scoring_gpu {
                        Some(gpu) => Box::new(surrogate.on_gpu(std::sync::Arc::clone(gpu))),
                        None => Box::new(surrogate),
                    }
                }
            };
            log::info!("surrogate: {} over {} features and {} targets", surrogate.name(), names.len(), ctx.problem.targets.len());
            if selection.is_some() {
                for (j, name) in names.iter().enumerate().take(x[0].len()) {
                    if x.iter().all(|row| row[j] == x[0][j]) {
                        log::warn!("surrogate feature `{name}` has the same value in all {} results so far, so it tells the surrogate nothing", x.len());
                    }
                }
            }
            let exact = ctx.problem.exact_targets();
            if !exact.is_empty() {
                log::info!("targets known before evaluation, scored exactly instead of predicted: {}", exact.join(", "));
            }
            self.feature_names = names;
            self.surrogate = Some(surrogate);
        }
        let surrogate = self.surrogate.as_mut().expect("surrogate was just created");
        let fit_started = Instant::now();
        surrogate.fit(&x, &y)?;
        log::debug!("surrogate refit on {} rows in {:.3} s", x.len(), fit_started.elapsed().as_secs_f64());

        let acquisition = Acquisition::new(ctx.problem, ctx.history, self.kappa);
        let dispatches_before = surrogate.dispatches();
        // Ordered by choices, so priors and ties come out the same in every run with a seed.
        let mut pool: BTreeMap<Vec<u32>, ScoredCandidate> = BTreeMap::new();
        let started = Instant::now();
        let stats = {
            let mut scorer = SurrogateScorer {
                space: ctx.space,
                hooks: &*ctx.hooks,
                extra,
                selection: selection.as_deref(),
                surrogate: surrogate.as_mut(),
                acquisition: &acquisition,
                problem: ctx.problem,
            };
            let mut tree = Tree::new(ctx.space, self.settings.clone(), &self.priors);
            tree.run(self.simulations_per_round, &mut scorer, ctx.seen, ctx.rng, &mut |scored| {
                if !pool.contains_key(scored.choices) {
                    pool.insert(scored.choices.to_vec(), scored.to_owned());
                }
            })?;
            tree.stats
        };
        self.counters.simulation_seconds += started.elapsed().as_secs_f64();
        self.counters.simulations += stats.simulations;
        self.counters.leaf_batches += stats.leaf_batches;
        self.counters.surrogate_dispatches += surrogate.dispatches() - dispatches_before;
        log::debug!(
            "tree: {} simulations in {} batches, {} distinct candidates scored",
            stats.simulations,
            stats.leaf_batches,
            pool.len()
        );

        self.priors = PriorTable::from_rewards(pool.values().map(|c| (c.choices.as_slice(), c.reward)));
        // Leaves that break a constraint known before evaluation are dropped here.
        if ctx.problem.has_known_constraints() {
            pool.retain(|choices, _| ctx.problem.known_violation(&ctx.space.candidate(choices)).is_none());
        }
        let mut proposals = pick_batch(pool, ctx.seen, acquisition, n);
        if proposals.len() < n {
            let mut taken: HashSet<Vec<u32>> = proposals.iter().map(|p| p.choices.clone()).collect();
            let picks = sample_unseen(ctx.space, ctx.problem, ctx.seen, &mut taken, ctx.rng, n - proposals.len());
            proposals.extend(picks.into_iter().map(|choices| Proposal { choices, source: "random", predicted: None }));
        }
        Ok(proposals)
    }

    fn counters(&self) -> Counters {
        self.counters
    }

    fn surrogate_inputs(&self) -> Option<(String, Vec<String>)> {
        self.surrogate.as_ref().map(|s| (s.name().to_string(), self.feature_names.clone()))
    }
}

/// Picks `n` unseen candidates from `pool`. One objective: the `n` highest rewards. Several:
/// greedily, each pick added to the front as a fantasy before the next is scored, so a batch
/// spreads along the front instead of crowding one spot.
fn pick_batch(
    pool: BTreeMap<Vec<u32>, ScoredCandidate>,
    seen: &HashSet<Vec<u32>>,
    mut acquisition: Acquisition,
    n: usize,
) -> Vec<Proposal> {
    let mut shortlist: Vec<ScoredCandidate> = pool.into_values().filter(|c| !seen.contains(&c.choices)).collect();
    // Sort by reward, then by choices so ties break the same way in every run.
    shortlist.sort_by(|a, b| b.reward.total_cmp(&a.reward).then_with(|| a.choices.cmp(&b.choices)));
    shortlist.truncate(SHORTLIST_PER_PICK * n);
    let proposal = |c: ScoredCandidate| Proposal { choices: c.choices, source: "mcts", predicted: Some(c.mean) };
    if acquisition.dimensions() == 1 || n == 1 {
        return shortlist.into_iter().take(n).map(proposal).collect();
    }
    let mut picks = Vec::with_capacity(n);
    while picks.len() < n && !shortlist.is_empty() {
        let mut best = 0;
        let mut best_reward = f64::NEG_INFINITY;
        for (i, c) in shortlist.iter().enumerate() {
            let reward = acquisition.reward(&c.mean, &c.std);
            if reward > best_reward {
                best_reward = reward;
                best = i;
            }
        }
        let chosen = shortlist.remove(best);
        acquisition.add_fantasy(&chosen.mean, &chosen.std);
        picks.push(proposal(chosen));
    }
    picks
}
