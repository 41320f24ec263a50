use std::path::Path;

use anyhow::{Context, Result, bail};
use backstop_controller::store::now_ms;

use super::Exit;

/// Issue a bundle for `host` and record its certificate. A host with a live
/// certificate is refused unless `force`, which revokes the old ones in
/// the same transaction that records the new one.
pub async fn run(data: &Path, host: &str, out: &Path, valid_days: i64, force: bool) -> Result<i32> {
    backstop_controller::pki::valid_host(host)?;
    let store = super::open_store(data, None, true).await?;
    let live: Vec<_> = store
        .certificates(host)
        .await?
        .into_iter()
        .filter(|c| c.live(now_ms()))
        .collect();
    if let Some(c) = live.first()
        && !force
    {
        return Err(anyhow::anyhow!(
            "host {host} already has a live certificate (serial {}, valid for {} more days): \
             pass --force to revoke it and issue a new one, or `backstop revoke {host}` first",
            c.serial,
            (c.not_after_ms - now_ms()) / 86_400_000
        )
        .context(Exit(3)));
    }
    let (d, h, o) = (data.to_path_buf(), host.to_string(), out.to_path_buf());
    let issued = tokio::task::spawn_blocking(move || {
        backstop_controller::pki::enroll(&d, &h, &o, valid_days)
    })
    .await?
    .with_context(|| format!("enrolling {host} into {}", out.display()))?;
    if let Err(e) = store.record_certificate(&issued.to_row(), force).await {
        // An unrecorded certificate of a host with records is refused by
        // the daemon: the bundle would be useless, so it goes.
        let _ = std::fs::remove_file(out);
        bail!("recording the certificate of {host}: {e} (the bundle was removed)");
    }
    store.close().await;
    if force && !live.is_empty() {
        eprintln!(
            "backstop: revoked {} live certificate(s) of {host}",
            live.len()
        );
    }
    println!("{}", out.display());
    Ok(0)
}
