//! Kernel struct layouts, read from the running kernel's BTF.
//!
//! Rust eBPF has no CO-RE relocations, so the probes read kernel structs at
//! offsets this module finds in /sys/kernel/btf/vmlinux and the loader
//! writes into the probes' globals. Only what the probes need is parsed:
//! struct and union members (through anonymous members) and enum values.
//! Format: https://docs.kernel.org/bpf/btf.html//!
//! Files: `mod.rs` the parser and member lookup, `offsets.rs` the facts
//! the probes need from it.

mod offsets;
#[cfg(test)]
mod tests;

use std::path::Path;

pub use offsets::kernel_offsets;

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
    #[expect(
        clippy::struct_field_names,
        reason = "named after the size/type union of the kernel's struct btf_type"
    )]
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
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(u32::from_le_bytes)
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
        u32::from_le_bytes(
            self.raw[at..at + 4]
                .try_into()
                .expect("a 4-byte slice is a [u8; 4]"),
        )
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
                    id = t.size_or_type;
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

    /// Whether the kernel defines a typedef of this name. Every tracepoint
    /// has one, `btf_trace_<event>`, which is how a raw tracepoint is found
    /// without tracefs (`doctor` checks the probes' hooks this way).
    pub fn has_typedef(&self, name: &str) -> bool {
        self.types
            .iter()
            .any(|t| t.kind == KIND_TYPEDEF && self.name(t.name_off) == name)
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
                        (i64::from(self.u32_at(at + 8)) << 32) | i64::from(lo)
                    } else {
                        i64::from(lo as i32)
                    });
                }
            }
        }
        Err(BtfError::Missing {
            what: format!("enum value {name}"),
        })
    }
}
