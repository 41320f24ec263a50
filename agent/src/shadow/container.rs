//! The youki (libcontainer) side of a shadow: the overlay root, the OCI
//! spec, create/start/delete, loopback, and the sweep of what a dead agent
//! left behind.
//!
//! Facts that shaped this (checked on these hosts, cgroups hybrid, the v1
//! manager): `build()` reads the spec from the bundle on disk; the init's
//! pid is known when `build()` returns and the init is then blocked before
//! its exec until `start()`, so it can be tracked from its first
//! instruction; a new network namespace has `lo` down and nothing in the
//! container may bring it up after the capabilities are dropped; without
//! an explicit deny-all device rule the v1 devices cgroup allows every
//! device; libcontainer makes the calling process non-dumpable.

use std::collections::HashSet;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

use libcontainer::container::Container;
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::oci_spec::OciSpecError;
use libcontainer::oci_spec::runtime::{
    Arch, Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespaceBuilder, LinuxNamespaceType, LinuxPidsBuilder,
    LinuxResourcesBuilder, LinuxSeccompAction, LinuxSeccompArgBuilder, LinuxSeccompBuilder,
    LinuxSeccompOperator, LinuxSyscallBuilder, MountBuilder, RootBuilder, Spec,
};
use libcontainer::syscall::syscall::SyscallType;

use crate::error::{AgentError, Result};

/// Parent of every shadow's cgroup, in each hierarchy.
pub const CGROUP_PARENT: &str = "backstop-shadow";

/// Inside the shadow: where the step runner and the step outputs live (a
/// bind mount of the shadow's `io` dir; not part of the diff).
pub const IO_MOUNT: &str = "/.backstop-shadow";

#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
    /// CPU quota in microseconds per 100 ms period.
    pub cpu_quota_us: Option<i64>,
}

/// A shadow's directories under DATA/agent/shadows/<id>.
#[derive(Debug, Clone)]
pub struct Layout {
    pub id: String,
    pub dir: PathBuf,
    pub upper: PathBuf,
    pub work: PathBuf,
    pub merged: PathBuf,
    pub bundle: PathBuf,
    pub io: PathBuf,
}

impl Layout {
    pub fn new(shadows: &Path, id: &str) -> Self {
        let dir = shadows.join(id);
        Layout {
            id: id.to_string(),
            upper: dir.join("rw/upper"),
            work: dir.join("rw/work"),
            merged: dir.join("merged"),
            bundle: dir.join("bundle"),
            io: dir.join("io"),
            dir,
        }
    }
}

pub fn youki_root(shadows: &Path) -> PathBuf {
    shadows.join("youki")
}

fn err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> AgentError {
    let context = context.into();
    move |source| AgentError::Io { context, source }
}

fn other(
    context: impl Into<String>,
    e: impl Into<Box<dyn std::error::Error + Send + Sync>>,
) -> AgentError {
    AgentError::Failed {
        context: context.into(),
        source: e.into(),
    }
}

/// Mount the overlay: `lower` read-only below, upper and work in the
/// shadow's directory; with `upper_size`, on a tmpfs of that size. Not
/// `durable`: mounted `volatile` (no sync reaches the upper layer; see
/// `ShadowOptions::durable`). A volatile upper cannot be mounted again
/// after a crash, which suits a shadow: the sweep deletes it.
///
/// Everything the shadow can write lands below its directory, which is
/// first bound onto itself nosuid and nodev (and made private, so the
/// mounts below do not propagate to the host's peers): a setuid file or a
/// device node the install makes in the upper layer or the io directory
/// is inert when the host reaches it by path. The upper tmpfs and the
/// overlay carry the same flags; the directory is 0700 besides.
pub fn mount_overlay(
    lower: &Path,
    l: &Layout,
    upper_size: Option<u64>,
    durable: bool,
) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(&l.dir).map_err(err(format!("creating {}", l.dir.display())))?;
    std::fs::set_permissions(&l.dir, std::fs::Permissions::from_mode(0o700))
        .map_err(err(format!("making {} 0700", l.dir.display())))?;
    let dir = l.dir.to_string_lossy();
    mount(&dir, &l.dir, "", libc::MS_BIND, "")
        .and_then(|()| mount("", &l.dir, "", libc::MS_PRIVATE, ""))
        .and_then(|()| mount("", &l.dir, "", libc::MS_REMOUNT | libc::MS_BIND | INERT, ""))
        .map_err(err(format!(
            "binding {} onto itself nosuid,nodev",
            l.dir.display()
        )))?;
    if let Some(size) = upper_size {
        let rw = l.dir.join("rw");
        std::fs::create_dir_all(&rw).map_err(err(format!("creating {}", rw.display())))?;
        mount(
            "tmpfs",
            &rw,
            "tmpfs",
            INERT,
            &format!("size={size},mode=0755"),
        )
        .map_err(err(format!(
            "mounting a {size}-byte tmpfs at {}",
            rw.display()
        )))?;
    }
    for d in [&l.upper, &l.work, &l.merged, &l.bundle, &l.io] {
        std::fs::create_dir_all(d).map_err(err(format!("creating {}", d.display())))?;
    }
    for p in [lower, &l.upper, &l.work] {
        if p.as_os_str()
            .as_encoded_bytes()
            .iter()
            .any(|&b| b == b',' || b == b':')
        {
            return Err(other(
                format!("mounting the shadow's overlay at {}", l.merged.display()),
                format!(
                    "{} contains ',' or ':', which overlayfs options cannot carry",
                    p.display()
                ),
            ));
        }
    }
    let data = format!(
        "lowerdir={},upperdir={},workdir={}{}",
        lower.display(),
        l.upper.display(),
        l.work.display(),
        if durable { "" } else { ",volatile" }
    );
    mount("overlay", &l.merged, "overlay", INERT, &data).map_err(err(format!(
        "mounting the shadow's overlay ({data}) nosuid,nodev"
    )))
}

/// Mount flags that make setuid bits and device nodes inert.
const INERT: libc::c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

fn mount(
    src: &str,
    target: &Path,
    fstype: &str,
    flags: libc::c_ulong,
    data: &str,
) -> std::io::Result<()> {
    let c = |s: &[u8]| std::ffi::CString::new(s).map_err(|_| std::io::ErrorKind::InvalidInput);
    let (src, target, fstype, data) = (
        c(src.as_bytes())?,
        c(target.as_os_str().as_encoded_bytes())?,
        c(fstype.as_bytes())?,
        c(data.as_bytes())?,
    );
    let opt = |s: &std::ffi::CString| {
        if s.as_bytes().is_empty() {
            std::ptr::null()
        } else {
            s.as_ptr()
        }
    };
    // SAFETY: valid C strings (or null) for the call's duration.
    let r = unsafe {
        libc::mount(
            opt(&src),
            target.as_ptr(),
            opt(&fstype),
            flags,
            opt(&data).cast(),
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

pub fn umount(target: &Path, flags: i32) -> std::io::Result<()> {
    let t = std::ffi::CString::new(target.as_os_str().as_encoded_bytes())
        .map_err(|_| std::io::ErrorKind::InvalidInput)?;
    // SAFETY: valid C string.
    if unsafe { libc::umount2(t.as_ptr(), flags) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Docker's default capability set less CAP_MKNOD: no device node can be
/// made in a shadow (the device cgroup and nodev mounts would also stop
/// one from being opened; this stops it existing).
fn default_caps() -> HashSet<Capability> {
    use Capability::*;
    [
        Chown,
        DacOverride,
        Fsetid,
        Fowner,
        NetRaw,
        Setgid,
        Setuid,
        Setfcap,
        Setpcap,
        NetBindService,
        SysChroot,
        Kill,
        AuditWrite,
    ]
    .into_iter()
    .collect()
}

/// Syscalls a shadow gets EPERM for: what could reach past its namespaces
/// (mounts, namespaces, modules, kexec, BPF, keyrings, clocks).
const DENIED_SYSCALLS: &[&str] = &[
    "kexec_load",
    "kexec_file_load",
    "reboot",
    "mount",
    "umount2",
    "pivot_root",
    "swapon",
    "swapoff",
    "init_module",
    "finit_module",
    "delete_module",
    "bpf",
    "perf_event_open",
    "open_by_handle_at",
    "userfaultfd",
    "acct",
    "settimeofday",
    "clock_settime",
    "add_key",
    "request_key",
    "keyctl",
    "fsopen",
    "fsmount",
    "fsconfig",
    "move_mount",
    "open_tree",
    "unshare",
    "setns",
    "iopl",
    "ioperm",
    "quotactl",
    "syslog",
];

/// The pids limit of a shadow that names none: a fork bomb in a
/// maintainer script stops here, not at the host's pid_max (podman's
/// default).
pub const DEFAULT_PIDS: i64 = 2048;

/// Namespace flags that `clone` must not carry: a new namespace is a way
/// past the shadow's own (CLONE_NEWUSER gives back every capability
/// inside it). CLONE_NEWTIME is not here: for clone(2) its bit (0x80) is
/// part of the exit-signal byte (CSIGNAL), and only clone3 and unshare
/// can ask for a time namespace, both refused below.
const CLONE_NS_FLAGS: &[i32] = &[
    libc::CLONE_NEWNS,
    libc::CLONE_NEWUSER,
    libc::CLONE_NEWNET,
    libc::CLONE_NEWPID,
    libc::CLONE_NEWIPC,
    libc::CLONE_NEWUTS,
    libc::CLONE_NEWCGROUP,
];

/// The seccomp rules on top of the allow-by-default action.
fn seccomp_rules()
-> std::result::Result<Vec<libcontainer::oci_spec::runtime::LinuxSyscall>, OciSpecError> {
    let names = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let mut rules = vec![
        LinuxSyscallBuilder::default()
            .names(names(DENIED_SYSCALLS))
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::EPERM as u32)
            .build()?,
        // clone3 passes its flags in a struct, which seccomp cannot read,
        // so it cannot be filtered by flag: it fails ENOSYS, as on a kernel
        // without it, and glibc (fork, posix_spawn, pthread_create) then
        // falls back to clone, whose flags are filtered below.
        LinuxSyscallBuilder::default()
            .names(names(&["clone3"]))
            .action(LinuxSeccompAction::ScmpActErrno)
            .errno_ret(libc::ENOSYS as u32)
            .build()?,
    ];
    // One rule per flag: rules on the same argument are ORed this way,
    // and (flags & F) == F reads the same whichever of value and
    // valueTwo a runtime takes as the mask.
    for &flag in CLONE_NS_FLAGS {
        let f = flag as u64;
        rules.push(
            LinuxSyscallBuilder::default()
                .names(names(&["clone"]))
                .action(LinuxSeccompAction::ScmpActErrno)
                .errno_ret(libc::EPERM as u32)
                .args(vec![
                    LinuxSeccompArgBuilder::default()
                        .index(0usize)
                        .value(f)
                        .value_two(f)
                        .op(LinuxSeccompOperator::ScmpCmpMaskedEq)
                        .build()?,
                ])
                .build()?,
        );
    }
    Ok(rules)
}

/// The OCI spec of a shadow running `args`.
pub fn spec(l: &Layout, args: Vec<String>, limits: &Limits) -> Result<Spec> {
    let bad = |e: OciSpecError| other("building the shadow's OCI spec", e);
    let mut spec = Spec::default();
    spec.set_hostname(Some("shadow".into()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(&l.merged)
            .readonly(false)
            .build()
            .map_err(bad)?,
    ));
    let mut mounts: Vec<_> = libcontainer::oci_spec::runtime::get_default_mounts()
        .into_iter()
        .filter(|m| m.destination() != Path::new("/sys/fs/cgroup"))
        .collect();
    mounts.push(
        MountBuilder::default()
            .destination(IO_MOUNT)
            .typ("bind")
            .source(&l.io)
            .options(vec!["rbind".into(), "nosuid".into(), "nodev".into()])
            .build()
            .map_err(bad)?,
    );
    spec.set_mounts(Some(mounts));
    let caps = default_caps();
    let process = spec
        .process_mut()
        .as_mut()
        .ok_or_else(|| other("building the shadow's OCI spec", "no process section"))?;
    process.set_args(Some(args));
    process.set_env(Some(vec![
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin".into(),
        "DEBIAN_FRONTEND=noninteractive".into(),
        "HOME=/root".into(),
        "LANG=C.UTF-8".into(),
    ]));
    process.set_terminal(Some(false));
    process.set_no_new_privileges(Some(true));
    process.set_capabilities(Some(
        LinuxCapabilitiesBuilder::default()
            .bounding(caps.clone())
            .effective(caps.clone())
            .permitted(caps)
            .inheritable(HashSet::new())
            .ambient(HashSet::new())
            .build()
            .map_err(bad)?,
    ));
    let namespaces = [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<std::result::Result<Vec<_>, _>>()
    .map_err(bad)?;
    // Deny every device first; libcgroups then allows its default list
    // (null, zero, full, tty, random, urandom, ptmx, pts).
    let mut res = LinuxResourcesBuilder::default().devices(vec![
        LinuxDeviceCgroupBuilder::default()
            .allow(false)
            .access("rwm")
            .build()
            .map_err(bad)?,
    ]);
    if let Some(m) = limits.memory_bytes {
        // Swap equal to the limit: no swapping past it.
        res = res.memory(
            LinuxMemoryBuilder::default()
                .limit(m)
                .swap(m)
                .build()
                .map_err(bad)?,
        );
    }
    let pids = limits.pids.unwrap_or(DEFAULT_PIDS);
    res = res.pids(
        LinuxPidsBuilder::default()
            .limit(pids)
            .build()
            .map_err(bad)?,
    );
    if let Some(q) = limits.cpu_quota_us {
        res = res.cpu(
            LinuxCpuBuilder::default()
                .quota(q)
                .period(100_000u64)
                .build()
                .map_err(bad)?,
        );
    }
    let seccomp = LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(seccomp_rules().map_err(bad)?)
        .build()
        .map_err(bad)?;
    let linux = spec
        .linux_mut()
        .as_mut()
        .ok_or_else(|| other("building the shadow's OCI spec", "no linux section"))?;
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(res.build().map_err(bad)?));
    linux.set_cgroups_path(Some(PathBuf::from(format!("/{CGROUP_PARENT}/{}", l.id))));
    linux.set_seccomp(Some(seccomp));
    Ok(spec)
}

/// Create the container (its init blocked before exec) with stdio to the
/// shadow's init log.
pub fn create(shadows: &Path, l: &Layout, spec: &Spec) -> Result<Container> {
    let config = l.bundle.join("config.json");
    spec.save(&config)
        .map_err(|e| other(format!("writing {}", config.display()), e))?;
    let log = l.io.join("init.log");
    let out = std::fs::File::create(&log).map_err(err(format!("creating {}", log.display())))?;
    let out2 = out.try_clone().map_err(err("duplicating the init log"))?;
    let null = std::fs::File::open("/dev/null").map_err(err("opening /dev/null"))?;
    let youki = youki_root(shadows);
    std::fs::create_dir_all(&youki).map_err(err(format!("creating {}", youki.display())))?;
    let built = ContainerBuilder::new(l.id.clone(), SyscallType::default())
        .with_root_path(&youki)
        .map_err(|e| other("setting up libcontainer", e))?
        .with_stdin(null)
        .with_stdout(out)
        .with_stderr(out2)
        .as_init(&l.bundle)
        .with_systemd(false)
        .with_detach(true)
        .build();
    // libcontainer marks the calling process non-dumpable; a long-lived
    // agent must stay inspectable (/proc/PID of its own threads).
    // SAFETY: plain prctl on ourselves.
    unsafe { libc::prctl(libc::PR_SET_DUMPABLE, 1, 0, 0, 0) };
    built.map_err(|e| other(format!("creating shadow container {}", l.id), e))
}

/// Bring `lo` up in the network namespace of `pid`, from a short-lived
/// thread (setns is per thread).
pub fn loopback_up(pid: i32) -> Result<()> {
    let ns = std::fs::File::open(format!("/proc/{pid}/ns/net"))
        .map_err(err(format!("opening /proc/{pid}/ns/net")))?;
    std::thread::spawn(move || -> std::io::Result<()> {
        // SAFETY: setns on this thread only; the fd is valid.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: plain socket/ioctl calls with a zeroed ifreq naming "lo".
        unsafe {
            let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
            if s < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let mut ifr: libc::ifreq = std::mem::zeroed();
            for (i, b) in b"lo\0".iter().enumerate() {
                ifr.ifr_name[i] = *b as libc::c_char;
            }
            let mut r = libc::ioctl(s, libc::SIOCGIFFLAGS, &mut ifr);
            if r == 0 {
                ifr.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
                r = libc::ioctl(s, libc::SIOCSIFFLAGS, &ifr);
            }
            let e = std::io::Error::last_os_error();
            libc::close(s);
            if r != 0 {
                return Err(e);
            }
        }
        Ok(())
    })
    .join()
    .map_err(|_| other("bringing up the shadow's loopback", "thread panicked"))?
    .map_err(err("bringing up the shadow's loopback"))
}

/// Whether the memory cgroup of shadow `id` saw an OOM kill (v1
/// `memory.oom_control`, or v2 `memory.events`). Read before delete.
pub fn oom_kills(id: &str) -> u64 {
    let v1 = Path::new("/sys/fs/cgroup/memory")
        .join(CGROUP_PARENT)
        .join(id)
        .join("memory.oom_control");
    let v2 = Path::new("/sys/fs/cgroup")
        .join(CGROUP_PARENT)
        .join(id)
        .join("memory.events");
    [v1, v2]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|s| {
            s.lines()
                .filter_map(|l| l.strip_prefix("oom_kill "))
                .filter_map(|n| n.trim().parse::<u64>().ok())
                .collect::<Vec<_>>()
        })
        .max()
        .unwrap_or(0)
}

/// The cgroup directories of shadow `id` in every hierarchy.
fn cgroup_dirs(id: &str) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let base = Path::new("/sys/fs/cgroup");
    let direct = base.join(CGROUP_PARENT).join(id);
    if direct.is_dir() {
        out.push(direct);
    }
    if let Ok(rd) = std::fs::read_dir(base) {
        for h in rd.flatten() {
            let d = h.path().join(CGROUP_PARENT).join(id);
            if d.is_dir() {
                out.push(d);
            }
        }
    }
    out
}

/// Kill whatever is left in shadow `id`'s cgroups and remove them.
pub fn remove_cgroups(id: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for d in cgroup_dirs(id) {
        // Up to 5 s: killed tasks leave the cgroup only once reaped.
        for _ in 0..500 {
            if let Ok(procs) = std::fs::read_to_string(d.join("cgroup.procs")) {
                for pid in procs.lines().filter_map(|s| s.trim().parse::<i32>().ok()) {
                    // SAFETY: plain kill(2).
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                }
            }
            if std::fs::remove_dir(&d).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        if d.exists() {
            problems.push(format!("cgroup {} could not be removed", d.display()));
        }
    }
    problems
}

/// Mount points at or under `dir`, deepest first.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let dir = &std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let mut v: Vec<PathBuf> = info
        .lines()
        .filter_map(|l| l.split_whitespace().nth(4))
        .map(unescape_mount_path)
        .filter(|p| p.starts_with(dir))
        .collect();
    v.sort_by_key(|p| std::cmp::Reverse(p.as_os_str().len()));
    v.dedup();
    v
}

/// mountinfo escapes space, tab, newline and backslash as \ooo.
fn unescape_mount_path(s: &str) -> PathBuf {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && let Ok(v) = u8::from_str_radix(&s[i + 1..i + 4], 8)
        {
            out.push(v);
            i += 4;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from(
        String::from_utf8_lossy(&out).into_owned(),
    ))
}

/// Delete the container (killing what runs in it), unmount, remove the
/// cgroups and the shadow's directory. Best effort, every step tried;
/// what could not be done is returned.
pub fn teardown(shadows: &Path, l: &Layout, container: Option<Container>) -> Vec<String> {
    let mut problems = Vec::new();
    let youki = youki_root(shadows).join(&l.id);
    let container = container.or_else(|| Container::load(youki.clone()).ok());
    // A delete that fails on the cgroups (killed tasks not yet reaped by
    // whoever inherited them) is finished below; only what stays counts.
    if let Some(mut c) = container
        && let Err(e) = c.delete(true)
    {
        tracing::debug!(id = %l.id, "libcontainer delete: {e}; finishing by hand");
    }
    if youki.exists()
        && let Err(e) = std::fs::remove_dir_all(&youki)
    {
        problems.push(format!("removing {}: {e}", youki.display()));
    }
    problems.extend(remove_cgroups(&l.id));
    for m in mounts_under(&l.dir) {
        if let Err(e) = umount(&m, libc::MNT_DETACH) {
            problems.push(format!("unmounting {}: {e}", m.display()));
        }
    }
    if l.dir.exists()
        && let Err(e) = std::fs::remove_dir_all(&l.dir)
    {
        problems.push(format!("removing {}: {e}", l.dir.display()));
    }
    // The parents, when no other shadow uses them (rmdir refuses then).
    let _ = std::fs::remove_dir(youki_root(shadows));
    for parent in cgroup_dirs("") {
        let _ = std::fs::remove_dir(parent);
    }
    problems
}

/// Shadows this process is running; a sweep in this process leaves them.
static LIVE: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());

/// A process's start time (clock ticks since boot, /proc/PID/stat field
/// 22): with the pid, it names one process for good.
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 1..];
    after.split_whitespace().nth(19)?.parse().ok()
}

/// Ownership of a shadow by the agent process running it: an `owner` file
/// (pid and start time) in the shadow's directory, written before the
/// directory gets its name, and an entry in this process's registry.
/// Not a file lock: a container's init is forked from the agent and would
/// inherit (and keep) a lock the agent took.
pub struct Owner {
    id: String,
}

impl Owner {
    /// Create the shadow's directory, owned by this process.
    pub fn create(l: &Layout) -> Result<Owner> {
        let me = std::process::id();
        let tmp = l.dir.with_file_name(format!(".new-{}", l.id));
        std::fs::create_dir_all(&tmp).map_err(err(format!("creating {}", tmp.display())))?;
        let record = format!("{me} {}\n", start_time(me).unwrap_or(0));
        std::fs::write(tmp.join("owner"), record)
            .map_err(err(format!("writing {}", tmp.join("owner").display())))?;
        std::fs::rename(&tmp, &l.dir).map_err(err(format!("creating {}", l.dir.display())))?;
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(l.id.clone());
        Ok(Owner { id: l.id.clone() })
    }

    /// Whether the agent that owns shadow directory `dir` still runs it.
    fn alive(dir: &Path, id: &str) -> bool {
        if LIVE
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|l| l == id)
        {
            return true;
        }
        let Ok(record) = std::fs::read_to_string(dir.join("owner")) else {
            return false;
        };
        let mut it = record.split_whitespace().map(|x| x.parse::<u64>().ok());
        match (it.next().flatten(), it.next().flatten()) {
            (Some(pid), Some(t)) if pid != u64::from(std::process::id()) => {
                start_time(pid as u32) == Some(t)
            }
            _ => false,
        }
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        LIVE.lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|l| l != &self.id);
    }
}

/// Remove every shadow under `shadows` that no running agent holds: what
/// an agent killed mid-run left (containers and their processes, mounts,
/// cgroups, directories). Returns the ids swept and any problems.
pub fn sweep(shadows: &Path) -> (Vec<String>, Vec<String>) {
    let mut swept = Vec::new();
    let mut problems = Vec::new();
    let Ok(rd) = std::fs::read_dir(shadows) else {
        return (swept, problems);
    };
    let youki = youki_root(shadows);
    for e in rd.flatten() {
        let dir = e.path();
        if dir == youki || !dir.is_dir() {
            continue;
        }
        let name = e.file_name().to_string_lossy().into_owned();
        // A directory still being made (".new-ID") by a live agent has its
        // owner record already; one whose maker died is swept the same way.
        let id = name.strip_prefix(".new-").unwrap_or(&name).to_string();
        if Owner::alive(&dir, &id) {
            continue;
        }
        let l = Layout {
            dir: dir.clone(),
            ..Layout::new(shadows, &id)
        };
        problems.extend(teardown(shadows, &l, None));
        swept.push(id);
    }
    // Container state without a shadow directory.
    if let Ok(rd) = std::fs::read_dir(&youki) {
        for e in rd.flatten() {
            let id = e.file_name().to_string_lossy().into_owned();
            if !shadows.join(&id).exists() {
                if let Ok(mut c) = Container::load(e.path())
                    && let Err(err) = c.delete(true)
                {
                    tracing::debug!(%id, "libcontainer delete: {err}; finishing by hand");
                }
                if let Err(err) = std::fs::remove_dir_all(e.path())
                    && err.kind() != std::io::ErrorKind::NotFound
                {
                    problems.push(format!("removing {}: {err}", e.path().display()));
                }
                problems.extend(remove_cgroups(&id));
                swept.push(id);
            }
        }
    }
    (swept, problems)
}
