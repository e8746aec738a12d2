//! A small search from library code: the built-in llama space, the `measure` evaluator and
//! MCTS. The evaluator measures decode latency on a hardware GPU when one is found, else on the
//! CPU, with the decoder-parameter proxy and peak memory. The surrogate runs on the same device.
//!
//! Run with `cargo run --release --example default_search [EVALS]` (default 12). Outputs go to
//! a temporary folder whose path is printed; the Pareto front is printed at the end.

use alphanas::device::{Backend, BackendChoice};
use alphanas::eval::measure::{CpuBackend, ForwardBackend, GpuBackend, MeasureEvaluator, MeasureSettings};
use alphanas::eval::proxy::Quality;
use alphanas::search::{run_search, NoHooks, Objective, SearchConfig};
use alphanas::space::{Candidate, Space};
use std::sync::Arc;

fn main() -> alphanas::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let evals: usize = match std::env::args().nth(1) {
        Some(text) => text
            .parse()
            .map_err(|_| alphanas::Error::Invalid(format!("EVALS ({text}) must be a positive integer")))?,
        None => 12,
    };

    let space = Arc::new(Space::resolve("llama")?);
    // Short passes keep each measurement to about a second for mid-sized candidates.
    let settings = MeasureSettings { prefill_seq: 64, decode_cache: 64, ..MeasureSettings::default() };
    let device = Backend::resolve_for_measurement(BackendChoice::Auto)?;
    println!("measuring on {}", device.device_name());
    let (forward, scoring_gpu): (Box<dyn ForwardBackend>, _) = match &device {
        Backend::Gpu(ctx) => (Box::new(GpuBackend::new(ctx.clone())), Some(ctx.clone())),
        Backend::Cpu => (Box::new(CpuBackend::new()), None),
    };
    let evaluator = Arc::new(MeasureEvaluator::new(forward, settings, Quality::DecoderParams)?);

    let out_dir = std::env::temp_dir().join(format!("alphanas-default-search-{}", std::process::id()));
    let cfg = SearchConfig {
        objectives: vec![Objective::parse("min:latency_decode_ms")?, Objective::parse("max:decoder_params")?],
        evals,
        initial: evals.min(6),
        out_dir: Some(out_dir.clone()),
        scoring_gpu,
        ..SearchConfig::default()
    };
    let report = run_search(space, evaluator, &cfg, &mut NoHooks)?;

    println!("{} evaluations, outputs in {}", report.history.len(), out_dir.display());
    println!("{:>12}  {:>16}  architecture", "decode ms", "decoder params");
    let mut front = report.front.clone();
    front.sort_by(|a, b| a.objectives[0].total_cmp(&b.objectives[0]));
    for point in &front {
        let summary = match &point.candidate {
            Candidate::Arch(arch) => arch.summary(),
            Candidate::Row { source_row, .. } => format!("row {source_row}"),
        };
        println!("{:>12.3}  {:>16.0}  {summary}", point.objectives[0], point.objectives[1]);
    }
    Ok(())
}
