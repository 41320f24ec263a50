use anyhow::Result;
use clap::Subcommand;

#[derive(Subcommand, Clone, Copy)]
pub enum Which {
    Overhead,
}

pub fn run(_w: Which) -> Result<()> {
    Ok(())
}
