//! Profiles this machine on a coarse grid of the llama space through the library API,
//! calibrates on a few measured models and prints predicted against measured latencies for
//! a few others. It profiles a hardware GPU when one is found (`ALPHANAS_BACKEND=gpu` also
//! selects a CPU-type adapter such as lavapipe), else the CPU.
//!
//! ```sh
//! cargo run --release --example profile_device -- [OUT.json]
//! ```

use alphanas::cost::cpu_timer::CpuOpTimer;
use alphanas::cost::gpu_timer::GpuOpTimer;
use alphanas::cost::{plan_shapes, profile_table, CostTable, Mode, OpTimer, ProfileOptions, ProfileSettings};
use alphanas::device::{Backend, BackendChoice, DType};
use alphanas::space::{Candidate, SearchSpace, Space};
use rand::SeedableRng;

fn main() -> alphanas::Result<()> {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let out = std::env::args().nth(1).unwrap_or_else(|| "profile_device.json".into());
    let (batch, seq) = (1u64, 16u64);

    // Small models only, so the measurements at the end take seconds.
    let space = Space::resolve("llama")?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut archs = Vec::new();
    while archs.len() < 60 {
        if let Candidate::Arch(arch) = space.candidate(&space.sample(&mut rng)) {
            if arch.params() <= 60_000_000 {
                archs.push(arch);
            }
        }
    }

    let options = ProfileOptions { modes: vec![Mode::Decode], batch, seq, max_shapes_per_op: 48, warmup: 1, runs: 5, rounds: 1 };
    let settings = ProfileSettings {
        space: "llama (at most 60M parameters)".into(),
        modes: options.modes.clone(),
        batch,
        seq,
        architectures_sampled: archs.len(),
        max_shapes_per_op: options.max_shapes_per_op,
        warmup: options.warmup,
        runs: options.runs,
        quick: true,
        seed: 7,
        rounds: 1,
    };
    let choice = match std::env::var("ALPHANAS_BACKEND").as_deref() {
        Ok("gpu") => BackendChoice::Gpu,
        Ok("cpu") => BackendChoice::Cpu,
        _ => BackendChoice::Auto,
    };
    let backend = Backend::resolve_for_measurement(choice)?;
    let mut timer: Box<dyn OpTimer> = match &backend {
        Backend::Gpu(ctx) => Box::new(GpuOpTimer::new(ctx.clone(), alphanas::arch::Dtype::F32)?),
        Backend::Cpu => Box::new(CpuOpTimer::new()),
    };
    println!("profiling on {}", backend.device_name());
    let overhead = timer.time_dispatch_overhead(10, 100)?;
    let mut table = CostTable::new(timer.device_info(), timer.dtype(), settings, overhead.median_ns, timer.includes_dispatch_overhead());
    let plan = plan_shapes(&archs, &options);
    let report = profile_table(timer.as_mut(), &plan, &options, &mut table, Some(std::path::Path::new(&out)), true)?;
    println!("profiled {} shapes in {:.1} s into {out}", report.timed, report.elapsed.as_secs_f64());

    // Calibrate on five models, then compare on five others.
    let measure = |arch: &alphanas::Architecture| -> alphanas::Result<f64> {
        let mode = alphanas::model::Mode::Decode;
        let result = match &backend {
            Backend::Gpu(ctx) => alphanas::model::gpu::bench_gpu(ctx, arch, mode, batch as usize, seq as usize, DType::F32, 3, 10, 0)?,
            Backend::Cpu => alphanas::model::bench_cpu(arch, mode, batch as usize, seq as usize, 3, 10, 0)?,
        };
        Ok(result.latency_ms)
    };
    for arch in &archs[..5] {
        table.add_measurement(arch, Mode::Decode, measure(arch)?)?;
    }
    table.recalibrate()?;
    table.save(std::path::Path::new(&out))?;

    println!("{:<48} {:>10} {:>12} {:>10}", "architecture", "raw ms", "calibrated", "measured");
    for arch in &archs[5..10] {
        let prediction = table.predict_default(arch, Mode::Decode)?;
        println!("{:<48} {:>10.3} {:>12.3} {:>10.3}", arch.summary(), prediction.raw_ms, prediction.best_ms(), measure(arch)?);
    }
    Ok(())
}
