//! `alphanas space`: describes a search space, or samples architectures from it.

use super::Global;
use crate::space::{SearchSpace, Space, Value};
use rand::rngs::StdRng;
use rand::SeedableRng;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// A built-in space (llama, hwgpt-s, lts-gpt2) or the path of a TOML space file.
    #[arg(long, global = true, default_value = "llama", value_name = "NAME|FILE")]
    pub space: String,

    #[command(subcommand)]
    pub command: Option<SpaceCommand>,
}

#[derive(Debug, clap::Subcommand)]
pub enum SpaceCommand {
    /// Print architectures drawn uniformly from the space, one JSON object per line.
    Sample(SampleArgs),
}

#[derive(Debug, clap::Args)]
pub struct SampleArgs {
    /// Number of architectures to print.
    #[arg(long, default_value_t = 10)]
    pub n: usize,

    /// Seed of the random generator; the same seed prints the same architectures.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

pub fn run(args: &Args, global: &Global) -> crate::Result<()> {
    let space = Space::resolve(&args.space)?;
    match &args.command {
        None => describe(&space, global),
        Some(SpaceCommand::Sample(sample)) => print_samples(&space, sample),
    }
}

fn print_samples(space: &Space, args: &SampleArgs) -> crate::Result<()> {
    let mut rng = StdRng::seed_from_u64(args.seed);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    for _ in 0..args.n {
        let arch = space.architecture(&space.sample(&mut rng))?;
        writeln_or_fail(&mut out, &arch.to_json())?;
    }
    std::io::Write::flush(&mut out).map_err(|e| crate::Error::io("cannot write to stdout", e))
}

fn writeln_or_fail(out: &mut impl std::io::Write, line: &str) -> crate::Result<()> {
    writeln!(out, "{line}").map_err(|e| crate::Error::io("cannot write to stdout", e))
}

fn describe(space: &Space, global: &Global) -> crate::Result<()> {
    let size = space.count().to_string();
    let (params_min, params_max) = space.params_range();
    let (depth_min, depth_max) = space.depth_range();

    if global.json {
        let decisions: Vec<serde_json::Value> = space
            .decisions()
            .map(|d| {
                serde_json::json!({
                    "name": d.field.name(),
                    "per_layer": d.per_layer,
                    "choices": d.choices.iter().map(|v| v.to_json()).collect::<Vec<_>>(),
                })
            })
            .collect();
        let fixed: serde_json::Map<String, serde_json::Value> = space
            .spec()
            .fixed
            .iter()
            .map(|(field, value)| (field.name().to_string(), value.to_json()))
            .collect();
        let constraints: serde_json::Map<String, serde_json::Value> = space
            .constraints()
            .iter()
            .map(|c| {
                (
                    c.target.name().to_string(),
                    serde_json::json!({"min": c.min, "max": c.max, "multiple_of": c.multiple_of}),
                )
            })
            .collect();
        return super::print_json(&serde_json::json!({
            "name": space.name(),
            "source": space.source(),
            "description": space.description(),
            "size": size,
            "decisions": decisions,
            "fixed": fixed,
            "constraints": constraints,
            "n_layers_min": depth_min,
            "n_layers_max": depth_max,
            "params_min": params_min,
            "params_max": params_max,
            "features": space.feature_names(),
        }));
    }

    println!("space         {} ({})", space.name(), space.source());
    if !space.description().is_empty() {
        println!("description   {}", space.description());
    }
    println!("decisions     in the order a search takes them; per-layer ones repeat for each layer");
    for decision in space.decisions() {
        let name = if decision.per_layer {
            format!("layers[i].{}", decision.field)
        } else {
            decision.field.name().to_string()
        };
        let count = decision.choices.len();
        println!("  {name:<22} {count:>6} choice{}: {}", if count == 1 { "" } else { "s" }, list_values(&decision.choices));
    }
    if !space.spec().fixed.is_empty() {
        let fixed: Vec<String> = space.spec().fixed.iter().map(|(f, v)| format!("{f}={v}")).collect();
        println!("fixed         {}", fixed.join(", "));
    }
    for c in space.constraints() {
        let mut bounds = Vec::new();
        if let Some(min) = c.min {
            bounds.push(format!("min {min}"));
        }
        if let Some(max) = c.max {
            bounds.push(format!("max {max}"));
        }
        if let Some(m) = c.multiple_of {
            bounds.push(format!("multiple of {m}"));
        }
        println!("constraint    {}: {}", c.target.name(), bounds.join(", "));
    }
    println!("n_layers      {depth_min} to {depth_max}");
    println!("architectures {size}");
    println!(
        "params        {} to {} ({params_min} to {params_max})",
        human(params_min),
        human(params_max)
    );
    // What `alphanas search --features` selects from.
    let features = space.feature_names();
    println!("features      {} surrogate inputs, for search --features:", features.len());
    for line in wrap_names(&features, 90) {
        println!("  {line}");
    }
    Ok(())
}

/// Joins `names` with commas into lines of at most `width` characters (longer names get a
/// line of their own).
fn wrap_names(names: &[String], width: usize) -> Vec<String> {
    let mut lines = Vec::new();
    let mut line = String::new();
    for name in names {
        if !line.is_empty() && line.len() + 2 + name.len() > width {
            lines.push(format!("{line},"));
            line.clear();
        }
        if !line.is_empty() {
            line.push_str(", ");
        }
        line.push_str(name);
    }
    if !line.is_empty() {
        lines.push(line);
    }
    lines
}

/// Lists up to 12 values, eliding the middle of longer lists.
fn list_values(values: &[Value]) -> String {
    let text: Vec<String> = values.iter().map(|v| v.to_string()).collect();
    if text.len() <= 12 {
        return text.join(", ");
    }
    format!("{}, ..., {}", text[..5].join(", "), text[text.len() - 3..].join(", "))
}

/// `8.47M`, `947.3M`, `1.20B`.
fn human(n: u64) -> String {
    let x = n as f64;
    if x >= 1e9 {
        format!("{:.2}B", x / 1e9)
    } else if x >= 1e6 {
        format!("{:.1}M", x / 1e6)
    } else if x >= 1e3 {
        format!("{:.1}K", x / 1e3)
    } else {
        n.to_string()
    }
}
