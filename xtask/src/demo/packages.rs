//! The two packages the demo deploys and their manifests.
//!
//! Healthy: GNU hello with `examples/hello.toml` as it ships (the default
//! `concurrent` mode: live and shadow install at once, the shadow over the
//! deployment's snapshot of the scope), only its `root` and `.deb` path
//! pointed at the scratch copy and the cache.
//!
//! Faulty: the same hello repacked with a postinst that writes 1 MiB every
//! half second into its own filesystem until a write fails (a log or cache
//! that grows without bound). What catches it is the controller's trend
//! rule (controller/src/decide/trend.rs): the free space of the scope's
//! filesystem falls steadily, exhaustion is projected, and the host is
//! rolled back before the disk is full and the step fails on its own. The
//! model is not what decides here (steady writes look like an ordinary
//! install to it; its P(failure) is printed beside each window, and the
//! demo checks the decision's first reason is the trend's). The
//! filesystem is a 64 MiB
//! tmpfs mounted in the scratch root, so nothing fills a real disk; the
//! shadow is off for this one, since the shadow's overlay does not see
//! that tmpfs and would fill the agent's own disk instead.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::util;

/// Where the fault writes, inside the root (a tmpfs of [`FILL_MB`]).
pub const FILL: &str = "var/lib/demo-fill";
pub const FILL_MB: u32 = 64;

/// examples/hello.toml with the scratch root and the cached .deb.
pub fn healthy(base: &Path, root: &Path, deb: &Path) -> Result<PathBuf> {
    let example = util::root().join("examples/hello.toml");
    let text = std::fs::read_to_string(&example)
        .with_context(|| format!("reading {}", example.display()))?;
    let mut out = String::new();
    let (mut saw_root, mut saw_debs) = (false, false);
    for line in text.lines() {
        if line.starts_with("root = ") {
            let _ = writeln!(out, "root = {:?}", root.display().to_string());
            saw_root = true;
        } else if line.starts_with("debs = ") {
            let _ = writeln!(out, "debs = [{:?}]", deb.display().to_string());
            saw_debs = true;
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    if !(saw_root && saw_debs) {
        bail!(
            "{}: the demo points its `root = ` and `debs = ` lines elsewhere, and one is missing",
            example.display()
        );
    }
    let path = base.join("hello.toml");
    std::fs::write(&path, out).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}

/// The postinst: 1 MiB every half second until a write fails, then exit 1
/// as a real install would. No pipe: `yes | head` killed `yes` by SIGPIPE
/// at every chunk, and since stop 18 the model's envelope counts deaths
/// by signal as a running total, so the demo rolled back on the deaths
/// two windows in, before the disk trend it is there to show.
fn postinst() -> String {
    format!(
        "#!/bin/sh\ni=0\nwhile true; do\n  if ! head -c 1048576 /dev/urandom > /{FILL}/chunk.$i; then\n    echo \"disk full after $i MiB\" >&2\n    exit 1\n  fi\n  i=$((i+1))\n  sleep 0.5\ndone\n"
    )
}

/// hello repacked with the filling postinst (dpkg-deb -R, then -b).
pub fn filling_deb(base: &Path, hello: &Path) -> Result<PathBuf> {
    let work = base.join("repack");
    util::output(Command::new("dpkg-deb").arg("-R").arg(hello).arg(&work))
        .context("unpacking hello with dpkg-deb -R")?;
    let script = work.join("DEBIAN/postinst");
    std::fs::write(&script, postinst())?;
    std::fs::set_permissions(
        &script,
        <std::fs::Permissions as std::os::unix::fs::PermissionsExt>::from_mode(0o755),
    )?;
    let deb = base.join("hello-disk-filler.deb");
    util::output(Command::new("dpkg-deb").arg("-b").arg(&work).arg(&deb))
        .context("repacking hello with dpkg-deb -b")?;
    Ok(deb)
}

/// Mounts the tmpfs the fault fills.
pub fn mount_fill(root: &Path) -> Result<PathBuf> {
    let fill = root.join(FILL);
    std::fs::create_dir_all(&fill)?;
    util::output(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o"])
            .arg(format!("size={FILL_MB}m,mode=0755"))
            .arg("tmpfs")
            .arg(&fill),
    )
    .with_context(|| format!("mounting a tmpfs on {}", fill.display()))?;
    Ok(fill)
}

/// The faulty package's manifest: hello's scope plus the fill's.
pub fn faulty(base: &Path, root: &Path, deb: &Path) -> Result<PathBuf> {
    let text = format!(
        r#"# hello with a postinst that fills its filesystem (see xtask/src/demo/packages.rs)
name = "hello-disk-filler"
package = {{ name = "hello", version = "2.10-3+fill" }}
root = {root:?}

[artifact]
debs = [{deb:?}]

[[steps]]
name = "install"
run = ["dpkg", "-i", "{{artifact}}"]
timeout = "3m"
env = {{ DEBIAN_FRONTEND = "noninteractive" }}

[scope]
paths = ["/usr/bin", "/usr/share/doc", "/usr/share/info", "/usr/share/locale", "/usr/share/man", "/var/lib/dpkg", "/var/log", "/{FILL}"]
exclude = ["/var/lib/dpkg/*-old"]

[shadow]
enabled = false

[monitor]
period = "5s"
"#,
        root = root.display().to_string(),
        deb = deb.display().to_string(),
    );
    let path = base.join("hello-disk-filler.toml");
    std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
