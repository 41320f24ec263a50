//! `cargo xtask bench shadow`: a shadow's cost against a plain chroot.

use std::process::Command;

use anyhow::{Context, Result, bail};

use super::{RemoveOnDrop, median, sync, time_cmd};
use crate::fixtures::{self};
use crate::util;

pub(super) fn shadow(reps: usize) -> Result<()> {
    if !util::is_root() {
        bail!("bench shadow: needs root (containers, mounts, cgroups)");
    }
    // `shadow bench` is a test seam: building backstop-tests beside the
    // agent turns on its `test-seams` feature (the tests crate asks for it),
    // as the overhead bench's build does.
    let bin = crate::ebpf::release(&["backstop-agent", "backstop-tests"])?;
    let agent = bin.join("backstop-agent");
    let rootfs = fixtures::rootfs()?;
    let debs = fixtures::debs()?;
    // Shadows and the chroot copy live side by side in a fresh directory
    // out of the build tree: a copy-up creates a directory for each lower
    // one the install writes into (about 100 for hello), and on this VM's
    // ext4 a mkdir deep in the crowded target/ cost 0.25 ms against 0.03 ms
    // under /var/tmp, which measured the block groups, not the shadow.
    let base = std::path::Path::new("/var/tmp")
        .join(format!("backstop-bench-shadow-{}", std::process::id()));
    std::fs::create_dir_all(&base)?;
    let _gone = RemoveOnDrop(base.clone());
    let out = util::output(
        Command::new(&agent)
            .args(["shadow", "--data"])
            .arg(base.join("data"))
            .args(["bench", "--reps", &reps.to_string(), "--root"])
            .arg(&rootfs),
    )?;
    let v: serde_json::Value = serde_json::from_str(out.trim())?;
    let ms = |k: &str| -> Vec<f64> {
        v[k].as_array()
            .map(|a| a.iter().filter_map(serde_json::Value::as_f64).collect())
            .unwrap_or_default()
    };
    let (shadow_ms, unshare_ms) = (median(ms("shadow_ms")), median(ms("unshare_ms")));
    // dpkg -i of a real package: in a shadow (CLI: probes loaded, tracked;
    // volatile overlay, the default, and --durable) against a plain chroot
    // of a copy of the root. Dirty pages are written out before each run
    // so that no run pays for the one before it.
    let hello = fixtures::deb_path(&debs, "hello").context("hello.deb missing")?;
    let name = hello.file_name().context("a .deb path has a file name")?;
    let name = name.to_string_lossy().into_owned();
    let in_shadow = |extra: &[&str]| -> Result<f64> {
        let mut c = Command::new(&agent);
        c.args(["shadow", "--json", "--data"])
            .arg(base.join("data"))
            .args(["run", "--root"])
            .arg(&rootfs)
            .arg("--copy-in")
            .arg(&hello);
        c.args(extra);
        c.args(["--", "dpkg", "-i", &format!("/.backstop-shadow/in/{name}")]);
        sync();
        let r: serde_json::Value = serde_json::from_str(util::output(&mut c)?.trim())?;
        r["cmd"]["duration_ms"].as_f64().context("no duration")
    };
    let dpkg_reps = reps.min(9);
    // Every chroot copy is made before the first timed run: copying the
    // root creates thousands of directories, which changes how fast the
    // next mkdir on this filesystem is, and a shadow's copy-ups are mkdirs.
    // Round 0 warms caches and is not counted.
    let copies: Vec<_> = (0..=dpkg_reps)
        .map(|i| -> Result<std::path::PathBuf> {
            let copy = base.join(format!("chroot-{i}"));
            util::output(
                Command::new("cp")
                    .args(["-a", "--reflink=auto"])
                    .arg(&rootfs)
                    .arg(&copy),
            )?;
            std::fs::copy(&hello, copy.join("tmp").join(&name))?;
            Ok(copy)
        })
        .collect::<Result<_>>()?;
    let (mut volatile, mut tmpfs, mut durable, mut in_chroot) = (vec![], vec![], vec![], vec![]);
    for (i, copy) in copies.iter().enumerate() {
        let v = in_shadow(&[])?;
        let t = in_shadow(&["--upper-size", "1G"])?;
        let d = in_shadow(&["--durable"])?;
        sync();
        let c = time_cmd(
            "chroot dpkg -i",
            Command::new("chroot")
                .arg(copy)
                .args(["dpkg", "-i", &format!("/tmp/{name}")]),
        )? * 1e3;
        if i > 0 {
            volatile.push(v);
            tmpfs.push(t);
            durable.push(d);
            in_chroot.push(c);
        }
    }
    let (dv, dt, dd, dc) = (
        median(volatile),
        median(tmpfs),
        median(durable),
        median(in_chroot),
    );
    println!("\nbackstop shadow: median of {reps} (dpkg: {dpkg_reps})\n");
    println!(
        "/bin/true in a shadow      {shadow_ms:>8.1} ms   vs unshare+chroot {unshare_ms:>8.1} ms   overhead {:+.1} ms   (target <= 15 ms)",
        shadow_ms - unshare_ms
    );
    println!(
        "dpkg -i hello in a shadow  {dv:>8.1} ms   vs chroot         {dc:>8.1} ms   overhead {:+.1}%   (target <= 5%)",
        (dv / dc - 1.0) * 100.0
    );
    println!(
        "  upper on a tmpfs         {dt:>8.1} ms   vs chroot         {dc:>8.1} ms   overhead {:+.1}%   (--upper-size 1G: copy-ups in memory)",
        (dt / dc - 1.0) * 100.0
    );
    println!(
        "  the same with --durable  {dd:>8.1} ms   vs chroot         {dc:>8.1} ms   overhead {:+.1}%   (fsyncs and copy-up syncs reach the disk)",
        (dd / dc - 1.0) * 100.0
    );
    Ok(())
}
