//! The types that cross a boundary: kernel <-> user (always, `no_std`) and,
//! behind the `std` feature, agent <-> controller (feature schema, windows).
//!
//! The kernel half is boring on purpose: `#[repr(C)]`, `Copy`, no implicit
//! padding, no `bool`. The eBPF programs and the agent both compile against
//! these definitions, so a layout change cannot drift between the two.
#![cfg_attr(not(feature = "std"), no_std)]

pub mod kernel;

#[cfg(feature = "std")]
pub mod config;
#[cfg(feature = "std")]
pub mod control;
#[cfg(feature = "std")]
pub mod deploy;
#[cfg(feature = "std")]
pub mod dpkg;
#[cfg(feature = "std")]
pub mod features;
#[cfg(feature = "std")]
pub mod fsdiff;
#[cfg(feature = "std")]
pub mod hostlevels;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "std")]
pub mod manifest;
#[cfg(feature = "std")]
pub mod private;
#[cfg(feature = "std")]
pub mod progress;
#[cfg(feature = "std")]
pub mod prom;
#[cfg(feature = "quic")]
pub mod quic;
#[cfg(feature = "std")]
pub mod root;
#[cfg(feature = "std")]
pub mod shadow;
#[cfg(feature = "std")]
pub mod window;
#[cfg(feature = "std")]
pub mod wire;

pub use kernel::*;
