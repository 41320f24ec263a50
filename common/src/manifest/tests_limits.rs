//! `monitor.memory_limit_mb`, `monitor.service_cgroup` and the guard that
//! turns their projections off: read, and refused naming the field.

use std::path::PathBuf;

use super::Manifest;

fn with(monitor: &str) -> String {
    format!(
        "name = \"app\"\n[artifact]\ndebs = [\"/tmp/app.deb\"]\n[[steps]]\nname = \"install\"\nrun = [\"true\"]\n[scope]\npaths = [\"/etc\"]\n[monitor]\n{monitor}\n"
    )
}

#[test]
fn neither_is_set_by_default() {
    let m = Manifest::from_toml(&with("")).unwrap();
    assert_eq!(
        (m.monitor.memory_limit_mb, m.monitor.service_cgroup),
        (None, None)
    );
}

#[test]
fn the_exhaustion_rule_is_on_unless_the_guard_turns_it_off() {
    assert!(
        Manifest::from_toml(&with(""))
            .unwrap()
            .policy
            .guards
            .exhaustion
    );
    let off = with("[policy.guards]\nexhaustion = false");
    assert!(!Manifest::from_toml(&off).unwrap().policy.guards.exhaustion);
    // A manifest stored (as JSON) before the guard existed reads as on.
    let mut stored = serde_json::to_value(Manifest::from_toml(&off).unwrap()).unwrap();
    stored["policy"]["guards"]
        .as_object_mut()
        .unwrap()
        .remove("exhaustion");
    let old: Manifest = serde_json::from_value(stored).unwrap();
    assert!(old.policy.guards.exhaustion);
}

#[test]
fn a_limit_and_a_service_cgroup_are_read_and_normalised() {
    let m = Manifest::from_toml(&with(
        "memory_limit_mb = 128\nservice_cgroup = \"system.slice/./nginx.service\"",
    ))
    .unwrap();
    assert_eq!(m.monitor.memory_limit_mb, Some(128));
    assert_eq!(
        m.monitor.service_cgroup,
        Some(PathBuf::from("system.slice/nginx.service"))
    );
}

#[test]
fn bad_values_are_refused_naming_the_field() {
    for (line, field, why) in [
        ("memory_limit_mb = 8", "monitor.memory_limit_mb", "outside"),
        (
            "memory_limit_mb = \"512MiB\"",
            "monitor.memory_limit_mb",
            "integer",
        ),
        (
            "service_cgroup = \"/system.slice/x\"",
            "monitor.service_cgroup",
            "absolute",
        ),
        (
            "service_cgroup = \"a/../../etc\"",
            "monitor.service_cgroup",
            "'..'",
        ),
        (
            "service_cgroup = \".\"",
            "monitor.service_cgroup",
            "names no cgroup",
        ),
        ("service_cgroup = 3", "monitor.service_cgroup", "string"),
    ] {
        let err = Manifest::from_toml(&with(line)).unwrap_err();
        assert_eq!(err.field(), Some(field), "{line}: {err}");
        assert!(err.to_string().contains(why), "{line}: {err}");
    }
}
