//! Host-side cost of one GPU surrogate call: where the wall time of a scoring call goes when
//! the ensemble has the search's default shape (5 members, hidden 64,64, 24 features, 2
//! targets), for several batch sizes. Buffers and the pipeline are built once, before timing.
//!
//! `prepare` is writing the inputs, encoding and submitting; `wait` is the device's work plus
//! the driver's completion path; `read back` is copying the output out. The first and last are
//! the host's own cost per call, independent of how fast the device is.
//!
//! Run: `cargo run --release --example scorer_host_cost` (with `WGPU_BACKEND=vulkan` for
//! lavapipe). Without a GPU adapter it prints why and exits.

use alphanas::surrogate::{open_gpu, Ensemble, EnsembleConfig, Scorer};
use std::time::Duration;

const FEATURES: usize = 24;
/// Timed calls per batch size; fewer for the largest, which take seconds on a CPU emulation.
const CALLS: usize = 200;
const CALLS_LARGE: usize = 20;

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn main() {
    let ctx = match open_gpu() {
        Ok(ctx) => ctx,
        Err(e) => {
            eprintln!("no GPU scorer: {e}");
            return;
        }
    };
    let x: Vec<Vec<f64>> = (0..64).map(|i| (0..FEATURES).map(|j| ((i * 31 + j * 7) % 17) as f64).collect()).collect();
    let y: Vec<Vec<f64>> = x.iter().map(|r| vec![r.iter().sum::<f64>(), r[0] + 1.0]).collect();
    let names = |p: &str, n: usize| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let cfg = EnsembleConfig { epochs: 1, ..Default::default() };
    let ensemble = Ensemble::fit(&x, &y, names("x", FEATURES), names("y", 2), &cfg).expect("the ensemble fits");
    let mut scorer = ensemble.gpu_scorer(&ctx).expect("the GPU scorer builds");
    println!("device: {} ({:?}), medians of {CALLS} calls ({CALLS_LARGE} at batch 16384)", ctx.info.name, ctx.info.backend);
    println!("{:>7}  {:>12}  {:>12}  {:>12}  {:>12}", "batch", "prepare", "wait", "read back", "host total");
    for batch in [1usize, 64, 1024, 16_384] {
        let input: Vec<f32> = (0..batch * FEATURES).map(|i| ((i * 2_654_435_761) % 1000) as f32 / 50.0).collect();
        for _ in 0..3 {
            scorer.score(&input, batch).expect("scoring");
        }
        let calls = if batch > 1024 { CALLS_LARGE } else { CALLS };
        let mut times = Vec::with_capacity(calls);
        for _ in 0..calls {
            scorer.score(&input, batch).expect("scoring");
            times.push(scorer.last_dispatch().expect("one dispatch was made"));
        }
        let prepare = median(times.iter().map(|t| t.prepare).collect());
        let wait = median(times.iter().map(|t| t.wait).collect());
        let read_back = median(times.iter().map(|t| t.read_back).collect());
        let host = median(times.iter().map(|t| t.host()).collect());
        println!("{batch:>7}  {prepare:>12.1?}  {wait:>12.1?}  {read_back:>12.1?}  {host:>12.1?}");
    }
}
