//! History as evidence: before each decision the daemon asks the store
//! what the fleet did with this package (`Store::history`: this version's
//! outcomes on other hosts, the package's recent rollbacks anywhere) and
//! puts it in the evidence, which is stored with the decision, so a
//! replay weighs exactly the history that was weighed. A manifest with
//! `guards.history = false`, or one that names no package, gets none:
//! the evidence then holds zeros, not a history the engine was told to
//! ignore.

use backstop_common::manifest::Manifest;

use crate::decide::{History, Params};
use crate::store::{DeployRow, HistoryOf, Store, StoreError, now_ms};

/// The history deployment `row` is decided with.
pub(super) async fn of(
    store: &Store,
    row: &DeployRow,
    manifest: &Manifest,
    params: &Params,
) -> Result<History, StoreError> {
    let Some(package) = manifest.package.as_ref().filter(|_| params.history) else {
        return Ok(History::default());
    };
    store
        .history(HistoryOf {
            id: &row.id,
            host: &row.host,
            package: &package.name,
            version: package.version.as_deref(),
            now_ms: now_ms(),
        })
        .await
}

/// The history a stored decision weighed, as `backstop show` prints it;
/// None when it weighed none (turned off, or nothing known).
pub fn describe(inputs: &serde_json::Value) -> Option<String> {
    let on = inputs["params"]["history"].as_bool().unwrap_or(false);
    let h: History = serde_json::from_value(inputs["evidence"]["history"].clone()).ok()?;
    (on && h != History::default()).then(|| {
        format!(
            "history: this version rolled back on {} other host(s), committed on {}; the package rolled back {} time(s) in the fleet in the last {} h",
            h.version_rolled_back,
            h.version_committed,
            h.package_recent_rollbacks,
            crate::store::HISTORY_RECENT_MS / 3_600_000
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describe_prints_only_history_that_weighed_in() {
        let with = |on: bool, rb: u32| {
            serde_json::json!({
                "params": {"history": on},
                "evidence": {"history": {"version_rolled_back": rb, "version_committed": 1,
                                         "package_recent_rollbacks": 4}},
            })
        };
        let text = describe(&with(true, 2)).unwrap();
        assert!(
            text.contains("rolled back on 2 other host(s), committed on 1")
                && text.contains("4 time(s)"),
            "{text}"
        );
        assert_eq!(describe(&with(false, 2)), None, "turned off");
        let none = serde_json::json!({"params": {"history": true},
            "evidence": {"history": {}}});
        assert_eq!(describe(&none), None, "nothing known");
    }
}
