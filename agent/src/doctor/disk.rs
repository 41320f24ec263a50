//! Room for snapshots: they live under DATA/agent/snapshots, content
//! addressed, so a snapshot costs about what the manifest's scope holds
//! that no earlier snapshot had. The thresholds are floors for a small
//! scope (a package's files and /etc), not a promise for a large one.
//! And the tool a deployment's room check reads .debs with.

use std::path::Path;

use super::Check;

const NAME: &str = "disk.data";
/// Below this, a snapshot of a typical package's scope may not fit.
const WARN_BELOW: u64 = 2 << 30;
/// Below this, even the outbox and journals are at risk.
const FAIL_BELOW: u64 = 256 << 20;

pub fn room(data: &Path) -> Check {
    // The data directory may not exist yet (the agent makes it): measure
    // the filesystem it will be on.
    let Some(existing) = data.ancestors().find(|p| p.exists()) else {
        return Check::fail(
            NAME,
            format!("no part of {} exists", data.display()),
            "give --data an absolute path",
        );
    };
    let free = match crate::snapshot::fsops::free_bytes(existing) {
        Ok(f) => f,
        Err(e) => {
            return Check::fail(
                NAME,
                format!("statvfs {}: {e}", existing.display()),
                "check the data directory's path and permissions",
            );
        }
    };
    let detail = format!(
        "{} free on the filesystem of {}",
        human(free),
        data.display()
    );
    let fix = "free space on it, or point --data at a larger filesystem (needs about the size of the manifest's scope)";
    if free < FAIL_BELOW {
        Check::fail(NAME, detail, fix)
    } else if free < WARN_BELOW {
        Check::warn(NAME, detail, fix)
    } else {
        Check::ok(NAME, detail)
    }
}

/// `dpkg-deb`, which a deployment's room check (deploy/room/) reads
/// the artifact's .debs with: without it the check is skipped.
pub fn dpkg_deb() -> Check {
    const NAME: &str = "deploy.room_check";
    match std::process::Command::new("dpkg-deb")
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) if out.status.success() => {
            let text = String::from_utf8_lossy(&out.stdout);
            let version = text
                .lines()
                .next()
                .and_then(|l| l.split(" version ").nth(1))
                .and_then(|v| v.split_whitespace().next())
                .unwrap_or("of unknown version");
            Check::ok(
                NAME,
                format!(
                    "dpkg-deb {version}: a .deb artifact is checked to fit before a deployment"
                ),
            )
        }
        Ok(out) => Check::warn(
            NAME,
            format!("dpkg-deb --version failed ({})", out.status),
            "reinstall dpkg; until then a deployment's room check is skipped",
        ),
        Err(e) => Check::warn(
            NAME,
            format!("no dpkg-deb on PATH ({e}): a deployment's room check is skipped"),
            "install dpkg, or set policy.guards.exhaustion = false in manifests",
        ),
    }
}

fn human(bytes: u64) -> String {
    #[expect(
        clippy::cast_precision_loss,
        reason = "a figure for people, to one decimal"
    )]
    let gib = bytes as f64 / f64::from(1u32 << 30);
    format!("{gib:.1} GiB")
}
