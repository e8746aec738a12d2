//! Surrogate scoring throughput: rows per second for batch sizes 1 to 65,536 on the CPU
//! scorer and, when an adapter is found, the GPU scorer. The ensemble has the default shape
//! (5 members, hidden 64,64, SiLU) over the 24 architecture features with 2 targets, the shape
//! `scripts/surrogate_torch_bench.py` times in PyTorch.
//!
//! Run: `cargo bench --bench surrogate` (add `WGPU_BACKEND=vulkan` to use lavapipe, or
//! `ALPHANAS_BACKEND=cpu` to time the CPU scorer only). The GPU scorer runs with f32 and with
//! f16 weights.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};

use alphanas::surrogate::{open_gpu, Ensemble, EnsembleConfig, Scorer, WeightPrecision};

const FEATURES: usize = 24;
const BATCH_SIZES: &[usize] = &[1, 16, 64, 256, 1024, 4096, 16_384, 65_536];

fn bench_ensemble() -> Ensemble {
    // Training length does not change inference cost, so one epoch is enough.
    let x: Vec<Vec<f64>> = (0..64).map(|i| (0..FEATURES).map(|j| ((i * 31 + j * 7) % 17) as f64).collect()).collect();
    let y: Vec<Vec<f64>> = x.iter().map(|r| vec![r.iter().sum::<f64>(), r[0] + 1.0]).collect();
    let names = |p: &str, n: usize| (0..n).map(|i| format!("{p}{i}")).collect::<Vec<_>>();
    let cfg = EnsembleConfig { epochs: 1, ..Default::default() };
    Ensemble::fit(&x, &y, names("x", FEATURES), names("y", 2), &cfg).expect("bench ensemble fits")
}

fn batch(n: usize) -> Vec<f32> {
    (0..n * FEATURES).map(|i| ((i * 2_654_435_761) % 1000) as f32 / 50.0).collect()
}

fn score_throughput(c: &mut Criterion) {
    let ensemble = bench_ensemble();
    let mut cpu = ensemble.cpu_scorer();
    let gpu_context = if std::env::var("ALPHANAS_BACKEND").is_ok_and(|v| v == "cpu") {
        eprintln!("GPU benchmarks skipped: ALPHANAS_BACKEND=cpu");
        None
    } else {
        open_gpu().map_err(|e| eprintln!("GPU benchmarks skipped: {e}")).ok()
    };
    let mut gpu = gpu_context.as_ref().map(|ctx| ensemble.gpu_scorer(ctx).expect("GPU scorer builds"));
    let mut gpu_f16 = gpu_context.as_ref().map(|ctx| ensemble.gpu_scorer_with(ctx, WeightPrecision::F16).expect("GPU scorer builds"));

    let mut group = c.benchmark_group("surrogate_score");
    group.sample_size(20);
    for &n in BATCH_SIZES {
        let x = batch(n);
        group.throughput(Throughput::Elements(n as u64));
        group.bench_with_input(BenchmarkId::new("cpu", n), &n, |b, &n| b.iter(|| cpu.score(&x, n).expect("CPU scoring")));
        if let Some(gpu) = gpu.as_mut() {
            group.bench_with_input(BenchmarkId::new("gpu", n), &n, |b, &n| b.iter(|| gpu.score(&x, n).expect("GPU scoring")));
        }
        if let Some(gpu) = gpu_f16.as_mut() {
            group.bench_with_input(BenchmarkId::new("gpu_f16_weights", n), &n, |b, &n| b.iter(|| gpu.score(&x, n).expect("GPU scoring")));
        }
    }
    group.finish();
}

criterion_group!(benches, score_throughput);
criterion_main!(benches);
