//! `alphanas predict` and `alphanas validate-cost`.

use super::Global;

#[derive(Debug, clap::Args)]
pub struct Args {}

#[derive(Debug, clap::Args)]
pub struct ValidateArgs {}

pub fn run(_args: &Args, _global: &Global) -> crate::Result<()> {
    Err(super::not_built("predict"))
}

pub fn run_validate(_args: &ValidateArgs, _global: &Global) -> crate::Result<()> {
    Err(super::not_built("validate-cost"))
}
