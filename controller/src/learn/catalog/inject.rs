//! Fault injection: a maintainer script changed by repacking the .deb
//! (dpkg-deb -R / -b), keeping the package's own compression.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::{CatalogError, Family, Result, Scenario, io};

/// The postinst fragment that injects `s`'s fault, after `s.delay` seconds
/// of ordinary work (for a healthy scenario with a delay: the work alone).
pub(super) fn fault_script(s: &Scenario) -> Option<String> {
    let m = s.magnitude.max(1);
    let work = format!(
        "i=0; end=$(( $(date +%s) + {d} )); while [ $(date +%s) -lt $end ]; do ls -R /usr/share/doc >/dev/null; i=$((i+1)); done\n",
        d = s.delay
    ) + &pause(s.pause);
    if let Some(f @ (Family::SlowService | Family::CrashLoop)) = s.twin {
        // A healthy twin of a service family: its service, fault-free.
        return Some(format!("{work}{}", service(f, m, false)));
    }
    let fault = match s.fault {
        // A healthy install with the same ordinary work as the faulty ones
        // do before their fault: the work alone must not look like one.
        Family::None if s.delay > 0 => String::new(),
        Family::None if s.pause > 0 => String::new(),
        Family::None | Family::MissingDependency | Family::DiskFull | Family::Real => {
            return None;
        }
        Family::FdLeak
        | Family::ForkStorm
        | Family::LogFlood
        | Family::UserConflict
        | Family::AlternativesConflict
        | Family::PromptHang
        | Family::DataFormat => super::inject_more::fragment(s.fault, m),
        Family::FailingScript => format!("sleep {m}\necho 'postinst: giving up' >&2\nexit 1\n"),
        Family::ConfigTypo => format!(
            "mkdir -p /etc/backstop-demo\nprintf 'if [ 1 ; then\\n  echo ok\\n' > /etc/backstop-demo/{p}.conf\nsleep {m}\nsh -n /etc/backstop-demo/{p}.conf || {{ echo 'postinst: configuration error' >&2; exit 1; }}\n",
            p = s.package
        ),
        Family::SlowService | Family::CrashLoop => service(s.fault, m, true),
        Family::MemoryBlowup => format!(
            "perl -e '$s = \"x\" x (1<<20); @a = (); while (1) {{ push @a, $s . rand(); select(undef,undef,undef,0.03/{m}) }}'\n"
        ),
        Family::LockHang => format!(
            "( exec 9>/run/lock/backstop-demo.lock; perl -e 'use Fcntl qw(:flock); open(F, \">&=9\"); flock(F, LOCK_EX); sleep 100000' ) &\nsleep {m}\nperl -e 'use Fcntl qw(:flock); open(F, \">/run/lock/backstop-demo.lock\"); flock(F, LOCK_EX)'\n"
        ),
        Family::CpuRunaway => "perl -e 'while (1) { $x++ }'\n".to_string(),
        Family::IoStall => format!(
            "dd if=/dev/zero of=/var/tmp/backstop-demo.io bs=4k count={} oflag=dsync 2>/dev/null\n",
            1_000_000 * m
        ),
        Family::UnreachableNetwork => format!(
            "for try in $(seq 1 {}); do perl -MIO::Socket::INET -e 'IO::Socket::INET->new(PeerAddr=>\"192.0.2.1:80\",Timeout=>1) or exit 1' && exit 0; sleep 1; done\necho 'postinst: cannot reach the license server' >&2\nexit 1\n",
            3 * m
        ),
    };
    Some(format!("{work}{fault}"))
}

/// The service of a service family, started here and probed by the
/// scenario's health test (runner.rs). With `fault`, it answers slower
/// with each request (`slow-service`) or dies of SIGSEGV every `m`
/// seconds and is started again (`crash-loop`); without, the same
/// process answers at once or stays up.
fn service(f: Family, m: u32, fault: bool) -> String {
    let body = if f == Family::SlowService {
        let delay = if fault {
            format!("0.05*$n*{m}")
        } else {
            "0".into()
        };
        format!(
            "perl -MIO::Socket::INET -e '$l=IO::Socket::INET->new(LocalAddr=>\"127.0.0.1:8089\",Listen=>5,ReuseAddr=>1) or die; $n=0; while($c=$l->accept){{ select(undef,undef,undef,{delay}); $n++; print $c \"ok\\n\"; close $c }}' </dev/null >/dev/null 2>&1 &\n"
        )
    } else {
        let life = if fault {
            format!("sleep {m}; kill SEGV => $$")
        } else {
            "sleep 100000".into()
        };
        format!(
            "( while :; do perl -e 'open(F, \">/run/backstop-demo.pid\"); print F $$; close F; {life}'; sleep 0.2; done ) </dev/null >/dev/null 2>&1 &\n"
        )
    };
    body + "sleep 1\n"
}

/// Idle seconds in the prelude: drawn for healthy and faulty scenarios
/// alike, so a pause before an exit is not a fault's mark.
fn pause(secs: u32) -> String {
    if secs == 0 {
        String::new()
    } else {
        format!("sleep {secs}\n")
    }
}

/// The main .deb of `package` in DEBS/<package>/.
pub(super) fn main_deb(dir: &Path, package: &str) -> Result<PathBuf> {
    let rd = std::fs::read_dir(dir).map_err(io(format!("reading {}", dir.display())))?;
    rd.flatten()
        .map(|e| e.path())
        .find(|p| {
            p.extension().is_some_and(|e| e == "deb")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")))
        })
        .ok_or_else(|| CatalogError::Scenario {
            scenario: package.into(),
            reason: format!("no {package}_*.deb in {}", dir.display()),
        })
}

fn run_ok(cmd: &mut Command, what: &str) -> Result<()> {
    let out = cmd.output().map_err(io(what.to_string()))?;
    if !out.status.success() {
        return Err(CatalogError::Io {
            context: format!("{what}: {}", String::from_utf8_lossy(&out.stderr).trim()),
            source: std::io::Error::other("failed"),
        });
    }
    Ok(())
}

/// The compression of a .deb's data member, as `dpkg-deb -Z` names it,
/// read from the ar archive's member names.
fn data_compression(deb: &Path) -> Result<&'static str> {
    use std::io::{Read, Seek, SeekFrom};
    let read_err = |e| io(format!("reading {}", deb.display()))(e);
    let mut f = std::fs::File::open(deb).map_err(io(format!("opening {}", deb.display())))?;
    let bad = |reason: &str| CatalogError::Bad {
        path: deb.display().to_string(),
        reason: reason.into(),
    };
    // Only the member headers are read; the members are skipped.
    let mut magic = [0u8; 8];
    if f.read_exact(&mut magic).is_err() || &magic != b"!<arch>\n" {
        return Err(bad("not an ar archive"));
    }
    let mut header = [0u8; 60];
    loop {
        match f.read_exact(&mut header) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => break,
            Err(e) => return Err(read_err(e)),
        }
        let name = String::from_utf8_lossy(&header[..16]);
        let name = name.trim_end().trim_end_matches('/');
        let size: i64 = String::from_utf8_lossy(&header[48..58])
            .trim()
            .parse()
            .map_err(|_| bad("bad ar member size"))?;
        if let Some(ext) = name.strip_prefix("data.tar") {
            return Ok(match ext {
                ".xz" => "xz",
                ".gz" => "gzip",
                ".zst" => "zstd",
                "" => "none",
                _ => return Err(bad(&format!("unknown data member {name}"))),
            });
        }
        f.seek(SeekFrom::Current(size + size % 2))
            .map_err(read_err)?;
    }
    Err(bad("no data.tar member"))
}

/// Repack `deb` into `dir` with `fragment` put first in its postinst
/// (created if absent; left alone if `fragment` is empty), compressed as
/// the original was. Every scenario's package goes through here, healthy
/// ones too: a detector must not tell a fault by how its .deb was built.
pub(super) fn repack(deb: &Path, fragment: &str, dir: &Path) -> Result<PathBuf> {
    let compression = data_compression(deb)?;
    let tree = dir.join("tree");
    let _ = std::fs::remove_dir_all(&tree);
    run_ok(
        Command::new("dpkg-deb").arg("-R").arg(deb).arg(&tree),
        "dpkg-deb -R",
    )?;
    let postinst = tree.join("DEBIAN/postinst");
    if !fragment.is_empty() {
        let old = std::fs::read_to_string(&postinst).unwrap_or_default();
        let body = if old.is_empty() {
            format!("#!/bin/sh\n{fragment}")
        } else {
            // Ours first: a postinst may `exit 0` before its end.
            let (shebang, rest) = old.split_once('\n').unwrap_or((&old, ""));
            format!("{shebang}\n{fragment}{rest}")
        };
        std::fs::write(&postinst, body).map_err(io(format!("writing {}", postinst.display())))?;
        std::fs::set_permissions(
            &postinst,
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .map_err(io(format!("chmod {}", postinst.display())))?;
    }
    let name = deb.file_name().unwrap_or_default();
    let out = dir.join(name);
    run_ok(
        Command::new("dpkg-deb")
            .arg("-b")
            .arg(format!("-Z{compression}"))
            // The fastest level of the same compressor: a big data package
            // (augustus-data, 200 MB unpacked) took minutes at xz's default
            // on a loaded machine, and every scenario is repacked alike.
            .arg("-z1")
            .arg(&tree)
            .arg(&out),
        "dpkg-deb -b",
    )?;
    let _ = std::fs::remove_dir_all(&tree);
    Ok(out)
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    /// The one scenario of a catalog with `text` as its fields beside a
    /// name and a package.
    pub(in crate::learn::catalog) fn scenario(text: &str) -> Scenario {
        let c = super::super::parse(
            &format!("[[scenario]]\nname = \"s\"\npackage = \"p\"\n{text}"),
            "c",
        )
        .unwrap();
        c.scenarios[0].clone()
    }

    /// The shipped corpus was recorded with these faulty services: their
    /// text must not move. Each twin starts the same process, fault-free.
    #[test]
    fn a_healthy_twin_starts_its_service_without_the_fault() {
        let slow = fault_script(&scenario("fault = \"slow-service\"\nmagnitude = 2\n")).unwrap();
        assert!(slow.ends_with("while($c=$l->accept){ select(undef,undef,undef,0.05*$n*2); $n++; print $c \"ok\\n\"; close $c }' </dev/null >/dev/null 2>&1 &\nsleep 1\n"), "{slow}");
        let crash = fault_script(&scenario("fault = \"crash-loop\"\nmagnitude = 3\n")).unwrap();
        assert!(crash.ends_with("( while :; do perl -e 'open(F, \">/run/backstop-demo.pid\"); print F $$; close F; sleep 3; kill SEGV => $$'; sleep 0.2; done ) </dev/null >/dev/null 2>&1 &\nsleep 1\n"), "{crash}");
        let twin = fault_script(&scenario("twin = \"slow-service\"\nmagnitude = 2\n")).unwrap();
        assert_eq!(twin, slow.replace("0.05*$n*2", "0"));
        let twin = fault_script(&scenario("twin = \"crash-loop\"\nmagnitude = 3\n")).unwrap();
        assert_eq!(
            twin,
            crash.replace("sleep 3; kill SEGV => $$", "sleep 100000")
        );
        // The twin of a family that sets nothing up is no twin; a twin is
        // healthy. The twin of a limit is the healthy install as it is.
        let plain = fault_script(&scenario("delay = 1\n"));
        assert_eq!(
            fault_script(&scenario("twin = \"log-flood\"\ndelay = 1\n")),
            plain
        );
        for bad in [
            "twin = \"lock-hang\"\n",
            "fault = \"crash-loop\"\ntwin = \"crash-loop\"\n",
        ] {
            let e = super::super::parse(
                &format!("[[scenario]]\nname = \"s\"\npackage = \"p\"\n{bad}"),
                "c.toml",
            )
            .unwrap_err()
            .to_string();
            assert!(
                e.contains("scenario[0].twin") && e.contains("c.toml"),
                "{e}"
            );
        }
    }

    /// An ar archive of (name, content) members, as dpkg-deb writes one.
    fn ar(members: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = b"!<arch>\n".to_vec();
        for (name, body) in members {
            out.extend(
                format!(
                    "{name:<16}{:<12}{:<6}{:<6}{:<8}{:<10}`\n",
                    0,
                    0,
                    0,
                    "100644",
                    body.len()
                )
                .bytes(),
            );
            out.extend(*body);
            if body.len() % 2 == 1 {
                out.push(b'\n');
            }
        }
        out
    }

    #[test]
    fn a_repack_keeps_the_original_compression() {
        let dir = std::env::temp_dir().join(format!("backstop-ar-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let deb = dir.join("p.deb");
        for (member, z) in [
            ("data.tar.xz", "xz"),
            ("data.tar.zst", "zstd"),
            ("data.tar", "none"),
        ] {
            std::fs::write(
                &deb,
                ar(&[
                    ("debian-binary", b"2.0\n"),
                    ("control.tar.gz", b"odd"),
                    (member, b"x"),
                ]),
            )
            .unwrap();
            assert_eq!(data_compression(&deb).unwrap(), z, "{member}");
        }
        std::fs::write(&deb, ar(&[("debian-binary", b"2.0\n")])).unwrap();
        let e = data_compression(&deb).unwrap_err().to_string();
        assert!(e.contains("p.deb") && e.contains("no data.tar"), "{e}");
        std::fs::write(&deb, b"PK\x03\x04").unwrap();
        let e = data_compression(&deb).unwrap_err().to_string();
        assert!(e.contains("not an ar archive"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
