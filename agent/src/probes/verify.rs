//! What `backstop-agent doctor` asks of the probes: the kernel hooks they
//! attach to (read from the same tables [`Probes::load`] attaches from, so
//! the doctor never checks a second, drifting list), and a load of the
//! real object through the verifier with nothing attached.

use aya::EbpfLoader;
use aya::programs::{RawTracePoint, TracePoint};

use super::load::{raise_memlock, read_pid_max};
use super::{PROBES_OBJECT, RAW_TRACEPOINTS, TRACEPOINTS, TRACKING_HOOKS, program, refused};
use crate::btf;
use crate::error::{AgentError, Result};

/// How a program reaches its hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HookKind {
    /// A raw tracepoint, found by name (no tracefs needed).
    Raw,
    /// A classic tracepoint, found through tracefs's events/<category>/<name>/id.
    Classic { category: &'static str },
}

/// One program and the kernel tracepoint it attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hook {
    pub program: &'static str,
    pub tracepoint: &'static str,
    pub kind: HookKind,
}

/// Every hook the probes attach to, the tracking hooks included.
pub fn hooks() -> Vec<Hook> {
    let raw = TRACKING_HOOKS
        .iter()
        .chain(RAW_TRACEPOINTS)
        .map(|&(program, tracepoint)| Hook {
            program,
            tracepoint,
            kind: HookKind::Raw,
        });
    let classic = TRACEPOINTS
        .iter()
        .map(|&(program, category, tracepoint)| Hook {
            program,
            tracepoint,
            kind: HookKind::Classic { category },
        });
    raw.chain(classic).collect()
}

/// Load the probe object with this kernel's layouts and pass every program
/// through the verifier, attaching none; everything is freed on return.
/// Root is not checked first: the kernel's own answer (EPERM without
/// CAP_BPF) is what the doctor reports. Returns how many programs loaded.
pub fn verify_load() -> Result<usize> {
    if PROBES_OBJECT.is_empty() {
        return Err(AgentError::ProbesMissing);
    }
    raise_memlock();
    let btf = btf::Btf::from_sys_fs()?;
    let (offsets, _warnings) = btf::kernel_offsets(&btf)?;
    let mut loader = EbpfLoader::new();
    loader
        .override_global("OFFSETS", &offsets, true)
        .map_max_entries("TRACKED", read_pid_max()?)
        .override_global("AYA_LOG_LEVEL", &0u8, false);
    let mut ebpf = loader
        .load(PROBES_OBJECT)
        .map_err(|e| refused("loading the probe object", e))?;
    let mut programs = 0;
    for hook in hooks() {
        let what = format!("loading program {}", hook.program);
        match hook.kind {
            HookKind::Raw => {
                let p: &mut RawTracePoint = program(&mut ebpf, hook.program)?;
                p.load().map_err(|e| refused(&what, e))?;
            }
            HookKind::Classic { .. } => {
                let p: &mut TracePoint = program(&mut ebpf, hook.program)?;
                p.load().map_err(|e| refused(&what, e))?;
            }
        }
        programs += 1;
    }
    Ok(programs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_attached_program_is_a_hook_once() {
        let hs = hooks();
        let want = TRACKING_HOOKS.len() + RAW_TRACEPOINTS.len() + TRACEPOINTS.len();
        assert_eq!(hs.len(), want);
        let mut names: Vec<_> = hs.iter().map(|h| h.program).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), want, "a program listed twice");
    }
}
