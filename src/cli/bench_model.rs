//! `alphanas bench model`: times a whole decoder forward pass (prefill or decode) with
//! random weights.

use std::path::PathBuf;

use super::Global;
use crate::device::{Backend, DType};
use crate::model::gpu::bench_gpu;
use crate::model::{bench_cpu, ModelBenchResult, Mode};
use crate::{Error, Result};

/// Element type of weights and activations in `bench model`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ModelDtype {
    F32,
    F16,
}

/// Options of `alphanas bench model`.
#[derive(Debug, Clone, clap::Args)]
pub struct ModelArgs {
    /// Architecture JSON file (`-` reads standard input).
    #[arg(long)]
    pub arch: PathBuf,

    /// Phase to time. Prefill runs `batch` sequences of `seq` tokens. Decode runs one new token
    /// per sequence against a KV cache, attending to `seq` positions including the new one.
    #[arg(long, value_enum)]
    pub mode: Mode,

    /// Number of sequences.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,

    /// Tokens per sequence (prefill) or positions attended (decode).
    #[arg(long, default_value_t = 128)]
    pub seq: usize,

    /// Element type of weights and activations.
    #[arg(long, value_enum, default_value_t = ModelDtype::F32)]
    pub dtype: ModelDtype,

    /// Timed runs (at least 10).
    #[arg(long, default_value_t = 10)]
    pub runs: usize,

    /// Untimed warm-up runs before the timed ones (at least 3).
    #[arg(long, default_value_t = 3)]
    pub warmup: usize,

    /// Seed of the random weights, tokens and KV cache.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

/// Runs `bench model` and prints the result as a table or, with `--json`, one JSON object.
pub fn run(args: &ModelArgs, global: &Global) -> Result<()> {
    crate::device::timing::check_run_counts(args.warmup, args.runs)?;
    let arch = super::arch::read_arch(&args.arch)?;
    let result = match Backend::resolve_for_measurement(global.backend)? {
        Backend::Gpu(ctx) => {
            let dtype = match args.dtype {
                ModelDtype::F32 => DType::F32,
                ModelDtype::F16 => DType::F16,
            };
            bench_gpu(&ctx, &arch, args.mode, args.batch, args.seq, dtype, args.warmup, args.runs, args.seed)?
        }
        Backend::Cpu => {
            if args.dtype == ModelDtype::F16 {
                return Err(Error::Invalid(
                    "--dtype f16 is not supported on the CPU backend, which computes in f32; use --dtype f32".into(),
                ));
            }
            bench_cpu(&arch, args.mode, args.batch, args.seq, args.warmup, args.runs, args.seed)?
        }
    };
    if global.json {
        return super::print_json(&result);
    }
    print_table(&arch.summary(), &result);
    Ok(())
}

fn print_table(summary: &str, r: &ModelBenchResult) {
    let ms = |ns: f64| ns / 1e6;
    println!("architecture   {summary}");
    println!("mode           {} (batch {}, seq {})", r.mode.name(), r.batch, r.seq);
    println!("backend        {} ({})", r.backend, r.dtype);
    println!("median         {:.0} ns ({:.3} ms)", r.median_ns, ms(r.median_ns));
    println!("p10            {:.0} ns ({:.3} ms)", r.p10_ns, ms(r.p10_ns));
    println!("p90            {:.0} ns ({:.3} ms)", r.p90_ns, ms(r.p90_ns));
    println!("runs           {}", r.runs);
    println!("tokens/s       {:.1}", r.tokens_per_s);
    println!(
        "peak memory    {} bytes ({:.1} MiB: weights, KV cache, activations and logits)",
        super::arch::group(r.peak_memory_bytes),
        r.peak_memory_bytes as f64 / (1u64 << 20) as f64
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::BackendChoice;

    fn global(backend: BackendChoice) -> Global {
        Global { backend, json: true, verbose: 0, quiet: 0, threads: None, no_pin: false, argv: Vec::new() }
    }

    fn args(path: PathBuf, dtype: ModelDtype) -> ModelArgs {
        ModelArgs { arch: path, mode: Mode::Decode, batch: 1, seq: 8, dtype, runs: 10, warmup: 3, seed: 0 }
    }

    fn arch_file() -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        let json = r#"{"vocab_size": 128, "max_seq_len": 16, "d_model": 32, "n_layers": 2, "n_heads": 4, "d_ff": 64}"#;
        std::fs::write(file.path(), json).unwrap();
        file
    }

    #[test]
    fn cpu_backend_runs() {
        let file = arch_file();
        run(&args(file.path().into(), ModelDtype::F32), &global(BackendChoice::Cpu)).unwrap();
    }

    #[test]
    fn gpu_backend_runs_on_gpu() {
        if crate::device::gpu_for_tests("gpu_backend_runs_on_gpu").is_none() {
            return;
        }
        let file = arch_file();
        run(&args(file.path().into(), ModelDtype::F32), &global(BackendChoice::Gpu)).unwrap();
    }

    #[test]
    fn f16_on_cpu_is_rejected() {
        let file = arch_file();
        let err = run(&args(file.path().into(), ModelDtype::F16), &global(BackendChoice::Cpu)).unwrap_err().to_string();
        assert!(err.contains("use --dtype f32"), "{err}");
    }

    #[test]
    fn json_has_design_keys() {
        let file = arch_file();
        let arch = crate::cli::arch::read_arch(file.path()).unwrap();
        let result = bench_cpu(&arch, Mode::Prefill, 1, 4, 0, 0, 0).unwrap();
        let value = serde_json::to_value(&result).unwrap();
        for key in ["median_ns", "p10_ns", "p90_ns", "runs", "backend", "dtype", "latency_ms", "peak_memory_bytes"] {
            assert!(value.get(key).is_some(), "missing key {key} in {value}");
        }
        assert_eq!(value["backend"], "cpu");
        assert_eq!(value["dtype"], "f32");
    }
}
