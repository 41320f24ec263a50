//! `cargo xtask package`: the two Debian packages, `backstop` (the
//! controller and CLI) and `backstop-agent`, assembled with dpkg-deb.
//!
//! Why not cargo-deb: it would be one more crate to build from source on
//! every fresh machine (minutes on two cores) for what is a directory tree,
//! a control file and one `dpkg-deb --build`. dpkg-shlibdeps (dpkg-dev,
//! which setup installs) computes the shared-library dependencies, so they
//! are not written down by hand.
//!
//! Each package holds its binary (debug info stripped), its systemd unit,
//! its commented default config as a conffile under /etc/backstop/, and the
//! README. The probe object needs no file of its own: it is embedded in
//! `backstop-agent` at build time, which is where the agent loads it from.

use std::fmt::Write as _;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{ebpf, util};

/// One package's contents.
struct Spec {
    name: &'static str,
    binary: &'static str,
    unit: &'static str,
    config: &'static str,
    /// A config that may hold a secret (a webhook token) is 0600.
    config_mode: u32,
    summary: &'static str,
    description: &'static str,
}

const SPECS: [Spec; 2] = [
    Spec {
        name: "backstop",
        binary: "backstop",
        unit: "backstop-controller.service",
        config: "controller.toml",
        config_mode: 0o600,
        summary: "safe unattended installs: the controller and its CLI",
        description: "`backstop serve` stores what agents see during installs, predicts failures,\n decides to commit or roll back, sends alerts and writes reports; the same\n binary is the CLI (deploy, deployments, report, replay).",
    },
    Spec {
        name: "backstop-agent",
        binary: "backstop-agent",
        unit: "backstop-agent.service",
        config: "agent.toml",
        config_mode: 0o644,
        summary: "safe unattended installs: the host agent (eBPF)",
        description: "Watches installs in the kernel with eBPF, runs them in a shadow container\n too, snapshots and restores the host, and talks to the backstop\n controller. `backstop-agent doctor` checks a host can run it.",
    },
];

/// Build (unless `bin_dir` has the binaries already) and assemble both
/// packages into `out`; returns the .deb paths.
pub fn package(bin_dir: Option<&Path>, out: Option<&Path>) -> Result<Vec<PathBuf>> {
    let bins = match bin_dir {
        Some(d) => d.to_path_buf(),
        None => ebpf::release(&["backstop-agent", "backstop-controller"])?,
    };
    let out = out.map_or_else(|| util::target_dir().join("debian"), Path::to_path_buf);
    std::fs::create_dir_all(&out).with_context(|| format!("creating {}", out.display()))?;
    let arch = util::output(Command::new("dpkg").arg("--print-architecture"))?
        .trim()
        .to_string();
    let mut debs = Vec::new();
    for spec in &SPECS {
        let stage = out.join("stage").join(spec.name);
        if stage.exists() {
            std::fs::remove_dir_all(&stage)
                .with_context(|| format!("removing {}", stage.display()))?;
        }
        stage_files(spec, &bins, &stage)?;
        write_control(spec, &stage, &arch)?;
        let deb = out.join(format!(
            "{}_{}_{arch}.deb",
            spec.name,
            env!("CARGO_PKG_VERSION")
        ));
        let mut cmd = Command::new("dpkg-deb");
        cmd.args(["--root-owner-group", "-Zxz", "-z3", "--build"])
            .arg(&stage)
            .arg(&deb);
        util::output(&mut cmd).with_context(|| format!("dpkg-deb --build {}", spec.name))?;
        std::fs::remove_dir_all(&stage).with_context(|| format!("removing {}", stage.display()))?;
        eprintln!("xtask: package {}", deb.display());
        debs.push(deb);
    }
    let _ = std::fs::remove_dir(out.join("stage"));
    Ok(debs)
}

fn stage_files(spec: &Spec, bins: &Path, stage: &Path) -> Result<()> {
    let root = util::root();
    let binary = bins.join(spec.binary);
    if !binary.is_file() {
        bail!(
            "{} is missing: build it first (cargo build -p {})",
            binary.display(),
            spec.name
        );
    }
    let usr_bin = mkdir(&stage.join("usr/bin"))?;
    let mut strip = Command::new("strip");
    strip
        .arg("--strip-debug")
        .arg("-o")
        .arg(usr_bin.join(spec.binary))
        .arg(&binary);
    util::output(&mut strip).with_context(|| format!("strip {}", binary.display()))?;
    chmod(&usr_bin.join(spec.binary), 0o755)?;
    let units = mkdir(&stage.join("usr/lib/systemd/system"))?;
    copy(
        &root.join("packaging/systemd").join(spec.unit),
        &units.join(spec.unit),
        0o644,
    )?;
    let etc = mkdir(&stage.join("etc/backstop"))?;
    copy(
        &root.join("packaging/etc/backstop").join(spec.config),
        &etc.join(spec.config),
        spec.config_mode,
    )?;
    let doc = mkdir(&stage.join("usr/share/doc").join(spec.name))?;
    copy(&root.join("README.md"), &doc.join("README.md"), 0o644)?;
    std::fs::write(
        doc.join("copyright"),
        "Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/\nUpstream-Name: backstop\n\nFiles: *\nLicense: Apache-2.0\n On Debian systems the full text is in /usr/share/common-licenses/Apache-2.0.\n",
    )?;
    Ok(())
}

fn write_control(spec: &Spec, stage: &Path, arch: &str) -> Result<()> {
    let debian = mkdir(&stage.join("DEBIAN"))?;
    let depends = shlibdeps(&stage.join("usr/bin").join(spec.binary))?;
    let mut control = String::new();
    writeln!(control, "Package: {}", spec.name)?;
    writeln!(control, "Version: {}", env!("CARGO_PKG_VERSION"))?;
    writeln!(control, "Architecture: {arch}")?;
    writeln!(
        control,
        "Maintainer: backstop developers <backstop@example.invalid>"
    )?;
    writeln!(control, "Installed-Size: {}", du_kib(stage)?)?;
    writeln!(control, "Depends: {depends}")?;
    writeln!(control, "Section: admin")?;
    writeln!(control, "Priority: optional")?;
    writeln!(control, "Homepage: https://example.invalid/backstop")?;
    writeln!(
        control,
        "Description: {}\n {}",
        spec.summary, spec.description
    )?;
    std::fs::write(debian.join("control"), control)?;
    std::fs::write(
        debian.join("conffiles"),
        format!("/etc/backstop/{}\n", spec.config),
    )?;
    // Reload units where systemd runs; never enable or start: the agent
    // needs its controller and bundle configured first, the controller
    // `backstop init`.
    let reload = "#!/bin/sh\nset -e\nif [ -d /run/systemd/system ]; then\n    systemctl daemon-reload >/dev/null || true\nfi\n";
    for script in ["postinst", "postrm"] {
        std::fs::write(debian.join(script), reload)?;
        chmod(&debian.join(script), 0o755)?;
    }
    Ok(())
}

/// The Depends line for a binary's shared libraries. dpkg-shlibdeps wants
/// a debian/control in its working directory; a two-stanza one will do.
fn shlibdeps(binary: &Path) -> Result<String> {
    let dir = std::env::temp_dir().join(format!("xtask-shlibdeps-{}", std::process::id()));
    mkdir(&dir.join("debian"))?;
    std::fs::write(
        dir.join("debian/control"),
        "Source: backstop\n\nPackage: backstop\nArchitecture: any\n",
    )?;
    let mut cmd = Command::new("dpkg-shlibdeps");
    cmd.args(["-O", "-e"]).arg(binary).current_dir(&dir);
    let out = util::output(&mut cmd).context("dpkg-shlibdeps (dpkg-dev)");
    let _ = std::fs::remove_dir_all(&dir);
    let out = out?;
    out.lines()
        .find_map(|l| l.strip_prefix("shlibs:Depends="))
        .map(str::to_string)
        .with_context(|| {
            format!(
                "dpkg-shlibdeps printed no shlibs:Depends for {}: {out}",
                binary.display()
            )
        })
}

fn du_kib(dir: &Path) -> Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            du_kib(&entry.path())?
        } else {
            meta.len().div_ceil(1024)
        };
    }
    Ok(total)
}

fn mkdir(dir: &Path) -> Result<PathBuf> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(dir.to_path_buf())
}

fn copy(from: &Path, to: &Path, mode: u32) -> Result<()> {
    std::fs::copy(from, to)
        .with_context(|| format!("copying {} to {}", from.display(), to.display()))?;
    chmod(to, mode)
}

fn chmod(path: &Path, mode: u32) -> Result<()> {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .with_context(|| format!("chmod {mode:o} {}", path.display()))
}
