//! `backstop-agent shadow-exec` (hidden): the single-threaded child the
//! agent starts to create, start and wait for one shadow's container. Not
//! for people: the agent runs it and speaks JSON lines with it on its
//! stdin and stdout. `main` runs it before building the tokio runtime, so
//! no thread exists when libcontainer clones.

use std::path::PathBuf;
use std::process::ExitCode;

#[derive(clap::Args)]
pub struct Args {
    /// DATA/agent/shadows: the bundle under <id>/bundle, the state under youki/.
    #[arg(long)]
    shadows: PathBuf,
    /// The shadow's id (its directory and container name).
    #[arg(long)]
    id: String,
}

pub fn shadow_exec(args: &Args) -> ExitCode {
    let code = backstop_agent::shadow::shadow_exec(&args.shadows, &args.id);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}
