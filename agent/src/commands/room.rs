//! `backstop-agent room`: the room check a deployment runs before its
//! snapshot, on its own: will these .debs fit where they unpack? For an
//! SRE sizing a host before a rollout, and for the catalog runner, which
//! records each scenario's verdict beside its windows.
//!
//! Exit codes: 0 it fits, 3 refused, 2 the check cannot run here (no
//! dpkg-deb, ROOT is not a directory, a DEB is not there).

use std::path::PathBuf;

use backstop_agent::deploy::room::{self, Check};

#[derive(clap::Args)]
pub struct Args {
    /// The .debs, or directories holding them (as a manifest's artifact).
    #[arg(required = true, value_name = "DEB")]
    artifact: Vec<PathBuf>,
    /// The root the .debs unpack into; its symlinks are resolved as the
    /// chrooted install would, never out of it.
    #[arg(long, default_value = "/")]
    root: PathBuf,
    /// Check as a shadow would: ROOT is the overlay's lower layer and
    /// every write lands on a writable layer of this many bytes.
    #[arg(long, value_name = "BYTES")]
    upper_size: Option<u64>,
    /// One JSON object: {"verdict": "fits"|"refused"|"unchecked", ...}.
    #[arg(long)]
    json: bool,
}

/// The verdict printed; the exit code.
pub fn room(args: &Args) -> i32 {
    if !args.root.is_dir() {
        eprintln!(
            "backstop-agent: --root {}: not a directory",
            args.root.display()
        );
        return 2;
    }
    // A path that is not there is a typo, not an artifact that does not fit.
    if let Some(p) = args.artifact.iter().find(|p| !p.exists()) {
        eprintln!("backstop-agent: {}: no such file or directory", p.display());
        return 2;
    }
    let verdict = room::check(&args.root, &args.artifact, args.upper_size);
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&verdict).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        );
    }
    match verdict {
        Check::Fits {
            debs,
            files,
            bytes,
            ms,
        } => {
            if !args.json {
                println!("fits: {debs} .debs, {files} files, {bytes} bytes (read in {ms} ms)");
            }
            0
        }
        Check::Refused { reason } => {
            if !args.json {
                println!("refused: {reason}");
            }
            3
        }
        Check::Unchecked { reason } => {
            eprintln!("backstop-agent: room check cannot run: {reason}");
            2
        }
    }
}
