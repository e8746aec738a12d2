//! `alphanas surrogate`.

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {}

pub fn run(_args: &Args, _global: &Global) -> crate::Result<()> {
    Err(super::not_built("surrogate"))
}
