//! `cargo xtask demo`: the product's story on this machine, end to end,
//! with the real parts: set-up (probes, binaries, the cached Debian rootfs,
//! real .debs), a controller (`backstop serve`, embedded SQLite, the
//! dashboard on loopback), an enrolled agent whose target root is a scratch
//! copy of the rootfs, a healthy package that is committed, a faulty one
//! that is predicted and rolled back with its lead time and report, a
//! summary table and the dashboard's URL. It then runs until Ctrl-C, or
//! ends with `--once`. Everything it starts is stopped and removed on
//! exit, on Ctrl-C and on error (rig.rs).
//!
//! The demo checks its own story (committed, rolled back before the step
//! failed, the root restored, `backstop replay` reproducing every stored
//! decision) and fails otherwise, so `cargo xtask test` runs `demo --once`
//! as a test (with `--bin-dir target/debug`, the binaries the suite just
//! built, instead of a 15-20 min release build on a 2-core CI machine).

mod packages;
mod rig;
mod summary;

use std::path::PathBuf;
use std::process::Command;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::{fixtures, util};
use rig::Rig;

pub struct Args {
    pub once: bool,
    pub bin_dir: Option<PathBuf>,
}

const STEPS: u32 = 8;

fn say(n: u32, what: &str) {
    eprintln!("\n== [{n}/{STEPS}] {what}\n");
}

pub fn demo(args: &Args) -> Result<()> {
    if !util::is_root() {
        bail!("demo: needs root (eBPF probes, cgroups, mounts); run it with sudo");
    }
    rig::catch_interrupts();
    say(
        1,
        "set-up: the probes, the binaries, a Debian rootfs, real .debs",
    );
    let bin = binaries(args.bin_dir.as_deref())?;
    let rootfs = fixtures::rootfs()?;
    let hello = fixtures::deb_path(&fixtures::debs()?, "hello").context("hello.deb missing")?;
    rig::check_interrupt()?;
    let mut rig = Rig::new(&bin)?;
    say(
        2,
        "a host to deploy to: a scratch copy of the Debian rootfs",
    );
    rig.copy_root(&rootfs)?;
    eprintln!("    target root: {}", rig.root.display());
    say(
        3,
        "the controller: backstop init, then backstop serve (SQLite, dashboard)",
    );
    rig.start_controller()?;
    eprintln!(
        "    agents connect to {} (QUIC, mutual TLS); store {}",
        rig.quic,
        rig.ctl.join("backstop.db").display()
    );
    say(
        4,
        "an agent, enrolled by init as `demo-host`: backstop-agent run",
    );
    rig.start_agent()?;
    util::step("backstop hosts", rig.cli(&["hosts"]))?;

    let healthy = healthy(&mut rig, &hello)?;
    let faulty = faulty(&mut rig, &hello)?;

    say(8, "summary");
    summary::print(&[&healthy, &faulty]);
    let outcomes = summary::metrics(&rig.http)?;
    eprintln!("\n    the controller's /metrics counts them too:");
    for l in &outcomes {
        eprintln!("      {l}");
    }
    eprintln!(
        "\n    dashboard: http://{}/ (loopback; served while the demo runs)",
        rig.http
    );
    if args.once {
        return Ok(());
    }
    eprintln!(
        "    try: {} --data {} report {}",
        rig.bin.join("backstop").display(),
        rig.ctl.display(),
        faulty["deployment"]["id"].as_str().unwrap_or("ID")
    );
    eprintln!(
        "\nThe controller and the agent keep running; Ctrl-C stops them and removes everything."
    );
    while !rig::interrupted() {
        rig::nap(std::time::Duration::from_secs(1));
    }
    Ok(())
}

/// Release builds (after setup and the probes), or the binaries already in
/// `dir`.
fn binaries(dir: Option<&std::path::Path>) -> Result<PathBuf> {
    let Some(dir) = dir else {
        eprintln!(
            "    release builds of backstop and backstop-agent: the first one takes 15-20 min on 2 cores"
        );
        return crate::ebpf::release(&["backstop-agent", "backstop-controller"]);
    };
    for b in ["backstop", "backstop-agent"] {
        let p = dir.join(b);
        if !p.is_file() {
            bail!(
                "demo --bin-dir: {} is missing (build it first: cargo build --workspace --bins)",
                p.display()
            );
        }
    }
    eprintln!("    using the binaries in {}", dir.display());
    Ok(dir.to_path_buf())
}

fn healthy(rig: &mut Rig, hello: &std::path::Path) -> Result<Value> {
    say(
        5,
        "a healthy package: GNU hello (examples/hello.toml), committed",
    );
    eprintln!(
        "    the live install and the shadow (a youki container over the deployment's snapshot of the\n    \
         scope) install it at once and the shadow's test runs `hello`; then 5 s of monitoring\n    \
         before commit"
    );
    let manifest = packages::healthy(&rig.base, &rig.root, hello)?;
    let (id, ok) = rig.deploy(&manifest)?;
    let shown = rig.ended(&id)?;
    let state = &shown["deployment"]["state"];
    if !ok || state != "committed" {
        bail!("demo: the healthy deployment {id} was not committed: {state}\n{shown}");
    }
    replayed(rig, &id, &shown)?;
    Ok(shown)
}

fn faulty(rig: &mut Rig, hello: &std::path::Path) -> Result<Value> {
    say(
        6,
        "a faulty package: hello whose postinst fills its disk, predicted and rolled back",
    );
    let fill = packages::mount_fill(&rig.root)?;
    let deb = packages::filling_deb(&rig.base, hello)?;
    let manifest = packages::faulty(&rig.base, &rig.root, &deb)?;
    eprintln!(
        "    the postinst writes 1 MiB every 0.5 s into a {} MiB filesystem ({}) until a write fails;\n    \
         the controller's trend rule (decide/trend.rs) projects when the free space runs out and\n    \
         rolls back before it does (the model's P(failure) is printed beside each window: `backstop model`;\n    \
         near its threshold on this fill, it now and then decides first)",
        packages::FILL_MB,
        fill.display()
    );
    let (id, committed) = rig.deploy(&manifest)?;
    let shown = rig.ended(&id)?;
    let state = &shown["deployment"]["state"];
    if committed || state != "rolled_back" {
        bail!("demo: the faulty deployment {id} was not rolled back: {state}\n{shown}");
    }
    // Ahead of the fault. The trend rule usually decides, with a
    // positive lead to the projected end. The model's P on this fill (the
    // tmpfs's pages are memory the host loses) hovers near its threshold
    // and, in stop 32's CI, crossed it for two windows first: then the
    // rollback killed the step, which has no exit code of its own, so its
    // end is neither recorded nor projected (no lead). A step that failed
    // on its own ENOSPC first has a recorded end before the decision (a
    // negative lead): neither passes.
    let d = &shown["decisions"][0];
    let kind = d["reasons"][0]["kind"].as_str().unwrap_or("");
    let lead = shown["lead"]["lead_ms"].as_i64();
    let ahead = match kind {
        "exhaustion" => lead.is_some_and(|l| l > 0),
        "live_model" => lead.is_none_or(|l| l > 0),
        _ => false,
    };
    if !ahead {
        bail!(
            "demo: {id} was rolled back, but not ahead of the fault by the trend rule or the model: {d}"
        );
    }
    if kind == "live_model" {
        eprintln!(
            "    the model decided before the trend rule this time: {}",
            d["reasons"][0]
        );
    }
    let left = std::fs::read_dir(&fill)?.count();
    if left != 0 {
        bail!(
            "demo: {left} files of the fault are left in {} after the rollback",
            fill.display()
        );
    }
    let greets = util::output(Command::new("chroot").arg(&rig.root).arg("hello"))?;
    eprintln!(
        "    restored: {} is empty again; the committed hello still runs: {}",
        fill.display(),
        greets.trim()
    );
    replayed(rig, &id, &shown)?;
    say(
        7,
        &format!("the post-rollback analysis: backstop report {id}"),
    );
    let report = util::output(&mut rig.cli(&["report", &id]))?;
    for line in report.lines() {
        eprintln!("    | {line}");
    }
    Ok(shown)
}

/// `backstop replay ID --json` gives every stored decision again, with
/// the same verdict and reasons.
fn replayed(rig: &Rig, id: &str, shown: &Value) -> Result<()> {
    let out = util::output(&mut rig.cli(&["replay", id, "--json"]))?;
    let stored = shown["decisions"].as_array().context("no decisions")?;
    let lines: Vec<Value> = out
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("replay --json printed a line that is not JSON")?;
    if lines.len() != stored.len() {
        bail!(
            "demo: replay of {id} gave {} decisions, {} stored",
            lines.len(),
            stored.len()
        );
    }
    for (r, d) in lines.iter().zip(stored) {
        if r["reproduced"] != true || r["verdict"] != d["verdict"] || r["reasons"] != d["reasons"] {
            bail!("demo: replay of {id} differs from the stored decision: {r} against {d}");
        }
    }
    eprintln!(
        "    backstop replay {id}: {} decision(s) reproduced, same verdict and reasons",
        lines.len()
    );
    Ok(())
}
