//! Embeds AlphaNAS as an evaluation backend: fits the MLP-ensemble surrogate on a few hundred
//! architectures labelled with analytic metrics, then scores 100,000 sampled
//! architectures in a few surrogate dispatches (on the GPU when one is found, else the CPU).
//!
//! Run with `cargo run --release --example evaluation_backend`.

use alphanas::arch::Dtype;
use alphanas::space::{Candidate, SearchSpace, Space};
use alphanas::surrogate::{open_gpu, Ensemble, EnsembleConfig, Scorer};
use rand::SeedableRng;
use std::time::Instant;

/// Architectures scored in the example.
const N_SCORED: usize = 100_000;
/// Architectures the surrogate is fitted on.
const N_TRAIN: usize = 400;
/// Rows per `Scorer::score` call.
const ROWS_PER_CALL: usize = 25_000;

fn main() -> alphanas::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let space = Space::resolve("llama")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);

    // Labels: log10 of the peak decode memory at batch 8 and a 2,048-token context in f16, and
    // of the prefill FLOPs per token at 4,096 tokens. Neither is among the space's features,
    // which hold sizes and per-token figures at short contexts, so the surrogate has to learn
    // how they combine. A real backend would use measured latencies or trained quality here.
    let label = |candidate: &Candidate| -> Vec<f64> {
        let Candidate::Arch(arch) = candidate else { unreachable!("the llama space yields architectures") };
        vec![
            (arch.peak_memory(Dtype::F16, 8, 2048).decode as f64).log10(),
            (arch.flops_per_token_prefill(4096) as f64).log10(),
        ]
    };
    let mut x_train = Vec::with_capacity(N_TRAIN);
    let mut y_train = Vec::with_capacity(N_TRAIN);
    for _ in 0..N_TRAIN {
        let choices = space.sample(&mut rng);
        x_train.push(space.features(&choices).iter().map(|&v| v as f64).collect::<Vec<f64>>());
        y_train.push(label(&space.candidate(&choices)));
    }
    let targets = vec!["log_peak_memory_b8_s2048".to_string(), "log_flops_prefill_s4096".to_string()];
    let start = Instant::now();
    let ensemble = Ensemble::fit(&x_train, &y_train, space.feature_names(), targets, &EnsembleConfig::default())?;
    println!("fitted {} members on {N_TRAIN} architectures in {:.1} s", ensemble.members().len(), start.elapsed().as_secs_f64());

    let n_features = space.feature_names().len();
    let mut features = Vec::with_capacity(N_SCORED * n_features);
    let mut truth = Vec::with_capacity(N_SCORED);
    for _ in 0..N_SCORED {
        let choices = space.sample(&mut rng);
        features.extend(space.features(&choices));
        truth.push(label(&space.candidate(&choices))[0]);
    }

    // A CPU-type adapter such as lavapipe scores far slower than the CPU path, so it is used only
    // when ALPHANAS_BACKEND=gpu requests it.
    let forced = std::env::var("ALPHANAS_BACKEND").is_ok_and(|v| v == "gpu");
    let mut scorer: Box<dyn Scorer> = match open_gpu() {
        Ok(ctx) if forced || ctx.info.device_type != wgpu::DeviceType::Cpu => Box::new(ensemble.gpu_scorer(&ctx)?),
        Ok(ctx) => {
            log::warn!("the only GPU adapter is the software one {}; scoring on the CPU", ctx.info.name);
            Box::new(ensemble.cpu_scorer())
        }
        Err(e) => {
            log::warn!("no GPU for the surrogate ({e}); scoring on the CPU");
            Box::new(ensemble.cpu_scorer())
        }
    };
    let start = Instant::now();
    let mut predicted = Vec::with_capacity(N_SCORED);
    for chunk in features.chunks(ROWS_PER_CALL * n_features) {
        let rows = chunk.len() / n_features;
        let prediction = scorer.score(chunk, rows)?;
        predicted.extend((0..rows).map(|row| prediction.mean_at(row, 0) as f64));
    }
    let seconds = start.elapsed().as_secs_f64();

    // Spearman's rho, because Kendall's tau is quadratic in the number of rows.
    let rho = alphanas::stats::spearman_rho(&predicted, &truth);
    println!(
        "scored {N_SCORED} architectures in {} dispatches, {:.3} s ({:.0} architectures/s)",
        scorer.dispatches(),
        seconds,
        N_SCORED as f64 / seconds
    );
    let errors: Vec<f64> = predicted.iter().zip(&truth).map(|(p, t)| (10f64.powf(p - t) - 1.0).abs()).collect();
    let mape = 100.0 * errors.iter().sum::<f64>() / errors.len() as f64;
    println!("peak decode memory: Spearman rho {rho:.4} and MAPE {mape:.2}% of the predictions against the analytic values");
    Ok(())
}
