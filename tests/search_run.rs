//! End-to-end searches on synthetic spaces with known optima.

#[path = "search_common.rs"]
mod common;

use alphanas::search::mcts::{LeafScorer, PriorTable, Tree, TreeSettings};
use alphanas::search::{
    run_search, Constraint, NoHooks, Objective, Prediction, Rollout, SearchConfig, Selection, Strategy, SurrogateKind,
};
use alphanas::space::SearchSpace;
use common::{BowlEvaluator, GridSpace};
use rand::SeedableRng;
use std::collections::HashSet;
use std::sync::Arc;

fn config(strategy: Strategy, evals: usize, seed: u64) -> SearchConfig {
    SearchConfig {
        strategy,
        objectives: vec![Objective::min("loss")],
        evals,
        batch: 32,
        q: 2,
        initial: 8,
        seed,
        simulations_per_round: 512,
        surrogate: SurrogateKind::Ridge,
        ..SearchConfig::default()
    }
}

fn bowl() -> (Arc<dyn SearchSpace>, Arc<BowlEvaluator>) {
    let space: Arc<dyn SearchSpace> = Arc::new(GridSpace { width: 4, choices: 7 });
    (space, Arc::new(BowlEvaluator::new(vec![2.0, 5.0, 1.0, 4.0])))
}

#[test]
fn mcts_finds_known_optimum() {
    let (space, evaluator) = bowl();
    let report = run_search(space, evaluator, &config(Strategy::Mcts, 60, 1), &mut NoHooks).unwrap();
    let best = report.history.iter().map(|r| r.outcome.metrics["loss"]).fold(f64::INFINITY, f64::min);
    // 2401 candidates; the optimum has loss 1 (the bowl is offset by 1).
    assert_eq!(best, 1.0, "best loss after 60 of 2401 evaluations");
    assert_eq!(report.front.len(), 1);
    assert_eq!(report.front[0].objectives, vec![1.0]);
}

#[test]
fn mcts_one_dispatch_per_leaf_batch() {
    let (space, evaluator) = bowl();
    let report = run_search(space, evaluator, &config(Strategy::Mcts, 20, 2), &mut NoHooks).unwrap();
    assert!(report.leaf_batches > 0);
    assert_eq!(report.surrogate_dispatches, report.leaf_batches);
    // 6 rounds after the 8 initial evaluations, 512 simulations in batches of 32 each.
    assert_eq!(report.simulations, 6 * 512);
    assert_eq!(report.leaf_batches, 6 * 512 / 32);
}

#[test]
fn seeded_runs_are_reproducible() {
    for strategy in [Strategy::Mcts, Strategy::Random, Strategy::Evolution, Strategy::Local] {
        let run = |workers| {
            let (space, evaluator) = bowl();
            let mut cfg = config(strategy, 30, 9);
            cfg.workers = workers;
            cfg.population = 10;
            cfg.tournament = 3;
            run_search(space, evaluator, &cfg, &mut NoHooks).unwrap()
        };
        let a = run(1);
        let b = run(3);
        let choices = |r: &alphanas::search::SearchReport| r.history.iter().map(|h| h.choices.clone()).collect::<Vec<_>>();
        assert_eq!(choices(&a), choices(&b), "{strategy:?}");
    }
}

#[test]
fn no_candidate_evaluated_twice() {
    for strategy in [Strategy::Mcts, Strategy::Random, Strategy::Evolution, Strategy::Local] {
        // 27 candidates and a budget of 40: every candidate once, then the search stops.
        let space: Arc<dyn SearchSpace> = Arc::new(GridSpace { width: 3, choices: 3 });
        let evaluator = Arc::new(BowlEvaluator::new(vec![1.0, 1.0, 1.0]));
        let mut cfg = config(strategy, 40, 3);
        cfg.population = 5;
        cfg.tournament = 2;
        cfg.initial = 4;
        let report = run_search(space, evaluator.clone(), &cfg, &mut NoHooks).unwrap();
        let distinct: HashSet<Vec<u32>> = report.history.iter().map(|r| r.choices.clone()).collect();
        assert_eq!(distinct.len(), report.history.len(), "{strategy:?}");
        assert!(report.history.len() <= 27, "{strategy:?}");
        assert_eq!(evaluator.calls.load(std::sync::atomic::Ordering::SeqCst), report.history.len());
    }
}

#[test]
fn random_search_exhausts_small_space() {
    let space: Arc<dyn SearchSpace> = Arc::new(GridSpace { width: 2, choices: 3 });
    let evaluator = Arc::new(BowlEvaluator::new(vec![0.0, 0.0]));
    let report = run_search(space, evaluator, &config(Strategy::Random, 20, 0), &mut NoHooks).unwrap();
    assert_eq!(report.history.len(), 9);
    assert!(report.exhausted);
}

#[test]
fn baselines_find_known_optimum() {
    for strategy in [Strategy::Evolution, Strategy::Local] {
        let (space, evaluator) = bowl();
        let mut cfg = config(strategy, 400, 4);
        cfg.population = 20;
        cfg.tournament = 5;
        let report = run_search(space, evaluator, &cfg, &mut NoHooks).unwrap();
        let best = report.history.iter().map(|r| r.outcome.metrics["loss"]).fold(f64::INFINITY, f64::min);
        assert_eq!(best, 1.0, "{strategy:?}");
    }
}

#[test]
fn constrained_search_respects_limit() {
    let (space, evaluator) = bowl();
    let mut cfg = config(Strategy::Mcts, 60, 5);
    // The unconstrained optimum (2, 5, 1, 4) costs 13, so the limit cuts it off.
    cfg.constraints = vec![Constraint::parse("cost<=9").unwrap()];
    let report = run_search(space, evaluator, &cfg, &mut NoHooks).unwrap();
    assert_eq!(report.front.len(), 1);
    assert!(report.front[0].metrics["cost"] <= 9.0);
    // The best feasible loss, by enumerating all 2401 candidates.
    let mut best = f64::INFINITY;
    for a in 0..7u32 {
        for b in 0..7u32 {
            for c in 0..7u32 {
                for d in 0..7u32 {
                    let x = [a, b, c, d].map(f64::from);
                    if x.iter().sum::<f64>() + 1.0 <= 9.0 {
                        let loss: f64 = x.iter().zip([2.0, 5.0, 1.0, 4.0]).map(|(p, q)| (p - q) * (p - q)).sum();
                        best = best.min(loss + 1.0);
                    }
                }
            }
        }
    }
    assert_eq!(report.front[0].objectives[0], best);
}

#[test]
fn multi_objective_front_and_hypervolume() {
    let (space, evaluator) = bowl();
    let mut cfg = config(Strategy::Mcts, 60, 6);
    cfg.objectives = vec![Objective::min("loss"), Objective::min("cost")];
    cfg.q = 4;
    let report = run_search(space, evaluator, &cfg, &mut NoHooks).unwrap();
    assert!(report.front.len() >= 3, "front size {}", report.front.len());
    assert_eq!(report.hypervolume.len(), 60);
    assert!(report.hypervolume.windows(2).all(|w| w[1] >= w[0]));
    // The cost-0 corner (all zeros, cost 1) and the loss optimum are both on the true front.
    let found: Vec<Vec<f64>> = report.front.iter().map(|p| p.objectives.clone()).collect();
    assert!(found.iter().any(|p| p[1] <= 3.0), "{found:?}");
}

#[test]
fn failed_evaluations_are_counted() {
    let space: Arc<dyn SearchSpace> = Arc::new(GridSpace { width: 3, choices: 4 });
    let mut evaluator = BowlEvaluator::new(vec![1.0, 1.0, 1.0]);
    evaluator.fail_on = Some(0.0);
    let report = run_search(space, Arc::new(evaluator), &config(Strategy::Random, 40, 2), &mut NoHooks).unwrap();
    let failed = report.history.iter().filter(|r| r.outcome.error.is_some()).count();
    assert!(failed > 0);
    assert_eq!(report.status_counts["failed"], failed);
    assert_eq!(report.status_counts["ok"], 40 - failed);
}

#[test]
fn stop_flag_ends_search() {
    let (space, evaluator) = bowl();
    let cfg = config(Strategy::Random, 50, 0);
    cfg.stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let report = run_search(space, evaluator, &cfg, &mut NoHooks).unwrap();
    assert!(report.stopped);
    assert!(report.history.is_empty());
}

#[test]
fn config_rejects_bad_values() {
    let (space, evaluator) = bowl();
    let mut cfg = config(Strategy::Mcts, 10, 0);
    cfg.objectives.clear();
    let err = run_search(space.clone(), evaluator.clone(), &cfg, &mut NoHooks).unwrap_err().to_string();
    assert!(err.contains("no objective"), "{err}");
    let mut cfg = config(Strategy::Mcts, 10, 0);
    cfg.objectives = vec![Objective::min("perplexity")];
    let err = run_search(space, evaluator, &cfg, &mut NoHooks).unwrap_err().to_string();
    assert!(err.contains("`perplexity` is not returned by the bowl evaluator"), "{err}");
}

/// Scores features by their sum and counts calls.
struct CountingScorer {
    calls: usize,
    rows: usize,
}

impl LeafScorer for CountingScorer {
    fn features(&self, choices: &[u32], out: &mut Vec<f32>) {
        out.extend(choices.iter().map(|&c| c as f32));
    }

    fn score(&mut self, features: &[f32], rows: &[Vec<u32>]) -> alphanas::Result<Prediction> {
        let n = rows.len();
        self.calls += 1;
        self.rows += n;
        let width = features.len() / n;
        let mean: Vec<f64> = features.chunks(width).map(|r| r.iter().map(|&v| v as f64).sum()).collect();
        Ok(Prediction { n_targets: 1, std: vec![0.0; n], mean })
    }

    fn reward(&self, prediction: &Prediction, row: usize) -> f64 {
        -prediction.mean[row]
    }
}

fn tree_settings(selection: Selection, batch: usize) -> TreeSettings {
    TreeSettings {
        selection,
        exploration: 1.0,
        batch,
        rollout: Rollout::Random,
        widening_c: 2.0,
        widening_alpha: 0.5,
        widening_min_choices: 4,
    }
}

#[test]
fn virtual_loss_gives_distinct_leaves() {
    for selection in [Selection::Puct, Selection::Ucb] {
        let space = GridSpace { width: 5, choices: 10 };
        let priors = PriorTable::default();
        let mut tree = Tree::new(&space, tree_settings(selection, 64), &priors);
        let mut scorer = CountingScorer { calls: 0, rows: 0 };
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut scored = 0usize;
        tree.run(64 * 20, &mut scorer, &HashSet::new(), &mut rng, &mut |_| scored += 1).unwrap();
        assert_eq!(tree.stats.repeated_leaves, 0, "{selection:?}");
        assert_eq!(tree.stats.max_batch, 64, "{selection:?}");
        assert_eq!(tree.stats.leaf_batches, 20, "{selection:?}");
        assert_eq!(scorer.calls, 20, "{selection:?}");
        assert_eq!(scorer.rows, 64 * 20, "{selection:?}");
        assert_eq!(scored, 64 * 20, "{selection:?}");
        // Each simulation creates exactly one node.
        assert_eq!(tree.len(), 1 + 64 * 20, "{selection:?}");
    }
}

#[test]
fn guided_rollout_scores_all_samples_in_one_call() {
    let space = GridSpace { width: 4, choices: 5 };
    let priors = PriorTable::default();
    let mut settings = tree_settings(Selection::Puct, 16);
    settings.rollout = Rollout::Guided { samples: 4 };
    let mut tree = Tree::new(&space, settings, &priors);
    let mut scorer = CountingScorer { calls: 0, rows: 0 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(2);
    tree.run(16 * 5, &mut scorer, &HashSet::new(), &mut rng, &mut |_| {}).unwrap();
    assert_eq!(scorer.calls, 5);
    assert!(scorer.rows > 16 * 5, "guided rollouts score several completions per leaf");
}

#[test]
fn tree_exhausts_small_space() {
    let space = GridSpace { width: 2, choices: 3 };
    let priors = PriorTable::default();
    let mut tree = Tree::new(&space, tree_settings(Selection::Puct, 4), &priors);
    let mut scorer = CountingScorer { calls: 0, rows: 0 };
    let mut rng = rand::rngs::StdRng::seed_from_u64(3);
    let mut leaves = HashSet::new();
    tree.run(1000, &mut scorer, &HashSet::new(), &mut rng, &mut |c| {
        leaves.insert(c.choices.to_vec());
    })
    .unwrap();
    assert!(tree.is_exhausted());
    // 1 root + 3 + 9 nodes, and every candidate was scored.
    assert_eq!(tree.len(), 13);
    assert_eq!(leaves.len(), 9);
    assert_eq!(tree.stats.simulations, 12);
}

#[test]
fn mlp_surrogate_drives_mcts() {
    let (space, evaluator) = bowl();
    let mut cfg = config(Strategy::Mcts, 16, 7);
    cfg.surrogate = SurrogateKind::Mlp(alphanas::surrogate::EnsembleConfig {
        members: 2,
        hidden: vec![16],
        epochs: 40,
        ..alphanas::surrogate::EnsembleConfig::default()
    });
    let report = run_search(space, evaluator, &cfg, &mut NoHooks).unwrap();
    assert_eq!(report.history.len(), 16);
    assert_eq!(report.surrogate_dispatches, report.leaf_batches);
    assert!(report.history.iter().any(|r| r.source == "mcts"));
    assert!(report.history.iter().filter(|r| r.source == "mcts").all(|r| r.predicted.is_some()));
}
