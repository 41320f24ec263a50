//! backstop's controller as a library. Today it knows the feature schema;
//! the daemon (storage, wire, model, decisions) grows here, with the
//! `backstop` binary staying a flag parser over it.

pub mod schema;
