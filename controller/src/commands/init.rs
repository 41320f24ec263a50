use std::path::Path;

use anyhow::{Context, Result};

pub fn run(data: &Path, host: Option<String>, names: &[String]) -> Result<i32> {
    let host = match host {
        Some(h) => h,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading this host's name (pass --host)")?
            .trim()
            .to_string(),
    };
    let made = backstop_controller::pki::init(data, &host, names)
        .with_context(|| format!("initialising {}", data.display()))?;
    println!("CA:            {}", made.ca.display());
    println!("controller:    {}", made.server_cert.display());
    println!(
        "agent bundle:  {} (host {host}; copy it to that host, mode 0600)",
        made.agent_bundle.display()
    );
    Ok(0)
}
