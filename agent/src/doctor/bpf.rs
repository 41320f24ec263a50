//! BPF permission, tried for real: the agent's own probe object is loaded
//! with this kernel's layouts and every program goes through the verifier
//! (nothing is attached, and all of it is freed at once). This answers
//! "may this user load BPF" and "does the verifier accept our programs on
//! this kernel" in one go, with the kernel's own reason when it refuses.

use super::{Check, euid};
use crate::AgentError;
use crate::probes;

const NAME: &str = "bpf.load";

pub fn load() -> Check {
    match probes::verify_load() {
        Ok(n) => Check::ok(
            NAME,
            format!("the verifier accepted all {n} probe programs"),
        ),
        Err(AgentError::ProbesMissing) => Check::fail(
            NAME,
            "the probes were not built into this agent",
            "run `cargo xtask build-ebpf`, then rebuild the agent",
        ),
        Err(e) if euid() != 0 => Check::fail(
            NAME,
            format!("BPF refused for uid {}: {e}", euid()),
            "run the agent as root, or with CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (packaging/systemd/backstop-agent.service)",
        ),
        Err(e) => Check::fail(
            NAME,
            e.to_string(),
            "give the agent CAP_BPF, CAP_PERFMON and CAP_SYS_ADMIN (packaging/systemd/backstop-agent.service); if it has them, the verifier's reason is above",
        ),
    }
}
