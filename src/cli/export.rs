//! `alphanas export --arch FILE --format hf-llama|hf-gpt2 --out DIR`: writes a Hugging Face
//! `config.json` for one architecture.

use super::Global;
use crate::export::{write_hf_config, Format};
use std::path::PathBuf;

#[derive(Debug, clap::Args)]
pub struct Args {
    /// Architecture JSON file (`-` reads standard input).
    #[arg(long)]
    pub arch: PathBuf,

    /// Configuration format: `hf-llama` (LlamaConfig) or `hf-gpt2` (GPT2Config).
    #[arg(long, value_enum)]
    pub format: Format,

    /// Folder that receives config.json (created when missing).
    #[arg(long)]
    pub out: PathBuf,
}

pub fn run(args: &Args, global: &Global) -> crate::Result<()> {
    let arch = super::arch::read_arch(&args.arch)?;
    let path = write_hf_config(&arch, args.format, &args.out)?;
    log::info!("exported {} as {} to {}", arch.summary(), args.format.name(), path.display());
    if global.json {
        return super::print_json(&serde_json::json!({
            "path": path.display().to_string(),
            "format": args.format.name(),
            "params": arch.params(),
        }));
    }
    println!("wrote {} ({}, {} parameters)", path.display(), args.format.name(), arch.params());
    Ok(())
}
