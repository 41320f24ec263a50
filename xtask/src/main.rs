//! `cargo xtask`: the one front door for humans and CI.
//!
//! Everything a fresh machine lacks is installed here, idempotently, so that
//! `.ci/run` on a clean clone needs nothing done by hand. Toolchain facts
//! (LLVM version, library file names) are derived from `rustc -vV` and the
//! toolchain's own `lib/`, never written down.

mod bench;
mod catalog_gen;
mod corpus;
mod demo;
mod ebpf;
mod fixtures;
mod package;
mod resolve;
mod resolve_check;
mod setup;
mod util;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "cargo xtask",
    about = "backstop's build, test, demo and benchmark tasks"
)]
struct Cli {
    #[command(subcommand)]
    task: Task,
}

#[derive(Subcommand)]
enum Task {
    /// Install what this machine lacks: Debian packages, rust-src for the
    /// nightly, bpf-linker built against the nightly's own LLVM. Idempotent.
    Setup,
    /// Build the eBPF probes (bpfel-unknown-none, with BTF). `cargo build`
    /// of the agent then embeds the object.
    BuildEbpf,
    /// setup, build-ebpf, lints, then the whole test suite (what CI runs).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Build, then run `backstop-agent` with the probes loaded.
    /// Example: `cargo xtask run -- watch --json -- dd if=/dev/zero of=/var/tmp/x bs=1M count=8 oflag=direct`
    Run {
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Debian packages `backstop` and `backstop-agent` (binaries, systemd
    /// units, default configs as conffiles) into target/debian/.
    Package {
        /// Package the binaries in this directory instead of building
        /// release ones (the tests use target/debug).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<std::path::PathBuf>,
        /// Where the .debs go.
        #[arg(long, value_name = "DIR")]
        out: Option<std::path::PathBuf>,
    },
    /// The product's story on this machine: a controller and an agent, a
    /// healthy package committed, a faulty one predicted and rolled back
    /// with its lead time and report, a summary and the dashboard's URL;
    /// then runs until Ctrl-C. Everything it starts is removed on exit.
    Demo {
        /// End after the summary instead of running until Ctrl-C.
        #[arg(long)]
        once: bool,
        /// Use the binaries in DIR (e.g. target/debug) instead of building
        /// release ones (`cargo xtask test` runs `demo --once --bin-dir
        /// target/debug`).
        #[arg(long, value_name = "DIR")]
        bin_dir: Option<std::path::PathBuf>,
    },
    /// Fuzz the readers of untrusted input with cargo-fuzz (libFuzzer),
    /// each target for a bounded time; installs cargo-fuzz if missing.
    /// Targets: frame (the wire's frame decoder), changes (the change-log
    /// reader), catalog (the catalog reader), manifest (the deployment
    /// manifest reader).
    /// Example: `cargo xtask fuzz --target changes --seconds 30`
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
        /// A target to run (repeatable); all of them when absent.
        #[arg(long = "target", value_name = "NAME", value_parser = clap::builder::PossibleValuesParser::new(FUZZ_TARGETS.map(|(t, _)| t)))]
        targets: Vec<String>,
    },
    /// Benchmarks; each prints ratios measured side by side in one run.
    Bench {
        #[command(subcommand)]
        which: bench::Which,
    },
    /// Run the shipped catalog (corpus/catalog.toml): fetch the packages'
    /// closures (corpus/fetch.sh, cached), then every scenario as a real
    /// install in a shadow, into target/xtask/corpus. Long (tens of
    /// minutes); resumable; not part of the tests.
    Corpus,
    /// Resolve the corpus's package closures from bookworm's Packages list
    /// (what minbase lacks, pinned by version and SHA-256) into
    /// corpus/closures/, with every verdict in corpus/resolve.tsv.
    /// Resumable. `--check` installs each on minbase and keeps only those
    /// that install (or fail by their own maintainer scripts).
    CorpusResolve {
        #[arg(long, default_value_t = 450)]
        max: usize,
        #[arg(long, default_value_t = 20)]
        max_debs: usize,
        #[arg(long, default_value_t = 40 << 20)]
        max_bytes: u64,
        #[arg(long)]
        check: bool,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also check these packages (comma-separated), whatever their
        /// section: daemons known to fail on a bare minbase.
        #[arg(long, value_delimiter = ',')]
        include: Vec<String>,
    },
    /// Generate the corpus catalog from corpus/resolve.tsv with a seed
    /// (one distribution of prelude work and host conditions for healthy
    /// and faulty scenarios; families with their group and source).
    CorpusCatalog {
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 1000)]
        healthy: usize,
        #[arg(long, default_value_t = 2)]
        faults_per_package: usize,
        /// Only the first N installable packages (a pilot).
        #[arg(long)]
        packages: Option<usize>,
        #[arg(long, default_value = "corpus/catalog.toml")]
        out: std::path::PathBuf,
    },
    /// Train the default model into models/default from the shipped
    /// recorded corpus (corpus/recorded/deployments.jsonl.gz), without
    /// re-running installs; refused when the corpus's digest is not the
    /// one models/default records.
    TrainDefault {
        /// Train aside and compare byte for byte with models/default.
        #[arg(long)]
        check: bool,
        /// A newly recorded corpus: do not require the old digest.
        #[arg(long)]
        new: bool,
    },
    /// Corpus, then `backstop crossval` on it: one model per fold, every
    /// deployment tested once, the figures the README reports. A few
    /// minutes per seed; not part of the tests.
    Crossval {
        /// Seeds the folds and the models (repeatable: one run each).
        #[arg(long = "seed", default_values_t = [1])]
        seeds: Vec<u64>,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    match cli.task {
        Task::Setup => setup::run(),
        Task::BuildEbpf => {
            setup::run()?;
            ebpf::build()
        }
        Task::Test { args } => test(&args),
        Task::Run { args } => run(&args),
        Task::Package { bin_dir, out } => {
            package::package(bin_dir.as_deref(), out.as_deref()).map(|_| ())
        }
        Task::Demo { once, bin_dir } => demo::demo(&demo::Args { once, bin_dir }),
        Task::Fuzz { seconds, targets } => fuzz(seconds, &targets),
        Task::Bench { which } => bench::run(which),
        Task::Corpus => corpus::corpus().map(|_| ()),
        Task::CorpusResolve {
            max,
            max_debs,
            max_bytes,
            check,
            seed,
            include,
        } => resolve::resolve(&resolve::ResolveOptions {
            max,
            max_debs,
            max_bytes,
            check,
            seed,
            include,
        }),
        Task::CorpusCatalog {
            seed,
            healthy,
            faults_per_package,
            packages,
            out,
        } => catalog_gen::generate(&catalog_gen::CatalogOptions {
            seed,
            healthy,
            faults_per_package,
            packages,
            out,
        }),
        Task::TrainDefault { check, new } => corpus::train_default(check, new),
        Task::Crossval { seeds } => corpus::crossval(&seeds),
    }
}

fn test(args: &[String]) -> Result<()> {
    setup::run()?;
    ebpf::build()?;
    fixtures::prepare()?;
    util::step(
        "cargo fmt --check",
        util::cargo(&["fmt", "--all", "--", "--check"]),
    )?;
    util::step(
        "cargo clippy",
        util::cargo(&[
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    for (what, args) in [
        (
            "cargo fmt --check (agent-ebpf)",
            &["fmt", "--", "--check"][..],
        ),
        (
            "cargo clippy (agent-ebpf)",
            &["clippy", "--release", "--", "-D", "warnings"][..],
        ),
    ] {
        let mut cmd = util::cargo(args);
        cmd.current_dir(util::root().join("agent-ebpf"));
        util::step(what, cmd)?;
    }
    // The end-to-end tests start the real binaries of other packages, which
    // `cargo test` does not build for them.
    util::step(
        "cargo build --workspace --bins",
        util::cargo(&["build", "--workspace", "--bins"]),
    )?;
    // --no-fail-fast: one red crate must not hide the others' results.
    let mut cmd = util::cargo(&["test", "--workspace", "--no-fail-fast"]);
    if !args.is_empty() {
        cmd.arg("--").args(args);
    }
    util::step("cargo test --workspace", cmd)?;
    demo_test(args)
}

/// `demo --once` on the debug binaries just built: the demo checks its own
/// story and fails otherwise. Skipped when a test filter was given (a
/// partial run), and without root, loudly (an error under CI=true).
fn demo_test(args: &[String]) -> Result<()> {
    if !args.is_empty() {
        eprintln!("xtask: demo --once skipped (a test filter was given)");
        return Ok(());
    }
    if !util::is_root() {
        if std::env::var("CI").is_ok_and(|v| v == "true") {
            anyhow::bail!("xtask: demo --once needs root, and CI=true");
        }
        eprintln!("*** SKIPPED demo --once: needs root ***");
        return Ok(());
    }
    eprintln!("xtask: demo --once --bin-dir target/debug");
    demo::demo(&demo::Args {
        once: true,
        bin_dir: Some(util::target_dir().join("debug")),
    })
}

/// fuzz/'s targets, with the feature of fuzz/Cargo.toml each needs (the
/// agent and the controller are optional there, so `frame` builds alone).
const FUZZ_TARGETS: [(&str, Option<&str>); 4] = [
    ("frame", None),
    ("manifest", None),
    ("changes", Some("agent")),
    ("catalog", Some("controller")),
];

fn fuzz(seconds: u64, targets: &[String]) -> Result<()> {
    setup::run()?;
    if std::process::Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .map_or(true, |o| !o.status.success())
    {
        util::step(
            "cargo install cargo-fuzz",
            util::cargo(&["install", "cargo-fuzz", "--locked"]),
        )?;
    }
    for (target, feature) in FUZZ_TARGETS {
        if !targets.is_empty() && !targets.iter().any(|t| t == target) {
            continue;
        }
        let mut cmd = util::cargo(&["+nightly", "fuzz", "run", target]);
        if let Some(f) = feature {
            cmd.args(["--features", f]);
        }
        cmd.arg("--")
            .arg(format!("-max_total_time={seconds}"))
            .current_dir(util::root());
        util::step(&format!("cargo fuzz run {target} ({seconds} s)"), cmd)?;
    }
    Ok(())
}

fn run(args: &[String]) -> Result<()> {
    let bin = ebpf::release(&["backstop-agent"])?;
    let mut cmd = std::process::Command::new(bin.join("backstop-agent"));
    cmd.args(args);
    util::step("backstop-agent", cmd)
}
