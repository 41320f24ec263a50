//! `backstop report ID [--json]`: the post-rollback analysis an SRE reads
//! first (see `backstop_controller::report`). Reads the store only; the
//! daemon need not run.

use std::path::Path;

use anyhow::Result;
use backstop_controller::report::{Stored, analyse, bundle, history, render};

pub async fn run(data: &Path, database: Option<String>, id: &str, json: bool) -> Result<i32> {
    let store = super::open_store(data, database, false).await?;
    let stored = Stored::load(&store, id).await?;
    let report = analyse(&stored, &history(&store, &stored.row).await?);
    let path = bundle::path(data, id);
    let bundle = path.exists().then(|| path.display().to_string());
    if json {
        let mut v = serde_json::to_value(&report)?;
        v["bundle"] = bundle.into();
        println!("{}", serde_json::to_string_pretty(&v)?);
    } else {
        print!("{}", render(&report));
        match bundle {
            Some(p) => println!("\nbundle: {p}"),
            None => println!(
                "\nbundle: none (only rolled-back, failed, interrupted or refused deployments get one)"
            ),
        }
    }
    Ok(0)
}
