//! Tree-search throughput: simulations per second with the built-in CPU surrogate scoring
//! each batch of 256 leaves in one call.
//!
//! The space is a synthetic table shaped like HW-GPT-Bench's small space (10,000 rows; width
//! in {192, 384, 768}, 10 to 12 layers, per-layer MLP ratio and heads), so the bench needs no
//! data files. The surrogate is a [`RidgeEnsemble`], or the search's default MLP ensemble,
//! fitted on 200 rows with two targets, and rewards are the two-objective hypervolume
//! improvement used by the search.
//!
//! ```text
//! cargo bench --bench search
//! ```

use alphanas::eval::EvalOutcome;
use alphanas::search::mcts::{LeafScorer, PriorTable, Tree, TreeSettings};
use alphanas::search::{Acquisition, EvalRecord, MlpSurrogate, Objective, Prediction, Problem, RidgeEnsemble, Rollout, Selection, Surrogate};
use alphanas::surrogate::EnsembleConfig;
use alphanas::space::table::TableSpace;
use alphanas::space::SearchSpace;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, HashSet};

const SIMULATIONS: usize = 4096;
const BATCH: usize = 256;

fn synthetic_table() -> TableSpace {
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let headers: Vec<String> =
        ["embed_dim", "n_layer", "bias", "mlp_ratio", "n_head", "loss", "latency"].iter().map(|s| s.to_string()).collect();
    let mut records = Vec::new();
    while records.len() < 10_000 {
        let d = [192.0, 384.0, 768.0][rng.random_range(0..3)];
        let layers = rng.random_range(10..=12);
        let ratios: Vec<u32> = (0..layers).map(|_| rng.random_range(2..=4)).collect();
        let heads: Vec<u32> = (0..layers).map(|_| [4, 8, 12][rng.random_range(0..3)]).collect();
        let params: f64 = ratios.iter().zip(&heads).map(|(&r, &h)| 256.0 * h as f64 * d + 3.0 * r as f64 * d * d).sum();
        let join = |v: &[u32]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>().join(" ");
        records.push(vec![
            d.to_string(),
            layers.to_string(),
            ["true", "false"][rng.random_range(0..2)].to_string(),
            join(&ratios),
            join(&heads),
            (3.0 + 20.0 / params.ln()).to_string(),
            (params / 1e6).to_string(),
        ]);
    }
    let decisions: Vec<String> = ["embed_dim", "n_layer", "bias", "mlp_ratio", "n_head"].iter().map(|s| s.to_string()).collect();
    TableSpace::from_records("synthetic-hwgpt", "generated rows", &headers, &records, &decisions).expect("valid table")
}

struct BenchScorer<'a> {
    space: &'a TableSpace,
    surrogate: Box<dyn Surrogate>,
    acquisition: Acquisition,
}

impl LeafScorer for BenchScorer<'_> {
    fn features(&self, choices: &[u32], out: &mut Vec<f32>) {
        out.extend(self.space.features(choices));
    }

    fn score(&mut self, features: &[f32], rows: &[Vec<u32>]) -> alphanas::Result<Prediction> {
        self.surrogate.score(features, rows.len())
    }

    fn reward(&self, prediction: &Prediction, row: usize) -> f64 {
        let t = prediction.n_targets;
        self.acquisition.reward(&prediction.mean[row * t..(row + 1) * t], &prediction.std[row * t..(row + 1) * t])
    }
}

fn bench_tree(c: &mut Criterion) {
    let space = synthetic_table();
    let problem = Problem::new(&[Objective::min("loss"), Objective::min("latency")], &[]);
    let mut rng = rand::rngs::StdRng::seed_from_u64(1);
    let mut history = Vec::new();
    let mut x = Vec::new();
    let mut y = Vec::new();
    for eval in 0..200 {
        let choices = space.sample(&mut rng);
        let candidate = space.candidate(&choices);
        let alphanas::space::Candidate::Row { index, .. } = candidate else { unreachable!("table rows") };
        let m = space.row_metrics(index).expect("row");
        let metrics: BTreeMap<String, f64> = [("loss".to_string(), m[0]), ("latency".to_string(), m[1])].into();
        x.push(space.features(&choices).iter().map(|&v| v as f64).collect::<Vec<f64>>());
        y.push(vec![m[0], m[1]]);
        history.push(EvalRecord {
            eval,
            source: "random".into(),
            choices,
            candidate,
            outcome: EvalOutcome::ok(metrics, 0.0),
            predicted: None,
        });
    }
    let mut ridge = RidgeEnsemble::with_seed(0);
    ridge.fit(&x, &y).expect("fit");
    let mut scorer = BenchScorer { space: &space, surrogate: Box::new(ridge), acquisition: Acquisition::new(&problem, &history, 0.5) };
    // The search's default surrogate: the MLP ensemble (5 members, hidden 64,64) on the CPU.
    // Training length does not change scoring cost, so a short fit is enough.
    let names: Vec<String> = space.feature_names();
    let mut mlp = MlpSurrogate::new(EnsembleConfig { epochs: 20, ..EnsembleConfig::default() }, &names, &["loss".into(), "latency".into()]);
    mlp.fit(&x, &y).expect("fit");
    let mut mlp_scorer = BenchScorer { space: &space, surrogate: Box::new(mlp), acquisition: Acquisition::new(&problem, &history, 0.5) };
    let priors = PriorTable::default();
    let settings = TreeSettings {
        selection: Selection::Puct,
        exploration: 1.0,
        batch: BATCH,
        rollout: Rollout::Random,
        widening_c: 2.0,
        widening_alpha: 0.5,
        widening_min_choices: 16,
    };
    let avoid = HashSet::new();

    let mut group = c.benchmark_group("mcts");
    group.throughput(Throughput::Elements(SIMULATIONS as u64));
    group.sample_size(10);
    let run_once = |scorer: &mut BenchScorer, rng: &mut rand::rngs::StdRng| {
        let mut tree = Tree::new(&space, settings.clone(), &priors);
        let before = scorer.surrogate.dispatches();
        tree.run(SIMULATIONS, scorer, &avoid, rng, &mut |_| {}).expect("tree run");
        assert_eq!(scorer.surrogate.dispatches() - before, tree.stats.leaf_batches);
        tree.stats.simulations
    };
    group.bench_function("simulations_4096_batch_256_ridge_cpu", |b| {
        b.iter(|| run_once(&mut scorer, &mut rng))
    });
    // The same work timed by this thread's CPU time, which stays meaningful on a machine
    // shared with other jobs, where wall time also counts the time the thread waits for a core.
    group.bench_function("simulations_4096_batch_256_ridge_cpu_thread_time", |b| {
        b.iter_custom(|iters| {
            let start = thread_cpu_time();
            for _ in 0..iters {
                std::hint::black_box(run_once(&mut scorer, &mut rng));
            }
            thread_cpu_time() - start
        })
    });
    group.bench_function("simulations_4096_batch_256_mlp_cpu", |b| b.iter(|| run_once(&mut mlp_scorer, &mut rng)));
    group.finish();
}

/// CPU time consumed by the calling thread (`CLOCK_THREAD_CPUTIME_ID`).
fn thread_cpu_time() -> std::time::Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec and the clock id is a constant libc defines.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID) failed");
    std::time::Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

criterion_group!(benches, bench_tree);
criterion_main!(benches);
