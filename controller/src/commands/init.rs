use std::path::Path;

use anyhow::{Context, Result};

pub async fn run(data: &Path, host: Option<String>, names: &[String]) -> Result<i32> {
    let host = match host {
        Some(h) => h,
        None => std::fs::read_to_string("/proc/sys/kernel/hostname")
            .context("reading this host's name (pass --host)")?
            .trim()
            .to_string(),
    };
    let (d, h, n) = (data.to_path_buf(), host.clone(), names.to_vec());
    let made = tokio::task::spawn_blocking(move || {
        backstop_controller::private::dir(&d)?;
        anyhow::Ok(backstop_controller::pki::init(&d, &h, &n)?)
    })
    .await?
    .with_context(|| format!("initialising {}", data.display()))?;
    let store = super::open_store(data, None, true).await?;
    store
        .record_certificate(&made.agent_cert.to_row(), false)
        .await
        .with_context(|| format!("recording the certificate of {host}"))?;
    store.close().await;
    println!("CA:            {}", made.ca.display());
    println!("controller:    {}", made.server_cert.display());
    println!(
        "agent bundle:  {} (host {host}; copy it to that host, mode 0600)",
        made.agent_bundle.display()
    );
    Ok(0)
}
