//! Times the CPU f32 matmul (`gemm` crate) on square sizes and prints GFLOP/s, one line
//! per size, in the same format as `scripts/numpy_sgemm.py` so the two can be compared.
//!
//! Usage: `cargo run --release --example sgemm -- [SIZE ...]` (default 512 1024 2048).
//! The thread count is the rayon pool size, which `RAYON_NUM_THREADS` sets.

use std::time::Instant;

use alphanas::kernels::matmul::cpu::matmul_into;
use alphanas::kernels::test_util::random_vec;
use alphanas::stats::TimingStats;

fn main() -> alphanas::Result<()> {
    let sizes = std::env::args()
        .skip(1)
        .map(|arg| {
            arg.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or_else(|| alphanas::Error::Invalid(format!("size `{arg}` is not a positive integer")))
        })
        .collect::<alphanas::Result<Vec<usize>>>()?;
    let sizes = if sizes.is_empty() { vec![512, 1024, 2048] } else { sizes };
    println!("# alphanas gemm crate, {} threads", rayon::current_num_threads());

    for n in sizes {
        let a = random_vec(n * n, 1.0, 1);
        let b = random_vec(n * n, 1.0, 2);
        let mut out = vec![0.0f32; n * n];
        let flops = 2.0 * (n as f64).powi(3);
        // About one second of timed work, at least 5 runs, after 2 warm-ups.
        let runs = ((2e10 / flops) as usize).clamp(5, 200);
        for _ in 0..2 {
            matmul_into(&mut out, &a, &b, None, n, n, n, false);
        }
        let mut samples = Vec::with_capacity(runs);
        for _ in 0..runs {
            let start = Instant::now();
            matmul_into(&mut out, &a, &b, None, n, n, n, false);
            samples.push(start.elapsed().as_nanos() as f64);
            std::hint::black_box(&out);
        }
        let stats = TimingStats::from_samples(&samples).expect("runs >= 5");
        println!("n={n} median_ms={:.3} gflops={:.1} runs={runs}", stats.median_ns / 1e6, flops / stats.median_ns);
    }
    Ok(())
}
