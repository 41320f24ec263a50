//! Loading the probe object into this kernel and attaching its programs,
//! and the sysfs/tracefs/procfs facts the load needs.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use aya::maps::{Array, HashMap, MapData};
use aya::programs::{RawTracePoint, TracePoint};
use aya::{Ebpf, EbpfLoader};
use backstop_common::{KernelOffsets, MAX_SLOTS};

use super::mailbox::Mailboxes;
use super::{
    PROBES_OBJECT, ProbeOptions, Probes, RAW_TRACEPOINTS, TRACEPOINTS, TRACKING_HOOKS, map_err,
    program, refused,
};
use crate::btf;
use crate::error::{AgentError, Result};

impl Probes {
    /// Check privileges, read kernel layouts, load and attach every probe.
    pub fn load(opts: &ProbeOptions) -> Result<Self> {
        let (mut ebpf, offsets, mut warnings) = open(opts)?;
        let logger = if opts.probe_log {
            match aya_log::EbpfLogger::init(&mut ebpf) {
                Ok(l) => Some(l),
                Err(e) => {
                    warnings.push(format!("probe log unavailable: {e}"));
                    None
                }
            }
        } else {
            None
        };

        let mut block_devs: HashMap<MapData, u32, u32> = take(&mut ebpf, "BLOCK_DEVS")?;
        for (dev, disk) in block_devices(Path::new("/sys/class/block")) {
            block_devs
                .insert(dev, disk, 0)
                .map_err(|e| map_err("BLOCK_DEVS", e))?;
        }
        let tracked: Array<MapData, u32> = take(&mut ebpf, "TRACKED")?;
        let counters = take(&mut ebpf, "COUNTERS")?;
        let syscalls = take(&mut ebpf, "SYSCALL_COUNTS")?;
        let events = take(&mut ebpf, "EVENTS")?;
        let changes = take(&mut ebpf, "CHANGES")?;
        let change_slots = take(&mut ebpf, "CHANGE_SLOTS")?;
        let roots = take(&mut ebpf, "ROOTS")?;
        let threads = take(&mut ebpf, "THREADS")?;
        let anon_peak = take(&mut ebpf, "ANON_PEAK")?;
        let prog_fds = load_programs(&mut ebpf)?;
        Ok(Probes {
            tracked_len: tracked.len(),
            tracked,
            counters,
            syscalls,
            events,
            changes,
            change_slots,
            roots,
            threads,
            anon_peak,
            prog_fds,
            slots: [false; MAX_SLOTS as usize],
            last_slot: 0,
            // A tree's worth of exec/exit records and of change records
            // (560 bytes each: at most 9 MB waiting per slot).
            event_mail: Mailboxes::new(1 << 16),
            change_mail: Mailboxes::new(1 << 14),
            tracking_links: Vec::new(),
            offsets,
            warnings,
            logger,
            ebpf,
        })
    }
}

/// Check privileges, read the kernel's layouts and load the probe object
/// with them (nothing attached yet).
fn open(opts: &ProbeOptions) -> Result<(Ebpf, KernelOffsets, Vec<String>)> {
    backstop_common::root::require_root("loading eBPF probes needs root (CAP_BPF, CAP_PERFMON)")?;
    if PROBES_OBJECT.is_empty() {
        return Err(AgentError::ProbesMissing);
    }
    raise_memlock();
    // Before anything reads tracefs: aya caches where it found it.
    crate::tracefs::ensure()?;
    let btf = btf::Btf::from_sys_fs()?;
    let (mut offsets, warnings) = btf::kernel_offsets(&btf)?;
    offsets.tp_exit_group_dead =
        tracepoint_field_offset("sched", "sched_process_exit", "group_dead").unwrap_or(u32::MAX);
    let pid_max = read_pid_max()?;

    let mut loader = EbpfLoader::new();
    loader
        .override_global("OFFSETS", &offsets, true)
        .map_max_entries("TRACKED", pid_max);
    if !opts.probe_log {
        // aya-log statements compile to a level check first: level 0
        // turns every one of them into a no-op.
        loader.override_global("AYA_LOG_LEVEL", &0u8, false);
    }
    let ebpf = loader
        .load(PROBES_OBJECT)
        .map_err(|e| refused("loading the probe object", e))?;
    Ok((ebpf, offsets, warnings))
}

/// Load every program, attach all but the tracking hooks (attached while a
/// slot is in use), and keep a duplicate of each program's fd.
fn load_programs(ebpf: &mut Ebpf) -> Result<Vec<(&'static str, OwnedFd)>> {
    let mut prog_fds = Vec::new();
    for (prog, _) in TRACKING_HOOKS {
        let p: &mut RawTracePoint = program(ebpf, prog)?;
        p.load()
            .map_err(|e| refused(&format!("loading program {prog}"), e))?;
        prog_fds.push((prog, dup_prog_fd(p.fd(), prog)?));
    }
    for (prog, tp) in RAW_TRACEPOINTS {
        let p: &mut RawTracePoint = program(ebpf, prog)?;
        p.load()
            .map_err(|e| refused(&format!("loading program {prog}"), e))?;
        p.attach(tp)
            .map_err(|e| refused(&format!("attaching {prog} to raw tracepoint {tp}"), e))?;
        prog_fds.push((*prog, dup_prog_fd(p.fd(), prog)?));
    }
    for (prog, category, name) in TRACEPOINTS {
        let p: &mut TracePoint = program(ebpf, prog)?;
        p.load()
            .map_err(|e| refused(&format!("loading program {prog}"), e))?;
        p.attach(category, name).map_err(|e| {
            refused(
                &format!("attaching {prog} to tracepoint {category}/{name}"),
                e,
            )
        })?;
        prog_fds.push((*prog, dup_prog_fd(p.fd(), prog)?));
    }
    Ok(prog_fds)
}

fn dup_prog_fd(
    fd: std::result::Result<&aya::programs::ProgramFd, aya::programs::ProgramError>,
    prog: &str,
) -> Result<OwnedFd> {
    fd.map_err(|e| refused(&format!("program {prog}"), e))?
        .as_fd()
        .try_clone_to_owned()
        .map_err(|source| AgentError::Io {
            context: format!("duplicating the fd of {prog}"),
            source,
        })
}

pub(super) fn raise_memlock() {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; newer ones to
    // the memory cgroup, where this is harmless.
    let rlim = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: valid pointer to an initialised rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &raw const rlim) };
}

fn take<T: TryFrom<aya::maps::Map>>(ebpf: &mut Ebpf, name: &'static str) -> Result<T>
where
    T::Error: std::fmt::Display,
{
    let map = ebpf.take_map(name).ok_or(AgentError::Map {
        map: name,
        reason: "not in the probe object".into(),
    })?;
    T::try_from(map).map_err(|e| map_err(name, e))
}

pub(super) fn read_pid_max() -> Result<u32> {
    let path = Path::new("/proc/sys/kernel/pid_max");
    let s = std::fs::read_to_string(path).map_err(|source| AgentError::Proc {
        path: path.into(),
        source,
    })?;
    s.trim().parse::<u32>().map_err(|e| AgentError::Proc {
        path: path.into(),
        source: std::io::Error::new(std::io::ErrorKind::InvalidData, e),
    })
}

/// Offset of a field in a tracepoint's record, from its tracefs format file.
fn tracepoint_field_offset(category: &str, event: &str, field: &str) -> Option<u32> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .find_map(|base| {
            std::fs::read_to_string(format!("{base}/events/{category}/{event}/format")).ok()
        })
        .and_then(|fmt| parse_field_offset(&fmt, field))
}

fn parse_field_offset(format: &str, field: &str) -> Option<u32> {
    format.lines().find_map(|line| {
        let decl = line.trim().strip_prefix("field:")?;
        let (decl, rest) = decl.split_once(';')?;
        let name = decl.split_whitespace().last()?.split('[').next()?;
        if name != field {
            return None;
        }
        rest.split(';')
            .find_map(|kv| kv.trim().strip_prefix("offset:"))
            .and_then(|v| v.parse().ok())
    })
}

/// Kernel dev_t (MAJOR << 20 | MINOR) of every leaf block device and its
/// partitions, each paired with its whole disk's dev_t. Devices stacked on
/// others (dm, md) have `slaves/` and are left out.
pub fn block_devices(class_dir: &Path) -> Vec<(u32, u32)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(class_dir) else {
        return out;
    };
    for e in entries.flatten() {
        let dir = e.path();
        let Some(dev) = read_dev(&dir.join("dev")) else {
            continue;
        };
        let disk_dir = if dir.join("partition").exists() {
            match std::fs::canonicalize(&dir)
                .ok()
                .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
            {
                Some(p) => p,
                None => continue,
            }
        } else {
            dir.clone()
        };
        let stacked =
            std::fs::read_dir(disk_dir.join("slaves")).is_ok_and(|mut d| d.next().is_some());
        if stacked {
            continue;
        }
        if let Some(disk) = read_dev(&disk_dir.join("dev")) {
            out.push((dev, disk));
        }
    }
    out
}

fn read_dev(path: &Path) -> Option<u32> {
    let s = std::fs::read_to_string(path).ok()?;
    let (maj, min) = s.trim().split_once(':')?;
    Some((maj.parse::<u32>().ok()? << 20) | min.parse::<u32>().ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tracefs_format() {
        let fmt = "name: sched_process_exit\nID: 1\nformat:\n\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\tfield:char comm[16];\toffset:8;\tsize:16;\tsigned:0;\n\tfield:bool group_dead;\toffset:32;\tsize:1;\tsigned:0;\n";
        assert_eq!(parse_field_offset(fmt, "group_dead"), Some(32));
        assert_eq!(parse_field_offset(fmt, "comm"), Some(8));
        assert_eq!(parse_field_offset(fmt, "nope"), None);
    }

    #[test]
    fn finds_this_hosts_disks() {
        let devs = block_devices(Path::new("/sys/class/block"));
        // Every entry maps to a whole disk that maps to itself.
        for (dev, disk) in &devs {
            assert!(
                devs.iter().any(|(d, w)| d == disk && w == disk),
                "{dev:#x} -> {disk:#x} has no disk entry"
            );
        }
    }
}
