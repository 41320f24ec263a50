//! The frame decoder on arbitrary bytes: it must return messages or an
//! error, never panic, hang or allocate past the frame limit.
#![no_main]

use backstop_common::wire::{AgentMsg, ControllerMsg, decode_stream};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = decode_stream::<AgentMsg>(data);
    let _ = decode_stream::<ControllerMsg>(data);
});
