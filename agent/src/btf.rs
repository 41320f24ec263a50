//! Kernel struct layouts, read from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE relocations, so the probes read kernel structs at
//! offsets this module finds in /sys/kernel/btf/vmlinux and the loader
//! writes into the probes' globals. Only what the probes need is parsed:
//! struct and union members (through anonymous members) and enum values.
//! Format: https://docs.kernel.org/bpf/btf.html

use std::path::Path;

use backstop_common::KernelOffsets;

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("reading {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not BTF: {reason}")]
    Malformed { path: String, reason: String },
    #[error("kernel BTF has no {what}")]
    Missing { what: String },
}

const KIND_INT: u32 = 1;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Copy)]
struct Type {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    size_or_type: u32,
    /// Byte position of the kind-specific data after the common header.
    data: usize,
}

pub struct Btf {
    raw: Vec<u8>,
    strings: usize,
    strings_len: usize,
    types: Vec<Type>, // index = type id - 1
}

/// A member's place: byte offset from the start of the outer struct and
/// byte size of the member's type (0 when not sized, e.g. a bitfield).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_path(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_path(path: &Path) -> Result<Self, BtfError> {
        let raw = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(raw).map_err(|reason| BtfError::Malformed {
            path: path.display().to_string(),
            reason,
        })
    }

    fn parse(raw: Vec<u8>) -> Result<Self, String> {
        let u32_at = |raw: &[u8], at: usize| -> Result<u32, String> {
            raw.get(at..at + 4)
                .map(|b| u32::from_le_bytes(b.try_into().unwrap()))
                .ok_or_else(|| format!("truncated at byte {at}"))
        };
        if raw.len() < 24 || raw[0..2] != [0x9f, 0xeb] {
            return Err("bad magic (expected 0xeb9f, little-endian)".into());
        }
        let hdr_len = u32_at(&raw, 4)? as usize;
        let type_off = u32_at(&raw, 8)? as usize;
        let type_len = u32_at(&raw, 12)? as usize;
        let str_off = u32_at(&raw, 16)? as usize;
        let str_len = u32_at(&raw, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strings = hdr_len + str_off;
        if types_end > raw.len() || strings + str_len > raw.len() {
            return Err("sections run past the end".into());
        }
        let mut types = Vec::new();
        let mut at = types_start;
        while at < types_end {
            let name_off = u32_at(&raw, at)?;
            let info = u32_at(&raw, at + 4)?;
            let size_or_type = u32_at(&raw, at + 8)?;
            let kind = (info >> 24) & 0x1f;
            let vlen = info & 0xffff;
            let data = at + 12;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen as usize,
                0..=19 => 0,
                other => return Err(format!("unknown kind {other} at byte {at}")),
            };
            types.push(Type {
                name_off,
                kind,
                vlen,
                kind_flag: info >> 31 == 1,
                size_or_type,
                data,
            });
            at = data + extra;
            if at > types_end {
                return Err(format!("type {} runs past the type section", types.len()));
            }
        }
        Ok(Btf {
            raw,
            strings,
            strings_len: str_len,
            types,
        })
    }

    fn u32_at(&self, at: usize) -> u32 {
        u32::from_le_bytes(self.raw[at..at + 4].try_into().unwrap())
    }

    fn name(&self, off: u32) -> &str {
        let start = self.strings + off as usize;
        let end_limit = self.strings + self.strings_len;
        if start >= end_limit {
            return "";
        }
        let len = self.raw[start..end_limit]
            .iter()
            .position(|&b| b == 0)
            .unwrap_or(end_limit - start);
        std::str::from_utf8(&self.raw[start..start + len]).unwrap_or("")
    }

    fn get(&self, id: u32) -> Option<Type> {
        id.checked_sub(1)
            .and_then(|i| self.types.get(i as usize).copied())
    }

    /// Follow typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> Option<(u32, Type)> {
        for _ in 0..32 {
            let t = self.get(id)?;
            match t.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = t.size_or_type
                }
                _ => return Some((id, t)),
            }
        }
        None
    }

    fn size_of(&self, id: u32) -> u32 {
        match self.resolve(id) {
            Some((_, t))
                if matches!(
                    t.kind,
                    KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64
                ) =>
            {
                t.size_or_type
            }
            Some((_, t)) if t.kind == 2 => 8, // pointer
            Some((_, t)) if t.kind == KIND_ARRAY => {
                let elem = self.u32_at(t.data);
                let n = self.u32_at(t.data + 8);
                self.size_of(elem).saturating_mul(n)
            }
            _ => 0,
        }
    }

    fn find_struct(&self, name: &str) -> Option<Type> {
        self.types
            .iter()
            .find(|t| t.kind == KIND_STRUCT && t.vlen > 0 && self.name(t.name_off) == name)
            .copied()
    }

    /// Depth-first search for `member` in a struct or union, descending into
    /// anonymous members, as C name lookup does.
    fn find_member(&self, t: Type, member: &str, base_bits: u32) -> Option<Member> {
        for i in 0..t.vlen as usize {
            let at = t.data + 12 * i;
            let name_off = self.u32_at(at);
            let ty = self.u32_at(at + 4);
            let raw_off = self.u32_at(at + 8);
            let bits = if t.kind_flag {
                raw_off & 0x00ff_ffff
            } else {
                raw_off
            };
            let bitfield = t.kind_flag && raw_off >> 24 != 0;
            let name = self.name(name_off);
            if name == member {
                return Some(Member {
                    offset: (base_bits + bits) / 8,
                    size: if bitfield { 0 } else { self.size_of(ty) },
                });
            }
            if name.is_empty()
                && let Some((_, inner)) = self.resolve(ty)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(m) = self.find_member(inner, member, base_bits + bits)
            {
                return Some(m);
            }
        }
        None
    }

    pub fn member(&self, strukt: &str, member: &str) -> Result<Member, BtfError> {
        let t = self.find_struct(strukt).ok_or_else(|| BtfError::Missing {
            what: format!("struct {strukt}"),
        })?;
        self.find_member(t, member, 0)
            .ok_or_else(|| BtfError::Missing {
                what: format!("member {strukt}.{member}"),
            })
    }

    pub fn enum_value(&self, name: &str) -> Result<i64, BtfError> {
        for t in &self.types {
            let (step, wide) = match t.kind {
                KIND_ENUM => (8, false),
                KIND_ENUM64 => (12, true),
                _ => continue,
            };
            for i in 0..t.vlen as usize {
                let at = t.data + step * i;
                if self.name(self.u32_at(at)) == name {
                    let lo = self.u32_at(at + 4);
                    return Ok(if wide {
                        ((self.u32_at(at + 8) as i64) << 32) | lo as i64
                    } else {
                        lo as i32 as i64
                    });
                }
            }
        }
        Err(BtfError::Missing {
            what: format!("enum value {name}"),
        })
    }
}

/// The layout facts the probes need. Exits and pids are required; the folio
/// facts are optional (without them a dirtied large folio counts one page),
/// so their absence is returned as a warning rather than an error.
pub fn kernel_offsets(btf: &Btf) -> Result<(KernelOffsets, Vec<String>), BtfError> {
    let mut warnings = Vec::new();
    let task_pid = btf.member("task_struct", "pid")?;
    let task_tgid = btf.member("task_struct", "tgid")?;
    let task_exit_code = btf.member("task_struct", "exit_code")?;
    let path_dentry = btf.member("path", "dentry")?.offset;
    let mut off = KernelOffsets {
        task_pid: task_pid.offset,
        task_tgid: task_tgid.offset,
        task_exit_code: task_exit_code.offset,
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
    };
    match (
        btf.member("task_struct", "mm"),
        btf.member("mm_struct", "rss_stat"),
        btf.enum_value("NR_MM_COUNTERS"),
        btf.member("percpu_counter", "count"),
    ) {
        (Ok(mm), Ok(rss), Ok(n), Ok(count)) if n > 0 && rss.size % n as u32 == 0 && count.size == 8 => {
            off.task_mm = mm.offset;
            off.mm_rss_stat = rss.offset;
            off.rss_counter_size = rss.size / n as u32;
            off.percpu_counter_count = count.offset;
        }
        (mm, rss, n, count) => warnings.push(format!(
            "mem_anon_peak_bytes will stay 0: task_struct.mm {:?}, mm_struct.rss_stat {:?}, NR_MM_COUNTERS {:?}, percpu_counter.count {:?}",
            mm.map(|m| m.offset).ok(),
            rss.map(|m| (m.offset, m.size)).ok(),
            n.ok(),
            count.map(|m| m.size).ok()
        )),
    }
    match btf.member("sock", "sk_protocol") {
        Ok(m) if m.size == 2 => off.sk_protocol = m.offset,
        other => warnings.push(format!(
            "sock.sk_protocol is not a u16 here ({:?}); every socket state change counts as TCP",
            other.ok()
        )),
    }
    match (
        btf.member("folio", "flags"),
        btf.member("folio", "_nr_pages"),
        btf.enum_value("PG_head"),
    ) {
        (Ok(flags), Ok(nr), Ok(head)) if nr.size == 4 || nr.size == 8 => {
            off.folio_flags = flags.offset;
            off.folio_nr_pages = nr.offset;
            off.pg_head_bit = head as u32;
        }
        (flags, nr, head) => warnings.push(format!(
            "large folios will count as one page: folio.flags {:?}, folio._nr_pages {:?}, PG_head {:?}",
            flags.map(|m| m.offset).ok(),
            nr.map(|m| m.size).ok(),
            head.ok()
        )),
    }
    Ok((off, warnings))
}

fn page_size() -> u32 {
    // SAFETY: sysconf has no preconditions.
    let v = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if v > 0 { v as u32 } else { 4096 }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds a tiny BTF blob: struct outer { int a; union { int b; long c; }; }
    /// and enum e { X = 7 }.
    fn blob() -> Vec<u8> {
        let strings = b"\0outer\0a\0b\0c\0int\0long\0e\0X\0";
        let s = |name: &str| -> u32 {
            let pat = format!("\0{name}\0");
            strings
                .windows(pat.len())
                .position(|w| w == pat.as_bytes())
                .unwrap() as u32
                + 1
        };
        let mut t = Vec::new();
        let mut push = |v: u32| t.extend_from_slice(&v.to_le_bytes());
        // 1: int (4 bytes)
        push(s("int"));
        push(KIND_INT << 24);
        push(4);
        push(32);
        // 2: long (8 bytes)
        push(s("long"));
        push(KIND_INT << 24);
        push(8);
        push(64);
        // 3: anonymous union { int b; long c; }
        push(0);
        push((KIND_UNION << 24) | 2);
        push(8);
        push(s("b"));
        push(1);
        push(0);
        push(s("c"));
        push(2);
        push(0);
        // 4: struct outer { int a; <anon union> at 64 bits }
        push(s("outer"));
        push((KIND_STRUCT << 24) | 2);
        push(16);
        push(s("a"));
        push(1);
        push(0);
        push(0);
        push(3);
        push(64);
        // 5: enum e { X = 7 }
        push(s("e"));
        push((KIND_ENUM << 24) | 1);
        push(4);
        push(s("X"));
        push(7);
        let mut out = vec![0x9f, 0xeb, 1, 0];
        out.extend_from_slice(&24u32.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&(t.len() as u32).to_le_bytes());
        out.extend_from_slice(&(strings.len() as u32).to_le_bytes());
        out.extend_from_slice(&t);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn finds_members_through_anonymous_unions() {
        let btf = Btf::parse(blob()).unwrap();
        assert_eq!(
            btf.member("outer", "a").unwrap(),
            Member { offset: 0, size: 4 }
        );
        assert_eq!(
            btf.member("outer", "c").unwrap(),
            Member { offset: 8, size: 8 }
        );
        assert!(btf.member("outer", "zz").is_err());
        assert_eq!(btf.enum_value("X").unwrap(), 7);
    }

    #[test]
    fn refuses_garbage() {
        assert!(Btf::parse(vec![1, 2, 3]).is_err());
        let mut b = blob();
        b.truncate(40);
        assert!(Btf::parse(b).is_err());
    }

    #[test]
    fn reads_this_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("SKIP reads_this_kernel: /sys/kernel/btf/vmlinux is not readable here");
            assert!(
                std::env::var("CI").is_err(),
                "kernel BTF must be readable under CI"
            );
            return;
        };
        let (off, _) = kernel_offsets(&btf).unwrap();
        assert!(
            off.task_pid > 0 && off.task_tgid == off.task_pid + 4,
            "{off:?}"
        );
    }
}
