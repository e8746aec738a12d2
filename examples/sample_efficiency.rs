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
//! Options: `--seeds N`, `--strategies mcts,random,evolution,local`, `--budget N` (MCTS,
//! evolution and local), `--random-budget N`, `--no-extra-features` (MCTS without the analytic
//! size features), `--surrogate ridge|mlp` (ridge by default), `--initial N` (random
//! evaluations before the first surrogate-guided round, 10 by default; MCTS only),
//! `--skip-constrained`, `--skip-pareto`. Needs the shared data folder
//! (`ALPHANAS_DATA_DIR`).

use alphanas::search::{
    run_search, Constraint, Objective, SearchConfig, SearchHooks, SearchReport, Strategy, SurrogateKind, TableEvaluator,
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
    mlp: bool,
    constrained: bool,
    pareto: bool,
}

fn parse_options() -> Result<Options, String> {
    let mut options = Options {
        seeds: 20,
        strategies: vec![Strategy::Mcts, Strategy::Evolution, Strategy::Random],
        budget: 600,
        random_budget: 6000,
        initial: 10,
        extra_features: true,
        mlp: false,
        constrained: true,
        pareto: true,
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
            "--surrogate" => match value("--surrogate")?.as_str() {
                "ridge" => options.mlp = false,
                "mlp" => options.mlp = true,
                other => return Err(format!("unknown surrogate `{other}`; use ridge or mlp")),
            },
            "--skip-constrained" => options.constrained = false,
            "--skip-pareto" => options.pareto = false,
            other => return Err(format!("unknown option `{other}`; see the example's header")),
        }
    }
    Ok(options)
}

/// Analytic size features of an HW-GPT-Bench row, appended to the table's decision features.
/// They are the log of the non-embedding parameter count `Σ_l (256·h_l·d + 3·r_l·d²)`, the log
/// of the total number of heads, and the log of the width. The count follows from the
/// benchmark's model: head size 64 and a three-matrix MLP of hidden size ratio × width.
struct SizeFeatures;

impl SearchHooks for SizeFeatures {
    fn extra_feature_names(&self) -> Vec<String> {
        vec!["log_non_embedding_params".into(), "log_total_heads".into(), "log_embed_dim".into()]
    }

    fn extra_features(&self, candidate: &Candidate, out: &mut Vec<f32>) {
        let Candidate::Row { values, .. } = candidate else {
            out.extend([0.0, 0.0, 0.0]);
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
    }
}

struct NoExtra;
impl SearchHooks for NoExtra {}

fn config(strategy: Strategy, budget: usize, seed: u64, mlp: bool, initial: usize) -> SearchConfig {
    SearchConfig {
        strategy,
        evals: budget,
        seed,
        q: 2,
        batch: 256,
        initial,
        simulations_per_round: 2048,
        kappa: 0.5,
        population: 50,
        tournament: 10,
        surrogate: if mlp { SurrogateKind::Mlp(Default::default()) } else { SurrogateKind::Ridge },
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
    extra: bool,
) -> alphanas::Result<SearchReport> {
    let mut with_sizes = SizeFeatures;
    let mut plain = NoExtra;
    let hooks: &mut dyn SearchHooks = if extra { &mut with_sizes } else { &mut plain };
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
                let mut cfg = config(strategy, budget, seed, options.mlp, options.initial);
                cfg.objectives = vec![Objective::min(QUALITY), Objective::min(LATENCY)];
                cfg.reference_point = Some(reference.clone());
                let report = run(&space, &evaluator, &cfg, options.extra_features)?;
                hits95.push(evals_to_reach(&report.hypervolume, 0.95 * true_volume));
                hits99.push(evals_to_reach(&report.hypervolume, 0.99 * true_volume));
                eprintln!(
                    "{} seed {seed}: 95% at {:?}, 99% at {:?}, final {:.4} of true",
                    strategy.name(),
                    hits95.last().unwrap(),
                    hits99.last().unwrap(),
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
                let mut cfg = config(strategy, budget, seed, options.mlp, options.initial);
                cfg.objectives = vec![Objective::min(QUALITY)];
                cfg.constraints = vec![Constraint::parse(&format!("{LATENCY}<={LATENCY_LIMIT}"))?];
                let report = run(&space, &evaluator, &cfg, options.extra_features)?;
                let found = report.history.iter().position(|r| {
                    r.outcome.metrics.get(QUALITY) == Some(&optimum)
                        && r.outcome.metrics.get(LATENCY).is_some_and(|&l| l <= LATENCY_LIMIT)
                });
                eprintln!("{} seed {seed}: optimum at {:?}", strategy.name(), found.map(|i| i + 1));
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
