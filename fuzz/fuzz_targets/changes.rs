//! The change-log reader on arbitrary bytes: it must return a change set
//! or an error, never panic or hang. A change log is read by a root
//! restore and may have been written while a hostile install ran.
#![no_main]

use std::path::Path;

use backstop_agent::changes::ChangeSet;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ChangeSet::parse(data, Path::new("fuzz.changes"));
});
