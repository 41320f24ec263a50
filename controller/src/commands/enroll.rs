use std::path::Path;

use anyhow::{Context, Result};

pub fn run(data: &Path, host: &str, out: &Path, valid_days: i64) -> Result<i32> {
    backstop_controller::pki::enroll(data, host, out, valid_days)
        .with_context(|| format!("enrolling {host} into {}", out.display()))?;
    println!("{}", out.display());
    Ok(0)
}
