//! The install step of a scenario: `dpkg -i` of its .debs, in stages when
//! some pre-depend on others (`backstop_common::dpkg` says why).

use std::path::{Path, PathBuf};
use std::process::Command;

use backstop_common::dpkg::{Control, in_stages, script, stages};

/// A .deb's ordering fields, read with `dpkg-deb -f`; an unreadable one
/// orders nothing (dpkg itself then says what is wrong with it).
fn control(deb: &Path) -> Control {
    let out = Command::new("dpkg-deb")
        .arg("-f")
        .arg(deb)
        .args(["Package", "Pre-Depends", "Depends"])
        .output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
    let mut c = Control::default();
    for line in text.unwrap_or_default().lines() {
        match line.split_once(": ") {
            Some(("Package", v)) => c.package = v.trim().into(),
            Some(("Pre-Depends", v)) => c.pre_depends = v.trim().into(),
            Some(("Depends", v)) => c.depends = v.trim().into(),
            _ => {}
        }
    }
    c
}

/// The command that installs `debs`, named `names` inside the shadow:
/// one `dpkg -i` when no .deb pre-depends on another, else one per stage
/// under `sh -c`, each only after the one before succeeded.
pub(super) fn dpkg_argv(debs: &[PathBuf], names: &[String]) -> Vec<String> {
    let controls: Vec<Control> = debs.iter().map(|d| control(d)).collect();
    let groups = in_stages(names, &stages(&controls));
    if groups.len() <= 1 {
        return ["dpkg", "-i"]
            .iter()
            .map(|s| (*s).to_string())
            .chain(names.iter().cloned())
            .collect();
    }
    vec!["sh".into(), "-c".into(), script(&groups)]
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A .deb named `name` with these relation fields, built with dpkg-deb.
    fn deb(dir: &Path, name: &str, fields: &str) -> PathBuf {
        let root = dir.join(name);
        std::fs::create_dir_all(root.join("DEBIAN")).unwrap();
        let control = format!(
            "Package: {name}\nVersion: 1\nArchitecture: all\nMaintainer: t <t@example.org>\nDescription: t\n{fields}"
        );
        std::fs::write(root.join("DEBIAN/control"), control).unwrap();
        let out = dir.join(format!("{name}_1_all.deb"));
        let ok = Command::new("dpkg-deb")
            .args(["--build", "--root-owner-group"])
            .arg(&root)
            .arg(&out)
            .output()
            .unwrap();
        assert!(
            ok.status.success(),
            "{}",
            String::from_utf8_lossy(&ok.stderr)
        );
        out
    }

    #[test]
    fn a_deb_that_pre_depends_on_another_installs_a_stage_after_it() {
        let dir = std::env::temp_dir().join(format!("backstop-stages-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let base = deb(&dir, "base-a", "");
        let mid = deb(&dir, "mid-b", "Pre-Depends: base-a (>= 1)\n");
        let top = deb(&dir, "top-c", "Depends: mid-b, libc6\n");
        let names: Vec<String> = ["/in/c.deb", "/in/b.deb", "/in/a.deb"]
            .map(String::from)
            .to_vec();
        let argv = dpkg_argv(&[top.clone(), mid, base.clone()], &names);
        assert_eq!(
            argv,
            [
                "sh",
                "-c",
                "dpkg -i '/in/a.deb' && dpkg -i '/in/c.deb' '/in/b.deb'"
            ]
        );
        // Without a Pre-Depends: one dpkg -i, in the order given.
        let argv = dpkg_argv(&[top, base], &names[..2]);
        assert_eq!(argv, ["dpkg", "-i", "/in/c.deb", "/in/b.deb"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
