//! The diagnostics bundle: when a deployment ends rolled back, failed,
//! interrupted or refused, the daemon writes DATA/bundles/<id>.tar.gz
//! (0600, in a 0700 directory; written aside, fsynced and renamed, so a
//! reader never sees half a bundle) with everything a developer needs to
//! find the cause: the parts in [`PARTS`].
//!
//! It runs after the final event is stored, on its own task, and its
//! blocking half (the model's explanation, compression, the write) on the
//! blocking pool: it never delays a rollback, and a failure to write it is
//! logged, never fatal.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use backstop_common::deploy::DeployEvent;
use backstop_common::window::{Stream, Window};

use super::{Stored, analyse, history};
use crate::daemon::Daemon;
use crate::store::{DeployState, Store, StoreError};

/// Every file a bundle holds, under `<id>/`.
pub const PARTS: [&str; 12] = [
    "manifest.json",
    "deployment.json",
    "steps.json",
    "events.jsonl",
    "windows/live.jsonl",
    "windows/shadow.jsonl",
    "process_tree.json",
    "errno.json",
    "shadow.json",
    "decision.json",
    "explanation.json",
    "report.json",
];

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("bundle of {id}: {what}: {source}")]
    Io {
        id: String,
        what: String,
        source: std::io::Error,
    },
    #[error("deployment id {0:?} is not a safe file name")]
    BadId(String),
}

/// The states that get a bundle.
pub fn wanted(state: DeployState) -> bool {
    matches!(
        state,
        DeployState::RolledBack
            | DeployState::Failed
            | DeployState::Interrupted
            | DeployState::Refused
    )
}

/// Where `id`'s bundle goes.
pub fn path(data: &Path, id: &str) -> PathBuf {
    data.join("bundles").join(format!("{id}.tar.gz"))
}

/// The hook the daemon calls when a deployment ended in `state` (None:
/// not ended, or a redelivered final event): write its bundle if wanted.
pub fn after_end(daemon: &Arc<Daemon>, id: &str, state: Option<DeployState>) {
    if !state.is_some_and(wanted) {
        return;
    }
    // The alert queue lives in DATA/alerts: its parent is DATA.
    let Some(data) = daemon.alerts.dir().parent().map(Path::to_path_buf) else {
        return;
    };
    let (store, id) = (daemon.store.clone(), id.to_string());
    tokio::spawn(async move {
        match write(&store, &data, &id).await {
            Ok(p) => {
                tracing::info!(deployment = id, path = %p.display(), "diagnostics bundle written");
            }
            Err(e) => tracing::error!(deployment = id, "diagnostics bundle not written: {e}"),
        }
    });
}

fn jsonl<T: serde::Serialize>(items: impl Iterator<Item = T>) -> Vec<u8> {
    let mut out = Vec::new();
    for i in items {
        out.extend(serde_json::to_vec(&i).unwrap_or_default());
        out.push(b'\n');
    }
    out
}

fn json(v: &impl serde::Serialize) -> Vec<u8> {
    serde_json::to_vec_pretty(v).unwrap_or_default()
}

/// The processes of the tree, by tgid: what each exec'd, how it ended.
fn process_tree(records: &[(String, serde_json::Value)]) -> serde_json::Value {
    let mut tree: BTreeMap<i64, serde_json::Value> = BTreeMap::new();
    for (kind, d) in records {
        let tgid = d["tgid"].as_i64().unwrap_or(-1);
        let p = tree.entry(tgid).or_insert_with(|| {
            serde_json::json!({"tgid": tgid, "comm": d["comm"], "execs": [], "exit_code": null, "signal": null, "oom_killed": false})
        });
        match kind.as_str() {
            "exec" => {
                if let Some(execs) = p["execs"].as_array_mut() {
                    execs.push(d["filename"].clone());
                }
                p["comm"] = d["comm"].clone();
            }
            "exit" => {
                p["exit_code"] = d["exit_code"].clone();
                p["signal"] = d["signal"].clone();
            }
            "oom_kill" => p["oom_killed"] = true.into(),
            _ => {}
        }
    }
    serde_json::json!({ "processes": tree.into_values().collect::<Vec<_>>(), "records": records.len() })
}

fn steps(s: &Stored) -> serde_json::Value {
    let mut out = Vec::new();
    for r in &s.events {
        let (kind, step) = match &r.event {
            DeployEvent::Step { stream, step } => (format!("{} step", stream.as_str()), step),
            DeployEvent::ShadowTest { step } => ("shadow test".into(), step),
            _ => continue,
        };
        out.push(serde_json::json!({"kind": kind, "reported_ms": r.at_ms, "step": step}));
    }
    for r in &s.events {
        if let DeployEvent::RolledBack { report, .. } | DeployEvent::Interrupted { report } =
            &r.event
        {
            for h in &report.hooks {
                out.push(
                    serde_json::json!({"kind": "rollback hook", "reported_ms": r.at_ms, "step": h}),
                );
            }
        }
    }
    serde_json::Value::Array(out)
}

fn shadow(s: &Stored) -> serde_json::Value {
    let report = s.events.iter().find_map(|r| match &r.event {
        DeployEvent::Shadow { report } => Some(report),
        _ => None,
    });
    match report {
        Some(r) => serde_json::json!({
            "report": r,
            "changed_paths": r.changed_paths,
            "tests": r.tests,
            "note": "the agent sends the count of paths the shadow changed; the path list stays on the agent",
        }),
        None => {
            serde_json::json!({"report": null, "note": "no shadow report was stored (shadow off, or it never finished)"})
        }
    }
}

/// The model's explanation of the last live window (blocking: runs the
/// model), or why there is none.
fn explanation(data: &Path, live: &[Window]) -> serde_json::Value {
    let (model, from) = match crate::predict::model::Model::current(data) {
        Ok(m) => m,
        Err(e) => {
            return serde_json::json!({"model": null, "why": format!("no model installed: {e}")});
        }
    };
    let Some(t) = live.len().checked_sub(1) else {
        return serde_json::json!({"model": from, "why": "no live windows were stored to explain"});
    };
    let features: Vec<Vec<f64>> = live.iter().map(|w| w.features.clone()).collect();
    let p = model
        .predict(&features)
        .ok()
        .and_then(|p| p.get(t).copied());
    match model.explain(&features, t, super::TOP) {
        Ok(top) => {
            let beyond = model.beyond(&features, t);
            serde_json::json!({"model": from, "window": live[t].seq, "p_failure": p, "beyond_envelope": beyond, "drivers": top})
        }
        Err(e) => serde_json::json!({"model": from, "why": format!("explaining failed: {e}")}),
    }
}

/// Gather the parts of `id`'s bundle from the store (the explanation is
/// added by [`write_file`], off the runtime).
async fn gather(
    store: &Store,
    id: &str,
) -> Result<(Vec<(String, Vec<u8>)>, Vec<Window>), StoreError> {
    let (row, manifest) = store.deploy(id).await?;
    let stored = Stored::load(store, id).await?;
    let report = analyse(&stored, &history(store, &row).await?);
    let records = store.events(id).await?;
    let live: Vec<Window> = stored.stream(Stream::Live).into_iter().cloned().collect();
    let shadow_w = stored.stream(Stream::Shadow);
    let parts = vec![
        ("manifest.json", json(&manifest)),
        ("deployment.json", json(&row)),
        ("steps.json", json(&steps(&stored))),
        ("events.jsonl", jsonl(stored.events.iter())),
        ("windows/live.jsonl", jsonl(live.iter())),
        ("windows/shadow.jsonl", jsonl(shadow_w.iter())),
        ("process_tree.json", json(&process_tree(&records))),
        ("errno.json", json(&report.errors_by_errno)),
        ("shadow.json", json(&shadow(&stored))),
        ("decision.json", json(&stored.decisions)),
        ("report.json", json(&report)),
    ];
    Ok((
        parts.into_iter().map(|(n, b)| (n.to_string(), b)).collect(),
        live,
    ))
}

/// Write `id`'s bundle under `data`; returns its path.
pub async fn write(store: &Store, data: &Path, id: &str) -> Result<PathBuf, BundleError> {
    let (mut parts, live) = gather(store, id).await?;
    let (data, id) = (data.to_path_buf(), id.to_string());
    let task = id.clone();
    tokio::task::spawn_blocking(move || {
        parts.push(("explanation.json".into(), json(&explanation(&data, &live))));
        write_file(&data, &id, &parts)
    })
    .await
    .map_err(|e| BundleError::Io {
        id: task,
        what: "the writing task".into(),
        source: std::io::Error::other(e.to_string()),
    })?
}

/// The blocking write: tar.gz aside (0600), fsync, rename into place.
pub fn write_file(
    data: &Path,
    id: &str,
    parts: &[(String, Vec<u8>)],
) -> Result<PathBuf, BundleError> {
    if id.is_empty()
        || !id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(BundleError::BadId(id.to_string()));
    }
    let err = |what: &str| {
        let (id, what) = (id.to_string(), what.to_string());
        move |source| BundleError::Io { id, what, source }
    };
    let dir = data.join("bundles");
    crate::private::dir(&dir).map_err(err("creating DATA/bundles"))?;
    let dest = path(data, id);
    let aside = dir.join(format!(".{id}.tar.gz.partial"));
    let _ = std::fs::remove_file(&aside);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(crate::private::FILE_MODE)
        .open(&aside)
        .map_err(err(&format!("creating {}", aside.display())))?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (name, bytes) in parts {
        let mut h = tar::Header::new_gnu();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o600);
        h.set_mtime(now);
        h.set_cksum();
        tar.append_data(&mut h, format!("{id}/{name}"), bytes.as_slice())
            .map_err(err(&format!("adding {name}")))?;
    }
    let gz = tar.into_inner().map_err(err("finishing the tar"))?;
    let mut file = gz.finish().map_err(err("finishing the gzip"))?;
    file.flush().map_err(err("flushing"))?;
    file.sync_all().map_err(err("syncing"))?;
    std::fs::rename(&aside, &dest).map_err(err(&format!("renaming into {}", dest.display())))?;
    Ok(dest)
}
