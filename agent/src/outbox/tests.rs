//! The outbox on a scratch directory: modes, the bound, restarts.

use std::path::{Path, PathBuf};

use backstop_common::window::{Stream, Window};
use backstop_common::wire::{self, AgentMsg};

use super::*;

fn windows(d: &str, seq: u64) -> AgentMsg {
    AgentMsg::Windows {
        deployment: d.into(),
        windows: vec![Window::new(Stream::Live, seq, seq, seq + 1)],
    }
}

fn msgs(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "msg"))
        .collect()
}

fn finished(d: &str) -> AgentMsg {
    AgentMsg::Finished {
        deployment: d.into(),
        exit_code: 0,
        windows: 1,
        lost_events: 0,
    }
}

#[test]
fn private_from_creation_and_reserved() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = std::env::temp_dir().join(format!("backstop-outbox-modes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut s = Outbox::open(&dir, DEFAULT_MAX_BYTES).unwrap();
    s.push(&windows("d", 0));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "outbox directory");
    for m in msgs(&dir) {
        assert_eq!(mode(&m), 0o600, "{}", m.display());
    }
    let reserve = std::fs::metadata(dir.join("reserve")).unwrap();
    assert!(
        reserve.blocks() * 512 >= RESERVE_BYTES,
        "the reserve's blocks are allocated, not sparse: {} blocks",
        reserve.blocks()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_bound_drops_windows_never_outcomes() {
    let dir = std::env::temp_dir().join(format!("backstop-outbox-bound-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let one = wire::encode(&windows("d", 0)).len() as u64;
    let mut s = Outbox::open(&dir, one * 2).unwrap();
    s.push(&finished("a"));
    for seq in 0..5 {
        s.push(&windows("d", seq));
    }
    let left = s.pending(None, 100);
    let first = wire::decode::<AgentMsg>(&left[0].1[4..]).unwrap();
    assert_eq!(first, finished("a"), "the outcome outlives newer windows");
    assert!(s.dropped() >= 3, "windows were dropped: {}", s.dropped());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn survives_restart_acks_and_bounds() {
    let dir = std::env::temp_dir().join(format!("backstop-outbox-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut s = Outbox::open(&dir, DEFAULT_MAX_BYTES).unwrap();
    for seq in 0..5 {
        assert_eq!(s.push(&windows("d1", seq)), Pushed::Written);
    }
    s.push(&AgentMsg::Finished {
        deployment: "d1".into(),
        exit_code: 0,
        windows: 5,
        lost_events: 0,
    });
    drop(s);
    let mut s = Outbox::open(&dir, DEFAULT_MAX_BYTES).unwrap();
    assert_eq!(s.len(), 6, "everything survives a restart");
    let first = s.pending(None, 2);
    assert_eq!(first.len(), 2);
    assert_eq!(
        s.pending(Some(first[1].0), 100).len(),
        4,
        "pending after a cursor"
    );
    s.ack("d1", Some(2), false);
    assert_eq!(s.len(), 3, "seq 0..=2 acknowledged");
    s.ack("d1", None, true);
    assert!(s.is_empty());
    assert_eq!(msgs(&dir).len(), 0, "acknowledged files are gone");

    let one = wire::encode(&windows("d2", 0)).len() as u64;
    let mut s = Outbox::open(&dir, one * 3).unwrap();
    for seq in 0..5 {
        s.push(&windows("d2", seq));
    }
    assert_eq!(s.len(), 3);
    assert_eq!(s.dropped(), 2, "the oldest two were dropped and counted");
    drop(s);
    assert_eq!(
        Outbox::open(&dir, one * 3).unwrap().dropped(),
        2,
        "the drop count survives a restart"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
