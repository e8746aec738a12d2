//! `alphanas profile`: writes a cost table of op latencies for this device.

use super::Global;
use crate::arch::{Architecture, Dtype};
use crate::cost::cpu_timer::CpuOpTimer;
use crate::cost::gpu_timer::GpuOpTimer;
use crate::cost::{plan_shapes, profile_table, CostTable, Mode, Op, OpTimer, ProfileOptions, ProfileSettings};
use crate::device::{Backend, BackendChoice};
use crate::space::{Candidate, SearchSpace};
use crate::Error;
use rand::SeedableRng;
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Search space whose op shapes are profiled: a built-in name or a TOML file.
    #[arg(long, default_value = "llama")]
    pub space: String,

    /// Element type of the timed kernels (f32 or f16; the CPU backend runs f32 only).
    #[arg(long, default_value = "f32")]
    pub dtype: String,

    /// Forward-pass modes to profile, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "prefill,decode")]
    pub modes: Vec<Mode>,

    /// Sequences per forward pass.
    #[arg(long, default_value_t = 1)]
    pub batch: u64,

    /// Prompt length for prefill, and positions attended (KV cache plus the new token) for decode.
    #[arg(long, default_value_t = 32)]
    pub seq: u64,

    /// Output table. An existing table with the same settings is continued: shapes already in it
    /// are skipped.
    #[arg(long, default_value = "cost_table.json")]
    pub out: PathBuf,

    /// A coarse grid that profiles in about a minute on a 2-core CPU: fewer sampled
    /// architectures, at most 32 shapes per op kind, 1 warm-up and 5 timed runs.
    #[arg(long)]
    pub quick: bool,

    /// Architectures sampled from the space to collect op shapes [default: 2000, --quick 300].
    #[arg(long)]
    pub samples: Option<usize>,

    /// Maximum distinct shapes profiled per op kind before thinning to a grid, at least 32
    /// [default: 400, --quick 32].
    #[arg(long)]
    pub max_shapes: Option<usize>,

    /// Untimed calls before timing each shape [default: 2, --quick 1].
    #[arg(long)]
    pub warmup: Option<usize>,

    /// Timed calls per shape [default: 9, --quick 5].
    #[arg(long)]
    pub runs: Option<usize>,

    /// Seed of the architecture sample.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,

    /// Rounds over all shapes, each in a shuffled order [default: 3, --quick 1]. Every entry is
    /// the median of its rounds, which removes drift in the machine's speed during the run.
    /// Rerunning an existing table with more rounds adds the missing rounds.
    #[arg(long)]
    pub rounds: Option<usize>,
}

pub fn run(args: &Args, global: &Global) -> crate::Result<()> {
    let dtype = parse_dtype(&args.dtype)?;
    if args.batch == 0 || args.seq == 0 {
        return Err(Error::Invalid(format!("--batch ({}) and --seq ({}) must be at least 1", args.batch, args.seq)));
    }
    if args.modes.is_empty() {
        return Err(Error::Invalid("--modes is empty; give prefill, decode or prefill,decode".into()));
    }
    let min_shapes = crate::cost::profile::MIN_SHAPES_PER_OP;
    if let Some(n) = args.max_shapes.filter(|&n| n < min_shapes) {
        return Err(Error::Invalid(format!(
            "--max-shapes ({n}) must be at least {min_shapes}, a grid of two values along each of the five dimensions of attention"
        )));
    }
    let mut timer = open_timer(global.backend, dtype)?;

    let settings = ProfileSettings {
        space: args.space.clone(),
        modes: dedup_modes(&args.modes),
        batch: args.batch,
        seq: args.seq,
        architectures_sampled: args.samples.unwrap_or(if args.quick { 300 } else { 2000 }),
        max_shapes_per_op: args.max_shapes.unwrap_or(if args.quick { min_shapes } else { 400 }),
        warmup: args.warmup.unwrap_or(if args.quick { 1 } else { 2 }),
        runs: args.runs.unwrap_or(if args.quick { 5 } else { 9 }),
        quick: args.quick,
        seed: args.seed,
        rounds: args.rounds.unwrap_or(if args.quick { 1 } else { 3 }),
    };
    super::predict::check_rounds(settings.rounds)?;
    if settings.runs == 0 {
        return Err(Error::Invalid("--runs (0) must be at least 1 timed call per shape".into()));
    }
    if settings.architectures_sampled == 0 {
        return Err(Error::Invalid("--samples (0) must be at least 1, because the shapes to profile come from sampled architectures".into()));
    }
    let options = ProfileOptions {
        modes: settings.modes.clone(),
        batch: settings.batch,
        seq: settings.seq,
        max_shapes_per_op: settings.max_shapes_per_op,
        warmup: settings.warmup,
        runs: settings.runs,
        rounds: settings.rounds,
    };

    let archs = sample_architectures(&args.space, settings.architectures_sampled, args.seed)?;
    if let Some(arch) = archs.iter().find(|a| a.max_seq_len < args.seq) {
        return Err(Error::Invalid(format!(
            "--seq ({}) exceeds max_seq_len ({}) of architectures in space {}; use --seq {} or less",
            args.seq, arch.max_seq_len, args.space, arch.max_seq_len
        )));
    }
    let plan = plan_shapes(&archs, &options);
    check_plan_memory(&plan.ops, dtype)?;
    log::info!(
        "profiling {} shapes of {} sampled architectures of {} ({})",
        plan.ops.len(),
        archs.len(),
        args.space,
        plan.found_per_kind.iter().map(|(k, n)| format!("{k} {n}")).collect::<Vec<_>>().join(", ")
    );

    let mut table = open_or_create(args, &settings, timer.as_mut(), dtype)?;
    let report = profile_table(timer.as_mut(), &plan, &options, &mut table, Some(&args.out), !global.json && global.quiet == 0)?;
    let agreement = table.round_agreement(0.10);
    if let Some(share) = agreement.filter(|&share| share < UNSTEADY_BELOW) {
        log::warn!(
            "the machine's speed changed during profiling: only {:.0}% of the rounds lie within ±10% of their entry's median, so predictions from {} are unlikely to be closer than that; stop other work on the machine and profile again; more --rounds make each median steadier but cannot remove the change",
            100.0 * share,
            args.out.display()
        );
    }

    if global.json {
        super::print_json(&serde_json::json!({
            "table": args.out.display().to_string(),
            "entries": table.entries.len(),
            "timed": report.timed,
            "skipped": report.skipped,
            "elapsed_s": report.elapsed.as_secs_f64(),
            "rounds_within_10pct": agreement,
            "device": table.device,
            "dtype": table.dtype,
        }))?;
    } else {
        println!(
            "wrote {} with {} entries ({} timings taken now, {} shapes already complete from an earlier run) in {:.1} s on {} ({})",
            args.out.display(),
            table.entries.len(),
            report.timed,
            report.skipped,
            report.elapsed.as_secs_f64(),
            table.device.name,
            table.device.backend
        );
        if let Some(share) = agreement {
            println!("{:.1}% of the rounds lie within ±10% of their entry's median (the median of all rounds is kept)", 100.0 * share);
        }
    }
    Ok(())
}

/// Share of rounds within ±10% of their entry's median below which `profile` warns that the
/// machine's speed changed during the run.
const UNSTEADY_BELOW: f64 = 0.9;

/// Fails before any timing when the largest op of the plan would not fit in the memory that is
/// available. The timers keep an op's inputs and outputs plus buffers of about the same size
/// (reference copies, staging), hence twice the op's bytes.
fn check_plan_memory(ops: &[Op], dtype: Dtype) -> crate::Result<()> {
    let Some(largest) = ops.iter().max_by(|a, b| a.bytes(dtype).total_cmp(&b.bytes(dtype))) else {
        return Ok(());
    };
    // The cast saturates at u64::MAX.
    let bytes = (2.0 * largest.bytes(dtype)) as u64;
    crate::model::weights::check_memory(
        &format!("the buffers of the largest op of this profile, {largest},"),
        bytes,
        "lower --batch or --seq",
    )
}

fn parse_dtype(text: &str) -> crate::Result<Dtype> {
    match Dtype::parse(text) {
        Some(d @ (Dtype::F32 | Dtype::F16)) => Ok(d),
        _ => Err(Error::Invalid(format!("--dtype ({text}) must be f32 or f16"))),
    }
}

fn dedup_modes(modes: &[Mode]) -> Vec<Mode> {
    let mut out = modes.to_vec();
    out.sort();
    out.dedup();
    out
}

/// Opens the op timer of the requested backend.
fn open_timer(choice: BackendChoice, dtype: Dtype) -> crate::Result<Box<dyn OpTimer>> {
    // `auto` is resolved here once and the table records the device used.
    match Backend::resolve_for_measurement(choice)? {
        Backend::Cpu => {
            if dtype != Dtype::F32 {
                return Err(Error::Invalid(format!("the CPU backend profiles f32 kernels only, not {dtype}; use --dtype f32")));
            }
            Ok(Box::new(CpuOpTimer::new()))
        }
        Backend::Gpu(ctx) => Ok(Box::new(GpuOpTimer::new(ctx, dtype)?)),
    }
}

/// Continues the table at `args.out` when it exists and matches, else starts a new one after
/// timing the dispatch overhead.
fn open_or_create(args: &Args, settings: &ProfileSettings, timer: &mut dyn OpTimer, dtype: Dtype) -> crate::Result<CostTable> {
    if args.out.exists() {
        let mut table = CostTable::load(&args.out)?;
        table.require_dtype(dtype)?;
        let device = timer.device_info();
        if table.device.name != device.name || table.device.backend != device.backend {
            return Err(Error::Invalid(format!(
                "{} was profiled on {} ({}), not on this {} ({}); choose another --out",
                args.out.display(),
                table.device.name,
                table.device.backend,
                device.name,
                device.backend
            )));
        }
        if table.device.backend == "cpu" {
            super::predict::warn_if_threads_differ(&table, "the new timings may not compare with the old ones, so continue with the table's --threads and --no-pin, or choose another --out");
        }
        // The round count may change: more rounds refine the entries already there.
        let differences = settings_differences(&table.settings, settings);
        if !differences.is_empty() {
            return Err(Error::Invalid(format!(
                "{} was profiled with other settings ({}); rerun with the table's settings to continue it, or choose another --out",
                args.out.display(),
                differences.join(", ")
            )));
        }
        table.settings.rounds = table.settings.rounds.max(settings.rounds);
        return Ok(table);
    }

    let overhead = timer.time_dispatch_overhead(10, 200)?;
    log::info!("dispatch overhead: median {:.0} ns", overhead.median_ns);
    Ok(CostTable::new(timer.device_info(), dtype, settings.clone(), overhead.median_ns, timer.includes_dispatch_overhead()))
}

/// Lists the settings, other than the round count, in which `table` and `requested` differ, as
/// `name TABLE (this run: REQUESTED)` with the command-line spelling of each value.
fn settings_differences(table: &ProfileSettings, requested: &ProfileSettings) -> Vec<String> {
    let modes = |s: &ProfileSettings| s.modes.iter().map(|m| m.name()).collect::<Vec<_>>().join(",");
    let fields: [(&str, String, String); 10] = [
        ("--space", table.space.clone(), requested.space.clone()),
        ("--modes", modes(table), modes(requested)),
        ("--batch", table.batch.to_string(), requested.batch.to_string()),
        ("--seq", table.seq.to_string(), requested.seq.to_string()),
        ("--samples", table.architectures_sampled.to_string(), requested.architectures_sampled.to_string()),
        // Tables written before values below the minimum were rejected store them as given;
        // profiling always used at least the minimum.
        ("--max-shapes", effective_shapes(table).to_string(), effective_shapes(requested).to_string()),
        ("--warmup", table.warmup.to_string(), requested.warmup.to_string()),
        ("--runs", table.runs.to_string(), requested.runs.to_string()),
        ("--quick", table.quick.to_string(), requested.quick.to_string()),
        ("--seed", table.seed.to_string(), requested.seed.to_string()),
    ];
    fields
        .into_iter()
        .filter(|(_, stored, asked)| stored != asked)
        .map(|(name, stored, asked)| format!("{name} {stored} (this run: {asked})"))
        .collect()
}

/// Returns the shape cap profiling applies: the stored one, raised to the minimum.
fn effective_shapes(settings: &ProfileSettings) -> usize {
    settings.max_shapes_per_op.max(crate::cost::profile::MIN_SHAPES_PER_OP)
}

/// Draws `n` architectures from the space `name` with `seed`.
pub(crate) fn sample_architectures(name: &str, n: usize, seed: u64) -> crate::Result<Vec<Architecture>> {
    let space = crate::space::Space::resolve(name)?;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let mut archs = Vec::with_capacity(n);
    for _ in 0..n {
        let choices = space.sample(&mut rng);
        match space.candidate(&choices) {
            Candidate::Arch(arch) => archs.push(arch),
            Candidate::Row { .. } => {
                return Err(Error::Invalid(format!("space {name} is a table of rows, not architectures; profile an architecture space")))
            }
        }
    }
    Ok(archs)
}
