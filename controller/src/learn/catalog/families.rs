//! What the catalog says about each fault family: which group it is in,
//! where the family comes from, and whether the default model may train
//! on it.
//!
//! Why groups: a fault that fires with nothing observable before it (a
//! plain `exit 1`) cannot be foreseen; an "early" alarm on one keys on
//! something other than the fault (a tell of the corpus), so evaluation
//! counts it as a tell and leaves the group out of the early metric.
//! Why held-out families: a model tested on a family it trained on (even
//! another variant of it) is tested on what it memorised.

use serde::Deserialize;

use super::{Catalog, Family};

/// How a family's failure shows before its onset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Group {
    /// Something grows before the onset (a hang, leak, fill, storm,
    /// runaway): what prediction is for.
    BuildUp,
    /// Nothing observable precedes the failure (a plain exit, a silent
    /// wait): an alarm before its onset is a tell.
    Silent,
    /// The package fails on minbase by itself; not injected.
    Real,
}

impl Group {
    pub fn name(self) -> &'static str {
        match self {
            Group::BuildUp => "build-up",
            Group::Silent => "silent",
            Group::Real => "real",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FamilyInfo {
    pub group: Group,
    /// Where the family comes from: a paper's failure class, or what real
    /// maintainer scripts are known to do.
    pub source: String,
    /// Kept out of the default model's training, to test it on.
    #[serde(default)]
    pub held_out: bool,
}

/// Every `[families.X]` names a family the runner knows and has a
/// source; when the table is there, every fault a scenario uses has an
/// entry (a family with no group would count in no metric).
pub(super) fn check(c: &Catalog) -> Result<(), String> {
    for (name, info) in &c.families {
        if !KNOWN.contains(&name.as_str()) {
            return Err(format!(
                "families.{name}: no such fault family (known: {})",
                KNOWN.join(", ")
            ));
        }
        if info.source.trim().is_empty() {
            return Err(format!(
                "families.{name}.source: empty (name where the family comes from)"
            ));
        }
    }
    if c.families.is_empty() {
        return Ok(());
    }
    for (i, s) in c.scenarios.iter().enumerate() {
        if s.fault != Family::None && !c.families.contains_key(s.fault.name()) {
            return Err(format!(
                "scenario[{i}].fault {:?} has no [families.{}] entry",
                s.fault.name(),
                s.fault.name()
            ));
        }
        if s.fault == Family::Real && s.cause.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "scenario[{i}].cause: a real failure needs its cause"
            ));
        }
    }
    Ok(())
}

/// The names of every injectable family and `real`.
const KNOWN: [&str; 20] = [
    "failing-script",
    "missing-dependency",
    "config-typo",
    "slow-service",
    "disk-full",
    "memory-blowup",
    "lock-hang",
    "cpu-runaway",
    "crash-loop",
    "io-stall",
    "unreachable-network",
    "fd-leak",
    "fork-storm",
    "log-flood",
    "user-conflict",
    "alternatives-conflict",
    "prompt-hang",
    "data-format",
    "real",
    "none",
];

#[cfg(test)]
mod tests {
    use super::super::parse;

    #[test]
    fn families_need_a_source_and_every_fault_a_family() {
        let head =
            "[families.failing-script]\ngroup = \"silent\"\nsource = \"Zhang et al. SOSP'21\"\n";
        let ok = format!(
            "{head}[[scenario]]\nname = \"a\"\npackage = \"p\"\nfault = \"failing-script\"\n"
        );
        let c = parse(&ok, "c").unwrap();
        assert_eq!(c.families["failing-script"].group.name(), "silent");
        let missing =
            format!("{head}[[scenario]]\nname = \"a\"\npackage = \"p\"\nfault = \"fd-leak\"\n");
        let e = parse(&missing, "c").unwrap_err().to_string();
        assert!(e.contains("scenario[0].fault \"fd-leak\""), "{e}");
        let unsourced = "[families.fd-leak]\ngroup = \"build-up\"\nsource = \" \"\n[[scenario]]\nname = \"a\"\npackage = \"p\"\n";
        let e = parse(unsourced, "c").unwrap_err().to_string();
        assert!(e.contains("families.fd-leak.source"), "{e}");
        let unknown = "[families.gremlins]\ngroup = \"silent\"\nsource = \"x\"\n[[scenario]]\nname = \"a\"\npackage = \"p\"\n";
        let e = parse(unknown, "c").unwrap_err().to_string();
        assert!(e.contains("families.gremlins"), "{e}");
        let causeless = "[families.real]\ngroup = \"real\"\nsource = \"minbase\"\n[[scenario]]\nname = \"a\"\npackage = \"p\"\nfault = \"real\"\n";
        let e = parse(causeless, "c").unwrap_err().to_string();
        assert!(e.contains("scenario[0].cause"), "{e}");
    }
}
