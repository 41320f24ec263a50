//! The kernel facts the probes need, read from BTF: required offsets
//! (exits, pids, block requests, files) are errors when missing; optional
//! ones (anonymous RSS, socket protocol, large folios) are warnings, and
//! their feature degrades as each warning says.

use backstop_common::KernelOffsets;

use super::{Btf, BtfError};

/// The layout facts the probes need. Exits and pids are required; the folio
/// facts are optional (without them a dirtied large folio counts one page),
/// so their absence is returned as a warning rather than an error.
pub fn kernel_offsets(btf: &Btf) -> Result<(KernelOffsets, Vec<String>), BtfError> {
    let mut warnings = Vec::new();
    let mut off = required(btf)?;
    if let Err(w) = anon_rss(btf, &mut off) {
        warnings.push(w);
    }
    if let Err(w) = sock_protocol(btf, &mut off) {
        warnings.push(w);
    }
    if let Err(w) = large_folios(btf, &mut off) {
        warnings.push(w);
    }
    Ok((off, warnings))
}

/// The offsets without which the probes cannot run; the optional ones
/// start as `u32::MAX` (unknown).
fn required(btf: &Btf) -> Result<KernelOffsets, BtfError> {
    let task_pid = btf.member("task_struct", "pid")?.offset;
    let task_tgid = btf.member("task_struct", "tgid")?.offset;
    let task_exit_code = btf.member("task_struct", "exit_code")?.offset;
    let path_dentry = btf.member("path", "dentry")?.offset;
    Ok(KernelOffsets {
        task_pid,
        task_tgid,
        task_exit_code,
        task_runtime: btf.member("task_struct", "se")?.offset
            + btf.member("sched_entity", "sum_exec_runtime")?.offset,
        folio_flags: u32::MAX,
        folio_nr_pages: u32::MAX,
        pg_head_bit: u32::MAX,
        page_size: page_size(),
        tp_exit_group_dead: u32::MAX,
        rq_sector: btf.member("request", "__sector")?.offset,
        rq_q: btf.member("request", "q")?.offset,
        q_disk: btf.member("request_queue", "disk")?.offset,
        disk_major: btf.member("gendisk", "major")?.offset,
        disk_first_minor: btf.member("gendisk", "first_minor")?.offset,
        sk_protocol: u32::MAX,
        mapping_host: btf.member("address_space", "host")?.offset,
        inode_mode: btf.member("inode", "i_mode")?.offset,
        task_files: btf.member("task_struct", "files")?.offset,
        task_fs: btf.member("task_struct", "fs")?.offset,
        files_fdt: btf.member("files_struct", "fdt")?.offset,
        fdtable_fd: btf.member("fdtable", "fd")?.offset,
        file_inode: btf.member("file", "f_inode")?.offset,
        inode_ino: btf.member("inode", "i_ino")?.offset,
        fs_pwd_dentry: btf.member("fs_struct", "pwd")?.offset + path_dentry,
        fs_root_dentry: btf.member("fs_struct", "root")?.offset + path_dentry,
        dentry_inode: btf.member("dentry", "d_inode")?.offset,
        task_mm: u32::MAX,
        mm_rss_stat: u32::MAX,
        rss_counter_size: u32::MAX,
        percpu_counter_count: u32::MAX,
    })
}

/// Anonymous RSS (the rss_stat probe); Err: the warning.
fn anon_rss(btf: &Btf, off: &mut KernelOffsets) -> Result<(), String> {
    match (
        btf.member("task_struct", "mm"),
        btf.member("mm_struct", "rss_stat"),
        btf.enum_value("NR_MM_COUNTERS"),
        btf.member("percpu_counter", "count"),
    ) {
        (Ok(mm), Ok(rss), Ok(n), Ok(count))
            if n > 0 && rss.size % n as u32 == 0 && count.size == 8 =>
        {
            off.task_mm = mm.offset;
            off.mm_rss_stat = rss.offset;
            off.rss_counter_size = rss.size / n as u32;
            off.percpu_counter_count = count.offset;
            Ok(())
        }
        (mm, rss, n, count) => Err(format!(
            "mem_anon_peak_bytes will stay 0: task_struct.mm {:?}, mm_struct.rss_stat {:?}, NR_MM_COUNTERS {:?}, percpu_counter.count {:?}",
            mm.map(|m| m.offset).ok(),
            rss.map(|m| (m.offset, m.size)).ok(),
            n.ok(),
            count.map(|m| m.size).ok()
        )),
    }
}

/// The socket's protocol, to count only TCP state changes; Err: the warning.
fn sock_protocol(btf: &Btf, off: &mut KernelOffsets) -> Result<(), String> {
    match btf.member("sock", "sk_protocol") {
        Ok(m) if m.size == 2 => {
            off.sk_protocol = m.offset;
            Ok(())
        }
        other => Err(format!(
            "sock.sk_protocol is not a u16 here ({:?}); every socket state change counts as TCP",
            other.ok()
        )),
    }
}

/// Large folios' page counts, for dirtied bytes; Err: the warning.
fn large_folios(btf: &Btf, off: &mut KernelOffsets) -> Result<(), String> {
    match (
        btf.member("folio", "flags"),
        btf.member("folio", "_nr_pages"),
        btf.enum_value("PG_head"),
    ) {
        (Ok(flags), Ok(nr), Ok(head)) if nr.size == 4 || nr.size == 8 => {
            off.folio_flags = flags.offset;
            off.folio_nr_pages = nr.offset;
            off.pg_head_bit = head as u32;
            Ok(())
        }
        (flags, nr, head) => Err(format!(
            "large folios will count as one page: folio.flags {:?}, folio._nr_pages {:?}, PG_head {:?}",
            flags.map(|m| m.offset).ok(),
            nr.map(|m| m.size).ok(),
            head.ok()
        )),
    }
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v as u32 } else { 4096 }
}
