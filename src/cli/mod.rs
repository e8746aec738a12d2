//! The `alphanas` command line (clap). Each command has its own module with its arguments
//! and its `run` function; this module holds the global options and the dispatch.

pub mod arch;
pub mod bench;
pub mod bench_model;
pub mod devices;
pub mod export;
pub mod predict;
pub mod profile;
pub mod resume;
pub mod search;
pub mod space;
pub mod surrogate;

use crate::error::plural;
use clap::{Parser, Subcommand};

pub use crate::device::BackendChoice;

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// Compute backend.
    #[arg(long, global = true, env = "ALPHANAS_BACKEND", value_enum, default_value_t = BackendChoice::Auto)]
    pub backend: BackendChoice,

    /// Print results as JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,

    /// More log output (-v info, -vv debug, -vvv trace).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Less log output (-q errors only).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub quiet: u8,

    /// CPU threads for the CPU backend and training (default: all cores).
    #[arg(long, global = true, env = "ALPHANAS_THREADS")]
    pub threads: Option<usize>,

    /// Let the OS move CPU worker threads between cores. By default each worker is pinned to its
    /// own core (on Linux, when there are no more threads than cores), which keeps timings steady.
    #[arg(long, global = true, env = "ALPHANAS_NO_PIN", value_parser = clap::builder::BoolishValueParser::new())]
    pub no_pin: bool,

    /// The process's arguments after the program name, when known. `search` stores them so
    /// that `--resume DIR` alone continues with the same options.
    #[arg(skip)]
    pub argv: Vec<String>,
}

#[derive(Debug, Parser)]
#[command(name = "alphanas", version, about = "Hardware-aware architecture search for decoder-only transformers")]
pub struct Cli {
    #[command(flatten)]
    pub global: Global,

    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List GPU adapters and the CPU, marking the one selected.
    Devices(devices::Args),
    /// Describe a search space, or sample architectures from it.
    Space(space::Args),
    /// Architecture tools (analytic metrics).
    Arch(arch::Args),
    /// Time one kernel or a whole forward pass.
    Bench(bench::Args),
    /// Write a cost table of op latencies for this device.
    #[command(allow_negative_numbers = true)]
    Profile(profile::Args),
    /// Predict a model's latency from a cost table.
    #[command(allow_negative_numbers = true)]
    Predict(predict::Args),
    /// Measure random architectures and score a cost table's predictions.
    #[command(allow_negative_numbers = true)]
    ValidateCost(predict::ValidateArgs),
    /// Train, apply and score surrogate models.
    Surrogate(surrogate::Args),
    /// Search for Pareto-optimal architectures (the main job).
    // A negative number is then read as a value, so the message names it as invalid instead of
    // as an unknown option.
    #[command(allow_negative_numbers = true)]
    Search(search::Args),
    /// Write a Hugging Face config.json for an architecture.
    Export(export::Args),
}

/// Sets up logging from `-v`/`-q` (overridden by `RUST_LOG`) and the CPU thread pool.
pub fn init(global: &Global) {
    init_logging(global);
    init_pool(global);
}

/// Sets up logging from `-v`/`-q`, overridden by `RUST_LOG`.
fn init_logging(global: &Global) {
    let level = match (global.verbose as i32) - (global.quiet as i32) {
        i32::MIN..=-1 => log::LevelFilter::Error,
        0 => log::LevelFilter::Warn,
        1 => log::LevelFilter::Info,
        2 => log::LevelFilter::Debug,
        _ => log::LevelFilter::Trace,
    };
    let mut builder = env_logger::Builder::new();
    builder.filter_level(level);
    // wgpu and naga log a lot at info level; keep them one level quieter than ours.
    for noisy in ["wgpu_core", "wgpu_hal", "naga", "wgpu"] {
        builder.filter_module(noisy, level.min(log::LevelFilter::Warn));
    }
    builder.format_timestamp(None).format_target(false);
    builder.parse_env("RUST_LOG");
    let _ = builder.try_init();
}

/// Builds the CPU thread pool from `--threads` and `--no-pin`. It can be built once per process.
fn init_pool(global: &Global) {
    match crate::device::init_cpu_pool(global.threads, !global.no_pin) {
        Ok((pinned, skipped)) => {
            let threads = rayon::current_num_threads();
            let workers = plural(threads, "CPU worker thread", "CPU worker threads");
            match skipped {
                Some(reason) => log::debug!("{workers}, not pinned because {reason}"),
                None => log::debug!("{workers}, {pinned} of them pinned to one CPU each"),
            }
        }
        Err(e) => log::warn!("could not set up the CPU thread pool ({e}); --threads and thread pinning have no effect"),
    }
}

/// Runs the parsed command.
pub fn run(cli: Cli) -> crate::Result<()> {
    init_logging(&cli.global);
    if cli.global.threads == Some(0) {
        return Err(crate::Error::Invalid("--threads (0) must be at least 1; leave it out to use every CPU".into()));
    }
    // A resumed search takes the thread options of the stored runs, so it builds the pool
    // itself once it has read them.
    if !matches!(&cli.command, Command::Search(args) if args.resume.is_some()) {
        init_pool(&cli.global);
    }
    let global = &cli.global;
    match &cli.command {
        Command::Devices(args) => devices::run(args, global),
        Command::Space(args) => space::run(args, global),
        Command::Arch(args) => arch::run(args, global),
        Command::Bench(args) => bench::run(args, global),
        Command::Profile(args) => profile::run(args, global),
        Command::Predict(args) => predict::run(args, global),
        Command::ValidateCost(args) => predict::run_validate(args, global),
        Command::Surrogate(args) => surrogate::run(args, global),
        Command::Search(args) => search::run(args, global),
        Command::Export(args) => export::run(args, global),
    }
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> crate::Result<()> {
    let text = serde_json::to_string_pretty(value).map_err(|e| crate::Error::Other(format!("cannot format JSON output: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Error for a command whose implementation has not landed yet.
pub fn not_built(command: &str) -> crate::Error {
    crate::Error::Other(format!("`alphanas {command}` is not available in this build yet"))
}
