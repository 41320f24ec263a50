//! `backstop-agent snapshot`: create, restore, list, show, diff, gc. Every
//! failure is the library's typed error; all of them exit 1, as the README
//! says (see `AgentError::exit_code`).

use std::path::PathBuf;

use backstop_agent::changes::ChangeSet;
use backstop_agent::snapshot::{self, Scope, Store};
use backstop_common::progress::Reporter;

use super::{Outcome, StoreArgs};
use crate::render;

#[derive(clap::Args)]
pub struct Args {
    #[command(flatten)]
    store: StoreArgs,
    #[command(subcommand)]
    action: Action,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Snapshot the scope: every path under --scope (as seen inside --root),
    /// minus --exclude globs. Prints the snapshot id. Refuses, before
    /// copying anything, when the store lacks room for the worst case.
    ///
    /// Example: backstop-agent snapshot create --root / --scope /etc --scope /usr --exclude '/usr/share/doc/**'
    Create {
        #[arg(long, default_value = "/")]
        root: PathBuf,
        #[arg(long = "scope", required = true)]
        scopes: Vec<PathBuf>,
        #[arg(long = "exclude")]
        excludes: Vec<String>,
    },
    /// Put the scope back exactly as snapshot ID recorded it. Checks every
    /// object first; an interrupted restore finishes when run again.
    ///
    /// With --changes, only the paths in the change log (from `watch
    /// --changes`) and what lies under them are looked at, so the time
    /// follows what the install changed, not the scope's size. An
    /// incomplete log is not trusted: the whole scope is walked.
    ///
    /// Example: backstop-agent snapshot restore 1a2b3c --changes /var/tmp/install.changes --verify
    Restore {
        id: String,
        /// Compare the whole scope with the snapshot afterwards. After a
        /// --changes restore, a difference the change log did not name is
        /// listed and repaired by a full restore; exit 1 if any remains.
        #[arg(long)]
        verify: bool,
        /// Change log written by `backstop-agent watch --changes FILE`.
        #[arg(long, value_name = "FILE")]
        changes: Option<PathBuf>,
    },
    /// Snapshots, oldest first.
    List,
    /// One snapshot's root, scopes and entries.
    Show { id: String },
    /// What differs between snapshot ID and the tree now.
    Diff { id: String },
    /// Delete stored content no snapshot refers to.
    Gc,
}

pub fn snapshot(args: Args) -> Outcome {
    let json = args.store.json;
    let store = Store::open(&args.store.data)?;
    let (v, human) = match args.action {
        Action::Create {
            root,
            scopes,
            excludes,
        } => {
            let scope = Scope {
                root,
                paths: scopes,
                excludes,
            };
            let progress = Reporter::new("backstop-agent: snapshot", json);
            let r = snapshot::create_with(&store, &scope, &progress)?;
            drop(progress);
            (render::json(&r), render::created(&r))
        }
        Action::Restore {
            id,
            verify,
            changes,
        } => return restore(&store, json, &id, verify, changes),
        Action::List => {
            let list = store.list()?;
            (render::list_json(&list), render::list(&list))
        }
        Action::Show { id } => {
            let s = store.load(&id)?;
            (render::show_json(&s), render::show(&s))
        }
        Action::Diff { id } => {
            let d = snapshot::diff(&store.load(&id)?)?;
            (render::json(&d), render::diff(&d))
        }
        Action::Gc => {
            let (n, bytes) = store.gc()?;
            (render::gc_json(n, bytes), render::gc(n, bytes))
        }
    };
    print(json, &v, &human);
    Ok(0)
}

/// 1 when --verify found the scope still differing.
fn restore(store: &Store, json: bool, id: &str, verify: bool, changes: Option<PathBuf>) -> Outcome {
    let changes = changes.map(|p| ChangeSet::read(&p)).transpose()?;
    let r = snapshot::restore(store, id, verify, changes.as_ref())?;
    if let Some(why) = &r.full_walk_reason {
        eprintln!("backstop-agent: walked the whole scope: {why}");
    }
    for p in &r.missed_by_changes {
        eprintln!("backstop-agent: the change log missed {p} (repaired)");
    }
    print(json, &render::json(&r), &render::restored(&r));
    Ok(i32::from(r.verified == Some(false)))
}

fn print(json: bool, v: &serde_json::Value, human: &str) {
    if json {
        println!("{v}");
    } else {
        println!("{human}");
    }
}
