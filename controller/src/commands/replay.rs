//! `backstop replay ID`: run the correlation engine again over every
//! decision stored for a deployment and say whether each is reproduced
//! (exit 1 when one is not). Reads the store only; the daemon need not run.

use std::path::Path;

use anyhow::Result;
use backstop_controller::daemon::record::replay;

pub async fn run(data: &Path, database: Option<String>, id: &str, json: bool) -> Result<i32> {
    let store = super::open_store(data, database, false).await?;
    // The deployment must exist: "no decisions" of a typo is not a pass.
    let (row, _) = store.deploy(id).await?;
    let decisions = store.decisions(id).await?;
    if decisions.is_empty() {
        // Nothing to replay: no JSON line, exit 0, and why on stderr (a
        // rollback the agent's local policy made while the controller was
        // away, an interrupted one, or one still running).
        eprintln!(
            "{id}: no controller decision to replay (state {}{})",
            row.state.as_str(),
            row.reason
                .as_deref()
                .map(|r| format!(": {r}"))
                .unwrap_or_default()
        );
    }
    let mut all = true;
    for d in &decisions {
        let r = replay(d)?;
        all &= r.reproduced;
        if json {
            println!("{}", serde_json::to_string(&r)?);
        } else {
            let mark = if r.reproduced { "same" } else { "DIFFERENT" };
            println!(
                "{} ms: stored {}, replayed {}: {mark}",
                r.at_ms, r.stored_verdict, r.verdict
            );
        }
    }
    if !json {
        println!(
            "{id}: {} decision(s), {}",
            decisions.len(),
            if all {
                "every one reproduced"
            } else {
                "NOT all reproduced"
            }
        );
    }
    Ok(i32::from(!all))
}
