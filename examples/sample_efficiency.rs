//! Sample efficiency of the search strategies on HW-GPT-Bench's small space (10,000 GPT
//! architectures with measured perplexity and H100 latency), used as a table space.
//!
//! Multi-objective: minimise `perplexity` and `lat_h100_ms_mean`. For each strategy and seed,
//! count the evaluations until the hypervolume of the results reaches 95% and 99% of the
//! table's true hypervolume. The reference point is each objective's worst value in the table
//! plus 1% of its range. Constrained: minimise `perplexity` subject to `lat_h100_ms_mean <= 7`,
//! counting evaluations until the table's constrained optimum is evaluated.
//!
//! ```text
//! cargo run --release --example sample_efficiency -- --seeds 20
//! ```
//! Options:
//! - `--seeds N`, `--strategies mcts,random,evolution,local`, `--budget N` (MCTS, evolution
//!   and local), `--random-budget N`;
//! - `--no-extra-features`: MCTS without the analytic size features;
//! - `--sizes-only`: the surrogate reads the size features, depth and bias, not the decision
//!   columns;
//! - `--surrogate ridge|mlp|oracle`: ridge by default. `oracle` returns the true metrics, an
//!   upper bound;
//! - `--initial N`: random evaluations before the first surrogate-guided round (10; MCTS only);
//! - `--q N` (evaluations per round, 2), `--kappa K` (optimism, 0.5), `--simulations N` (tree
//!   simulations per round, 2048), `--exploration C` (PUCT constant, 1);
//! - `--skip-constrained`, `--skip-pareto`.
//!
//! Needs the shared data folder (`ALPHANAS_DATA_DIR`).

use alphanas::search::{
    run_search, Constraint, Objective, Prediction, SearchConfig, SearchHooks, SearchReport, Strategy, Surrogate,
    SurrogateKind, TableEvaluator,
};
use alphanas::space::table::TableSpace;
use alphanas::space::Candidate;
use std::sync::Arc;
use std::time::Instant;

const DECISIONS: [&str; 5] = ["embed_dim", "n_layer", "bias", "mlp_ratio", "n_head"];
const QUALITY: &str = "perplexity";
const LATENCY: &str = "lat_h100_ms_mean";
const LATENCY_LIMIT: f64 = 7.0;

struct Options {
    seeds: u64,
    strategies: Vec<Strategy>,
    budget: usize,
    random_budget: usize,
    initial: usize,
    extra_features: bool,
    sizes_only: bool,
    mlp: bool,
    oracle: bool,
    constrained: bool,
    pareto: bool,
    q: usize,
    kappa: f64,
    simulations: usize,
    exploration: f64,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        seeds: 20,
        strategies: vec![Strategy::Mcts, Strategy::Evolution, Strategy::Random],
        budget: 600,
        random_budget: 6000,
        initial: 10,
        extra_features: true,
        sizes_only: false,
        mlp: false,
        oracle: false,
        constrained: true,
        pareto: true,
        q: 2,
        kappa: 0.5,
        simulations: 2048,
        exploration: 1.0,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "--seeds" => options.seeds = value("--seeds")?.parse().map_err(|e| format!("--seeds: {e}"))?,
            "--budget" => options.budget = value("--budget")?.parse().map_err(|e| format!("--budget: {e}"))?,
            "--random-budget" => {
                options.random_budget = value("--random-budget")?.parse().map_err(|e| format!("--random-budget: {e}"))?
            }
            "--strategies" => {
                options.strategies = value("--strategies")?
                    .split(',')
                    .map(|s| Strategy::parse(s.trim()).map_err(|e| e.to_string()))
                    .collect::<Result<_, _>>()?
            }
            "--initial" => options.initial = value("--initial")?.parse().map_err(|e| format!("--initial: {e}"))?,
            "--no-extra-features" => options.extra_features = false,
            "--sizes-only" => options.sizes_only = true,
            "--surrogate" => match value("--surrogate")?.as_str() {
                "ridge" => options.mlp = false,
                "mlp" => options.mlp = true,
                "oracle" => options.oracle = true,
                other => return Err(format!("unknown surrogate `{other}`; use ridge, mlp or oracle")),
            },
            "--skip-constrained" => options.constrained = false,
            "--skip-pareto" => options.pareto = false,
            "--q" => options.q = value("--q")?.parse().map_err(|e| format!("--q: {e}"))?,
            "--kappa" => options.kappa = value("--kappa")?.parse().map_err(|e| format!("--kappa: {e}"))?,
            "--simulations" => {
                options.simulations = value("--simulations")?.parse().map_err(|e| format!("--simulations: {e}"))?
            }
            "--exploration" => {
                options.exploration = value("--exploration")?.parse().map_err(|e| format!("--exploration: {e}"))?
            }
            other => return Err(format!("unknown option `{other}`; see the example's header")),
        }
    }
    Ok(options)
}

/// Analytic size features of an HW-GPT-Bench row, appended to the table's decision features.
/// They are the log of the non-embedding parameter count `Σ_l (256·h_l·d + 3·r_l·d²)`, the log
/// of the total number of heads, and the log of the width. The count follows from the
/// benchmark's model: head size 64 and a three-matrix MLP of hidden size ratio × width.
struct SizeFeatures {
    /// The surrogate reads only these features (with the depth and bias), not the table's
    /// decision columns.
    alone: bool,
}

impl SearchHooks for SizeFeatures {
    fn extra_feature_names(&self) -> Vec<String> {
        let mut names = vec!["log_non_embedding_params".into(), "log_total_heads".into(), "log_embed_dim".into()];
        if self.alone {
            names.extend(["n_layer".into(), "bias".into()]);
        }
        names
    }

    fn keep_space_features(&self) -> bool {
        !self.alone
    }

    fn extra_features(&self, candidate: &Candidate, out: &mut Vec<f32>) {
        let Candidate::Row { values, .. } = candidate else {
            out.extend(std::iter::repeat_n(0.0, self.extra_feature_names().len()));
            return;
        };
        let get = |name: &str| values.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str()).unwrap_or("");
        let list = |name: &str| get(name).split_whitespace().filter_map(|t| t.parse::<f64>().ok()).collect::<Vec<f64>>();
        let d: f64 = get("embed_dim").parse().unwrap_or(1.0);
        let ratios = list("mlp_ratio");
        let heads = list("n_head");
        let params: f64 = heads.iter().zip(&ratios).map(|(h, r)| 256.0 * h * d + 3.0 * r * d * d).sum();
        let total_heads: f64 = heads.iter().sum();
        out.push(params.max(1.0).ln() as f32);
        out.push(total_heads.max(1.0).ln() as f32);
        out.push(d.ln() as f32);
        if self.alone {
            out.push(heads.len() as f32);
            out.push(if get("bias") == "true" { 1.0 } else { 0.0 });
        }
    }
}

struct NoExtra;
impl SearchHooks for NoExtra {}

/// A perfect surrogate: it returns each row's true metrics with zero spread. It bounds what
/// the tree search and the acquisition can do with an exact model, so the gap between it and
/// a fitted surrogate is the cost of the surrogate's error. The row index is the only feature.
struct Oracle {
    space: Arc<TableSpace>,
}

impl SearchHooks for Oracle {
    fn extra_feature_names(&self) -> Vec<String> {
        vec!["row_index".into()]
    }

    fn extra_features(&self, candidate: &Candidate, out: &mut Vec<f32>) {
        let Candidate::Row { index, .. } = candidate else {
            out.push(f32::NAN);
            return;
        };
        out.push(*index as f32);
    }

    fn keep_space_features(&self) -> bool {
        false
    }

    fn make_surrogate(&mut self, _features: &[String], targets: &[String], _seed: u64) -> Option<Box<dyn Surrogate>> {
        let names = self.space.metric_names();
        let columns = targets.iter().map(|t| names.iter().position(|n| n == t).expect("target is a table column")).collect();
        Some(Box::new(OracleModel { space: self.space.clone(), columns, dispatches: 0 }))
    }
}

struct OracleModel {
    space: Arc<TableSpace>,
    columns: Vec<usize>,
    dispatches: u64,
}

impl Surrogate for OracleModel {
    fn name(&self) -> &str {
        "oracle"
    }

    fn fit(&mut self, _x: &[Vec<f64>], _y: &[Vec<f64>]) -> alphanas::Result<()> {
        Ok(())
    }

    fn score(&mut self, x: &[f32], n: usize) -> alphanas::Result<Prediction> {
        self.dispatches += 1;
        let t = self.columns.len();
        let mut mean = Vec::with_capacity(n * t);
        for &index in &x[..n] {
            let metrics = self.space.row_metrics(index as usize).expect("row index in range");
            mean.extend(self.columns.iter().map(|&c| metrics[c]));
        }
        Ok(Prediction { n_targets: t, mean, std: vec![0.0; n * t] })
    }

    fn dispatches(&self) -> u64 {
        self.dispatches
    }
}

fn config(strategy: Strategy, budget: usize, seed: u64, options: &Options) -> SearchConfig {
    SearchConfig {
        strategy,
        evals: budget,
        seed,
        q: options.q,
        batch: 256,
        initial: options.initial,
        simulations_per_round: options.simulations,
        exploration: options.exploration,
        kappa: options.kappa,
        population: 50,
        tournament: 10,
        surrogate: if options.mlp { SurrogateKind::Mlp(Default::default()) } else { SurrogateKind::Ridge },
        ..SearchConfig::default()
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        0.5 * (values[n / 2 - 1] + values[n / 2])
    }
}

/// Formats an evaluation count, or reports that the level was not reached within the budget.
fn reached(evaluations: Option<usize>) -> String {
    evaluations.map_or_else(|| "not reached".to_string(), |n| format!("at evaluation {n}"))
}

/// Evaluations (1-based) until `trace` first reaches `level`, or `None` within the budget.
fn evals_to_reach(trace: &[f64], level: f64) -> Option<usize> {
    trace.iter().position(|&v| v >= level).map(|i| i + 1)
}

fn format_median(hits: &[Option<usize>], budget: usize) -> String {
    let reached: Vec<f64> = hits.iter().flatten().map(|&v| v as f64).collect();
    let mut all: Vec<f64> = hits.iter().map(|h| h.map_or(f64::INFINITY, |v| v as f64)).collect();
    let m = median(&mut all);
    let text = if m.is_finite() { format!("{m:.0}") } else { format!("> {budget}") };
    format!("{text} ({}/{} reached)", reached.len(), hits.len())
}

fn run(
    space: &Arc<TableSpace>,
    evaluator: &Arc<TableEvaluator>,
    cfg: &SearchConfig,
    options: &Options,
) -> alphanas::Result<SearchReport> {
    let mut with_sizes = SizeFeatures { alone: options.sizes_only };
    let mut plain = NoExtra;
    let mut oracle = Oracle { space: space.clone() };
    let hooks: &mut dyn SearchHooks = if options.oracle {
        &mut oracle
    } else if options.extra_features {
        &mut with_sizes
    } else {
        &mut plain
    };
    run_search(space.clone(), evaluator.clone(), cfg, hooks)
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let options = parse_options()?;
    let Some(data) = alphanas::shared_data_dir() else {
        eprintln!("the shared data folder was not found; set ALPHANAS_DATA_DIR to the folder that contains hwgpt/");
        return Ok(());
    };
    let path = data.join("hwgpt/hwgpt_s_joint.csv");
    let decisions: Vec<String> = DECISIONS.iter().map(|s| s.to_string()).collect();
    let space = Arc::new(TableSpace::from_csv(&path, &decisions)?);
    let evaluator = Arc::new(TableEvaluator::new(space.clone()));
    let names = space.metric_names();
    let quality = names.iter().position(|n| n == QUALITY).ok_or("perplexity column missing")?;
    let latency = names.iter().position(|n| n == LATENCY).ok_or("latency column missing")?;
    let rows: Vec<(f64, f64)> = (0..space.len())
        .map(|i| {
            let m = space.row_metrics(i).expect("row index in range");
            (m[quality], m[latency])
        })
        .collect();
    println!("{} rows from {}", rows.len(), path.display());

    if options.pareto {
        let worst_q = rows.iter().map(|r| r.0).fold(f64::NEG_INFINITY, f64::max);
        let best_q = rows.iter().map(|r| r.0).fold(f64::INFINITY, f64::min);
        let worst_l = rows.iter().map(|r| r.1).fold(f64::NEG_INFINITY, f64::max);
        let best_l = rows.iter().map(|r| r.1).fold(f64::INFINITY, f64::min);
        let reference = vec![worst_q + 0.01 * (worst_q - best_q), worst_l + 0.01 * (worst_l - best_l)];
        let points: Vec<Vec<f64>> = rows.iter().map(|r| vec![r.0, r.1]).collect();
        let true_volume = alphanas::search::pareto::hypervolume(&points, &reference);
        let front = alphanas::search::pareto::front_indices(&points).len();
        println!("true Pareto front: {front} rows, hypervolume {true_volume:.6} at reference {reference:?}");
        println!();
        println!("| strategy | seeds | budget | evals to 95% HV (median) | evals to 99% HV (median) | wall s per run |");
        println!("| --- | --- | --- | --- | --- | --- |");
        for &strategy in &options.strategies {
            let budget = if strategy == Strategy::Random { options.random_budget } else { options.budget };
            let mut hits95 = Vec::new();
            let mut hits99 = Vec::new();
            let started = Instant::now();
            for seed in 0..options.seeds {
                let mut cfg = config(strategy, budget, seed, &options);
                cfg.objectives = vec![Objective::min(QUALITY), Objective::min(LATENCY)];
                cfg.reference_point = Some(reference.clone());
                let report = run(&space, &evaluator, &cfg, &options)?;
                hits95.push(evals_to_reach(&report.hypervolume, 0.95 * true_volume));
                hits99.push(evals_to_reach(&report.hypervolume, 0.99 * true_volume));
                eprintln!(
                    "{} seed {seed}: 95% {}, 99% {}, final {:.4} of true",
                    strategy.name(),
                    reached(*hits95.last().unwrap()),
                    reached(*hits99.last().unwrap()),
                    report.hypervolume.last().copied().unwrap_or(0.0) / true_volume
                );
            }
            let per_run = started.elapsed().as_secs_f64() / options.seeds.max(1) as f64;
            println!(
                "| {} | {} | {budget} | {} | {} | {per_run:.1} |",
                strategy.name(),
                options.seeds,
                format_median(&hits95, budget),
                format_median(&hits99, budget)
            );
        }
    }

    if options.constrained {
        let optimum = rows.iter().filter(|r| r.1 <= LATENCY_LIMIT).map(|r| r.0).fold(f64::INFINITY, f64::min);
        let feasible = rows.iter().filter(|r| r.1 <= LATENCY_LIMIT).count();
        println!();
        println!("constrained: min {QUALITY} with {LATENCY} <= {LATENCY_LIMIT}: {feasible} feasible rows, optimum {optimum:.4}");
        println!();
        println!("| strategy | seeds | budget | evals to find the optimum (median) | wall s per run |");
        println!("| --- | --- | --- | --- | --- |");
        for &strategy in &options.strategies {
            let budget = if strategy == Strategy::Random { options.random_budget } else { options.budget };
            let mut hits = Vec::new();
            let started = Instant::now();
            for seed in 0..options.seeds {
                let mut cfg = config(strategy, budget, seed, &options);
                cfg.objectives = vec![Objective::min(QUALITY)];
                cfg.constraints = vec![Constraint::parse(&format!("{LATENCY}<={LATENCY_LIMIT}"))?];
                let report = run(&space, &evaluator, &cfg, &options)?;
                let found = report.history.iter().position(|r| {
                    r.outcome.metrics.get(QUALITY) == Some(&optimum)
                        && r.outcome.metrics.get(LATENCY).is_some_and(|&l| l <= LATENCY_LIMIT)
                });
                eprintln!("{} seed {seed}: optimum {}", strategy.name(), reached(found.map(|i| i + 1)));
                hits.push(found.map(|i| i + 1));
            }
            let per_run = started.elapsed().as_secs_f64() / options.seeds.max(1) as f64;
            println!(
                "| {} | {} | {budget} | {} | {per_run:.1} |",
                strategy.name(),
                options.seeds,
                format_median(&hits, budget)
            );
        }
    }
    Ok(())
}
