//! The OCI spec of a shadow: its root and mounts, capabilities, seccomp
//! rules, namespaces, and the limits its cgroups enforce.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use libcontainer::oci_spec::OciSpecError;
use libcontainer::oci_spec::runtime::{
    Arch, Capability, LinuxCapabilitiesBuilder, LinuxCpuBuilder, LinuxDeviceCgroupBuilder,
    LinuxMemoryBuilder, LinuxNamespace, LinuxNamespaceBuilder, LinuxNamespaceType,
    LinuxPidsBuilder, LinuxResources, LinuxResourcesBuilder, LinuxSeccomp, LinuxSeccompAction,
    LinuxSeccompArgBuilder, LinuxSeccompBuilder, LinuxSeccompOperator, LinuxSyscallBuilder, Mount,
    MountBuilder, RootBuilder, Spec,
};

use super::container::{CGROUP_PARENT, IO_MOUNT, Layout, other};
use crate::error::{AgentError, Result};

#[derive(Debug, Clone, Default)]
pub struct Limits {
    pub memory_bytes: Option<i64>,
    pub pids: Option<i64>,
    /// CPU quota in microseconds per 100 ms period.
    pub cpu_quota_us: Option<i64>,
}

/// Docker's default capability set less CAP_MKNOD: no device node can be
/// made in a shadow (the device cgroup and nodev mounts would also stop
/// one from being opened; this stops it existing).
fn default_caps() -> HashSet<Capability> {
    use Capability::{
        AuditWrite, Chown, DacOverride, Fowner, Fsetid, Kill, NetBindService, NetRaw, Setfcap,
        Setgid, Setpcap, Setuid, SysChroot,
    };
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
    let names = |v: &[&str]| {
        v.iter()
            .map(std::string::ToString::to_string)
            .collect::<Vec<_>>()
    };
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

fn bad(e: OciSpecError) -> AgentError {
    other("building the shadow's OCI spec", e)
}

/// The OCI spec of a shadow running `args`.
pub fn spec(l: &Layout, args: Vec<String>, limits: &Limits) -> Result<Spec> {
    let mut spec = Spec::default();
    spec.set_hostname(Some("shadow".into()));
    spec.set_root(Some(
        RootBuilder::default()
            .path(&l.merged)
            .readonly(false)
            .build()
            .map_err(bad)?,
    ));
    spec.set_mounts(Some(mounts(l)?));
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
    let namespaces = namespaces()?;
    let resources = resources(limits)?;
    let seccomp = seccomp()?;
    let linux = spec
        .linux_mut()
        .as_mut()
        .ok_or_else(|| other("building the shadow's OCI spec", "no linux section"))?;
    linux.set_namespaces(Some(namespaces));
    linux.set_resources(Some(resources));
    linux.set_cgroups_path(Some(PathBuf::from(format!("/{CGROUP_PARENT}/{}", l.id))));
    linux.set_seccomp(Some(seccomp));
    Ok(spec)
}

/// The default mounts less the cgroup filesystem, and the io directory.
fn mounts(l: &Layout) -> Result<Vec<Mount>> {
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
    Ok(mounts)
}

/// New pid, mount, uts, ipc and network namespaces.
fn namespaces() -> Result<Vec<LinuxNamespace>> {
    [
        LinuxNamespaceType::Pid,
        LinuxNamespaceType::Mount,
        LinuxNamespaceType::Uts,
        LinuxNamespaceType::Ipc,
        LinuxNamespaceType::Network,
    ]
    .into_iter()
    .map(|t| LinuxNamespaceBuilder::default().typ(t).build())
    .collect::<std::result::Result<Vec<_>, _>>()
    .map_err(bad)
}

/// Devices denied, and the memory, pids and CPU limits.
fn resources(limits: &Limits) -> Result<LinuxResources> {
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
    res.build().map_err(bad)
}

/// Allow by default, with [`seccomp_rules`] on top.
fn seccomp() -> Result<LinuxSeccomp> {
    LinuxSeccompBuilder::default()
        .default_action(LinuxSeccompAction::ScmpActAllow)
        .architectures(vec![
            Arch::ScmpArchX86_64,
            Arch::ScmpArchX86,
            Arch::ScmpArchX32,
        ])
        .syscalls(seccomp_rules().map_err(bad)?)
        .build()
        .map_err(bad)
}
