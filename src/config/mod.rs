//! The configuration: raw input (a YAML or JSON file, or a request's inline object) plus the
//! environment becomes one validated [`Settings`] before any work starts.
//!
//! - [`keys`]: the keys, their types and defaults (the type derives the config schema).
//! - [`source`]: where the configuration comes from, decided in one place ([`locate`]).
//! - [`env`]: `DUCKSAFE_<KEY>` variables and `--set` pairs laid over it.
//! - [`load`](mod@load): reading, validation (`validate.rs`) and path resolution.
//! - [`suggest`]: did-you-mean for a misspelt key; [`redact`]: credentials never shown.
//!
//! Invariants: every violation is reported at once, each with its JSON Pointer; validation uses
//! the schema `ducksafe schema config` prints; values that look like credentials never appear in
//! a message.

pub mod env;
pub mod keys;
pub mod load;
pub mod redact;
pub mod source;
pub mod suggest;
mod validate;

pub use env::{lookup, ENV_CONFIG, ENV_PREFIX};
pub use keys::{schema, value_text, BackupStorage, Config, LogLevel, VerifyLevel, KEYS};
pub use load::{load, normalize, parse_text, Settings};
pub use redact::{looks_secret, redact_text};
pub use source::{locate, Asked, Source};
pub use suggest::did_you_mean;

use crate::error::Result;

/// The database of a configuration that does not load, as far as it can be told (see
/// [`load::db_path_guess`]): for a monitoring label that keeps two broken configurations'
/// series apart.
pub fn db_path_guess(asked: Asked, set: &[(String, String)]) -> Option<String> {
    let env = |var: &str| lookup(set, var);
    let source = locate(asked, &env).ok()?;
    load::db_path_guess(&source, &env)
}

/// Loads the configuration the caller asked for: decides where it comes from ([`locate`]),
/// then reads and validates it with `set` (`--set` pairs, a request's `set`) over the
/// `DUCKSAFE_<KEY>` variables.
pub fn load_asked(asked: Asked, set: &[(String, String)]) -> Result<Settings> {
    let env = |var: &str| lookup(set, var);
    let source = locate(asked, &env)?;
    // Where the audit log is when this configuration turns out unreadable: its default place.
    crate::audit::fallback(load::log_dir_of(&source, &env));
    load(&source, &env)
}
