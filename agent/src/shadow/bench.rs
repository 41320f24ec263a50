//! `cargo xtask bench shadow`'s measurement, behind the `test-seams`
//! feature: a release agent does not ship a benchmark (xtask builds the
//! agent it benches with the feature on).

use std::path::Path;

use super::{Limits, container, io_err, new_id, shadows_dir, start};
use crate::error::{AgentError, Result};

/// Side-by-side cost of a shadow, for `cargo xtask bench shadow`: `reps`
/// alternating runs of /bin/true in a shadow (overlay mount, the creator child, create,
/// loopback, start, wait, delete, teardown) and with `unshare --mount
/// --pid --fork chroot` on the same kind of overlay. Milliseconds each.
pub fn bench_true(data: &Path, root: &Path, reps: usize) -> Result<(Vec<f64>, Vec<f64>)> {
    let shadows = shadows_dir(data);
    std::fs::create_dir_all(&shadows).map_err(io_err(format!("creating {}", shadows.display())))?;
    let (mut shadow_ms, mut unshare_ms) = (Vec::new(), Vec::new());
    for _ in 0..reps {
        let t = std::time::Instant::now();
        let l = container::Layout::new(&shadows, &new_id());
        container::mount_overlay(
            &super::lower::Lower::Root(root.to_path_buf()),
            &l,
            None,
            false,
        )?;
        let spec = container::spec(&l, vec!["/bin/true".into()], &Limits::default())?;
        let ran = start(&shadows, &l, &spec, |_| Ok(())).and_then(|c| {
            c.wait()
                .map_err(io_err(format!("waiting for shadow {}", l.id)))
        });
        let problems = container::teardown(&shadows, &l);
        ran?;
        if !problems.is_empty() {
            return Err(AgentError::Io {
                context: format!("shadow {} teardown: {}", l.id, problems.join("; ")),
                source: std::io::Error::other("teardown"),
            });
        }
        shadow_ms.push(t.elapsed().as_secs_f64() * 1e3);

        let t = std::time::Instant::now();
        let l = container::Layout::new(&shadows, &new_id());
        container::mount_overlay(
            &super::lower::Lower::Root(root.to_path_buf()),
            &l,
            None,
            false,
        )?;
        let st = std::process::Command::new("unshare")
            .args(["--mount", "--pid", "--fork", "chroot"])
            .arg(&l.merged)
            .arg("/bin/true")
            .status()
            .map_err(io_err("running unshare"))?;
        for m in container::mounts_under(&l.dir) {
            container::umount(&m, 0)
                .map_err(io_err(format!("unmounting the baseline's {}", m.display())))?;
        }
        std::fs::remove_dir_all(&l.dir).map_err(io_err(format!("removing {}", l.dir.display())))?;
        if !st.success() {
            return Err(AgentError::Io {
                context: format!("unshare chroot /bin/true: {st}"),
                source: std::io::Error::other("baseline failed"),
            });
        }
        unshare_ms.push(t.elapsed().as_secs_f64() * 1e3);
    }
    Ok((shadow_ms, unshare_ms))
}
