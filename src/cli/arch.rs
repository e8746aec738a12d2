//! `alphanas arch metrics FILE`: analytic metrics of one architecture.

use super::Global;
use crate::arch::{Architecture, Dtype};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    #[command(subcommand)]
    pub command: ArchCommand,
}

#[derive(Debug, clap::Subcommand)]
pub enum ArchCommand {
    /// Parameters, FLOPs per token, weight and KV-cache bytes, and peak memory.
    Metrics(MetricsArgs),
}

#[derive(Debug, clap::Args)]
pub struct MetricsArgs {
    /// Architecture JSON file (`-` reads standard input).
    pub file: PathBuf,

    /// Sequence length for prefill FLOPs, and KV-cache context for decode (default: max_seq_len).
    #[arg(long)]
    pub seq: Option<u64>,

    /// Batch size for the peak-memory estimate.
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
}

pub fn run(args: &Args, global: &Global) -> crate::Result<()> {
    match &args.command {
        ArchCommand::Metrics(m) => metrics(m, global),
    }
}

fn metrics(args: &MetricsArgs, global: &Global) -> crate::Result<()> {
    let arch = read_arch(&args.file)?;
    if args.batch == 0 {
        return Err(crate::Error::Invalid("--batch (0) must be at least 1".into()));
    }
    let seq = args.seq.unwrap_or(arch.max_seq_len);
    if seq == 0 || seq > arch.max_seq_len {
        return Err(crate::Error::Invalid(format!("--seq ({seq}) must be between 1 and the architecture's max_seq_len ({})", arch.max_seq_len)));
    }
    let m = arch.metrics(seq, args.batch);
    if m.peak_memory_bytes.values().any(|p| p.prefill == u64::MAX || p.decode == u64::MAX) {
        return Err(crate::Error::Invalid(format!(
            "the peak memory at batch {} and sequence {seq} exceeds 2^64 bytes; reduce --batch or --seq",
            args.batch
        )));
    }
    if global.json {
        return super::print_json(&m);
    }

    let b = &m.param_breakdown;
    println!("architecture            {}", arch.summary());
    println!("params                  {}", group(m.params));
    println!("non_embedding_params    {}", group(m.non_embedding_params));
    println!("  token_embedding       {}", group(b.token_embedding));
    println!("  position_embedding    {}", group(b.position_embedding));
    println!("  attention             {}", group(b.attention));
    println!("  ffn                   {}", group(b.ffn));
    println!("  norms                 {}", group(b.norms));
    println!("  output_head           {}", group(b.output_head));
    println!("flops_per_token         prefill {} (S = {seq}), decode {} (cache {seq})",
        group(m.flops_per_token.prefill), group(m.flops_per_token.decode));
    // Widths fit any grouped u64 (26 characters) after a separating space.
    println!("{:<8}{:>23} {:>18} {:>26} {:>26}", "dtype", "weight_bytes", "kv_bytes/token", "peak prefill", "peak decode");
    for dtype in Dtype::ALL {
        let peak = m.peak_memory_bytes[&dtype];
        println!("{:<8}{:>23} {:>18} {:>26} {:>26}", dtype.name(), group(m.weight_bytes[&dtype]),
            group(m.kv_cache_bytes_per_token[&dtype]), group(peak.prefill), group(peak.decode));
    }
    println!("(peak memory is an estimate at batch {}; FLOPs count 2 per multiply-add)", args.batch);
    Ok(())
}

/// Reads an architecture from a file, or from standard input when the path is `-`.
pub fn read_arch(path: &std::path::Path) -> crate::Result<Architecture> {
    if path.as_os_str() == "-" {
        let mut text = String::new();
        std::io::Read::read_to_string(&mut std::io::stdin(), &mut text).map_err(|e| crate::Error::io("cannot read standard input", e))?;
        return Ok(Architecture::from_json(&text)?);
    }
    Ok(Architecture::from_file(path)?)
}

/// Formats an integer with thousands separators, such as `124,439,808`.
pub fn group(value: u64) -> String {
    let digits = value.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
