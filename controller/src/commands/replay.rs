//! `backstop replay ID`: run the correlation engine again over every
//! decision stored for a deployment and say whether each is reproduced
//! (exit 1 when one is not). Reads the store only; the daemon need not run.

use std::path::Path;

use anyhow::Result;
use backstop_controller::daemon::record::replay;

pub async fn run(data: &Path, database: Option<String>, id: &str, json: bool) -> Result<i32> {
    let store = super::open_store(data, database, false).await?;
    // The deployment must exist: "no decisions" of a typo is not a pass.
    store.deploy(id).await?;
    let decisions = store.decisions(id).await?;
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
